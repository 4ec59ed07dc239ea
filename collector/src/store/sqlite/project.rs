//! Agent events into the SQLite tables, one transaction per batch. Every row is keyed by
//! the node that sent the batch; strings are interned; run bookkeeping (first and last
//! activity, live processes) is applied once per run per batch; the aggregate tables are
//! brought up to date ([`super::aggregates`]); the identifiers the new rows carry are
//! handed back for correlation in the same transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::{OptionalExtension, Transaction, params};
use sigil_proto::{EventBody, json, v1};

use super::{aggregates, ids::Caches, run_key};
use crate::store::{
    AgentEvent, IngestOutcome, StoreError,
    aggregate::{Deltas, UseFigures},
};

/// The agent's event id is `<spool stream>-<seq>`: the stream is interned and the sequence
/// kept as a number. Any other id is kept whole (sequence -1), so distinct ids stay
/// distinct.
pub fn split_id(id: &str) -> (&str, i64) {
    match id.rsplit_once('-') {
        Some((stream, seq)) if !stream.is_empty() => match seq.parse::<i64>() {
            Ok(n) if n >= 0 && n.to_string() == seq => (stream, n),
            _ => (id, -1),
        },
        _ => (id, -1),
    }
}

/// Unix seconds of an RFC 3339 time in an event; `received` when absent (agent
/// statistics are about the moment they arrive) or unparsable.
fn time_of(body: &EventBody, received: i64) -> i64 {
    body.time().and_then(crate::cloud::parse_rfc3339).unwrap_or(received)
}

/// What a batch did to one run.
struct RunTouch {
    first: i64,
    last: i64,
    new_processes: i64,
    /// The binaries (interned paths) of the processes new to the store.
    binaries: BTreeSet<i64>,
}

struct Batch<'a, 't> {
    tx: &'a Transaction<'t>,
    caches: &'a mut Caches,
    node: &'a str,
    node_id: i64,
    runs: HashMap<i64, RunTouch>,
    exits: Vec<(String, i64)>,
    queue: Queue,
    aggregates: Deltas<aggregates::Key>,
}

/// The identifiers (kind, value) a batch's new rows carry, for correlation.
pub type Queue = BTreeSet<(&'static str, String)>;

/// Stores a batch from `node`: each event once per (node, id), projected into its table.
/// Returns the outcome and the identifiers to correlate.
pub fn ingest(tx: &Transaction<'_>, caches: &mut Caches, node: &str, events: &[AgentEvent], received: i64) -> Result<(IngestOutcome, Queue), StoreError> {
    let node_id: i64 = tx.query_row(
        "INSERT INTO nodes (node, first_seen, last_seen) VALUES (?1, ?2, ?2)
         ON CONFLICT (node) DO UPDATE SET last_seen = ?2 RETURNING node_id",
        params![node, received],
        |r| r.get(0),
    )?;
    let mut b = Batch { tx, caches, node, node_id, runs: HashMap::new(), exits: Vec::new(), queue: Queue::new(), aggregates: Deltas::default() };
    let mut out = IngestOutcome::default();
    let mut counts: BTreeMap<u32, i64> = BTreeMap::new();
    let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO events (node_id, stream, seq, kind, time, received) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    for ev in events {
        let (stream, seq) = split_id(&ev.id);
        let stream = b.sid(stream)?;
        let time = time_of(&ev.body, received);
        let kind = ev.body.kind_id();
        // The key's insert is the duplicate check: one probe, not a lookup and an insert.
        if insert.execute(params![node_id, stream, seq, kind, time, received])? == 0 {
            out.duplicates += 1;
            continue;
        }
        b.project(&ev.body, stream, seq, time)?;
        *counts.entry(kind).or_default() += 1;
        out.stored += 1;
    }
    let queue = b.finish()?;
    for (kind, n) in counts {
        tx.prepare_cached("INSERT INTO event_counts (kind, n) VALUES (?1, ?2) ON CONFLICT (kind) DO UPDATE SET n = n + ?2")?.execute(params![kind, n])?;
    }
    Ok((out, queue))
}

impl Batch<'_, '_> {
    /// The id of an interned string.
    fn sid(&mut self, s: &str) -> Result<i64, StoreError> {
        if let Some(id) = self.caches.strings.get(s) {
            self.caches.strings.used(id);
            return Ok(id);
        }
        let found = self.tx.prepare_cached("SELECT id FROM strings WHERE s = ?1")?.query_row([s], |r| r.get(0)).optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                self.tx.prepare_cached("INSERT INTO strings (s) VALUES (?1)")?.execute([s])?;
                self.tx.last_insert_rowid()
            }
        };
        self.caches.strings.put(s, id);
        self.caches.strings.used(id);
        Ok(id)
    }

    fn sid_opt(&mut self, s: Option<&str>) -> Result<Option<i64>, StoreError> {
        s.map(|s| self.sid(s)).transpose()
    }

    /// The run of a process (created on first sight): the agent's `run` key when it knew
    /// the process's pod (a Job's execution, a Deployment's pod: what users mean by a
    /// run), else the run derived from the workload.
    fn rid(&mut self, run: Option<&str>, workload: Option<&v1::Workload>, cgroup_path: Option<&str>, time: i64) -> Result<i64, StoreError> {
        let key = run_key(self.node, run, workload, cgroup_path);
        if let Some(id) = self.caches.runs.get(&key) {
            return Ok(id);
        }
        let found = self.tx.prepare_cached("SELECT rid FROM runs WHERE run_id = ?1")?.query_row([&key], |r| r.get(0)).optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                let w = workload.cloned().unwrap_or_default();
                let kind = json::workload_kind::name(w.kind).filter(|k| k != "unspecified").unwrap_or_else(|| "cgroup".into());
                self.tx
                    .prepare_cached(
                        "INSERT INTO runs (run_id, node, kind, pod_uid, container_id, unit, cgroup_path, started, last_seen)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                    )?
                    .execute(params![key, self.node, kind, w.pod_uid, w.container_id, w.unit, cgroup_path, time])?;
                self.tx.last_insert_rowid()
            }
        };
        self.caches.runs.put(&key, id);
        Ok(id)
    }

    fn process_rid(&mut self, p: Option<&v1::ProcessRef>, time: i64) -> Result<Option<i64>, StoreError> {
        // A reference without a workload (the signer knows only the exec id) names no run.
        p.filter(|p| p.workload.is_some() || p.run.is_some())
            .map(|p| self.rid(p.run.as_deref(), p.workload.as_ref(), p.cgroup_path.as_deref(), time))
            .transpose()
    }

    fn exec_sid(&mut self, p: Option<&v1::ProcessRef>) -> Result<Option<i64>, StoreError> {
        self.sid_opt(p.map(|p| p.exec_id.as_str()))
    }

    fn queue(&mut self, what: &'static str, value: Option<&str>) {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.queue.insert((what, v.to_owned()));
        }
    }

    /// Projects one new event into its table.
    fn project(&mut self, body: &EventBody, stream: i64, seq: i64, time: i64) -> Result<(), StoreError> {
        let tx = self.tx;
        let node_id = self.node_id;
        match body {
            EventBody::ProcessExec(v) => {
                let cgroup_path = v.cgroup.as_ref().and_then(|c| c.path.as_deref());
                let rid = self.rid(v.run.as_deref(), v.workload.as_ref(), cgroup_path, time)?;
                let binary = v.binary.clone().unwrap_or_default();
                let ancestry = serde_json::to_string(&v.ancestry).map_err(|e| StoreError::BadArgument(format!("ancestry: {e}")))?;
                let row = (
                    self.sid_opt(binary.path.as_deref())?,
                    self.sid_opt(binary.sha256.as_deref())?,
                    self.sid_opt(cgroup_path)?,
                    self.sid(&v.comm)?,
                    self.sid(&ancestry)?,
                );
                let inserted = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO processes (node_id, exec_id, process_id, rid, pid, ppid, time, start_time, binary_path, sha256, cgroup_path, comm, ancestry)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    )?
                    .execute(params![node_id, v.exec_id, v.process_id, rid, v.pid, v.ppid, time, v.start_time, row.0, row.1, row.2, row.3, row.4])?;
                let touch = self.runs.entry(rid).or_insert(RunTouch { first: time, last: time, new_processes: 0, binaries: BTreeSet::new() });
                touch.first = touch.first.min(time);
                touch.last = touch.last.max(time);
                // The same exec reported again (under another event id) is one process.
                touch.new_processes += inserted as i64;
                if inserted == 1 {
                    touch.binaries.extend(row.0);
                }
            }
            EventBody::ProcessExit(v) => {
                // Applied after the batch's execs, so an exit never precedes its exec.
                self.exits.push((v.exec_id.clone(), time));
            }
            EventBody::TokenIssued(v) => {
                let p = v.process.as_ref();
                let (exec, rid, issuer) = (self.exec_sid(p)?, self.process_rid(p, time)?, self.sid(&v.issuer)?);
                let aud = serde_json::to_string(&v.audience).map_err(|e| StoreError::BadArgument(format!("audience: {e}")))?;
                tx.prepare_cached(
                        "INSERT OR IGNORE INTO token_issuances (node_id, jti, stream, seq, time, spiffe_id, audience, issuer, issued_at, expires_at, ttl, exec_id, rid)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    )?
                    .execute(params![node_id, v.jti, stream, seq, time, v.spiffe_id, aud, issuer, v.issued_at, v.expires_at, v.ttl_seconds, exec, rid])?;
                self.queue("jti", Some(&v.jti));
                self.queue("subject", Some(&v.spiffe_id));
            }
            EventBody::TokenDenied(v) => {
                let p = v.process.as_ref();
                let (exec, rid) = (self.exec_sid(p)?, self.process_rid(p, time)?);
                let reason = json::deny_reason::name(v.reason).unwrap_or_else(|| "unknown".into());
                tx.prepare_cached("INSERT INTO token_denials (node_id, time, reason, detail, spiffe_id, exec_id, rid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
                    .execute(params![node_id, time, reason, v.detail, v.requested_spiffe_id, exec, rid])?;
            }
            EventBody::CredentialUse(v) => {
                let p = v.process.as_ref();
                let ids = v.identifiers.clone().unwrap_or_default();
                let dest = v.destination.clone().unwrap_or_default();
                let detector = json::detector::name(v.detector).unwrap_or_else(|| "unknown".into());
                let class = json::credential_class::name(v.class).unwrap_or_else(|| "unknown".into());
                let cols = [
                    self.exec_sid(p)?,
                    self.sid_opt(dest.ip.as_deref())?,
                    self.sid_opt(dest.host.as_deref())?,
                    Some(self.sid(&v.method)?),
                    Some(self.sid(&v.path)?),
                    Some(self.sid(&detector)?),
                    Some(self.sid(&class)?),
                    Some(self.sid(&v.fingerprint)?),
                    self.sid_opt(ids.access_key_id.as_deref())?,
                    self.sid_opt(ids.jwt_iss.as_deref())?,
                    self.sid_opt(ids.jwt_sub.as_deref())?,
                    self.sid_opt(ids.jwt_jti.as_deref())?,
                    self.sid_opt(ids.token_family.as_deref())?,
                ];
                let rid = self.process_rid(p, time)?;
                let figures = UseFigures::of(v, time);
                // An aggregate's own time is its last use; its first is kept when earlier.
                let first = Some(figures.first).filter(|f| *f < time);
                tx.prepare_cached(
                    "INSERT INTO credential_uses (node_id, stream, seq, time, rid, dest_port, lifetime,
                        exec_id, dest_ip, host, method, path, detector, class, fingerprint, access_key_id, jwt_iss, jwt_sub, jwt_jti, token_family, count, first_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
                )?
                .execute(params![
                    node_id, stream, seq, time, rid, dest.port, v.lifetime_seconds, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5],
                    cols[6], cols[7], cols[8], cols[9], cols[10], cols[11], cols[12], figures.count, first
                ])?;
                if let (Some(class), Some(fingerprint)) = (cols[6], cols[7]) {
                    self.aggregates.add((class, fingerprint), rid, figures);
                }
                self.queue("key", ids.access_key_id.as_deref());
                self.queue("principal", ids.jwt_iss.as_deref());
                self.queue("principal", ids.jwt_sub.as_deref());
            }
            EventBody::CredentialFileRead(v) => {
                let p = v.process.as_ref();
                let (exec, rid) = (self.exec_sid(p)?, self.process_rid(p, time)?);
                let kind = json::file_kind::name(v.file_kind).unwrap_or_else(|| "unknown".into());
                let via = Some(v.via.as_str()).filter(|v| !v.is_empty());
                tx.prepare_cached("INSERT INTO credential_file_reads (node_id, time, exec_id, rid, path, file_kind, via) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
                    .execute(params![node_id, time, exec, rid, v.path, kind, via])?;
            }
            EventBody::CredentialObtained(v) => {
                let p = v.process.as_ref();
                let (exec, rid) = (self.exec_sid(p)?, self.process_rid(p, time)?);
                let class = json::credential_class::name(v.class).unwrap_or_else(|| "unknown".into());
                let host = v.destination.as_ref().and_then(|d| d.host.clone().or_else(|| d.ip.clone()));
                tx.prepare_cached(
                    "INSERT INTO credential_obtained (node_id, time, exec_id, rid, exchange_kind, format, identifier, class, fingerprint, expires_at, principal, host, presented_jti, token_jti, stream, seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )?
                .execute(params![
                    node_id, time, exec, rid, v.exchange_kind, v.format, v.identifier, class, v.fingerprint, v.expires_at, v.principal, host,
                    v.presented_jti, v.token_jti, stream, seq
                ])?;
            }
            EventBody::AgentStats(_) => {
                let stats = body.to_json().ok().and_then(|j| String::from_utf8(j).ok());
                tx.prepare_cached("UPDATE nodes SET last_stats = ?2 WHERE node_id = ?1")?.execute(params![node_id, stats])?;
            }
            // Counted in `events`; nothing to project.
            // Findings are refused at ingest (the collector derives them).
            EventBody::ConfigChange(_) | EventBody::Finding(_) => {}
        }
        Ok(())
    }

    /// Run bookkeeping, then exits, then the aggregates; hands back the correlation queue.
    fn finish(self) -> Result<Queue, StoreError> {
        let tx = self.tx;
        for (rid, t) in &self.runs {
            let mut binaries = 0i64;
            for b in &t.binaries {
                binaries += tx.prepare_cached("INSERT OR IGNORE INTO run_binaries (rid, binary_path) VALUES (?1, ?2)")?.execute(params![rid, b])? as i64;
            }
            tx.prepare_cached(
                "UPDATE runs SET started = min(started, ?2), last_seen = max(last_seen, ?3), live = live + ?4,
                    ended = CASE WHEN ?4 > 0 THEN NULL ELSE ended END, processes = processes + ?4, binaries = binaries + ?5 WHERE rid = ?1",
            )?
            .execute(params![rid, t.first, t.last, t.new_processes, binaries])?;
        }
        for (exec_id, time) in &self.exits {
            let rid: Option<i64> = tx
                .prepare_cached("UPDATE processes SET exit_time = ?3 WHERE node_id = ?1 AND exec_id = ?2 AND exit_time IS NULL RETURNING rid")?
                .query_row(params![self.node_id, exec_id, time], |r| r.get(0))
                .optional()?;
            if let Some(rid) = rid {
                // A run ends when its last known process has exited.
                tx.prepare_cached(
                    "UPDATE runs SET last_seen = max(last_seen, ?2), live = max(live - 1, 0),
                        ended = CASE WHEN live - 1 <= 0 THEN ?2 ELSE ended END WHERE rid = ?1",
                )?
                .execute(params![rid, time])?;
            }
        }
        aggregates::apply(tx, &self.aggregates)?;
        Ok(self.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_split_into_stream_and_sequence_without_merging_distinct_ids() {
        assert_eq!(split_id("3f2a-17"), ("3f2a", 17));
        assert_eq!(split_id("a-b-0"), ("a-b", 0));
        assert_eq!(split_id("x-01"), ("x-01", -1), "a non-canonical number stays whole");
        assert_eq!(split_id("x"), ("x", -1));
        assert_eq!(split_id("-5"), ("-5", -1));
        assert_eq!(split_id("x--5"), ("x-", 5), "the stream is everything before the last dash");
    }
}
