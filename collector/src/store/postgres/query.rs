//! The responders' questions answered from PostgreSQL, as the same JSON documents the
//! SQLite store returns (the attribution suite runs against both and asserts the same
//! answers). The views of schema.sql give rows the SQLite views' column names.

use postgres::{Row, Transaction, types::{ToSql, Type}};
use serde_json::{Map, Value, json};

use crate::store::{Query, StoreError};

type Tx<'a, 't> = &'a mut Transaction<'t>;
type Args<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A cell as JSON; columns holding JSON documents come back as JSON.
fn cell(r: &Row, i: usize, name: &str) -> Value {
    let ty = r.columns()[i].type_();
    if *ty == Type::INT8 {
        r.get::<_, Option<i64>>(i).map_or(Value::Null, |n| json!(n))
    } else if *ty == Type::INT4 {
        r.get::<_, Option<i32>>(i).map_or(Value::Null, |n| json!(n))
    } else if *ty == Type::FLOAT8 {
        r.get::<_, Option<f64>>(i).map_or(Value::Null, |f| json!(f))
    } else if *ty == Type::BOOL {
        r.get::<_, Option<bool>>(i).map_or(Value::Null, |b| json!(b as i64))
    } else {
        match r.try_get::<_, Option<String>>(i) {
            Ok(Some(s)) if matches!(name, "json" | "raw" | "ancestry") => serde_json::from_str(&s).unwrap_or(Value::String(s)),
            Ok(Some(s)) => Value::String(s),
            _ => Value::Null,
        }
    }
}

fn rows(tx: Tx, sql: &str, args: Args) -> Result<Vec<Value>, StoreError> {
    Ok(tx
        .query(sql, args)?
        .iter()
        .map(|r| {
            let mut obj = Map::new();
            for (i, c) in r.columns().iter().enumerate() {
                obj.insert(c.name().to_owned(), cell(r, i, c.name()));
            }
            Value::Object(obj)
        })
        .collect())
}

fn one(tx: Tx, sql: &str, args: Args) -> Result<Option<Value>, StoreError> {
    Ok(rows(tx, sql, args)?.into_iter().next())
}

pub fn answer(tx: Tx, q: &Query) -> Result<Value, StoreError> {
    match q {
        Query::Trace(id) => trace(tx, id),
        Query::WhoUsed(x) => who_used(tx, x),
        Query::Run(id) => run(tx, id),
        Query::StaticCredentials => static_credentials(tx),
        Query::Unattributed => unattributed(tx),
        Query::Posture => posture(tx),
        Query::Findings { kind, since } => findings(tx, kind.as_deref(), since.unwrap_or(i64::MIN)),
    }
}

const RID: &str = "(SELECT rid FROM runs WHERE run_id = $1)";
const RUN: &str = "SELECT run_id, node, kind, pod_uid, container_id, unit, cgroup_path, started, last_seen, ended FROM runs WHERE run_id = $1";

fn processes(tx: Tx, run_id: &str) -> Result<Vec<Value>, StoreError> {
    rows(
        tx,
        &format!("SELECT exec_id, pid, ppid, time, start_time, exit_time, binary_path, sha256, comm, ancestry FROM processes_v WHERE rid = {RID} ORDER BY time, exec_id"),
        &[&run_id],
    )
}

fn obtained(tx: Tx, link: &Value, credential: &Value) -> Result<Value, StoreError> {
    if let Some(jti) = link["jti"].as_str() {
        let issuance = one(tx, "SELECT jti, spiffe_id, audience, issued_at, expires_at, ttl, exec_id, run_id FROM token_issuances_v WHERE jti = $1", &[&jti])?;
        let via = if link["reason"] == "temporary_key_from_attributed_assume_role" {
            "temporary AWS credentials from AssumeRoleWithWebIdentity with a Sigil-issued token"
        } else {
            "a Sigil-issued token exchanged through AssumeRoleWithWebIdentity"
        };
        return Ok(json!({"how": via, "token": issuance, "response": handed_out(tx, credential)?}));
    }
    let run_id = link["run_id"].as_str().unwrap_or("");
    // Temporary keys a run got by exchanging a Sigil token itself (SDK web identity,
    // `sigil-agent credential-process`): the exchange the agent saw in the request body
    // names the token, whatever the role session name.
    if credential["class"] == "short_lived"
        && credential["access_key_id"].is_string()
        && let Some(exchange) = one(
            tx,
            &format!(
                "SELECT event_id, time, host, dest_ip, dest_port, path, jwt_jti, exec_id FROM credential_uses_v
                 WHERE rid = {RID} AND detector = 'token_exchange' AND jwt_jti IS NOT NULL AND time <= $2 ORDER BY time DESC LIMIT 1"
            ),
            &[&run_id, &credential["time"].as_i64().unwrap_or(i64::MAX)],
        )?
        && let Some(jti) = exchange["jwt_jti"].as_str()
        && let Some(issuance) = one(tx, "SELECT jti, spiffe_id, audience, issued_at, expires_at, ttl, exec_id, run_id FROM token_issuances_v WHERE jti = $1", &[&jti])?
    {
        return Ok(json!({"how": crate::store::EXCHANGED_SIGIL_TOKEN, "exchange": exchange, "token": issuance}));
    }
    let files = rows(tx, &format!("SELECT time, path, file_kind, exec_id FROM credential_file_reads_v WHERE rid = {RID} ORDER BY time"), &[&run_id])?;
    let how = match credential["class"].as_str() {
        Some("static") if !files.is_empty() => "a long-lived credential; the run read credential files",
        Some("static") => "a long-lived credential from the environment, image or config (no credential file read seen)",
        Some("short_lived") => "a short-lived credential obtained outside Sigil",
        Some("sigil_issued") => "a Sigil-issued token",
        _ => "unknown",
    };
    Ok(json!({"how": how, "credential_files": files, "response": handed_out(tx, credential)?}))
}

/// The exchange response in which some run obtained the credential (by its AWS key id),
/// if the agent read it.
fn handed_out(tx: Tx, credential: &Value) -> Result<Value, StoreError> {
    let Some(key) = credential["access_key_id"].as_str() else { return Ok(Value::Null) };
    Ok(one(
        tx,
        "SELECT time, exchange_kind, identifier, expires_at, principal, host, presented_jti, exec_id, run_id FROM credential_obtained_v WHERE identifier = $1 ORDER BY time LIMIT 1",
        &[&key],
    )?
    .unwrap_or(Value::Null))
}

fn trace(tx: Tx, id: &str) -> Result<Value, StoreError> {
    let action = one(tx, "SELECT id, provider, time, action, service, region, principal, principal_type, access_key_id, source_ip, user_agent, error_code, json AS raw FROM cloud_actions WHERE id = $1", &[&id])?
        .ok_or_else(|| StoreError::NotFound(format!("no cloud action with id {id}")))?;
    let links = rows(tx, "SELECT run_id, exec_id, credential_use_id, jti, reason, confidence FROM links WHERE cloud_action_id = $1 ORDER BY confidence DESC, run_id", &[&id])?;
    let mut attribution = Vec::new();
    for link in &links {
        let run_id = link["run_id"].as_str().unwrap_or("");
        let run = one(tx, RUN, &[&run_id])?;
        let credential = match link["credential_use_id"].as_i64() {
            Some(u) => one(tx, "SELECT event_id, time, detector, class, lifetime, fingerprint, access_key_id, jwt_iss, jwt_sub, dest_ip, dest_port, host, method, path, exec_id FROM credential_uses_v WHERE row = $1", &[&u])?,
            None => None,
        }
        .unwrap_or(Value::Null);
        attribution.push(json!({
            "run": run,
            "reason": link["reason"],
            "confidence": link["confidence"],
            "exec_id": link["exec_id"],
            "processes": processes(tx, run_id)?,
            "credential": credential,
            "obtained": obtained(tx, link, &credential)?,
        }));
    }
    Ok(json!({"action": action, "attributed": !links.is_empty(), "attribution": attribution}))
}

fn who_used(tx: Tx, x: &str) -> Result<Value, StoreError> {
    let uses = rows(
        tx,
        "SELECT run_id, count(*) AS uses, min(time) AS first_seen, max(time) AS last_seen, max(detector) AS detector, max(class) AS class, fingerprint,
                max(access_key_id) AS access_key_id, string_agg(DISTINCT coalesce(host, dest_ip), ',') AS destinations, string_agg(DISTINCT exec_id, ',') AS exec_ids
         FROM credential_uses_v WHERE access_key_id = $1 OR fingerprint = $1 OR jwt_jti = $1
         GROUP BY run_id, fingerprint ORDER BY first_seen",
        &[&x],
    )?;
    let issuance = one(tx, "SELECT jti, spiffe_id, audience, issued_at, expires_at, exec_id, run_id FROM token_issuances_v WHERE jti = $1", &[&x])?;
    let actions = rows(
        tx,
        "SELECT a.id, a.time, a.action, a.service, a.principal, l.run_id, l.reason, l.confidence
         FROM cloud_actions a LEFT JOIN links l ON l.cloud_action_id = a.id
         WHERE a.access_key_id = $1 OR a.issued_access_key_id = $1 OR a.role_session_name = $1 ORDER BY a.time",
        &[&x],
    )?;
    Ok(json!({"credential": x, "runs": uses, "issuance": issuance, "cloud_actions": actions}))
}

fn run(tx: Tx, id: &str) -> Result<Value, StoreError> {
    let run = one(tx, RUN, &[&id])?.ok_or_else(|| StoreError::NotFound(format!("no run {id}")))?;
    let mut timeline = Vec::new();
    for p in rows(tx, &format!("SELECT time, exec_id, pid, binary_path, sha256, exit_time FROM processes_v WHERE rid = {RID}"), &[&id])? {
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
        ("cloud_action", "SELECT a.time, a.id, a.action, a.service, a.principal, l.reason, l.confidence FROM links l JOIN cloud_actions a ON a.id = l.cloud_action_id WHERE l.run_id = $1".to_owned()),
    ] {
        for r in rows(tx, &sql, &[&id])? {
            timeline.push(json!({"time": r["time"], "what": what, "detail": r}));
        }
    }
    timeline.sort_by_key(|e| e["time"].as_i64().unwrap_or(0));
    Ok(json!({"run": run, "timeline": timeline}))
}

fn static_credentials(tx: Tx) -> Result<Value, StoreError> {
    let creds = rows(
        tx,
        "SELECT fingerprint, max(access_key_id) AS access_key_id, max(detector) AS detector, max(token_family) AS token_family,
                count(DISTINCT run_id) AS runs, count(*) AS uses, min(time) AS first_seen, max(time) AS last_seen,
                string_agg(DISTINCT run_id, ',') AS run_ids
         FROM credential_uses_v WHERE class = 'static' GROUP BY fingerprint ORDER BY runs DESC, uses DESC",
        &[],
    )?;
    Ok(json!({"static_credentials": creds}))
}

fn unattributed(tx: Tx) -> Result<Value, StoreError> {
    let actions = rows(
        tx,
        "SELECT id, provider, time, action, service, principal, access_key_id, source_ip, user_agent FROM cloud_actions a
         WHERE NOT EXISTS (SELECT 1 FROM links l WHERE l.cloud_action_id = a.id) ORDER BY time",
        &[],
    )?;
    Ok(json!({"unattributed": actions}))
}

fn scalar(tx: Tx, sql: &str) -> Result<Value, StoreError> {
    Ok(one(tx, sql, &[])?.and_then(|r| r.as_object().and_then(|o| o.values().next().cloned())).unwrap_or(Value::Null))
}

fn posture(tx: Tx) -> Result<Value, StoreError> {
    let runs_with = scalar(tx, "SELECT count(DISTINCT rid) FROM credential_uses WHERE rid IS NOT NULL")?;
    let short_only = scalar(
        tx,
        "SELECT count(*) FROM (SELECT rid FROM credential_uses WHERE rid IS NOT NULL GROUP BY rid
           HAVING sum(CASE WHEN class IN ('short_lived', 'sigil_issued') THEN 0 ELSE 1 END) = 0) x",
    )?;
    let share = match (short_only.as_f64(), runs_with.as_f64()) {
        (Some(s), Some(t)) if t > 0.0 => json!((s / t * 1000.0).round() / 1000.0),
        _ => Value::Null,
    };
    let long_lived = rows(
        tx,
        "SELECT fingerprint, max(access_key_id) AS access_key_id, count(DISTINCT run_id) AS runs FROM credential_uses_v
         WHERE class = 'static' GROUP BY fingerprint ORDER BY runs DESC",
        &[],
    )?;
    let denials = rows(tx, "SELECT reason, count(*) AS count FROM token_denials GROUP BY reason ORDER BY count DESC", &[])?;
    let mut delays: Vec<i64> = tx
        .query("SELECT min(l.created) - a.ingested FROM cloud_actions a JOIN links l ON l.cloud_action_id = a.id GROUP BY a.id", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    delays.sort_unstable();
    let median = delays.get(delays.len() / 2).copied();
    Ok(json!({
        "runs_using_credentials": runs_with,
        "runs_using_only_short_lived_credentials": short_only,
        "share_of_runs_short_lived_only": share,
        "long_lived_credentials_in_use": long_lived.len(),
        "long_lived_credentials": long_lived,
        "tokens_issued": scalar(tx, "SELECT count(*) FROM token_issuances")?,
        "mean_token_lifetime_seconds": scalar(tx, "SELECT avg(ttl)::float8 FROM token_issuances")?,
        "denials_by_reason": denials,
        "cloud_actions": scalar(tx, "SELECT count(*) FROM cloud_actions")?,
        "cloud_actions_attributed": scalar(tx, "SELECT count(DISTINCT cloud_action_id) FROM links")?,
        "median_seconds_to_attribute": median,
    }))
}

/// Findings, oldest first, as their `finding` documents.
fn findings(tx: Tx, kind: Option<&str>, since: i64) -> Result<Value, StoreError> {
    let docs = tx.query("SELECT json FROM findings WHERE ($1::text IS NULL OR kind = $1) AND last_time >= $2 ORDER BY first_time, id", &[&kind, &since])?;
    let found = docs
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.get::<_, String>(0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::BadArgument(format!("stored finding: {e}")))?;
    Ok(json!({ "findings": found }))
}

pub fn metrics_snapshot(tx: Tx, now: i64) -> Result<Value, StoreError> {
    let pairs = |tx: Tx, sql: &str| -> Result<Value, StoreError> {
        let mut m = Map::new();
        for r in rows(tx, sql, &[])? {
            if let (Some(k), Some(n)) = (r["k"].as_str(), r["n"].as_i64()) {
                m.insert(k.to_owned(), json!(n));
            }
        }
        Ok(Value::Object(m))
    };
    let mut kinds = Map::new();
    for r in tx.query("SELECT kind, n FROM event_counts", &[])? {
        let (kind, n): (i32, i64) = (r.get(0), r.get(1));
        let name = sigil_proto::KINDS.iter().find(|(id, _)| *id as i32 == kind).map_or_else(|| format!("kind_{kind}"), |(_, n)| (*n).to_owned());
        kinds.insert(name, json!(n));
    }
    Ok(json!({
        "events_by_kind": kinds,
        "cloud_actions_by_provider": pairs(tx, "SELECT provider AS k, count(*) AS n FROM cloud_actions GROUP BY provider")?,
        "links_by_reason": pairs(tx, "SELECT reason AS k, count(*) AS n FROM links GROUP BY reason")?,
        "findings_by_kind": pairs(tx, "SELECT kind AS k, count(*) AS n FROM findings GROUP BY kind")?,
        "agents": scalar(tx, &format!("SELECT count(*) FROM nodes WHERE last_seen >= {}", now - 300))?,
        "posture": posture(tx)?,
    }))
}
