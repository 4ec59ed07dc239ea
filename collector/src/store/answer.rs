//! The responders' answers, built once for every backend.
//!
//! Each backend knows how to fetch one named fact ([`Fact`]) with its own SQL and hands
//! back rows as JSON objects keyed by column name ([`Facts`]); how rows become a trace, a
//! run's timeline, the posture figures or the metrics snapshot is decided here only, so
//! SQLite and PostgreSQL give the same answers by construction.

use serde_json::{Map, Value, json};

use super::{Page, Query, StoreError};

/// The facts the answers are built from. The comment says what each takes (in order)
/// and which columns its rows carry; every backend's SQL returns those column names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fact {
    /// id -> the cloud action (id, provider, time, action, service, region, principal,
    /// principal_type, access_key_id, source_ip, user_agent, error_code, raw).
    Action,
    /// action id, then the links-page cursor (has_cursor 0/1, confidence, run_id,
    /// reason), limit -> its links after the cursor (run_id, exec_id, credential_use_id,
    /// jti, reason, confidence), most confident first, then by run id and reason.
    Links,
    /// action id and the same cursor -> one row: n, the links after it.
    LinkCount,
    /// run id -> the run (run_id, node, kind, pod_uid, container_id, unit, cgroup_path,
    /// started, last_seen, ended).
    Run,
    /// run id -> one row: processes, binaries (distinct binary paths), credential_uses
    /// (summing aggregated events' counts), cloud_actions (distinct, linked to it).
    RunSummary,
    /// run id -> one row: first, last (the times of its earliest and latest timeline
    /// entry).
    RunSpan,
    /// run id, limit -> its first processes (without ancestry: [`Fact::Process`] has the
    /// one that matters), oldest first.
    Processes,
    /// run id, exec id -> that process of the run with its ancestry.
    Process,
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
    /// run id, time, row, limit -> the run's timeline rows of one kind after (time, row),
    /// in (time, row) order: `time` (when it happened), `row` (its number among the rows
    /// of its kind), then what the entry shows.
    RunExecs,
    RunExits,
    RunIssued,
    RunDenied,
    RunUses,
    RunFileReads,
    RunObtained,
    RunActions,
    /// run id, time, then one row number per timeline kind (in [`TIMELINE`] order) ->
    /// one row: per kind, how many of the run's entries come after (time, that row).
    RunCounts,
    /// the page cursor (has_cursor 0/1, runs, uses, fingerprint), limit -> long-lived
    /// credentials after it, most runs first, then most uses, then by fingerprint: with
    /// runs, uses, first and last seen, run ids (the first [`RUN_IDS_SHOWN`]), from the
    /// aggregate tables.
    StaticCredentials,
    /// the same cursor -> one row: n, the long-lived credentials after it.
    StaticCount,
    /// -> cloud actions without a link.
    Unattributed,
    /// -> one row: runs_using_credentials, runs_using_only_short_lived_credentials.
    PostureRuns,
    /// limit -> the long-lived credentials in use shared by most runs (fingerprint,
    /// access_key_id, runs).
    LongLived,
    /// -> denials by reason (reason, count).
    Denials,
    /// -> one row: tokens_issued, mean_token_lifetime_seconds.
    Tokens,
    /// -> one row: cloud_actions, cloud_actions_attributed (from the aggregates the
    /// store's triggers keep as actions and links are stored and deleted).
    CloudActions,
    /// -> (d, n): how many attributed actions got their first link d seconds after their
    /// ingestion, by d (kept by the same triggers).
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
    Real(f64),
}

/// A run's timeline: each kind of entry, the fact that lists it, and (by position) its
/// rank, which orders entries of one second.
pub const TIMELINE: [(&str, Fact); 8] = [
    ("exec", Fact::RunExecs),
    ("exit", Fact::RunExits),
    ("token_issued", Fact::RunIssued),
    ("token_denied", Fact::RunDenied),
    ("credential_use", Fact::RunUses),
    ("credential_file_read", Fact::RunFileReads),
    ("credential_obtained", Fact::RunObtained),
    ("cloud_action", Fact::RunActions),
];

/// Timeline entries `run` lists when not told (a few tens of KB).
pub const RUN_PAGE: usize = 100;
/// Long-lived credentials `static-credentials` lists when not told.
pub const STATIC_PAGE: usize = 50;
/// Long-lived credentials `posture` names (it counts them all).
pub const POSTURE_LONG_LIVED: i64 = 20;
/// Linked runs `trace` lists when not told (each with its summary: a few KB).
pub const TRACE_PAGE: usize = 5;
/// Processes `trace` lists per linked run (the run's timeline has them all).
pub const TRACE_PROCESSES: i64 = 5;

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
        Query::Trace(id, page) => trace(db, id, page),
        Query::WhoUsed(x) => who_used(db, x),
        Query::Run(id, page) => run(db, id, page),
        Query::StaticCredentials(page) => static_credentials(db, page),
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

/// Where a page of a trace's links starts: after the link with this confidence, run
/// and reason (written `confidence:reason:run_id`).
struct LinkCursor {
    confidence: f64,
    reason: String,
    run_id: String,
}

impl LinkCursor {
    fn parse(s: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::BadArgument(format!("cursor {s:?} is not one a trace answer gave (confidence:reason:run_id)"));
        let mut parts = s.splitn(3, ':');
        let (Some(c), Some(reason), Some(run_id)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
        Ok(Self { confidence: c.parse().map_err(|_| bad())?, reason: reason.to_owned(), run_id: run_id.to_owned() })
    }

    fn of(link: &Value) -> String {
        format!("{}:{}:{}", link["confidence"].as_f64().unwrap_or(0.0), link["reason"].as_str().unwrap_or(""), link["run_id"].as_str().unwrap_or(""))
    }

    /// The fact arguments after the action id: has_cursor, confidence, run_id, reason.
    fn args(c: Option<&Self>) -> [Arg<'_>; 4] {
        match c {
            Some(c) => [Arg::Int(1), Arg::Real(c.confidence), Arg::Text(&c.run_id), Arg::Text(&c.reason)],
            None => [Arg::Int(0), Arg::Real(0.0), Arg::Text(""), Arg::Text("")],
        }
    }
}

/// Where a page of `static-credentials` starts: after the credential with these runs,
/// uses and fingerprint (written `runs.uses.fingerprint`).
struct StaticCursor {
    runs: i64,
    uses: i64,
    fingerprint: String,
}

impl StaticCursor {
    fn parse(s: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::BadArgument(format!("cursor {s:?} is not one a static-credentials answer gave (runs.uses.fingerprint)"));
        let mut parts = s.splitn(3, '.');
        let (Some(runs), Some(uses), Some(fp)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
        Ok(Self { runs: runs.parse().map_err(|_| bad())?, uses: uses.parse().map_err(|_| bad())?, fingerprint: fp.to_owned() })
    }

    fn of(row: &Value) -> String {
        format!("{}.{}.{}", row["runs"].as_i64().unwrap_or(0), row["uses"].as_i64().unwrap_or(0), row["fingerprint"].as_str().unwrap_or(""))
    }

    /// The fact arguments: has_cursor, runs, uses, fingerprint.
    fn args(c: Option<&Self>) -> [Arg<'_>; 4] {
        match c {
            Some(c) => [Arg::Int(1), Arg::Int(c.runs), Arg::Int(c.uses), Arg::Text(&c.fingerprint)],
            None => [Arg::Int(0), Arg::Int(0), Arg::Int(0), Arg::Text("")],
        }
    }
}

/// A page of the long-lived credentials in use, most shared first; `credentials` counts
/// them all, `left_out` those after the page, `next` pages on.
fn static_credentials(db: &mut impl Facts, page: &Page) -> Result<Value, StoreError> {
    let limit = page.limit.unwrap_or(STATIC_PAGE);
    let after = page.after.as_deref().map(StaticCursor::parse).transpose()?;
    let total = count(&db.one(Fact::StaticCount, &StaticCursor::args(None))?, "n");
    let mut args = StaticCursor::args(after.as_ref()).to_vec();
    args.push(Arg::Int(limit as i64));
    let mut rows = db.rows(Fact::StaticCredentials, &args)?;
    rows.truncate(limit);
    let mut v = json!({"credentials": total, "left_out": 0});
    if let Some(last) = rows.last() {
        let cursor = StaticCursor::parse(&StaticCursor::of(last))?;
        let left = count(&db.one(Fact::StaticCount, &StaticCursor::args(Some(&cursor)))?, "n");
        v["left_out"] = json!(left);
        if left > 0 {
            v["next"] = json!(StaticCursor::of(last));
        }
    }
    v["static_credentials"] = Value::Array(rows);
    Ok(v)
}

/// The count a one-row fact names (0 without a row).
fn count(row: &Option<Value>, name: &str) -> i64 {
    row.as_ref().and_then(|r| r[name].as_i64()).unwrap_or(0)
}

/// What a run amounts to: processes, distinct binaries, first and last entry, credential
/// uses, cloud actions attributed to it.
fn run_summary(db: &mut impl Facts, run_id: &str) -> Result<Value, StoreError> {
    let s = db.one(Fact::RunSummary, &[Arg::Text(run_id)])?;
    let span = db.one(Fact::RunSpan, &[Arg::Text(run_id)])?;
    Ok(json!({
        "processes": count(&s, "processes"),
        "binaries": count(&s, "binaries"),
        "first": field(&span, "first"),
        "last": field(&span, "last"),
        "credential_uses": count(&s, "credential_uses"),
        "cloud_actions": count(&s, "cloud_actions"),
    }))
}

/// The action, then per linked run (a page of them, most confident first): the run's
/// summary, the process that used the credential, the run's first few processes, the
/// credential and how the run got it. `links` counts every link; `next` pages on.
fn trace(db: &mut impl Facts, id: &str, page: &Page) -> Result<Value, StoreError> {
    let action = db.one(Fact::Action, &[Arg::Text(id)])?.ok_or_else(|| StoreError::NotFound(format!("no cloud action with id {id}")))?;
    let limit = page.limit.unwrap_or(TRACE_PAGE);
    let after = page.after.as_deref().map(LinkCursor::parse).transpose()?;
    fn with<'x>(id: &'x str, c: [Arg<'x>; 4], tail: Option<Arg<'x>>) -> Vec<Arg<'x>> {
        [Arg::Text(id)].into_iter().chain(c).chain(tail).collect()
    }
    let total = count(&db.one(Fact::LinkCount, &with(id, LinkCursor::args(None), None))?, "n");
    let mut links = db.rows(Fact::Links, &with(id, LinkCursor::args(after.as_ref()), Some(Arg::Int(limit as i64))))?;
    links.truncate(limit);
    let mut attribution = Vec::new();
    for link in &links {
        let run_id = link["run_id"].as_str().unwrap_or("");
        let run = db.one(Fact::Run, &[Arg::Text(run_id)])?;
        let credential = match link["credential_use_id"].as_i64() {
            Some(u) => db.one(Fact::CredentialUse, &[Arg::Int(u)])?,
            None => None,
        }
        .unwrap_or(Value::Null);
        let summary = run_summary(db, run_id)?;
        let processes = db.rows(Fact::Processes, &[Arg::Text(run_id), Arg::Int(TRACE_PROCESSES)])?;
        let process = match link["exec_id"].as_str() {
            Some(x) => db.one(Fact::Process, &[Arg::Text(run_id), Arg::Text(x)])?,
            None => None,
        };
        attribution.push(json!({
            "run": run,
            "reason": link["reason"],
            "confidence": link["confidence"],
            "exec_id": link["exec_id"],
            "summary": summary,
            "process": process,
            "processes": processes,
            "processes_left_out": (summary["processes"].as_i64().unwrap_or(0) - processes.len() as i64).max(0),
            "credential": credential,
            "obtained": obtained(db, link, &credential)?,
        }));
    }
    let mut v = json!({"action": action, "attributed": total > 0, "links": total, "attribution": attribution});
    if let Some(last) = links.last() {
        let cursor = LinkCursor::parse(&LinkCursor::of(last))?;
        let left = count(&db.one(Fact::LinkCount, &with(id, LinkCursor::args(Some(&cursor)), None))?, "n");
        v["left_out"] = json!(left);
        if left > 0 {
            v["next"] = json!(LinkCursor::of(last));
        }
    }
    Ok(v)
}

fn who_used(db: &mut impl Facts, x: &str) -> Result<Value, StoreError> {
    Ok(json!({
        "credential": x,
        "runs": db.rows(Fact::UsesOf, &[Arg::Text(x)])?,
        "issuance": db.one(Fact::Issuance, &[Arg::Text(x)])?,
        "cloud_actions": db.rows(Fact::ActionsOf, &[Arg::Text(x)])?,
    }))
}

/// Where a page of a run's timeline starts: after the entry at `time` of kind `rank`
/// ([`TIMELINE`]) and row `row` (written `time.rank.row`). Entries are ordered by
/// (time, rank, row), which no two share: every entry is on exactly one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TimelineCursor {
    time: i64,
    rank: i64,
    row: i64,
}

impl TimelineCursor {
    const START: Self = Self { time: i64::MIN, rank: i64::MIN, row: i64::MIN };

    fn parse(s: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::BadArgument(format!("cursor {s:?} is not one a run answer gave (time.rank.row)"));
        let n: Vec<i64> = s.split('.').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad())?;
        match n[..] {
            [time, rank, row] => Ok(Self { time, rank, row }),
            _ => Err(bad()),
        }
    }

    fn text(&self) -> String {
        format!("{}.{}.{}", self.time, self.rank, self.row)
    }

    /// The row after which entries of kind `rank` at this cursor's second come after it:
    /// all of them for a later kind, none for an earlier one.
    fn row_for(&self, rank: i64) -> i64 {
        match rank.cmp(&self.rank) {
            std::cmp::Ordering::Less => i64::MAX,
            std::cmp::Ordering::Equal => self.row,
            std::cmp::Ordering::Greater => i64::MIN,
        }
    }

    /// How many of the run's entries of each kind come after this cursor.
    fn counts_after(&self, db: &mut impl Facts, run_id: &str) -> Result<Map<String, Value>, StoreError> {
        let mut args = vec![Arg::Text(run_id), Arg::Int(self.time)];
        args.extend((0..TIMELINE.len() as i64).map(|rank| Arg::Int(self.row_for(rank))));
        let row = db.one(Fact::RunCounts, &args)?;
        Ok(TIMELINE.iter().map(|(what, _)| ((*what).to_owned(), json!(count(&row, what)))).collect())
    }
}

fn total(counts: &Map<String, Value>) -> i64 {
    counts.values().filter_map(Value::as_i64).sum()
}

/// The run, its summary, how many timeline entries of each kind it has, then one page of
/// its timeline in time order; `left_out` counts the entries after the page, `next`
/// pages on.
fn run(db: &mut impl Facts, id: &str, page: &Page) -> Result<Value, StoreError> {
    let run = db.one(Fact::Run, &[Arg::Text(id)])?.ok_or_else(|| StoreError::NotFound(format!("no run {id}")))?;
    let limit = page.limit.unwrap_or(RUN_PAGE);
    let after = page.after.as_deref().map(TimelineCursor::parse).transpose()?.unwrap_or(TimelineCursor::START);
    // Each kind's first `limit + 1` entries after the cursor; the page is the first
    // `limit` of them all.
    let mut entries = Vec::new();
    for (rank, (what, fact)) in (0i64..).zip(TIMELINE) {
        let args = [Arg::Text(id), Arg::Int(after.time), Arg::Int(after.row_for(rank)), Arg::Int(limit as i64 + 1)];
        for mut r in db.rows(fact, &args)? {
            let at = TimelineCursor { time: r["time"].as_i64().unwrap_or(0), rank, row: r["row"].as_i64().unwrap_or(0) };
            if let Some(o) = r.as_object_mut() {
                o.remove("row");
            }
            entries.push((at, json!({"time": r["time"], "what": what, "detail": r})));
        }
    }
    entries.sort_by_key(|(at, _)| *at);
    entries.truncate(limit);
    let by_kind = TimelineCursor::START.counts_after(db, id)?;
    let mut v = json!({
        "run": run,
        "summary": run_summary(db, id)?,
        "timeline_entries": total(&by_kind),
        "entries_by_kind": by_kind,
    });
    let last = entries.last().map(|(at, _)| *at);
    v["timeline"] = Value::Array(entries.into_iter().map(|(_, e)| e).collect());
    let left = match last {
        Some(at) => total(&at.counts_after(db, id)?),
        None => 0,
    };
    v["left_out"] = json!(left);
    if let Some(at) = last.filter(|_| left > 0) {
        v["next"] = json!(at.text());
    }
    Ok(v)
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
    let long_lived = db.rows(Fact::LongLived, &[Arg::Int(POSTURE_LONG_LIVED)])?;
    let long_lived_count = count(&db.one(Fact::StaticCount, &StaticCursor::args(None))?, "n");
    let tokens = db.one(Fact::Tokens, &[])?;
    let cloud = db.one(Fact::CloudActions, &[])?;
    // Median seconds from a cloud action reaching the collector to its first link: the
    // middle one (upper median) of the attributed actions counted per delay.
    let delays: Vec<(i64, i64)> = db.rows(Fact::Delays, &[])?.iter().filter_map(|r| Some((r["d"].as_i64()?, r["n"].as_i64()?))).collect();
    let median = weighted_median(&delays);
    Ok(json!({
        "runs_using_credentials": runs_with,
        "runs_using_only_short_lived_credentials": short_only,
        "share_of_runs_short_lived_only": share,
        "long_lived_credentials_in_use": long_lived_count,
        "long_lived_credentials": long_lived,
        "tokens_issued": field(&tokens, "tokens_issued"),
        "mean_token_lifetime_seconds": field(&tokens, "mean_token_lifetime_seconds"),
        "denials_by_reason": db.rows(Fact::Denials, &[])?,
        "cloud_actions": field(&cloud, "cloud_actions"),
        "cloud_actions_attributed": field(&cloud, "cloud_actions_attributed"),
        "median_seconds_to_attribute": median,
    }))
}

/// The value at position `total / 2` (0-based) of the values `(value, how many)` lists,
/// ascending: the median of the values written out one by one.
fn weighted_median(counted: &[(i64, i64)]) -> Option<i64> {
    let total: i64 = counted.iter().map(|(_, n)| (*n).max(0)).sum();
    let mut seen = 0;
    for (value, n) in counted {
        seen += (*n).max(0);
        if seen > total / 2 {
            return Some(*value);
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_counted_values_is_the_middle_one_written_out() {
        // 1, 1, 5, 9, 9, 9 -> the value at position 3 (upper median), as the scan sorted.
        assert_eq!(weighted_median(&[(1, 2), (5, 1), (9, 3)]), Some(9));
        assert_eq!(weighted_median(&[(1, 2), (5, 1), (9, 1)]), Some(5));
        assert_eq!(weighted_median(&[(4, 1)]), Some(4));
        assert_eq!(weighted_median(&[(4, 0)]), None);
        assert_eq!(weighted_median(&[]), None);
    }

    #[test]
    fn cursors_read_back_what_answers_wrote_and_refuse_anything_else() {
        let c = TimelineCursor { time: 1_767_225_600, rank: 4, row: 77 };
        assert_eq!(TimelineCursor::parse(&c.text()).expect("reads back"), c);
        for bad in ["", "1.2", "1.2.3.4", "a.b.c", "1767225600:4:77"] {
            assert!(matches!(TimelineCursor::parse(bad), Err(StoreError::BadArgument(_))), "{bad}");
        }
        // Entries of an earlier kind in the cursor's second are before it, of a later kind after.
        assert_eq!((c.row_for(3), c.row_for(4), c.row_for(5)), (i64::MAX, 77, i64::MIN));
        let link = json!({"confidence": 0.95, "reason": "access_key_id_in_window", "run_id": "cgroup:n1:/a:b"});
        let l = LinkCursor::parse(&LinkCursor::of(&link)).expect("reads back");
        assert_eq!((l.confidence, l.reason.as_str(), l.run_id.as_str()), (0.95, "access_key_id_in_window", "cgroup:n1:/a:b"));
        assert!(matches!(LinkCursor::parse("x:y"), Err(StoreError::BadArgument(_))));
        assert!(matches!(LinkCursor::parse("high:r:run"), Err(StoreError::BadArgument(_))));
    }
}
