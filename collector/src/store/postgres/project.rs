//! Agent events into the PostgreSQL tables, one transaction per batch. An event is
//! projected only when this transaction inserted its (node, id, time) key, so replicas
//! racing on the same batch project it once.
//!
//! Set-based: the batch's rows are gathered into one array per column and each table
//! gets one `INSERT ... SELECT FROM unnest(...)` (runs, run bookkeeping, exits and the
//! correlation queue likewise), so a batch costs a fixed dozen round trips whatever its
//! size, where a statement per row cost one round trip (and one executor start) per row.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use postgres::{Transaction, types::ToSql};
use sigil_proto::{EventBody, json, v1};

use super::Stmts;
use crate::store::{
    AgentEvent, IngestOutcome, StoreError,
    aggregate::UseFigures,
    sqlite::{process_run, run_key},
};

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// Unix seconds of an event's own time; `None` for agent statistics, which are about the
/// moment they arrive. An unparsable time counts as the Unix epoch, so a resent event
/// keeps its key.
pub fn time_of(body: &EventBody) -> Option<i64> {
    body.time().map(|t| crate::cloud::parse_rfc3339(t).unwrap_or(0))
}

/// The identifiers (kind, value) a batch's new rows carry, for correlation.
pub type Queue = BTreeSet<(&'static str, String)>;

/// Stores a batch from `node`: each event once per (node, id), projected into its table.
/// Returns the outcome and the identifiers to correlate.
pub fn ingest(tx: &mut Transaction<'_>, stmts: &mut Stmts, node: &str, events: &[AgentEvent], received: i64) -> Result<(IngestOutcome, Queue), StoreError> {
    let st = stmts.get(
        tx,
        "INSERT INTO nodes (node, first_seen, last_seen) VALUES ($1, $2, $2)
         ON CONFLICT (node) DO UPDATE SET last_seen = greatest(nodes.last_seen, EXCLUDED.last_seen) RETURNING node_id",
    )?;
    let node_id: i64 = tx.query_one(&st, &[&node, &received])?.get(0);
    // The batch's keys in one statement each: the ids this transaction inserted are the
    // new events (a key another replica is inserting waits for its commit, then is not).
    let (mut ids, mut kinds, mut times, mut stats) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ev in events {
        match time_of(&ev.body) {
            Some(t) => {
                ids.push(ev.id.as_str());
                kinds.push(ev.body.kind_id() as i32);
                times.push(t);
            }
            None => stats.push(ev.id.as_str()),
        }
    }
    let st = stmts.get(
        tx,
        "INSERT INTO events (node_id, stream, seq, kind, time, received)
         SELECT $1, u.id, 0, u.kind, u.time, $2 FROM unnest($3::text[], $4::int4[], $5::int8[]) AS u(id, kind, time)
         ON CONFLICT DO NOTHING RETURNING stream",
    )?;
    let mut new: HashSet<String> = tx.query(&st, &[&node_id, &received, &ids, &kinds, &times])?.iter().map(|r| r.get(0)).collect();
    let st = stmts.get(
        tx,
        "INSERT INTO stats_events (node_id, stream, seq, received) SELECT $1, u.id, 0, $2 FROM unnest($3::text[]) AS u(id)
         ON CONFLICT DO NOTHING RETURNING stream",
    )?;
    new.extend(tx.query(&st, &[&node_id, &received, &stats])?.iter().map(|r| r.get::<_, String>(0)));
    let mut out = IngestOutcome::default();
    let mut fresh = Vec::new();
    for ev in events {
        // Removed once taken: the same id twice in one batch is one event.
        if !new.remove(&ev.id) {
            out.duplicates += 1;
            continue;
        }
        fresh.push((ev, time_of(&ev.body).unwrap_or(received)));
        out.stored += 1;
    }
    let mut b = Batch { tx, stmts, node, node_id, rids: HashMap::new(), rows: Rows::default() };
    b.resolve_runs(&fresh)?;
    for &(ev, time) in &fresh {
        b.project(&ev.id, &ev.body, time)?;
    }
    let rids = std::mem::take(&mut b.rids);
    let queue = b.write()?;
    // The aggregate tables, from the events this transaction newly stored (only those).
    let stored: Vec<&AgentEvent> = fresh.iter().map(|&(ev, _)| ev).collect();
    super::aggregates::add(tx, stmts, node, &stored, &rids, |body| time_of(body).unwrap_or(received))?;
    let mut counts: BTreeMap<i32, i64> = BTreeMap::new();
    for (ev, _) in &fresh {
        *counts.entry(ev.body.kind_id() as i32).or_default() += 1;
    }
    let (kinds, ns): (Vec<i32>, Vec<i64>) = counts.into_iter().unzip();
    let st = stmts.get(
        tx,
        "INSERT INTO event_counts (kind, n) SELECT * FROM unnest($1::int4[], $2::int8[])
         ON CONFLICT (kind) DO UPDATE SET n = event_counts.n + EXCLUDED.n",
    )?;
    tx.execute(&st, &[&kinds, &ns])?;
    Ok((out, queue))
}

/// Keeps a batch's identifiers for the next correlation pass (when it is not correlated
/// in its own transaction).
pub fn queue_for_later(tx: &mut Transaction<'_>, stmts: &mut Stmts, queue: &Queue) -> Result<(), StoreError> {
    if queue.is_empty() {
        return Ok(());
    }
    let (what, value): (Vec<&str>, Vec<&str>) = queue.iter().map(|(w, v)| (*w, v.as_str())).unzip();
    let st = stmts.get(tx, "INSERT INTO correlate_queue (what, value) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING")?;
    tx.execute(&st, &[&what, &value])?;
    Ok(())
}

/// One batch's rows, a vector per column, in event order.
#[derive(Default)]
struct Rows {
    /// Per run: first and last activity, processes newly seen (filled from `processes`).
    runs: BTreeMap<i64, (i64, i64, i64)>,
    processes: Processes,
    issuances: Issuances,
    denials: Denials,
    uses: Uses,
    file_reads: FileReads,
    exits: (Vec<String>, Vec<i64>),
    queue: Queue,
}

#[derive(Default)]
struct Processes {
    exec_id: Vec<String>,
    process_id: Vec<String>,
    rid: Vec<i64>,
    pid: Vec<i64>,
    ppid: Vec<i64>,
    time: Vec<i64>,
    start_time: Vec<String>,
    binary_path: Vec<Option<String>>,
    sha256: Vec<Option<String>>,
    cgroup_path: Vec<Option<String>>,
    comm: Vec<String>,
    ancestry: Vec<String>,
    event_id: Vec<String>,
}

#[derive(Default)]
struct Issuances {
    jti: Vec<String>,
    stream: Vec<String>,
    time: Vec<i64>,
    spiffe_id: Vec<String>,
    audience: Vec<String>,
    issuer: Vec<String>,
    issued_at: Vec<i64>,
    expires_at: Vec<i64>,
    ttl: Vec<i64>,
    exec_id: Vec<Option<String>>,
    rid: Vec<Option<i64>>,
}

#[derive(Default)]
struct Denials {
    time: Vec<i64>,
    reason: Vec<String>,
    detail: Vec<String>,
    spiffe_id: Vec<Option<String>>,
    exec_id: Vec<Option<String>>,
    rid: Vec<Option<i64>>,
}

#[derive(Default)]
struct Uses {
    stream: Vec<String>,
    time: Vec<i64>,
    rid: Vec<Option<i64>>,
    dest_port: Vec<Option<i64>>,
    lifetime: Vec<Option<i64>>,
    exec_id: Vec<Option<String>>,
    dest_ip: Vec<Option<String>>,
    host: Vec<Option<String>>,
    method: Vec<String>,
    path: Vec<String>,
    detector: Vec<String>,
    class: Vec<String>,
    fingerprint: Vec<String>,
    access_key_id: Vec<Option<String>>,
    jwt_iss: Vec<Option<String>>,
    jwt_sub: Vec<Option<String>>,
    jwt_jti: Vec<Option<String>>,
    token_family: Vec<Option<String>>,
    count: Vec<i64>,
    /// Set only when earlier than the use's time (the aggregated uses' first).
    first_seen: Vec<Option<i64>>,
}

#[derive(Default)]
struct FileReads {
    time: Vec<i64>,
    exec_id: Vec<Option<String>>,
    rid: Vec<Option<i64>>,
    path: Vec<String>,
    file_kind: Vec<String>,
    via: Vec<Option<String>>,
}

/// Columns of the runs a batch creates: run id, kind, pod, container, unit, cgroup, time.
type NewRuns<'a> = (Vec<&'a str>, Vec<String>, Vec<Option<String>>, Vec<Option<String>>, Vec<Option<String>>, Vec<Option<&'a str>>, Vec<i64>);

struct Batch<'a, 't> {
    tx: &'a mut Transaction<'t>,
    stmts: &'a mut Stmts,
    node: &'a str,
    node_id: i64,
    /// The runs this batch refers to, by run id.
    rids: HashMap<String, i64>,
    rows: Rows,
}

/// The run an event names (keyed as [`run_key`] keys runs on both backends), with the
/// workload and cgroup a new run is described by; `None` when it names no run.
fn run_of<'b>(node: &str, body: &'b EventBody) -> Option<(String, Option<&'b v1::Workload>, Option<&'b str>)> {
    fn process<'b>(node: &str, p: &'b Option<v1::ProcessRef>) -> Option<(String, Option<&'b v1::Workload>, Option<&'b str>)> {
        p.as_ref().and_then(|p| Some((process_run(node, p)?, p.workload.as_ref(), p.cgroup_path.as_deref())))
    }
    match body {
        EventBody::ProcessExec(v) => {
            let cgroup = v.cgroup.as_ref().and_then(|c| c.path.as_deref());
            Some((run_key(node, v.run.as_deref(), v.workload.as_ref(), cgroup), v.workload.as_ref(), cgroup))
        }
        EventBody::TokenIssued(v) => process(node, &v.process),
        EventBody::TokenDenied(v) => process(node, &v.process),
        EventBody::CredentialUse(v) => process(node, &v.process),
        EventBody::CredentialFileRead(v) => process(node, &v.process),
        EventBody::CredentialObtained(v) => process(node, &v.process),
        _ => None,
    }
}

impl Batch<'_, '_> {
    fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<postgres::Row>, StoreError> {
        let st = self.stmts.get(self.tx, sql)?;
        Ok(self.tx.query(&st, params)?)
    }

    fn exec(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, StoreError> {
        let st = self.stmts.get(self.tx, sql)?;
        Ok(self.tx.execute(&st, params)?)
    }

    /// Locks `rids` in rid order before they are updated, so replicas updating
    /// overlapping runs wait for each other instead of deadlocking.
    fn lock_runs(&mut self, rids: &[i64]) -> Result<(), StoreError> {
        self.query("SELECT 1 FROM runs WHERE rid = ANY($1) ORDER BY rid FOR UPDATE", &[&rids])?;
        Ok(())
    }

    /// Looks up every run the batch refers to in one statement, and creates the missing
    /// ones in another (by whichever replica sees them first; in run-id order, so
    /// replicas creating the same runs lock them in one order). A run is created with
    /// the time of the first event naming it.
    fn resolve_runs(&mut self, events: &[(&AgentEvent, i64)]) -> Result<(), StoreError> {
        let mut wanted: BTreeMap<String, (Option<&v1::Workload>, Option<&str>, i64)> = BTreeMap::new();
        for &(ev, time) in events {
            if let Some((key, w, cgroup)) = run_of(self.node, &ev.body) {
                wanted.entry(key).or_insert((w, cgroup, time));
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = wanted.keys().map(String::as_str).collect();
        let found: Vec<(String, i64)> =
            self.query("SELECT run_id, rid FROM runs WHERE run_id = ANY($1)", &[&keys])?.iter().map(|r| (r.get(0), r.get(1))).collect();
        self.rids.extend(found);
        let mut c = NewRuns::default();
        for (key, (w, cgroup, time)) in &wanted {
            if self.rids.contains_key(key) {
                continue;
            }
            let w = w.cloned().unwrap_or_default();
            c.0.push(key);
            c.1.push(json::workload_kind::name(w.kind).filter(|k| k != "unspecified").unwrap_or_else(|| "cgroup".into()));
            c.2.push(w.pod_uid);
            c.3.push(w.container_id);
            c.4.push(w.unit);
            c.5.push(*cgroup);
            c.6.push(*time);
        }
        if c.0.is_empty() {
            return Ok(());
        }
        let node = self.node;
        let created: Vec<(String, i64)> = self
            .query(
                "INSERT INTO runs (run_id, node, kind, pod_uid, container_id, unit, cgroup_path, started, last_seen)
                 SELECT u.run_id, $1, u.kind, u.pod_uid, u.container_id, u.unit, u.cgroup_path, u.t, u.t
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int8[])
                     AS u(run_id, kind, pod_uid, container_id, unit, cgroup_path, t)
                 ON CONFLICT (run_id) DO UPDATE SET run_id = EXCLUDED.run_id RETURNING run_id, rid",
                &[&node, &c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        self.rids.extend(created);
        Ok(())
    }

    /// The run of run key `key`, as [`Self::resolve_runs`] found or created it.
    fn rid(&self, key: &str) -> Result<i64, StoreError> {
        self.rids.get(key).copied().ok_or_else(|| StoreError::NotFound(format!("run {key} not created")))
    }

    /// The run a process reference names, if it names one (as on SQLite).
    fn process_rid(&self, p: Option<&v1::ProcessRef>) -> Result<Option<i64>, StoreError> {
        p.and_then(|p| process_run(self.node, p)).map(|key| self.rid(&key)).transpose()
    }

    fn queue(&mut self, what: &'static str, value: Option<&str>) {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.rows.queue.insert((what, v.to_owned()));
        }
    }

    /// Adds the event's row to its table's columns.
    fn project(&mut self, id: &str, body: &EventBody, time: i64) -> Result<(), StoreError> {
        match body {
            EventBody::ProcessExec(v) => {
                let cgroup_path = v.cgroup.as_ref().and_then(|c| c.path.clone());
                let rid = self.rid(&run_key(self.node, v.run.as_deref(), v.workload.as_ref(), cgroup_path.as_deref()))?;
                let binary = v.binary.clone().unwrap_or_default();
                let ancestry = serde_json::to_string(&v.ancestry).map_err(|e| StoreError::BadArgument(format!("ancestry: {e}")))?;
                let p = &mut self.rows.processes;
                p.exec_id.push(v.exec_id.clone());
                p.process_id.push(v.process_id.clone());
                p.rid.push(rid);
                p.pid.push(i64::from(v.pid));
                p.ppid.push(i64::from(v.ppid));
                p.time.push(time);
                p.start_time.push(v.start_time.clone());
                p.binary_path.push(binary.path);
                p.sha256.push(binary.sha256);
                p.cgroup_path.push(cgroup_path);
                p.comm.push(v.comm.clone());
                p.ancestry.push(ancestry);
                p.event_id.push(id.to_owned());
                let touch = self.rows.runs.entry(rid).or_insert((time, time, 0));
                touch.0 = touch.0.min(time);
                touch.1 = touch.1.max(time);
            }
            EventBody::ProcessExit(v) => {
                self.rows.exits.0.push(v.exec_id.clone());
                self.rows.exits.1.push(time);
            }
            EventBody::TokenIssued(v) => {
                let p = v.process.as_ref();
                let rid = self.process_rid(p)?;
                let aud = serde_json::to_string(&v.audience).map_err(|e| StoreError::BadArgument(format!("audience: {e}")))?;
                let t = &mut self.rows.issuances;
                t.jti.push(v.jti.clone());
                t.stream.push(id.to_owned());
                t.time.push(time);
                t.spiffe_id.push(v.spiffe_id.clone());
                t.audience.push(aud);
                t.issuer.push(v.issuer.clone());
                t.issued_at.push(v.issued_at);
                t.expires_at.push(v.expires_at);
                t.ttl.push(v.ttl_seconds);
                t.exec_id.push(p.map(|p| p.exec_id.clone()));
                t.rid.push(rid);
                self.queue("jti", Some(&v.jti));
                self.queue("subject", Some(&v.spiffe_id));
            }
            EventBody::TokenDenied(v) => {
                let p = v.process.as_ref();
                let rid = self.process_rid(p)?;
                let d = &mut self.rows.denials;
                d.time.push(time);
                d.reason.push(json::deny_reason::name(v.reason).unwrap_or_else(|| "unknown".into()));
                d.detail.push(v.detail.clone());
                d.spiffe_id.push(v.requested_spiffe_id.clone());
                d.exec_id.push(p.map(|p| p.exec_id.clone()));
                d.rid.push(rid);
            }
            EventBody::CredentialUse(v) => {
                let p = v.process.as_ref();
                let rid = self.process_rid(p)?;
                let ids = v.identifiers.clone().unwrap_or_default();
                let dest = v.destination.clone().unwrap_or_default();
                self.queue("key", ids.access_key_id.as_deref());
                self.queue("principal", ids.jwt_iss.as_deref());
                self.queue("principal", ids.jwt_sub.as_deref());
                let u = &mut self.rows.uses;
                u.stream.push(id.to_owned());
                u.time.push(time);
                u.rid.push(rid);
                u.dest_port.push(dest.port.map(i64::from));
                u.lifetime.push(v.lifetime_seconds);
                u.exec_id.push(p.map(|p| p.exec_id.clone()));
                u.dest_ip.push(dest.ip);
                u.host.push(dest.host);
                u.method.push(v.method.clone());
                u.path.push(v.path.clone());
                u.detector.push(json::detector::name(v.detector).unwrap_or_else(|| "unknown".into()));
                u.class.push(json::credential_class::name(v.class).unwrap_or_else(|| "unknown".into()));
                u.fingerprint.push(v.fingerprint.clone());
                u.access_key_id.push(ids.access_key_id);
                u.jwt_iss.push(ids.jwt_iss);
                u.jwt_sub.push(ids.jwt_sub);
                u.jwt_jti.push(ids.jwt_jti);
                u.token_family.push(ids.token_family);
                let figures = UseFigures::of(v, time);
                u.count.push(figures.count);
                u.first_seen.push(Some(figures.first).filter(|f| *f < time));
            }
            EventBody::CredentialFileRead(v) => {
                let p = v.process.as_ref();
                let rid = self.process_rid(p)?;
                let f = &mut self.rows.file_reads;
                f.time.push(time);
                f.exec_id.push(p.map(|p| p.exec_id.clone()));
                f.rid.push(rid);
                f.path.push(v.path.clone());
                f.file_kind.push(json::file_kind::name(v.file_kind).unwrap_or_else(|| "unknown".into()));
                f.via.push(Some(v.via.clone()).filter(|v| !v.is_empty()));
            }
            EventBody::CredentialObtained(v) => {
                let p = v.process.as_ref();
                // Rare (one per exchange): a row at a time.
                let rid = self.process_rid(p)?;
                let node_id = self.node_id;
                let class = json::credential_class::name(v.class).unwrap_or_else(|| "unknown".into());
                let host = v.destination.as_ref().and_then(|d| d.host.clone().or_else(|| d.ip.clone()));
                self.exec(
                    "INSERT INTO credential_obtained (node_id, time, exec_id, rid, exchange_kind, format, identifier, class, fingerprint, expires_at, principal, host, presented_jti, token_jti, stream)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                    &[
                        &node_id, &time, &p.map(|p| &p.exec_id), &rid, &v.exchange_kind, &v.format, &v.identifier, &class, &v.fingerprint, &v.expires_at,
                        &v.principal, &host, &v.presented_jti, &v.token_jti, &id,
                    ],
                )?;
            }
            EventBody::AgentStats(_) => {
                let stats = body.to_json().ok().and_then(|j| String::from_utf8(j).ok());
                let node_id = self.node_id;
                self.exec("UPDATE nodes SET last_stats = $2 WHERE node_id = $1", &[&node_id, &stats])?;
            }
            // Findings are refused at ingest (the collector derives them).
            EventBody::ConfigChange(_) | EventBody::Finding(_) => {}
        }
        Ok(())
    }

    /// One statement per table that has rows, then run bookkeeping (in run order, so
    /// replicas lock runs in one order), then exits; hands back the correlation queue.
    fn write(mut self) -> Result<Queue, StoreError> {
        let rows = std::mem::take(&mut self.rows);
        let n = self.node_id;
        let p = &rows.processes;
        if !p.exec_id.is_empty() {
            // The processes this batch saw first, per run: what makes a run live again.
            let inserted = self.query(
                "INSERT INTO processes (node_id, exec_id, process_id, rid, pid, ppid, time, start_time, binary_path, sha256, cgroup_path, comm, ancestry, event_id)
                 SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::text[], $9::text[], $10::text[],
                     $11::text[], $12::text[], $13::text[], $14::text[])
                 ON CONFLICT DO NOTHING RETURNING rid, binary_path",
                &[&n, &p.exec_id, &p.process_id, &p.rid, &p.pid, &p.ppid, &p.time, &p.start_time, &p.binary_path, &p.sha256, &p.cgroup_path, &p.comm, &p.ancestry, &p.event_id],
            )?;
            let mut runs = rows.runs;
            let mut binaries: BTreeSet<(i64, String)> = BTreeSet::new();
            for r in inserted {
                let rid: i64 = r.get(0);
                if let Some(touch) = runs.get_mut(&rid) {
                    touch.2 += 1;
                }
                binaries.extend(r.get::<_, Option<String>>(1).map(|b| (rid, b)));
            }
            let (mut rid, mut first, mut last, mut new) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (r, (f, l, k)) in runs {
                rid.push(r);
                first.push(f);
                last.push(l);
                new.push(k);
            }
            self.lock_runs(&rid)?;
            // Under the runs' locks, in key order: the binaries new to each run.
            let (bin_rid, bin_path): (Vec<i64>, Vec<String>) = binaries.into_iter().unzip();
            let mut new_binaries: HashMap<i64, i64> = HashMap::new();
            for r in self.query(
                "INSERT INTO run_binaries (rid, binary_path) SELECT * FROM unnest($1::int8[], $2::text[]) ON CONFLICT DO NOTHING RETURNING rid",
                &[&bin_rid, &bin_path],
            )? {
                *new_binaries.entry(r.get(0)).or_default() += 1;
            }
            let bins: Vec<i64> = rid.iter().map(|r| new_binaries.get(r).copied().unwrap_or(0)).collect();
            self.exec(
                "UPDATE runs r SET started = least(r.started, u.first), last_seen = greatest(r.last_seen, u.last), live = r.live + u.new,
                    ended = CASE WHEN u.new > 0 THEN NULL ELSE r.ended END, processes = r.processes + u.new, binaries = r.binaries + u.bins
                 FROM (SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[]) AS u(rid, first, last, new, bins)) u
                 WHERE r.rid = u.rid",
                &[&rid, &first, &last, &new, &bins],
            )?;
        }
        let t = &rows.issuances;
        if !t.jti.is_empty() {
            self.exec(
                "INSERT INTO token_issuances (node_id, jti, stream, seq, time, spiffe_id, audience, issuer, issued_at, expires_at, ttl, exec_id, rid)
                 SELECT $1, u.jti, u.stream, 0, u.time, u.spiffe_id, u.audience, u.issuer, u.issued_at, u.expires_at, u.ttl, u.exec_id, u.rid
                 FROM unnest($2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::int8[], $9::int8[], $10::int8[], $11::text[], $12::int8[])
                     AS u(jti, stream, time, spiffe_id, audience, issuer, issued_at, expires_at, ttl, exec_id, rid)
                 ON CONFLICT DO NOTHING",
                &[&n, &t.jti, &t.stream, &t.time, &t.spiffe_id, &t.audience, &t.issuer, &t.issued_at, &t.expires_at, &t.ttl, &t.exec_id, &t.rid],
            )?;
        }
        let d = &rows.denials;
        if !d.time.is_empty() {
            self.exec(
                "INSERT INTO token_denials (node_id, time, reason, detail, spiffe_id, exec_id, rid)
                 SELECT $1, * FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[])",
                &[&n, &d.time, &d.reason, &d.detail, &d.spiffe_id, &d.exec_id, &d.rid],
            )?;
        }
        let u = &rows.uses;
        if !u.stream.is_empty() {
            self.exec(
                "INSERT INTO credential_uses (node_id, stream, seq, time, rid, dest_port, lifetime,
                    exec_id, dest_ip, host, method, path, detector, class, fingerprint, access_key_id, jwt_iss, jwt_sub, jwt_jti, token_family, count, first_seen)
                 SELECT $1, u.stream, 0, u.time, u.rid, u.dest_port, u.lifetime, u.exec_id, u.dest_ip, u.host, u.method, u.path, u.detector, u.class,
                     u.fingerprint, u.access_key_id, u.jwt_iss, u.jwt_sub, u.jwt_jti, u.token_family, u.count, u.first_seen
                 FROM unnest($2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                     $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::int8[], $21::int8[])
                     AS u(stream, time, rid, dest_port, lifetime, exec_id, dest_ip, host, method, path, detector, class, fingerprint, access_key_id,
                          jwt_iss, jwt_sub, jwt_jti, token_family, count, first_seen)",
                &[
                    &n, &u.stream, &u.time, &u.rid, &u.dest_port, &u.lifetime, &u.exec_id, &u.dest_ip, &u.host, &u.method, &u.path, &u.detector, &u.class,
                    &u.fingerprint, &u.access_key_id, &u.jwt_iss, &u.jwt_sub, &u.jwt_jti, &u.token_family, &u.count, &u.first_seen,
                ],
            )?;
        }
        let f = &rows.file_reads;
        if !f.time.is_empty() {
            self.exec(
                "INSERT INTO credential_file_reads (node_id, time, exec_id, rid, path, file_kind, via)
                 SELECT $1, * FROM unnest($2::int8[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[])",
                &[&n, &f.time, &f.exec_id, &f.rid, &f.path, &f.file_kind, &f.via],
            )?;
        }
        let (exec_ids, exit_times) = &rows.exits;
        if !exec_ids.is_empty() {
            // An exec exits once: its first exit in the batch counts (`DISTINCT ON`), as
            // `exit_time IS NULL` makes any later one a no-op.
            let ended = self.query(
                "UPDATE processes p SET exit_time = u.time
                 FROM (SELECT DISTINCT ON (exec_id) exec_id, time, n FROM unnest($2::text[], $3::int8[]) WITH ORDINALITY AS u(exec_id, time, n)
                       ORDER BY exec_id, n) u
                 WHERE p.node_id = $1 AND p.exec_id = u.exec_id AND p.exit_time IS NULL RETURNING p.rid, u.time, u.n",
                &[&n, exec_ids, exit_times],
            )?;
            // Per run: how many of its processes ended, and the last exit in batch order
            // (the one that leaves the run with no live process, if any does).
            let mut ended: Vec<(i64, i64, i64)> = ended.iter().map(|r| (r.get(2), r.get(0), r.get(1))).collect();
            ended.sort_unstable();
            let mut per_run: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
            for (_, rid, time) in ended {
                let e = per_run.entry(rid).or_insert((0, time, time));
                e.0 += 1;
                e.1 = e.1.max(time);
                e.2 = time;
            }
            let (mut rid, mut count, mut last_seen, mut last_exit) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (r, (c, l, e)) in per_run {
                rid.push(r);
                count.push(c);
                last_seen.push(l);
                last_exit.push(e);
            }
            self.lock_runs(&rid)?;
            self.exec(
                "UPDATE runs r SET last_seen = greatest(r.last_seen, u.last_seen), live = greatest(r.live - u.n, 0),
                    ended = CASE WHEN r.live - u.n <= 0 THEN u.last_exit ELSE r.ended END
                 FROM (SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[]) AS u(rid, n, last_seen, last_exit)) u
                 WHERE r.rid = u.rid",
                &[&rid, &count, &last_seen, &last_exit],
            )?;
        }
        Ok(rows.queue)
    }
}
