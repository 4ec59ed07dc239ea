//! The store against a real SQLite file: node-keyed rows, and correlation that links what
//! each batch newly makes attributable.

use sigil_proto::{EventBody, v1};

use super::SqliteStore;
use crate::{
    cloud::{CloudAction, Provider},
    store::{AgentEvent, Page, Query, Store},
};

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open(&dir.path().join("c.db")).expect("opens");
    (dir, s)
}

fn workload() -> v1::Workload {
    v1::Workload { kind: v1::WorkloadKind::KubernetesPod as i32, container_id: Some("c".repeat(64)), pod_uid: Some("p".into()), ..Default::default() }
}

fn exec(exec_id: &str, binary: &str) -> EventBody {
    EventBody::ProcessExec(v1::ProcessExec {
        exec_id: exec_id.into(),
        process_id: "b:1:1".into(),
        time: "2026-01-01T00:00:00Z".into(),
        pid: 1,
        comm: "app".into(),
        binary: Some(v1::Binary { path: Some(binary.into()), ..Default::default() }),
        cgroup: Some(v1::CgroupInfo { id: 1, path: Some("/kubepods/x".into()) }),
        workload: Some(workload()),
        ..Default::default()
    })
}

fn key_use(exec_id: &str, key: &str, time: &str) -> EventBody {
    EventBody::CredentialUse(v1::CredentialUse {
        time: time.into(),
        process: Some(v1::ProcessRef { exec_id: exec_id.into(), workload: Some(workload()), cgroup_path: Some("/kubepods/x".into()), ..Default::default() }),
        detector: v1::Detector::AwsSigv4 as i32,
        class: v1::CredentialClass::Static as i32,
        fingerprint: format!("fp-{key}"),
        method: "GET".into(),
        path: "/".into(),
        identifiers: Some(v1::Identifiers { access_key_id: Some(key.into()), ..Default::default() }),
        ..Default::default()
    })
}

fn action(id: &str, key: &str, time_unix: i64) -> CloudAction {
    CloudAction {
        provider: Provider::Aws,
        id: id.into(),
        time_unix,
        action: "GetObject".into(),
        service: "s3.amazonaws.com".into(),
        region: None,
        principal: None,
        principal_type: None,
        access_key_id: Some(key.into()),
        source_ip: None,
        user_agent: None,
        error_code: None,
        assumed: None,
        delegation: vec![],
        raw: "{}".into(),
    }
}

fn ev(id: &str, body: EventBody) -> AgentEvent {
    AgentEvent { id: id.into(), body }
}

/// A compromised node replays another node's event ids and exec ids with its own content:
/// it gets rows of its own, and the honest node's rows stay as they were.
#[test]
fn a_compromised_node_reusing_another_nodes_event_and_exec_ids_shadows_none_of_its_rows() {
    let (_d, s) = store();
    let honest = s.ingest_events("node-a", &[ev("s-1", exec("X", "/app/real"))]).expect("ingests");
    assert_eq!(honest.stored, 1);
    let forged = s
        .ingest_events(
            "node-b",
            &[
                ev("s-1", exec("X", "/tmp/evil")),
                ev("s-2", EventBody::ProcessExit(v1::ProcessExit { exec_id: "X".into(), time: "2026-01-01T00:00:05Z".into(), ..Default::default() })),
            ],
        )
        .expect("ingests");
    assert_eq!((forged.stored, forged.duplicates), (2, 0), "node-b's ids are its own, not duplicates of node-a's");
    let rows: Vec<(String, String, Option<i64>)> = s
        .read(|c| {
            let mut st = c.prepare(
                "SELECT n.node, b.s, p.exit_time FROM processes p JOIN nodes n USING (node_id) JOIN strings b ON b.id = p.binary_path ORDER BY n.node",
            )?;
            Ok(st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?)
        })
        .expect("reads");
    assert_eq!(rows, vec![("node-a".into(), "/app/real".into(), None), ("node-b".into(), "/tmp/evil".into(), Some(1_767_225_605))]);
    // A resend from node-a is a duplicate, not a new event.
    assert_eq!(s.ingest_events("node-a", &[ev("s-1", exec("X", "/app/real"))]).expect("ingests").duplicates, 1);
}

/// Correlation looks at what a batch can newly link: an action waits unattributed until a
/// batch brings a use of its key, and is linked then.
#[test]
fn a_cloud_action_is_linked_when_a_later_batch_brings_the_use_of_its_key() {
    let (_d, s) = store();
    let t = 1_767_225_600;
    s.ingest_cloud(&[action("evt-1", "AKIAKEY1", t + 30)]).expect("stores");
    assert!(s.correlate().expect("correlates").is_empty(), "nothing used AKIAKEY1 yet");
    s.ingest_events("node-a", &[ev("s-1", exec("X", "/app"))]).expect("ingests");
    assert!(s.correlate().expect("correlates").is_empty(), "an exec links nothing");
    s.ingest_events("node-a", &[ev("s-2", key_use("X", "AKIAKEY1", "2026-01-01T00:00:10Z"))]).expect("ingests");
    let links = s.correlate().expect("correlates");
    assert_eq!(links.len(), 1);
    assert_eq!((links[0].cloud_action_id.as_str(), links[0].reason), ("evt-1", "access_key_id_in_window"));
    assert_eq!(links[0].run_id, format!("container:{}", "c".repeat(64)));
    let queued: i64 = s.read(|c| Ok(c.query_row("SELECT count(*) FROM correlate_queue", [], |r| r.get(0))?)).expect("reads");
    assert_eq!(queued, 0, "the queue is drained");
    let traced = s.query(&Query::Trace("evt-1".into(), Page::default())).expect("traces");
    assert_eq!(traced["attribution"][0]["credential"]["access_key_id"], "AKIAKEY1");
    assert_eq!(traced["attribution"][0]["processes"][0]["binary_path"], "/app");
    // Already attributed: a further use of the key creates nothing new.
    s.ingest_events("node-a", &[ev("s-3", key_use("X", "AKIAKEY1", "2026-01-01T00:00:20Z"))]).expect("ingests");
    assert!(s.correlate().expect("correlates").is_empty());
}

/// Two pods of one Job are one run: the agent's `run` key names it, on the process record
/// and on the references of later events; a reference without a workload (the signer knows
/// only an exec id) makes up no run.
#[test]
fn the_agents_run_key_groups_a_jobs_pods_and_a_bare_reference_names_no_run() {
    let (_d, s) = store();
    let run = "k8s/batch/job/nightly";
    let in_pod = |exec_id: &str, pod: &str| {
        let EventBody::ProcessExec(mut e) = exec(exec_id, "/app/job") else { unreachable!() };
        e.workload = Some(v1::Workload { pod_uid: Some(pod.into()), container_id: Some(pod.repeat(64)), ..workload() });
        e.run = Some(run.into());
        EventBody::ProcessExec(e)
    };
    let mut used = key_use("X2", "AKIAKEY9", "2026-01-01T00:00:10Z");
    if let EventBody::CredentialUse(u) = &mut used {
        u.process.as_mut().expect("ref").run = Some(run.into());
    }
    let denied = EventBody::TokenDenied(v1::TokenDenied {
        time: "2026-01-01T00:00:11Z".into(),
        reason: v1::DenyReason::NotAllowedOnNode as i32,
        source: Some("signer".into()),
        process: Some(v1::ProcessRef { exec_id: "X1".into(), ..Default::default() }),
        ..Default::default()
    });
    let out = s.ingest_events("node-a", &[ev("s-1", in_pod("X1", "a")), ev("s-2", in_pod("X2", "b")), ev("s-3", used), ev("s-4", denied)]).expect("ingests");
    assert_eq!(out.stored, 4, "{out:?}");
    let r = s.query(&Query::Run(run.into(), Page::default())).expect("the Job's run");
    assert_eq!(r["run"]["run_id"], run, "{r}");
    let what: Vec<&str> = r["timeline"].as_array().expect("timeline").iter().filter_map(|e| e["what"].as_str()).collect();
    assert_eq!(what, ["exec", "exec", "credential_use"], "both pods' execs and the use are in the Job's run: {r}");
    let runs: Vec<String> = s.read(|c| Ok(c.prepare("SELECT run_id FROM runs")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)).expect("reads");
    assert_eq!(runs, [run], "one run, and none made up for the signer's bare reference");
    let denial_run: Option<i64> = s.read(|c| Ok(c.query_row("SELECT rid FROM token_denials", [], |r| r.get(0))?)).expect("reads");
    assert_eq!(denial_run, None);
}

/// An exec of now (retention keeps it).
fn fresh_exec(exec_id: &str) -> EventBody {
    let EventBody::ProcessExec(mut v) = exec(exec_id, "/app") else { unreachable!("exec builds an exec") };
    let now = time::OffsetDateTime::from_unix_timestamp(super::now_unix()).expect("a time");
    v.time = now.format(&time::format_description::well_known::Rfc3339).expect("formats");
    EventBody::ProcessExec(v)
}

/// Retention deletes in steps, each its own transaction: batches keep being stored while
/// it runs, and afterwards the aggregates agree with the uses left.
#[test]
fn ingest_continues_while_retention_deletes_old_data() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let (_d, s) = store();
    let s = Arc::new(s);
    // 20k events of last January: execs and uses of 50 static keys.
    let old: Vec<AgentEvent> = (0..20_000)
        .map(|i| match i % 2 {
            0 => ev(&format!("old-{i}"), exec(&format!("X{i}"), "/app")),
            _ => ev(&format!("old-{i}"), key_use(&format!("X{}", i - 1), &format!("AKIAOLD{}", i % 50), "2026-01-01T00:00:05Z")),
        })
        .collect();
    for chunk in old.chunks(1000) {
        assert_eq!(s.ingest_events("node-a", chunk).expect("ingests").stored, 1000);
    }
    let (started, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let retention = {
        let (s, started, done) = (s.clone(), started.clone(), done.clone());
        std::thread::spawn(move || {
            started.store(true, Ordering::SeqCst);
            let n = s.retain_in_steps(super::now_unix() - 30 * 86_400, 200);
            done.store(true, Ordering::SeqCst);
            n
        })
    };
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let (mut stored, mut during) = (0, 0);
    while !done.load(Ordering::SeqCst) {
        stored += s.ingest_events("node-b", &[ev(&format!("new-{stored}"), fresh_exec(&format!("N{stored}")))]).expect("ingests").stored;
        during += u32::from(!done.load(Ordering::SeqCst));
    }
    let deleted = retention.join().expect("retention thread").expect("retains");
    assert!(deleted >= 20_000, "deleted {deleted}");
    assert!(during >= 3, "only {during} batches were stored while retention ran: it held the store");
    s.verify_aggregates().expect("aggregates agree with the uses left");
    let kept: i64 = s.read(|c| Ok(c.query_row("SELECT count(*) FROM processes", [], |r| r.get(0))?)).expect("reads");
    assert_eq!(kept, i64::from(stored), "every new exec stored, every old one deleted");
    assert!(s.query(&Query::StaticCredentials(Page::default())).expect("answers")["static_credentials"].as_array().expect("a list").is_empty());
}

fn cgroup_ref(exec_id: &str, cgroup: &str) -> v1::ProcessRef {
    v1::ProcessRef {
        exec_id: exec_id.into(),
        workload: Some(v1::Workload { kind: v1::WorkloadKind::Cgroup as i32, ..Default::default() }),
        cgroup_path: Some(cgroup.into()),
        ..Default::default()
    }
}

fn token_use(p: v1::ProcessRef, jti: &str, first: &str, last: &str, count: u64) -> EventBody {
    EventBody::CredentialUse(v1::CredentialUse {
        time: last.into(),
        process: Some(p),
        detector: v1::Detector::BearerJwt as i32,
        class: v1::CredentialClass::SigilIssued as i32,
        fingerprint: "fp-token".into(),
        identifiers: Some(v1::Identifiers { jwt_jti: Some(jti.into()), ..Default::default() }),
        count: (count > 1).then_some(count),
        first_seen: (count > 1).then(|| first.to_owned()),
        last_seen: (count > 1).then(|| last.to_owned()),
        ..Default::default()
    })
}

/// The rules over the real SQLite layout, with hand-made events (the end-to-end tests in
/// tests/tests/findings.rs perform each misuse with real processes).
#[test]
fn a_token_replayed_by_another_run_and_after_its_run_ended_is_found_once_and_its_own_run_is_not() {
    let (_dir, s) = store();
    let exec_a = EventBody::ProcessExec(v1::ProcessExec {
        exec_id: "ea".into(),
        time: "2026-01-01T00:00:00Z".into(),
        workload: Some(v1::Workload { kind: v1::WorkloadKind::Cgroup as i32, ..Default::default() }),
        cgroup: Some(v1::CgroupInfo { id: 1, path: Some("/a".into()) }),
        ..Default::default()
    });
    let issued = EventBody::TokenIssued(v1::TokenIssued {
        time: "2026-01-01T00:00:01Z".into(),
        jti: "j1".into(),
        process: Some(cgroup_ref("ea", "/a")),
        ..Default::default()
    });
    let own = token_use(cgroup_ref("ea", "/a"), "j1", "2026-01-01T00:00:02Z", "2026-01-01T00:00:02Z", 1);
    s.ingest_events("n1", &[ev("s-1", exec_a), ev("s-2", issued), ev("s-3", own)]).expect("stored");
    let found =
        |s: &SqliteStore, kind: Option<&str>| s.query(&Query::Findings { kind: kind.map(str::to_owned), since: None }).expect("query")["findings"].clone();
    assert_eq!(found(&s, None), serde_json::json!([]), "a token used by its own run is no finding");

    // Another run presents it, twice (the second an aggregate), and the batch is resent.
    let stolen = token_use(cgroup_ref("eb", "/b"), "j1", "2026-01-01T00:00:03Z", "2026-01-01T00:00:03Z", 1);
    let again = token_use(cgroup_ref("eb", "/b"), "j1", "2026-01-01T00:00:04Z", "2026-01-01T00:00:09Z", 5);
    let batch = [ev("s-4", stolen), ev("s-5", again)];
    // The outcome names the new finding once (the caller logs it after the commit); the
    // resent batch finds nothing new.
    let first = s.ingest_events("n1", &batch).expect("stored").new_findings;
    assert_eq!(first.iter().map(|f| (f.kind, f.subject.as_str())).collect::<Vec<_>>(), [("FINDING_KIND_TOKEN_REPLAYED", "j1")]);
    assert!(s.ingest_events("n1", &batch).expect("resent").new_findings.is_empty());
    let f = found(&s, Some("token_replayed"));
    assert_eq!(f.as_array().map(Vec::len), Some(1), "{f}");
    assert_eq!(f[0]["subject"], "j1");
    assert_eq!(f[0]["runs"], serde_json::json!(["cgroup:n1:/a", "cgroup:n1:/b"]));
    assert_eq!((f[0]["first_time"].as_str(), f[0]["last_time"].as_str()), (Some("2026-01-01T00:00:03Z"), Some("2026-01-01T00:00:09Z")));
    let ids: Vec<&str> = f[0]["evidence"].as_array().expect("evidence").iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, ["s-2", "s-4", "s-5"]);

    // Run A ends; a use by B whose aggregate runs past the end is a use after the run ended.
    let exit = EventBody::ProcessExit(v1::ProcessExit { exec_id: "ea".into(), time: "2026-01-01T00:00:10Z".into(), ..Default::default() });
    s.ingest_events("n1", &[ev("s-6", exit)]).expect("stored");
    assert!(found(&s, Some("token_used_after_run_ended")).as_array().is_some_and(Vec::is_empty));
    let late = token_use(cgroup_ref("eb", "/b"), "j1", "2026-01-01T00:00:08Z", "2026-01-01T00:00:12Z", 3);
    s.ingest_events("n1", &[ev("s-7", late)]).expect("stored");
    let f = found(&s, Some("token_used_after_run_ended"));
    assert_eq!(f.as_array().map(Vec::len), Some(1), "{f}");
    assert_eq!((f[0]["first_time"].as_str(), f[0]["last_time"].as_str()), (Some("2026-01-01T00:00:10Z"), Some("2026-01-01T00:00:12Z")));
    assert_eq!(s.metrics().expect("metrics")["findings_by_kind"], serde_json::json!({"token_replayed": 1, "token_used_after_run_ended": 1}));
    let since = s.query(&Query::parse("findings", "since=2026-01-01T00:00:11Z").expect("parses")).expect("query");
    assert_eq!(since["findings"].as_array().map(Vec::len), Some(2));
    assert!(Query::parse("findings", "kind=bribery").is_err());
}

/// Now, as RFC 3339 (retention keeps it).
fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::from_unix_timestamp(super::now_unix()).expect("a time");
    now.format(&time::format_description::well_known::Rfc3339).expect("formats")
}

fn count_strings(s: &SqliteStore) -> i64 {
    s.read(|c| Ok(c.query_row("SELECT count(*) FROM strings", [], |r| r.get(0))?)).expect("reads")
}

fn interned(s: &SqliteStore, text: &str) -> bool {
    s.read(|c| Ok(c.query_row("SELECT count(*) FROM strings WHERE s = ?1", [text], |r| r.get::<_, i64>(0))? > 0)).expect("reads")
}

/// Retention removes the interned strings only deleted rows referred to; what it keeps
/// answers exactly as before; and a batch naming a removed string again (the store had it
/// cached) stores it anew instead of pointing at the deleted id.
#[test]
fn retention_prunes_strings_only_deleted_rows_used_and_answers_for_kept_data_stay_the_same() {
    let (_d, s) = store();
    // Last January: 300 execs with binaries of their own, each using a key of its own.
    let old: Vec<AgentEvent> = (0..300)
        .flat_map(|i| {
            [
                ev(&format!("old-{i}"), exec(&format!("OLD{i}"), &format!("/old/bin{i}"))),
                ev(&format!("olduse-{i}"), key_use(&format!("OLD{i}"), &format!("AKIAOLD{i}"), "2026-01-01T00:00:05Z")),
            ]
        })
        .collect();
    assert_eq!(s.ingest_events("node-a", &old).expect("ingests").stored, 600);
    // Now: another pod's process, using a key of its own and running /app.
    let fresh_pod = v1::Workload { container_id: Some("f".repeat(64)), pod_uid: Some("fresh".into()), ..workload() };
    let EventBody::ProcessExec(mut e) = fresh_exec("NEW1") else { unreachable!("an exec") };
    e.workload = Some(fresh_pod.clone());
    let EventBody::CredentialUse(mut u) = key_use("NEW1", "AKIAFRESH", &now_rfc3339()) else { unreachable!("a use") };
    u.process.as_mut().expect("a process").workload = Some(fresh_pod);
    assert_eq!(s.ingest_events("node-a", &[ev("new-1", EventBody::ProcessExec(e)), ev("new-2", EventBody::CredentialUse(u))]).expect("ingests").stored, 2);
    let run = format!("container:{}", "f".repeat(64));
    let asked = [Query::Run(run.clone(), Page::default()), Query::WhoUsed("AKIAFRESH".into())];
    let before: Vec<_> = asked.iter().map(|q| s.query(q).expect("answers")).collect();
    let strings_before = count_strings(&s);

    let deleted = s.retain_in_steps(super::now_unix() - 30 * 86_400, 50).expect("retains");
    assert!(deleted >= 600, "deleted {deleted}");
    let strings_after = count_strings(&s);
    // Each old exec had its own exec id, binary, key and fingerprint.
    assert!(strings_after <= strings_before - 4 * 300, "{strings_before} strings before retention, {strings_after} after");
    assert!(!interned(&s, "/old/bin7") && !interned(&s, "AKIAOLD7") && !interned(&s, "OLD7"));
    assert!(interned(&s, "/app") && interned(&s, "AKIAFRESH") && interned(&s, "NEW1"));
    let after: Vec<_> = asked.iter().map(|q| s.query(q).expect("answers")).collect();
    assert_eq!(before, after, "answers about kept data are unchanged");
    s.verify_aggregates().expect("aggregates agree with the uses left");

    // A pruned string, cached by this store when it was first stored, named again.
    let EventBody::ProcessExec(mut again) = fresh_exec("NEW2") else { unreachable!("an exec") };
    again.binary = Some(v1::Binary { path: Some("/old/bin7".into()), ..Default::default() });
    assert_eq!(s.ingest_events("node-a", &[ev("new-3", EventBody::ProcessExec(again))]).expect("ingests").stored, 1);
    let r = s.query(&Query::Run(format!("container:{}", "c".repeat(64)), Page::default())).expect("the run");
    let paths: Vec<&str> = r["timeline"].as_array().expect("timeline").iter().filter_map(|e| e["detail"]["binary_path"].as_str()).collect();
    assert_eq!(paths, ["/old/bin7"], "{r}");
}

/// A database written by a collector from before `credential_obtained` kept its event id
/// (and before the run counts, the token aggregates and `credential_file_reads.via`)
/// opens, gains the columns and tables, and stores responses again; its older rows keep
/// working.
#[test]
fn a_database_from_before_the_obtained_event_id_and_run_counts_is_upgraded_in_place() {
    let (dir, s) = store();
    let issued = EventBody::TokenIssued(v1::TokenIssued { time: "2026-01-01T00:00:00Z".into(), jti: "j0".into(), ttl_seconds: 300, ..Default::default() });
    let denied =
        EventBody::TokenDenied(v1::TokenDenied { time: "2026-01-01T00:00:00Z".into(), reason: v1::DenyReason::UnknownProcess as i32, ..Default::default() });
    let old = [ev("s-0", exec("e0", "/bin/sh")), ev("s-00", exec("e00", "/bin/sh")), ev("s-01", issued), ev("s-02", denied)];
    s.ingest_events("n1", &old).expect("stores");
    drop(s);
    let path = dir.path().join("c.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("opens");
        conn.execute_batch(
            "ALTER TABLE credential_obtained DROP COLUMN stream; ALTER TABLE credential_obtained DROP COLUMN seq;
             ALTER TABLE runs DROP COLUMN processes; ALTER TABLE runs DROP COLUMN binaries; DROP TABLE run_binaries;
             DROP TABLE agg_tokens; DROP TABLE agg_denials; DROP TRIGGER agg_token_in; DROP TRIGGER agg_token_out;
             DROP TRIGGER agg_denial_in; DROP TRIGGER agg_denial_out;
             DROP VIEW credential_file_reads_v; ALTER TABLE credential_file_reads DROP COLUMN via;
             CREATE VIEW credential_file_reads_v AS SELECT f.rowid AS row, f.time, f.path, f.file_kind, f.rid FROM credential_file_reads f;",
        )
        .expect("old shape");
        conn.execute_batch("INSERT INTO credential_obtained (node_id, time, exchange_kind, format, class, fingerprint, identifier) VALUES (1, 1, 'k', 'f', 'short_lived', 'fp', 'ASIAOLD')")
            .expect("an old row");
    }
    let s = SqliteStore::open(&path).expect("reopens and upgrades");
    let obtained = EventBody::CredentialObtained(v1::CredentialObtained {
        time: "2026-01-01T00:00:00Z".into(),
        process: Some(v1::ProcessRef { exec_id: "e1".into(), workload: Some(workload()), cgroup_path: Some("/kubepods/x".into()), ..Default::default() }),
        exchange_kind: "aws_sts_assume_role_with_web_identity".into(),
        format: "aws_sts_xml".into(),
        identifier: Some("ASIANEW".into()),
        fingerprint: "hmac-sha256:x".into(),
        ..Default::default()
    });
    let read = EventBody::CredentialFileRead(v1::CredentialFileRead {
        time: "2026-01-01T00:00:01Z".into(),
        path: "/root/.aws/credentials".into(),
        file_kind: v1::FileKind::AwsSharedCredentials as i32,
        via: "io_uring".into(),
        ..Default::default()
    });
    s.ingest_events("n1", &[ev("s-1", exec("e1", "/bin/app")), ev("s-2", obtained), ev("s-3", read)]).expect("stores");
    let conn = rusqlite::Connection::open(&path).expect("opens");
    // The file reads gained `via`, and their view was made again with it.
    let via: Option<String> = conn.query_row("SELECT via FROM credential_file_reads_v", [], |r| r.get(0)).expect("one read");
    assert_eq!(via.as_deref(), Some("io_uring"));
    let rows: Vec<(String, Option<i64>)> = conn
        .prepare("SELECT identifier, seq FROM credential_obtained ORDER BY rowid")
        .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("reads");
    assert_eq!(rows, [("ASIAOLD".to_owned(), None), ("ASIANEW".to_owned(), Some(2))]);
    // The run's counts were filled in from its processes, then kept by the new batch.
    s.verify_aggregates().expect("run counts agree with the processes");
    let counts: (i64, i64) = conn.query_row("SELECT processes, binaries FROM runs", [], |r| Ok((r.get(0)?, r.get(1)?))).expect("one run");
    assert_eq!(counts, (3, 2));
    // The token aggregates were filled in from the rows already there.
    let p = s.query(&Query::Posture).expect("posture");
    assert_eq!((p["tokens_issued"].as_i64(), p["mean_token_lifetime_seconds"].as_f64()), (Some(1), Some(300.0)), "{p}");
    assert_eq!(p["denials_by_reason"], serde_json::json!([{"reason": "unknown_process", "count": 1}]));
}

fn temporary_use(exec_id: &str, key: &str, time: &str) -> EventBody {
    let EventBody::CredentialUse(mut u) = key_use(exec_id, key, time) else { unreachable!() };
    u.class = v1::CredentialClass::ShortLived as i32;
    EventBody::CredentialUse(u)
}

/// The SQL of every statement on `s`'s connection that SQLite had to prepare again since
/// it was first prepared (a statement whose plan depends on its bindings is re-prepared
/// on every step with new ones).
fn reprepared(s: &SqliteStore) -> Vec<(String, i32)> {
    use rusqlite::ffi;
    let guard = s.inner.lock().expect("lock");
    let mut out = Vec::new();
    // SAFETY: the handle is this connection's, held under its lock for the whole walk;
    // `sqlite3_next_stmt` and `sqlite3_sql` only read statements the connection owns.
    unsafe {
        let db = guard.conn.handle();
        let mut st = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
        while !st.is_null() {
            let n = ffi::sqlite3_stmt_status(st, ffi::SQLITE_STMTSTATUS_REPREPARE, 0);
            if n > 0 {
                out.push((std::ffi::CStr::from_ptr(ffi::sqlite3_sql(st)).to_string_lossy().into_owned(), n));
            }
            st = ffi::sqlite3_next_stmt(db, st);
        }
    }
    out
}

/// Batches with new values every time (exits, temporary and static keys, file reads, cloud
/// actions to correlate) run on statements prepared once: none is re-prepared per binding.
#[test]
fn the_ingest_statements_are_prepared_once_whatever_their_bindings() {
    let (_d, s) = store();
    for i in 0..4 {
        let t = format!("2026-01-01T00:00:0{i}Z");
        let batch = [
            ev(&format!("s-{}", 10 * i), exec(&format!("E{i}"), &format!("/bin/app{i}"))),
            ev(&format!("s-{}", 10 * i + 1), temporary_use(&format!("E{i}"), &format!("ASIA{i:016}"), &t)),
            ev(&format!("s-{}", 10 * i + 2), key_use(&format!("E{i}"), &format!("AKIA{i:016}"), &t)),
            ev(&format!("s-{}", 10 * i + 3), EventBody::ProcessExit(v1::ProcessExit { exec_id: format!("E{i}"), time: t.clone(), ..Default::default() })),
        ];
        s.ingest_and_correlate("node-a".into(), batch.to_vec()).expect("ingests");
        s.ingest_cloud(&[action(&format!("a{i}"), &format!("AKIA{i:016}"), 1_767_225_600 + i)]).expect("cloud");
        s.ingest_and_correlate("node-a".into(), vec![ev(&format!("t-{i}"), key_use("E0", &format!("AKIA{i:016}"), &t))]).expect("ingests");
    }
    assert_eq!(reprepared(&s), Vec::<(String, i32)>::new());
}

/// A responder runs `sigil-collector ingest cloudtrail` against the file the serving
/// collector writes: two processes, two connections. A write transaction that began with a
/// read (correlation reads its queue first) used to fail at once with "database is locked"
/// when the other connection committed in between (SQLite cannot move a reader's snapshot
/// forward, so its busy timeout never applies); the import then failed. Write transactions
/// take the write lock when they begin, and wait for it.
#[test]
fn an_import_and_the_serving_collector_write_one_file_without_locking_each_other_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("c.db");
    let (serving, import) = (SqliteStore::open(&path).expect("opens"), SqliteStore::open(&path).expect("opens again"));
    std::thread::scope(|scope| {
        let pushes = scope.spawn(|| {
            for i in 0..1200 {
                let batch = [
                    ev(&format!("s-{i}"), exec(&format!("E{i}"), "/app")),
                    ev(&format!("u-{i}"), key_use(&format!("E{i}"), &format!("AKIAPUSH{i}"), "2026-01-01T00:00:01Z")),
                ];
                serving.ingest_and_correlate("node-a".into(), batch.to_vec()).expect("a pushed batch is stored");
            }
        });
        for i in 0..300 {
            let records: Vec<CloudAction> = (0..50).map(|j| action(&format!("ct-{i}-{j}"), &format!("AKIAPUSH{}", i * 4 + j % 4), 1_767_225_601)).collect();
            import.ingest_cloud(&records).expect("imported records are stored");
            import.correlate().expect("the import correlates");
        }
        pushes.join().expect("the pushing thread");
    });
    let linked: i64 = import.read(|c| Ok(c.query_row("SELECT count(*) FROM links", [], |r| r.get(0))?)).expect("reads");
    assert!(linked > 0, "the imported actions were attributed");
}

/// Checkpoints run on the store's own thread while batches keep committing, and the WAL
/// still starts over: a background checkpoint racing a busy writer never copies every
/// frame, so without the writer's catch-up pass the WAL file grew without bound.
#[test]
fn checkpoints_run_beside_the_writer_and_the_wal_stays_bounded() {
    const PAGES: i32 = 10_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open_checkpointing_at(&dir.path().join("c.db"), PAGES).expect("opens");
    let wal = dir.path().join("c.db-wal");
    let largest = std::sync::atomic::AtomicU64::new(0);
    // Two agents pushing at once keep the writer busy, as a fleet does. Unique paths and
    // exec ids: every batch dirties fresh pages.
    std::thread::scope(|scope| {
        for agent in 0..2 {
            let (s, wal, largest) = (&s, &wal, &largest);
            scope.spawn(move || {
                for b in 0..60 {
                    let batch: Vec<AgentEvent> = (0..1000)
                        .map(|i| ev(&format!("w-{b}-{i}"), exec(&format!("W{b}x{i}"), &format!("/opt/app-{agent}-{b}-{i}/bin/{}", "x".repeat(200)))))
                        .collect();
                    let (out, _) = s.ingest_and_correlate(format!("node-{agent}"), batch).expect("ingests");
                    assert_eq!(out.stored, 1000);
                    largest.fetch_max(std::fs::metadata(wal).map_or(0, |m| m.len()), std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let largest = largest.into_inner();
    let passes = s.checkpointer.as_ref().expect("a checkpoint thread").passes();
    assert!(passes >= 1, "the background thread never checkpointed");
    // The writer's catch-up threshold, plus what one group of two batches can add past it.
    let bound = (super::checkpoint::Checkpointer::writer_bound(PAGES) as u64 + 2_000) * 4096;
    assert!(largest <= bound, "the WAL reached {largest} bytes (bound {bound}) after {passes} background checkpoints");
}

/// With `synchronous = NORMAL` SQLite syncs the WAL only at checkpoints, so a machine crash
/// could take every batch since the last one, however long ago. The store's thread syncs
/// the WAL within a second of a commit, and not at all while nothing is committed.
#[test]
fn a_commit_is_synced_within_about_a_second_and_an_idle_store_is_not() {
    let (_dir, s) = store();
    let syncs = || s.checkpointer.as_ref().expect("a checkpoint thread").syncs();
    s.ingest_events("node-a", &[ev("d-1", exec("D1", "/app"))]).expect("stored");
    let deadline = std::time::Instant::now() + 5 * super::checkpoint::SYNC_EVERY;
    while syncs() == 0 {
        assert!(std::time::Instant::now() < deadline, "the commit was not synced");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let after = syncs();
    std::thread::sleep(super::checkpoint::SYNC_EVERY * 2 + std::time::Duration::from_millis(500));
    assert_eq!(syncs(), after, "synced with nothing new committed");
    s.ingest_events("node-a", &[ev("d-2", exec("D2", "/app"))]).expect("stored");
    let deadline = std::time::Instant::now() + 5 * super::checkpoint::SYNC_EVERY;
    while syncs() == after {
        assert!(std::time::Instant::now() < deadline, "the second commit was not synced");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
