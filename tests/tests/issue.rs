#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Token issuance against the real kernel: a real agent with a real socket, workloads as
//! real processes in real cgroups, tokens verified by third-party code (PyJWT, py-spiffe).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use sigil_tests::{
    workload_api::{self, Call},
    *,
};

const POD_UID: &str = "6b1f0c52-93a4-4e1d-8f0b-2c7d9e4a5b61";
const CONTAINER: &str = "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc";
const AUDIENCE: &str = "sts.amazonaws.com";
const ID: &str = "spiffe://sigil.test/ns/payments/sa/checkout";

struct Node {
    dir: PathBuf,
    agent: Agent,
    socket: PathBuf,
    issuer: String,
    policy: PathBuf,
    pod: TestCgroup,
    client: PathBuf,
}

fn pod_layout() -> String {
    format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CONTAINER}.scope", POD_UID.replace('-', "_"))
}

fn policy_for(client_sha: &str, ttl: u64, extra_selector: Option<&str>) -> String {
    let extra = extra_selector.map(|s| format!(", \"{s}\"")).unwrap_or_default();
    format!(
        r#"trust_domain = "sigil.test"

[[entry]]
spiffe_id = "{ID}"
ttl_seconds = {ttl}
selectors = ["k8s:ns:payments", "k8s:sa:checkout", "unix:sha256:{client_sha}", "cgroup:path:/sigil-test-*/kubepods.slice/**"{extra}]
"#
    )
}

/// An agent issuing tokens for `client` (a copy of the agent binary) in a containerd pod.
fn node(ttl: u64, extra_args: &[&str]) -> Node {
    let dir = scratch_dir();
    let client = unique_client(&dir, "checkout");
    let policy = dir.join("policy.toml");
    fs::write(&policy, policy_for(&sha256sum(&client), ttl, None)).unwrap();
    let pods = dir.join("pods.toml");
    fs::write(&pods, format!("[[pod]]\nuid = \"{POD_UID}\"\nnamespace = \"payments\"\nservice_account = \"checkout\"\n")).unwrap();
    let socket = dir.join("workload.sock");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = vec![
        "--policy".into(),
        policy.display().to_string(),
        "--pods".into(),
        pods.display().to_string(),
        "--socket".into(),
        socket.display().to_string(),
        "--oidc-listen".into(),
        listen.clone(),
    ];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&arg_refs);
    agent.stderr.wait_line("Workload API start", |l| l.contains("Workload API on"));
    let pod = TestCgroup::create(&pod_layout());
    Node { dir, agent, socket, issuer: format!("http://{listen}"), policy, pod, client }
}

impl Node {
    /// `program token --audience ...` run inside `cg`.
    fn token(&self, cg: &TestCgroup, program: &Path) -> (i32, String, String) {
        cg.run(program, &["token", "--audience", AUDIENCE, "--socket", &self.socket.display().to_string()])
    }

    fn verify(&self, token: &str) -> Value {
        let out = Command::new(python()).arg(python_script("verify_jwt.py")).args([token, &self.issuer, AUDIENCE]).output().unwrap();
        assert!(out.status.success(), "PyJWT refused the token: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn denial(&self, reason: &str) -> Value {
        self.agent.wait_event(&format!("token_denied {reason}"), |v| v["kind"] == "token_denied" && v["reason"] == reason)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_registered_workload_gets_a_token_that_verifies_against_the_served_jwks() {
    let n = node(120, &[]);
    let (code, token, err) = n.token(&n.pod, &n.client);
    assert_eq!(code, 0, "stderr: {err}");
    let v = n.verify(&token);
    let c = &v["claims"];
    assert_eq!(v["header"]["alg"], "ES256");
    assert!(v["header"]["kid"].as_str().is_some_and(|k| !k.is_empty()));
    assert_eq!(c["sub"], ID);
    assert_eq!(c["aud"], AUDIENCE);
    assert_eq!(c["iss"], n.issuer.as_str());
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 120, "entry TTL");
    // Bound to the attested run.
    assert_eq!(c["sigil_pod_uid"], POD_UID);
    assert_eq!(c["sigil_container_id"], CONTAINER);
    assert_eq!(c["sigil_binary_sha256"], sha256sum(&n.client).as_str());
    assert_eq!(c["sigil_cgroup"], n.pod.path.as_str());
    assert!(c["sigil_exec_id"].as_str().is_some_and(|e| e.contains(':')));

    let issued = n.agent.wait_event("token_issued", |e| e["kind"] == "token_issued" && e["jti"] == c["jti"]);
    assert_eq!(issued["spiffe_id"], ID);
    assert_eq!(issued["process"]["workload"]["pod_uid"], POD_UID);
    assert_eq!(issued["process"]["binary_sha256"], sha256sum(&n.client).as_str());
    // The token is a bearer secret: it appears in no event and no log line.
    let (_, events) = (0, n.agent.stdout.snapshot());
    assert!(events.iter().all(|l| !l.contains(&token)), "a token leaked into the event stream");
    assert!(n.agent.stderr.snapshot().iter().all(|l| !l.contains(&token)), "a token leaked into the log");
}

/// The client (a copy of the agent binary, hundreds of MB in a debug build) asks for its
/// token while the exec's digest is still being computed in the background. The decision
/// hashes it inline, and the exec keeps one record under one exec id: the token names the
/// exec the collector stores, not a second record made on request.
#[test]
fn a_token_request_that_beats_the_background_hash_keeps_one_exec_record() {
    let n = node(120, &[]);
    let (code, token, err) = n.token(&n.pod, &n.client);
    assert_eq!(code, 0, "stderr: {err}");
    let exec_id = n.verify(&token)["claims"]["sigil_exec_id"].as_str().unwrap().to_owned();
    let issued = n.agent.wait_event("token_issued", |e| e["kind"] == "token_issued");
    assert_eq!(issued["process"]["exec_id"], exec_id.as_str());
    // Wait until the hashing pool is idle (its job for this exec has finished), then count.
    n.agent.wait_event("agent_stats with an idle hashing pool", |e| e["kind"] == "agent_stats" && e["hash"]["pending"].as_u64().unwrap_or(0) == 0);
    let client = n.client.display().to_string();
    let execs: Vec<Value> = n.agent.events().into_iter().filter(|e| e["kind"] == "process_exec" && e["binary"]["path"] == client.as_str()).collect();
    let brief: Vec<String> = execs
        .iter()
        .map(|e| format!("{} source={} sha256={} pending={}", e["exec_id"], e["source"], e["binary"]["sha256"], e["binary"]["hash_pending"]))
        .collect();
    assert_eq!(execs.len(), 1, "one exec, one record: {brief:#?}");
    assert_eq!(execs[0]["exec_id"], exec_id.as_str());
    assert_eq!(execs[0]["binary"]["sha256"], sha256sum(&n.client).as_str());
}

/// The attacker: a workload in the registered pod that runs another binary (a copy of the
/// agent with other trailing bytes, hundreds of MB, so its digest is usually still being
/// computed in the background when it asks). The decision hashes it inline, never decides
/// on a missing digest, and refuses.
#[test]
fn the_same_cgroup_running_another_binary_is_denied_as_a_hash_mismatch() {
    let n = node(120, &[]);
    let impostor = unique_client(&n.dir, "impostor");
    let (code, out, err) = n.token(&n.pod, &impostor);
    assert_ne!(code, 0);
    assert!(out.is_empty(), "no token may be printed");
    assert!(err.contains("binary hash mismatch"), "{err}");
    let d = n.denial("binary_hash_mismatch");
    assert_eq!(d["process"]["binary_sha256"], sha256sum(&impostor).as_str());
    assert_eq!(d["process"]["workload"]["pod_uid"], POD_UID);
}

#[test]
fn an_unregistered_cgroup_is_denied() {
    let n = node(120, &[]);
    let elsewhere = TestCgroup::create("system.slice/unregistered.service");
    let (code, out, err) = n.token(&elsewhere, &n.client);
    assert_ne!(code, 0);
    assert!(out.is_empty());
    assert!(err.contains("no matching entry"), "{err}");
    let d = n.denial("no_matching_entry");
    assert_eq!(d["process"]["cgroup_path"], elsewhere.path.as_str());
}

#[test]
fn requests_without_audience_or_security_header_are_refused() {
    let n = node(120, &[]);
    let e = workload_api::fetch(&n.socket, Call { audience: vec![AUDIENCE.into()], spiffe_id: String::new(), header: false, metadata: vec![] }).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("security header"), "{}", e.message());
    n.denial("missing_security_header");

    let e = workload_api::fetch(&n.socket, Call { audience: vec![], spiffe_id: String::new(), header: true, metadata: vec![] }).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    n.denial("missing_audience");

    // Validation needs the header too, and an audience.
    let e = workload_api::validate(&n.socket, "a.b.c", "").unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

#[test]
fn a_caller_cannot_obtain_another_workloads_identity_by_naming_it() {
    let n = node(120, &[]);
    // A registered workload is running right now.
    let registered = n.pod.spawn(&n.client, &["probe"]);
    let registered_pid = registered.id().to_string();
    // This test process is not registered. It names the registered pid, the pod, the
    // container and the SPIFFE ID every way a request can carry them.
    let e = workload_api::fetch(
        &n.socket,
        Call {
            audience: vec![AUDIENCE.into()],
            spiffe_id: ID.into(),
            header: true,
            metadata: vec![
                ("pid", &registered_pid),
                ("x-forwarded-for", "127.0.0.1"),
                ("x-sigil-pod-uid", POD_UID),
                ("x-sigil-container-id", CONTAINER),
                ("x-spiffe-id", ID),
            ],
        },
    )
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let d = n.denial("no_matching_entry");
    assert_eq!(d["peer_pid"], std::process::id(), "identity came from the kernel, not the request");
    assert_eq!(d["requested_spiffe_id"], ID);
    finish(registered);
}

#[test]
fn no_token_outlives_its_entry_and_rotated_keys_still_verify_until_expiry() {
    let n = node(4, &["--key-rotation-seconds", "1"]);
    let (code, token, err) = n.token(&n.pod, &n.client);
    assert_eq!(code, 0, "{err}");
    let claims = n.verify(&token)["claims"].clone();
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 4);
    let kid = n.verify(&token)["header"]["kid"].as_str().unwrap().to_owned();

    // Wait until the agent has rotated: the active key is a new one.
    let rotated = n.agent.stderr.wait_line("key rotation", |l| l.contains("signing keys changed") && !l.contains(&kid));
    assert!(!rotated.contains(&kid));
    // Signed by the previous key, still valid: verifies locally (JWKS) and at the agent.
    n.verify(&token);
    assert_eq!(workload_api::validate(&n.socket, &token, AUDIENCE).unwrap(), ID);

    // After exp it is refused everywhere.
    let exp = claims["exp"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 <= exp {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(200));
    }
    let e = workload_api::validate(&n.socket, &token, AUDIENCE).unwrap_err();
    assert!(e.message().contains("expired"), "{}", e.message());
    let out = Command::new(python()).arg(python_script("verify_jwt.py")).args([&token, &n.issuer, AUDIENCE]).output().unwrap();
    assert!(!out.status.success(), "PyJWT must refuse an expired token");
}

#[test]
fn policy_changes_apply_on_the_next_request_and_a_bad_file_keeps_the_old_policy() {
    let n = node(120, &[]);
    let sha = sha256sum(&n.client);
    assert_eq!(n.token(&n.pod, &n.client).0, 0);

    // Tighten: the entry now also requires uid 4242. The very next request is refused.
    fs::write(&n.policy, policy_for(&sha, 120, Some("unix:uid:4242"))).unwrap();
    let (code, _, err) = n.token(&n.pod, &n.client);
    assert_ne!(code, 0, "tightened entry must refuse at once");
    assert!(err.contains("no matching entry"), "{err}");

    // Loosen again, then write a broken file: the last good policy stays in force.
    fs::write(&n.policy, policy_for(&sha, 120, None)).unwrap();
    assert_eq!(n.token(&n.pod, &n.client).0, 0);
    fs::write(&n.policy, "trust_domain = \"sigil.test\"\n\n[[entry]]\nspiffe_id = \"spiffe://sigil.test/x\"\nselectors = [\"k8s:nope:1\"]\n").unwrap();
    let rejected = n.agent.wait_event("config_change rejected", |v| v["kind"] == "config_change" && v["outcome"] == "rejected");
    let error = rejected["error"].as_str().unwrap();
    assert!(error.contains("line 5") && error.contains("unknown selector"), "{error}");
    let (code, token, err) = n.token(&n.pod, &n.client);
    assert_eq!(code, 0, "old policy keeps working: {err}");
    assert_eq!(n.verify(&token)["claims"]["sub"], ID);
}

/// py-spiffe, a SPIFFE client this project did not write, fetches and validates a token
/// through the socket, unchanged (it sends the socket path as `:authority`).
#[test]
fn py_spiffe_fetches_and_validates_a_jwt_svid() {
    let n = node(120, &[]);
    let python_real = fs::canonicalize(python()).unwrap();
    let cg = TestCgroup::create("system.slice/py-workload.service");
    fs::write(
        &n.policy,
        format!(
            "trust_domain = \"sigil.test\"\n[[entry]]\nspiffe_id = \"spiffe://sigil.test/py\"\nselectors = [\"systemd:unit:py-workload.service\", \"unix:path:{}\"]\n",
            python_real.display()
        ),
    )
    .unwrap();
    let (code, out, err) = cg.run(&python(), &[&python_script("spiffe_client.py").display().to_string(), &n.socket.display().to_string(), AUDIENCE]);
    assert_eq!(code, 0, "py-spiffe failed: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["spiffe_id"], "spiffe://sigil.test/py");
    assert_eq!(v["local_spiffe_id"], "spiffe://sigil.test/py", "validated against FetchJWTBundles");
    assert_eq!(v["remote_spiffe_id"], "spiffe://sigil.test/py", "validated by ValidateJWTSVID");
    assert_eq!(v["bundle_trust_domain"], "sigil.test");
    assert!(v["bundle_keys"].as_u64().unwrap() >= 1);
    n.verify(v["token"].as_str().unwrap());
}
