//! Answers to the questions incident responders ask, as JSON documents (the HTTP API,
//! the gRPC Query service and the `sigil` CLI all return these), from the SQLite layout:
//! the `*_v` views give rows their old shape with strings resolved; filters go through
//! the interned ids so every lookup is an index probe.

use rusqlite::{Connection, OptionalExtension, ToSql, params, types::ValueRef};
use serde_json::{Map, Value, json};

use crate::store::{Query, StoreError};

/// Rows of `sql` as JSON objects keyed by column name.
fn rows(conn: &Connection, sql: &str, args: &[&dyn ToSql]) -> Result<Vec<Value>, StoreError> {
    let mut st = conn.prepare(sql)?;
    let names: Vec<String> = st.column_names().map(str::to_owned).collect();
    let mut out = Vec::new();
    let mut rs = st.query(args)?;
    while let Some(r) = rs.next()? {
        let mut obj = Map::new();
        for (i, name) in names.iter().enumerate() {
            let v = match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => json!(n),
                ValueRef::Real(f) => json!(f),
                ValueRef::Text(t) => {
                    let s = String::from_utf8_lossy(t);
                    // Columns holding JSON documents come back as JSON.
                    if name == "json" || name == "raw" || name == "ancestry" { serde_json::from_str(&s).unwrap_or(Value::String(s.into_owned())) } else { Value::String(s.into_owned()) }
                }
                ValueRef::Blob(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
            };
            obj.insert(name.clone(), v);
        }
        out.push(Value::Object(obj));
    }
    Ok(out)
}

fn one(conn: &Connection, sql: &str, args: &[&dyn ToSql]) -> Result<Option<Value>, StoreError> {
    Ok(rows(conn, sql, args)?.into_iter().next())
}

pub fn answer(conn: &Connection, q: &Query) -> Result<Value, StoreError> {
    match q {
        Query::Trace(id) => trace(conn, id),
        Query::WhoUsed(x) => who_used(conn, x),
        Query::Run(id) => run(conn, id),
        Query::StaticCredentials => static_credentials(conn),
        Query::Unattributed => unattributed(conn),
        Query::Posture => posture(conn),
        Query::Findings { kind, since } => findings(conn, kind.as_deref(), since.unwrap_or(i64::MIN)),
    }
}

/// The number of a run id (`WHERE rid = RID` takes the run id as ?1).
const RID: &str = "(SELECT rid FROM runs WHERE run_id = ?1)";

/// The id of an interned string; -1 (no row) when it was never stored.
fn sid(conn: &Connection, s: &str) -> Result<i64, StoreError> {
    Ok(conn.prepare_cached("SELECT id FROM strings WHERE s = ?1")?.query_row([s], |r| r.get(0)).optional()?.unwrap_or(-1))
}

/// The columns of a run, as the answers show it.
const RUN: &str = "SELECT run_id, node, kind, pod_uid, container_id, unit, cgroup_path, started, last_seen, ended FROM runs WHERE run_id = ?1";

/// The processes of a run, oldest first, with their ancestry.
fn processes(conn: &Connection, run_id: &str) -> Result<Vec<Value>, StoreError> {
    rows(
        conn,
        &format!("SELECT exec_id, pid, ppid, time, start_time, exit_time, binary_path, sha256, comm, ancestry FROM processes_v WHERE rid = {RID} ORDER BY time, exec_id"),
        &[&run_id],
    )
}

/// How the credential behind a link was obtained.
fn obtained(conn: &Connection, link: &Value, credential: &Value) -> Result<Value, StoreError> {
    if let Some(jti) = link["jti"].as_str() {
        let issuance = one(conn, "SELECT jti, spiffe_id, audience, issued_at, expires_at, ttl, exec_id, run_id FROM token_issuances_v WHERE jti = ?1", &[&jti])?;
        let via = if link["reason"] == "temporary_key_from_attributed_assume_role" {
            "temporary AWS credentials from AssumeRoleWithWebIdentity with a Sigil-issued token"
        } else {
            "a Sigil-issued token exchanged through AssumeRoleWithWebIdentity"
        };
        return Ok(json!({"how": via, "token": issuance, "response": handed_out(conn, credential)?}));
    }
    let run_id = link["run_id"].as_str().unwrap_or("");
    // Temporary keys a run got by exchanging a Sigil token itself (SDK web identity,
    // `sigil-agent credential-process`): the exchange the agent saw in the request body
    // names the token, whatever the role session name.
    if credential["class"] == "short_lived"
        && credential["access_key_id"].is_string()
        && let Some(exchange) = one(
            conn,
            &format!(
                "SELECT event_id, time, host, dest_ip, dest_port, path, jwt_jti, exec_id FROM credential_uses_v
                 WHERE rid = {RID} AND detector = 'token_exchange' AND jwt_jti IS NOT NULL AND time <= ?2 ORDER BY time DESC LIMIT 1"
            ),
            &[&run_id, &credential["time"].as_i64().unwrap_or(i64::MAX)],
        )?
        && let Some(jti) = exchange["jwt_jti"].as_str()
        && let Some(issuance) = one(conn, "SELECT jti, spiffe_id, audience, issued_at, expires_at, ttl, exec_id, run_id FROM token_issuances_v WHERE jti = ?1", &[&jti])?
    {
        return Ok(json!({"how": crate::store::EXCHANGED_SIGIL_TOKEN, "exchange": exchange, "token": issuance}));
    }
    let files = rows(conn, &format!("SELECT time, path, file_kind, exec_id FROM credential_file_reads_v WHERE rid = {RID} ORDER BY time"), &[&run_id])?;
    let how = match credential["class"].as_str() {
        Some("static") if !files.is_empty() => "a long-lived credential; the run read credential files",
        Some("static") => "a long-lived credential from the environment, image or config (no credential file read seen)",
        Some("short_lived") => "a short-lived credential obtained outside Sigil",
        Some("sigil_issued") => "a Sigil-issued token",
        _ => "unknown",
    };
    Ok(json!({"how": how, "credential_files": files, "response": handed_out(conn, credential)?}))
}

/// The exchange response in which some run obtained the credential (by its AWS key id),
/// if the agent read it.
fn handed_out(conn: &Connection, credential: &Value) -> Result<Value, StoreError> {
    let Some(key) = credential["access_key_id"].as_str() else { return Ok(Value::Null) };
    Ok(one(
        conn,
        "SELECT time, exchange_kind, identifier, expires_at, principal, host, presented_jti, exec_id, run_id FROM credential_obtained_v WHERE identifier = ?1 ORDER BY time LIMIT 1",
        &[&key],
    )?
    .unwrap_or(Value::Null))
}

fn trace(conn: &Connection, id: &str) -> Result<Value, StoreError> {
    let action = one(conn, "SELECT id, provider, time, action, service, region, principal, principal_type, access_key_id, source_ip, user_agent, error_code, json AS raw FROM cloud_actions WHERE id = ?1", &[&id])?
        .ok_or_else(|| StoreError::NotFound(format!("no cloud action with id {id}")))?;
    let links = rows(conn, "SELECT run_id, exec_id, credential_use_id, jti, reason, confidence FROM links WHERE cloud_action_id = ?1 ORDER BY confidence DESC, run_id", &[&id])?;
    let mut attribution = Vec::new();
    for link in &links {
        let run_id = link["run_id"].as_str().unwrap_or("");
        let run = one(conn, RUN, &[&run_id])?;
        let credential = match link["credential_use_id"].as_i64() {
            Some(u) => one(conn, "SELECT event_id, time, detector, class, lifetime, fingerprint, access_key_id, jwt_iss, jwt_sub, dest_ip, dest_port, host, method, path, exec_id FROM credential_uses_v WHERE row = ?1", &[&u])?,
            None => None,
        }
        .unwrap_or(Value::Null);
        attribution.push(json!({
            "run": run,
            "reason": link["reason"],
            "confidence": link["confidence"],
            "exec_id": link["exec_id"],
            "processes": processes(conn, run_id)?,
            "credential": credential,
            "obtained": obtained(conn, link, &credential)?,
        }));
    }
    Ok(json!({"action": action, "attributed": !links.is_empty(), "attribution": attribution}))
}

fn who_used(conn: &Connection, x: &str) -> Result<Value, StoreError> {
    let id = sid(conn, x)?;
    let uses = rows(
        conn,
        "SELECT run_id, count(*) AS uses, min(time) AS first_seen, max(time) AS last_seen, detector, class, fingerprint, access_key_id,
                group_concat(DISTINCT coalesce(host, dest_ip)) AS destinations, group_concat(DISTINCT exec_id) AS exec_ids
         FROM credential_uses_v WHERE access_key_sid = ?1 OR fingerprint_sid = ?1 OR jwt_jti_sid = ?1
         GROUP BY run_id, fingerprint ORDER BY first_seen",
        &[&id],
    )?;
    let issuance = one(conn, "SELECT jti, spiffe_id, audience, issued_at, expires_at, exec_id, run_id FROM token_issuances_v WHERE jti = ?1", &[&x])?;
    let actions = rows(
        conn,
        "SELECT a.id, a.time, a.action, a.service, a.principal, l.run_id, l.reason, l.confidence
         FROM cloud_actions a LEFT JOIN links l ON l.cloud_action_id = a.id
         WHERE a.access_key_id = ?1 OR a.issued_access_key_id = ?1 OR a.role_session_name = ?1 ORDER BY a.time",
        &[&x],
    )?;
    Ok(json!({"credential": x, "runs": uses, "issuance": issuance, "cloud_actions": actions}))
}

fn run(conn: &Connection, id: &str) -> Result<Value, StoreError> {
    let run = one(conn, RUN, &[&id])?.ok_or_else(|| StoreError::NotFound(format!("no run {id}")))?;
    let mut timeline = Vec::new();
    for p in rows(conn, &format!("SELECT time, exec_id, pid, binary_path, sha256, exit_time FROM processes_v WHERE rid = {RID}"), &[&id])? {
        timeline.push(json!({"time": p["time"], "what": "exec", "detail": p}));
        if p["exit_time"].is_i64() {
            timeline.push(json!({"time": p["exit_time"], "what": "exit", "detail": {"exec_id": p["exec_id"], "pid": p["pid"]}}));
        }
    }
    for (what, sql) in [
        ("token_issued", format!("SELECT time, jti, spiffe_id, audience, ttl, exec_id FROM token_issuances_v WHERE rid = {RID}")),
        ("token_denied", format!("SELECT time, reason, detail, spiffe_id, exec_id FROM token_denials_v WHERE rid = {RID}")),
        ("credential_use", format!("SELECT time, detector, class, fingerprint, access_key_id, jwt_iss, jwt_sub, coalesce(host, dest_ip) AS destination, dest_port, method, path, exec_id FROM credential_uses_v WHERE rid = {RID}")),
        ("credential_file_read", format!("SELECT time, path, file_kind, exec_id FROM credential_file_reads_v WHERE rid = {RID}")),
        ("credential_obtained", format!("SELECT time, exchange_kind, format, identifier, class, fingerprint, expires_at, principal, host, presented_jti, token_jti, exec_id FROM credential_obtained_v WHERE rid = {RID}")),
        ("cloud_action", "SELECT a.time, a.id, a.action, a.service, a.principal, l.reason, l.confidence FROM links l JOIN cloud_actions a ON a.id = l.cloud_action_id WHERE l.run_id = ?1".to_owned()),
    ] {
        for r in rows(conn, &sql, &[&id])? {
            timeline.push(json!({"time": r["time"], "what": what, "detail": r}));
        }
    }
    timeline.sort_by_key(|e| e["time"].as_i64().unwrap_or(0));
    Ok(json!({"run": run, "timeline": timeline}))
}

fn static_credentials(conn: &Connection) -> Result<Value, StoreError> {
    let creds = rows(
        conn,
        "SELECT fingerprint, max(access_key_id) AS access_key_id, detector, max(token_family) AS token_family,
                count(DISTINCT run_id) AS runs, count(*) AS uses, min(time) AS first_seen, max(time) AS last_seen,
                group_concat(DISTINCT run_id) AS run_ids
         FROM credential_uses_v WHERE class_sid = ?1 GROUP BY fingerprint ORDER BY runs DESC, uses DESC",
        &[&sid(conn, "static")?],
    )?;
    Ok(json!({"static_credentials": creds}))
}

fn unattributed(conn: &Connection) -> Result<Value, StoreError> {
    let actions = rows(
        conn,
        "SELECT id, provider, time, action, service, principal, access_key_id, source_ip, user_agent FROM cloud_actions a
         WHERE NOT EXISTS (SELECT 1 FROM links l WHERE l.cloud_action_id = a.id) ORDER BY time",
        &[],
    )?;
    Ok(json!({"unattributed": actions}))
}

fn scalar(conn: &Connection, sql: &str) -> Result<Value, StoreError> {
    Ok(one(conn, sql, &[])?.and_then(|r| r.as_object().and_then(|o| o.values().next().cloned())).unwrap_or(Value::Null))
}

fn posture(conn: &Connection) -> Result<Value, StoreError> {
    let runs_with = scalar(conn, "SELECT count(DISTINCT rid) FROM credential_uses WHERE rid IS NOT NULL")?;
    let short_only = scalar(
        conn,
        "SELECT count(*) FROM (SELECT u.rid FROM credential_uses u JOIN strings c ON c.id = u.class WHERE u.rid IS NOT NULL GROUP BY u.rid
           HAVING sum(CASE WHEN c.s IN ('short_lived', 'sigil_issued') THEN 0 ELSE 1 END) = 0)",
    )?;
    let share = match (short_only.as_f64(), runs_with.as_f64()) {
        (Some(s), Some(t)) if t > 0.0 => json!((s / t * 1000.0).round() / 1000.0),
        _ => Value::Null,
    };
    let long_lived = rows(
        conn,
        "SELECT fingerprint, max(access_key_id) AS access_key_id, count(DISTINCT run_id) AS runs FROM credential_uses_v
         WHERE class_sid = ?1 GROUP BY fingerprint ORDER BY runs DESC",
        &[&sid(conn, "static")?],
    )?;
    let denials = rows(conn, "SELECT reason, count(*) AS count FROM token_denials GROUP BY reason ORDER BY count DESC", &[])?;
    // Median seconds from a cloud action reaching the collector to its first link.
    let mut delays: Vec<i64> = {
        let mut st = conn.prepare(
            "SELECT min(l.created) - a.ingested FROM cloud_actions a JOIN links l ON l.cloud_action_id = a.id GROUP BY a.id",
        )?;
        
        st.query_map(params![], |r| r.get::<_, i64>(0))?.collect::<Result<_, _>>()?
    };
    delays.sort_unstable();
    let median = delays.get(delays.len() / 2).copied();
    Ok(json!({
        "runs_using_credentials": runs_with,
        "runs_using_only_short_lived_credentials": short_only,
        "share_of_runs_short_lived_only": share,
        "long_lived_credentials_in_use": long_lived.len(),
        "long_lived_credentials": long_lived,
        "tokens_issued": scalar(conn, "SELECT count(*) FROM token_issuances")?,
        "mean_token_lifetime_seconds": scalar(conn, "SELECT avg(ttl) FROM token_issuances")?,
        "denials_by_reason": denials,
        "cloud_actions": scalar(conn, "SELECT count(*) FROM cloud_actions")?,
        "cloud_actions_attributed": scalar(conn, "SELECT count(DISTINCT cloud_action_id) FROM links")?,
        "median_seconds_to_attribute": median,
    }))
}

/// Findings, oldest first, as their `finding` documents.
fn findings(conn: &Connection, kind: Option<&str>, since: i64) -> Result<Value, StoreError> {
    let mut st = conn.prepare_cached("SELECT json FROM findings WHERE (?1 IS NULL OR kind = ?1) AND last_time >= ?2 ORDER BY first_time, id")?;
    let docs = st.query_map(params![kind, since], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
    let found = docs.iter().map(|d| serde_json::from_str::<Value>(d)).collect::<Result<Vec<_>, _>>().map_err(|e| StoreError::BadArgument(format!("stored finding: {e}")))?;
    Ok(json!({ "findings": found }))
}

/// Aggregates behind the collector's metrics (cheap: indexed counts).
pub fn metrics_snapshot(conn: &Connection, now: i64) -> Result<Value, StoreError> {
    let pairs = |sql: &str| -> Result<Value, StoreError> {
        let mut m = Map::new();
        for r in rows(conn, sql, &[])? {
            if let (Some(k), Some(n)) = (r["k"].as_str(), r["n"].as_i64()) {
                m.insert(k.to_owned(), json!(n));
            }
        }
        Ok(Value::Object(m))
    };
    Ok(json!({
        "events_by_kind": events_by_kind(conn)?,
        "cloud_actions_by_provider": pairs("SELECT provider AS k, count(*) AS n FROM cloud_actions GROUP BY provider")?,
        "links_by_reason": pairs("SELECT reason AS k, count(*) AS n FROM links GROUP BY reason")?,
        "findings_by_kind": pairs("SELECT kind AS k, count(*) AS n FROM findings GROUP BY kind")?,
        "agents": scalar(conn, &format!("SELECT count(*) FROM nodes WHERE last_seen >= {}", now - 300))?,
        "posture": posture(conn)?,
    }))
}

/// Stored events by kind name, from the counts kept per batch.
fn events_by_kind(conn: &Connection) -> Result<Value, StoreError> {
    let mut m = Map::new();
    let mut st = conn.prepare_cached("SELECT kind, n FROM event_counts")?;
    for r in st.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?)))? {
        let (kind, n) = r?;
        let name = sigil_proto::KINDS.iter().find(|(id, _)| *id == kind).map_or_else(|| format!("kind_{kind}"), |(_, n)| (*n).to_owned());
        m.insert(name, json!(n));
    }
    Ok(Value::Object(m))
}
