//! `cargo xtask bench`: what the agent costs the workloads it watches.
//!
//! Each workload runs first without the agent (baseline), then with it attached, in the
//! same process and on the same machine, alternating rounds so drift hits both sides;
//! the median of each side is compared. Ratios near 1.0 mean the agent is invisible.

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

pub fn run(only: Option<&str>) -> Result<()> {
    match only {
        None => {}
        Some("cloudtrail") => return crate::bench_cloud::run_bench().map(|_| ()),
        Some("agent") => return agent(),
        Some(other) => bail!("unknown bench part {other:?} (agent, cloudtrail)"),
    }
    agent()?;
    crate::bench_cloud::run_bench().map(|_| ())
}

fn agent() -> Result<()> {
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
    for round in 1..=ROUNDS {
        eprintln!("bench: round {round}/{ROUNDS}");
        tls_base.push(tls_round(&python, &script, port)?);
        exec_base.push(exec_round()?);
        let agent = start_agent(&bin, &dir.join("state"))?;
        std::thread::sleep(Duration::from_millis(500));
        tls_agent.push(tls_round(&python, &script, port)?);
        exec_agent.push(exec_round()?);
        drop(agent);
    }
    println!("\n{:<44} {:>14} {:>14} {:>8}", "benchmark (median of 3 rounds)", "baseline", "with agent", "ratio");
    for (name, unit, base, with) in [
        ("TLS keep-alive requests with a bearer token", "req/s", tls_base, tls_agent),
        ("exec of /bin/true", "exec/s", exec_base, exec_agent),
    ] {
        let (b, w) = (median(base), median(with));
        println!("{name:<44} {:>8.0} {unit:<5} {:>8.0} {unit:<5} {:>8.3}", b, w, w / b);
    }
    let issue_dir = dir.join("issue");
    std::fs::create_dir_all(&issue_dir)?;
    let rows = crate::bench_issue::run(bin.parent().context("the agent binary has a directory")?, &issue_dir)?;
    println!("\n{:<44} {:>14} {:>14}", "Workload API token fetch (500 fetches)", "p50", "p99");
    for (name, p50, p99) in rows {
        println!("{name:<44} {:>11} µs {:>11} µs", p50, p99);
    }
    Ok(())
}
