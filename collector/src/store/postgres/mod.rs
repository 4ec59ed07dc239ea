//! The fleet store: one PostgreSQL database shared by several collector replicas.
//!
//! Same facts, interface and answers as the embedded SQLite store. What differs, and why:
//! - every insert is idempotent on its natural key (`ON CONFLICT DO NOTHING`) and an
//!   event is projected only by the transaction whose insert of its key succeeded, so two
//!   replicas given the same batch (an agent that switched replicas mid-stream and resent)
//!   store it exactly once: the second waits on the first's key and then sees a duplicate;
//! - `events` and `credential_uses` are partitioned by day of event time ([`partitions`]),
//!   so retention drops whole days instead of deleting rows under ingest;
//! - cloud actions are retained by ingestion time, so imported historical audit logs
//!   stay as evidence.

mod aggregates;
mod findings;
mod lookups;
mod partitions;
mod project;
mod query;

use std::sync::Mutex;

use postgres::{Client, NoTls, Statement, Transaction};
use serde_json::Value;

use super::{AgentEvent, IngestOutcome, Query, Store, StoreError, answer, sqlite::now_unix};
use crate::{cloud::CloudAction, correlate};

const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: &str = "4";
/// Serialises schema set-up and partition creation among replicas.
const DDL_LOCK: i64 = 0x0051_6711;

pub struct PostgresStore {
    /// The connection everything but agent batches goes through (and the first lane).
    inner: Mutex<Inner>,
    /// More connections for agent batches, so that batches from different agents run as
    /// concurrent transactions, as batches reaching different replicas do: one connection
    /// left the server idle between a batch's round trips (38% of two cores idle while two
    /// agents pushed).
    lanes: Vec<Mutex<Inner>>,
}

/// Connections per collector for agent batches, [`PostgresStore::inner`] included.
const LANES: usize = 3;

struct Inner {
    client: Connection,
    /// Days whose partitions are known to exist.
    days: std::collections::BTreeSet<i64>,
    stmts: Stmts,
}

/// The store's connection, closed off any tokio runtime: `postgres::Client` closes by
/// running its own runtime's `block_on`, which panics on a thread that is driving a tokio
/// runtime, and `serve` drops its last handle on the store on one (when it stops).
struct Connection(Option<Client>);

impl std::ops::Deref for Connection {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0.as_ref().expect("the client is taken only on drop")
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Client {
        self.0.as_mut().expect("the client is taken only on drop")
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(client) = self.0.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            // Joined, so the session is over when the store is gone.
            let _ = std::thread::spawn(move || drop(client)).join();
        }
    }
}

/// This connection's prepared statements, by SQL text: parsed once, not per row.
#[derive(Default)]
pub struct Stmts(std::collections::HashMap<&'static str, Statement>);

impl Stmts {
    pub fn get(&mut self, tx: &mut Transaction<'_>, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = tx.prepare(sql)?;
        self.0.insert(sql, s.clone());
        Ok(s)
    }
}

/// True when `db` names a PostgreSQL database rather than an SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// A run's process and binary counts from its rows (`run_binaries` must be up to date):
/// for the runs an upgrade fills in, and those retention took processes from.
const RECOUNT_RUNS: &str = "UPDATE runs r SET processes = (SELECT count(*) FROM processes p WHERE p.rid = r.rid),
    binaries = (SELECT count(*) FROM run_binaries b WHERE b.rid = r.rid)";

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and creates or checks the schema.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let mut client = Client::connect(url, NoTls)?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])?;
        let version = tx.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[]).ok().flatten().map(|r| r.get::<_, String>(0));
        tx.commit()?;
        if let Some(v) = version.filter(|v| v != SCHEMA_VERSION) {
            return Err(StoreError::BadArgument(format!("the database has schema version {v}; this collector writes version {SCHEMA_VERSION}")));
        }
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])?;
        // A database from before the runs kept their counts: filled in once, below.
        let uncounted: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'runs')
                    AND NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'runs' AND column_name = 'processes')",
                &[],
            )?
            .get(0);
        // A database from before the token aggregates: filled in once, below.
        let had_token_aggregates: bool = tx
            .query_one("SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'agg_tokens')", &[])?
            .get(0);
        tx.batch_execute(SCHEMA)?;
        if !had_token_aggregates {
            tx.batch_execute(crate::store::aggregate::FILL_TOKEN_AGGREGATES)?;
        }
        if uncounted {
            tx.batch_execute(&format!(
                "INSERT INTO run_binaries (rid, binary_path) SELECT DISTINCT rid, binary_path FROM processes WHERE binary_path IS NOT NULL ON CONFLICT DO NOTHING;
                 {RECOUNT_RUNS};"
            ))?;
        }
        tx.execute("INSERT INTO meta (key, value) VALUES ('schema_version', $1) ON CONFLICT DO NOTHING", &[&SCHEMA_VERSION])?;
        tx.commit()?;
        let lane = |client| Mutex::new(Inner { client: Connection(Some(client)), days: Default::default(), stmts: Stmts::default() });
        let lanes = (1..LANES).map(|_| Client::connect(url, NoTls).map(lane)).collect::<Result<_, _>>()?;
        Ok(Self { inner: lane(client), lanes })
    }

    /// Runs `f` in one transaction; on failure nothing of it stays.
    fn write<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut guard = self.inner.lock().map_err(|_| StoreError::Poisoned)?;
        let mut tx = guard.client.transaction()?;
        let v = f(&mut tx)?;
        tx.commit()?;
        Ok(v)
    }
}

impl Inner {
    /// Stores a batch with its findings, and correlates what it made attributable (when
    /// `correlate`; else its identifiers are queued), all in one transaction.
    fn ingest_once(&mut self, node: &str, events: &[AgentEvent], received: i64, correlate: bool) -> Result<Ingested, StoreError> {
        let Inner { client, days, stmts } = self;
        let days_named = events.iter().filter_map(|e| project::time_of(&e.body)).chain([received]).map(partitions::day_of);
        partitions::ensure(client, days, days_named)?;
        let mut tx = client.transaction()?;
        let (mut out, queue) = project::ingest(&mut tx, stmts, node, events, received)?;
        // In the batch's transaction: a batch is stored with its findings or not at all.
        let mut found = findings::PgFindings::new(&mut tx, stmts);
        found.prefetch(node, events)?;
        out.new_findings = crate::findings::detect(&mut found, node, events)?.iter().map(Into::into).collect();
        found.flush()?;
        let links = match (correlate, out.stored > 0) {
            (true, true) => correlate::run(&mut lookups::PgLookups::new(&mut tx, stmts, queue), received)?,
            (true, false) => Vec::new(),
            (false, _) => {
                project::queue_for_later(&mut tx, stmts, &queue)?;
                Vec::new()
            }
        };
        tx.commit()?;
        Ok((out, links))
    }
}

/// A stored batch's outcome and the links it made.
type Ingested = (IngestOutcome, Vec<correlate::NewLink>);

impl PostgresStore {
    /// A free connection for a batch, else the one `node`'s batches wait on.
    fn lane(&self, node: &str) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        let all: Vec<&Mutex<Inner>> = std::iter::once(&self.inner).chain(&self.lanes).collect();
        if let Some(free) = all.iter().find_map(|l| l.try_lock().ok()) {
            return Ok(free);
        }
        let home = node.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b))) % all.len();
        all[home].lock().map_err(|_| StoreError::Poisoned)
    }

    fn ingest(&self, node: &str, events: &[AgentEvent], correlate: bool) -> Result<Ingested, StoreError> {
        let received = now_unix();
        let mut guard = self.lane(node)?;
        match guard.ingest_once(node, events, received, correlate) {
            Ok(out) => Ok(out),
            Err(e) => {
                // Nothing of the batch stayed. Statements prepared in the failed transaction
                // are not relied upon, and another replica's retention may have dropped a
                // partition this one knew: prepare and create again, and retry once (also
                // what a deadlock between replicas calls for).
                tracing::warn!("batch from {node} failed ({e}); retrying once");
                guard.stmts.0.clear();
                guard.days.clear();
                guard.ingest_once(node, events, received, correlate)
            }
        }
    }
}

impl Store for PostgresStore {
    fn ingest_events(&self, node: &str, events: &[AgentEvent]) -> Result<IngestOutcome, StoreError> {
        Ok(self.ingest(node, events, false)?.0)
    }

    fn ingest_and_correlate(&self, node: String, events: Vec<AgentEvent>) -> Result<Ingested, StoreError> {
        self.ingest(&node, &events, true)
    }

    fn ingest_cloud(&self, actions: &[CloudAction]) -> Result<IngestOutcome, StoreError> {
        let ingested = now_unix();
        self.write(|tx| {
            let mut out = IngestOutcome::default();
            for a in actions {
                let assumed = a.assumed.as_ref();
                let provider = serde_json::to_value(a.provider).ok().and_then(|v| v.as_str().map(str::to_owned));
                let delegation = serde_json::to_string(&a.delegation).unwrap_or_default();
                let n = tx.execute(
                    "INSERT INTO cloud_actions (id, provider, time, ingested, action, service, region, principal, principal_type,
                        access_key_id, source_ip, user_agent, error_code, issued_access_key_id, role_session_name, web_identity_subject, delegation, json)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) ON CONFLICT DO NOTHING",
                    &[
                        &a.id,
                        &provider,
                        &a.time_unix,
                        &ingested,
                        &a.action,
                        &a.service,
                        &a.region,
                        &a.principal,
                        &a.principal_type,
                        &a.access_key_id,
                        &a.source_ip,
                        &a.user_agent,
                        &a.error_code,
                        &assumed.and_then(|r| r.issued_access_key_id.clone()),
                        &assumed.and_then(|r| r.role_session_name.clone()),
                        &assumed.and_then(|r| r.web_identity_subject.clone()),
                        &delegation,
                        &a.raw,
                    ],
                )?;
                if n == 0 {
                    out.duplicates += 1
                } else {
                    out.stored += 1;
                    tx.execute("INSERT INTO correlate_queue (what, value) VALUES ('action', $1) ON CONFLICT DO NOTHING", &[&a.id])?;
                }
            }
            Ok(out)
        })
    }

    fn correlate(&self) -> Result<Vec<correlate::NewLink>, StoreError> {
        let mut guard = self.inner.lock().map_err(|_| StoreError::Poisoned)?;
        let Inner { client, stmts, .. } = &mut *guard;
        let mut tx = client.transaction()?;
        let links = correlate::run(&mut lookups::PgLookups::new(&mut tx, stmts, Default::default()), now_unix())?;
        tx.commit()?;
        Ok(links)
    }

    fn query(&self, q: &Query) -> Result<Value, StoreError> {
        self.write(|tx| answer::answer(&mut query::PgFacts(tx), q))
    }

    fn metrics(&self) -> Result<Value, StoreError> {
        self.write(|tx| answer::metrics_snapshot(&mut query::PgFacts(tx), now_unix()))
    }

    fn verify_aggregates(&self) -> Result<(), StoreError> {
        self.write(aggregates::verify)
    }

    fn retain(&self, before: i64) -> Result<usize, StoreError> {
        let mut guard = self.inner.lock().map_err(|_| StoreError::Poisoned)?;
        let Inner { client, days, .. } = &mut *guard;
        let mut tx = client.transaction()?;
        // The aggregates of the uses in dropped partitions are rebuilt in the same
        // transaction: the answers never count a dropped use.
        let mut n = partitions::drop_before(&mut tx, days, before)?;
        aggregates::rebuild_touched(&mut tx)?;
        // The runs that lose processes are counted again afterwards.
        let recount: Vec<i64> = tx.query("SELECT DISTINCT rid FROM processes WHERE time < $1", &[&before])?.iter().map(|r| r.get(0)).collect();
        for table in ["processes", "token_issuances", "token_denials", "credential_file_reads", "credential_obtained"] {
            n += tx.execute(&format!("DELETE FROM {table} WHERE time < $1"), &[&before])? as usize;
        }
        tx.execute(
            "DELETE FROM run_binaries b WHERE b.rid = ANY($1)
                AND NOT EXISTS (SELECT 1 FROM processes p WHERE p.rid = b.rid AND p.binary_path = b.binary_path)",
            &[&recount],
        )?;
        tx.execute(&format!("{RECOUNT_RUNS} WHERE r.rid = ANY($1)"), &[&recount])?;
        n += tx.execute("DELETE FROM stats_events WHERE received < $1", &[&before])? as usize;
        n += tx.execute("DELETE FROM findings WHERE last_time < $1", &[&before])? as usize;
        n += tx.execute("DELETE FROM finding_facts WHERE time < $1", &[&before])? as usize;
        // Imported audit logs are evidence: kept by when they were ingested.
        n += tx.execute("DELETE FROM cloud_actions WHERE ingested < $1", &[&before])? as usize;
        n += tx.execute("DELETE FROM links l WHERE NOT EXISTS (SELECT 1 FROM cloud_actions a WHERE a.id = l.cloud_action_id)", &[])? as usize;
        n += tx.execute("DELETE FROM runs WHERE last_seen < $1", &[&before])? as usize;
        tx.execute("DELETE FROM run_binaries b WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.rid = b.rid)", &[])?;
        tx.commit()?;
        Ok(n)
    }
}
