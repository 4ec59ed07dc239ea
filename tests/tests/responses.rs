#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Credentials handed out in responses (`credential_obtained`): real clients (boto3,
//! curl) trade a credential over real TLS at a local token endpoint that answers as STS
//! and an OAuth2 server do; the agent reads the response through SSL_read and records
//! what was obtained, by whom, valid until when. The planted secret parts of every
//! response are then searched for in everything the agent and the collector wrote.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use sigil_agent::trace::{detect::Secret, fingerprint::Fingerprinter};
use sigil_tests::{
    postgres::{Backend, Db},
    *,
};

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn b64url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// A JWT-shaped token with the given claims (the agent decodes, never verifies, it).
fn jwt(iss: &str, sub: &str, jti: &str, exp: i64) -> String {
    let header = b64url(r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
    let claims = b64url(&format!(r#"{{"iss":"{iss}","sub":"{sub}","aud":"sts.amazonaws.com","iat":{},"exp":{exp},"jti":"{jti}"}}"#, now() - 5));
    format!("{header}.{claims}.{}", b64url(&unique("signature-")))
}

/// A pod-shaped cgroup, so the collector names the run `container:<id>`.
fn pod_cgroup() -> (TestCgroup, String) {
    let n = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() ^ (u128::from(std::process::id()) << 64);
    let ctr = format!("{n:064x}");
    let uid = format!("{:08x}-0000-4000-8000-{:012x}", n as u32, (n >> 32) as u64 & 0xffff_ffff_ffff);
    let cg = TestCgroup::create(&format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ctr}.scope",
        uid.replace('-', "_")
    ));
    (cg, ctr)
}

/// The planted response secrets, unique per test run.
struct Planted {
    key_id: String,
    secret_key: String,
    session_token: String,
    access_token: String,
}

impl Planted {
    fn new() -> Self {
        let tag = unique("").replace(['-', '_'], "").to_uppercase();
        let digits: String = tag.chars().filter(char::is_ascii_alphanumeric).collect();
        Self {
            key_id: format!("ASIA{:0<16}", &digits[..digits.len().min(16)]),
            secret_key: format!("PLANTEDsecretACCESSkey{digits}"),
            session_token: format!("FwoGZXIvYXdzPLANTEDsessionTOKEN{digits}//+="),
            access_token: jwt("https://idp.sigil.test", "client:reports", &format!("at-{digits}"), now() + 3600),
        }
    }
}

/// tests/python/token_server.py: STS and OAuth2 answers with the planted credentials.
struct TokenServer {
    child: Child,
    port: u16,
}

impl TokenServer {
    fn start(dir: &Path, p: &Planted, mode: &str) -> Self {
        self_signed_cert(dir);
        let mut child = Command::new(python())
            .arg(python_script("token_server.py"))
            .arg("0")
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .args([&p.key_id, &p.secret_key, &p.session_token, &p.access_token, mode])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let port = ready_port(&mut child);
        Self { child, port }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    dir: PathBuf,
    state: PathBuf,
    metrics: String,
    collector: Collector,
    agent: Agent,
    _db: Db,
}

fn setup() -> Setup {
    setup_on(Backend::Sqlite)
}

fn setup_on(backend: Backend) -> Setup {
    let dir = scratch_dir();
    let state = dir.join("state");
    let db = Db::new(backend, &dir);
    let collector = Collector::start(&db.arg);
    let metrics = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start(&["--state-dir", state.to_str().unwrap(), "--metrics-listen", &metrics, "--collector", &collector.grpc]);
    agent.stderr.wait_line("TLS capture on libssl", |l| l.contains("TLS capture attached") && l.contains("libssl"));
    Setup { dir, state, metrics, collector, agent, _db: db }
}

impl Setup {
    fn obtained_in(&self, cg: &TestCgroup, what: &str) -> Value {
        self.agent.wait_event(what, |v| v["kind"] == "credential_obtained" && v["process"]["cgroup_path"] == cg.path.as_str())
    }

    fn fingerprint_of(&self, secret: &str) -> String {
        let key = fs::read(self.state.join("fingerprint.key")).unwrap();
        Fingerprinter::new(&key).fingerprint(&Secret::new(secret.as_bytes().to_vec()))
    }

    /// In no event, agent log line, metric, state or spool file, nor the collector's
    /// database (the scratch dir holds all of them).
    fn assert_nowhere(&self, secret: &str) {
        let metrics = scrape_metrics(&self.metrics);
        assert!(metrics.contains("sigil_agent"), "the metrics page answered: {metrics}");
        assert_secret_absent(&self.agent, &[&self.dir], &[&metrics], secret);
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A workload in a pod trades its web identity token at STS with an unmodified boto3:
/// the node knows "run X obtained ASIA... at t, valid until t+1h" before any audit log
/// arrives, and the secret key and session token it was handed are never kept.
#[test]
fn boto3_web_identity_exchange_records_the_obtained_asia_key_and_expiry_but_no_secret() {
    let s = setup();
    let p = Planted::new();
    let server = TokenServer::start(&s.dir, &p, "length");
    let (cg, ctr) = pod_cgroup();
    let jti = unique("jti-");
    let token = jwt("https://sigil.test", "spiffe://sigil.test/reports", &jti, now() + 600);
    let role = "arn:aws:iam::123456789012:role/sigil-reports";
    let script = python_script("sts_web_identity.py").display().to_string();
    let endpoint = format!("https://127.0.0.1:{}", server.port);
    let (code, out, err) = cg.run(&python(), &[&script, &endpoint, role, "reports-run", &token]);
    assert_eq!(code, 0, "{err}");
    let (got_key, got_expiry) = out.trim().split_once(' ').unwrap();
    assert_eq!(got_key, p.key_id, "boto3 parsed the STS response");

    let ev = s.obtained_in(&cg, "credential_obtained for the STS exchange");
    assert_eq!(ev["identifier"], p.key_id.as_str());
    assert_eq!(ev["exchange_kind"], "aws_sts_assume_role_with_web_identity");
    assert_eq!(ev["format"], "aws_sts_xml");
    assert_eq!(ev["class"], "short_lived");
    assert_eq!(ev["tls_library"], "openssl");
    assert_eq!(ev["principal"], "arn:aws:sts::123456789012:assumed-role/sigil-reports/reports-run");
    assert_eq!(ev["presented_jti"], jti.as_str());
    assert_eq!(ev["presented_iss"], "https://sigil.test");
    assert_eq!(ev["destination"]["port"], server.port);
    assert_eq!(ev["process"]["binary_path"].as_str().map(|b| b.contains("python")), Some(true));
    // Valid until what boto3 was told (seconds precision), about an hour from now.
    assert_eq!(&ev["expires_at"].as_str().unwrap()[..19], &got_expiry[..19]);
    let expires_in = ev["expires_in"].as_i64().unwrap();
    assert!((3500..=3600).contains(&expires_in), "{ev}");
    // Later uses of these credentials (SigV4 with the session token) fingerprint the same.
    assert_eq!(ev["fingerprint"], s.fingerprint_of(&p.session_token));
    // The request side is still the exchange it was.
    s.agent.wait_event("the exchange's credential_use", |v| {
        v["kind"] == "credential_use" && v["process"]["cgroup_path"] == cg.path.as_str() && v["exchange"]["kind"] == "aws_sts_assume_role_with_web_identity"
    });

    let run = format!("container:{ctr}");
    let timeline = s.collector.wait_for("credential_obtained in the run's timeline", &["run", &run], |v| {
        v["timeline"].as_array().is_some_and(|t| t.iter().any(|e| e["what"] == "credential_obtained"))
    });
    let row = timeline["timeline"].as_array().unwrap().iter().find(|e| e["what"] == "credential_obtained").unwrap().clone();
    assert_eq!(row["detail"]["identifier"], p.key_id.as_str());
    assert_eq!(row["detail"]["presented_jti"], jti.as_str());
    let text = s.collector.sigil_text(&["run", &run]);
    assert!(text.contains(&format!("obtained {} from", p.key_id)) && text.contains("valid until"), "{text}");

    for secret in [&p.secret_key, &p.session_token] {
        s.assert_nowhere(secret);
    }
    s.assert_nowhere(&token);
}

on_both_backends!(temporary_credentials_obtained_at_sts_and_used_only_by_another_pod_name_the_obtainer, obtained_then_stolen);
/// The attacker: a workload in another pod that copied the temporary credentials run A
/// obtained at STS, before A used them at all, and signs an S3 call with them through
/// boto3. Only the STS response names A: by first use alone, the thief would look like
/// the credentials' owner and nothing would be found.
fn obtained_then_stolen(backend: Backend) {
    let s = setup_on(backend);
    let p = Planted::new();
    let sts = TokenServer::start(&s.dir, &p, "length");
    let (a, a_ctr) = pod_cgroup();
    let token = jwt("https://sigil.test", "spiffe://sigil.test/reports", &unique("jti-"), now() + 600);
    let script = python_script("sts_web_identity.py").display().to_string();
    let endpoint = format!("https://127.0.0.1:{}", sts.port);
    let (code, out, err) = a.run(&python(), &[&script, &endpoint, "arn:aws:iam::123456789012:role/sigil-reports", "reports-run", &token]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&p.key_id), "boto3 obtained the planted key: {out}");
    let obtained = s.obtained_in(&a, "credential_obtained for run A's exchange");

    let s3 = LocalServer::start(Some(&s.dir));
    let (b, b_ctr) = pod_cgroup();
    let script = python_script("aws_client.py").display().to_string();
    let s3_endpoint = format!("https://127.0.0.1:{}", s3.port);
    let (code, out, err) = b.run(&python(), &[&script, &s3_endpoint, &p.key_id, &p.secret_key, &p.session_token]);
    assert_eq!((code, out.as_str()), (0, "SENT"), "{err}");

    let found = s.collector.wait_for("credential_outlived_run about the stolen key", &["findings", "--kind", "credential_outlived_run"], |v| {
        v["findings"].as_array().is_some_and(|a| a.iter().any(|f| f["subject"] == p.key_id.as_str()))
    });
    let f = found["findings"].as_array().unwrap().iter().find(|f| f["subject"] == p.key_id.as_str()).unwrap();
    let runs: Vec<&str> = f["runs"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(runs, [format!("container:{a_ctr}"), format!("container:{b_ctr}")], "the obtainer first, then the thief: {f}");
    let evidence = f["evidence"].as_array().unwrap();
    assert_eq!(evidence[0]["kind"], "credential_obtained", "the STS response is the evidence of who obtained it: {f}");
    assert!(evidence.iter().any(|e| e["kind"] == "credential_use"), "{f}");
    // The agent's event id (`<spool stream>-<seq>`), on the node that saw the response.
    assert!(evidence[0]["id"].as_str().is_some_and(|id| id.rsplit_once('-').is_some_and(|(_, seq)| seq.parse::<u64>().is_ok())), "{f}");
    assert_eq!(evidence[0]["node"], obtained["node"], "{f}");
    for secret in [&p.secret_key, &p.session_token] {
        s.assert_nowhere(secret);
    }
}

/// A workload's OAuth client-credentials grant with curl, answered with a gzip body in
/// chunked transfer coding written in pieces: the grant's expiry, scope and the obtained
/// JWT's claims are recorded; the access token, refresh token and client secret are not.
#[test]
fn curl_client_credentials_grant_records_expiry_and_token_claims_from_a_chunked_gzip_response() {
    let s = setup();
    let p = Planted::new();
    let server = TokenServer::start(&s.dir, &p, "chunked-gzip");
    let (cg, _ctr) = pod_cgroup();
    let client_secret = unique("PLANTEDclientSECRET");
    let url = format!("https://127.0.0.1:{}/oauth2/token", server.port);
    let (code, out, err) = cg.run(
        Path::new("/usr/bin/curl"),
        &["-sk", "--compressed", "-d", "grant_type=client_credentials", "-d", "client_id=reports", "-d", &format!("client_secret={client_secret}"), &url],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&p.access_token), "curl got the token response: {out}");

    let ev = s.obtained_in(&cg, "credential_obtained for the OAuth grant");
    assert_eq!(ev["exchange_kind"], "oauth_client_credentials");
    assert_eq!(ev["format"], "oauth2_token");
    assert_eq!(ev["token_type"], "Bearer");
    assert_eq!(ev["scope"], "read:reports");
    assert_eq!(ev["expires_in"], 3600);
    assert_eq!(ev["token_iss"], "https://idp.sigil.test");
    assert_eq!(ev["token_sub"], "client:reports");
    assert!(ev["token_jti"].as_str().unwrap().starts_with("at-"));
    assert!(ev.get("identifier").is_none(), "no key id was made up: {ev}");
    assert_eq!(ev["fingerprint"], s.fingerprint_of(&p.access_token));
    assert_eq!(ev["presented_fingerprint"], s.fingerprint_of(&client_secret));
    assert_eq!(ev["process"]["binary_path"], "/usr/bin/curl");

    s.collector.wait_for("stored", &["run", &format!("container:{_ctr}")], |v| {
        v["timeline"].as_array().is_some_and(|t| t.iter().any(|e| e["what"] == "credential_obtained"))
    });
    for secret in [&p.access_token, &format!("{}-refresh", p.access_token), &client_secret] {
        s.assert_nowhere(secret);
    }
    // Nor any part of the token after its claims (its signature).
    s.assert_nowhere(p.access_token.rsplit('.').next().unwrap());
}

/// A network peer answers a POST with garbage, a cut response, or an error: no event with
/// made-up fields, and the agent keeps working (a later real exchange is still recorded).
#[test]
fn a_network_peer_answering_an_exchange_with_an_error_yields_no_credential_obtained() {
    let s = setup();
    let p = Planted::new();
    // A plain JSON answer that holds no credential (http_server.py answers {"ok":true}).
    let server = LocalServer::start(Some(&s.dir));
    let (cg, _) = pod_cgroup();
    let url = format!("https://127.0.0.1:{}/oauth2/token", server.port);
    let (code, _, err) = cg.run(Path::new("/usr/bin/curl"), &["-sk", "-d", "grant_type=client_credentials", "-d", "client_secret=PLANTEDnoAnswer", &url]);
    assert_eq!(code, 0, "{err}");
    let real_dir = s.dir.join("real");
    fs::create_dir_all(&real_dir).unwrap();
    let real = TokenServer::start(&real_dir, &p, "length");
    let url = format!("https://127.0.0.1:{}/oauth2/token", real.port);
    let (code, _, err) = cg.run(Path::new("/usr/bin/curl"), &["-sk", "-d", "grant_type=client_credentials", "-d", "client_secret=PLANTEDreal", &url]);
    assert_eq!(code, 0, "{err}");
    let ev = s.obtained_in(&cg, "the real grant's credential_obtained");
    assert_eq!(ev["destination"]["port"], real.port, "the first answer made no event: {ev}");
    let obtained: Vec<Value> =
        s.agent.events().into_iter().filter(|v| v["kind"] == "credential_obtained" && v["process"]["cgroup_path"] == cg.path.as_str()).collect();
    assert_eq!(obtained.len(), 1, "{obtained:?}");
}
