#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Attacks on token issuance, performed for real: a real agent on a real Unix socket,
//! attackers as real processes (forking, exec'ing, passing file descriptors, running as
//! uid 65534) in real cgroups. Each test names its attacker. docs/threat-model.md maps
//! every attack here to its mitigation.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use serde_json::Value;
use sigil_tests::{
    workload_api::{self, Call, decode_answer, fetch_request, frame, preface},
    *,
};

const AUDIENCE: &str = "sts.amazonaws.com";
const ID: &str = "spiffe://sigil.test/registered";
/// The system interpreter: stdlib only, and runnable by uid 65534 (unlike the
/// provisioned virtualenv under /root).
const PY: &str = "/usr/bin/python3";
/// gRPC PERMISSION_DENIED.
const PERMISSION_DENIED: i32 = 7;

struct Node {
    dir: PathBuf,
    agent: Agent,
    socket: PathBuf,
}

/// An agent with one entry for [`ID`], serving a socket in a fresh directory (which any
/// user may write to, for the helpers' own sockets).
fn node(selectors: &[String], extra: &[&str]) -> Node {
    node_in(scratch_dir(), selectors, extra)
}

/// An agent whose one entry is a [`registered_python`] in `cg`; returns that binary too.
fn registered_node(cg: &TestCgroup) -> (Node, PathBuf) {
    let dir = scratch_dir();
    let registered = registered_python(&dir);
    let n = node_in(dir, &[format!("unix:sha256:{}", sha256sum(&registered)), format!("cgroup:path:{}", cg.path)], &[]);
    (n, registered)
}

fn node_in(dir: PathBuf, selectors: &[String], extra: &[&str]) -> Node {
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let list = selectors.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let policy = dir.join("policy.toml");
    fs::write(&policy, format!("trust_domain = \"sigil.test\"\n\n[[entry]]\nspiffe_id = \"{ID}\"\nselectors = [{list}]\n")).unwrap();
    let socket = dir.join("workload.sock");
    let (p, s, l) = (policy.display().to_string(), socket.display().to_string(), format!("127.0.0.1:{}", free_port()));
    let mut args = vec!["--policy", &p, "--socket", &s, "--oidc-listen", &l];
    args.extend_from_slice(extra);
    let agent = Agent::start(&args);
    agent.stderr.wait_line("Workload API start", |l| l.contains("Workload API on"));
    Node { dir, agent, socket }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A copy of the system Python with a unique tail: a registered interpreter whose hash
/// nothing else on the machine shares.
fn registered_python(dir: &Path) -> PathBuf {
    let path = dir.join("registered-python");
    let mut bytes = fs::read(fs::canonicalize(PY).unwrap()).unwrap();
    bytes.extend_from_slice(unique("sigil-nonce-").as_bytes());
    write_executable(&path, &bytes);
    path
}

fn helper() -> String {
    python_script("workload_fd.py").display().to_string()
}

fn request_hex() -> String {
    hex::encode(fetch_request(&[AUDIENCE]))
}

/// A helper process with its stdin and stdout, killed on drop.
struct Helper {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child: Some(child), stdin, stdout }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    fn expect_line(&mut self, prefix: &str) -> String {
        let line = self.line();
        assert!(line.starts_with(prefix), "expected {prefix:?}, got {line:?}");
        line
    }

    fn say(&mut self, text: &str) {
        self.stdin.as_mut().unwrap().write_all(text.as_bytes()).unwrap();
        self.stdin.as_mut().unwrap().flush().unwrap();
    }

    /// The agent's answer, from the hex line the helper printed.
    fn answer(&mut self) -> Result<Vec<String>, (i32, String)> {
        let line = self.line();
        decode_answer(&hex::decode(&line).unwrap_or_else(|e| panic!("helper printed {line:?}: {e}")))
    }

    /// Waits for the helper to exit by itself.
    fn wait(&mut self) {
        self.stdin = None;
        self.child.take().unwrap().wait().unwrap();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.stdin = None;
        if let Some(c) = self.child.take() {
            finish(c);
        }
    }
}

/// `PY args...` as uid/gid 65534 (nobody), no supplementary groups.
fn as_nobody(args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups", PY]).args(args);
    cmd
}

fn denial(agent: &Agent, reason: &str) -> Value {
    agent.wait_event(&format!("token_denied {reason}"), |v| v["kind"] == "token_denied" && v["reason"] == reason)
}

/// A workload in a pod: an unregistered program in the registered workload's cgroup
/// connects to the Workload API and completes the HTTP/2 handshake (the agent has
/// accepted the connection), forks, and the parent execs the registered binary. The
/// child asks over the inherited connection: the kernel still reports the parent's pid,
/// which now runs the registered binary. Refused as `process_changed`.
#[test]
fn a_workload_that_execs_a_registered_binary_after_connecting_gets_no_token_over_that_connection() {
    let cg = TestCgroup::create("system.slice/exec-after-connect.service");
    let (n, registered) = registered_node(&cg);
    let socket = n.socket.display().to_string();

    // Control: the registered binary asking over its own connection gets a token.
    let (code, out, err) = cg.run(&registered, &[&helper(), "fetch", &socket, &request_hex()]);
    assert_eq!(code, 0, "{err}");
    let tokens = decode_answer(&hex::decode(out).unwrap()).expect("the registered binary gets a token");
    assert_eq!(tokens.len(), 1);

    // The attack.
    let reg = registered.display().to_string();
    let mut attacker =
        Helper::spawn(cg.command(Path::new(PY), &[&helper(), "exec-after-connect", &socket, &request_hex(), &reg, "-c", "import time; time.sleep(60)"]));
    let parent = attacker.pid();
    let answer = attacker.answer();
    let (code, message) = answer.expect_err("the child of the former unregistered program must get no token");
    assert_eq!(code, PERMISSION_DENIED, "{message}");
    assert!(message.contains("exec'd since it connected"), "{message}");
    // The parent did become the registered binary (so only the binding refused it).
    assert_eq!(fs::read_link(format!("/proc/{parent}/exe")).unwrap(), registered);
    let d = denial(&n.agent, "process_changed");
    assert_eq!(d["peer_pid"], parent);
    assert_eq!(n.agent.events().iter().filter(|e| e["kind"] == "token_issued").count(), 1, "only the control got a token");
}

/// A local unprivileged user (uid 65534) receives, over SCM_RIGHTS, a Workload API
/// connection that a registered workload opened. The connection speaks for its connector
/// (SO_PEERCRED is fixed at connect), never for the receiver: while the connector runs,
/// the receiver gets the connector's token (the connector chose to delegate, as it could
/// by handing over a token); once the connector has exited, the receiver is refused.
#[test]
fn a_connection_passed_with_scm_rights_speaks_for_its_connector_and_dies_with_it() {
    let registered_cg = TestCgroup::create("system.slice/connector.service");
    let receiver_cg = TestCgroup::create("system.slice/receiver.service");
    let (n, registered) = registered_node(&registered_cg);
    let socket = n.socket.display().to_string();

    for connector_stays in [true, false] {
        let handoff = n.dir.join(unique("handoff-")).display().to_string();
        let mut receiver = Helper::spawn(
            receiver_cg
                .command(Path::new("setpriv"), &["--reuid", "65534", "--regid", "65534", "--clear-groups", PY, &helper(), "recv-fd", &handoff, &request_hex()]),
        );
        receiver.expect_line("LISTENING");
        let mode = if connector_stays { "stay" } else { "exit" };
        let mut connector = Helper::spawn(registered_cg.command(&registered, &[&helper(), "send-fd", &socket, &handoff, mode]));
        let connector_pid = connector.pid();
        connector.expect_line("SENT");
        receiver.expect_line("RECEIVED");
        if !connector_stays {
            connector.wait(); // exited and reaped: its pid names nothing now
        }
        receiver.say("go\n");
        let answer = receiver.answer();
        if connector_stays {
            answer.expect("the connection speaks for its (registered, live) connector");
            let issued = n.agent.wait_event("token_issued", |e| e["kind"] == "token_issued");
            assert_eq!(issued["process"]["pid"], connector_pid, "the connector's identity");
            assert_eq!(issued["process"]["cgroup_path"], registered_cg.path.as_str());
            assert_ne!(issued["process"]["pid"], receiver.pid());
        } else {
            let (code, message) = answer.expect_err("no token once the connector has exited");
            assert_eq!(code, PERMISSION_DENIED, "{message}");
            let d = n.agent.wait_event("token_denied", |e| e["kind"] == "token_denied");
            assert_eq!(d["peer_pid"], connector_pid, "never the receiver's own identity");
            assert!(d["process"].is_null() || d["process"]["pid"] == connector_pid);
        }
    }
    assert_eq!(n.agent.events().iter().filter(|e| e["kind"] == "token_issued").count(), 1);
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// HPACK bombs: one 4 KB dynamic-table entry, then a block that names it by its one-byte
/// index `refs` times, sent as HEADERS plus CONTINUATIONs of at most 16 KB.
fn hpack_bomb(refs: usize) -> Vec<u8> {
    let mut enc = loona_hpack::Encoder::new();
    let big = vec![b'a'; 4_000];
    let first = enc.encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", b"/SpiffeWorkloadAPI/FetchJWTSVID"),
        (b":authority", b"localhost"),
        (b"x-bomb", &big[..]),
    ]);
    let again = enc.encode(std::iter::repeat_n((&b"x-bomb"[..], &big[..]), refs));
    let mut wire = preface();
    wire.extend(frame(0x1, 0x4, 1, &first));
    let chunks: Vec<&[u8]> = again.chunks(16_384).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let end = if i + 1 == chunks.len() { 0x4 } else { 0 };
        wire.extend(frame(if i == 0 { 0x1 } else { 0x9 }, end, 3, chunk));
    }
    wire
}

/// A local unprivileged user (uid 65534) sends HPACK bombs and an oversized frame to the
/// Workload API. Before the rewriter was bounded, the 1 MiB block below decoded to 4 GB
/// of headers: the agent (here limited to 3 GiB of data) aborted, taking attestation and
/// issuance down with it. Now each connection is closed with a log line, the agent's peak
/// memory hardly moves, and a well-behaved workload still gets its token.
#[test]
fn hpack_bombs_from_a_local_user_close_their_connection_and_the_agent_keeps_serving() {
    let cg = TestCgroup::create("system.slice/bombed-workload.service");
    let (mut n, registered) = registered_node(&cg);
    let socket = n.socket.display().to_string();
    let pid = n.agent.pid();
    // A ceiling, so a regression aborts the agent instead of inviting the OOM killer.
    let limit = libc::rlimit { rlim_cur: 3 << 30, rlim_max: 3 << 30 };
    // SAFETY: prlimit on our own child with a valid struct.
    assert_eq!(unsafe { libc::prlimit(pid as i32, libc::RLIMIT_DATA, &limit, std::ptr::null_mut()) }, 0);
    let before = vm_hwm_kib(pid);

    let mut oversized = preface();
    oversized.extend_from_slice(&[0xff, 0xff, 0xff, 0x1, 0x4, 0, 0, 0, 1]);
    oversized.extend(vec![0u8; 1 << 20]);
    let attacks = [
        (hpack_bomb(1 << 20), "header block of more than 16384 encoded bytes"),
        (hpack_bomb(12_000), "decodes to more than 16384 bytes"),
        (oversized, "exceeds the maximum frame size of 16384"),
    ];
    for (bytes, logged) in attacks {
        let mut attacker = Helper::spawn(as_nobody(&[&helper(), "raw", &socket]));
        attacker.say(&hex::encode(&bytes));
        attacker.stdin = None;
        let reply = attacker.line();
        assert_eq!(attacker.line(), "closed", "the agent closed the connection ({logged})");
        attacker.wait();
        assert!(n.agent.is_running(), "the agent died of the attack ({logged})");
        n.agent.stderr.wait_line(logged, |l| l.contains("closing a Workload API connection") && l.contains(logged));
        assert!(reply.len() < 4096, "the agent answered the bomb with {} hex digits", reply.len());
    }

    let grown = vm_hwm_kib(pid).saturating_sub(before);
    assert!(grown < 64 * 1024, "peak RSS grew by {grown} KiB");
    let (code, out, err) = cg.run(&registered, &[&helper(), "fetch", &socket, &request_hex()]);
    assert_eq!(code, 0, "{err}");
    decode_answer(&hex::decode(out).unwrap()).expect("a well-behaved workload still gets its token");
    eprintln!("agent VmHWM {before} KiB before the bombs, +{grown} KiB after");
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// A local unprivileged user (uid 65534) opens 3,000 connections to the Workload API and
/// sends nothing. The agent keeps at most the per-uid limit open (closing the rest at
/// accept, which also keeps the listen backlog moving), so its file descriptors stay
/// bounded: a registered workload still gets its token, and exec attestation (which
/// opens /proc handles and binaries) goes on.
#[test]
fn thousands_of_idle_connections_from_a_local_user_starve_neither_issuance_nor_attestation() {
    let cg = TestCgroup::create("system.slice/busy-workload.service");
    // The default per-uid limit: 64.
    let (n, registered) = registered_node(&cg);
    let socket = n.socket.display().to_string();
    let pid = n.agent.pid();
    let fds_before = open_fds(pid);

    let mut flood = Helper::spawn(as_nobody(&[&helper(), "flood", &socket, "3000"]));
    let open: usize = flood.expect_line("OPEN ")[5..].parse().unwrap();
    assert!(open >= 2_000, "the attacker connected {open} times");
    n.agent.stderr.wait_line("per-uid refusal", |l| l.contains("uid 65534 already has 64 Workload API connections open"));
    let fds_during = open_fds(pid);
    // Each admitted connection holds three: the socket, its peer's pidfd and procfs directory.
    assert!(fds_during < fds_before + 3 * 64 + 32, "agent fds went from {fds_before} to {fds_during}");

    // Issuance still works ...
    let (code, out, err) = cg.run(&registered, &[&helper(), "fetch", &socket, &request_hex()]);
    assert_eq!(code, 0, "{err}");
    decode_answer(&hex::decode(out).unwrap()).expect("a registered workload still gets its token");
    // ... and so does exec attestation, hash included.
    let bin = unique_binary(&n.dir, "after-flood");
    let child = Command::new(&bin).arg("60").spawn().unwrap();
    let rec = n.agent.wait_exec(child.id(), &bin);
    assert_eq!(rec["binary"]["sha256"], sha256sum(&bin).as_str());
    finish(child);

    flood.say("count\n");
    let closed: usize = flood.expect_line("CLOSED ")[7..].parse().unwrap();
    assert!(closed >= open - 64, "{open} connected, only {closed} closed by the agent");
}

/// A local unprivileged user (uid 65534) connects and sends nothing, not even the HTTP/2
/// preface. After the idle time the agent closes the connection and says so.
#[test]
fn a_silent_connection_from_a_local_user_is_closed_after_the_idle_time() {
    let n = node(&["unix:uid:4242".to_owned()], &["--workload-api-idle-seconds", "2"]);
    let mut attacker = Helper::spawn(as_nobody(&[&helper(), "raw", &n.socket.display().to_string()]));
    attacker.stdin = None; // nothing to send
    attacker.line(); // what the agent sent before closing (its SETTINGS, if any)
    assert_eq!(attacker.line(), "closed", "the agent closed the silent connection");
    let logged = n.agent.stderr.wait_line("idle close", |l| l.contains("sent nothing for 2 s"));
    assert!(logged.contains("uid=65534"), "{logged}");
}

/// A local unprivileged user (uid 65534) opens 100 requests on one connection and never
/// finishes them (no body). The agent serves 16 at a time and refuses the rest
/// (RST_STREAM REFUSED_STREAM), so one connection cannot hold a hundred handlers.
#[test]
fn a_local_user_opening_a_hundred_streams_on_one_connection_gets_sixteen() {
    let n = node(&["unix:uid:4242".to_owned()], &[]);
    let mut enc = loona_hpack::Encoder::new();
    let mut wire = preface();
    for i in 0..100u32 {
        let block = workload_api::fetch_headers(&mut enc);
        wire.extend(frame(0x1, 0x4, 2 * i + 1, &block)); // END_HEADERS, no END_STREAM
    }
    let mut attacker = Helper::spawn(as_nobody(&[&helper(), "raw", &n.socket.display().to_string()]));
    attacker.say(&hex::encode(&wire));
    attacker.stdin = None;
    let reply = hex::decode(attacker.line()).unwrap();
    let mut refused = 0;
    let mut rest = &reply[..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        // RST_STREAM with error code REFUSED_STREAM (0x7).
        if rest[3] == 0x3 && rest.get(9..13) == Some(&[0, 0, 0, 7][..]) {
            refused += 1;
        }
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert_eq!(refused, 100 - 16, "streams refused beyond the limit");
}

/// A local user asks with 60 audiences of 1,000 bytes each (60 KB of its choosing). The
/// request is refused, and the `token_denied` event carries at most 16 audiences cut to
/// 256 bytes, plus the count. A 10 MB request is refused before it is decoded.
#[test]
fn a_denied_request_with_a_huge_audience_list_yields_a_bounded_event() {
    let n = node(&["unix:uid:4242".to_owned()], &[]);
    let auds: Vec<String> = (0..60).map(|i| format!("{i:03}{}", "a".repeat(997))).collect();
    let refs: Vec<&str> = auds.iter().map(String::as_str).collect();
    let mut attacker = Helper::spawn(as_nobody(&[&helper(), "fetch", &n.socket.display().to_string(), &hex::encode(fetch_request(&refs))]));
    let (code, message) = attacker.answer().expect_err("refused");
    assert_eq!(code, 3, "INVALID_ARGUMENT: {message}");
    let d = denial(&n.agent, "invalid_request");
    assert_eq!(d["audience_count"], 60);
    let kept = d["audience"].as_array().unwrap();
    assert_eq!(kept.len(), 16);
    assert!(kept.iter().all(|a| a.as_str().unwrap().len() <= 256 + 32), "{kept:?}");
    let line = n.agent.stdout.snapshot().into_iter().find(|l| l.contains("invalid_request")).unwrap();
    assert!(line.len() < 8 * 1024, "the event is {} bytes", line.len());

    let huge = vec!["x".repeat(1 << 20); 10];
    let e = workload_api::fetch(&n.socket, Call { audience: huge, spiffe_id: String::new(), header: true, metadata: vec![] }).unwrap_err();
    assert!(matches!(e.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted), "{e:?}");
    assert!(n.agent.stdout.snapshot().iter().all(|l| l.len() < 16 * 1024), "no event carries the 10 MB request");
}

/// A workload in a pod runs the registered interpreter on a script of its own. The
/// interpreter's binary hash is the same for every script, so the entry pins the script
/// too (`unix:script-path` + `unix:script-sha256`): the registered script gets a token,
/// run by hand (`python3 /abs/app.py`) or as a `#!` program; the same interpreter on
/// another script is refused, and so is the registered script rewritten after the
/// interpreter started on it.
#[test]
fn a_registered_script_gets_a_token_and_the_same_interpreter_on_another_script_does_not() {
    let cg = TestCgroup::create("system.slice/scripted.service");
    let dir = scratch_dir();
    let interpreter = fs::canonicalize(PY).unwrap();
    let source = fs::read_to_string(python_script("workload_fd.py")).unwrap();
    let app = dir.join("app.py");
    fs::write(&app, format!("#!{}\n{source}", interpreter.display())).unwrap();
    fs::set_permissions(&app, fs::Permissions::from_mode(0o755)).unwrap();
    let other = dir.join("other.py");
    fs::write(&other, format!("#!{}\n{source}\n# another program\n", interpreter.display())).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o755)).unwrap();
    let n = node(
        &[
            format!("unix:path:{}", interpreter.display()),
            format!("unix:script-path:{}", app.display()),
            format!("unix:script-sha256:{}", sha256sum(&app)),
            format!("cgroup:path:{}", cg.path),
        ],
        &[],
    );
    let socket = n.socket.display().to_string();
    let (req, app_s, other_s) = (request_hex(), app.display().to_string(), other.display().to_string());

    // The interpreter run on the registered script, both ways.
    for (program, args) in [(interpreter.as_path(), vec![app_s.as_str(), "fetch", &socket, &req]), (app.as_path(), vec!["fetch", &socket, &req])] {
        let (code, out, err) = cg.run(program, &args);
        assert_eq!(code, 0, "{err}");
        decode_answer(&hex::decode(out).unwrap()).unwrap_or_else(|e| panic!("{} {args:?}: {e:?}", program.display()));
    }
    let issued: Vec<Value> = n.agent.events().into_iter().filter(|e| e["kind"] == "token_issued").collect();
    assert_eq!(issued.len(), 2);

    // The same interpreter on another script: refused, naming the binary selectors.
    for (program, args) in [(interpreter.as_path(), vec![other_s.as_str(), "fetch", &socket, &req]), (other.as_path(), vec!["fetch", &socket, &req])] {
        let (code, out, err) = cg.run(program, &args);
        assert_eq!(code, 0, "{err}");
        let (code, message) = decode_answer(&hex::decode(out).unwrap()).expect_err("another script gets nothing");
        assert_eq!(code, PERMISSION_DENIED, "{message}");
        assert!(message.contains("binary hash mismatch"), "{message}");
    }
    let d = denial(&n.agent, "binary_hash_mismatch");
    assert_eq!(d["process"]["binary_path"], interpreter.display().to_string().as_str());
    // The records say which script each exec ran.
    let execs = n.agent.events();
    let ran = |path: &str| execs.iter().any(|e| e["kind"] == "process_exec" && e["script"]["path"] == path);
    assert!(ran(&app_s) && ran(&other_s), "both scripts are named in exec records");

    // The registered script rewritten in place after the interpreter started on it: what
    // the exec was attested with no longer holds, so nothing is signed.
    let mut late = Helper::spawn(cg.command(&interpreter, &[&app_s, "fetch-on-line", &socket, &req]));
    let pid = late.pid();
    n.agent.wait_event("the exec record of the late asker", |e| {
        e["kind"] == "process_exec" && e["pid"] == pid && e["script"]["path"] == app_s.as_str() && e["script"]["sha256"].is_string()
    });
    let mut f = fs::OpenOptions::new().append(true).open(&app).unwrap();
    f.write_all(b"\n# rewritten after exec\n").unwrap();
    drop(f);
    late.say("go\n");
    let (code, message) = late.answer().expect_err("a script changed since exec gets nothing");
    assert_eq!(code, PERMISSION_DENIED, "{message}");
    assert!(message.contains("changed since the process was started on it"), "{message}");
    let _ = fs::remove_dir_all(&dir);
}
