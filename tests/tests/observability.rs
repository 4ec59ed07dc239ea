#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Metrics: every dashboard query against a real Prometheus scraping a scripted run,
//! OTLP export to a receiver that decodes the real protocol, and no secret anywhere.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::any_value::Value as AnyValue,
    metrics::v1::{metric::Data, number_data_point::Value as NumberValue},
};
use prost::Message;
use serde_json::Value;
use sigil_tests::*;

const POD: &str = "cccccccc-3333-4333-8333-cccccccccccc";

fn pod_layout() -> String {
    format!("kubepods.slice/kubepods-pod{}.slice/cri-containerd-{}.scope", POD.replace('-', "_"), "c".repeat(64))
}

/// An agent issuing tokens to `client` in the pod, with extra arguments.
fn issuing_agent(dir: &Path, client: &Path, extra: &[&str]) -> (Agent, PathBuf) {
    let selectors = [format!("k8s:pod-uid:{POD}"), format!("unix:sha256:{}", sha256sum(client))];
    let Issuer { agent, socket, .. } = Issuer::start(dir, "spiffe://sigil.test/metrics", 120, &selectors, extra);
    (agent, socket)
}

/// Three tokens issued and one refused (binary hash mismatch), from real processes.
fn script_tokens(dir: &Path, client: &Path, socket: &Path) {
    let pod = TestCgroup::create(&pod_layout());
    let s = socket.display().to_string();
    for _ in 0..3 {
        let (code, _, err) = pod.run(client, &["token", "--audience", "sts.amazonaws.com", "--socket", &s]);
        assert_eq!(code, 0, "{err}");
    }
    let rogue = unique_client(dir, "rogue");
    assert_ne!(pod.run(&rogue, &["token", "--audience", "sts.amazonaws.com", "--socket", &s]).0, 0);
}

// === OTLP ===

type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A minimal OTLP/HTTP receiver: every POST /v1/metrics body, decoded; every body of any
/// path kept raw (traces, logs) with its path.
/// (port, decoded metric exports, every exported byte, every (path, body))
type Receiver = (u16, Arc<Mutex<Vec<ExportMetricsServiceRequest>>>, Arc<Mutex<Vec<u8>>>, Received);

fn otlp_receiver() -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let raw = Arc::new(Mutex::new(Vec::new()));
    let all: Received = Arc::default();
    let (g, r, a) = (got.clone(), raw.clone(), all.clone());
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (g, r, a) = (g.clone(), r.clone(), a.clone());
            thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    let mut path = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if path.is_empty() {
                            path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    r.lock().unwrap().extend_from_slice(&body);
                    if path == "/v1/metrics"
                        && let Ok(req) = ExportMetricsServiceRequest::decode(body.as_slice())
                    {
                        g.lock().unwrap().push(req);
                    }
                    a.lock().unwrap().push((path, body));
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, got, raw, all)
}

/// (metric name, attribute key=value or "", value) for every number data point.
fn points(req: &ExportMetricsServiceRequest) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let dps = match &m.data {
                    Some(Data::Sum(s)) => s.data_points.clone(),
                    Some(Data::Gauge(g)) => g.data_points.clone(),
                    Some(Data::Histogram(h)) => {
                        for dp in &h.data_points {
                            out.push((format!("{}.count", m.name), String::new(), dp.count as f64));
                        }
                        continue;
                    }
                    _ => continue,
                };
                for dp in dps {
                    let attrs: Vec<String> = dp
                        .attributes
                        .iter()
                        .map(|kv| {
                            let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                                Some(AnyValue::StringValue(s)) => s,
                                other => format!("{other:?}"),
                            };
                            format!("{}={v}", kv.key)
                        })
                        .collect();
                    let v = match dp.value {
                        Some(NumberValue::AsInt(i)) => i as f64,
                        Some(NumberValue::AsDouble(d)) => d,
                        None => f64::NAN,
                    };
                    out.push((m.name.clone(), attrs.join(","), v));
                }
            }
        }
    }
    out
}

#[test]
fn otlp_export_carries_the_scripted_token_figures() {
    let dir = scratch_dir();
    let client = unique_client(&dir, "metrics-client");
    let (port, got, raw, all) = otlp_receiver();
    let (agent, socket) = issuing_agent(&dir, &client, &["--otlp-endpoint", &format!("http://127.0.0.1:{port}"), "--otlp-interval-seconds", "1", "--no-trace"]);
    script_tokens(&dir, &client, &socket);
    agent.wait_event("the denial", |v| v["kind"] == "token_denied");

    let deadline = Instant::now() + Duration::from_secs(30);
    let want = |p: &[(String, String, f64)]| {
        let find = |name: &str, attr: &str| p.iter().find(|(n, a, _)| n == name && a == attr).map(|x| x.2);
        find("sigil.agent.tokens.issued", "") == Some(3.0)
            && find("sigil.agent.token.denials", "reason=binary_hash_mismatch") == Some(1.0)
            && find("sigil.agent.token.denials", "reason=no_matching_entry") == Some(0.0)
            && find("sigil.agent.token.lifetime.count", "") == Some(3.0)
            && find("sigil.agent.events", "kind=token_issued") == Some(3.0)
            && find("sigil.agent.events", "kind=token_denied") == Some(1.0)
    };
    loop {
        let latest = got.lock().unwrap().last().map(points).unwrap_or_default();
        if want(&latest) {
            break;
        }
        assert!(Instant::now() < deadline, "OTLP never carried the expected figures; last export: {latest:?}");
        thread::sleep(Duration::from_millis(250));
    }
    // The issuance path is traced: one span per request, with its outcome.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<(String, String)> = all
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == "/v1/traces")
            .filter_map(|(_, b)| ExportTraceServiceRequest::decode(b.as_slice()).ok())
            .flat_map(|r| r.resource_spans)
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .map(|s| (s.name.clone(), format!("{:?}", s.attributes)))
            .collect();
        let issued = spans.iter().filter(|(n, a)| n == "issue_jwt_svid" && a.contains("issued 1")).count();
        let denied = spans.iter().filter(|(n, a)| n == "issue_jwt_svid" && a.contains("binary_hash_mismatch")).count();
        if issued == 3 && denied == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "issuance spans: {issued} issued, {denied} denied; saw {spans:?}");
        thread::sleep(Duration::from_millis(250));
    }
    // The resource says which service and node sent it.
    let first = got.lock().unwrap()[0].clone();
    let res = format!("{:?}", first.resource_metrics[0].resource);
    assert!(res.contains("sigil-agent"), "{res}");

    // No jti and no token text in any exported byte.
    let bytes = raw.lock().unwrap().clone();
    for line in agent.stdout.snapshot() {
        let v: Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(jti) = v["jti"].as_str() {
            assert!(!bytes.windows(jti.len()).any(|w| w == jti.as_bytes()), "a jti was exported as metric data");
        }
    }
    let _ = fs::remove_dir_all(dir);
}

// === Prometheus + dashboards ===

fn curl_json(url: &str, query: Option<&str>) -> Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-G", url]);
    if let Some(q) = query {
        cmd.arg("--data-urlencode").arg(format!("query={q}"));
    }
    let out = cmd.output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn metrics_text(addr: &str) -> String {
    String::from_utf8_lossy(&Command::new("curl").args(["-s", &format!("http://{addr}/metrics")]).output().unwrap().stdout).into_owned()
}

#[test]
fn every_dashboard_query_answers_from_a_real_prometheus() {
    let dir = scratch_dir();
    let collector = Collector::start(&dir.join("collector.db"));
    let client = unique_client(&dir, "dash-client");
    let agent_metrics = format!("127.0.0.1:{}", free_port());
    let (agent, socket) = issuing_agent(&dir, &client, &["--metrics-listen", &agent_metrics, "--collector", &collector.grpc]);
    agent.stderr.wait_line("TLS capture", |l| l.contains("TLS capture attached") && l.contains("libssl"));

    // Scripted activity touching every family of metrics.
    script_tokens(&dir, &client, &socket);
    let cg = TestCgroup::create("dash.slice/work.scope");
    let api_key = "sk-proj-PLANTEDdashboardKEY000000000000000";
    let server = LocalServer::start(None);
    let port = server.port;
    cg.run(Path::new("/usr/bin/curl"), &["-s", "-o", "/dev/null", &format!("http://127.0.0.1:{port}/x"), "-H", &format!("x-api-key: {api_key}")]);
    let home = dir.join("home/.aws");
    fs::create_dir_all(&home).unwrap();
    fs::write(home.join("credentials"), "[default]\n").unwrap();
    cg.run(Path::new("/bin/cat"), &[&home.join("credentials").display().to_string()]);
    // A SigV4 call with the key the CloudTrail records below name, so attribution links exist.
    let sent = cg.run(
        &python(),
        &[
            &python_script("aws_client.py").display().to_string(),
            &format!("http://127.0.0.1:{port}"),
            "AKIASIGILDASH0000001",
            "PLANTEDdashSECRET000000000000000000000001",
        ],
    );
    assert_eq!(sent.1, "SENT", "{}", sent.2);
    agent.wait_event("the SigV4 use", |v| v["kind"] == "credential_use" && v["identifiers"]["access_key_id"] == "AKIASIGILDASH0000001");
    let used = agent.wait_event("credential use", |v| v["kind"] == "credential_use");
    let fingerprint = used["fingerprint"].as_str().unwrap().to_owned();
    let trail = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/cloudtrail-story.json.tmpl"))
        .unwrap()
        .replace("{{TIME}}", String::from_utf8_lossy(&Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap().stdout).trim())
        .replace("{{AKIA}}", "AKIASIGILDASH0000001")
        .replace("{{ASIA}}", "ASIASIGILDASH0000002")
        .replace("{{JTI}}", "dash")
        .replace("{{SPIFFE_ID}}", "spiffe://sigil.test/metrics")
        .replace("{{ISSUER_HOST}}", "127.0.0.1");
    let out = Command::new("curl").args(["-s", "-X", "POST", "--data-binary", &trail, &format!("{}/v1/ingest/cloudtrail", collector.http)]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"stored\":4"), "{}", String::from_utf8_lossy(&out.stdout));

    // A real Prometheus scraping both, every second.
    let prom_port = free_port();
    let cfg = dir.join("prometheus.yml");
    let collector_http = collector.http.trim_start_matches("http://").to_owned();
    fs::write(
        &cfg,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sigil-agent\n    static_configs: [{{targets: ['{agent_metrics}']}}]\n  - job_name: sigil-collector\n    static_configs: [{{targets: ['{collector_http}']}}]\n"),
    )
    .unwrap();
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package) is installed by cargo xtask test");
    let _prom = Killed(prom);
    let api = format!("http://127.0.0.1:{prom_port}/api/v1/query");
    // Both targets up, and enough samples for rate() windows.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = curl_json(&api, Some("sum(up)"));
        if up["data"]["result"][0]["value"][1] == "2" {
            break;
        }
        if Instant::now() > deadline {
            let targets = curl_json(&format!("http://127.0.0.1:{prom_port}/api/v1/targets"), None);
            let log = agent.stderr.snapshot();
            let tail = log.iter().rev().take(8).rev().cloned().collect::<Vec<_>>().join("\n");
            panic!("Prometheus never scraped both targets: {up}\ntargets: {targets}\nagent log tail:\n{tail}");
        }
        thread::sleep(Duration::from_millis(500));
    }
    thread::sleep(Duration::from_secs(6));

    let dashboards = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut checked = 0;
    let mut failures = Vec::new();
    for entry in fs::read_dir(&dashboards).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")) {
        let d: Value = serde_json::from_slice(&fs::read(entry.path()).unwrap()).unwrap();
        for panel in d["panels"].as_array().unwrap() {
            assert!(panel["description"].as_str().is_some_and(|s| s.len() > 20), "panel {} lacks a description", panel["title"]);
            for t in panel["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                let r = curl_json(&api, Some(expr));
                checked += 1;
                if r["status"] != "success" {
                    failures.push(format!("{} / {}: invalid: {}", d["title"], panel["title"], r["error"]));
                } else if r["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                    failures.push(format!("{} / {}: no series for {expr}", d["title"], panel["title"]));
                }
            }
        }
    }
    drop(server);
    assert!(checked >= 25, "only {checked} queries found");
    assert!(failures.is_empty(), "{} of {checked} dashboard queries failed:\n{}", failures.len(), failures.join("\n"));

    // No secret, fingerprint or jti in any metric name, label or value.
    let text = metrics_text(&agent_metrics) + &metrics_text(&collector_http);
    assert!(text.contains("sigil_agent_tokens_issued_total") && text.contains("sigil_collector_cloud_actions"));
    for needle in [api_key, "PLANTEDdashSECRET000000000000000000000001", fingerprint.as_str(), fingerprint.trim_start_matches("hmac-sha256:")] {
        assert!(!text.contains(needle), "{needle} appears in /metrics");
    }
    for line in agent.stdout.snapshot() {
        let v: Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(jti) = v["jti"].as_str() {
            assert!(!text.contains(jti), "a jti appears in /metrics");
        }
    }
    let _ = fs::remove_dir_all(dir);
}
