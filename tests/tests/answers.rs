#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Answers that stay small at any scale, on both backends (a real SQLite file, a real
//! PostgreSQL server): `run` and `trace` answer a summary and one page of their list,
//! with exact counts and a cursor; paging lists every entry exactly once, in order, as
//! one big page would; `sigil` says how many were left out and prints the command that
//! pages on. The posture figures about cloud actions come from aggregates the stores'
//! triggers keep through import, correlation, link deletion and retention.

use std::{collections::BTreeSet, fs, path::Path};

use serde_json::Value;
use sigil_collector::{
    cloud::cloudtrail,
    store::{self, AgentEvent, Page, Query, StoreError, sqlite::now_unix},
};
use sigil_proto::{EventBody, v1};
use sigil_tests::{
    Collector,
    postgres::{Backend, Db},
    scratch_dir,
};

const KEY: &str = "AKIAPAGINGTEST000001";
const OTHER_KEY: &str = "AKIAPAGINGTEST000002";
const BINARIES: [&str; 3] = ["/usr/bin/python3", "/bin/sh", "/usr/bin/curl"];

/// 2026-01-01 at minute `m`, second `s` (UTC).
fn at(m: u32, s: u32) -> String {
    format!("2026-01-01T00:{m:02}:{s:02}Z")
}

fn workload(pod: &str) -> v1::Workload {
    v1::Workload { kind: v1::WorkloadKind::KubernetesPod as i32, pod_uid: Some(pod.into()), container_id: Some(format!("ctr-{pod}")), ..Default::default() }
}

fn process(pod: &str, n: usize) -> v1::ProcessRef {
    v1::ProcessRef {
        exec_id: format!("exec-{pod}-{n}"),
        process_id: format!("proc-{pod}-{n}"),
        pid: 100 + n as u32,
        workload: Some(workload(pod)),
        cgroup_path: Some(format!("/kubepods/{pod}")),
        ..Default::default()
    }
}

fn exec(pod: &str, n: usize, time: &str) -> EventBody {
    EventBody::ProcessExec(v1::ProcessExec {
        exec_id: format!("exec-{pod}-{n}"),
        process_id: format!("proc-{pod}-{n}"),
        pid: 100 + n as u32,
        time: time.into(),
        comm: "app".into(),
        binary: Some(v1::Binary { path: Some(BINARIES[n % 3].into()), sha256: Some(format!("{n:064x}")), ..Default::default() }),
        cgroup: Some(v1::CgroupInfo { id: 1, path: Some(format!("/kubepods/{pod}")) }),
        workload: Some(workload(pod)),
        ancestry: vec![v1::Ancestor { pid: 1, exec_id: "init".into(), comm: "containerd-shim".into(), binary_path: None }],
        ..Default::default()
    })
}

fn key_use(pod: &str, n: usize, key: &str, time: &str) -> EventBody {
    EventBody::CredentialUse(v1::CredentialUse {
        time: time.into(),
        process: Some(process(pod, n)),
        detector: v1::Detector::AwsSigv4 as i32,
        class: v1::CredentialClass::Static as i32,
        fingerprint: format!("fp-{key}"),
        method: "GET".into(),
        path: format!("/object-{n}"),
        identifiers: Some(v1::Identifiers { access_key_id: Some(key.into()), ..Default::default() }),
        ..Default::default()
    })
}

/// Run A (pod `pa`): 12 execs (6 in one second), 4 exits in one second, 5 uses of KEY
/// (3 in one second), 2 tokens issued, 2 identical denials in one second, a credential
/// file read. Runs B and C: 2 execs and one use of KEY each, and uses of 3 and 4 other
/// long-lived keys.
fn events() -> Vec<AgentEvent> {
    let mut b = Vec::new();
    for n in 0..12 {
        b.push(exec("pa", n, &if n < 6 { at(0, 0) } else { at(0, 10 + n as u32) }));
    }
    for n in 0..4 {
        b.push(EventBody::ProcessExit(v1::ProcessExit {
            exec_id: format!("exec-pa-{n}"),
            process_id: format!("proc-pa-{n}"),
            time: at(3, 0),
            pid: 100 + n as u32,
            ..Default::default()
        }));
    }
    for n in 0..5 {
        b.push(key_use("pa", 6 + n, KEY, &if n < 3 { at(1, 0) } else { at(2, n as u32) }));
    }
    for n in 0..2 {
        b.push(EventBody::TokenIssued(v1::TokenIssued {
            time: at(0, 30),
            jti: format!("jti-pa-{n}"),
            spiffe_id: "spiffe://sigil.test/pa".into(),
            audience: vec!["sts.amazonaws.com".into()],
            issued_at: 1_767_225_630,
            expires_at: 1_767_225_930,
            ttl_seconds: 300,
            process: Some(process("pa", 7)),
            ..Default::default()
        }));
        b.push(EventBody::TokenDenied(v1::TokenDenied {
            time: at(0, 40),
            reason: v1::DenyReason::BinaryHashMismatch as i32,
            detail: "digest differs".into(),
            process: Some(process("pa", 8)),
            ..Default::default()
        }));
    }
    b.push(EventBody::CredentialFileRead(v1::CredentialFileRead {
        time: at(0, 50),
        process: Some(process("pa", 9)),
        path: "/root/.aws/credentials".into(),
        file_kind: v1::FileKind::AwsSharedCredentials as i32,
        access: "read".into(),
        via: "io_uring".into(),
        ..Default::default()
    }));
    for (i, pod) in ["pb", "pc"].into_iter().enumerate() {
        b.push(exec(pod, 0, &at(2, 0)));
        b.push(exec(pod, 1, &at(2, 10)));
        b.push(key_use(pod, 1, KEY, &at(2, 30)));
        // More long-lived keys, for static-credentials to page over (never used in the
        // window of a cloud action here).
        for k in 0..3 + i {
            b.push(key_use(pod, 0, &format!("AKIASTATICPAGE{k:06}"), &at(9, 0)));
        }
    }
    b.into_iter().enumerate().map(|(i, body)| AgentEvent { id: format!("s-{i}"), body }).collect()
}

/// CloudTrail records of three calls with KEY (each attributable to runs A, B and C) and
/// one with a key no run used.
fn cloudtrail_file(dir: &Path) -> std::path::PathBuf {
    let record = |id: &str, key: &str| {
        serde_json::json!({
            "eventVersion": "1.10", "eventID": id, "eventTime": at(5, 0), "eventSource": "s3.amazonaws.com", "eventName": "GetObject",
            "awsRegion": "us-east-1", "sourceIPAddress": "52.216.1.1", "userAgent": "aws-cli/2.17", "eventType": "AwsApiCall",
            "userIdentity": {"type": "IAMUser", "principalId": "AIDAPAGING", "arn": "arn:aws:iam::111122223333:user/paging", "accountId": "111122223333", "accessKeyId": key},
        })
    };
    let records = vec![record("page-0", KEY), record("page-1", KEY), record("page-2", KEY), record("page-lone", OTHER_KEY)];
    let path = dir.join("trail.json");
    fs::write(&path, serde_json::json!({ "Records": records }).to_string()).unwrap();
    path
}

fn page(limit: usize, after: Option<&str>) -> Page {
    Page { limit: Some(limit), after: after.map(str::to_owned) }
}

/// Pages through `query(page)` `limit` entries at a time; checks each page's counts and
/// returns the entries of all pages in order.
fn all_pages(limit: usize, list: &str, total: i64, query: impl Fn(Page) -> Value) -> Vec<Value> {
    let (mut seen, mut after) = (Vec::new(), None::<String>);
    loop {
        let v = query(page(limit, after.as_deref()));
        let entries = v[list].as_array().unwrap().clone();
        assert!(entries.len() <= limit, "a page holds at most its limit: {v}");
        seen.extend(entries);
        assert_eq!(v["left_out"].as_i64().unwrap(), total - seen.len() as i64, "left_out counts what comes after the page: {v}");
        match v["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
        assert!(seen.len() as i64 <= total, "paging must end");
    }
    seen
}

fn paging_lists_every_entry_once(backend: Backend) {
    let dir = scratch_dir();
    let db = Db::new(backend, &dir);
    let arg = db.arg.display().to_string();
    let store = store::open(&arg).unwrap();
    let out = store.ingest_events("node-a", &events()).unwrap();
    assert_eq!((out.stored, out.rejected), (events().len() as u32, 0), "{out:?}");
    let parsed = cloudtrail::parse_path(&cloudtrail_file(&dir)).unwrap();
    assert_eq!(store.ingest_cloud(&parsed.actions).unwrap().stored, 4);
    store.correlate().unwrap();
    store.verify_aggregates().unwrap();

    // The run in one big page: the reference.
    let run_a = "container:ctr-pa";
    let full = store.query(&Query::Run(run_a.into(), page(1000, None))).unwrap();
    let by_kind = &full["entries_by_kind"];
    let expected = [
        ("exec", 12),
        ("exit", 4),
        ("token_issued", 2),
        ("token_denied", 2),
        ("credential_use", 5),
        ("credential_file_read", 1),
        ("credential_obtained", 0),
        ("cloud_action", 3),
    ];
    for (kind, n) in expected {
        assert_eq!(by_kind[kind], n, "{kind}: {full}");
    }
    let total = full["timeline_entries"].as_i64().unwrap();
    assert_eq!(total, 29);
    let timeline = full["timeline"].as_array().unwrap().clone();
    assert_eq!(timeline.len() as i64, total);
    assert!(full.get("next").is_none() && full["left_out"] == 0, "{full}");
    // How the file was opened is kept and answered.
    let read = timeline.iter().find(|e| e["what"] == "credential_file_read").unwrap();
    assert_eq!(read["detail"]["via"], "io_uring", "{read}");
    let times: Vec<i64> = timeline.iter().map(|e| e["time"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order: {times:?}");
    let s = &full["summary"];
    assert_eq!(
        (s["processes"].as_i64(), s["binaries"].as_i64(), s["credential_uses"].as_i64(), s["cloud_actions"].as_i64()),
        (Some(12), Some(3), Some(5), Some(3)),
        "{s}"
    );
    assert_eq!((s["first"].as_i64(), s["last"].as_i64()), (Some(1_767_225_600), Some(1_767_225_900)), "first exec, last cloud action: {s}");

    // Pages of 4 (pages split the seconds holding 6 execs, 4 exits, 3 uses and two
    // identical denials): every entry once, in the same order.
    let paged = all_pages(4, "timeline", total, |p| store.query(&Query::Run(run_a.into(), p)).unwrap());
    assert_eq!(paged, timeline, "the pages together are the whole timeline");
    // The default page holds all 29 (at most 100); a page of 1 still walks them all.
    assert_eq!(store.query(&Query::Run(run_a.into(), Page::default())).unwrap()["timeline"], full["timeline"]);
    assert_eq!(all_pages(1, "timeline", total, |p| store.query(&Query::Run(run_a.into(), p)).unwrap()), timeline);

    // A cursor the collector did not write is refused, not guessed at.
    for bad in ["yesterday", "1.2", "1.2.x"] {
        let e = store.query(&Query::Run(run_a.into(), page(4, Some(bad)))).unwrap_err();
        assert!(matches!(e, StoreError::BadArgument(_)), "{bad}: {e}");
    }
    assert!(Query::parse_paged("posture", "", page(4, None)).is_err(), "posture does not page");
    assert!(Page::new(Some(5000), None).is_err(), "a page has at most 1000 entries");

    // A trace: three runs used KEY in the window; pages of 2 list each run once.
    let trace = store.query(&Query::Trace("page-0".into(), page(1000, None))).unwrap();
    assert_eq!((trace["links"].as_i64(), trace["attributed"].as_bool()), (Some(3), Some(true)), "{trace}");
    let attributions = trace["attribution"].as_array().unwrap().clone();
    let paged = all_pages(2, "attribution", 3, |p| store.query(&Query::Trace("page-0".into(), p)).unwrap());
    assert_eq!(paged, attributions);
    let runs: BTreeSet<&str> = paged.iter().filter_map(|a| a["run"]["run_id"].as_str()).collect();
    assert_eq!(runs, BTreeSet::from(["container:ctr-pa", "container:ctr-pb", "container:ctr-pc"]));
    let a = paged.iter().find(|a| a["run"]["run_id"] == run_a).unwrap();
    assert_eq!(a["summary"], full["summary"], "a linked run's summary is the run's: {a}");
    // The process whose use linked it (one of A's key users), with its ancestry; five of
    // A's twelve processes, and the count of the rest.
    assert!(a["process"]["exec_id"].as_str().unwrap().starts_with("exec-pa-"), "{a}");
    assert_eq!(a["process"]["ancestry"][0]["comm"], "containerd-shim", "{a}");
    assert_eq!((a["processes"].as_array().unwrap().len(), a["processes_left_out"].as_i64()), (5, Some(7)), "{a}");
    assert_eq!(store.query(&Query::Trace("page-lone".into(), Page::default())).unwrap()["attributed"], false);

    // static-credentials: KEY (3 runs), three keys B and C both used (2 runs), one only C
    // used; pages of 2 list each once, most shared first.
    let statics = store.query(&Query::StaticCredentials(page(1000, None))).unwrap();
    assert_eq!(statics["credentials"], 5, "{statics}");
    let all = statics["static_credentials"].as_array().unwrap().clone();
    assert_eq!(all.len(), 5);
    assert_eq!((all[0]["access_key_id"].as_str(), all[0]["runs"].as_i64()), (Some(KEY), Some(3)), "{statics}");
    assert_eq!(all_pages(2, "static_credentials", 5, |p| store.query(&Query::StaticCredentials(p)).unwrap()), all);
    assert_eq!(store.query(&Query::Posture).unwrap()["long_lived_credentials_in_use"], 5);

    // Posture from the aggregates: 4 actions, 3 attributed, linked when correlated.
    let p = store.query(&Query::Posture).unwrap();
    assert_eq!((p["cloud_actions"].as_i64(), p["cloud_actions_attributed"].as_i64()), (Some(4), Some(3)), "{p}");
    assert!(p["median_seconds_to_attribute"].as_i64().is_some_and(|d| (0..60).contains(&d)), "{p}");
    assert_eq!(store.metrics().unwrap()["links_by_reason"]["access_key_id_in_window"], 9);

    // `sigil` against a collector serving this store: the text says how many were left
    // out and prints the command for the next page, which shows the next entries.
    // (No retention at start-up: these events are from January.)
    let collector = Collector::start_with(&db.arg, 0, 0, &["--retention-days", "0"]);
    let text = collector.sigil_text(&["run", run_a, "--limit", "4"]);
    assert!(text.contains("29 timeline entries"), "{text}");
    let hint = text.lines().find(|l| l.contains("25 more timeline entries not shown; next page: ")).unwrap_or_else(|| panic!("{text}"));
    let command: Vec<&str> = hint.split("next page: ").nth(1).unwrap().split_whitespace().collect();
    assert_eq!(command[..5], ["sigil", "run", run_a, "--limit", "4"], "{hint}");
    let second = collector.sigil(&command[1..]);
    assert_eq!(second["timeline"].as_array().unwrap()[..], timeline[4..8], "the printed command shows the next page");
    let traced = collector.sigil_text(&["trace", "page-0", "--limit", "1"]);
    assert!(
        traced.contains("linked to 3 run(s)") && traced.contains("2 more linked runs not shown; next page: sigil trace page-0 --limit 1 --after "),
        "{traced}"
    );
    assert!(traced.contains("more processes not shown; all of them: sigil run container:ctr-p"), "{traced}");
    drop(collector);

    // A link deleted while its action stays, then retention of everything: the
    // aggregates follow (checked against a computation from scratch each time).
    match &db.pg {
        None => {
            rusqlite::Connection::open(&db.arg).unwrap().execute("DELETE FROM links WHERE cloud_action_id = 'page-1'", []).unwrap();
        }
        Some(pg) => {
            pg.client().execute("DELETE FROM links WHERE cloud_action_id = 'page-1'", &[]).unwrap();
        }
    }
    store.verify_aggregates().unwrap();
    assert_eq!(store.query(&Query::Posture).unwrap()["cloud_actions_attributed"], 2);
    assert!(store.retain(now_unix() + 3600).unwrap() > 0);
    store.verify_aggregates().unwrap();
    let p = store.query(&Query::Posture).unwrap();
    assert_eq!(
        (p["cloud_actions"].as_i64(), p["cloud_actions_attributed"].as_i64(), p["median_seconds_to_attribute"].is_null()),
        (Some(0), Some(0), true),
        "{p}"
    );
    let _ = fs::remove_dir_all(dir);
}

sigil_tests::on_both_backends!(paging_over_a_run_and_a_trace_lists_every_entry_exactly_once, paging_lists_every_entry_once);
