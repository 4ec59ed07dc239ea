#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Fleet issuance: one collector signs for every node and serves the one OIDC issuer;
//! agents attest, decide and cache. Real agents on the real kernel, a real collector with
//! real mTLS (openssl certificates), real clients (py-spiffe, PyJWT, curl).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use sigil_proto::v1::{Event, PushRequest, SignJwtRequest, ingest_client::IngestClient, signer_client::SignerClient};
use sigil_proto::{CONTRACT_VERSION, EventBody};
use sigil_tests::{pki::Pki, *};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const TD: &str = "sigil.test";
const AUDIENCE: &str = "sts.amazonaws.com";

fn node_id(name: &str) -> String {
    format!("URI:spiffe://{TD}/sigil/node/{name}")
}

/// A CA, the collector's server certificate, one client certificate per node, and an
/// operator's certificate (not a node).
fn pki(dir: &Path, nodes: &[&str]) -> Pki {
    let pki = Pki::new(dir);
    pki.issue("server", "IP:127.0.0.1", "serverAuth");
    for n in nodes {
        pki.issue(n, &node_id(n), "clientAuth");
    }
    pki.issue("operator", &format!("URI:spiffe://{TD}/operators/alice"), "clientAuth");
    pki
}

/// Registration entries shared by the signer and every agent: one py-spiffe workload per
/// node, bound to that node, plus a short-lived one on node-0.
fn policy(nodes: &[&str]) -> String {
    let python = fs::canonicalize(python()).unwrap();
    let mut p = format!("trust_domain = \"{TD}\"\n");
    for n in nodes {
        p += &format!(
            "\n[[entry]]\nspiffe_id = \"spiffe://{TD}/fleet/{n}\"\nselectors = [\"node:name:{n}\", \"systemd:unit:fleet-{n}.service\", \"unix:path:{}\"]\n",
            python.display()
        );
    }
    p += &format!(
        "\n[[entry]]\nspiffe_id = \"spiffe://{TD}/fleet/short\"\nttl_seconds = 40\nselectors = [\"node:name:{}\", \"systemd:unit:fleet-short.service\", \"unix:path:{}\"]\n",
        nodes[0],
        python.display()
    );
    p += &format!(
        "\n[[entry]]\nspiffe_id = \"spiffe://{TD}/fleet/half\"\nttl_seconds = 6\nselectors = [\"node:name:{}\", \"systemd:unit:fleet-half.service\", \"unix:path:{}\"]\n",
        nodes[0],
        python.display()
    );
    p
}

/// `sigil-collector serve` with mTLS, the signer (keys sealed with a KEK file) and the
/// OIDC issuer over HTTPS.
struct FleetCollector {
    collector: Collector,
    grpc: u16,
    http: u16,
    issuer: String,
}

fn start_collector(dir: &Path, pki: &Pki, ports: (u16, u16, u16)) -> FleetCollector {
    let (grpc, http, oidc) = ports;
    let (policy, kek) = (dir.join("policy.toml").display().to_string(), dir.join("kek").display().to_string());
    let (cert, key, ca) = (pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem"));
    let oidc_listen = format!("127.0.0.1:{oidc}");
    let args = [
        &["--tls-cert", &cert, "--tls-key", &key, "--client-ca", &ca][..],
        &["--signer-policy", &policy, "--signer-kek-file", &kek],
        &["--oidc-listen", &oidc_listen, "--oidc-cert", &cert, "--oidc-key", &key],
        &["--max-token-ttl-seconds", "120", "--key-rotation-seconds", "3600"],
    ]
    .concat();
    let collector = Collector::start_with(&dir.join("c.db"), grpc, http, &args);
    FleetCollector { collector, grpc, http, issuer: format!("https://127.0.0.1:{oidc}") }
}

impl FleetCollector {
    fn kill(self) {
        self.collector.kill();
    }
}

struct Setup {
    dir: PathBuf,
    pki: Pki,
}

impl Setup {
    fn new(nodes: &[&str]) -> Self {
        let dir = scratch_dir();
        let pki = pki(&dir, nodes);
        fs::write(dir.join("policy.toml"), policy(nodes)).unwrap();
        fs::write(dir.join("kek"), "5a".repeat(32)).unwrap();
        Self { dir, pki }
    }

    /// A real agent for `node`, streaming to and signing through the collector.
    fn agent(&self, node: &str, c: &FleetCollector) -> Agent {
        let url = format!("https://127.0.0.1:{}", c.grpc);
        let p = |f: &str| self.pki.path(f);
        let agent = Agent::start(&[
            "--no-trace",
            "--no-scan",
            "--node-name",
            node,
            "--state-dir",
            &self.dir.join(format!("state-{node}")).display().to_string(),
            "--policy",
            &self.dir.join("policy.toml").display().to_string(),
            "--socket",
            &self.socket(node).display().to_string(),
            "--collector",
            &url,
            "--signer",
            &url,
            "--collector-ca",
            &p("ca.pem"),
            "--collector-cert",
            &p(&format!("{node}.pem")),
            "--collector-key",
            &p(&format!("{node}.key")),
        ]);
        agent.stderr.wait_line("Workload API start", |l| l.contains("Workload API on"));
        agent
    }

    fn socket(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.sock"))
    }

    /// A raw mTLS channel to the collector as `who` (a node or the operator): what a
    /// compromised node holding its own key can send.
    fn channel(&self, who: &str, grpc: u16) -> Channel {
        let read = |f: &str| fs::read(self.dir.join(f)).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem")))
            .identity(Identity::from_pem(read(&format!("{who}.pem")), read(&format!("{who}.key"))));
        let ep = Endpoint::from_shared(format!("https://127.0.0.1:{grpc}")).unwrap().tls_config(tls).unwrap();
        runtime().block_on(ep.connect()).unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One runtime for every gRPC call of the test binary: a channel's connection task lives
/// on the runtime that created it.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap())
}

/// py-spiffe in the node's workload cgroup: fetches a JWT-SVID, validates it against the
/// bundle the agent serves and through ValidateJWTSVID.
fn py_spiffe(cg: &TestCgroup, socket: &Path, audience: &str) -> Value {
    let (code, out, err) = cg.run(&python(), &[&python_script("spiffe_client.py").display().to_string(), &socket.display().to_string(), audience]);
    assert_eq!(code, 0, "py-spiffe failed: {err}");
    serde_json::from_str(&out).unwrap()
}

/// PyJWT, as a cloud STS would: discovery document, JWKS, signature, iss, aud, exp, all
/// over HTTPS from the one issuer.
fn pyjwt(token: &str, issuer: &str, audience: &str, ca: &str) -> Result<Value, String> {
    let out = Command::new(python()).arg(python_script("verify_jwt.py")).args([token, issuer, audience]).env("SSL_CERT_FILE", ca).output().unwrap();
    if out.status.success() { Ok(serde_json::from_slice(&out.stdout).unwrap()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

/// curl (a real HTTPS client); returns (HTTP status, body).
fn curl(url: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl").args(["-s", "-w", "\n%{http_code}"]).args(args).arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn jwks(c: &FleetCollector, ca: &str) -> Value {
    let (code, body) = curl(&format!("{}/keys", c.issuer), &["--cacert", ca]);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn three_nodes_one_issuer_tokens_survive_agent_and_collector_restarts_and_rotation() {
    let nodes = ["node-0", "node-1", "node-2"];
    let s = Setup::new(&nodes);
    let ca = s.pki.path("ca.pem");
    let ports = (free_port(), free_port(), free_port());
    let c = start_collector(&s.dir, &s.pki, ports);
    let mut agents: Vec<Agent> = nodes.iter().map(|n| s.agent(n, &c)).collect();
    let cgroups: Vec<TestCgroup> = nodes.iter().map(|n| TestCgroup::create(&format!("system.slice/fleet-{n}.service"))).collect();

    // One token per node, by py-spiffe, each verified by PyJWT against the one issuer.
    let mut tokens = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let v = py_spiffe(&cgroups[i], &s.socket(n), AUDIENCE);
        assert_eq!(v["spiffe_id"], format!("spiffe://{TD}/fleet/{n}"));
        assert_eq!(v["local_spiffe_id"], v["spiffe_id"], "validated against the bundle the agent serves");
        assert_eq!(v["remote_spiffe_id"], v["spiffe_id"], "validated by ValidateJWTSVID");
        let token = v["token"].as_str().unwrap().to_owned();
        let claims = pyjwt(&token, &c.issuer, AUDIENCE, &ca).unwrap();
        assert_eq!(claims["claims"]["iss"], c.issuer.as_str());
        assert_eq!(claims["claims"]["sigil_node"], *n, "the node is the one whose certificate asked");
        tokens.push((token, claims["header"]["kid"].as_str().unwrap().to_owned()));
    }
    let before = jwks(&c, &ca);
    assert!(kids(&before).len() <= 3, "at most 3 keys: {before}");
    assert!(tokens.iter().all(|(_, k)| *k == tokens[0].1), "every node's token is signed by the one current key");

    // Restart an agent: its earlier token still verifies (it never held the key).
    drop(agents.remove(1));
    agents.insert(1, s.agent("node-1", &c));
    pyjwt(&tokens[1].0, &c.issuer, AUDIENCE, &ca).expect("node-1's earlier token after its agent restarted");

    // Restart the collector (same database, same KEK): same JWKS, earlier tokens verify.
    c.kill();
    let c = start_collector(&s.dir, &s.pki, ports);
    assert_eq!(jwks(&c, &ca), before, "the JWKS is unchanged across a collector restart");
    for (t, _) in &tokens {
        pyjwt(t, &c.issuer, AUDIENCE, &ca).expect("earlier token after the collector restarted");
    }
    // And the restarted agent still gets tokens through it.
    let again = py_spiffe(&cgroups[1], &s.socket("node-1"), "after-restart");
    pyjwt(again["token"].as_str().unwrap(), &c.issuer, "after-restart", &ca).unwrap();

    // Rotate: the next key (already published) signs new tokens; old tokens verify until
    // they expire; the JWKS never holds more than three keys.
    let short_cg = TestCgroup::create("system.slice/fleet-short.service");
    let short = py_spiffe(&short_cg, &s.socket("node-0"), AUDIENCE)["token"].as_str().unwrap().to_owned();
    let short_v = pyjwt(&short, &c.issuer, AUDIENCE, &ca).unwrap();
    let old_kid = short_v["header"]["kid"].as_str().unwrap().to_owned();
    let short_exp = short_v["claims"]["exp"].as_u64().unwrap();
    let published_before = kids(&jwks(&c, &ca));
    let out = Command::new(sibling_bin("sigil-collector"))
        .arg("--db")
        .arg(s.dir.join("c.db"))
        .args(["rotate-keys", "--signer-kek-file", &s.dir.join("kek").display().to_string()])
        .args(["--max-token-ttl-seconds", "120", "--key-rotation-seconds", "3600"])
        .output()
        .unwrap();
    assert!(out.status.success(), "rotate-keys: {}", String::from_utf8_lossy(&out.stderr));
    // The running collector picks the rotation up from the database within seconds.
    let deadline = Instant::now() + WAIT;
    let new_kid = loop {
        // A new audience each time, so the agent's cache cannot answer.
        let aud = unique("aud-");
        let v = py_spiffe(&cgroups[2], &s.socket("node-2"), &aud);
        let kid = pyjwt(v["token"].as_str().unwrap(), &c.issuer, &aud, &ca).unwrap()["header"]["kid"].as_str().unwrap().to_owned();
        if kid != old_kid {
            break kid;
        }
        assert!(Instant::now() < deadline, "new tokens never used the new key");
        thread::sleep(Duration::from_millis(500));
    };
    assert!(published_before.contains(&new_kid), "the new key was published before it signed anything");
    let after = kids(&jwks(&c, &ca));
    assert!(after.len() <= 3, "{after:?}");
    assert!(after.contains(&old_kid), "the retired key stays published while its tokens live");
    pyjwt(&short, &c.issuer, AUDIENCE, &ca).expect("an old token verifies after rotation");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    thread::sleep(Duration::from_secs(short_exp.saturating_sub(now) + 2));
    let e = pyjwt(&short, &c.issuer, AUDIENCE, &ca).unwrap_err();
    assert!(e.contains("expired"), "until it expires: {e}");
    // No private key in the clear in the database the replicas share.
    let mut db = fs::read(s.dir.join("c.db")).unwrap();
    db.extend(fs::read(s.dir.join("c.db-wal")).unwrap_or_default());
    let pkcs8_ec_header = [0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    assert!(!db.windows(pkcs8_ec_header.len()).any(|w| w == pkcs8_ec_header), "a PKCS#8 EC private key is in the database");
    drop(agents);
}

/// One typed contract event (kind in the JSON), as an agent sends it.
fn event(id: &str, json: &str) -> Event {
    Event { id: id.into(), body: Some(EventBody::from_json(json.as_bytes()).unwrap()), ..Default::default() }
}

fn push(node: &str, events: Vec<Event>) -> PushRequest {
    PushRequest { node: node.into(), events, contract_version: CONTRACT_VERSION }
}

/// A compromised node (its own valid certificate) pushes events claiming another node:
/// refused, counted, and nothing is stored under either name.
#[test]
fn a_compromised_node_cannot_push_events_as_another_node() {
    let s = Setup::new(&["node-a", "node-b"]);
    let c = start_collector(&s.dir, &s.pki, (free_port(), free_port(), free_port()));
    let mut a = IngestClient::new(s.channel("node-a", c.grpc));
    let forged = push("node-b", vec![event("forged-1", r#"{"kind":"process_exec","exec_id":"b:1:2:3"}"#)]);
    let err = runtime().block_on(a.push(forged)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("node-a") && err.message().contains("node-b"), "{}", err.message());
    // Its own name (or none) is accepted, and stored under the certificate's node.
    let own = push("", vec![event("own-1", r#"{"kind":"agent_stats"}"#)]);
    assert_eq!(runtime().block_on(a.push(own)).unwrap().into_inner().stored, 1);
    let conn = rusqlite::Connection::open(s.dir.join("c.db")).unwrap();
    let rows: Vec<(String, String)> = conn
        .prepare("SELECT st.s || '-' || e.seq, n.node FROM events e JOIN strings st ON st.id = e.stream JOIN nodes n USING (node_id)")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, [("own-1".to_owned(), "node-a".to_owned())]);
    // Counted: the operator reads the metric over HTTPS with its client certificate.
    let (code, body) = curl(
        &format!("https://127.0.0.1:{}/metrics", c.http),
        &["--cacert", &s.pki.path("ca.pem"), "--cert", &s.pki.path("operator.pem"), "--key", &s.pki.path("operator.key")],
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.lines().any(|l| l.starts_with("sigil_collector_node_mismatch") && l.trim_end().ends_with(" 1")), "{body}");
}

/// A compromised node pre-inserts another node's event ids, exec ids and jti. Node B's
/// real events must still be stored, its process rows must stay its own, and its jti must
/// stay attributed to its run.
#[test]
fn a_compromised_node_cannot_shadow_or_overwrite_another_nodes_events() {
    let s = Setup::new(&["node-a", "node-b"]);
    let c = start_collector(&s.dir, &s.pki, (free_port(), free_port(), free_port()));
    let exec = |node: &str| {
        format!(
            r#"{{"kind":"process_exec","exec_id":"boot:42:7:9","pid":42,"ppid":1,"binary":{{"path":"/bin/{node}"}},"workload":{{"kind":"cgroup"}},"cgroup":{{"path":"/{node}"}}}}"#
        )
    };
    let issued = r#"{"kind":"token_issued","jti":"feedfacefeedfacefeedfacefeedface","spiffe_id":"spiffe://sigil.test/x","process":{"exec_id":"boot:42:7:9"}}"#;
    let batch = |node: &str| push(node, vec![event("spool-1", &exec(node)), event("spool-2", issued)]);
    // The attacker goes first, with B's ids.
    runtime().block_on(IngestClient::new(s.channel("node-a", c.grpc)).push(batch("node-a"))).unwrap();
    let out = runtime().block_on(IngestClient::new(s.channel("node-b", c.grpc)).push(batch("node-b"))).unwrap().into_inner();
    assert_eq!(out.stored, 2, "B's events are stored, not shadowed as duplicates");
    let conn = rusqlite::Connection::open(s.dir.join("c.db")).unwrap();
    let b_binary: String = conn.query_row("SELECT binary_path FROM processes_v JOIN nodes USING (node_id) WHERE node = 'node-b'", [], |r| r.get(0)).unwrap();
    assert_eq!(b_binary, "/bin/node-b", "B's process row is B's own");
    let a_binary: String = conn.query_row("SELECT binary_path FROM processes_v JOIN nodes USING (node_id) WHERE node = 'node-a'", [], |r| r.get(0)).unwrap();
    assert_eq!(a_binary, "/bin/node-a", "and A's did not overwrite it");
    let jti_nodes: i64 =
        conn.query_row("SELECT count(DISTINCT node_id) FROM token_issuances WHERE jti = 'feedfacefeedfacefeedfacefeedface'", [], |r| r.get(0)).unwrap();
    assert_eq!(jti_nodes, 2, "each node's issuance is kept under its own node");
}

/// A compromised node asks the signer for a SPIFFE ID registered for another node (and,
/// separately, claims to be that node): refused, and each refusal is a stored event.
#[test]
fn a_compromised_node_cannot_get_another_nodes_spiffe_id_signed() {
    let s = Setup::new(&["node-a", "node-b"]);
    let c = start_collector(&s.dir, &s.pki, (free_port(), free_port(), free_port()));
    let ask = |who: &str, node: &str, id: &str| {
        let mut client = SignerClient::new(s.channel(who, c.grpc));
        let req = SignJwtRequest { node: node.into(), spiffe_id: id.into(), audience: vec![AUDIENCE.into()], ttl_seconds: 60, evidence: None };
        runtime().block_on(client.sign_jwt(req))
    };
    let b_id = format!("spiffe://{TD}/fleet/node-b");
    let err = ask("node-a", "node-a", &b_id).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("not_allowed_on_node") && err.message().contains("node-b"), "{}", err.message());
    let err = ask("node-a", "node-b", &b_id).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "claiming node-b in the payload does not help");
    // The rightful node gets it, with its node in the token.
    let ok = ask("node-b", "node-b", &b_id).unwrap().into_inner();
    let claims = pyjwt(&ok.token, &c.issuer, AUDIENCE, &s.pki.path("ca.pem")).unwrap();
    assert_eq!(claims["claims"]["sigil_node"], "node-b");
    assert_eq!(claims["claims"]["sub"], b_id.as_str());

    let conn = rusqlite::Connection::open(s.dir.join("c.db")).unwrap();
    let denials: Vec<(String, String, String)> = conn
        .prepare("SELECT n.node, d.reason, d.spiffe_id FROM token_denials d JOIN nodes n USING (node_id) ORDER BY d.time, d.rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        denials,
        [("node-a".to_owned(), "not_allowed_on_node".to_owned(), b_id.clone()), ("node-a".to_owned(), "node_mismatch".to_owned(), b_id.clone()),]
    );
}

/// The collector is stopped: a workload whose token is cached still gets it; one without
/// a cached token gets UNAVAILABLE naming the signer.
#[test]
fn with_the_signer_down_cached_tokens_are_served_and_others_get_unavailable() {
    let s = Setup::new(&["node-0"]);
    let c = start_collector(&s.dir, &s.pki, (free_port(), free_port(), free_port()));
    let signer_url = format!("https://127.0.0.1:{}", c.grpc);
    let agent = s.agent("node-0", &c);
    let cg = TestCgroup::create("system.slice/fleet-node-0.service");
    let first = py_spiffe(&cg, &s.socket("node-0"), AUDIENCE);
    let again = py_spiffe(&cg, &s.socket("node-0"), AUDIENCE);
    assert_eq!(first["token"], again["token"], "served from the cache while more than half its lifetime is left");
    // Past half of its lifetime, a new token is signed.
    let half = TestCgroup::create("system.slice/fleet-half.service");
    let h1 = py_spiffe(&half, &s.socket("node-0"), AUDIENCE);
    let issued = h1["expiry"].as_i64().unwrap() - 6;
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    thread::sleep(Duration::from_secs((issued + 4 - now()).max(0) as u64));
    let h2 = py_spiffe(&half, &s.socket("node-0"), AUDIENCE);
    assert_ne!(h1["token"], h2["token"], "a token past half its lifetime is not served again");
    c.kill();
    let cached = py_spiffe(&cg, &s.socket("node-0"), AUDIENCE);
    assert_eq!(cached["token"], first["token"], "the cached token is still served with the signer down");
    // A workload without a cached token: the same identity for a new audience.
    let (code, out, err) = cg.run(&python(), &[
        "-c",
        "import sys\nfrom spiffe import WorkloadApiClient\ntry:\n    WorkloadApiClient(socket_path='unix://'+sys.argv[1]).fetch_jwt_svid(audience={'never-cached'})\nexcept Exception as e:\n    print(repr(e)); sys.exit(3)",
        &s.socket("node-0").display().to_string(),
    ]);
    assert_eq!(code, 3, "py-spiffe must fail: {out} {err}");
    assert!(out.contains("UNAVAILABLE") && out.contains(&signer_url), "py-spiffe sees UNAVAILABLE naming the signer: {out}");
    let denied = agent.wait_event("token_denied signer_unavailable", |v| v["kind"] == "token_denied" && v["reason"] == "signer_unavailable");
    let detail = denied["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("cluster signer at {signer_url}")), "the message names the signer: {detail}");
}

/// A network peer without credentials reaches the HTTP API off loopback: it gets nothing.
/// A node's certificate gets nothing either; an operator's certificate or the bearer
/// token does.
#[test]
fn a_network_peer_without_credentials_gets_nothing_from_the_http_api() {
    let s = Setup::new(&["node-a"]);
    let (grpc, http) = (free_port(), free_port());
    let token = "operator-token-0123456789abcdef";
    fs::write(s.dir.join("token"), format!("{token}\n")).unwrap();
    // Off loopback without TLS: refused at start.
    let out = Command::new(sibling_bin("sigil-collector"))
        .arg("--db")
        .arg(s.dir.join("plain.db"))
        .args(["serve", "--grpc-listen", &format!("127.0.0.1:{grpc}"), "--http-listen", &format!("0.0.0.0:{http}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing a plaintext HTTP API"), "{}", String::from_utf8_lossy(&out.stderr));

    let tls = ["--tls-cert", &s.pki.path("server.pem"), "--tls-key", &s.pki.path("server.key"), "--client-ca", &s.pki.path("ca.pem")];
    let token_file = s.dir.join("token").display().to_string();
    let collector = Collector::start_at(&s.dir.join("c.db"), "0.0.0.0", grpc, http, &[&tls[..], &["--http-token-file", &token_file]].concat());
    let ca = s.pki.path("ca.pem");
    let url = |p: &str| format!("https://127.0.0.1:{http}{p}");
    for path in ["/v1/query/posture", "/v1/query/unattributed", "/metrics"] {
        let (code, body) = curl(&url(path), &["--cacert", &ca]);
        assert_eq!(code, 401, "{path} without credentials: {body}");
        assert!(!body.contains("cloud_actions"), "{body}");
        let (code, _) = curl(&url(path), &["--cacert", &ca, "-H", "Authorization: Bearer wrong-token-0123456789"]);
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, body) = curl(&url(path), &["--cacert", &ca, "--cert", &s.pki.path("node-a.pem"), "--key", &s.pki.path("node-a.key")]);
        assert_eq!(code, 403, "{path} with a node certificate: {body}");
        let (code, _) = curl(&url(path), &["--cacert", &ca, "--cert", &s.pki.path("operator.pem"), "--key", &s.pki.path("operator.key")]);
        assert_eq!(code, 200, "{path} with an operator certificate");
        let (code, _) = curl(&url(path), &["--cacert", &ca, "-H", &format!("Authorization: Bearer {token}")]);
        assert_eq!(code, 200, "{path} with the token");
    }
    // The operator's CLI: refused without credentials, answered with a token or a certificate.
    let sigil =
        |extra: &[&str]| Command::new(sibling_bin("sigil")).args(["--collector", &url(""), "--ca", &ca, "--json"]).args(extra).arg("posture").output().unwrap();
    let out = sigil(&[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("required"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(sigil(&["--token-file", &token_file]).status.success());
    assert!(sigil(&["--cert", &s.pki.path("operator.pem"), "--key", &s.pki.path("operator.key")]).status.success());
    let out = sigil(&["--cert", &s.pki.path("node-a.pem"), "--key", &s.pki.path("node-a.key")]);
    assert!(!out.status.success(), "a node certificate does not make an operator");
    // Uploads follow the same rule.
    let (code, _) = curl(&url("/v1/ingest/cloudtrail"), &["--cacert", &ca, "-X", "POST", "--data-binary", r#"{"Records":[]}"#]);
    assert_eq!(code, 401);
    let (code, _) = curl(
        &url("/v1/ingest/cloudtrail"),
        &["--cacert", &ca, "-H", &format!("Authorization: Bearer {token}"), "-X", "POST", "--data-binary", r#"{"Records":[]}"#],
    );
    assert_eq!(code, 200);
    // Plain HTTP to the TLS port gets no answer either.
    let (code, _) = curl(&format!("http://127.0.0.1:{http}/v1/query/posture"), &[]);
    assert_ne!(code, 200);
    let log = collector.log.snapshot();
    collector.kill();
    assert!(log.iter().all(|l| !l.contains(token)), "the token never appears in the log");
}
