#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Credential-use tracing against the real kernel: real clients (curl, boto3, Python's
//! ssl) over real TLS to a real local server, real files; every planted secret is then
//! searched for in everything the agent wrote.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use sigil_tests::*;

struct Traced {
    agent: Agent,
    state: PathBuf,
    dir: PathBuf,
}

fn traced() -> Traced {
    let dir = scratch_dir();
    let state = dir.join("state");
    let agent = Agent::tracing(&state);
    Traced { agent, state, dir }
}

impl Traced {
    fn uses_in(&self, cg: &TestCgroup, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.agent.wait_event(what, |v| v["kind"] == "credential_use" && v["process"]["cgroup_path"] == cg.path.as_str() && pred(v))
    }

    /// The secret appears in no event, no log line, and no file the agent keeps.
    fn assert_never_kept(&self, secret: &str) {
        assert_secret_absent(&self.agent, &[&self.state], &[], secret);
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn b64url(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An unsigned-looking JWT (the agent decodes, never verifies, third-party tokens).
fn jwt(iss: &str, sub: &str, iat: i64, exp: i64) -> String {
    let header = b64url(r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
    let claims = b64url(&format!(r#"{{"iss":"{iss}","sub":"{sub}","aud":"api","iat":{iat},"exp":{exp},"jti":"{}"}}"#, unique("j")));
    format!("{header}.{claims}.{}", b64url(&unique("signature-")))
}

#[test]
fn curl_over_https_with_a_bearer_jwt_is_attributed_to_its_process_and_destination() {
    let t = traced();
    let server = LocalServer::start(Some(&t.dir));
    let cg = TestCgroup::create("trace.slice/curl-jwt.scope");
    let (iat, exp) = (now() - 60, now() + 600);
    let token = jwt("https://issuer.example", "svc-reporting", iat, exp);
    let url = format!("https://127.0.0.1:{}/v1/reports?token={token}&page=2", server.port);
    let (code, _, err) = cg.run(Path::new("/usr/bin/curl"), &["-sk", "-o", "/dev/null", &url, "-H", &format!("Authorization: Bearer {token}")]);
    assert_eq!(code, 0, "{err}");

    let ev = t.uses_in(&cg, "bearer JWT use", |v| v["detector"] == "bearer_jwt");
    assert_eq!(ev["class"], "short_lived");
    assert_eq!(ev["lifetime_seconds"], 660);
    assert!(ev["remaining_seconds"].as_i64().unwrap() > 500);
    assert_eq!(ev["identifiers"]["jwt_iss"], "https://issuer.example");
    assert_eq!(ev["identifiers"]["jwt_sub"], "svc-reporting");
    assert_eq!(ev["identifiers"]["jwt_exp"], exp);
    assert_eq!(ev["destination"]["ip"], "127.0.0.1");
    assert_eq!(ev["destination"]["port"], server.port);
    assert_eq!(ev["transport"], "tls");
    assert_eq!(ev["tls_library"], "openssl");
    assert_eq!(ev["method"], "GET");
    assert_eq!(ev["path"], "/v1/reports?page=2", "credential query parameters are stripped");
    assert_eq!(ev["process"]["binary_path"], "/usr/bin/curl");
    assert_eq!(ev["process"]["binary_sha256"], sha256sum(Path::new("/usr/bin/curl")).as_str());
    assert!(ev["fingerprint"].as_str().unwrap().starts_with("hmac-sha256:"));
    t.assert_never_kept(&token);
}

#[test]
fn boto3_sigv4_requests_are_classified_static_or_temporary_by_key_id() {
    let t = traced();
    let server = LocalServer::start(Some(&t.dir));
    let endpoint = format!("https://127.0.0.1:{}", server.port);
    let cg = TestCgroup::create("trace.slice/boto3.scope");
    let (akia, akia_secret) = ("AKIASIGILTEST0000001", "wJalrXUtnFEMI/K7MDENG/PLANTEDsecretKEY001");
    let (asia, asia_secret, session) = ("ASIASIGILTEST0000002", "wJalrXUtnFEMI/K7MDENG/PLANTEDsecretKEY002", "FwoGZXIvYXdzEPLANTEDsessionTOKEN0002//////////");
    let script = python_script("aws_client.py").display().to_string();
    let (code, out, err) = cg.run(&python(), &[&script, &endpoint, akia, akia_secret]);
    assert_eq!((code, out.as_str()), (0, "SENT"), "{err}");
    let (code, out, err) = cg.run(&python(), &[&script, &endpoint, asia, asia_secret, session]);
    assert_eq!((code, out.as_str()), (0, "SENT"), "{err}");

    let long = t.uses_in(&cg, "AKIA use", |v| v["identifiers"]["access_key_id"] == akia);
    assert_eq!(long["detector"], "aws_sigv4");
    assert_eq!(long["class"], "static");
    assert_eq!(long["identifiers"]["aws_region"], "eu-west-1");
    assert_eq!(long["identifiers"]["aws_service"], "s3");
    assert_eq!(long["destination"]["port"], server.port);
    let temp = t.uses_in(&cg, "ASIA use", |v| v["identifiers"]["access_key_id"] == asia);
    assert_eq!(temp["detector"], "aws_sigv4");
    assert_eq!(temp["class"], "short_lived");
    assert_ne!(temp["fingerprint"], long["fingerprint"]);
    for secret in [akia_secret, asia_secret, session] {
        t.assert_never_kept(secret);
    }
}

#[test]
fn plain_http_with_an_api_key_header_is_detected() {
    let t = traced();
    let server = LocalServer::start(None);
    let cg = TestCgroup::create("trace.slice/plain.scope");
    let key = "sk-proj-PLANTEDapiKEY0123456789abcdefghij";
    let url = format!("http://127.0.0.1:{}/v1/models", server.port);
    let (code, _, err) = cg.run(Path::new("/usr/bin/curl"), &["-s", "-o", "/dev/null", &url, "-H", &format!("x-api-key: {key}")]);
    assert_eq!(code, 0, "{err}");
    let ev = t.uses_in(&cg, "api key use", |v| v["detector"] == "api_key");
    assert_eq!(ev["transport"], "plain");
    assert_eq!(ev["tls_library"], Value::Null);
    assert_eq!(ev["identifiers"]["header"], "x-api-key");
    assert_eq!(ev["identifiers"]["token_family"], "openai");
    assert_eq!(ev["destination"]["port"], server.port);
    assert_eq!(ev["path"], "/v1/models");
    t.assert_never_kept(key);
}

/// `home/.aws/credentials` with a default profile of `key_id` and `secret`; its path and
/// content.
fn plant_aws_credentials(home: &Path, key_id: &str, secret: &str) -> (PathBuf, String) {
    fs::create_dir_all(home.join(".aws")).unwrap();
    let creds = home.join(".aws/credentials");
    let content = format!("[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n");
    fs::write(&creds, &content).unwrap();
    (creds, content)
}

#[test]
fn reading_an_aws_shared_credentials_file_is_an_event() {
    let t = traced();
    let secret = "PLANTEDfileSECRETwJalrXUtnFEMIK7MDENGbPxRfiCY";
    let (creds, _) = plant_aws_credentials(&t.dir.join("home"), "AKIASIGILTEST0000009", secret);
    let cg = TestCgroup::create("trace.slice/reader.scope");
    let (code, out, _) = cg.run(Path::new("/bin/cat"), &[&creds.display().to_string()]);
    assert_eq!(code, 0);
    assert!(out.contains(secret), "the reader really read it");
    let ev = t.agent.wait_event("credential file read", |v| v["kind"] == "credential_file_read" && v["process"]["cgroup_path"] == cg.path.as_str());
    assert_eq!(ev["path"], creds.display().to_string());
    assert_eq!(ev["file_kind"], "aws_shared_credentials");
    assert_eq!(ev["access"], "read");
    assert_eq!(ev["process"]["binary_path"], "/usr/bin/cat", "{ev}");
    // An ordinary file of the same base name elsewhere is not reported.
    let decoy = t.dir.join("credentials");
    fs::write(&decoy, "x").unwrap();
    cg.run(Path::new("/bin/cat"), &[&decoy.display().to_string()]);
    t.assert_never_kept(secret);
    let decoy_path = decoy.display().to_string();
    assert!(t.agent.events().iter().all(|v| v["path"] != decoy_path.as_str()));
}

/// Every name on the kernel's watch list is reported when a workload reads it, the
/// longest included: `application_default_credentials.json` (gcloud's ADC file, 36
/// bytes) was once longer than the kernel's name key, dropped from the watch list
/// without a word, and never reported.
#[test]
fn reading_any_watched_credential_file_is_an_event() {
    let t = traced();
    let home = t.dir.join("watched-home");
    let paths: Vec<String> = sigil_agent::trace::files::WATCHED
        .iter()
        .map(|name| {
            let path = home.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, "x\n").unwrap();
            path.display().to_string()
        })
        .collect();
    let cg = TestCgroup::create("trace.slice/every-file.scope");
    let args: Vec<&str> = paths.iter().map(String::as_str).collect();
    let (code, _, err) = cg.run(Path::new("/bin/cat"), &args);
    assert_eq!(code, 0, "{err}");
    for path in &paths {
        let ev = t.agent.wait_event(&format!("cat's read of {path}"), |v| {
            v["kind"] == "credential_file_read" && v["path"] == path.as_str() && v["process"]["cgroup_path"] == cg.path.as_str()
        });
        assert_eq!(ev["access"], "read");
        assert!(ev["file_kind"].is_string(), "{ev}");
    }
}

/// A workload that knows the agent watches the open system calls reads
/// `.aws/credentials` through io_uring instead (`IORING_OP_OPENAT`, then
/// `IORING_OP_READ`): no open(2), openat(2) or read(2) of the file ever happens. Before,
/// nothing was reported. The open request is now matched by its path when submitted,
/// and reported as read `via: io_uring`.
#[test]
fn a_credential_file_read_through_io_uring_is_still_an_event() {
    let t = traced();
    let secret = "PLANTEDuringSECRETwJalrXUtnFEMIK7MDENGbPxRfiCY";
    let (creds, content) = plant_aws_credentials(&t.dir.join("uring-home"), "AKIASIGILTEST0000011", secret);
    let reader = c_build(&t.dir, "uring_read", &["uring"]);
    let cg = TestCgroup::create("trace.slice/uring-reader.scope");
    let (code, out, err) = cg.run(&reader, &[&creds.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, content.len().to_string(), "the reader read the whole file through io_uring");
    let ev = t.agent.wait_event("the io_uring read", |v| v["kind"] == "credential_file_read" && v["process"]["cgroup_path"] == cg.path.as_str());
    assert_eq!(ev["path"], creds.display().to_string(), "{ev}");
    assert_eq!(ev["file_kind"], "aws_shared_credentials", "{ev}");
    assert_eq!(ev["access"], "read", "{ev}");
    assert_eq!(ev["via"], "io_uring", "{ev}");
    assert_eq!(ev["process"]["binary_path"], reader.display().to_string(), "{ev}");
    t.assert_never_kept(secret);
}

/// An evader sends its bearer token over plain HTTP with io_uring alone: the connection
/// is made with `IORING_OP_CONNECT` and the request written with `IORING_OP_SEND`,
/// `WRITEV` or `SENDMSG`, so none of the traced syscalls runs. Before, the agent saw
/// neither the connection nor the token. Each move is reported as the plain HTTP use it
/// is, with its destination. A socket closed through io_uring is forgotten like one
/// closed with close(2): a file that then takes its fd number, written with a request
/// in it, is not reported as that connection's traffic.
#[test]
fn a_token_sent_through_io_uring_is_still_a_credential_use() {
    let t = traced();
    let server = LocalServer::start(None);
    let client = c_build(&t.dir, "uring_http", &["uring"]);
    let file = t.dir.join("uring-request.txt");
    // slot-close: the evader's socket is on fd 0, and it closes a registered file slot
    // through io_uring (a request that carries fd 0) before writing its token.
    for step in ["send", "writev", "sendmsg", "slot-close"] {
        let cg = TestCgroup::create(&format!("trace.slice/uring-{step}.scope"));
        let token = unique(&format!("PLANTED-uring-{step}"));
        let path = format!("/uring-{step}");
        let (code, out, err) = cg.run(&client, &[&server.port.to_string(), step, &path, &token, &file.display().to_string()]);
        assert_eq!((code, out.as_str()), (0, "200"), "{step}: {err}");
        let used = t.uses_in(&cg, &format!("the token sent with io_uring {step}"), |v| v["path"] == path.as_str());
        assert_eq!(used["transport"], "plain", "{used}");
        assert_eq!(used["detector"], "bearer_token", "{used}");
        assert_eq!(used["destination"]["port"], server.port, "{used}");
        assert_eq!(used["process"]["binary_path"], client.display().to_string(), "{used}");
        // The client's exit is handled after every write it made.
        t.agent.wait_event(&format!("the {step} client's exit"), |v| v["kind"] == "process_exit" && v["exec_id"] == used["process"]["exec_id"]);
        let in_file = t.agent.events().into_iter().find(|v| v["kind"] == "credential_use" && v["path"] == "/in-a-file");
        assert!(in_file.is_none(), "{step}: a file's content reported as the closed socket's traffic: {in_file:?}");
        t.assert_never_kept(&token);
    }
}

/// A workload that knows the agent matches credential files by name reads
/// `.aws/credentials` under other names: a symbolic link, a hard link, a name relative to
/// its working directory, `.` and `//` in the path, a path longer than the kernel's copy
/// of it, and through `openat2`. Each is matched by the file's inode at the open's
/// return, and reported as the credential file it is, under the name the kernel first
/// saw it by. Before, every one went unseen.
#[test]
fn a_credential_file_read_under_another_name_is_still_an_event() {
    let t = traced();
    let home = t.dir.join("renamed-home");
    let aws = home.join(".aws");
    fs::create_dir_all(&aws).unwrap();
    let secret = "PLANTEDlinkSECRETwJalrXUtnFEMIK7MDENGbPxRfiCY";
    let creds = aws.join("credentials");
    // Written by its name: the kernel learns the file's inode from this very open.
    fs::write(&creds, format!("[default]\naws_access_key_id = AKIASIGILTEST0000010\naws_secret_access_key = {secret}\n")).unwrap();
    let (c, h, a) = (creds.display().to_string(), home.display().to_string(), aws.display().to_string());
    let long = format!("{h}/{}.aws/credentials", "./".repeat(200));
    let variants = [
        ("symlink", format!("ln -s {c} {h}/innocent.txt && cat {h}/innocent.txt"), c.clone()),
        ("hardlink", format!("ln {c} {h}/notes.txt && cat {h}/notes.txt"), c.clone()),
        ("relative", format!("cd {a} && cat credentials"), c.clone()),
        ("dot", format!("cat {a}/./credentials"), c.clone()),
        ("slashes", format!("cat {h}//.aws//credentials"), c.clone()),
        ("long", format!("cat {long}"), c.clone()),
        (
            "openat2",
            format!(
                "{} -c 'import ctypes,os,sys; how=(ctypes.c_uint64*3)(os.O_RDONLY,0,0); fd=ctypes.CDLL(None,use_errno=True).syscall(437,-100,sys.argv[1].encode(),how,24); sys.exit(0 if fd>=0 and os.read(fd,9) else 1)' {a}/../.aws/./credentials",
                python().display()
            ),
            c.clone(),
        ),
    ];
    for (name, script, reported) in variants {
        let cg = TestCgroup::create(&format!("trace.slice/renamed-{name}.scope"));
        let (code, _, err) = cg.run(Path::new("/bin/sh"), &["-c", &script]);
        assert_eq!(code, 0, "{name}: {err}");
        let ev = t.agent.wait_event(&format!("the {name} read"), |v| v["kind"] == "credential_file_read" && v["process"]["cgroup_path"] == cg.path.as_str());
        assert_eq!(ev["file_kind"], "aws_shared_credentials", "{name}: {ev}");
        assert_eq!(ev["path"], reported.as_str(), "{name}: {ev}");
        assert_eq!(ev["access"], "read", "{name}: {ev}");
    }
    t.assert_never_kept(secret);
}

#[test]
fn a_split_request_is_detected_once_and_a_large_body_does_not_hide_the_next_request() {
    let t = traced();
    let server = LocalServer::start(Some(&t.dir));
    let cg = TestCgroup::create("trace.slice/writer.scope");
    let tokens: Vec<String> = ["split", "big", "next"].iter().map(|n| format!("ghp_PLANTED{n}{}", unique("x")).replace('x', "0")).collect();
    let (code, out, err) =
        cg.run(&python(), &[&python_script("tls_writer.py").display().to_string(), &server.port.to_string(), &tokens[0], &tokens[1], &tokens[2]]);
    assert_eq!((code, out.as_str()), (0, "DONE"), "{err}");
    let after = t.uses_in(&cg, "request after the 1 MiB body", |v| v["path"] == "/after-body");
    assert_eq!(after["detector"], "bearer_token");
    assert_eq!(after["identifiers"]["token_family"], "github_pat");
    assert_eq!(after["class"], "static");
    let uses: Vec<Value> = t.agent.events().into_iter().filter(|v| v["kind"] == "credential_use" && v["process"]["cgroup_path"] == cg.path.as_str()).collect();
    let count = |p: &str| uses.iter().filter(|v| v["path"] == p).count();
    assert_eq!(count("/split"), 1, "a head split over three writes is one request");
    assert_eq!(count("/upload"), 1);
    assert_eq!(count("/after-body"), 1);
    let fps: std::collections::HashSet<&str> = uses.iter().filter_map(|v| v["fingerprint"].as_str()).collect();
    assert_eq!(fps.len(), 3, "three different tokens, three fingerprints");
    for token in &tokens {
        t.assert_never_kept(token);
    }
}

/// A TLS library the agent did not know at start (a private copy, as a container image
/// would bring) is attached when a process maps it, and detached when none does.
#[test]
fn a_tls_library_first_seen_at_run_time_is_attached_then_detached() {
    use std::io::Write;
    let t = traced();
    let server = LocalServer::start(Some(&t.dir));
    let lib_dir = t.dir.join("image-lib");
    fs::create_dir_all(&lib_dir).unwrap();
    let lib = lib_dir.join("libssl.so.3");
    fs::copy(fs::canonicalize("/usr/lib/x86_64-linux-gnu/libssl.so.3").unwrap(), &lib).unwrap();
    let lib_name = lib.display().to_string();

    let cg = TestCgroup::create("trace.slice/late-lib.scope");
    let token = format!("glpat-PLANTEDlate{}", unique("x"));
    let mut child = cg
        .command(&python(), &[&python_script("tls_after_go.py").display().to_string(), &server.port.to_string(), &token])
        .env("LD_LIBRARY_PATH", &lib_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child_stdout(&mut child);
    assert_eq!(next_line(&mut out), "READY");
    let maps = fs::read_to_string(format!("/proc/{}/maps", child.id())).unwrap();
    assert!(maps.contains(&lib_name), "the process must map the private copy");

    t.agent.stderr.wait_line("attach of the private libssl", |l| l.contains("TLS capture attached") && l.contains(&lib_name));
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    assert_eq!(next_line(&mut out), "DONE");
    let ev = t.uses_in(&cg, "use through the private libssl", |v| v["path"] == "/late-library");
    assert_eq!(ev["tls_library"], "openssl");
    assert_eq!(ev["identifiers"]["token_family"], "gitlab_pat");

    drop(stdin);
    child.wait().unwrap();
    t.agent.stderr.wait_line("detach once unmapped", |l| l.contains("TLS capture detached") && l.contains(&lib_name));
    t.assert_never_kept(&token);
}

#[test]
fn gnutls_clients_are_traced_too() {
    let t = traced();
    t.agent.stderr.wait_line("GnuTLS attach", |l| l.contains("TLS capture attached") && l.contains("libgnutls"));
    let server = LocalServer::start(Some(&t.dir));
    let cg = TestCgroup::create("trace.slice/gnutls.scope");
    let token = format!("xoxb-PLANTED-{}", unique("slack"));
    let request = format!("GET /gnutls HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    let input = t.dir.join("request.txt");
    fs::write(&input, request).unwrap();
    let port = server.port.to_string();
    let (code, _, err) = cg.run(Path::new("/bin/sh"), &["-c", &format!("gnutls-cli --insecure --port {port} 127.0.0.1 < {}", input.display())]);
    assert_eq!(code, 0, "{err}");
    let ev = t.uses_in(&cg, "GnuTLS use", |v| v["path"] == "/gnutls");
    assert_eq!(ev["tls_library"], "gnutls");
    assert_eq!(ev["identifiers"]["token_family"], "slack");
    assert_eq!(ev["process"]["binary_path"], "/usr/bin/gnutls-cli");
    t.assert_never_kept(&token);
}

/// The moment a workload trades its identity for cloud credentials: boto3's
/// AssumeRoleWithWebIdentity carries the token in a form body, never a header.
#[test]
fn boto3_assume_role_with_web_identity_is_an_exchange_attributed_to_the_run() {
    let t = traced();
    let server = LocalServer::start(Some(&t.dir));
    let endpoint = format!("https://127.0.0.1:{}", server.port);
    let cg = TestCgroup::create("trace.slice/sts-exchange.scope");
    let token = jwt("https://issuer.example", "system:serviceaccount:ns:reporting", now() - 10, now() + 900);
    let role = "arn:aws:iam::123456789012:role/sigil-reporting";
    let session = unique("run-");
    let script = python_script("aws_client.py").display().to_string();
    let (code, out, err) = cg.run(&python(), &[&script, &endpoint, "--web-identity", role, &session, &token]);
    assert_eq!((code, out.as_str()), (0, "SENT"), "{err}");

    let ev = t.uses_in(&cg, "STS web identity exchange", |v| v["detector"] == "token_exchange");
    assert_eq!(ev["exchange"]["kind"], "aws_sts_assume_role_with_web_identity");
    assert_eq!(ev["exchange"]["role_arn"], role);
    assert_eq!(ev["exchange"]["role_session_name"], session.as_str());
    assert_eq!(ev["identifiers"]["header"], "body:WebIdentityToken");
    assert_eq!(ev["identifiers"]["jwt_iss"], "https://issuer.example");
    assert_eq!(ev["identifiers"]["jwt_sub"], "system:serviceaccount:ns:reporting");
    assert!(ev["identifiers"]["jwt_jti"].as_str().unwrap().starts_with('j'));
    assert_eq!(ev["class"], "short_lived");
    assert_eq!(ev["method"], "POST");
    assert_eq!(ev["destination"]["port"], server.port);
    assert_eq!(ev["tls_library"], "openssl");
    assert!(ev["fingerprint"].as_str().unwrap().starts_with("hmac-sha256:"));
    t.assert_never_kept(&token);
    // The signature part alone is never kept either (a partial copy would still leak).
    t.assert_never_kept(token.rsplit('.').next().unwrap());
}

/// A keep-alive client repeating one bearer token: the first use is reported at once,
/// the repeats fold into aggregates, and when the process exits every use is accounted
/// for (counts add up to the requests sent, before the exit record).
#[test]
fn repeated_uses_fold_into_aggregates_whose_counts_add_up() {
    let t = traced();
    let server = LocalServer::start(Some(&t.dir));
    let cg = TestCgroup::create("trace.slice/keepalive.scope");
    let token = format!("ghp_{}", unique("AGGREGATEplanted").replace(['-', '_'], "x"));
    let script = python_script("tls_loop.py").display().to_string();
    let mut client = cg.command(&python(), &[&script, &server.port.to_string(), "200", &token]).stdout(Stdio::null()).spawn().unwrap();
    let pid = client.id();
    assert!(client.wait().unwrap().success());
    t.agent.wait_event("exit of the keep-alive client", |v| v["kind"] == "process_exit" && v["pid"] == pid);

    let uses: Vec<Value> =
        t.agent.events().into_iter().filter(|v| v["kind"] == "credential_use" && v["pid"] == pid && v["identifiers"]["token_family"] == "github_pat").collect();
    let counts: Vec<u64> = uses.iter().map(|v| v["count"].as_u64().unwrap()).collect();
    assert_eq!(counts.iter().sum::<u64>(), 200, "every use is accounted for: {counts:?}");
    assert_eq!(counts[0], 1, "the first use is its own event");
    assert!(uses[0]["first_seen"].is_null());
    assert!(uses.len() < 20, "repeats were folded: {} events", uses.len());
    let fingerprints: std::collections::HashSet<_> = uses.iter().map(|v| v["fingerprint"].clone()).collect();
    assert_eq!(fingerprints.len(), 1);
    for agg in &uses[1..] {
        assert!(agg["first_seen"].as_str().unwrap() <= agg["last_seen"].as_str().unwrap());
        assert_eq!(agg["process"]["cgroup_path"], cg.path.as_str(), "aggregates keep their attribution");
    }
    t.assert_never_kept(&token);
}

/// Token exchanges by a plain HTTP client: a GCP STS exchange whose JSON body curl sends
/// in a separate write after `100 Continue` (the body is reassembled across writes), and
/// an OAuth client-credentials grant whose client secret is in a form body.
#[test]
fn curl_token_exchanges_in_split_json_and_form_bodies_are_recorded() {
    let t = traced();
    let tls = LocalServer::start(Some(&t.dir));
    let plain = LocalServer::start(None);
    let cg = TestCgroup::create("trace.slice/curl-exchange.scope");
    let token = jwt("https://container.googleapis.com/v1/projects/p/clusters/c", "system:serviceaccount:ns:etl", now() - 5, now() + 3600);
    let json = format!(
        r#"{{"grantType":"urn:ietf:params:oauth:grant-type:token-exchange","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k","subjectTokenType":"urn:ietf:params:oauth:token-type:jwt","requestedTokenType":"urn:ietf:params:oauth:token-type:access_token","scope":"https://www.googleapis.com/auth/cloud-platform","subjectToken":"{token}"}}"#
    );
    let url = format!("https://127.0.0.1:{}/v1/token", tls.port);
    let (code, _, err) = cg.run(
        Path::new("/usr/bin/curl"),
        &[
            "-sk",
            "-o",
            "/dev/null",
            &url,
            "-H",
            "Host: sts.googleapis.com",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Expect: 100-continue",
            "--data",
            &json,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let client_secret = unique("PLANTEDclientSECRET");
    let form = format!("grant_type=client_credentials&client_id=etl-app&client_secret={client_secret}&scope=read");
    let url = format!("http://127.0.0.1:{}/oauth2/token", plain.port);
    let (code, _, err) = cg.run(Path::new("/usr/bin/curl"), &["-s", "-o", "/dev/null", &url, "--data", &form]);
    assert_eq!(code, 0, "{err}");

    let gcp = t.uses_in(&cg, "GCP STS exchange", |v| v["exchange"]["kind"] == "gcp_sts_token_exchange");
    assert_eq!(gcp["detector"], "token_exchange");
    assert_eq!(gcp["identifiers"]["header"], "body:subjectToken");
    assert_eq!(gcp["identifiers"]["jwt_sub"], "system:serviceaccount:ns:etl");
    assert!(gcp["identifiers"]["jwt_jti"].is_string());
    assert_eq!(gcp["exchange"]["audience"], "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k");
    assert_eq!(gcp["destination"]["host"], "sts.googleapis.com");
    let cc = t.uses_in(&cg, "OAuth client credentials", |v| v["exchange"]["kind"] == "oauth_client_credentials");
    assert_eq!(cc["exchange"]["client_id"], "etl-app");
    assert_eq!(cc["class"], "static");
    assert_eq!(cc["transport"], "plain");
    assert_eq!(cc["identifiers"]["header"], "body:client_secret");
    t.assert_never_kept(&token);
    t.assert_never_kept(&client_secret);
}

/// Uses still being counted when the agent stops are flushed, not lost: the client is
/// still running (so no exit flushes them) when the agent receives SIGTERM.
#[test]
fn pending_aggregates_are_flushed_when_the_agent_stops() {
    let dir = scratch_dir();
    let agent = Agent::start(&["--state-dir", &dir.join("state").display().to_string()]);
    agent.stderr.wait_line("TLS capture on libssl", |l| l.contains("TLS capture attached") && l.contains("libssl"));
    let server = LocalServer::start(Some(&dir));
    let cg = TestCgroup::create("trace.slice/held-client.scope");
    let token = format!("ghp_{}", unique("SHUTDOWNplanted").replace(['-', '_'], "x"));
    let script = python_script("tls_loop.py").display().to_string();
    let mut client = cg.command(&python(), &[&script, &server.port.to_string(), "50", &token, "120"]).stdout(Stdio::piped()).spawn().unwrap();
    let pid = client.id();
    let mut rate = String::new();
    BufReader::new(client.stdout.take().unwrap()).read_line(&mut rate).unwrap();
    assert!(rate.trim().parse::<f64>().is_ok(), "the loop finished: {rate:?}");
    agent.wait_event("the first use", |v| v["kind"] == "credential_use" && v["pid"] == pid);

    let (_, events) = agent.stop();
    finish(client);
    let counts: Vec<u64> = events.iter().filter(|v| v["kind"] == "credential_use" && v["pid"] == pid).map(|v| v["count"].as_u64().unwrap()).collect();
    assert_eq!(counts.iter().sum::<u64>(), 50, "{counts:?}");
    assert!(counts.len() <= 3, "folded: {counts:?}");
    assert!(events.iter().all(|v| !v.to_string().contains(&token)));
    let _ = fs::remove_dir_all(&dir);
}

/// SigV4 from an S3-compatible store (MinIO, Ceph, R2) whose key id is not AWS-shaped is
/// recognised by its algorithm and scope: boto3 over real TLS, class `unknown_format`,
/// key id recorded as the identifier, secret key never kept.
#[test]
fn boto3_sigv4_with_a_minio_style_key_id_is_recorded_as_unknown_format() {
    let t = traced();
    let server = LocalServer::start(Some(&t.dir));
    let endpoint = format!("https://127.0.0.1:{}", server.port);
    let cg = TestCgroup::create("trace.slice/boto3-minio.scope");
    let key_id = unique("sigil-minio-");
    let secret = "PLANTEDminioSECRETkey0123456789abcdefXYZ";
    let script = python_script("aws_client.py").display().to_string();
    let (code, out, err) = cg.run(&python(), &[&script, &endpoint, &key_id, secret]);
    assert_eq!((code, out.as_str()), (0, "SENT"), "{err}");

    let ev = t.uses_in(&cg, "MinIO-style SigV4 use", |v| v["identifiers"]["access_key_id"] == key_id.as_str());
    assert_eq!(ev["detector"], "aws_sigv4");
    assert_eq!(ev["class"], "unknown_format");
    assert_eq!(ev["identifiers"]["aws_algorithm"], "AWS4-HMAC-SHA256");
    assert_eq!(ev["identifiers"]["aws_region"], "eu-west-1");
    assert_eq!(ev["identifiers"]["aws_service"], "s3");
    assert_eq!(ev["transport"], "tls");
    assert_eq!(ev["destination"]["port"], server.port);
    t.assert_never_kept(secret);
}

/// A workload that sends one obsolete folded header and one malformed line before its
/// `Authorization` header (to make a strict parser drop the request, and with it the
/// audit record) is still recorded, over a real TLS socket.
#[test]
fn a_workload_cannot_hide_its_credential_behind_a_folded_header() {
    let t = traced();
    let server = LocalServer::start(Some(&t.dir));
    let cg = TestCgroup::create("trace.slice/folded.scope");
    let token = format!("ghp_PLANTEDfolded{}", unique("x")).replace(['-', 'x'], "0");
    let script = python_script("folded_header.py").display().to_string();
    let (code, out, err) = cg.run(&python(), &[&script, &server.port.to_string(), &token]);
    assert_eq!((code, out.as_str()), (0, "SENT"), "{err}");
    let ev = t.uses_in(&cg, "bearer use behind a folded header", |v| v["path"] == "/folded");
    assert_eq!(ev["detector"], "bearer_token");
    assert_eq!(ev["identifiers"]["token_family"], "github_pat");
    assert_eq!(ev["transport"], "tls");
    t.assert_never_kept(&token);
}

/// Credentials sent the way their vendors' clients send them (a vendor header, a vendor
/// `Authorization` scheme, a query parameter, a cookie, a webhook URL path) are named by
/// the catalogue over real TLS, and none of the secrets reaches any agent output (the
/// webhook secret is cut out of the recorded path).
#[test]
fn vendor_headers_schemes_query_cookies_and_webhook_paths_are_named_over_tls() {
    let t = traced();
    let server = LocalServer::start(Some(&t.dir));
    let cg = TestCgroup::create("trace.slice/vendors.scope");
    let tag = unique("").replace('-', "");
    let fill = |n: usize| format!("{tag}{}", "Q7".repeat(n)).chars().take(n).collect::<String>();
    let vault = format!("hvs.{}", fill(95));
    let okta = format!("00{}", fill(40));
    let google = format!("AIza{}", fill(35));
    let shopify = format!("shpat_{}", "a1b2c3d4".repeat(4));
    let webhook = fill(24);
    let base = format!("https://127.0.0.1:{}", server.port);
    let requests: [(&str, String, Vec<String>); 5] = [
        ("hashicorp_vault_token", format!("{base}/v1/secret/data/app"), vec!["-H".into(), format!("X-Vault-Token: {vault}")]),
        ("okta_api_token", format!("{base}/api/v1/users"), vec!["-H".into(), format!("Authorization: SSWS {okta}")]),
        ("google_api_key", format!("{base}/maps/api/geocode/json?address=x&key={google}"), vec![]),
        ("shopify_access_token", format!("{base}/admin/shop.json"), vec!["-b".into(), format!("theme=dark; access_token={shopify}")]),
        ("slack_webhook", format!("{base}/services/T0SIGIL01/B0SIGIL01/{webhook}"), vec!["-d".into(), "{}".into()]),
    ];
    for (_, url, extra) in &requests {
        let mut args = vec!["-sk", "-o", "/dev/null", url.as_str()];
        args.extend(extra.iter().map(String::as_str));
        let (code, _, err) = cg.run(Path::new("/usr/bin/curl"), &args);
        assert_eq!(code, 0, "{err}");
    }
    for (family, _, _) in &requests {
        let ev = t.uses_in(&cg, family, |v| v["identifiers"]["token_family"] == *family);
        assert_eq!(ev["transport"], "tls", "{family}");
        match *family {
            "hashicorp_vault_token" => assert_eq!(ev["identifiers"]["header"], "x-vault-token"),
            "okta_api_token" => assert_eq!(ev["identifiers"]["header"], "authorization"),
            "google_api_key" => {
                assert_eq!(ev["identifiers"]["header"], "query:key");
                assert_eq!(ev["path"], "/maps/api/geocode/json?address=x");
            }
            "shopify_access_token" => assert_eq!(ev["identifiers"]["header"], "cookie:access_token"),
            _ => {
                assert_eq!(ev["identifiers"]["header"], "path");
                assert_eq!(ev["identifiers"]["key_id"], "T0SIGIL01/B0SIGIL01");
                assert_eq!(ev["path"], "/services/T0SIGIL01/B0SIGIL01/REDACTED");
            }
        }
    }
    for secret in [&vault, &okta, &google, &shopify, &webhook] {
        t.assert_never_kept(secret);
    }
}

/// Clients whose TLS Sigil cannot see (rustls, Java's JSSE) are reported as `uncovered`
/// in `agent_stats` when they run, so the blind spots are visible on the node; a libssl
/// client (curl) is not, nor a Go client whose crypto/tls is hooked (Debian's promtool).
/// Go binaries that cannot be hooked: tests/tests/go_tls.rs.
#[test]
fn rustls_and_java_clients_are_reported_as_uncovered_when_they_run() {
    let t = traced();
    let cg = TestCgroup::create("trace.slice/uncovered.scope");
    let collector = sibling_bin("sigil-collector");
    let runs: [(&Path, &[&str]); 4] = [
        (Path::new("/usr/bin/promtool"), &["--version"]),
        (Path::new("/usr/bin/java"), &["-version"]),
        (&collector, &["--help"]),
        (Path::new("/usr/bin/curl"), &["--version"]),
    ];
    for (bin, args) in runs {
        let (code, _, err) = cg.run(bin, args);
        assert_eq!(code, 0, "{}: {err}", bin.display());
    }
    let collector = fs::canonicalize(&collector).unwrap().display().to_string();
    let has = |v: &Value, client: &str, binary: &dyn Fn(&str) -> bool| {
        v["trace"]["uncovered"].as_array().is_some_and(|list| list.iter().any(|u| u["client"] == client && u["binary"].as_str().is_some_and(binary)))
    };
    let stats = t.agent.wait_event("agent_stats listing the uncovered clients", |v| {
        v["kind"] == "agent_stats" && has(v, "java_jsse", &|b| b.ends_with("/bin/java")) && has(v, "rustls", &|b| b == collector)
    });
    let list = stats["trace"]["uncovered"].as_array().unwrap();
    assert!(!list.iter().any(|u| u["binary"].as_str().is_some_and(|b| b.ends_with("/curl"))), "curl links libssl and is seen: {list:?}");
    // The inspector takes execs in order: java, run after promtool, is listed, so
    // promtool has been inspected (and found hookable) by now.
    assert!(!list.iter().any(|u| u["binary"] == "/usr/bin/promtool"), "promtool's crypto/tls is hooked, so it is covered: {list:?}");
    let java = list.iter().find(|u| u["client"] == "java_jsse").unwrap();
    assert!(java["execs"].as_u64().unwrap() >= 1);
    assert!(java["reason"].as_str().unwrap().contains("JSSE"));
}
