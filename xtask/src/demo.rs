//! `cargo xtask demo`: the whole story on one machine.
//!
//! 1. A collector on SQLite, and the agent streaming to it.
//! 2. The agent attests workloads in kubelet-style cgroups (a containerd pod, a CRI-O pod,
//!    a systemd unit) and prints what it attested.
//! 3. The registered checkout workload gets a Sigil token; another binary in its pod is
//!    refused.
//! 4. Two workloads call a local HTTPS endpoint with boto3: the ledger worker with a
//!    long-lived AKIA key, checkout with temporary credentials obtained for its token.
//! 5. CloudTrail records for those calls are ingested, and `sigil` answers: which run
//!    made each call, with which credential, and the migration posture.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{
    build,
    peers::{self, Guard},
    provision,
    test::PYTHON_PACKAGES,
};

struct DemoWorkload {
    name: &'static str,
    /// cgroup layout below the demo's top directory.
    layout: &'static str,
}

const WORKLOADS: [DemoWorkload; 3] = [
    DemoWorkload { name: "checkout-worker", layout: CHECKOUT_LAYOUT },
    DemoWorkload {
        name: "ledger-worker",
        layout: "kubepods.slice/kubepods-pod1f2e3d4c_5b6a_4978_8695_a4b3c2d1e0f9.slice/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
    },
    DemoWorkload { name: "nightly-backup", layout: "system.slice/nightly-backup.service" },
];

pub fn run() -> Result<()> {
    if !provision::is_root() {
        bail!("cargo xtask demo needs root: the agent loads eBPF programs and the demo creates cgroups");
    }
    provision::debian_packages(&["mount", "util-linux", "openssl"])?;
    let python = provision::python_env(PYTHON_PACKAGES)?;
    let bin_dir = build::all(false)?;
    let demo_dir = build::workspace_root().join("target/demo");
    // A fresh story each run: the database and agent state from a previous demo go.
    let _ = fs::remove_dir_all(&demo_dir);
    fs::create_dir_all(demo_dir.join("bin"))?;

    println!("\n== starting sigil-collector (SQLite at target/demo/collector.db) ==");
    let collector = Guard(
        Command::new(bin_dir.join("sigil-collector"))
            .arg("--db")
            .arg(demo_dir.join("collector.db"))
            .args(["serve", "--grpc-listen", DEMO_GRPC, "--http-listen", DEMO_HTTP])
            .stderr(fs::File::create(demo_dir.join("collector.log"))?)
            .spawn()
            .context("starting sigil-collector")?,
    );
    wait_for_collector()?;

    let agent_bin = bin_dir.join("sigil-agent");
    // The checkout workload is a token client (a copy of the agent binary); a different
    // build of it (one byte differs) plays the binary that was swapped in.
    let checkout = demo_dir.join("bin/checkout-api");
    let rogue = demo_dir.join("bin/rogue-tool");
    copy_with_tail(&agent_bin, &checkout, b"checkout")?;
    copy_with_tail(&agent_bin, &rogue, b"rogue")?;
    let socket = demo_dir.join("workload.sock");
    let policy = demo_dir.join("policy.toml");
    let pods = demo_dir.join("pods.toml");
    fs::write(&policy, demo_policy(&sha256_hex(&checkout)?))?;
    fs::write(&pods, DEMO_PODS)?;

    println!("\n== starting sigil-agent (eBPF exec attestation + SPIFFE Workload API) ==");
    let mut agent = Command::new(&agent_bin)
        .args(["run", "--stdout", "--stats-interval", "0", "--oidc-listen", DEMO_OIDC])
        // The demo lays out kubelet-style cgroups under /sigil-demo.
        .args(["--cgroup-root-prefix", "/sigil-demo"])
        .arg("--policy")
        .arg(&policy)
        .arg("--pods")
        .arg(&pods)
        .arg("--socket")
        .arg(&socket)
        .args(["--collector", &format!("http://{DEMO_GRPC}")])
        .arg("--state-dir")
        .arg(demo_dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting sigil-agent")?;
    let events = follow_json(agent.stdout.take().context("agent stdout")?);
    let stderr = BufReader::new(agent.stderr.take().context("agent stderr")?);
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("  agent| {line}");
            // Ready once probes are attached, processes attested and the socket is up.
            if line.contains("Workload API on") {
                let _ = ready_tx.send(());
            }
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = agent.kill();
        bail!("sigil-agent did not start (see its log above)");
    }

    let endpoint = HttpsEndpoint::start(&python, &demo_dir)?;
    let result = run_workloads(&demo_dir, &events)
        .and_then(|()| run_token_requests(&socket, &checkout, &rogue, &events))
        .and_then(|jti| run_cloud_story(&python, &endpoint, &bin_dir, &demo_dir, &jti));
    remove_tree(&cgroup2_root()?.join("sigil-demo"));
    drop(endpoint);
    // The agent first, while its collector still answers: it sends what it has left and
    // stops, instead of warning that the collector went away.
    let _ = Command::new("kill").args(["-TERM", &agent.id().to_string()]).status();
    let _ = agent.wait();
    drop(collector);
    result
}

fn run_workloads(demo_dir: &Path, events: &mpsc::Receiver<Value>) -> Result<()> {
    let cg_root = cgroup2_root()?;
    let top = cg_root.join("sigil-demo");
    let mut children = Vec::new();
    println!("\n== running demo workloads in their cgroups ==");
    for w in &WORKLOADS {
        let leaf = top.join(w.layout);
        fs::create_dir_all(&leaf).with_context(|| format!("creating cgroup {}", leaf.display()))?;
        let bin = demo_dir.join("bin").join(w.name);
        fs::copy("/bin/sleep", &bin)?;
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
        let child = Command::new("/bin/sh").arg("-c").arg(r#"echo $$ > "$0" && exec "$@""#).arg(leaf.join("cgroup.procs")).arg(&bin).arg("5").spawn()?;
        println!("  {:<15} pid {:<7} cgroup /sigil-demo/{}", w.name, child.id(), w.layout);
        children.push((w.name, child, bin));
    }

    let mut log = fs::File::create(demo_dir.join("events.jsonl"))?;
    // The demo prints only its own workloads; everything else goes to the log file.
    let mut pending: Vec<(&str, u32, PathBuf)> = children.iter().map(|(n, c, b)| (*n, c.id(), b.clone())).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    println!("\n== what the agent attested ==");
    while !pending.is_empty() && Instant::now() < deadline {
        let Ok(ev) = events.recv_timeout(Duration::from_millis(200)) else { continue };
        writeln!(log, "{ev}")?;
        let Some(i) = pending
            .iter()
            .position(|(_, pid, bin)| ev["kind"] == "process_exec" && ev["pid"] == *pid && ev["binary"]["path"] == bin.to_string_lossy().as_ref())
        else {
            continue;
        };
        let (name, _, _) = pending.remove(i);
        print_record(name, &ev);
    }
    for (_, child, _) in &mut children {
        kill(child);
    }
    if !pending.is_empty() {
        bail!("the agent did not report: {:?}", pending.iter().map(|p| p.0).collect::<Vec<_>>());
    }
    println!("\nfull records: {}", demo_dir.join("events.jsonl").display());
    Ok(())
}

const DEMO_OIDC: &str = "127.0.0.1:18443";
const DEMO_GRPC: &str = "127.0.0.1:18451";
const DEMO_HTTP: &str = "127.0.0.1:18480";
const DEMO_AWS: u16 = 18444;
const LEDGER_LAYOUT: &str =
    "kubepods.slice/kubepods-pod1f2e3d4c_5b6a_4978_8695_a4b3c2d1e0f9.slice/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";
const AKIA: &str = "AKIASIGILDEMO0000001";
const ASIA: &str = "ASIASIGILDEMO0000002";

/// Waits until the collector accepts connections on both ports.
fn wait_for_collector() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(DEMO_HTTP).is_ok() && std::net::TcpStream::connect(DEMO_GRPC).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("sigil-collector did not start")
}

/// A local HTTPS endpoint standing in for AWS (boto3 signs requests for it as for S3).
struct HttpsEndpoint {
    _server: Guard,
}

impl HttpsEndpoint {
    fn start(python: &Path, dir: &Path) -> Result<Self> {
        Ok(Self { _server: peers::https_server(python, dir, DEMO_AWS)? })
    }
}

fn sigil(bin_dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin_dir.join("sigil")).args(["--collector", &format!("http://{DEMO_HTTP}")]).args(args).output()?;
    if !out.status.success() {
        bail!("sigil {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_cloud_story(python: &Path, _endpoint: &HttpsEndpoint, bin_dir: &Path, demo_dir: &Path, jti: &str) -> Result<()> {
    let script = build::workspace_root().join("tests/python/aws_client.py");
    let script = script.to_string_lossy();
    let url = format!("https://127.0.0.1:{DEMO_AWS}");
    println!("\n== two workloads call AWS (a local HTTPS stand-in) with boto3 ==");
    let out = run_in(LEDGER_LAYOUT, python, &[&script, &url, AKIA, "demoSECRETkeyNEVERstored0000000000000001"])?;
    println!("  ledger-worker (CRI-O pod) signed with long-lived key {AKIA}: {}", String::from_utf8_lossy(&out.stdout).trim());
    let out = run_in(CHECKOUT_LAYOUT, python, &[&script, &url, ASIA, "demoSECRETkeyNEVERstored0000000000000002", "demoSESSIONtokenNEVERstored"])?;
    println!("  checkout (containerd pod) signed with temporary key {ASIA}, obtained for its Sigil token: {}", String::from_utf8_lossy(&out.stdout).trim());

    // Wait until the agent's events reached the collector.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let posture: Value = serde_json::from_str(&sigil(bin_dir, &["--json", "posture"])?)?;
        if posture["runs_using_credentials"].as_u64() >= Some(2) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the collector did not receive the credential uses");
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    println!("\n== CloudTrail delivers the records of those calls (and of one nobody here made) ==");
    let now = String::from_utf8_lossy(&Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output()?.stdout).trim().to_owned();
    let tmpl = fs::read_to_string(build::workspace_root().join("tests/data/cloudtrail-story.json.tmpl"))?;
    let trail = demo_dir.join("cloudtrail.json");
    fs::write(
        &trail,
        tmpl.replace("{{TIME}}", &now)
            .replace("{{AKIA}}", AKIA)
            .replace("{{ASIA}}", ASIA)
            .replace("{{JTI}}", jti)
            .replace("{{SPIFFE_ID}}", "spiffe://demo.sigil.dev/ns/payments/sa/checkout")
            .replace("{{ISSUER_HOST}}", DEMO_OIDC),
    )?;
    let out =
        Command::new(bin_dir.join("sigil-collector")).arg("--db").arg(demo_dir.join("collector.db")).args(["ingest", "cloudtrail"]).arg(&trail).output()?;
    print!("  $ sigil-collector ingest cloudtrail target/demo/cloudtrail.json\n  {}", String::from_utf8_lossy(&out.stdout));

    for args in [vec!["trace", "ct-static-1"], vec!["trace", "ct-temp-3"], vec!["trace", "ct-unknown-4"], vec!["static-credentials"], vec!["posture"]] {
        println!("\n$ sigil {}", args.join(" "));
        print!("{}", sigil(bin_dir, &args)?);
    }
    Ok(())
}
const CHECKOUT_LAYOUT: &str = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7d1c7e0a_2b7e_4c55_9f1e_3a4b5c6d7e8f.slice/cri-containerd-9a8b7c6d5e4f30112233445566778899aabbccddeeff00112233445566778899.scope";
const DEMO_PODS: &str = r#"# Outside a cluster the agent learns namespace and service account from this file.
[[pod]]
uid = "7d1c7e0a-2b7e-4c55-9f1e-3a4b5c6d7e8f"
namespace = "payments"
service_account = "checkout"
"#;

fn demo_policy(checkout_sha: &str) -> String {
    format!(
        r#"trust_domain = "demo.sigil.dev"

[[entry]]
spiffe_id = "spiffe://demo.sigil.dev/ns/payments/sa/checkout"
ttl_seconds = 300
selectors = ["k8s:ns:payments", "k8s:sa:checkout", "unix:sha256:{checkout_sha}"]
"#
    )
}

fn copy_with_tail(src: &Path, dst: &Path, tail: &[u8]) -> Result<()> {
    let mut bytes = fs::read(src)?;
    bytes.extend_from_slice(tail);
    fs::write(dst, bytes)?;
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn sha256_hex(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().map(str::to_owned).context("sha256sum printed nothing")
}

/// Runs `program args...` inside the demo cgroup `layout`, to completion.
fn run_in(layout: &str, program: &Path, args: &[&str]) -> Result<std::process::Output> {
    let leaf = cgroup2_root()?.join("sigil-demo").join(layout);
    fs::create_dir_all(&leaf)?;
    let out = Command::new("/bin/sh").arg("-c").arg(r#"echo $$ > "$0" && exec "$@""#).arg(leaf.join("cgroup.procs")).arg(program).args(args).output()?;
    Ok(out)
}

/// Runs `program token ...` inside the checkout pod's cgroup.
fn token_in_pod(socket: &Path, program: &Path) -> Result<std::process::Output> {
    let socket = socket.to_string_lossy();
    run_in(CHECKOUT_LAYOUT, program, &["token", "--audience", "sts.amazonaws.com", "--socket", &socket])
}

/// Returns the jti of the token checkout obtained.
fn run_token_requests(socket: &Path, checkout: &Path, rogue: &Path, events: &mpsc::Receiver<Value>) -> Result<String> {
    use base64::Engine;
    println!("\n== checkout-api asks the Workload API for a token (audience sts.amazonaws.com) ==");
    let ok = token_in_pod(socket, checkout)?;
    let token = String::from_utf8_lossy(&ok.stdout).trim().to_owned();
    if !ok.status.success() || token.is_empty() {
        bail!("checkout-api was refused: {}", String::from_utf8_lossy(&ok.stderr).trim());
    }
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|c| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok())
        .and_then(|c| serde_json::from_slice::<Value>(&c).ok())
        .context("the token is not a JWT")?;
    println!("  issued a JWT-SVID ({} bytes; the token itself is never logged). Its claims:", token.len());
    for line in serde_json::to_string_pretty(&claims)?.lines() {
        println!("    {line}");
    }
    println!("  verify it with the OIDC discovery document: http://{DEMO_OIDC}/.well-known/openid-configuration");

    println!("\n== rogue-tool, another binary in the same pod, asks for the same token ==");
    let denied = token_in_pod(socket, rogue)?;
    if denied.status.success() {
        bail!("rogue-tool was given a token");
    }
    println!("  refused: {}", String::from_utf8_lossy(&denied.stderr).trim());

    // The agent recorded both decisions as identity events.
    let jti = claims["jti"].as_str().unwrap_or_default().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = (false, false);
    while !(seen.0 && seen.1) && Instant::now() < deadline {
        let Ok(ev) = events.recv_timeout(Duration::from_millis(200)) else { continue };
        match ev["kind"].as_str() {
            Some("token_issued") if !seen.0 => {
                seen.0 = true;
                println!("  event token_issued  jti {} for {} (exec {})", ev["jti"], ev["spiffe_id"], ev["process"]["exec_id"]);
            }
            Some("token_denied") if !seen.1 => {
                seen.1 = true;
                println!("  event token_denied  reason {} (binary sha256 {})", ev["reason"], ev["process"]["binary_sha256"]);
            }
            _ => {}
        }
    }
    Ok(jti)
}

fn print_record(name: &str, ev: &Value) {
    let s = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| "-".into());
    let w = &ev["workload"];
    println!("  {name}");
    println!("    pid {} (ppid {}) started {}  exec_id {}", ev["pid"], ev["ppid"], s(&ev["start_time"]), s(&ev["exec_id"]));
    println!("    binary  {}  sha256 {}", s(&ev["binary"]["path"]), s(&ev["binary"]["sha256"]));
    println!("    cgroup  {} (id {})", s(&ev["cgroup"]["path"]), ev["cgroup"]["id"]);
    match w["kind"].as_str() {
        Some("kubernetes_pod") => println!(
            "    workload kubernetes pod {}  container {}  runtime {}  qos {}",
            s(&w["pod_uid"]),
            s(&w["container_id"]),
            s(&w["runtime"]),
            s(&w["qos_class"])
        ),
        Some("systemd_unit") => println!("    workload systemd unit {}", s(&w["unit"])),
        other => println!("    workload {}", other.unwrap_or("-")),
    }
    let chain: Vec<String> = ev["ancestry"].as_array().map(|a| a.iter().map(|p| format!("{}({})", s(&p["comm"]), p["pid"])).collect()).unwrap_or_default();
    println!("    ancestry {}", if chain.is_empty() { "-".into() } else { chain.join(" <- ") });
}

fn follow_json(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            match serde_json::from_str(&line) {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("  demo: agent printed a line that is not JSON ({e}): {line}"),
            }
        }
    });
    rx
}

fn cgroup2_root() -> Result<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    info.lines()
        .find_map(|l| {
            let target = l.split(' ').nth(4)?;
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            (fstype == "cgroup2").then(|| PathBuf::from(target))
        })
        .context("no cgroup2 hierarchy is mounted")
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Removes a cgroup tree, deepest first, after killing what is left in it.
fn remove_tree(top: &Path) {
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
        for _ in 0..100 {
            if fs::remove_dir(d).is_ok() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}
