//! The embedded store: one SQLite file in WAL mode, one transaction per batch.

use std::{
    path::Path,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

use sigil_proto::{EventBody, json, v1};

use super::{AgentEvent, IngestOutcome, Query, Store, StoreError};
use crate::{cloud::CloudAction, correlate, query};

const SCHEMA: &str = include_str!("schema.sql");

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

pub fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Unix seconds of an RFC 3339 time in an event; `received` when absent or unparsable.
fn time_of(t: &str, received: i64) -> i64 {
    crate::cloud::parse_rfc3339(t).unwrap_or(received)
}

/// The event's own time (agent_stats has none: it is about now).
fn event_time(body: &EventBody) -> &str {
    match body {
        EventBody::ProcessExec(e) => &e.time,
        EventBody::ProcessExit(e) => &e.time,
        EventBody::TokenIssued(e) => &e.time,
        EventBody::TokenDenied(e) => &e.time,
        EventBody::CredentialUse(e) => &e.time,
        EventBody::CredentialFileRead(e) => &e.time,
        EventBody::ConfigChange(e) => &e.time,
        EventBody::AgentStats(_) => "",
    }
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

/// The JSON name of a workload kind (`cgroup` when unset).
fn workload_kind(w: Option<&v1::Workload>) -> String {
    w.and_then(|w| json::workload_kind::name(w.kind)).filter(|k| k != "unspecified").unwrap_or_else(|| "cgroup".into())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::BadArgument(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL + NORMAL: a committed batch survives a process crash; an OS crash may lose the
        // last batches, which agents then resend (they keep events until acknowledged).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')", [])?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut conn)
    }
}

/// Projects one newly stored agent event into the typed tables.
fn project(tx: &Transaction<'_>, id: &str, node: &str, body: &EventBody, time: i64) -> Result<(), StoreError> {
    let process_run = |p: &v1::ProcessRef| run_id(node, p.workload.as_ref(), p.cgroup_path.as_deref());
    let exec_of = |p: Option<&v1::ProcessRef>| p.map(|p| p.exec_id.clone());
    match body {
        EventBody::ProcessExec(v) => {
            let cgroup_path = v.cgroup.as_ref().and_then(|c| c.path.as_deref());
            let w = v.workload.as_ref();
            let run = run_id(node, w, cgroup_path);
            let binary = v.binary.clone().unwrap_or_default();
            tx.execute(
                "INSERT INTO runs (run_id, node, kind, pod_uid, container_id, unit, cgroup_path, started, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT (run_id) DO UPDATE SET started = min(started, ?8), last_seen = max(last_seen, ?8), ended = NULL",
                params![
                    run, node, workload_kind(w), w.and_then(|w| w.pod_uid.as_deref()), w.and_then(|w| w.container_id.as_deref()),
                    w.and_then(|w| w.unit.as_deref()), cgroup_path, time
                ],
            )?;
            let exec_id = if v.exec_id.is_empty() { id } else { &v.exec_id };
            let ancestry = serde_json::json!({"ancestry": v.ancestry}).to_string();
            tx.execute(
                "INSERT OR REPLACE INTO processes (exec_id, process_id, run_id, node, pid, ppid, time, start_time, binary_path, sha256, cgroup_path, comm, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    exec_id, v.process_id, run, node, v.pid, v.ppid, time, v.start_time, binary.path, binary.sha256, cgroup_path, v.comm, ancestry
                ],
            )?;
        }
        EventBody::ProcessExit(v) => {
            tx.execute("UPDATE processes SET exit_time = ?2 WHERE exec_id = ?1", params![v.exec_id, time])?;
            tx.execute(
                "UPDATE runs SET last_seen = max(last_seen, ?2) WHERE run_id = (SELECT run_id FROM processes WHERE exec_id = ?1)",
                params![v.exec_id, time],
            )?;
            // A run ends when its last known process has exited.
            tx.execute(
                "UPDATE runs SET ended = ?2 WHERE run_id = (SELECT run_id FROM processes WHERE exec_id = ?1)
                   AND NOT EXISTS (SELECT 1 FROM processes p WHERE p.run_id = runs.run_id AND p.exit_time IS NULL)",
                params![v.exec_id, time],
            )?;
        }
        EventBody::TokenIssued(v) => {
            let p = v.process.as_ref();
            let aud = serde_json::to_string(&v.audience).unwrap_or_default();
            let jti = if v.jti.is_empty() { id } else { &v.jti };
            tx.execute(
                "INSERT OR IGNORE INTO token_issuances (jti, event_id, node, time, spiffe_id, audience, issuer, issued_at, expires_at, ttl, exec_id, run_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![jti, id, node, time, v.spiffe_id, aud, v.issuer, v.issued_at, v.expires_at, v.ttl_seconds, exec_of(p), p.map(process_run)],
            )?;
        }
        EventBody::TokenDenied(v) => {
            let p = v.process.as_ref();
            tx.execute(
                "INSERT OR IGNORE INTO token_denials (event_id, node, time, reason, detail, spiffe_id, exec_id, run_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    id, node, time, json::deny_reason::name(v.reason).unwrap_or_else(|| "unknown".into()), v.detail,
                    v.requested_spiffe_id, exec_of(p), p.map(process_run)
                ],
            )?;
        }
        EventBody::CredentialUse(v) => {
            let p = v.process.as_ref();
            let ids = v.identifiers.clone().unwrap_or_default();
            let dest = v.destination.clone().unwrap_or_default();
            tx.execute(
                "INSERT OR IGNORE INTO credential_uses (event_id, node, time, exec_id, run_id, dest_ip, dest_port, host, method, path,
                    detector, class, lifetime, fingerprint, access_key_id, jwt_iss, jwt_sub, jwt_jti, token_family)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
                params![
                    id, node, time, exec_of(p), p.map(process_run), dest.ip, dest.port, dest.host, v.method, v.path,
                    json::detector::name(v.detector).unwrap_or_else(|| "unknown".into()),
                    json::credential_class::name(v.class).unwrap_or_else(|| "unknown".into()), v.lifetime_seconds, v.fingerprint,
                    ids.access_key_id, ids.jwt_iss, ids.jwt_sub, ids.jwt_jti, ids.token_family
                ],
            )?;
        }
        EventBody::CredentialFileRead(v) => {
            let p = v.process.as_ref();
            tx.execute(
                "INSERT OR IGNORE INTO credential_file_reads (event_id, node, time, exec_id, run_id, path, file_kind)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, node, time, exec_of(p), p.map(process_run), v.path, json::file_kind::name(v.file_kind).unwrap_or_else(|| "unknown".into())],
            )?;
        }
        EventBody::AgentStats(_) => {
            let stats = body.to_json().map(String::from_utf8).ok().and_then(Result::ok);
            tx.execute("UPDATE nodes SET last_stats = ?2 WHERE node = ?1", params![node, stats])?;
        }
        // Kept in `events`, nothing to project.
        EventBody::ConfigChange(_) => {}
    }
    Ok(())
}

impl Store for SqliteStore {
    fn ingest_events(&self, node: &str, events: &[AgentEvent]) -> Result<IngestOutcome, StoreError> {
        let received = now_unix();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let mut out = IngestOutcome::default();
            tx.execute(
                "INSERT INTO nodes (node, first_seen, last_seen) VALUES (?1, ?2, ?2)
                 ON CONFLICT (node) DO UPDATE SET last_seen = ?2",
                params![node, received],
            )?;
            for ev in events {
                let time = time_of(event_time(&ev.body), received);
                let json = ev.body.to_json().map_err(|e| StoreError::BadArgument(format!("event {}: {e}", ev.id)))?;
                let inserted = tx.execute(
                    "INSERT OR IGNORE INTO events (id, node, kind, time, received, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![ev.id, node, ev.body.kind(), time, received, json],
                )?;
                if inserted == 0 {
                    out.duplicates += 1;
                    continue;
                }
                project(&tx, &ev.id, node, &ev.body, time)?;
                out.stored += 1;
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn ingest_cloud(&self, actions: &[CloudAction]) -> Result<IngestOutcome, StoreError> {
        let ingested = now_unix();
        self.with(|conn| {
            let tx = conn.transaction()?;
            let mut out = IngestOutcome::default();
            for a in actions {
                let assumed = a.assumed.as_ref();
                let n = tx.execute(
                    "INSERT OR IGNORE INTO cloud_actions (id, provider, time, ingested, action, service, region, principal, principal_type,
                        access_key_id, source_ip, user_agent, error_code, issued_access_key_id, role_session_name, web_identity_subject, delegation, json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
                    params![
                        a.id, serde_json::to_value(a.provider).ok().and_then(|v| v.as_str().map(str::to_owned)), a.time_unix, ingested,
                        a.action, a.service, a.region, a.principal, a.principal_type, a.access_key_id, a.source_ip, a.user_agent,
                        a.error_code, assumed.and_then(|r| r.issued_access_key_id.clone()), assumed.and_then(|r| r.role_session_name.clone()),
                        assumed.and_then(|r| r.web_identity_subject.clone()), serde_json::to_string(&a.delegation).unwrap_or_default(),
                        a.raw.to_string()
                    ],
                )?;
                if n == 0 { out.duplicates += 1 } else { out.stored += 1 }
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn correlate(&self) -> Result<Vec<correlate::NewLink>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let n = correlate::run(&tx, now_unix())?;
            tx.commit()?;
            Ok(n)
        })
    }

    fn query(&self, q: &Query) -> Result<Value, StoreError> {
        self.with(|conn| query::answer(conn, q))
    }

    fn metrics(&self) -> Result<Value, StoreError> {
        self.with(|conn| query::metrics_snapshot(conn, now_unix()))
    }

    fn retain(&self, before: i64) -> Result<usize, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            let mut n = 0;
            for (table, col) in [
                ("events", "time"),
                ("processes", "time"),
                ("token_issuances", "time"),
                ("token_denials", "time"),
                ("credential_uses", "time"),
                ("credential_file_reads", "time"),
                ("cloud_actions", "time"),
            ] {
                n += tx.execute(&format!("DELETE FROM {table} WHERE {col} < ?1"), params![before])?;
            }
            n += tx.execute("DELETE FROM links WHERE cloud_action_id NOT IN (SELECT id FROM cloud_actions)", [])?;
            n += tx.execute("DELETE FROM runs WHERE last_seen < ?1", params![before])?;
            tx.commit()?;
            Ok(n)
        })
    }
}

/// Convenience for queries: one optional row as JSON-able values.
pub fn optional<T>(r: rusqlite::Result<T>) -> Result<Option<T>, StoreError> {
    Ok(r.optional()?)
}
