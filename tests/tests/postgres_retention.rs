#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! The PostgreSQL store on a real server: events are stored once per (node, id) however
//! often they are resent, retention drops whole day partitions of old events, cloud
//! audit logs a responder imports keep (retained by ingestion time, not event time), and
//! one agent's batch waiting on a lock does not hold up the others'.

use std::{fs, path::Path, process::Command};

use sigil_collector::{
    cloud::cloudtrail,
    store::{AgentEvent, Page, Query, Store, postgres::PostgresStore, sqlite::now_unix},
};
use sigil_proto::{EventBody, v1};
use sigil_tests::{postgres::Postgres, scratch_dir};

fn exec(id: &str, time: &str) -> AgentEvent {
    let body =
        v1::ProcessExec { exec_id: format!("exec-{id}"), process_id: format!("proc-{id}"), time: time.into(), comm: "true".into(), ..Default::default() };
    AgentEvent { id: id.into(), body: EventBody::ProcessExec(body) }
}

/// The day partitions of `table` (their names end in the day number).
fn partitions(pg: &Postgres, table: &str) -> Vec<String> {
    let rows = pg
        .client()
        .query("SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::text::regclass ORDER BY 1", &[&table])
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[test]
fn retention_drops_old_day_partitions_and_keeps_imported_audit_logs() {
    let pg = Postgres::start();
    let store = PostgresStore::connect(&pg.url).unwrap();
    // A second replica on the same database.
    let replica = PostgresStore::connect(&pg.url).unwrap();
    let now = String::from_utf8(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap().stdout).unwrap().trim().to_owned();
    let batch = [exec("s-1", "2026-01-01T10:00:00Z"), exec("s-2", &now), exec("s-3", "2026-01-01T23:59:59Z")];
    let out = store.ingest_events("node-a", &batch).unwrap();
    assert_eq!((out.stored, out.duplicates), (3, 0));
    // Resent (an agent that never got the answer): nothing new.
    let out = store.ingest_events("node-a", &batch).unwrap();
    assert_eq!((out.stored, out.duplicates), (0, 3));
    // Another node's events with the same ids are its own.
    assert_eq!(store.ingest_events("node-b", &batch[..1]).unwrap().stored, 1);
    assert_eq!(replica.ingest_events("node-d", &[exec("early-1", "2026-01-01T09:00:00Z")]).unwrap().stored, 1);
    // The same id twice in one batch is one event.
    let out = store.ingest_events("node-c", &[exec("d-1", &now), exec("d-1", &now)]).unwrap();
    assert_eq!((out.stored, out.duplicates), (1, 1));
    let old_day = format!("events_d{}", 1_767_225_600 / 86_400);
    assert!(partitions(&pg, "events").contains(&old_day), "{:?}", partitions(&pg, "events"));

    // A responder imports last year's CloudTrail for an investigation.
    let dir = scratch_dir();
    let trail = dir.join("old.json");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/tests/data/cloudtrail/iamuser_getobject.json");
    fs::write(&trail, fs::read_to_string(src).unwrap().replace("2026-11-23T", "2025-02-03T")).unwrap();
    let parsed = cloudtrail::parse_path(&trail).unwrap();
    assert!(!parsed.actions.is_empty() && parsed.actions.iter().all(|a| a.time_unix < now_unix() - 200 * 86_400));
    assert_eq!(store.ingest_cloud(&parsed.actions).unwrap().stored as usize, parsed.actions.len());

    let deleted = store.retain(now_unix() - 30 * 86_400).unwrap();
    assert!(deleted >= 3, "deleted {deleted}");
    assert!(!partitions(&pg, "events").contains(&old_day), "the old day's partition is dropped");
    assert!(!partitions(&pg, "events").is_empty(), "today's partition stays");
    let (events, processes): (i64, i64) = {
        let r = pg.client().query_one("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM processes)", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((events, processes), (2, 2), "only today's execs remain (node-a's and node-c's)");
    assert_eq!(store.metrics().unwrap()["events_by_kind"]["process_exec"], 2, "the counts follow the dropped partitions");
    // The imported evidence is still there and answers.
    for a in &parsed.actions {
        assert_eq!(store.query(&Query::Trace(a.id.clone(), Page::default())).unwrap()["action"]["id"], a.id.as_str());
    }
    // The replica knew the old day's partition (it stored an event of that day before the
    // other replica's retention dropped it): a late event of that day is still stored.
    assert_eq!(replica.ingest_events("node-d", &[exec("late-1", "2026-01-01T11:00:00Z")]).unwrap().stored, 1);
    let _ = fs::remove_dir_all(dir);
}

/// A database a collector from before the runs kept their counts wrote: the next
/// collector fills them in once at connect, and keeps them from there.
#[test]
fn a_database_from_before_the_run_counts_and_token_aggregates_is_filled_in_at_connect() {
    let pg = Postgres::start();
    let now = String::from_utf8(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap().stdout).unwrap().trim().to_owned();
    let in_a_pod = |id: &str, binary: &str| {
        let body = v1::ProcessExec {
            exec_id: format!("exec-{id}"),
            process_id: format!("proc-{id}"),
            time: now.clone(),
            comm: "app".into(),
            binary: Some(v1::Binary { path: Some(binary.into()), ..Default::default() }),
            workload: Some(v1::Workload { kind: v1::WorkloadKind::KubernetesPod as i32, container_id: Some("c".repeat(64)), ..Default::default() }),
            ..Default::default()
        };
        AgentEvent { id: id.into(), body: EventBody::ProcessExec(body) }
    };
    let issued = v1::TokenIssued { time: now.clone(), jti: "j-1".into(), ttl_seconds: 300, ..Default::default() };
    let denied = v1::TokenDenied { time: now.clone(), reason: v1::DenyReason::UnknownProcess as i32, ..Default::default() };
    let tokens = [AgentEvent { id: "s-5".into(), body: EventBody::TokenIssued(issued) }, AgentEvent { id: "s-6".into(), body: EventBody::TokenDenied(denied) }];
    let store = PostgresStore::connect(&pg.url).unwrap();
    store.ingest_events("node-a", &[in_a_pod("s-1", "/bin/sh"), in_a_pod("s-2", "/bin/sh"), in_a_pod("s-3", "/app")]).unwrap();
    store.ingest_events("node-a", &tokens).unwrap();
    drop(store);
    pg.client()
        .batch_execute(
            "ALTER TABLE runs DROP COLUMN processes, DROP COLUMN binaries; DROP TABLE run_binaries; ALTER TABLE credential_obtained DROP COLUMN stream;
             DROP TRIGGER agg_token ON token_issuances; DROP TRIGGER agg_denial ON token_denials; DROP TABLE agg_tokens, agg_denials;",
        )
        .unwrap();
    let store = PostgresStore::connect(&pg.url).unwrap();
    store.verify_aggregates().expect("counts and token figures filled in from the rows");
    let p = store.query(&sigil_collector::store::Query::Posture).unwrap();
    assert_eq!((p["tokens_issued"].as_i64(), p["mean_token_lifetime_seconds"].as_f64()), (Some(1), Some(300.0)), "{p}");
    assert_eq!(p["denials_by_reason"], serde_json::json!([{"reason": "unknown_process", "count": 1}]));
    store.ingest_events("node-a", &[in_a_pod("s-4", "/bin/curl")]).unwrap();
    store.verify_aggregates().expect("and kept by the next batch");
    let row = pg.client().query_one("SELECT processes, binaries FROM runs", &[]).unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (4, 3));
}

/// An agent's batch can wait on a lock another writer holds: another replica's
/// transaction on the same node's row, say. With one connection per collector, every
/// other agent's batch waited behind it. Batches now go through several connections:
/// another node's batch is stored while the first still waits.
#[test]
fn a_batch_waiting_on_a_lock_does_not_hold_up_other_agents_batches() {
    let pg = Postgres::start();
    let store = std::sync::Arc::new(PostgresStore::connect(&pg.url).unwrap());
    let day = "2026-01-01T10:00:00Z";
    assert_eq!(store.ingest_events("node-a", &[exec("a-0", day)]).unwrap().stored, 1);
    // Another writer, mid-transaction, holds node-a's row.
    let mut other = pg.client();
    let mut tx = other.transaction().unwrap();
    tx.execute("SELECT 1 FROM nodes WHERE node = 'node-a' FOR UPDATE", &[]).unwrap();
    let stuck = {
        let store = store.clone();
        std::thread::spawn(move || store.ingest_events("node-a", &[exec("a-1", day)]).map(|o| o.stored))
    };
    let mut watch = pg.client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while watch.query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'", &[]).unwrap().get::<_, i64>(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "node-a's batch never waited on the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let other_agent = {
        let store = store.clone();
        std::thread::spawn(move || done_tx.send(store.ingest_events("node-b", &[exec("b-1", day)]).map(|o| o.stored)))
    };
    let meanwhile = done_rx.recv_timeout(std::time::Duration::from_secs(20));
    tx.commit().unwrap();
    assert_eq!(meanwhile.expect("node-b's batch waited behind node-a's").unwrap(), 1);
    assert_eq!(stuck.join().unwrap().unwrap(), 1, "node-a's batch is stored once the lock is released");
    other_agent.join().unwrap().unwrap();
}
