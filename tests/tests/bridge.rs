#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! The legacy bridge: an unmodified boto3, configured only through environment variables
//! and files, gets temporary credentials from a real (moto) STS with a Sigil token, then
//! calls S3; the collector attributes the whole chain (issuance -> exchange seen in the
//! request body -> temporary key seen in SigV4 -> CloudTrail record) to the run, with no
//! naming convention for the role session. GCP: the external-account configuration and
//! its token file, refreshed.

use std::{
    fs,
    io::{BufRead, BufReader},
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};
use sigil_tests::{
    postgres::{Backend, Db},
    *,
};

const ROLE: &str = "arn:aws:iam::123456789012:role/sigil-bridge";
const ID: &str = "spiffe://sigil.test/ns/reports/sa/exporter";

/// moto's server (STS and S3 on one port), plain HTTP on loopback, stopped on drop.
struct Moto {
    child: Child,
    url: String,
    port: u16,
}

impl Moto {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start on port {port}");
            thread::sleep(Duration::from_millis(100));
        }
        Self { child, url: format!("http://127.0.0.1:{port}"), port }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node: collector, agent issuing tokens to `client` (a copy of the agent binary, the
/// bridge) in one containerd pod.
struct Node {
    dir: PathBuf,
    collector: Collector,
    db: Db,
    agent: Agent,
    socket: PathBuf,
    client: PathBuf,
    pod: TestCgroup,
    run_id: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn node(ttl: u64, backend: Backend) -> Node {
    let dir = scratch_dir();
    let db = Db::new(backend, &dir);
    let n = std::process::id();
    let uid = format!("b41d9e00-0000-4000-8000-{:012x}", u64::from(n) * 1000 + u64::from(rand_suffix()));
    let ctr = format!("{:064x}", u128::from(n) << 32 | u128::from(rand_suffix()));
    let collector = Collector::start(&db.arg);
    let client = unique_client(&dir, "sigil-bridge");
    let selectors = [format!("k8s:pod-uid:{uid}"), format!("unix:sha256:{}", sha256sum(&client))];
    let Issuer { agent, socket, .. } = Issuer::start(&dir, ID, ttl, &selectors, &["--collector", &collector.grpc]);
    let pod = TestCgroup::create(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ctr}.scope",
        uid.replace('-', "_")
    ));
    Node { dir, collector, db, agent, socket, client, pod, run_id: format!("container:{ctr}") }
}

fn rand_suffix() -> u32 {
    let mut b = [0u8; 4];
    fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).unwrap();
    u32::from_le_bytes(b) % 1000
}

/// The claims of a JWT (decoded, not verified: the test only reads its jti).
fn claims(token: &str) -> Value {
    let payload = token.trim().split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn now_rfc3339() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `sigil-agent token-file` started in the pod (the registered workload), and the
/// environment lines it printed once the file was written.
fn token_file(node: &Node, args: &[&str]) -> (Child, Vec<String>) {
    let mut all = vec!["token-file", "--socket"];
    let socket = node.socket.display().to_string();
    all.push(&socket);
    all.extend_from_slice(args);
    let log = fs::File::create(node.dir.join("bridge.log")).unwrap();
    let mut child = node.pod.command(&node.client, &all).stdout(Stdio::piped()).stderr(log).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let expected = if args.contains(&"--aws-role-arn") { 2 } else { 1 };
    for _ in 0..expected {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        assert!(!l.is_empty(), "token-file exited before writing the token file");
        lines.push(l.trim().to_owned());
    }
    (child, lines)
}

/// The environment of an unmodified boto3: nothing inherited from the test's own
/// environment but PATH, the endpoints of the local moto, and what `extra` adds.
fn boto3(node: &Node, moto: &Moto, extra: &[(&str, String)]) -> (String, String, String) {
    let config = node.dir.join("aws-config");
    let mut cmd = node.pod.command(&python(), &[&python_script("bridge_boto3.py").display().to_string(), &unique("sigil-bridge-"), "reports/1.json"]);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &node.dir)
        .env("AWS_ENDPOINT_URL_STS", &moto.url)
        .env("AWS_ENDPOINT_URL_S3", &moto.url)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_SHARED_CREDENTIALS_FILE", node.dir.join("no-such-credentials"))
        .env("AWS_CONFIG_FILE", &config);
    if !config.exists() {
        fs::write(&config, "[default]\ns3 =\n    addressing_style = path\n").unwrap();
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "boto3 failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut l = text.lines().map(str::to_owned);
    (l.next().unwrap(), l.next().unwrap(), l.next().unwrap())
}

/// Waits until the collector has the run's token issuance, its STS exchange and its use
/// of `key`; then ingests the CloudTrail record AWS would deliver for the S3 call made
/// with `key` and returns `sigil trace`'s answer for it.
fn trace_s3_call(node: &Node, key: &str) -> Value {
    let c = &node.collector;
    c.wait_for("issuance, exchange and SigV4 use of the temporary key", &["run", &node.run_id], |v| {
        let tl = v["timeline"].as_array().cloned().unwrap_or_default();
        tl.iter().any(|e| e["what"] == "token_issued")
            && tl.iter().any(|e| e["what"] == "credential_use" && e["detail"]["detector"] == "token_exchange")
            && tl.iter().any(|e| e["what"] == "credential_use" && e["detail"]["access_key_id"] == key)
    });
    let id = unique("bridge-s3-");
    let record = json!({"Records": [{
        "eventVersion": "1.09", "eventID": id, "eventTime": now_rfc3339(), "eventSource": "s3.amazonaws.com",
        "eventName": "PutObject", "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.20", "userAgent": "Boto3/1.44.5",
        "userIdentity": {"type": "AssumedRole", "principalId": "AROABRIDGE:any-session-name",
            "arn": "arn:aws:sts::123456789012:assumed-role/sigil-bridge/any-session-name", "accountId": "123456789012",
            "accessKeyId": key, "sessionContext": {"sessionIssuer": {"type": "Role", "arn": ROLE}}},
        "requestParameters": {"bucketName": "b", "key": "reports/1.json"}, "responseElements": null,
        "readOnly": false, "eventType": "AwsApiCall", "recipientAccountId": "123456789012"}]});
    let trail = node.dir.join("trail.json");
    fs::write(&trail, record.to_string()).unwrap();
    let out = Command::new(sibling_bin("sigil-collector")).arg("--db").arg(&c.db).args(["ingest", "cloudtrail"]).arg(&trail).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.sigil(&["trace", &id])
}

/// Checks the chain in `sigil trace`'s answer: the run, the SigV4 use of `key`, and how
/// it was obtained: the exchange of the token the run was issued (`jti`).
fn assert_chain(node: &Node, t: &Value, key: &str, jti: &str, moto: &Moto) {
    assert_eq!(t["attributed"], true, "{t:#}");
    let at = &t["attribution"][0];
    assert_eq!(at["run"]["run_id"], node.run_id.as_str());
    assert_eq!(at["reason"], "access_key_id_in_window");
    assert_eq!(at["credential"]["access_key_id"], key);
    assert_eq!(at["credential"]["class"], "short_lived");
    assert_eq!(at["obtained"]["how"], sigil_collector::store::EXCHANGED_SIGIL_TOKEN, "{t:#}");
    assert_eq!(at["obtained"]["exchange"]["jwt_jti"], jti);
    assert_eq!(at["obtained"]["exchange"]["dest_port"], moto.port);
    assert_eq!(at["obtained"]["token"]["jti"], jti);
    assert_eq!(at["obtained"]["token"]["spiffe_id"], ID);
    assert_eq!(at["obtained"]["token"]["run_id"], node.run_id.as_str());
    // The exchange came before the use.
    assert!(at["obtained"]["exchange"]["time"].as_i64() <= at["credential"]["time"].as_i64());
    // The run's issuance in its own timeline is the same token.
    let tl = node.collector.sigil(&["run", &node.run_id]);
    assert!(tl["timeline"].as_array().unwrap().iter().any(|e| e["what"] == "token_issued" && e["detail"]["jti"] == jti));
}

/// The secret key and session token boto3 got appear in no agent event or log, nowhere
/// in the agent's state and spool, the collector's database or log, or the bridge's log.
fn assert_secrets_absent(node: &Node, bridge_log: &str, secrets: &[&str]) {
    let collector_log = node.collector.log.snapshot().join("\n");
    for s in secrets {
        assert!(s.len() >= 16, "not a real secret: {s:?}");
        assert_secret_absent(&node.agent, &[&node.dir], &[&collector_log, bridge_log], s);
        assert!(!node.db.bytes().windows(s.len()).any(|w| w == s.as_bytes()), "a secret in the collector's store");
    }
}

/// What the bridge logged so far.
fn bridge_log(node_dir: &Path) -> String {
    fs::read_to_string(node_dir.join("bridge.log")).unwrap_or_default()
}

/// AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, the file kept by `sigil-agent token-file`.
#[test]
fn boto3_with_a_web_identity_token_file_is_traced_from_issuance_to_cloudtrail() {
    let node = node(300, Backend::Sqlite);
    let moto = Moto::start();
    let path = node.dir.join("aws-token");
    let (bridge, env) = token_file(&node, &["--audience", "sts.amazonaws.com", "--path", &path.display().to_string(), "--aws-role-arn", ROLE]);
    assert_eq!(env, [format!("AWS_ROLE_ARN={ROLE}"), format!("AWS_WEB_IDENTITY_TOKEN_FILE={}", path.display())]);
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let token = fs::read_to_string(&path).unwrap();
    let jti = claims(&token)["jti"].as_str().unwrap().to_owned();
    assert_eq!(claims(&token)["sub"], ID);

    let extra: Vec<(&str, String)> = env.iter().map(|l| l.split_once('=').unwrap()).map(|(k, v)| (k, v.to_owned())).collect();
    let (key, secret, session) = boto3(&node, &moto, &extra);
    assert!(key.starts_with("ASIA"), "moto handed out {key}");
    assert_ne!(jti, "", "a token id");

    let t = trace_s3_call(&node, &key);
    assert_chain(&node, &t, &key, &jti, &moto);
    finish(bridge);
    assert_secrets_absent(&node, &bridge_log(&node.dir), &[&secret, &session]);
}

/// A config file whose `credential_process` is `sigil-agent credential-process`; the
/// collector's answer is checked on both stores.
mod boto3_with_credential_process_is_traced_from_issuance_to_cloudtrail {
    #[test]
    fn sqlite() {
        super::credential_process(super::Backend::Sqlite)
    }
    #[test]
    fn postgres() {
        super::credential_process(super::Backend::Postgres)
    }
}

fn credential_process(backend: Backend) {
    let node = node(300, backend);
    let moto = Moto::start();
    fs::write(
        node.dir.join("aws-config"),
        format!(
            "[default]\ncredential_process = {} credential-process --role-arn {ROLE} --socket {}\ns3 =\n    addressing_style = path\n",
            node.client.display(),
            node.socket.display()
        ),
    )
    .unwrap();
    let (key, secret, session) = boto3(&node, &moto, &[]);
    assert!(key.starts_with("ASIA"), "moto handed out {key}");

    // The token the bridge exchanged is the one the run was issued.
    let issued = node
        .collector
        .wait_for("the issuance", &["run", &node.run_id], |v| v["timeline"].as_array().is_some_and(|tl| tl.iter().any(|e| e["what"] == "token_issued")));
    let jti = issued["timeline"].as_array().unwrap().iter().find(|e| e["what"] == "token_issued").unwrap()["detail"]["jti"].as_str().unwrap().to_owned();
    let t = trace_s3_call(&node, &key);
    assert_chain(&node, &t, &key, &jti, &moto);
    // The bridge process itself is in the run: it made the exchange (the trace lists the
    // run's first processes; its timeline has them all).
    let timeline = node.collector.sigil(&["run", &node.run_id, "--limit", "1000"]);
    let execs: Vec<&Value> = timeline["timeline"].as_array().unwrap().iter().filter(|e| e["what"] == "exec").map(|e| &e["detail"]).collect();
    assert!(execs.iter().any(|p| p["binary_path"] == node.client.display().to_string().as_str()), "{execs:?}");
    assert_secrets_absent(&node, "", &[&secret, &session]);
}

/// GCP: the external-account configuration google-auth reads points at the token file,
/// the file is refreshed before the token expires, and when refreshing becomes impossible
/// (the agent is gone) the bridge says so, loudly, once the file's token has expired.
#[test]
fn gcp_external_account_configuration_points_at_a_token_file_that_is_kept_fresh() {
    let node = node(4, Backend::Sqlite);
    let path = node.dir.join("gcp-token");
    let config = node.dir.join("gcp-credentials.json");
    let aud = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/sigil/providers/node";
    let (bridge, env) =
        token_file(&node, &["--audience", aud, "--path", &path.display().to_string(), "--gcp-config", &config.display().to_string(), "--gcp-audience", aud]);
    assert_eq!(env, [format!("GOOGLE_APPLICATION_CREDENTIALS={}", config.display())]);
    let cfg: Value = serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(cfg["type"], "external_account");
    assert_eq!(cfg["audience"], aud);
    assert_eq!(cfg["subject_token_type"], "urn:ietf:params:oauth:token-type:jwt");
    assert_eq!(cfg["token_url"], "https://sts.googleapis.com/v1/token");
    assert_eq!(cfg["credential_source"]["file"], path.display().to_string().as_str());
    assert_eq!(cfg["credential_source"]["format"]["type"], "text");
    assert_eq!(fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);

    let first = claims(&fs::read_to_string(&path).unwrap());
    assert_eq!(first["aud"], aud);
    // Refreshed at half the 4 s lifetime: a new token (new jti) before the first expires.
    let deadline = Instant::now() + WAIT;
    let second = loop {
        let c = claims(&fs::read_to_string(&path).unwrap());
        if c["jti"] != first["jti"] {
            break c;
        }
        assert!(Instant::now() < deadline, "the token file was never refreshed");
        thread::sleep(Duration::from_millis(100));
    };
    assert!(second["exp"].as_i64() > first["exp"].as_i64());
    assert!(first["exp"].as_i64().unwrap() >= second["iat"].as_i64().unwrap(), "refreshed only after expiry: {first} {second}");

    // The agent goes away: no refresh can succeed; once the token expired, every retry
    // is an error line naming the file.
    let dir = node.dir.clone();
    // SAFETY: signalling the agent this test started.
    unsafe { libc::kill(node.agent.pid() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(40);
    while !bridge_log(&dir).lines().any(|l| l.contains("EXPIRED") && l.contains("gcp-token")) {
        assert!(Instant::now() < deadline, "no error about the expired token file: {}", bridge_log(&dir));
        thread::sleep(Duration::from_millis(200));
    }
    assert!(bridge_log(&dir).contains("token refresh failed"), "{}", bridge_log(&dir));
    finish(bridge);
}
