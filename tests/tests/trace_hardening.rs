#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Credential-use tracing under attack and at its limits, against the real kernel: real
//! clients (curl, Python's ssl and socket modules) over real TLS and plain TCP to real local
//! servers. Each planted secret is then searched for in every output of the agent: events,
//! log lines, its state directory and its /metrics page.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Stdio},
};

use base64::Engine;
use serde_json::Value;
use sigil_agent::trace::{detect::Secret, fingerprint::Fingerprinter};
use sigil_tests::*;

struct Traced {
    agent: Agent,
    state: PathBuf,
    dir: PathBuf,
    metrics: String,
}

fn traced(extra: &[&str]) -> Traced {
    let dir = scratch_dir();
    let state = dir.join("state");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--state-dir", state.to_str().unwrap(), "--metrics-listen", &metrics];
    args.extend_from_slice(extra);
    let agent = Agent::start(&args);
    agent.stderr.wait_line("TLS capture on libssl", |l| l.contains("TLS capture attached") && l.contains("libssl"));
    Traced { agent, state, dir, metrics }
}

impl Traced {
    fn uses_in(&self, cg: &TestCgroup, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.agent.wait_event(what, |v| v["kind"] == "credential_use" && v["process"]["cgroup_path"] == cg.path.as_str() && pred(v))
    }

    /// The secret is in no event, log line, state file, or metric.
    fn assert_nowhere(&self, secret: &str) {
        let metrics = scrape_metrics(&self.metrics);
        assert!(metrics.contains("sigil_agent"), "the metrics page answered: {metrics}");
        assert_secret_absent(&self.agent, &[&self.state], &[&metrics], secret);
    }

    /// What the agent's fingerprint of `secret` is (its generated key is in the state dir).
    fn fingerprint_of(&self, secret: &str) -> String {
        let key = fs::read(self.state.join("fingerprint.key")).unwrap();
        Fingerprinter::new(&key).fingerprint(&Secret::new(secret.as_bytes().to_vec()))
    }

    /// Waits for an `agent_stats` event counting at least `min` kernel drops of `reason`.
    fn wait_drops(&self, reason: &str, min: u64) {
        self.agent.wait_event(&format!("agent_stats with {min}+ {reason} drops"), |v| {
            v["kind"] == "agent_stats" && v["kernel_drops"][reason].as_u64().is_some_and(|n| n >= min)
        });
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A reader of Sigil's output (a dashboard user, whoever can read the collector's store or
/// the agent's logs) must not learn a workload's GitHub token when the workload sends it
/// the way git does: `Authorization: Basic base64(<token>:x-oauth-basic)`. At the branch
/// point the token was reported as `identifiers.username`.
#[test]
fn a_github_token_sent_as_the_basic_auth_user_name_is_only_fingerprinted() {
    let t = traced(&[]);
    let server = LocalServer::start(Some(&t.dir));
    let cg = TestCgroup::create("trace.slice/git-basic.scope");
    let token = format!("ghp_PLANTEDbasic{}", unique("Z")).replace('x', "0");
    let url = format!("https://127.0.0.1:{}/org/repo.git/info/refs?service=git-upload-pack", server.port);
    let (code, _, err) = cg.run(Path::new("/usr/bin/curl"), &["-sk", "-o", "/dev/null", "-u", &format!("{token}:x-oauth-basic"), &url]);
    assert_eq!(code, 0, "{err}");

    let ev = t.uses_in(&cg, "basic auth use", |v| v["detector"] == "basic_auth");
    assert_eq!(ev["identifiers"]["username"], Value::Null, "the token is not a user name: {ev}");
    assert_eq!(ev["identifiers"]["token_family"], "github_pat");
    assert_eq!(ev["class"], "static");
    assert_eq!(ev["identifiers"]["header"], "authorization");
    assert_eq!(ev["fingerprint"], t.fingerprint_of(&token).as_str(), "the token itself is what is fingerprinted");
    // Nothing anywhere holds the token, its distinctive part, or the header it came in.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{token}:x-oauth-basic"));
    for needle in [token.as_str(), &token[4..], &basic] {
        t.assert_nowhere(needle);
    }
}

/// A reader of Sigil's output must not get a usable presigned URL or OAuth secret from an
/// event's `path`: GCS V4 signed URLs, GitLab `private_token`, OAuth `refresh_token`,
/// `client_assertion` and `client_secret`, also when parameters are `;`-separated.
#[test]
fn a_presigned_gcs_url_and_oauth_parameters_are_stripped_from_the_reported_path() {
    let t = traced(&[]);
    let server = LocalServer::start(Some(&t.dir));
    let cg = TestCgroup::create("trace.slice/presigned.scope");
    let signature = format!("5ab1{}", unique("c0ffee").replace('x', "e"));
    let signer = "PLANTEDsigner%40proj.iam.gserviceaccount.com%2F20240101%2Fauto%2Fstorage%2Fgoog4_request";
    let private = unique("PLANTEDprivate");
    let refresh = unique("PLANTEDrefresh");
    let assertion = unique("PLANTEDassertion");
    let client_secret = unique("PLANTEDclientsecret");
    let target = format!(
        "/bucket/report.csv?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential={signer}&X-Goog-Date=20240101T000000Z\
         &X-Goog-Expires=900&X-Goog-SignedHeaders=host&X-Goog-Signature={signature}\
         ;private_token={private};refresh_token={refresh}&client_assertion={assertion};client_secret={client_secret};page=2"
    );
    let bearer = unique("sk-ant-PLANTEDbearer");
    let url = format!("https://127.0.0.1:{}{target}", server.port);
    let (code, _, err) = cg.run(Path::new("/usr/bin/curl"), &["-sk", "-o", "/dev/null", &url, "-H", &format!("Authorization: Bearer {bearer}")]);
    assert_eq!(code, 0, "{err}");

    let ev = t.uses_in(&cg, "use with a presigned target", |v| v["method"] == "GET" && v["detector"] == "bearer_token");
    assert_eq!(
        ev["path"],
        "/bucket/report.csv?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Date=20240101T000000Z&X-Goog-Expires=900\
         &X-Goog-SignedHeaders=host;page=2"
    );
    for secret in [signature.as_str(), "PLANTEDsigner", &private, &refresh, &assertion, &client_secret, &bearer] {
        t.assert_nowhere(secret);
    }
}

/// Starts tests/python/tls_blockers.py with `n` threads, and waits until every one of them
/// is blocked inside SSL_write.
fn block_threads_in_ssl_write(cg: &TestCgroup, dir: &Path, n: usize) -> (Child, BufReader<ChildStdout>) {
    let certs = dir.join(unique("blockers"));
    fs::create_dir_all(&certs).unwrap();
    self_signed_cert(&certs);
    let mut child = cg
        .command(
            &python(),
            &[
                python_script("tls_blockers.py").to_str().unwrap(),
                &n.to_string(),
                certs.join("cert.pem").to_str().unwrap(),
                certs.join("key.pem").to_str().unwrap(),
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child_stdout(&mut child);
    assert_eq!(next_line(&mut out), "BLOCKED");
    (child, out)
}

/// A workload in a pod can keep many threads inside SSL_write (blocked on a peer that never
/// reads, or killed there). At the branch point each left an entry in the kernel's
/// TLS_CALLS map until it was full, and from then on no TLS write on the node was captured,
/// silently. The map is shrunk to 64 entries here so 160 threads overflow it; TLS capture
/// must go on, and every write the kernel lost must be counted in agent_stats and in
/// `sigil_agent_kernel_drops_total{reason="tls_call_lost"}`.
#[test]
fn threads_stuck_or_killed_inside_ssl_write_do_not_stop_tls_capture_and_losses_are_counted() {
    const ENTRIES: usize = 64;
    const THREADS: usize = 160;
    let t = traced(&["--tls-calls-entries", &ENTRIES.to_string()]);
    let server = LocalServer::start(Some(&t.dir));
    let cg = TestCgroup::create("trace.slice/ssl-stuck.scope");
    let curl_with = |path: &str, token: &str| {
        let url = format!("https://127.0.0.1:{}{path}", server.port);
        let (code, _, err) = cg.run(Path::new("/usr/bin/curl"), &["-sk", "-o", "/dev/null", &url, "-H", &format!("Authorization: Bearer {token}")]);
        assert_eq!(code, 0, "{err}");
    };

    // 1. Threads blocked inside SSL_write, more than the map holds.
    let (mut blockers, mut out) = block_threads_in_ssl_write(&cg, &t.dir, THREADS);
    let while_blocked = unique("glpat-PLANTEDwhileblocked");
    curl_with("/while-blocked", &while_blocked);
    t.uses_in(&cg, "capture while the map is over-full", |v| v["path"] == "/while-blocked");
    // Let them all return: at least THREADS - ENTRIES find their entry evicted.
    let mut stdin = blockers.stdin.take().unwrap();
    writeln!(stdin, "release").unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "DONE");
    blockers.wait().unwrap();
    // (Other processes on the machine use TLS too, so this is a lower bound only.)
    t.wait_drops("tls_call_lost", (THREADS - ENTRIES) as u64);

    // 2. Threads killed inside SSL_write: their entries are never removed by a return.
    let (mut doomed, _out) = block_threads_in_ssl_write(&cg, &t.dir, THREADS);
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let after_kill = unique("glpat-PLANTEDafterkill");
    curl_with("/after-kill", &after_kill);
    t.uses_in(&cg, "capture after threads died inside SSL_write", |v| v["path"] == "/after-kill");

    // The loss is a metric too, labelled by reason.
    let metrics = scrape_metrics(&t.metrics);
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("sigil_agent_kernel_drops_total") && l.contains("reason=\"tls_call_lost\""))
        .unwrap_or_else(|| panic!("no tls_call_lost drop counter in /metrics:\n{metrics}"));
    let value: f64 = counted.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value >= (THREADS - ENTRIES) as f64, "{counted}");
    for token in [&while_blocked, &after_kill] {
        t.assert_nowhere(token);
    }
}

/// A workload that sends its API key over plain HTTP with gathered writes (sendmsg with an
/// iovec per header line, writev) went unseen at the branch point, which only copied
/// write() and sendto(). Both are captured now, and the keys are only fingerprinted.
#[test]
fn plain_http_sent_with_sendmsg_or_writev_is_captured() {
    let t = traced(&[]);
    let server = LocalServer::start(None);
    let cg = TestCgroup::create("trace.slice/iov.scope");
    let key = unique("sk-proj-PLANTEDsendmsg");
    let token = unique("xoxb-PLANTEDwritev");
    let (code, out, err) = cg.run(&python(), &[python_script("iov_client.py").to_str().unwrap(), &server.port.to_string(), &key, &token]);
    assert_eq!((code, out.as_str()), (0, "DONE"), "{err}");

    let sent = t.uses_in(&cg, "API key sent with sendmsg", |v| v["path"] == "/via-sendmsg");
    assert_eq!(sent["detector"], "api_key");
    assert_eq!(sent["transport"], "plain");
    assert_eq!(sent["identifiers"]["header"], "x-api-key");
    assert_eq!(sent["identifiers"]["token_family"], "openai");
    assert_eq!(sent["destination"]["port"], server.port);
    assert_eq!(sent["fingerprint"], t.fingerprint_of(&key).as_str());
    let written = t.uses_in(&cg, "bearer token sent with writev", |v| v["path"] == "/via-writev");
    assert_eq!(written["method"], "POST");
    assert_eq!(written["detector"], "bearer_token");
    assert_eq!(written["identifiers"]["token_family"], "slack");
    assert_eq!(written["fingerprint"], t.fingerprint_of(&token).as_str());
    for secret in [&key, &token] {
        t.assert_nowhere(secret);
    }
}

/// nginx (Debian's nginx-light) serving plain HTTP on loopback behind `proxy_protocol`, as
/// a backend behind a load balancer does: it requires a PROXY protocol header first, and
/// answers with the client address that header claimed.
struct ProxiedNginx {
    child: Child,
    port: u16,
}

impl ProxiedNginx {
    fn start(dir: &Path) -> Self {
        let prefix = dir.join("nginx");
        fs::create_dir_all(&prefix).unwrap();
        // nginx cannot bind port 0 and say which port it got: a port that another socket
        // takes between the choice and the bind makes nginx exit, and the next try
        // picks another.
        for _ in 0..5 {
            let port = free_port();
            let temp = |name: &str| format!("{name}_temp_path {};", prefix.join(name).display());
            let conf = format!(
                "daemon off; master_process off; pid {pid}; error_log stderr notice;
                 events {{ worker_connections 64; }}
                 http {{ access_log off; {client_body} {proxy} {fastcgi} {uwsgi} {scgi}
                   server {{ listen 127.0.0.1:{port} proxy_protocol;
                     location / {{ default_type text/plain; return 200 \"client $proxy_protocol_addr\\n\"; }} }} }}",
                pid = prefix.join("nginx.pid").display(),
                client_body = temp("client_body"),
                proxy = temp("proxy"),
                fastcgi = temp("fastcgi"),
                uwsgi = temp("uwsgi"),
                scgi = temp("scgi"),
            );
            let conf_path = prefix.join("nginx.conf");
            fs::write(&conf_path, conf).unwrap();
            let mut child = std::process::Command::new("/usr/sbin/nginx")
                .args(["-p", prefix.to_str().unwrap(), "-c", conf_path.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx (Debian package nginx-light)");
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { child, port };
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nginx did not start listening");
    }
}

impl Drop for ProxiedNginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An evader in a pod sends its token to a server that takes the PROXY protocol (nginx,
/// as behind a load balancer), opening the connection with the header that server
/// expects: version 1 from an unmodified curl (`--haproxy-protocol`), and version 2 (a
/// binary header, with a TLV) from a raw socket. The agent used to take the header for a
/// protocol other than HTTP, told the kernel to stop copying the connection, and never
/// saw the token. nginx's answer (the client address the header claimed) shows the
/// server read each header.
#[test]
fn a_proxy_protocol_header_before_the_request_does_not_blind_the_agent() {
    let t = traced(&[]);
    let nginx = ProxiedNginx::start(&t.dir);
    let v2_client = python_script("proxy_v2_client.py");
    for (version, claimed) in [("v1", "client 127.0.0.1"), ("v2", "client 10.9.8.7")] {
        let cg = TestCgroup::create(&format!("trace.slice/proxy-{version}.scope"));
        let token = unique(&format!("PLANTED-proxy-{version}"));
        let path = format!("/after-{version}");
        let (code, out, err) = match version {
            "v1" => {
                let url = format!("http://127.0.0.1:{}{path}", nginx.port);
                cg.run(Path::new("/usr/bin/curl"), &["-s", "--haproxy-protocol", &url, "-H", &format!("Authorization: Bearer {token}")])
            }
            _ => cg.run(&python(), &[v2_client.to_str().unwrap(), &nginx.port.to_string(), &path, &token]),
        };
        assert_eq!(code, 0, "{version}: {err}");
        assert!(out.contains(claimed), "{version}: nginx read the header and answered: {out}");

        let used = t.uses_in(&cg, &format!("the token sent after a PROXY {version} header"), |v| v["path"] == path.as_str());
        assert_bearer_use(&t, &used, "plain", nginx.port, &token);
    }
}

/// `used` is the bearer `token` sent over `transport` to `port`, fingerprinted, and the
/// token itself is kept nowhere.
fn assert_bearer_use(t: &Traced, used: &Value, transport: &str, port: u16, token: &str) {
    assert_eq!(used["transport"], transport, "{used}");
    assert_eq!(used["detector"], "bearer_token", "{used}");
    assert_eq!(used["destination"]["port"], port, "{used}");
    assert_eq!(used["fingerprint"], t.fingerprint_of(token).as_str(), "{used}");
    t.assert_nowhere(token);
}

/// An evader in a pod opens a TLS connection with a first write that its server accepts
/// but that starts with no known method, then sends its token on that connection. At the
/// branch point the agent judged a connection by its first write against a list of
/// methods, told the kernel to stop copying it, and never saw the token. Each move runs
/// against a server that accepts it: an empty line in a write of its own before the
/// request (Node's https server skips it), and a whole request with a made-up method
/// first (Go's net/http answers it and keeps the connection).
#[test]
fn a_first_write_a_server_accepts_does_not_blind_the_agent_to_the_connection() {
    let t = traced(&[]);
    self_signed_cert(&t.dir);
    let (cert, key) = (t.dir.join("cert.pem"), t.dir.join("key.pem"));
    let go_server = go_build(&t.dir, "tls_server", "tls_server", &[]);
    let node_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("node/https_server.js");
    let node = LocalServer::spawn(std::process::Command::new(official_node()).arg(&node_script).arg(&cert).arg(&key));
    let go = LocalServer::spawn(std::process::Command::new(&go_server).arg(&cert).arg(&key));

    for (step, server, statuses) in [("blank-line", &node, "200 DONE"), ("unknown-method", &go, "200 200 DONE")] {
        let cg = TestCgroup::create(&format!("trace.slice/first-{step}.scope"));
        let token = unique(&format!("PLANTED-{step}"));
        let (code, out, err) = cg.run(&python(), &[python_script("tls_first_write.py").to_str().unwrap(), step, &server.port.to_string(), &token]);
        // The server took the evader's first write and answered the request after it.
        assert_eq!((code, out.as_str()), (0, statuses), "{step}: {err}");

        let path = format!("/after-{step}");
        let used = t.uses_in(&cg, &format!("the token sent after the {step}"), |v| v["path"] == path.as_str());
        assert_bearer_use(&t, &used, "tls", server.port, &token);
    }
}
