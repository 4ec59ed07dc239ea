//! The embedded store: one SQLite file in WAL mode, agents' batches written together in
//! one transaction when they arrive together ([`group`]), each under its own savepoint.
//!
//! Layout (schema.sql): one copy of each fact, strings interned, every agent row keyed by
//! its node. [`project`] writes agent batches, [`aggregates`] keeps the posture and
//! static-credential figures, [`lookups`] answers the correlation rules, [`query`] the
//! facts the answers are built from.
//!
//! Durability: WAL with `synchronous = NORMAL`. A batch is acknowledged after its
//! transaction commits, i.e. once it is in the WAL file: a crash of the collector process
//! loses nothing acknowledged. A crash of the machine (power, kernel) may lose the
//! transactions not yet synced; agents keep every event until it is acknowledged and
//! resend, so only a machine crash between the ack and the next sync can lose acknowledged
//! events. [`checkpoint`] syncs the WAL within a second of a commit (SQLite alone would
//! wait for the next checkpoint).

mod aggregates;
mod checkpoint;
mod findings;
mod group;
mod ids;
mod lookups;
mod project;
mod prune;
mod query;

use std::{
    collections::BTreeSet,
    path::Path,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, OptionalExtension, Transaction, config::DbConfig, params};
use serde_json::Value;
use sigil_proto::v1;

use super::{AgentEvent, IngestOutcome, Query, Store, StoreError, aggregate, answer};
use crate::{cloud::CloudAction, correlate};

const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: &str = "4";
/// Rows (by rowid or key range) retention deletes per transaction: the store is free for
/// batches between steps, so retention never holds ingest for long.
const RETENTION_STEP: i64 = 20_000;

pub struct SqliteStore {
    inner: Mutex<Inner>,
    /// Agent batches waiting to be written together (see `group`).
    queue: group::Queue<Ingested>,
    /// Checkpoints off the writer's path (held for its `Drop`, which stops the thread);
    /// `None`: the writer checkpoints itself.
    #[cfg_attr(not(test), allow(dead_code))]
    checkpointer: Option<checkpoint::Checkpointer>,
}

type Ingested = (IngestOutcome, Vec<correlate::NewLink>);

struct Inner {
    conn: Connection,
    caches: ids::Caches,
}

pub fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The workload run a process belongs to: its container when it has one, else its pod,
/// systemd unit, or plain cgroup, scoped by node where the name is only node-unique.
pub fn run_id(node: &str, workload: Option<&v1::Workload>, cgroup_path: Option<&str>) -> String {
    let w = workload.cloned().unwrap_or_default();
    match (w.kind(), w.container_id, w.pod_uid, w.unit) {
        (_, Some(c), _, _) => format!("container:{c}"),
        (_, None, Some(p), _) => format!("pod:{p}"),
        (v1::WorkloadKind::SystemdUnit, _, _, Some(u)) => format!("unit:{node}:{u}"),
        _ => format!("cgroup:{node}:{}", cgroup_path.unwrap_or("/")),
    }
}

/// The run a process belongs to: the agent's `run` key when it knew the process's pod (a
/// Job's execution, a Deployment's pod: what users mean by a run), else the run derived
/// from its workload. Both backends key runs by it.
pub fn run_key(node: &str, run: Option<&str>, workload: Option<&v1::Workload>, cgroup_path: Option<&str>) -> String {
    run.map_or_else(|| run_id(node, workload, cgroup_path), str::to_owned)
}

/// The run a process reference names; `None` when it names no workload (the signer knows
/// only the exec id).
pub fn process_run(node: &str, p: &v1::ProcessRef) -> Option<String> {
    (p.workload.is_some() || p.run.is_some()).then(|| run_key(node, p.run.as_deref(), p.workload.as_ref(), p.cgroup_path.as_deref()))
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_checkpointing_at(path, checkpoint::PAGES)
    }

    /// [`Self::open`] with checkpoints every `pages` WAL pages.
    pub(crate) fn open_checkpointing_at(path: &Path, pages: i32) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::BadArgument(format!("{}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL + NORMAL: a committed batch survives a process crash; an OS crash may lose the
        // last batches, which agents then resend (they keep events until acknowledged).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -65_536)?;
        // If the checkpoint thread cannot start, the writer checkpoints every ~40 MB of WAL
        // instead of every 4 MB: a page batches keep rewriting (index interiors, the
        // aggregates) is copied once per checkpoint, not once per few batches. Durability
        // is the same either way (commit = in WAL).
        conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Every statement of a batch stays prepared (the default cache of 16 is smaller
        // than one batch's set, and re-preparing would cost every batch).
        conn.set_prepared_statement_cache_capacity(128);
        // One plan per statement, whatever its bindings. Without this, SQLite peeks at a
        // bound value wherever it might pick a better plan (a `col = ?` term checked
        // against a partial index's `col IS NOT NULL`, a `LIMIT ?`) and then re-prepares
        // the statement on every step with a new binding: the cache above kept nothing,
        // and re-preparing was a seventh of the ingest path's time.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        let has_meta: bool = conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'meta'", [], |r| r.get(0))?;
        if has_meta {
            let v: Option<String> = conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).optional()?;
            if let Some(v) = v.filter(|v| v != SCHEMA_VERSION) {
                return Err(StoreError::BadArgument(format!(
                    "{} has schema version {v}; this collector writes version {SCHEMA_VERSION} (aggregates kept for the answers): start with a new database file",
                    path.display()
                )));
            }
        }
        let had_token_aggregates: bool = conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'agg_tokens'", [], |r| r.get(0))?;
        conn.execute_batch(SCHEMA)?;
        if !had_token_aggregates {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {}; COMMIT;", aggregate::FILL_TOKEN_AGGREGATES))?;
        }
        add_missing_columns(&conn)?;
        conn.execute_batch(FILE_READS_VIEW)?;
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?1)", [SCHEMA_VERSION])?;
        let checkpointer = checkpoint::Checkpointer::start(path, &mut conn, pages);
        Ok(Self { inner: Mutex::new(Inner { conn, caches: ids::Caches::default() }), queue: group::Queue::default(), checkpointer })
    }

    /// Runs `f` in one transaction; on failure nothing of it stays, in the file or the caches.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>, &mut ids::Caches) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut guard = self.inner.lock().map_err(|_| StoreError::Poisoned)?;
        let Inner { conn, caches } = &mut *guard;
        let tx = begin_write(conn)?;
        match f(&tx, caches).and_then(|v| tx.commit().map(|()| v).map_err(StoreError::from)) {
            Ok(v) => {
                caches.committed();
                Ok(v)
            }
            Err(e) => {
                caches.rolled_back();
                Err(e)
            }
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let guard = self.inner.lock().map_err(|_| StoreError::Poisoned)?;
        f(&guard.conn)
    }
}

/// Columns added to a table after its schema version shipped (`CREATE TABLE IF NOT
/// EXISTS` leaves an existing table as it was), each with what fills it in for the rows
/// already there: none for evidence older rows never had.
/// (The run counts are both filled in with the second of them, which completes the pair.)
const ADDED_COLUMNS: [(&str, &str, &str, &str); 5] = [
    ("credential_obtained", "stream", "INTEGER", ""),
    // The view naming it is made again after the upgrades (`FILE_READS_VIEW`).
    ("credential_file_reads", "via", "TEXT", "DROP VIEW IF EXISTS credential_file_reads_v"),
    ("credential_obtained", "seq", "INTEGER", ""),
    ("runs", "processes", "INTEGER NOT NULL DEFAULT 0", ""),
    (
        "runs",
        "binaries",
        "INTEGER NOT NULL DEFAULT 0",
        "INSERT OR IGNORE INTO run_binaries (rid, binary_path) SELECT DISTINCT rid, binary_path FROM processes WHERE binary_path IS NOT NULL",
    ),
];

/// Credential file reads with their exec and run ids resolved, created once the table
/// has all its columns (an upgraded store gains `via` after the schema ran).
const FILE_READS_VIEW: &str = "CREATE VIEW IF NOT EXISTS credential_file_reads_v AS
    SELECT f.rowid AS row, f.time, f.path, f.file_kind, f.via, x.s AS exec_id, f.rid, r.run_id
    FROM credential_file_reads f LEFT JOIN strings x ON x.id = f.exec_id LEFT JOIN runs r ON r.rid = f.rid";

/// A run's process and binary counts from its rows (`run_binaries` must be up to date):
/// for the runs an upgrade fills in, and those retention took processes from.
const RECOUNT_RUNS: &str = "UPDATE runs SET processes = (SELECT count(*) FROM processes p WHERE p.rid = runs.rid),
    binaries = (SELECT count(*) FROM run_binaries b WHERE b.rid = runs.rid)";

fn add_missing_columns(conn: &Connection) -> Result<(), StoreError> {
    for (table, column, kind, fill) in ADDED_COLUMNS {
        let has: bool = conn.query_row(&format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?1"), [column], |r| r.get(0))?;
        if !has {
            let recount = if column == "binaries" { RECOUNT_RUNS } else { "" };
            conn.execute_batch(&format!("BEGIN IMMEDIATE; ALTER TABLE {table} ADD COLUMN {column} {kind}; {fill}; {recount}; COMMIT;"))?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Deletes what is older than `before`, `step` rows at a time, each step its own
    /// transaction (batches are stored between steps), then the interned strings nothing
    /// refers to any more ([`prune`]); returns the rows deleted (strings included).
    fn retain_in_steps(&self, before: i64, step: i64) -> Result<usize, StoreError> {
        self.write(prune::begin)?;
        let n = self.delete_old(before, step).and_then(|n| self.prune_strings(step).map(|p| n + p));
        // Stopped whatever happened (a failed step leaves marks that must not be trusted).
        self.write(prune::end)?;
        n
    }

    /// Removes the strings nothing refers to, `step` ids at a time (after
    /// [`Self::delete_old`] marked what its walk saw).
    fn prune_strings(&self, step: i64) -> Result<usize, StoreError> {
        let last: i64 = self.write(|tx, _| {
            let last = tx.query_row("SELECT coalesce(max(rowid), 0) FROM agg_credentials", [], |r| r.get(0))?;
            prune::mark_rows(tx, "agg_credentials", 0, last)?;
            Ok(tx.query_row("SELECT coalesce(max(id), 0) FROM strings", [], |r| r.get(0))?)
        })?;
        let (mut from, mut n) = (0, 0);
        while from < last {
            n += self.write(|tx, caches| prune::sweep(tx, caches, from, (from + step).min(last)))?;
            from += step;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(n)
    }

    /// Deletes what is older than `before`, `step` rows at a time, marking the strings of
    /// the rows that stay.
    fn delete_old(&self, before: i64, step: i64) -> Result<usize, StoreError> {
        // Imported audit logs are evidence a responder brought in, often months old: they
        // age by when they were ingested, not by when the calls happened. What they are
        // attributed to (runs, processes, credentials, tokens) is kept while they are, so
        // a trace still answers.
        let mut n = self.write(|tx, _| {
            let n = tx.execute("DELETE FROM cloud_actions WHERE ingested < ?1", params![before])?;
            Ok(n + tx.execute("DELETE FROM links WHERE cloud_action_id NOT IN (SELECT id FROM cloud_actions)", [])?)
        })?;
        let linked = "SELECT r.rid FROM runs r JOIN links l ON l.run_id = r.run_id";
        let (mut touched, mut recount) = (BTreeSet::new(), BTreeSet::new());
        for table in ["processes", "token_issuances", "token_denials", "credential_uses", "credential_file_reads", "credential_obtained"] {
            let last: i64 = self.read(|c| Ok(c.query_row(&format!("SELECT coalesce(max(rowid), 0) FROM {table}"), [], |r| r.get(0))?))?;
            let mut from = 0;
            while from < last {
                let cond = format!("rowid > {from} AND rowid <= {} AND time < ?1 AND (rid IS NULL OR rid NOT IN ({linked}))", from + step);
                n += self.write(|tx, _| {
                    if table == "credential_uses" {
                        aggregates::subtract(tx, &cond, before, &mut touched)?;
                    }
                    if table == "processes" {
                        let mut st = tx.prepare(&format!("SELECT DISTINCT rid FROM processes WHERE {cond}"))?;
                        recount.extend(st.query_map(params![before], |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>()?);
                    }
                    let n = tx.execute(&format!("DELETE FROM {table} WHERE {cond}"), params![before])?;
                    prune::mark_rows(tx, table, from, from + step)?;
                    Ok(n)
                })?;
                from += step;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for key in touched {
            self.write(|tx, _| aggregates::refresh(tx, key))?;
        }
        // The runs that lost processes are counted again (rare: a run's processes age out
        // together, and only unlinked runs lose them).
        for rid in recount {
            self.write(|tx, _| {
                tx.execute(
                    "DELETE FROM run_binaries WHERE rid = ?1 AND binary_path NOT IN (SELECT binary_path FROM processes WHERE rid = ?1 AND binary_path IS NOT NULL)",
                    [rid],
                )?;
                tx.execute(&format!("{RECOUNT_RUNS} WHERE rid = ?1"), [rid])?;
                Ok(())
            })?;
        }
        // `events` has no rowid: walk its key, `step` keys at a time, up to the last key
        // there was when retention started (as the tables above stop at their last rowid):
        // a walk chasing what ingest keeps adding would never end.
        let last: Option<(i64, i64, i64)> = self.read(|c| {
            Ok(c.query_row("SELECT node_id, stream, seq FROM events ORDER BY node_id DESC, stream DESC, seq DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?)
        })?;
        let mut from: Option<(i64, i64, i64)> = None;
        while let Some(last) = last {
            let (deleted, next) = self.write(|tx, _| {
                let (a, b, c) = from.unwrap_or((i64::MIN, i64::MIN, i64::MIN));
                let upto: Option<(i64, i64, i64)> = tx
                    .prepare_cached(
                        "SELECT node_id, stream, seq FROM events WHERE (node_id, stream, seq) > (?1, ?2, ?3) ORDER BY node_id, stream, seq LIMIT 1 OFFSET ?4",
                    )?
                    .query_row(params![a, b, c, step - 1], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?
                    .filter(|k| *k < last);
                let (x, y, z) = upto.unwrap_or(last);
                let range = "(node_id, stream, seq) > (?1, ?2, ?3) AND (node_id, stream, seq) <= (?4, ?5, ?6) AND time < ?7";
                let gone: Vec<(i64, i64)> = tx
                    .prepare_cached(&format!("SELECT kind, count(*) FROM events WHERE {range} GROUP BY kind"))?
                    .query_map(params![a, b, c, x, y, z, before], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                for (kind, count) in gone {
                    tx.execute("UPDATE event_counts SET n = max(n - ?2, 0) WHERE kind = ?1", params![kind, count])?;
                }
                let deleted = tx.prepare_cached(&format!("DELETE FROM events WHERE {range}"))?.execute(params![a, b, c, x, y, z, before])?;
                prune::mark_events(tx, "(node_id, stream, seq) > (?1, ?2, ?3) AND (node_id, stream, seq) <= (?4, ?5, ?6)", [a, b, c, x, y, z])?;
                Ok((deleted, upto))
            })?;
            n += deleted;
            match next {
                Some(k) => from = Some(k),
                None => break,
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        n += self.write(|tx, caches| {
            // Runs may be deleted: their numbers must be looked up again.
            caches.runs = ids::IdCache::default();
            let mut n = tx.execute("DELETE FROM findings WHERE last_time < ?1", params![before])?;
            n += tx.execute("DELETE FROM finding_facts WHERE time < ?1", params![before])?;
            n += tx.execute("DELETE FROM runs WHERE last_seen < ?1 AND run_id NOT IN (SELECT run_id FROM links)", params![before])?;
            Ok(n + tx.execute("DELETE FROM run_binaries WHERE rid NOT IN (SELECT rid FROM runs)", [])?)
        })?;
        Ok(n)
    }
}

/// A write transaction, holding the write lock from its start. Another process may write
/// the same file (`sigil-collector ingest` while the collector serves): a transaction that
/// began with a read cannot take the lock once the other has committed (its snapshot is
/// stale, so SQLite fails it at once, whatever the busy timeout), while `BEGIN IMMEDIATE`
/// waits for the lock within the timeout.
pub(super) fn begin_write(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    Ok(conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
}

/// Projects a batch and runs the finding rules over it, in the batch's transaction: a
/// batch is stored with its findings or not at all. Hands back the correlation queue.
fn ingest_with_findings(
    tx: &Transaction<'_>,
    caches: &mut ids::Caches,
    node: &str,
    events: &[AgentEvent],
    received: i64,
) -> Result<(IngestOutcome, project::Queue), StoreError> {
    let (mut out, queue) = project::ingest(tx, caches, node, events, received)?;
    let found = crate::findings::detect(&mut findings::SqliteFindings::new(tx), node, events)?;
    out.new_findings = found.iter().map(Into::into).collect();
    Ok((out, queue))
}

impl Store for SqliteStore {
    fn ingest_events(&self, node: &str, events: &[AgentEvent]) -> Result<IngestOutcome, StoreError> {
        let received = now_unix();
        self.write(|tx, caches| {
            let (out, queue) = ingest_with_findings(tx, caches, node, events, received)?;
            // Kept for the next correlation pass.
            let mut st = tx.prepare_cached("INSERT OR IGNORE INTO correlate_queue (what, value) VALUES (?1, ?2)")?;
            for (what, value) in &queue {
                st.execute(params![what, value])?;
            }
            Ok(out)
        })
    }

    fn ingest_and_correlate(&self, node: String, events: Vec<AgentEvent>) -> Result<Ingested, StoreError> {
        let received = now_unix();
        self.queue.write(&self.inner, group::Ticket::new(node, events), |tx, caches, batch| {
            let (out, queue) = ingest_with_findings(tx, caches, &batch.node, &batch.events, received)?;
            // Correlated in the batch's own transaction: the identifiers never go through
            // the queue table, and the batch, its findings and its links commit together.
            let links = if out.stored > 0 { correlate::run(&mut lookups::SqliteLookups::new(tx, queue), received)? } else { Vec::new() };
            Ok((out, links))
        })
    }

    fn ingest_cloud(&self, actions: &[CloudAction]) -> Result<IngestOutcome, StoreError> {
        let ingested = now_unix();
        self.write(|tx, _| {
            let mut out = IngestOutcome::default();
            // One prepared statement for the whole batch: re-preparing per row cost more
            // than the insert itself.
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO cloud_actions (id, provider, time, ingested, action, service, region, principal, principal_type,
                    access_key_id, source_ip, user_agent, error_code, issued_access_key_id, role_session_name, web_identity_subject, delegation, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )?;
            let mut queue = tx.prepare_cached("INSERT OR IGNORE INTO correlate_queue (what, value) VALUES ('action', ?1)")?;
            for a in actions {
                let assumed = a.assumed.as_ref();
                let n = insert.execute(params![
                    a.id,
                    a.provider.as_str(),
                    a.time_unix,
                    ingested,
                    a.action,
                    a.service,
                    a.region,
                    a.principal,
                    a.principal_type,
                    a.access_key_id,
                    a.source_ip,
                    a.user_agent,
                    a.error_code,
                    assumed.and_then(|r| r.issued_access_key_id.as_deref()),
                    assumed.and_then(|r| r.role_session_name.as_deref()),
                    assumed.and_then(|r| r.web_identity_subject.as_deref()),
                    serde_json::to_string(&a.delegation).unwrap_or_default(),
                    a.raw
                ])?;
                if n == 0 {
                    out.duplicates += 1
                } else {
                    out.stored += 1;
                    queue.execute([&a.id])?;
                }
            }
            Ok(out)
        })
    }

    fn correlate(&self) -> Result<Vec<correlate::NewLink>, StoreError> {
        self.write(|tx, _| correlate::run(&mut lookups::SqliteLookups::new(tx, Default::default()), now_unix()))
    }

    fn query(&self, q: &Query) -> Result<Value, StoreError> {
        self.read(|conn| answer::answer(&mut query::SqliteFacts(conn), q))
    }

    fn metrics(&self) -> Result<Value, StoreError> {
        self.read(|conn| answer::metrics_snapshot(&mut query::SqliteFacts(conn), now_unix()))
    }

    fn verify_aggregates(&self) -> Result<(), StoreError> {
        self.read(aggregates::verify)
    }

    fn retain(&self, before: i64) -> Result<usize, StoreError> {
        self.retain_in_steps(before, RETENTION_STEP)
    }
}

#[cfg(test)]
mod tests;
