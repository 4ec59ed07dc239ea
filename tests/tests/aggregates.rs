#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! The aggregate tables behind `posture` and `static-credentials`, on both backends (a
//! real SQLite file, a real PostgreSQL server): after ingest, after an agent resends
//! batches it got no answer for, and after retention, they equal the same figures
//! computed from scratch from the stored uses (and tokens issued and denied); aggregated
//! credential-use events (the agent folds repeated uses into one event with `count`)
//! count `count` uses.

use std::fs;

use sigil_collector::store::{
    AgentEvent, Page, Query, Store,
    postgres::PostgresStore,
    sqlite::{SqliteStore, now_unix},
};
use sigil_proto::{EventBody, v1};
use sigil_tests::{postgres::Postgres, scratch_dir};

const KEY: &str = "AKIAAGGREGATE0000001";
const TEMP: &str = "ASIAAGGREGATE0000002";

fn workload(pod: &str) -> v1::Workload {
    v1::Workload { kind: v1::WorkloadKind::KubernetesPod as i32, pod_uid: Some(pod.into()), container_id: Some(format!("ctr-{pod}")), ..Default::default() }
}

fn exec(id: &str, pod: &str, time: &str) -> AgentEvent {
    let body = v1::ProcessExec {
        exec_id: format!("exec-{pod}"),
        process_id: format!("proc-{pod}"),
        time: time.into(),
        comm: "app".into(),
        cgroup: Some(v1::CgroupInfo { id: 1, path: Some(format!("/kubepods/{pod}")) }),
        workload: Some(workload(pod)),
        ..Default::default()
    };
    AgentEvent { id: id.into(), body: EventBody::ProcessExec(body) }
}

/// A use of `key` by `pod`'s process; `count` > 1 with `first` makes it an aggregate.
fn key_use(id: &str, pod: &str, key: &str, time: &str, count: Option<u64>, first: Option<&str>) -> AgentEvent {
    let static_key = key.starts_with("AKIA");
    let body = v1::CredentialUse {
        time: time.into(),
        process: Some(v1::ProcessRef {
            exec_id: format!("exec-{pod}"),
            workload: Some(workload(pod)),
            cgroup_path: Some(format!("/kubepods/{pod}")),
            ..Default::default()
        }),
        detector: v1::Detector::AwsSigv4 as i32,
        class: if static_key { v1::CredentialClass::Static } else { v1::CredentialClass::ShortLived } as i32,
        fingerprint: format!("fp-{key}"),
        method: "GET".into(),
        path: "/".into(),
        count,
        first_seen: first.map(Into::into),
        last_seen: count.map(|_| time.into()),
        identifiers: Some(v1::Identifiers { access_key_id: Some(key.into()), ..Default::default() }),
        ..Default::default()
    };
    AgentEvent { id: id.into(), body: EventBody::CredentialUse(body) }
}

/// Now plus `offset` seconds, as RFC 3339.
fn issued(id: &str, pod: &str, ttl: i64, time: &str) -> AgentEvent {
    let process = v1::ProcessRef { exec_id: format!("exec-{pod}"), workload: Some(workload(pod)), ..Default::default() };
    let body = v1::TokenIssued {
        time: time.into(),
        jti: format!("jti-{id}"),
        spiffe_id: format!("spiffe://sigil.test/{pod}"),
        audience: vec!["sts.amazonaws.com".into()],
        issuer: "https://sigil.test".into(),
        ttl_seconds: ttl,
        process: Some(process),
        ..Default::default()
    };
    AgentEvent { id: id.into(), body: EventBody::TokenIssued(body) }
}

fn denied(id: &str, reason: v1::DenyReason, time: &str) -> AgentEvent {
    let body = v1::TokenDenied { time: time.into(), reason: reason as i32, detail: "refused".into(), ..Default::default() };
    AgentEvent { id: id.into(), body: EventBody::TokenDenied(body) }
}

/// posture's issuance figures: tokens issued, their mean lifetime, denials per reason.
fn issuance(store: &dyn Store) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let p = store.query(&Query::Posture).unwrap();
    let (tokens, ttl) = (p["tokens_issued"].clone(), p["mean_token_lifetime_seconds"].clone());
    (tokens, ttl, p["denials_by_reason"].clone())
}

fn now_rfc3339(offset: i64) -> String {
    let at = format!("@{}", now_unix() + offset);
    let out = std::process::Command::new("date").args(["-u", "-d", &at, "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn static_row(store: &dyn Store) -> serde_json::Value {
    let s = store.query(&Query::StaticCredentials(Page::default())).unwrap();
    let rows = s["static_credentials"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1, "{s}");
    rows[0].clone()
}

fn check(store: &dyn Store) {
    // Built incrementally; computed again from the stored uses: the same rows.
    store.verify_aggregates().unwrap();
}

fn aggregates_follow_ingest_replays_and_retention(store: &dyn Store, replica: &dyn Store) {
    let (old, now, earlier) = ("2025-03-01T10:00:00Z".to_owned(), now_rfc3339(0), now_rfc3339(-60));
    let batch = vec![
        exec("s-1", "pod-a", &now),
        exec("s-2", "pod-b", &now),
        // pod-a used the static key 40 times in the last minute: one aggregate event.
        key_use("s-3", "pod-a", KEY, &now, Some(40), Some(&earlier)),
        key_use("s-4", "pod-b", KEY, &now, None, None),
        key_use("s-5", "pod-b", TEMP, &now, Some(3), Some(&earlier)),
        issued("s-6", "pod-a", 300, &now),
        issued("s-7", "pod-b", 600, &now),
        denied("s-8", v1::DenyReason::NoMatchingEntry, &now),
    ];
    assert_eq!(store.ingest_events("node-a", &batch).unwrap().stored, 8);
    check(store);
    let no_match = serde_json::json!([{"reason": "no_matching_entry", "count": 1}]);
    assert_eq!(issuance(store), (2.into(), 450.0.into(), no_match.clone()));
    let s = static_row(store);
    assert_eq!((s["uses"].as_i64(), s["runs"].as_i64()), (Some(41), Some(2)), "{s}");
    assert_eq!(s["access_key_id"], KEY);
    let who = store.query(&Query::WhoUsed(KEY.into())).unwrap();
    let pod_a = who["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == "container:ctr-pod-a").cloned().unwrap();
    assert_eq!(pod_a["uses"], 40, "who-used sums the aggregate's count: {who}");
    assert!(pod_a["first_seen"].as_i64() < pod_a["last_seen"].as_i64(), "{pod_a}");
    let p = store.query(&Query::Posture).unwrap();
    assert_eq!((p["runs_using_credentials"].as_i64(), p["runs_using_only_short_lived_credentials"].as_i64()), (Some(2), Some(0)), "{p}");

    // The agent got no answer and resends the batch, to this collector and to a replica
    // sharing the database: nothing counts twice.
    assert_eq!(store.ingest_events("node-a", &batch).unwrap().duplicates, 8);
    assert_eq!(replica.ingest_events("node-a", &batch).unwrap().duplicates, 8);
    check(store);
    assert_eq!(static_row(store)["uses"], 41);
    assert_eq!(issuance(store), (2.into(), 450.0.into(), no_match.clone()), "a resent batch counts no token twice");

    // Old uses (last year): counted until retention takes them away.
    let old_batch = vec![
        exec("o-1", "pod-c", &old),
        key_use("o-2", "pod-c", KEY, &old, Some(7), Some("2025-03-01T09:59:00Z")),
        issued("o-3", "pod-c", 3600, &old),
        denied("o-4", v1::DenyReason::BinaryHashMismatch, &old),
        denied("o-5", v1::DenyReason::NoMatchingEntry, &old),
    ];
    assert_eq!(replica.ingest_events("node-b", &old_batch).unwrap().stored, 5);
    check(store);
    let both = serde_json::json!([{"reason": "no_matching_entry", "count": 2}, {"reason": "binary_hash_mismatch", "count": 1}]);
    assert_eq!(issuance(store), (3.into(), 1500.0.into(), both), "two nodes' rows add up");
    let s = static_row(store);
    assert_eq!((s["uses"].as_i64(), s["runs"].as_i64()), (Some(48), Some(3)), "{s}");
    assert_eq!(store.query(&Query::Posture).unwrap()["runs_using_credentials"], 3);

    let before = now_unix() - 30 * 86_400;
    assert!(store.retain(before).unwrap() > 0);
    check(store);
    let s = static_row(store);
    assert_eq!((s["uses"].as_i64(), s["runs"].as_i64()), (Some(41), Some(2)), "retention took the old uses out: {s}");
    assert!(s["first_seen"].as_i64().unwrap() > before, "the first use is recomputed: {s}");
    assert_eq!(issuance(store), (2.into(), 450.0.into(), no_match), "retention took the old tokens and denials out");
    // Replayed after retention: still once.
    assert_eq!(store.ingest_events("node-a", &batch).unwrap().duplicates, 8);
    check(store);
    assert_eq!(static_row(store)["uses"], 41);
}

#[test]
fn sqlite_aggregates_equal_a_computation_from_scratch_after_ingest_replays_and_retention() {
    let dir = scratch_dir();
    let store = SqliteStore::open(&dir.join("c.db")).unwrap();
    // One SQLite file, one store: the "replica" is the same store.
    aggregates_follow_ingest_replays_and_retention(&store, &store);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn postgres_aggregates_equal_a_computation_from_scratch_after_ingest_replays_and_retention() {
    let pg = Postgres::start();
    let store = PostgresStore::connect(&pg.url).unwrap();
    let replica = PostgresStore::connect(&pg.url).unwrap();
    aggregates_follow_ingest_replays_and_retention(&store, &replica);
}

/// The finding rules' questions, asked batch-wise on PostgreSQL and one at a time on
/// SQLite, give the same findings: two workloads sharing a long-lived key, a temporary
/// key obtained by one run and used by another, found in the batch that shows it, later
/// batches widening them, and a resent batch (to a replica) adding nothing.
#[test]
fn both_stores_find_the_same_misuse_from_the_same_batches() {
    let dir = scratch_dir();
    let sqlite = SqliteStore::open(&dir.join("c.db")).unwrap();
    let pg = Postgres::start();
    let (postgres, replica) = (PostgresStore::connect(&pg.url).unwrap(), PostgresStore::connect(&pg.url).unwrap());
    let (now, earlier) = (now_rfc3339(0), now_rfc3339(-60));
    let first = vec![
        exec("f-1", "pod-a", &earlier),
        exec("f-2", "pod-b", &earlier),
        key_use("f-3", "pod-a", KEY, &earlier, None, None),
        key_use("f-4", "pod-a", TEMP, &earlier, None, None),
    ];
    let second = vec![key_use("f-5", "pod-b", KEY, &now, Some(4), Some(&earlier)), key_use("f-6", "pod-b", TEMP, &now, None, None)];
    let third = vec![exec("f-7", "pod-c", &now), key_use("f-8", "pod-c", KEY, &now, None, None), key_use("f-9", "pod-b", TEMP, &now, None, None)];
    let findings = |s: &dyn Store| s.query(&Query::Findings { kind: None, since: None }).unwrap();
    for batch in [&first, &second, &third] {
        assert_eq!(sqlite.ingest_events("node-a", batch).unwrap().stored as usize, batch.len());
        assert_eq!(postgres.ingest_events("node-a", batch).unwrap().stored as usize, batch.len());
        assert_eq!(findings(&sqlite), findings(&postgres));
    }
    let all = findings(&postgres);
    let kinds: Vec<&str> = all["findings"].as_array().unwrap().iter().filter_map(|f| f["finding_kind"].as_str()).collect();
    assert!(kinds.contains(&"static_credential_shared") && kinds.contains(&"credential_outlived_run"), "{all}");
    assert_eq!(replica.ingest_events("node-a", &second).unwrap().duplicates, 2);
    assert_eq!(findings(&postgres), all, "a resent batch adds nothing");
    let _ = fs::remove_dir_all(dir);
}
