//! Agent events into the PostgreSQL tables, one transaction per batch. An event is
//! projected only when this transaction inserted its (node, id, time) key, so replicas
//! racing on the same batch project it once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use postgres::{Row, Transaction, types::ToSql};
use sigil_proto::{EventBody, json, v1};

use super::Stmts;
use crate::store::{AgentEvent, IngestOutcome, StoreError, aggregate::UseFigures, sqlite::run_id};

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// Unix seconds of an event's own time; `None` for agent statistics, which are about the
/// moment they arrive. An unparsable time counts as the Unix epoch, so a resent event
/// keeps its key.
pub fn time_of(body: &EventBody) -> Option<i64> {
    body.time().map(|t| crate::cloud::parse_rfc3339(t).unwrap_or(0))
}

struct Batch<'a, 't> {
    tx: &'a mut Transaction<'t>,
    stmts: &'a mut Stmts,
    node: &'a str,
    /// Runs looked up or created by this batch.
    rids: HashMap<String, i64>,
    node_id: i64,
    /// Per run: first and last activity, processes newly seen.
    runs: BTreeMap<i64, (i64, i64, i64)>,
    exits: Vec<(String, i64)>,
    queue: BTreeSet<(&'static str, String)>,
}

pub fn ingest(tx: &mut Transaction<'_>, stmts: &mut Stmts, node: &str, events: &[AgentEvent], received: i64) -> Result<IngestOutcome, StoreError> {
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
    let mut b = Batch { tx, stmts, node, rids: HashMap::new(), node_id, runs: BTreeMap::new(), exits: Vec::new(), queue: BTreeSet::new() };
    let mut out = IngestOutcome::default();
    let mut counts: BTreeMap<i32, i64> = BTreeMap::new();
    let mut stored = Vec::new();
    for ev in events {
        // Removed once projected: the same id twice in one batch is one event.
        if !new.remove(&ev.id) {
            out.duplicates += 1;
            continue;
        }
        b.project(&ev.id, &ev.body, time_of(&ev.body).unwrap_or(received))?;
        *counts.entry(ev.body.kind_id() as i32).or_default() += 1;
        out.stored += 1;
        stored.push(ev);
    }
    b.finish()?;
    // The aggregate tables, from the events this transaction newly stored (only those).
    super::aggregates::add(tx, node, &stored, |body| time_of(body).unwrap_or(received))?;
    for (kind, n) in counts {
        let st = stmts.get(tx, "INSERT INTO event_counts (kind, n) VALUES ($1, $2) ON CONFLICT (kind) DO UPDATE SET n = event_counts.n + EXCLUDED.n")?;
        tx.execute(&st, &[&kind, &n])?;
    }
    Ok(out)
}

impl Batch<'_, '_> {
    fn exec(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, StoreError> {
        let st = self.stmts.get(self.tx, sql)?;
        Ok(self.tx.execute(&st, params)?)
    }

    fn query_opt(&mut self, sql: &'static str, params: Params<'_>) -> Result<Option<Row>, StoreError> {
        let st = self.stmts.get(self.tx, sql)?;
        Ok(self.tx.query_opt(&st, params)?)
    }
    /// The run of a process (created on first sight, by whichever replica sees it first).
    fn rid(&mut self, workload: Option<&v1::Workload>, cgroup_path: Option<&str>, time: i64) -> Result<i64, StoreError> {
        let key = run_id(self.node, workload, cgroup_path);
        if let Some(&rid) = self.rids.get(&key) {
            return Ok(rid);
        }
        let found = self.query_opt("SELECT rid FROM runs WHERE run_id = $1", &[&key])?;
        let rid: i64 = match found {
            Some(r) => r.get(0),
            None => {
                let w = workload.cloned().unwrap_or_default();
                let kind = json::workload_kind::name(w.kind).filter(|k| k != "unspecified").unwrap_or_else(|| "cgroup".into());
                let node = self.node;
                self.query_opt(
                    "INSERT INTO runs (run_id, node, kind, pod_uid, container_id, unit, cgroup_path, started, last_seen)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
                     ON CONFLICT (run_id) DO UPDATE SET run_id = EXCLUDED.run_id RETURNING rid",
                    &[&key, &node, &kind, &w.pod_uid, &w.container_id, &w.unit, &cgroup_path, &time],
                )?
                .ok_or_else(|| StoreError::NotFound(format!("run {key} not created")))?
                .get(0)
            }
        };
        self.rids.insert(key, rid);
        Ok(rid)
    }

    fn process_rid(&mut self, p: Option<&v1::ProcessRef>, time: i64) -> Result<Option<i64>, StoreError> {
        p.map(|p| self.rid(p.workload.as_ref(), p.cgroup_path.as_deref(), time)).transpose()
    }

    fn queue(&mut self, what: &'static str, value: Option<&str>) {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.queue.insert((what, v.to_owned()));
        }
    }

    fn project(&mut self, id: &str, body: &EventBody, time: i64) -> Result<(), StoreError> {
        let node_id = self.node_id;
        match body {
            EventBody::ProcessExec(v) => {
                let cgroup_path = v.cgroup.as_ref().and_then(|c| c.path.as_deref());
                let rid = self.rid(v.workload.as_ref(), cgroup_path, time)?;
                let binary = v.binary.clone().unwrap_or_default();
                let ancestry = serde_json::to_string(&v.ancestry).map_err(|e| StoreError::BadArgument(format!("ancestry: {e}")))?;
                let inserted = self.exec(
                    "INSERT INTO processes (node_id, exec_id, process_id, rid, pid, ppid, time, start_time, binary_path, sha256, cgroup_path, comm, ancestry, event_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING",
                    &[
                        &node_id, &v.exec_id, &v.process_id, &rid, &i64::from(v.pid), &i64::from(v.ppid), &time, &v.start_time,
                        &binary.path, &binary.sha256, &cgroup_path, &v.comm, &ancestry, &id,
                    ],
                )?;
                let touch = self.runs.entry(rid).or_insert((time, time, 0));
                touch.0 = touch.0.min(time);
                touch.1 = touch.1.max(time);
                touch.2 += inserted as i64;
            }
            EventBody::ProcessExit(v) => self.exits.push((v.exec_id.clone(), time)),
            EventBody::TokenIssued(v) => {
                let p = v.process.as_ref();
                let rid = self.process_rid(p, time)?;
                let aud = serde_json::to_string(&v.audience).map_err(|e| StoreError::BadArgument(format!("audience: {e}")))?;
                self.exec(
                    "INSERT INTO token_issuances (node_id, jti, stream, seq, time, spiffe_id, audience, issuer, issued_at, expires_at, ttl, exec_id, rid)
                     VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
                    &[&node_id, &v.jti, &id, &time, &v.spiffe_id, &aud, &v.issuer, &v.issued_at, &v.expires_at, &v.ttl_seconds, &p.map(|p| &p.exec_id), &rid],
                )?;
                self.queue("jti", Some(&v.jti));
                self.queue("subject", Some(&v.spiffe_id));
            }
            EventBody::TokenDenied(v) => {
                let p = v.process.as_ref();
                let rid = self.process_rid(p, time)?;
                let reason = json::deny_reason::name(v.reason).unwrap_or_else(|| "unknown".into());
                self.exec(
                    "INSERT INTO token_denials (node_id, time, reason, detail, spiffe_id, exec_id, rid) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[&node_id, &time, &reason, &v.detail, &v.requested_spiffe_id, &p.map(|p| &p.exec_id), &rid],
                )?;
            }
            EventBody::CredentialUse(v) => {
                let p = v.process.as_ref();
                let ids = v.identifiers.clone().unwrap_or_default();
                let dest = v.destination.clone().unwrap_or_default();
                let detector = json::detector::name(v.detector).unwrap_or_else(|| "unknown".into());
                let class = json::credential_class::name(v.class).unwrap_or_else(|| "unknown".into());
                let rid = self.process_rid(p, time)?;
                let figures = UseFigures::of(v, time);
                let first = Some(figures.first).filter(|f| *f < time);
                self.exec(
                    "INSERT INTO credential_uses (node_id, stream, seq, time, rid, dest_port, lifetime,
                        exec_id, dest_ip, host, method, path, detector, class, fingerprint, access_key_id, jwt_iss, jwt_sub, jwt_jti, token_family, count, first_seen)
                     VALUES ($1, $2, 0, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
                    &[
                        &node_id, &id, &time, &rid, &dest.port.map(i64::from), &v.lifetime_seconds, &p.map(|p| &p.exec_id), &dest.ip, &dest.host,
                        &v.method, &v.path, &detector, &class, &v.fingerprint, &ids.access_key_id, &ids.jwt_iss, &ids.jwt_sub, &ids.jwt_jti,
                        &ids.token_family, &figures.count, &first,
                    ],
                )?;
                self.queue("key", ids.access_key_id.as_deref());
                self.queue("principal", ids.jwt_iss.as_deref());
                self.queue("principal", ids.jwt_sub.as_deref());
            }
            EventBody::CredentialFileRead(v) => {
                let p = v.process.as_ref();
                let rid = self.process_rid(p, time)?;
                let kind = json::file_kind::name(v.file_kind).unwrap_or_else(|| "unknown".into());
                self.exec(
                    "INSERT INTO credential_file_reads (node_id, time, exec_id, rid, path, file_kind) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&node_id, &time, &p.map(|p| &p.exec_id), &rid, &v.path, &kind],
                )?;
            }
            EventBody::AgentStats(_) => {
                let stats = body.to_json().ok().and_then(|j| String::from_utf8(j).ok());
                self.exec("UPDATE nodes SET last_stats = $2 WHERE node_id = $1", &[&node_id, &stats])?;
            }
            EventBody::ConfigChange(_) => {}
        }
        Ok(())
    }

    /// Run bookkeeping (in run order, so replicas lock runs in one order), then exits,
    /// then the correlation queue.
    fn finish(mut self) -> Result<(), StoreError> {
        for (rid, (first, last, new)) in std::mem::take(&mut self.runs) {
            self.exec(
                "UPDATE runs SET started = least(started, $2), last_seen = greatest(last_seen, $3), live = live + $4,
                    ended = CASE WHEN $4 > 0 THEN NULL ELSE ended END WHERE rid = $1",
                &[&rid, &first, &last, &new],
            )?;
        }
        let node_id = self.node_id;
        for (exec_id, time) in std::mem::take(&mut self.exits) {
            let rid = self.query_opt(
                "UPDATE processes SET exit_time = $3 WHERE node_id = $1 AND exec_id = $2 AND exit_time IS NULL RETURNING rid",
                &[&node_id, &exec_id, &time],
            )?;
            if let Some(r) = rid {
                let rid: i64 = r.get(0);
                self.exec(
                    "UPDATE runs SET last_seen = greatest(last_seen, $2), live = greatest(live - 1, 0),
                        ended = CASE WHEN live - 1 <= 0 THEN $2 ELSE ended END WHERE rid = $1",
                    &[&rid, &time],
                )?;
            }
        }
        for (what, value) in std::mem::take(&mut self.queue) {
            self.exec("INSERT INTO correlate_queue (what, value) VALUES ($1, $2) ON CONFLICT DO NOTHING", &[&what, &value])?;
        }
        Ok(())
    }
}
