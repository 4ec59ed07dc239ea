//! The responders' answers, built once for every backend.
//!
//! Each backend knows how to fetch one named fact ([`Fact`]) with its own SQL and hands
//! back rows as JSON objects keyed by column name ([`Facts`]); how rows become a trace, a
//! run's timeline, the posture figures or the metrics snapshot is decided here only, so
//! SQLite and PostgreSQL give the same answers by construction.

use serde_json::{Map, Value, json};

use super::{Query, StoreError};

/// The facts the answers are built from. The comment says what each takes (in order)
/// and which columns its rows carry; every backend's SQL returns those column names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fact {
    /// id -> the cloud action (id, provider, time, action, service, region, principal,
    /// principal_type, access_key_id, source_ip, user_agent, error_code, raw).
    Action,
    /// action id -> its links (run_id, exec_id, credential_use_id, jti, reason,
    /// confidence), most confident first.
    Links,
    /// run id -> the run (run_id, node, kind, pod_uid, container_id, unit, cgroup_path,
    /// started, last_seen, ended).
    Run,
    /// run id -> its processes with their ancestry, oldest first.
    Processes,
    /// credential-use row number -> that use.
    CredentialUse,
    /// jti -> the issuance of that token.
    Issuance,
    /// run id -> its credential file reads, oldest first.
    FileReads,
    /// run id, unix time -> the run's latest token exchange seen in a request body
    /// (detector `token_exchange`, with the presented token's jti) at or before that time
    /// (event_id, time, host, dest_ip, dest_port, path, jwt_jti, exec_id).
    Exchange,
    /// access key id -> the first exchange response that handed it out (time,
    /// exchange_kind, identifier, expires_at, principal, host, presented_jti, exec_id,
    /// run_id).
    HandedOut,
    /// access key id, fingerprint or jti -> per run and fingerprint: uses (summing
    /// aggregated events' counts), first and last seen, destinations, exec ids.
    UsesOf,
    /// access key id, session name -> cloud actions using or issuing it, with links.
    ActionsOf,
    /// run id -> timeline rows of one kind (`time` first).
    RunExecs,
    RunIssued,
    RunDenied,
    RunUses,
    RunFileReads,
    RunObtained,
    RunActions,
    /// -> long-lived credentials with runs, uses, first and last seen, run ids (the first
    /// [`RUN_IDS_SHOWN`]), from the aggregate tables.
    StaticCredentials,
    /// -> cloud actions without a link.
    Unattributed,
    /// -> one row: runs_using_credentials, runs_using_only_short_lived_credentials.
    PostureRuns,
    /// -> long-lived credentials in use (fingerprint, access_key_id, runs).
    LongLived,
    /// -> denials by reason (reason, count).
    Denials,
    /// -> one row: tokens_issued, mean_token_lifetime_seconds.
    Tokens,
    /// -> one row: cloud_actions, cloud_actions_attributed.
    CloudActions,
    /// -> per attributed action, seconds from ingestion to its first link (d).
    Delays,
    /// -> (k, n) per provider.
    ActionsByProvider,
    /// -> (k, n) per link reason.
    LinksByReason,
    /// kind ("" for any), unix time -> findings with a misuse at or after that time, oldest
    /// first (json: the `finding` document).
    Findings,
    /// -> (k, n) per finding kind.
    FindingsByKind,
    /// unix time -> one row: n, the nodes seen since.
    Agents,
    /// -> (kind, n): stored events per contract kind id.
    EventsByKind,
}

/// How many run ids `static-credentials` lists per credential (its `runs` counts all of
/// them; `who-used` names every one): the answer stays small however many pods share a
/// key.
pub const RUN_IDS_SHOWN: i64 = 20;

/// A query argument.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

/// One backend's way to fetch facts.
pub trait Facts {
    fn rows(&mut self, fact: Fact, args: &[Arg<'_>]) -> Result<Vec<Value>, StoreError>;

    fn one(&mut self, fact: Fact, args: &[Arg<'_>]) -> Result<Option<Value>, StoreError> {
        Ok(self.rows(fact, args)?.into_iter().next())
    }
}

/// Whether a text column holds a JSON document (returned as JSON, not as a string).
pub fn is_json_column(name: &str) -> bool {
    matches!(name, "json" | "raw" | "ancestry")
}

pub fn answer(db: &mut impl Facts, q: &Query) -> Result<Value, StoreError> {
    match q {
        Query::Trace(id) => trace(db, id),
        Query::WhoUsed(x) => who_used(db, x),
        Query::Run(id) => run(db, id),
        Query::StaticCredentials => Ok(json!({"static_credentials": db.rows(Fact::StaticCredentials, &[])?})),
        Query::Unattributed => Ok(json!({"unattributed": db.rows(Fact::Unattributed, &[])?})),
        Query::Posture => posture(db),
        Query::Findings { kind, since } => {
            let docs = db.rows(Fact::Findings, &[Arg::Text(kind.as_deref().unwrap_or("")), Arg::Int(since.unwrap_or(i64::MIN))])?;
            Ok(json!({"findings": docs.into_iter().map(|mut r| r["json"].take()).collect::<Vec<_>>()}))
        }
    }
}

/// How the credential behind a link was obtained.
fn obtained(db: &mut impl Facts, link: &Value, credential: &Value) -> Result<Value, StoreError> {
    if let Some(jti) = link["jti"].as_str() {
        let issuance = db.one(Fact::Issuance, &[Arg::Text(jti)])?;
        let via = if link["reason"] == "temporary_key_from_attributed_assume_role" {
            "temporary AWS credentials from AssumeRoleWithWebIdentity with a Sigil-issued token"
        } else {
            "a Sigil-issued token exchanged through AssumeRoleWithWebIdentity"
        };
        return Ok(json!({"how": via, "token": issuance, "response": handed_out(db, credential)?}));
    }
    let run_id = link["run_id"].as_str().unwrap_or("");
    // Temporary keys a run got by exchanging a Sigil token itself (SDK web identity,
    // `sigil-agent credential-process`): the exchange the agent saw in the request body
    // names the token, whatever the role session name.
    if credential["class"] == "short_lived"
        && credential["access_key_id"].is_string()
        && let Some(exchange) = db.one(Fact::Exchange, &[Arg::Text(run_id), Arg::Int(credential["time"].as_i64().unwrap_or(i64::MAX))])?
        && let Some(jti) = exchange["jwt_jti"].as_str()
        && let Some(issuance) = db.one(Fact::Issuance, &[Arg::Text(jti)])?
    {
        return Ok(json!({"how": super::EXCHANGED_SIGIL_TOKEN, "exchange": exchange, "token": issuance}));
    }
    let files = db.rows(Fact::FileReads, &[Arg::Text(run_id)])?;
    let how = match credential["class"].as_str() {
        Some("static") if !files.is_empty() => "a long-lived credential; the run read credential files",
        Some("static") => "a long-lived credential from the environment, image or config (no credential file read seen)",
        Some("short_lived") => "a short-lived credential obtained outside Sigil",
        Some("sigil_issued") => "a Sigil-issued token",
        _ => "unknown",
    };
    Ok(json!({"how": how, "credential_files": files, "response": handed_out(db, credential)?}))
}

/// The exchange response in which some run obtained the credential (by its AWS key id),
/// if the agent read it.
fn handed_out(db: &mut impl Facts, credential: &Value) -> Result<Value, StoreError> {
    let Some(key) = credential["access_key_id"].as_str() else { return Ok(Value::Null) };
    Ok(db.one(Fact::HandedOut, &[Arg::Text(key)])?.unwrap_or(Value::Null))
}

fn trace(db: &mut impl Facts, id: &str) -> Result<Value, StoreError> {
    let action = db.one(Fact::Action, &[Arg::Text(id)])?.ok_or_else(|| StoreError::NotFound(format!("no cloud action with id {id}")))?;
    let links = db.rows(Fact::Links, &[Arg::Text(id)])?;
    let mut attribution = Vec::new();
    for link in &links {
        let run_id = link["run_id"].as_str().unwrap_or("");
        let run = db.one(Fact::Run, &[Arg::Text(run_id)])?;
        let credential = match link["credential_use_id"].as_i64() {
            Some(u) => db.one(Fact::CredentialUse, &[Arg::Int(u)])?,
            None => None,
        }
        .unwrap_or(Value::Null);
        attribution.push(json!({
            "run": run,
            "reason": link["reason"],
            "confidence": link["confidence"],
            "exec_id": link["exec_id"],
            "processes": db.rows(Fact::Processes, &[Arg::Text(run_id)])?,
            "credential": credential,
            "obtained": obtained(db, link, &credential)?,
        }));
    }
    Ok(json!({"action": action, "attributed": !links.is_empty(), "attribution": attribution}))
}

fn who_used(db: &mut impl Facts, x: &str) -> Result<Value, StoreError> {
    Ok(json!({
        "credential": x,
        "runs": db.rows(Fact::UsesOf, &[Arg::Text(x)])?,
        "issuance": db.one(Fact::Issuance, &[Arg::Text(x)])?,
        "cloud_actions": db.rows(Fact::ActionsOf, &[Arg::Text(x)])?,
    }))
}

fn run(db: &mut impl Facts, id: &str) -> Result<Value, StoreError> {
    let run = db.one(Fact::Run, &[Arg::Text(id)])?.ok_or_else(|| StoreError::NotFound(format!("no run {id}")))?;
    let mut timeline = Vec::new();
    for p in db.rows(Fact::RunExecs, &[Arg::Text(id)])? {
        let exit = p["exit_time"].is_i64().then(|| json!({"time": p["exit_time"], "what": "exit", "detail": {"exec_id": p["exec_id"], "pid": p["pid"]}}));
        timeline.push(json!({"time": p["time"], "what": "exec", "detail": p}));
        timeline.extend(exit);
    }
    for (what, fact) in [
        ("token_issued", Fact::RunIssued),
        ("token_denied", Fact::RunDenied),
        ("credential_use", Fact::RunUses),
        ("credential_file_read", Fact::RunFileReads),
        ("credential_obtained", Fact::RunObtained),
        ("cloud_action", Fact::RunActions),
    ] {
        for r in db.rows(fact, &[Arg::Text(id)])? {
            timeline.push(json!({"time": r["time"], "what": what, "detail": r}));
        }
    }
    timeline.sort_by_key(|e| e["time"].as_i64().unwrap_or(0));
    Ok(json!({"run": run, "timeline": timeline}))
}

/// The named column of a one-row fact (null without a row).
fn field(row: &Option<Value>, name: &str) -> Value {
    row.as_ref().map_or(Value::Null, |r| r[name].clone())
}

fn posture(db: &mut impl Facts) -> Result<Value, StoreError> {
    let runs = db.one(Fact::PostureRuns, &[])?;
    let (runs_with, short_only) = (field(&runs, "runs_using_credentials"), field(&runs, "runs_using_only_short_lived_credentials"));
    let share = match (short_only.as_f64(), runs_with.as_f64()) {
        (Some(s), Some(t)) if t > 0.0 => json!((s / t * 1000.0).round() / 1000.0),
        _ => Value::Null,
    };
    let long_lived = db.rows(Fact::LongLived, &[])?;
    let tokens = db.one(Fact::Tokens, &[])?;
    let cloud = db.one(Fact::CloudActions, &[])?;
    // Median seconds from a cloud action reaching the collector to its first link.
    let mut delays: Vec<i64> = db.rows(Fact::Delays, &[])?.iter().filter_map(|r| r["d"].as_i64()).collect();
    delays.sort_unstable();
    Ok(json!({
        "runs_using_credentials": runs_with,
        "runs_using_only_short_lived_credentials": short_only,
        "share_of_runs_short_lived_only": share,
        "long_lived_credentials_in_use": long_lived.len(),
        "long_lived_credentials": long_lived,
        "tokens_issued": field(&tokens, "tokens_issued"),
        "mean_token_lifetime_seconds": field(&tokens, "mean_token_lifetime_seconds"),
        "denials_by_reason": db.rows(Fact::Denials, &[])?,
        "cloud_actions": field(&cloud, "cloud_actions"),
        "cloud_actions_attributed": field(&cloud, "cloud_actions_attributed"),
        "median_seconds_to_attribute": delays.get(delays.len() / 2).copied(),
    }))
}

/// Aggregates behind the collector's metrics (cheap: counts kept as data arrives, and
/// small grouped tables).
pub fn metrics_snapshot(db: &mut impl Facts, now: i64) -> Result<Value, StoreError> {
    let pairs = |rows: Vec<Value>| -> Value {
        let mut m = Map::new();
        for r in rows {
            if let (Some(k), Some(n)) = (r["k"].as_str(), r["n"].as_i64()) {
                m.insert(k.to_owned(), json!(n));
            }
        }
        Value::Object(m)
    };
    let mut kinds = Map::new();
    for r in db.rows(Fact::EventsByKind, &[])? {
        let (Some(kind), Some(n)) = (r["kind"].as_i64(), r["n"].as_i64()) else { continue };
        let name = sigil_proto::KINDS.iter().find(|(id, _)| i64::from(*id) == kind).map_or_else(|| format!("kind_{kind}"), |(_, n)| (*n).to_owned());
        kinds.insert(name, json!(n));
    }
    Ok(json!({
        "events_by_kind": kinds,
        "cloud_actions_by_provider": pairs(db.rows(Fact::ActionsByProvider, &[])?),
        "links_by_reason": pairs(db.rows(Fact::LinksByReason, &[])?),
        "findings_by_kind": pairs(db.rows(Fact::FindingsByKind, &[])?),
        "agents": field(&db.one(Fact::Agents, &[Arg::Int(now - 300)])?, "n"),
        "posture": posture(db)?,
    }))
}
