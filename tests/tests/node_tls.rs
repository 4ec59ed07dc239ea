#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Node.js clients over real, verified TLS to a real local server: the official build,
//! which carries OpenSSL compiled into the node executable (no libssl for the agent to
//! find in the process's maps), and Debian's, which links the system's libssl through
//! libnode. Both send a bearer token with `https.request`; the agent must attribute it to
//! the node process, and keep the token nowhere.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;
use sigil_tests::{pki::Pki, *};

/// Debian's node, unpacked by `cargo xtask test` (SIGIL_DEBIAN_NODE), and the directory
/// of its libnode.
fn debian_node() -> (PathBuf, PathBuf) {
    let node = std::env::var_os("SIGIL_DEBIAN_NODE").map(PathBuf::from).expect("SIGIL_DEBIAN_NODE is set by `cargo xtask test` (Debian's Node.js, unpacked)");
    let libs = node.parent().unwrap().parent().unwrap().join("lib/x86_64-linux-gnu");
    (node, libs)
}

/// The shared libraries `exe` loads, as the dynamic loader resolves them.
fn linked_libraries(exe: &Path, library_path: Option<&Path>) -> String {
    let mut cmd = Command::new("ldd");
    cmd.arg(exe);
    if let Some(dir) = library_path {
        cmd.env("LD_LIBRARY_PATH", dir);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "ldd {}", exe.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct NodeRun {
    agent: Agent,
    dir: PathBuf,
    state: PathBuf,
}

impl NodeRun {
    fn start() -> Self {
        let dir = scratch_dir();
        let state = dir.join("state");
        let agent = Agent::start(&["--state-dir", &state.display().to_string()]);
        Self { agent, dir, state }
    }

    /// A verified TLS server: a fresh CA (handed to node through NODE_EXTRA_CA_CERTS)
    /// and a leaf for IP:127.0.0.1.
    fn server(&self) -> (Pki, LocalServer) {
        let pki = Pki::new(&self.dir);
        pki.issue("server", "IP:127.0.0.1", "serverAuth");
        let server = LocalServer::with_cert(Path::new(&pki.path("server.pem")), Path::new(&pki.path("server.key")));
        (pki, server)
    }

    /// The node client in `cg`, trusting `pki`'s CA, with stdout and stderr piped.
    fn client(&self, cg: &TestCgroup, node: &Path, library_path: Option<&Path>, pki: &Pki, args: &[&str]) -> Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("node/bearer_client.js");
        let script = script.display().to_string();
        let mut cmd = cg.command(node, &[&[script.as_str()][..], args].concat());
        cmd.env("NODE_EXTRA_CA_CERTS", pki.path("ca.pem")).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(dir) = library_path {
            cmd.env("LD_LIBRARY_PATH", dir);
        }
        cmd
    }

    /// Runs the node client in a fresh cgroup against a verified TLS server; returns the
    /// credential_use it produced. With `attached`, the client is started first and sends
    /// only once the agent has logged that line: an attachment made as a binary is exec'd
    /// can come after a fast client's first request (the README says so), and the test is
    /// about what is seen once attached.
    fn send_bearer(&self, node: &Path, library_path: Option<&Path>, token: &str, attached: Option<&str>) -> Value {
        let (pki, server) = self.server();
        let cg = TestCgroup::create(&format!("node.slice/{}.scope", unique("client")));
        let url = format!("https://127.0.0.1:{}/v1/repos?page=2", server.port);
        let mut child = self.client(&cg, node, library_path, &pki, &["-", token]).stdin(Stdio::piped()).spawn().unwrap();
        let pid = child.id();
        let mut stdout = child_stdout(&mut child);
        assert_eq!(next_line(&mut stdout), "WAITING");
        if let Some(attached) = attached {
            self.agent.stderr.wait_line("the attachment made at exec", |l| l.contains(attached));
        }
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{url}").unwrap();
        assert_eq!(next_line(&mut stdout), "SENT 200");
        drop(stdin); // node's loop holds on while its stdin is open
        assert!(child.wait().unwrap().success());
        self.expect_use(&cg, pid, node, server.port)
    }

    /// The credential_use of the node client `pid` in `cg`, attributed to it.
    fn expect_use(&self, cg: &TestCgroup, pid: u32, node: &Path, port: u16) -> Value {
        let ev = self.agent.wait_event("the node client's bearer token", |v| v["kind"] == "credential_use" && v["process"]["cgroup_path"] == cg.path.as_str());
        assert_eq!(ev["pid"], pid, "attributed to the node process itself");
        assert_eq!(ev["process"]["binary_path"], node.display().to_string().as_str());
        assert_eq!(ev["identifiers"]["token_family"], "github_pat");
        assert_eq!(ev["transport"], "tls");
        assert_eq!(ev["tls_library"], "openssl");
        assert_eq!(ev["method"], "GET");
        assert_eq!(ev["path"], "/v1/repos?page=2");
        assert_eq!(ev["destination"]["host"], format!("127.0.0.1:{port}").as_str());
        assert!(ev["fingerprint"].as_str().unwrap().starts_with("hmac-sha256:"));
        ev
    }

    fn assert_never_kept(&self, secret: &str) {
        assert_secret_absent(&self.agent, &[&self.state], &[], secret);
    }
}

impl Drop for NodeRun {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn planted_token(tag: &str) -> String {
    format!("ghp_PLANTED{tag}{}", unique("x")).replace(['-', 'x'], "0")
}

/// The official build has no libssl to hook: the agent finds SSL_write in the node
/// executable's own symbols and attaches there as node is exec'd, before its first
/// request.
#[test]
fn official_node_with_openssl_compiled_in_is_attributed_its_bearer_token() {
    let node = official_node();
    let libs = linked_libraries(&node, None);
    assert!(!libs.contains("libssl") && !libs.contains("libcrypto"), "the official build links OpenSSL statically:\n{libs}");
    let version = Command::new(&node).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "v24.19.0");

    let run = NodeRun::start();
    let token = planted_token("official");
    run.send_bearer(&node, None, &token, Some(&attached_line(&node)));
    run.assert_never_kept(&token);
}

fn attached_line(node: &Path) -> String {
    format!("TLS capture attached to {} (OpenSsl compiled into the executable)", node.display())
}

/// A node that was already running when the agent started (no exec event to act on) is
/// found by the agent's scan of running processes and attached before it sends; once no
/// process runs that executable any more, the attachment is removed.
#[test]
fn official_node_running_before_the_agent_is_attached_by_the_scan_and_detached_after() {
    let node = official_node();
    let dir = scratch_dir();
    let pki = Pki::new(&dir);
    pki.issue("server", "IP:127.0.0.1", "serverAuth");
    let cg = TestCgroup::create(&format!("node.slice/{}.scope", unique("early")));
    let token = planted_token("early");
    // Started first, waiting for its URL on stdin.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("node/bearer_client.js").display().to_string();
    let mut child = cg
        .command(&node, &[&script, "-", &token])
        .env("NODE_EXTRA_CA_CERTS", pki.path("ca.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = child_stdout(&mut child);
    assert_eq!(next_line(&mut stdout), "WAITING");

    let run = NodeRun { agent: Agent::start(&["--state-dir", &dir.join("state").display().to_string()]), state: dir.join("state"), dir };
    run.agent.stderr.wait_line("the scan's attachment to the running node", |l| l.contains(&attached_line(&node)));
    let server = LocalServer::with_cert(Path::new(&pki.path("server.pem")), Path::new(&pki.path("server.key")));
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "https://127.0.0.1:{}/v1/repos?page=2", server.port).unwrap();
    assert_eq!(next_line(&mut stdout), "SENT 200");
    run.expect_use(&cg, pid, &node, server.port);
    drop(stdin); // node's loop holds on while its stdin is open
    assert!(child.wait().unwrap().success());

    // Every node process of this test binary ends; then the scan lets the file go.
    let detached = format!("TLS capture detached from {}", node.display());
    run.agent.stderr.wait_line("the detachment from node", |l| l.contains(&detached));
    run.assert_never_kept(&token);
}

/// Debian's node reaches the system's libssl through libnode: the library attachment the
/// agent makes at start-up keeps covering it (and the executable itself has no OpenSSL).
#[test]
fn debian_node_with_the_system_libssl_is_attributed_its_bearer_token() {
    let (node, lib_dir) = debian_node();
    let libs = linked_libraries(&node, Some(&lib_dir));
    assert!(libs.contains("libnode.so") && libs.contains("libssl.so.3"), "Debian's node links libssl dynamically:\n{libs}");

    let run = NodeRun::start();
    let token = planted_token("debian");
    run.send_bearer(&node, Some(&lib_dir), &token, None);
    let own = format!("TLS capture attached to {} (", node.display());
    assert!(!run.agent.stderr.snapshot().iter().any(|l| l.contains(&own)), "Debian's node executable carries no OpenSSL of its own to attach to");
    run.assert_never_kept(&token);
}
