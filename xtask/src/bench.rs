//! `cargo xtask bench`: what the agent costs the workloads it watches, and what the
//! collector ingests.
//!
//! Agent: each workload runs first without the agent (baseline), then with it attached, in
//! the same process and on the same machine, alternating rounds so drift hits both sides;
//! the median of each side is compared. Ratios near 1.0 mean the agent is invisible.
//!
//! Ingest: a release collector, and a separate process (`sigil-ingest-bench`) pushing
//! real-shaped events over gRPC in batches of 500, then writing the same rows into SQLite
//! with plain batched inserts in the same run: events/s, the ratio, bytes per event.
//!
//! Figures are merged into target/bench/results.json (one key per benchmark).

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    build,
    peers::{self, Guard},
    provision,
    test::PYTHON_PACKAGES,
};

const ROUNDS: usize = 3;
const TLS_REQUESTS: usize = 3000;
const EXECS: usize = 1500;

fn start_agent(bin: &Path, state: &Path) -> Result<Guard> {
    let mut child = Command::new(bin)
        .args(["run", "--stdout", "--stats-interval", "0", "--state-dir"])
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("agent stderr")?;
    let guard = Guard(child);
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains("running processes from procfs") {
            // Keep draining the log in the background so the agent never blocks on it.
            return Ok(guard);
        }
    }
    bail!("the agent exited during start-up")
}

fn tls_round(python: &Path, script: &Path, port: u16) -> Result<f64> {
    let out = Command::new(python).arg(script).arg(port.to_string()).arg(TLS_REQUESTS.to_string()).output()?;
    if !out.status.success() {
        bail!("TLS loop failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn exec_round() -> Result<f64> {
    let start = Instant::now();
    for _ in 0..EXECS {
        Command::new("/bin/true").status()?;
    }
    Ok(EXECS as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(quick: bool, only: Option<&str>) -> Result<()> {
    match only {
        None => {
            agent(quick)?;
            ingest(quick)?;
            crate::bench_cloud::run_bench().map(|_| ())
        }
        Some("agent") => agent(quick),
        Some("ingest") => ingest(quick),
        Some("cloudtrail") => crate::bench_cloud::run_bench().map(|_| ()),
        Some(other) => bail!("unknown benchmark {other:?}: agent, ingest or cloudtrail"),
    }
}

/// Merges `value` under `key` into target/bench/results.json, keeping other benchmarks'.
fn record(key: &str, value: serde_json::Value) -> Result<()> {
    crate::bench_cloud::record_results(&serde_json::json!({ key: value }))?;
    eprintln!("bench: wrote {}", build::workspace_root().join("target/bench/results.json").display());
    Ok(())
}

/// A free loopback port (the collector binds it right after).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn ingest(quick: bool) -> Result<()> {
    let mut cmd = build::cargo();
    cmd.args(["build", "--release", "-p", "sigil-collector", "--bins"]);
    provision::run(&mut cmd)?;
    let bins = build::workspace_root().join("target/release");
    let dir = build::workspace_root().join("target/bench/ingest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("collector.db");
    let (grpc, http) = (free_port()?, free_port()?);
    let collector = Guard(
        Command::new(bins.join("sigil-collector"))
            .arg("--db")
            .arg(&db)
            .args(["serve", "--grpc-listen", &format!("127.0.0.1:{grpc}"), "--http-listen", &format!("127.0.0.1:{http}"), "--retention-days", "0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting sigil-collector")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
        if Instant::now() > deadline {
            bail!("the collector did not listen on {grpc}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = if quick { 100_000 } else { 400_000 };
    eprintln!("bench: ingest of {events} events over gRPC (batches of 500), then the same rows raw");
    let out = Command::new(bins.join("sigil-ingest-bench"))
        .args(["--grpc", &format!("http://127.0.0.1:{grpc}"), "--events", &events.to_string(), "--batch", "500"])
        .arg("--db")
        .arg(&db)
        .arg("--raw-db")
        .arg(dir.join("raw.db"))
        .output()?;
    drop(collector);
    if !out.status.success() {
        bail!("sigil-ingest-bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).context("sigil-ingest-bench output")?;
    println!("
{:<52} {:>12}", format!("collector ingest ({} events, {})", r["events"], r["mix"].as_str().unwrap_or("")), "");
    println!("{:<52} {:>12}", "gRPC push into SQLite (events/s)", r["grpc_events_per_second"]);
    println!("{:<52} {:>12}", "raw batched insert of the same rows (rows/s)", r["raw_insert_rows_per_second"]);
    println!("{:<52} {:>12}", "ratio (gRPC / raw)", r["ratio_to_raw"]);
    println!("{:<52} {:>12}", "bytes per event (collector store)", r["bytes_per_event"]);
    println!("{:<52} {:>12}", "bytes per event (raw rows)", r["raw_bytes_per_event"]);
    record("ingest", r)
}

fn agent(quick: bool) -> Result<()> {
    if !provision::is_root() {
        bail!("cargo xtask bench needs root: the agent loads eBPF programs");
    }
    provision::debian_packages(&["openssl"])?;
    let python = provision::python_env(PYTHON_PACKAGES)?;
    let bin = build::all(true)?.join("sigil-agent");
    let root = build::workspace_root();
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let port = 18_600;
    let _server = peers::https_server(&python, &dir, port)?;
    let script = root.join("tests/python/tls_loop.py");

    let (mut tls_base, mut tls_agent, mut exec_base, mut exec_agent) = (vec![], vec![], vec![], vec![]);
    let rounds = if quick { 1 } else { ROUNDS };
    for round in 1..=rounds {
        eprintln!("bench: round {round}/{rounds}");
        tls_base.push(tls_round(&python, &script, port)?);
        exec_base.push(exec_round()?);
        let agent = start_agent(&bin, &dir.join("state"))?;
        std::thread::sleep(Duration::from_millis(500));
        tls_agent.push(tls_round(&python, &script, port)?);
        exec_agent.push(exec_round()?);
        drop(agent);
    }
    println!("\n{:<44} {:>14} {:>14} {:>8}", format!("benchmark (median of {rounds} rounds)"), "baseline", "with agent", "ratio");
    let mut figures = serde_json::Map::new();
    for (key, name, unit, base, with) in [
        ("tls_requests", "TLS keep-alive requests with a bearer token", "req/s", tls_base, tls_agent),
        ("exec", "exec of /bin/true", "exec/s", exec_base, exec_agent),
    ] {
        let (b, w) = (median(base), median(with));
        println!("{name:<44} {:>8.0} {unit:<5} {:>8.0} {unit:<5} {:>8.3}", b, w, w / b);
        figures.insert(key.into(), serde_json::json!({"baseline": b.round(), "with_agent": w.round(), "ratio": (w / b * 1000.0).round() / 1000.0}));
    }
    let issue_dir = dir.join("issue");
    std::fs::create_dir_all(&issue_dir)?;
    let rows = crate::bench_issue::run(bin.parent().context("the agent binary has a directory")?, &issue_dir)?;
    println!("\n{:<44} {:>14} {:>14}", "Workload API token fetch (500 fetches)", "p50", "p99");
    for (name, p50, p99) in rows {
        println!("{name:<44} {:>11} µs {:>11} µs", p50, p99);
    }
    record("agent_overhead", serde_json::Value::Object(figures))
}
