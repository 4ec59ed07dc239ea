//! Misuse findings: conclusions drawn from agent events as they arrive, each with the ids of
//! the events that prove it.
//!
//! - `token_replayed`: a Sigil-issued token (by jti) presented by another run than the one
//!   it was issued to, or on another node.
//! - `token_used_after_run_ended`: presented after the run it was issued to had ended.
//! - `credential_outlived_run`: a temporary AWS key (ASIA…) obtained by run A and used by
//!   run B, or used after A ended.
//! - `static_credential_shared`: one long-lived credential (fingerprint) used by several
//!   workloads (workload identities, not processes or runs of one workload).
//! - `credential_file_to_egress`: a run read a credential file, then a long-lived credential
//!   that run had never presented before left in its egress.
//!
//! Detection is incremental: [`detect`] looks only at the batch's events and asks the store
//! (through [`FindingLookups`], each answer an index probe by jti, key id, run or
//! fingerprint) for what it needs, so its cost is proportional to the batch. It is
//! idempotent: a batch delivered twice finds the same findings, which merge into the
//! stored ones. An aggregated credential use counts as a use over its
//! `first_seen..last_seen`.
//!
//! Findings never carry a secret: subjects are jtis, access key ids and fingerprints, and
//! evidence is event ids.

use std::collections::BTreeSet;

use ring::digest::{SHA256, digest};
use sigil_proto::{
    EventBody, json,
    v1::{self, CredentialClass, EventRef, FindingKind, Severity},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    cloud::parse_rfc3339,
    store::{AgentEvent, StoreError, sqlite::run_id},
};

/// Every finding kind's JSON name.
pub const KIND_NAMES: [&str; 5] =
    ["token_replayed", "token_used_after_run_ended", "credential_outlived_run", "static_credential_shared", "credential_file_to_egress"];

/// Evidence (and process) ids kept per finding: the first ones found. A token replayed
/// a million times is one finding whose times keep moving, not a million ids.
pub const MAX_EVIDENCE: usize = 32;
/// Workloads a use of a long-lived credential is compared with: the first seen using it
/// (only that one is read, so a credential every workload uses costs each use one row).
pub const ORIGINS: usize = 1;

/// A stored event a rule points at, with the run and process it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub run_id: String,
    pub node: String,
    pub exec_id: Option<String>,
    pub event_id: String,
    /// The event's kind name.
    pub kind: String,
    /// Unix seconds.
    pub time: i64,
}

impl Seen {
    fn evidence(&self) -> EventRef {
        EventRef { node: self.node.clone(), id: self.event_id.clone(), kind: self.kind.clone() }
    }
}

/// What the rules remember between batches, beyond the store's own tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// Subject: a long-lived credential's fingerprint; detail: the workload identity. One
    /// per (fingerprint, workload, run): its first use there.
    StaticUse,
    /// Subject: a run; detail: the file's kind and path. One per (run, path): its first read.
    FileRead,
}

impl Fact {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StaticUse => "static_use",
            Self::FileRead => "file_read",
        }
    }
}

/// What the rules read and write; each store backend answers with index probes.
pub trait FindingLookups {
    /// The issuances of token `jti` (one per node that issued it) that name a run.
    fn issuances(&mut self, jti: &str) -> Result<Vec<Seen>, StoreError>;
    /// When run `run_id` ended (its last known process exited); `None` while it is live.
    fn run_ended(&mut self, run_id: &str) -> Result<Option<i64>, StoreError>;
    /// The earliest credential response (`credential_obtained`) that handed access key
    /// `key` to a known run.
    fn first_obtained(&mut self, key: &str) -> Result<Option<Seen>, StoreError>;
    /// The earliest use of access key `key` by a known run.
    fn first_use_of_key(&mut self, key: &str) -> Result<Option<Seen>, StoreError>;
    /// Records `fact` about `subject`; false when (fact, subject, detail, run) was noted.
    fn note(&mut self, fact: Fact, subject: &str, detail: &str, seen: &Seen) -> Result<bool, StoreError>;
    /// Facts about `subject` (with their detail), earliest first, at most `limit`.
    fn noted(&mut self, fact: Fact, subject: &str, limit: usize) -> Result<Vec<(String, Seen)>, StoreError>;
    /// The findings with these ids are about to be read and stored: a backend may read
    /// (and lock) them all at once.
    fn will_store(&mut self, _ids: &[&str]) -> Result<(), StoreError> {
        Ok(())
    }
    /// The stored finding with id `id`, locked for update where the backend can.
    fn stored_finding(&mut self, id: &str) -> Result<Option<v1::Finding>, StoreError>;
    /// Stores a new finding; false when another writer stored its id first.
    fn insert_finding(&mut self, f: &v1::Finding, first: i64, last: i64) -> Result<bool, StoreError>;
    /// Replaces the stored finding with its id.
    fn update_finding(&mut self, f: &v1::Finding, first: i64, last: i64) -> Result<(), StoreError>;
}

/// One credential use of the batch, as the rules need it.
struct Use<'a> {
    v: &'a v1::CredentialUse,
    seen: Seen,
    /// The run, when the agent attributed the use to a known process.
    run: Option<String>,
    /// The uses this event stands for span `first..=last` (an aggregate) or one instant.
    first: i64,
    last: i64,
}

/// The run a process reference names, keyed as the stores key runs; `None` when it names
/// no workload (the signer knows only the exec id).
pub fn run_of(node: &str, p: &v1::ProcessRef) -> Option<String> {
    crate::store::sqlite::process_run(node, p)
}

/// The workload identity of a process, as an operator means "one workload": the pod's
/// owner (or service account), the systemd unit, else the container or cgroup. Two pods of
/// one Deployment are one workload; two runs of one unit are one workload.
pub fn workload_of(node: &str, p: &v1::ProcessRef) -> String {
    if let Some(pod) = &p.pod
        && let Some(ns) = &pod.namespace
    {
        if let Some(o) = &pod.owner {
            return format!("k8s:{ns}/{}/{}", o.kind, o.name);
        }
        if let Some(sa) = &pod.service_account {
            return format!("k8s:{ns}/serviceaccount/{sa}");
        }
    }
    let w = p.workload.clone().unwrap_or_default();
    match (w.kind(), &w.unit, &w.user_unit, &w.container_id) {
        (v1::WorkloadKind::SystemdUnit, Some(u), _, _) => format!("unit:{u}"),
        (v1::WorkloadKind::UserUnit, _, Some(u), _) => format!("user_unit:{}:{u}", w.user_uid.unwrap_or_default()),
        (_, _, _, Some(c)) => format!("container:{c}"),
        _ => run_id(node, p.workload.as_ref(), p.cgroup_path.as_deref()),
    }
}

fn unix(s: &str) -> Option<i64> {
    parse_rfc3339(s)
}

fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t).ok().and_then(|d| d.format(&Rfc3339).ok()).unwrap_or_else(|| t.to_string())
}

/// A finding's kind as JSON writes it (`token_replayed`).
pub fn kind_name(f: &v1::Finding) -> String {
    json::finding_kind::name(f.finding_kind).unwrap_or_else(|| "unspecified".into())
}

/// A finding's stored JSON: the `finding` event document.
pub fn to_json(f: &v1::Finding) -> Result<String, StoreError> {
    let bytes = EventBody::Finding(f.clone()).to_json().map_err(|e| StoreError::BadArgument(format!("finding: {e}")))?;
    String::from_utf8(bytes).map_err(|e| StoreError::BadArgument(format!("finding: {e}")))
}

/// A stored finding's JSON back into its type.
pub fn from_json(json: &str) -> Result<v1::Finding, StoreError> {
    match EventBody::from_json(json.as_bytes()) {
        Ok(EventBody::Finding(f)) => Ok(f),
        Ok(other) => Err(StoreError::BadArgument(format!("stored finding is a {}", other.kind()))),
        Err(e) => Err(StoreError::BadArgument(format!("stored finding: {e}"))),
    }
}

/// A finding's identity: its kind, subject and runs.
pub fn finding_id(kind: FindingKind, subject: &str, runs: &[String]) -> String {
    let mut key = format!("{}\0{subject}", kind.as_str_name());
    for r in runs {
        key.push('\0');
        key.push_str(r);
    }
    format!("f-{}", &hex::encode(digest(&SHA256, key.as_bytes()))[..24])
}

/// A finding about to be stored, with its times as Unix seconds.
struct Draft {
    f: v1::Finding,
    first: i64,
    last: i64,
}

#[allow(clippy::too_many_arguments)]
fn draft(kind: FindingKind, severity: Severity, subject_kind: &str, subject: &str, involved: &[&Seen], first: i64, last: i64, summary: String) -> Draft {
    let mut runs: Vec<String> = Vec::new();
    for s in involved {
        if !runs.contains(&s.run_id) {
            runs.push(s.run_id.clone());
        }
    }
    let nodes: BTreeSet<String> = involved.iter().map(|s| s.node.clone()).collect();
    let mut processes: Vec<String> = Vec::new();
    for e in involved.iter().filter_map(|s| s.exec_id.clone()) {
        if !processes.contains(&e) {
            processes.push(e);
        }
    }
    let mut evidence: Vec<EventRef> = Vec::new();
    for e in involved.iter().map(|s| s.evidence()) {
        if !evidence.contains(&e) {
            evidence.push(e);
        }
    }
    Draft {
        f: v1::Finding {
            id: finding_id(kind, subject, &runs),
            finding_kind: kind as i32,
            severity: severity as i32,
            subject: subject.to_owned(),
            subject_kind: subject_kind.to_owned(),
            runs,
            processes,
            nodes: nodes.into_iter().collect(),
            first_time: rfc3339(first),
            last_time: rfc3339(last),
            evidence,
            summary,
        },
        first,
        last,
    }
}

/// `old` with what `new` adds: the wider time span, evidence, processes and nodes (bounded).
pub fn merge(mut old: v1::Finding, new: &v1::Finding) -> v1::Finding {
    let earlier = |a: &str, b: &str| match (unix(a), unix(b)) {
        (Some(x), Some(y)) => x <= y,
        _ => a <= b,
    };
    if !earlier(&old.first_time, &new.first_time) {
        old.first_time.clone_from(&new.first_time);
    }
    if earlier(&old.last_time, &new.last_time) {
        old.last_time.clone_from(&new.last_time);
    }
    for e in &new.evidence {
        if old.evidence.len() < MAX_EVIDENCE && !old.evidence.contains(e) {
            old.evidence.push(e.clone());
        }
    }
    for p in &new.processes {
        if old.processes.len() < MAX_EVIDENCE && !old.processes.contains(p) {
            old.processes.push(p.clone());
        }
    }
    for n in &new.nodes {
        if !old.nodes.contains(n) {
            old.nodes.push(n.clone());
        }
    }
    old.nodes.sort();
    old.severity = old.severity.max(new.severity);
    old
}

/// Stores `d` once (merged into the stored finding with its id); true when new.
fn upsert(db: &mut impl FindingLookups, d: &Draft) -> Result<bool, StoreError> {
    // Twice at most: a concurrent writer (another collector replica) may store the id
    // between our read and our insert; then we merge into its row.
    for _ in 0..2 {
        match db.stored_finding(&d.f.id)? {
            Some(old) => {
                let merged = merge(old, &d.f);
                let (first, last) = (unix(&merged.first_time).unwrap_or(d.first), unix(&merged.last_time).unwrap_or(d.last));
                db.update_finding(&merged, first, last)?;
                return Ok(false);
            }
            None => {
                if db.insert_finding(&d.f, d.first, d.last)? {
                    return Ok(true);
                }
            }
        }
    }
    Err(StoreError::BadArgument(format!("finding {} could not be stored: it changed twice under us", d.f.id)))
}

/// Looks for misuse in a batch `node` sent (already stored), stores what it finds, and
/// returns the findings that are new.
pub fn detect(db: &mut impl FindingLookups, node: &str, events: &[AgentEvent]) -> Result<Vec<v1::Finding>, StoreError> {
    let mut drafts = Vec::new();
    for ev in events {
        match &ev.body {
            EventBody::CredentialUse(v) => {
                let u = use_of(node, &ev.id, v);
                match v.class() {
                    CredentialClass::SigilIssued => token_rules(db, &u, &mut drafts)?,
                    CredentialClass::ShortLived => temporary_key_rules(db, &u, &mut drafts)?,
                    CredentialClass::Static => static_rules(db, &u, &mut drafts)?,
                    _ => {}
                }
            }
            EventBody::CredentialFileRead(v) => {
                if let Some(seen) = v.process.as_ref().and_then(|p| seen_of(node, &ev.id, "credential_file_read", p, unix(&v.time).unwrap_or(0))) {
                    let kind = json::file_kind::name(v.file_kind).unwrap_or_else(|| "unknown".into());
                    let run = seen.run_id.clone();
                    db.note(Fact::FileRead, &run, &format!("{kind} {}", v.path), &seen)?;
                }
            }
            _ => {}
        }
    }
    let ids: Vec<&str> = drafts.iter().map(|d| d.f.id.as_str()).collect();
    db.will_store(&ids)?;
    let mut new = Vec::new();
    for d in drafts {
        if upsert(db, &d)? {
            new.push(d.f);
        }
    }
    Ok(new)
}

/// Logs findings a batch stored first, once that batch has committed.
pub fn log_new(found: &[crate::store::NewFinding]) {
    for f in found {
        if let Some(unlogged) = LOGGED.take() {
            tracing::warn!(finding = f.kind, subject = %f.subject, runs = ?f.runs, unlogged_before = unlogged, "{}", f.summary);
        }
    }
}

/// New findings logged per [`LOG_WINDOW`]; the rest are counted into the next line logged.
/// Every finding is stored, counted in the metrics and listed by `sigil findings`: the log
/// is a notice, and a workload that trips a rule a thousand times a second (or an attacker
/// who wants the collector busy writing its log) must not flood it.
const LOGS_PER_WINDOW: u32 = 20;
const LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
static LOGGED: LogBudget = LogBudget(std::sync::Mutex::new(None));

struct LogBudget(std::sync::Mutex<Option<(std::time::Instant, u32, u64)>>);

impl LogBudget {
    /// `Some(findings not logged since the last line)` when this one may be logged.
    fn take(&self) -> Option<u64> {
        let Ok(mut w) = self.0.lock() else { return Some(0) };
        let now = std::time::Instant::now();
        let (start, logged, unlogged) = w.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= LOG_WINDOW {
            (*start, *logged) = (now, 0);
        }
        if *logged < LOGS_PER_WINDOW {
            *logged += 1;
            Some(std::mem::take(unlogged))
        } else {
            *unlogged += 1;
            None
        }
    }
}

fn seen_of(node: &str, id: &str, kind: &str, p: &v1::ProcessRef, time: i64) -> Option<Seen> {
    Some(Seen {
        run_id: run_of(node, p)?,
        node: node.to_owned(),
        exec_id: Some(p.exec_id.clone()).filter(|e| !e.is_empty()),
        event_id: id.to_owned(),
        kind: kind.to_owned(),
        time,
    })
}

fn use_of<'a>(node: &str, id: &str, v: &'a v1::CredentialUse) -> Use<'a> {
    let last = v.last_seen.as_deref().and_then(unix).or_else(|| unix(&v.time)).unwrap_or(0);
    let first = v.first_seen.as_deref().and_then(unix).unwrap_or(last).min(last);
    let run = v.process.as_ref().and_then(|p| run_of(node, p));
    let seen = Seen {
        run_id: run.clone().unwrap_or_else(|| "unattributed".into()),
        node: node.to_owned(),
        exec_id: v.process.as_ref().map(|p| p.exec_id.clone()).filter(|e| !e.is_empty()),
        event_id: id.to_owned(),
        kind: "credential_use".into(),
        time: first,
    };
    Use { v, seen, run, first, last }
}

/// `token_replayed` and `token_used_after_run_ended` for a Sigil-issued token.
fn token_rules(db: &mut impl FindingLookups, u: &Use<'_>, out: &mut Vec<Draft>) -> Result<(), StoreError> {
    let Some(jti) = u.v.identifiers.as_ref().and_then(|i| i.jwt_jti.as_deref()).filter(|j| !j.is_empty()) else { return Ok(()) };
    for iss in db.issuances(jti)? {
        // A use the agent could not tie to a known run is only judged across nodes: on the
        // issuing node an unknown process is not proof of another run.
        let other_run = u.run.as_deref().is_some_and(|r| r != iss.run_id);
        let other_node = u.seen.node != iss.node;
        if other_run || other_node {
            let summary = format!("token {jti} issued to run {} on {} was presented by run {} on {}", iss.run_id, iss.node, u.seen.run_id, u.seen.node);
            out.push(draft(FindingKind::TokenReplayed, Severity::High, "jti", jti, &[&iss, &u.seen], u.first, u.last, summary));
        }
        if let Some(ended) = db.run_ended(&iss.run_id)?
            && u.last > ended
        {
            let summary = format!("token {jti} was presented by run {} {} s after its run {} ended", u.seen.run_id, u.last - ended, iss.run_id);
            let first = u.first.max(ended);
            out.push(draft(FindingKind::TokenUsedAfterRunEnded, Severity::High, "jti", jti, &[&iss, &u.seen], first, u.last, summary));
        }
    }
    Ok(())
}

/// Who obtained temporary key `key`: the run that received it in a credential response
/// (an STS response the agent read), else, where no response was seen (a client the agent
/// cannot read responses of, a key obtained on another node), the run that first presented it.
fn obtainer_of_temporary_key(db: &mut impl FindingLookups, key: &str) -> Result<Option<Seen>, StoreError> {
    match db.first_obtained(key)? {
        Some(obtained) => Ok(Some(obtained)),
        None => db.first_use_of_key(key),
    }
}

/// `credential_outlived_run` for a temporary AWS key.
fn temporary_key_rules(db: &mut impl FindingLookups, u: &Use<'_>, out: &mut Vec<Draft>) -> Result<(), StoreError> {
    let Some(key) = u.v.identifiers.as_ref().and_then(|i| i.access_key_id.as_deref()).filter(|k| k.starts_with("ASIA")) else { return Ok(()) };
    let Some(owner) = obtainer_of_temporary_key(db, key)? else { return Ok(()) };
    if u.run.as_deref().is_some_and(|r| r != owner.run_id) {
        let summary = format!("temporary key {key} obtained by run {} was used by run {} on {}", owner.run_id, u.seen.run_id, u.seen.node);
        out.push(draft(FindingKind::CredentialOutlivedRun, Severity::High, "access_key_id", key, &[&owner, &u.seen], u.first, u.last, summary));
    } else if let Some(ended) = db.run_ended(&owner.run_id)?
        && u.last > ended
    {
        let summary = format!("temporary key {key} obtained by run {} was used {} s after that run ended", owner.run_id, u.last - ended);
        out.push(draft(FindingKind::CredentialOutlivedRun, Severity::High, "access_key_id", key, &[&owner, &u.seen], u.first.max(ended), u.last, summary));
    }
    Ok(())
}

/// `static_credential_shared` and `credential_file_to_egress` for a long-lived credential.
fn static_rules(db: &mut impl FindingLookups, u: &Use<'_>, out: &mut Vec<Draft>) -> Result<(), StoreError> {
    let (Some(p), Some(run)) = (u.v.process.as_ref(), u.run.as_deref()) else { return Ok(()) };
    let fp = u.v.fingerprint.as_str();
    if fp.is_empty() {
        return Ok(());
    }
    let label = u.v.identifiers.as_ref().and_then(|i| i.access_key_id.clone().or_else(|| i.token_family.clone())).unwrap_or_else(|| "credential".into());
    let workload = workload_of(&u.seen.node, p);
    let first_in_run = db.note(Fact::StaticUse, fp, &workload, &u.seen)?;
    // Shared: compared with the first workload seen using it.
    let users = db.noted(Fact::StaticUse, fp, ORIGINS)?;
    if let Some((first_workload, origin)) = users.first()
        && *first_workload != workload
    {
        let summary = format!("long-lived {label} (fingerprint {fp}) is used by workload {first_workload} and by workload {workload}");
        out.push(draft(FindingKind::StaticCredentialShared, Severity::Medium, "fingerprint", fp, &[origin, &u.seen], u.first, u.last, summary));
    }
    if first_in_run {
        let reads: Vec<Seen> = db.noted(Fact::FileRead, run, MAX_EVIDENCE)?.into_iter().map(|(_, s)| s).filter(|s| s.time <= u.first).collect();
        if !reads.is_empty() {
            let summary = format!("run {run} read a credential file, then sent long-lived {label} (fingerprint {fp}) it had not used before");
            let mut involved: Vec<&Seen> = reads.iter().collect();
            involved.push(&u.seen);
            let first = reads.iter().map(|s| s.time).min().unwrap_or(u.first);
            out.push(draft(FindingKind::CredentialFileToEgress, Severity::Medium, "fingerprint", fp, &involved, first, u.last, summary));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(first: &str, last: &str, ev: &[&str]) -> v1::Finding {
        v1::Finding {
            first_time: first.into(),
            last_time: last.into(),
            evidence: ev.iter().map(|i| EventRef { node: "n".into(), id: (*i).into(), kind: "credential_use".into() }).collect(),
            nodes: vec!["n".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_flood_of_new_findings_logs_a_few_lines_and_counts_the_rest() {
        let budget = LogBudget(std::sync::Mutex::new(None));
        let logged: Vec<Option<u64>> = (0..LOGS_PER_WINDOW + 5).map(|_| budget.take()).collect();
        assert!(logged[..LOGS_PER_WINDOW as usize].iter().all(|l| *l == Some(0)));
        assert!(logged[LOGS_PER_WINDOW as usize..].iter().all(Option::is_none));
        // The next window's first line says how many went unlogged.
        if let Ok(mut w) = budget.0.lock()
            && let Some((start, _, _)) = w.as_mut()
        {
            *start = start.checked_sub(LOG_WINDOW).unwrap_or(*start);
        }
        assert_eq!(budget.take(), Some(5));
    }

    #[test]
    fn merging_widens_the_times_and_adds_evidence_once_up_to_the_bound() {
        let old = finding("2026-01-01T00:00:10Z", "2026-01-01T00:00:20Z", &["a", "b"]);
        let m = merge(old, &finding("2026-01-01T00:00:05Z", "2026-01-01T00:00:15Z", &["b", "c"]));
        assert_eq!((m.first_time.as_str(), m.last_time.as_str()), ("2026-01-01T00:00:05Z", "2026-01-01T00:00:20Z"));
        assert_eq!(m.evidence.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        let many: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let m = merge(m, &finding("2026-01-01T00:00:05Z", "2026-01-01T00:00:15Z", &refs));
        assert_eq!(m.evidence.len(), MAX_EVIDENCE);
    }

    #[test]
    fn a_finding_is_identified_by_kind_subject_and_runs() {
        let runs = ["a".to_owned(), "b".to_owned()];
        let id = finding_id(FindingKind::TokenReplayed, "j1", &runs);
        assert_eq!(id, finding_id(FindingKind::TokenReplayed, "j1", &runs));
        assert_ne!(id, finding_id(FindingKind::TokenUsedAfterRunEnded, "j1", &runs));
        assert_ne!(id, finding_id(FindingKind::TokenReplayed, "j2", &runs));
        assert_ne!(id, finding_id(FindingKind::TokenReplayed, "j1", &runs[..1]));
    }

    #[test]
    fn workloads_are_owners_units_and_cgroups_not_processes() {
        let mut p = v1::ProcessRef {
            workload: Some(v1::Workload {
                kind: v1::WorkloadKind::KubernetesPod as i32,
                pod_uid: Some("u1".into()),
                container_id: Some("c1".into()),
                ..Default::default()
            }),
            pod: Some(v1::PodMeta {
                namespace: Some("shop".into()),
                owner: Some(v1::Owner { kind: "Deployment".into(), name: "checkout".into(), via: None }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(workload_of("n", &p), "k8s:shop/Deployment/checkout");
        p.pod = None;
        assert_eq!(workload_of("n", &p), "container:c1");
        let cg = v1::ProcessRef {
            workload: Some(v1::Workload { kind: v1::WorkloadKind::Cgroup as i32, ..Default::default() }),
            cgroup_path: Some("/x".into()),
            ..Default::default()
        };
        assert_eq!(workload_of("n", &cg), "cgroup:n:/x");
        assert_eq!(run_of("n", &cg).as_deref(), Some("cgroup:n:/x"));
        assert_eq!(run_of("n", &v1::ProcessRef::default()), None);
    }
}
