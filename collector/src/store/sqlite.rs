//! The embedded store: one SQLite file in WAL mode, one transaction per batch.

use std::{
    path::Path,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

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
fn time_of(v: &Value, field: &str, received: i64) -> i64 {
    v.get(field).and_then(Value::as_str).and_then(crate::cloud::parse_rfc3339).unwrap_or(received)
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |cur, k| cur.get(k)).and_then(Value::as_str)
}

fn i(v: &Value, path: &[&str]) -> Option<i64> {
    path.iter().try_fold(v, |cur, k| cur.get(k)).and_then(Value::as_i64)
}

/// The workload run a process belongs to: its container when it has one, else its pod,
/// systemd unit, or plain cgroup, scoped by node where the name is only node-unique.
pub fn run_id(node: &str, workload: &Value, cgroup_path: Option<&str>) -> String {
    let get = |k: &str| workload.get(k).and_then(Value::as_str);
    match (get("kind"), get("container_id"), get("pod_uid"), get("unit")) {
        (_, Some(c), _, _) => format!("container:{c}"),
        (_, None, Some(p), _) => format!("pod:{p}"),
        (Some("systemd_unit"), _, _, Some(u)) => format!("unit:{node}:{u}"),
        _ => format!("cgroup:{node}:{}", cgroup_path.unwrap_or("/")),
    }
}

/// The agent's `run` key when it knew the process's pod (a Job's execution, a
/// Deployment's pod: what users mean by a run), else the run derived from the workload.
fn run_of(node: &str, process: &Value, cgroup_path: Option<&str>) -> String {
    s(process, &["run"]).map_or_else(|| run_id(node, process.get("workload").unwrap_or(&Value::Null), cgroup_path), str::to_owned)
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
fn project(tx: &Transaction<'_>, id: &str, node: &str, kind: &str, v: &Value, time: i64) -> Result<(), StoreError> {
    let process_run = |p: &Value| p.get("workload").map(|_| run_of(node, p, s(p, &["cgroup_path"])));
    match kind {
        "process_exec" => {
            let run = run_of(node, v, s(v, &["cgroup", "path"]));
            let w = v.get("workload").unwrap_or(&Value::Null);
            tx.execute(
                "INSERT INTO runs (run_id, node, kind, pod_uid, container_id, unit, cgroup_path, started, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT (run_id) DO UPDATE SET started = min(started, ?8), last_seen = max(last_seen, ?8), ended = NULL",
                params![run, node, s(w, &["kind"]).unwrap_or("cgroup"), s(w, &["pod_uid"]), s(w, &["container_id"]), s(w, &["unit"]), s(v, &["cgroup", "path"]), time],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO processes (exec_id, process_id, run_id, node, pid, ppid, time, start_time, binary_path, sha256, cgroup_path, comm, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    s(v, &["exec_id"]).unwrap_or(id), s(v, &["process_id"]).unwrap_or(""), run, node,
                    i(v, &["pid"]).unwrap_or(0), i(v, &["ppid"]).unwrap_or(0), time, s(v, &["start_time"]),
                    s(v, &["binary", "path"]), s(v, &["binary", "sha256"]), s(v, &["cgroup", "path"]), s(v, &["comm"]), v.to_string()
                ],
            )?;
        }
        "process_exit" => {
            tx.execute("UPDATE processes SET exit_time = ?2 WHERE exec_id = ?1", params![s(v, &["exec_id"]), time])?;
            tx.execute(
                "UPDATE runs SET last_seen = max(last_seen, ?2) WHERE run_id = (SELECT run_id FROM processes WHERE exec_id = ?1)",
                params![s(v, &["exec_id"]), time],
            )?;
            // A run ends when its last known process has exited.
            tx.execute(
                "UPDATE runs SET ended = ?2 WHERE run_id = (SELECT run_id FROM processes WHERE exec_id = ?1)
                   AND NOT EXISTS (SELECT 1 FROM processes p WHERE p.run_id = runs.run_id AND p.exit_time IS NULL)",
                params![s(v, &["exec_id"]), time],
            )?;
        }
        "token_issued" => {
            let p = v.get("process").unwrap_or(&Value::Null);
            let aud = v.get("audience").map(Value::to_string).unwrap_or_default();
            tx.execute(
                "INSERT OR IGNORE INTO token_issuances (jti, event_id, node, time, spiffe_id, audience, issuer, issued_at, expires_at, ttl, exec_id, run_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    s(v, &["jti"]).unwrap_or(id), id, node, time, s(v, &["spiffe_id"]).unwrap_or(""), aud, s(v, &["issuer"]),
                    i(v, &["issued_at"]), i(v, &["expires_at"]), i(v, &["ttl_seconds"]), s(p, &["exec_id"]), process_run(p)
                ],
            )?;
        }
        "token_denied" => {
            let p = v.get("process").unwrap_or(&Value::Null);
            tx.execute(
                "INSERT OR IGNORE INTO token_denials (event_id, node, time, reason, detail, spiffe_id, exec_id, run_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![id, node, time, s(v, &["reason"]).unwrap_or("unknown"), s(v, &["detail"]), s(v, &["requested_spiffe_id"]), s(p, &["exec_id"]), process_run(p)],
            )?;
        }
        "credential_use" => {
            let p = v.get("process").unwrap_or(&Value::Null);
            let ids = v.get("identifiers").unwrap_or(&Value::Null);
            tx.execute(
                "INSERT OR IGNORE INTO credential_uses (event_id, node, time, exec_id, run_id, dest_ip, dest_port, host, method, path,
                    detector, class, lifetime, fingerprint, access_key_id, jwt_iss, jwt_sub, jwt_jti, token_family)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
                params![
                    id, node, time, s(p, &["exec_id"]), process_run(p), s(v, &["destination", "ip"]), i(v, &["destination", "port"]),
                    s(v, &["destination", "host"]), s(v, &["method"]), s(v, &["path"]), s(v, &["detector"]).unwrap_or("unknown"),
                    s(v, &["class"]).unwrap_or("unknown"), i(v, &["lifetime_seconds"]), s(v, &["fingerprint"]).unwrap_or(""),
                    s(ids, &["access_key_id"]), s(ids, &["jwt_iss"]), s(ids, &["jwt_sub"]), s(ids, &["jwt_jti"]), s(ids, &["token_family"])
                ],
            )?;
        }
        "credential_file_read" => {
            let p = v.get("process").unwrap_or(&Value::Null);
            tx.execute(
                "INSERT OR IGNORE INTO credential_file_reads (event_id, node, time, exec_id, run_id, path, file_kind)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, node, time, s(p, &["exec_id"]), process_run(p), s(v, &["path"]).unwrap_or(""), s(v, &["file_kind"]).unwrap_or("unknown")],
            )?;
        }
        "agent_stats" => {
            tx.execute("UPDATE nodes SET last_stats = ?2 WHERE node = ?1", params![node, v.to_string()])?;
        }
        // config_change and future kinds: kept in `events`, nothing to project.
        _ => {}
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
                let v: Value = match serde_json::from_slice(&ev.json) {
                    Ok(v @ Value::Object(_)) => v,
                    Ok(_) => {
                        out.rejected += 1;
                        out.errors.push(format!("event {}: not a JSON object", ev.id));
                        continue;
                    }
                    Err(e) => {
                        out.rejected += 1;
                        out.errors.push(format!("event {}: not JSON: {e}", ev.id));
                        continue;
                    }
                };
                if ev.id.is_empty() {
                    out.rejected += 1;
                    out.errors.push("an event has no id".into());
                    continue;
                }
                let time = time_of(&v, "time", received);
                let inserted = tx.execute(
                    "INSERT OR IGNORE INTO events (id, node, kind, time, received, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![ev.id, node, ev.kind, time, received, v.to_string()],
                )?;
                if inserted == 0 {
                    out.duplicates += 1;
                    continue;
                }
                project(&tx, &ev.id, node, &ev.kind, &v, time)?;
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
            // One prepared statement for the whole batch: re-preparing per row cost more
            // than the insert itself.
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO cloud_actions (id, provider, time, ingested, action, service, region, principal, principal_type,
                    access_key_id, source_ip, user_agent, error_code, issued_access_key_id, role_session_name, web_identity_subject, delegation, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )?;
            for a in actions {
                let assumed = a.assumed.as_ref();
                let n = insert.execute(params![
                    a.id, a.provider.as_str(), a.time_unix, ingested,
                    a.action, a.service, a.region, a.principal, a.principal_type, a.access_key_id, a.source_ip, a.user_agent,
                    a.error_code, assumed.and_then(|r| r.issued_access_key_id.as_deref()), assumed.and_then(|r| r.role_session_name.as_deref()),
                    assumed.and_then(|r| r.web_identity_subject.as_deref()), serde_json::to_string(&a.delegation).unwrap_or_default(),
                    a.raw.to_string()
                ])?;
                if n == 0 { out.duplicates += 1 } else { out.stored += 1 }
            }
            drop(insert);
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
            // Imported audit logs are evidence a responder brought in, often months old:
            // they age by when they were ingested, not by when the calls happened. What
            // they are attributed to (runs, processes, credentials, tokens) is kept while
            // they are, so a trace still answers.
            n += tx.execute("DELETE FROM cloud_actions WHERE ingested < ?1", params![before])?;
            n += tx.execute("DELETE FROM links WHERE cloud_action_id NOT IN (SELECT id FROM cloud_actions)", [])?;
            for (table, key) in [
                ("processes", "run_id"),
                ("token_issuances", "run_id"),
                ("token_denials", "run_id"),
                ("credential_uses", "run_id"),
                ("credential_file_reads", "run_id"),
            ] {
                n += tx.execute(
                    &format!("DELETE FROM {table} WHERE time < ?1 AND ({key} IS NULL OR {key} NOT IN (SELECT run_id FROM links))"),
                    params![before],
                )?;
            }
            n += tx.execute("DELETE FROM events WHERE time < ?1", params![before])?;
            n += tx.execute("DELETE FROM runs WHERE last_seen < ?1 AND run_id NOT IN (SELECT run_id FROM links)", params![before])?;
            tx.commit()?;
            Ok(n)
        })
    }
}

/// Convenience for queries: one optional row as JSON-able values.
pub fn optional<T>(r: rusqlite::Result<T>) -> Result<Option<T>, StoreError> {
    Ok(r.optional()?)
}
