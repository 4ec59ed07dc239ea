#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! The collector end to end: real agent -> real gRPC -> a real store; CloudTrail records
//! in the real format; attribution asked through the `sigil` CLI. The attribution suite
//! runs once on the embedded SQLite store and once on a real PostgreSQL server, with the
//! same assertions.

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;
use sigil_tests::{
    postgres::{Backend, Db, stored_execs},
    *,
};

const POD_A: &str = "aaaaaaaa-1111-4111-8111-aaaaaaaaaaaa";
const POD_B: &str = "bbbbbbbb-2222-4222-8222-bbbbbbbbbbbb";
const CTR_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const CTR_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const AKIA: &str = "AKIASIGILE2E0000001";
const ASIA: &str = "ASIASIGILE2E0000002";

fn pod(uid: &str, ctr: &str) -> String {
    format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ctr}.scope", uid.replace('-', "_"))
}

fn now_rfc3339() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// CloudTrail records in the delivered format for what the two workloads did, plus one
/// call nobody on this node made (the template the demo uses too).
fn cloudtrail(jti: &str, spiffe_id: &str, issuer_host: &str) -> String {
    let tmpl = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/cloudtrail-story.json.tmpl")).unwrap();
    tmpl.replace("{{TIME}}", &now_rfc3339())
        .replace("{{AKIA}}", AKIA)
        .replace("{{ASIA}}", ASIA)
        .replace("{{JTI}}", jti)
        .replace("{{SPIFFE_ID}}", spiffe_id)
        .replace("{{ISSUER_HOST}}", issuer_host)
}

on_both_backends!(cloud_actions_are_traced_to_the_runs_that_made_them_and_survive_a_restart, story);
/// The story's workloads live in fixed pod cgroups (the CloudTrail template names them):
/// its two backends run one after the other.
static STORY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn story(backend: Backend) {
    let _one_at_a_time = STORY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch_dir();
    let db = Db::new(backend, &dir);
    let collector = Collector::start(&db.arg);
    let client = unique_client(&dir, "checkout");
    let rogue = unique_client(&dir, "rogue");
    let selectors = [format!("k8s:pod-uid:{POD_B}"), format!("unix:sha256:{}", sha256sum(&client))];
    let Issuer { agent, socket, oidc } = Issuer::start(&dir, "spiffe://sigil.test/checkout", 300, &selectors, &["--collector", &collector.grpc]);
    agent.stderr.wait_line("TLS capture", |l| l.contains("TLS capture attached") && l.contains("libssl"));
    let server = LocalServer::start(Some(&dir));
    let endpoint = format!("https://127.0.0.1:{}", server.port);
    let script = python_script("aws_client.py").display().to_string();

    // Workload A: a long-lived key.
    let a = TestCgroup::create(&pod(POD_A, CTR_A));
    assert_eq!(a.run(&python(), &[&script, &endpoint, AKIA, "PLANTEDstaticSECRETkey0000000000000000001"]).1, "SENT");
    // Workload B: a Sigil token, exchanged (out of band) for temporary credentials.
    let b = TestCgroup::create(&pod(POD_B, CTR_B));
    let (code, _, err) = b.run(&client, &["token", "--audience", "sts.amazonaws.com", "--socket", &socket.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    let issued = agent.wait_event("token_issued", |v| v["kind"] == "token_issued");
    let jti = issued["jti"].as_str().unwrap().to_owned();
    assert_eq!(b.run(&python(), &[&script, &endpoint, ASIA, "PLANTEDtempSECRETkey000000000000000000002", "PLANTEDsessionTOKEN"]).1, "SENT");
    // And one refused request, for the posture figures.
    assert_ne!(b.run(&rogue, &["token", "--audience", "sts.amazonaws.com", "--socket", &socket.display().to_string()]).0, 0);

    collector.wait_for("both credential uses stored", &["posture"], |v| v["runs_using_credentials"] == 2 && v["tokens_issued"] == 1);
    let trail = dir.join("trail.json");
    fs::write(&trail, cloudtrail(&jti, "spiffe://sigil.test/checkout", &oidc)).unwrap();
    let out = Command::new(sibling_bin("sigil-collector")).arg("--db").arg(&collector.db).args(["ingest", "cloudtrail"]).arg(&trail).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ingested 4 cloud actions"), "{}", String::from_utf8_lossy(&out.stdout));

    let check = |c: &Collector| {
        let t = c.sigil(&["trace", "ct-static-1"]);
        let at = &t["attribution"][0];
        assert_eq!(at["run"]["run_id"], format!("container:{CTR_A}"));
        assert_eq!(at["run"]["pod_uid"], POD_A);
        assert_eq!(at["reason"], "access_key_id_in_window");
        assert_eq!(at["credential"]["class"], "static");
        assert_eq!(at["credential"]["access_key_id"], AKIA);
        assert!(at["processes"].as_array().unwrap().iter().any(|p| p["binary_path"].as_str().unwrap().contains("python")));
        assert!(at["obtained"]["how"].as_str().unwrap().contains("long-lived"));

        let t = c.sigil(&["trace", "ct-assume-2"]);
        assert_eq!(t["attribution"][0]["run"]["run_id"], format!("container:{CTR_B}"));
        assert_eq!(t["attribution"][0]["reason"], "web_identity_token_jti");
        assert_eq!(t["attribution"][0]["obtained"]["token"]["jti"], jti.as_str());

        let t = c.sigil(&["trace", "ct-temp-3"]);
        assert_eq!(t["attribution"][0]["run"]["run_id"], format!("container:{CTR_B}"));
        assert_eq!(t["attribution"][0]["reason"], "temporary_key_from_attributed_assume_role");
        assert_eq!(c.sigil(&["trace", "ct-unknown-4"])["attributed"], false);

        let unattributed = c.sigil(&["unattributed"]);
        let ids: Vec<&str> = unattributed["unattributed"].as_array().unwrap().iter().filter_map(|a| a["id"].as_str()).collect();
        assert_eq!(ids, ["ct-unknown-4"]);

        let statics = c.sigil(&["static-credentials"]);
        let s = &statics["static_credentials"];
        assert_eq!(s.as_array().unwrap().len(), 1);
        assert_eq!(s[0]["access_key_id"], AKIA);
        assert_eq!(s[0]["runs"], 1);
        assert_eq!(s[0]["run_ids"], format!("container:{CTR_A}"));

        let p = c.sigil(&["posture"]);
        assert_eq!(p["runs_using_credentials"], 2);
        assert_eq!(p["runs_using_only_short_lived_credentials"], 1);
        assert_eq!(p["share_of_runs_short_lived_only"], 0.5);
        assert_eq!(p["long_lived_credentials_in_use"], 1);
        assert_eq!(p["tokens_issued"], 1);
        assert_eq!(p["mean_token_lifetime_seconds"], 300.0);
        assert_eq!(p["denials_by_reason"], json!([{"reason": "binary_hash_mismatch", "count": 1}]));
        assert_eq!(p["cloud_actions"], 4);
        assert_eq!(p["cloud_actions_attributed"], 3);

        let who = c.sigil(&["who-used", AKIA]);
        assert_eq!(who["runs"][0]["run_id"], format!("container:{CTR_A}"));
        let timeline = c.sigil(&["run", &format!("container:{CTR_B}")]);
        let whats: Vec<&str> = timeline["timeline"].as_array().unwrap().iter().filter_map(|e| e["what"].as_str()).collect();
        for w in ["exec", "token_issued", "token_denied", "credential_use", "cloud_action"] {
            assert!(whats.contains(&w), "timeline lacks {w}: {whats:?}");
        }
    };
    check(&collector);
    // A readable answer for people too.
    let text = collector.sigil_text(&["trace", "ct-static-1"]);
    assert!(text.contains(CTR_A) && text.contains(AKIA), "{text}");

    // Restart: everything stored before still answers.
    let (g, h) = collector.ports();
    collector.kill();
    let collector = Collector::start_on(&db.arg, g, h);
    check(&collector);

    // Planted secrets are in no agent output and nowhere in the collector's database.
    let db_bytes = db.bytes();
    for secret in ["PLANTEDstaticSECRETkey0000000000000000001", "PLANTEDtempSECRETkey000000000000000000002", "PLANTEDsessionTOKEN"] {
        assert!(!db_bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in the collector database");
        assert!(agent.stdout.snapshot().iter().all(|l| !l.contains(secret)));
    }
    drop(server);
    let _ = fs::remove_dir_all(dir);
}

on_both_backends!(every_event_arrives_exactly_once_across_a_collector_crash, exactly_once);
fn exactly_once(backend: Backend) {
    let dir = scratch_dir();
    let db = Db::new(backend, &dir);
    let collector = Collector::start(&db.arg);
    let (g, h) = collector.ports();
    let agent = Agent::start(&["--collector", &collector.grpc, "--state-dir", &dir.join("state").display().to_string(), "--no-trace"]);
    let cg = TestCgroup::create("exactly-once.slice/load.scope");
    // A workload exec'ing steadily for ~6 s while the collector dies and comes back.
    let mut load = cg.spawn(Path::new("/bin/sh"), &["-c", "i=0; while [ $i -lt 300 ]; do /bin/true; sleep 0.02; i=$((i+1)); done"]);
    std::thread::sleep(Duration::from_millis(1500));
    collector.kill();
    std::thread::sleep(Duration::from_secs(2));
    let collector = Collector::start_on(&db.arg, g, h);
    assert!(load.wait().unwrap().success());

    let emitted = |agent: &Agent| agent.events().iter().filter(|v| v["kind"] == "process_exec" && v["cgroup"]["path"] == cg.path.as_str()).count();
    // Every exec the agent reported must reach the database once: wait for the spool to drain.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (total, distinct) = loop {
        let counts = stored_execs(&db, &cg.path);
        if counts.0 as usize >= emitted(&agent) || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let n = emitted(&agent);
    assert!(n >= 250, "the workload exec'd ~301 times, the agent reported {n}");
    assert_eq!(total as usize, n, "stored exactly the events the agent emitted");
    assert_eq!(distinct, total, "no event stored twice");
    let stats = agent.wait_event("agent_stats after the outage", |v| {
        v["kind"] == "agent_stats" && v["export"]["send_errors"].as_u64().unwrap_or(0) > 0 && v["export"]["spool"]["depth_events"] == 0
    });
    assert_eq!(stats["export"]["spool"]["dropped_total"], 0);
    drop(collector);
    let _ = fs::remove_dir_all(dir);
}

on_both_backends!(malformed_cloudtrail_files_report_each_bad_record_and_keep_the_rest, malformed_cloudtrail);
fn malformed_cloudtrail(backend: Backend) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/tests/data/cloudtrail");
    for (file, stored, errors, needles) in [
        ("truncated.json", 2, 1, vec!["byte", "truncated"]),
        ("records.jsonl", 3, 1, vec!["line 2: not JSON"]),
        ("bad_types.json", 2, 4, vec!["record 2: field `eventTime` is not a string", "record 4: missing field `eventID`"]),
    ] {
        let dir = scratch_dir();
        let db = Db::new(backend, &dir);
        let out = Command::new(sibling_bin("sigil-collector")).arg("--db").arg(&db.arg).args(["ingest", "cloudtrail"]).arg(data.join(file)).output().unwrap();
        assert!(out.status.success(), "{file}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stderr.lines().filter(|l| l.starts_with("skipped: ")).count(), errors, "{file}: {stderr}");
        for n in needles {
            assert!(stderr.contains(n) && stderr.contains(file), "{file}: {stderr}");
        }
        assert!(stdout.contains(&format!("ingested {stored} cloud actions")), "{file}: {stdout}");
        let (n, _) = db.pair("SELECT count(*), 0 FROM cloud_actions WHERE ?1 = ?1", "SELECT count(*), 0::bigint FROM cloud_actions WHERE $1 = $1", "");
        assert_eq!(n as usize, stored, "{file}");
        let _ = fs::remove_dir_all(dir);
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
/// The client certificate names the node the agent runs as (the collector takes the node
/// from the certificate, never from the payload).
fn pki(dir: &Path) {
    let pki = sigil_tests::pki::Pki::new(dir);
    pki.issue("server", "IP:127.0.0.1", "serverAuth");
    pki.issue("client", "DNS:node-with-cert", "clientAuth");
}

#[test]
fn agents_stream_over_mutual_tls_and_an_agent_without_a_client_certificate_is_refused() {
    let dir = scratch_dir();
    pki(&dir);
    let p = |f: &str| dir.join(f).display().to_string();
    let (g, h) = (free_port(), free_port());
    let collector =
        Collector::start_with(&dir.join("c.db"), g, h, &["--tls-cert", &p("server.pem"), "--tls-key", &p("server.key"), "--client-ca", &p("ca.pem")]);
    assert!(collector.log.snapshot().iter().any(|l| l.contains("mTLS")));
    let url = format!("https://127.0.0.1:{g}");

    let good = Agent::start(&[
        "--no-trace",
        "--node-name",
        "node-with-cert",
        "--state-dir",
        &p("state-good"),
        "--collector",
        &url,
        "--collector-ca",
        &p("ca.pem"),
        "--collector-cert",
        &p("client.pem"),
        "--collector-key",
        &p("client.key"),
    ]);
    let bad =
        Agent::start(&["--no-trace", "--node-name", "node-without-cert", "--state-dir", &p("state-bad"), "--collector", &url, "--collector-ca", &p("ca.pem")]);
    good.wait_event("events acknowledged over mTLS", |v| v["kind"] == "agent_stats" && v["export"]["events_acked"].as_u64().unwrap_or(0) > 0);
    let refused = bad.wait_event("the unauthenticated agent failing", |v| v["kind"] == "agent_stats" && v["export"]["send_errors"].as_u64().unwrap_or(0) > 0);
    assert_eq!(refused["export"]["events_acked"], 0);
    assert!(refused["export"]["spool"]["depth_events"].as_u64().unwrap() > 0, "its events wait in the spool, not lost");

    let conn = rusqlite::Connection::open(&collector.db).unwrap();
    let nodes: Vec<String> = conn.prepare("SELECT node FROM nodes").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert_eq!(nodes, ["node-with-cert"]);
    drop((good, bad, collector));
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn plaintext_is_refused_off_loopback_on_both_sides() {
    let out = Command::new(agent_bin()).args(["run", "--collector", "http://192.0.2.10:50051", "--state-dir", "/tmp/sigil-unused-state"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to send identity events in plaintext"), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = scratch_dir();
    let out = Command::new(sibling_bin("sigil-collector"))
        .arg("--db")
        .arg(dir.join("c.db"))
        .args(["serve", "--grpc-listen", "0.0.0.0:0", "--http-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing plaintext gRPC"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = fs::remove_dir_all(dir);
}

on_both_backends!(a_collector_served_on_either_store_answers_over_http_and_grpc_groups_a_jobs_pods_and_stops_cleanly, served);
/// `sigil-collector serve` as an operator runs it, with `RUST_LOG=warn`: batches pushed
/// over gRPC (a Job's two pods under the agent's run key, a use naming that run, and one
/// malformed event), questions asked over HTTP and gRPC, then SIGTERM. Every store call
/// runs off the async workers (a blocking PostgreSQL call on one panics the worker), the
/// Job's pods are one run on both stores, the log holds warnings only, and the collector
/// exits cleanly without a panic.
fn served(backend: Backend) {
    use sigil_proto::{
        EventBody,
        v1::{self, Event, PushRequest, QueryRequest, ingest_client::IngestClient, query_client::QueryClient},
    };
    let dir = scratch_dir();
    let db = Db::new(backend, &dir);
    let collector = Collector::start_env(&db.arg, &[("RUST_LOG", "warn")]);
    let run = "k8s/batch/job/nightly-7";
    let now = now_rfc3339();
    let exec = |exec_id: &str, pod: &str| {
        let ctr = pod.repeat(64);
        EventBody::ProcessExec(v1::ProcessExec {
            exec_id: exec_id.into(),
            process_id: format!("p-{exec_id}"),
            time: now.clone(),
            comm: "migrate".into(),
            binary: Some(v1::Binary { path: Some(format!("/app/{exec_id}")), ..Default::default() }),
            cgroup: Some(v1::CgroupInfo { id: 1, path: Some(format!("/kubepods/{pod}")) }),
            workload: Some(v1::Workload {
                kind: v1::WorkloadKind::KubernetesPod as i32,
                pod_uid: Some(pod.into()),
                container_id: Some(ctr),
                ..Default::default()
            }),
            run: Some(run.into()),
            ..Default::default()
        })
    };
    let used = EventBody::CredentialUse(v1::CredentialUse {
        time: now.clone(),
        process: Some(v1::ProcessRef {
            exec_id: "X2".into(),
            cgroup_path: Some("/kubepods/b".into()),
            workload: Some(v1::Workload {
                kind: v1::WorkloadKind::KubernetesPod as i32,
                pod_uid: Some("b".into()),
                container_id: Some("b".repeat(64)),
                ..Default::default()
            }),
            run: Some(run.into()),
            ..Default::default()
        }),
        detector: v1::Detector::AwsSigv4 as i32,
        class: v1::CredentialClass::Static as i32,
        fingerprint: "fp-served".into(),
        method: "GET".into(),
        path: "/".into(),
        identifiers: Some(v1::Identifiers { access_key_id: Some("AKIASERVED000000001".into()), ..Default::default() }),
        ..Default::default()
    });
    let event = |id: &str, body: EventBody| Event { id: id.into(), kind: body.kind().into(), body: Some(body), ..Default::default() };
    let events = vec![
        event("s-1", exec("X1", "a")),
        event("s-2", exec("X2", "b")),
        event("s-3", used),
        Event { id: "s-4".into(), json: b"{\"kind\":\"process_exit\",\"pid\":\"seven\"}".to_vec(), ..Default::default() },
    ];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (pushed, asked) = rt.block_on(async {
        let mut ingest = IngestClient::connect(collector.grpc.clone()).await.unwrap();
        let pushed =
            ingest.push(PushRequest { node: "node-served".into(), events, contract_version: sigil_proto::CONTRACT_VERSION }).await.unwrap().into_inner();
        let mut query = QueryClient::connect(collector.grpc.clone()).await.unwrap();
        let asked = query.ask(QueryRequest { name: "run".into(), argument: run.into(), ..Default::default() }).await.unwrap().into_inner();
        (pushed, asked)
    });
    // Closes the clients' connections (their tasks live on `rt`): a graceful shutdown
    // waits for connected clients to go.
    drop(rt);
    assert_eq!((pushed.stored, pushed.rejected), (3, 1), "{pushed:?}");
    let over_grpc: serde_json::Value = serde_json::from_slice(&asked.json).unwrap();
    let over_http = collector.sigil(&["run", run]);
    assert_eq!(over_grpc, over_http, "one answer whichever way it is asked");
    assert_eq!(over_http["run"]["run_id"], run);
    let whats: Vec<&str> = over_http["timeline"].as_array().unwrap().iter().filter_map(|e| e["what"].as_str()).collect();
    assert_eq!(whats, ["exec", "exec", "credential_use"], "both pods' execs and the use in the Job's run: {over_http}");
    assert_eq!(collector.sigil(&["who-used", "AKIASERVED000000001"])["runs"][0]["run_id"], run);
    collector.sigil(&["posture"]);
    collector.sigil(&["findings"]);

    let (status, log) = collector.terminate();
    let log = log.join("\n");
    assert!(status.success(), "{status}: {log}");
    assert!(!log.contains("panicked"), "the collector panicked:\n{log}");
    assert!(!log.contains("INFO"), "RUST_LOG=warn leaves info lines out:\n{log}");
    assert!(log.contains("WARN") && log.contains("rejected 1 events"), "warnings still reach the log:\n{log}");
    let _ = fs::remove_dir_all(dir);
}
