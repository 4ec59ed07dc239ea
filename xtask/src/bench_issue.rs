//! `cargo xtask bench`, token issuance: Workload API fetch latency (p50/p99) in
//! single-node mode (the agent signs) and fleet mode (the collector's cluster signer
//! signs; the agent caches). The client is the agent's own compiled gRPC client
//! (`sigil-agent token --repeat`), one connection, so the figures are the agent's and
//! the signer's, not process start-up.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::peers::Guard;

const FETCHES: usize = 500;

/// Starts `cmd` and returns once a stderr line contains `ready`; the rest of its log is
/// drained in the background so it never blocks.
fn start_until(cmd: &mut Command, ready: &str) -> Result<Guard> {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let guard = Guard(child);
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if line.contains(ready) {
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(guard);
        }
    }
    bail!("{cmd:?} exited before {ready:?}")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// p50/p99 in microseconds from `sigil-agent token --repeat`.
fn measure(bin: &Path, socket: &Path, distinct: bool) -> Result<(u64, u64)> {
    let mut cmd = Command::new(bin);
    cmd.args(["token", "--audience", "bench", "--repeat", &FETCHES.to_string(), "--socket"]).arg(socket);
    if distinct {
        cmd.arg("--distinct-audiences");
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("token fetch loop failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((v["p50_us"].as_u64().unwrap_or(0), v["p99_us"].as_u64().unwrap_or(0)))
}

fn agent(bin: &Path, dir: &Path, name: &str, extra: &[&str]) -> Result<Guard> {
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--no-trace", "--no-scan", "--stats-interval", "0", "--node-name", "bench-node", "--policy"])
        .arg(dir.join("policy.toml"))
        .arg("--socket")
        .arg(dir.join(format!("{name}.sock")))
        .arg("--state-dir")
        .arg(dir.join(format!("state-{name}")))
        .args(["--oidc-listen", &format!("127.0.0.1:{}", free_port()?)])
        .args(extra);
    start_until(&mut cmd, "Workload API on")
}

/// Runs both modes; returns (label, p50 µs, p99 µs) rows.
pub fn run(bin_dir: &Path, dir: &Path) -> Result<Vec<(String, u64, u64)>> {
    let bin = bin_dir.join("sigil-agent");
    let exe = std::fs::canonicalize(&bin)?;
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            "trust_domain = \"bench.test\"\n[[entry]]\nspiffe_id = \"spiffe://bench.test/bench\"\nselectors = [\"node:name:bench-node\", \"unix:path:{}\"]\n",
            exe.display()
        ),
    )?;
    let mut rows = Vec::new();
    {
        let _single = agent(&bin, dir, "single", &["--stdout"])?;
        let (p50, p99) = measure(&bin, &dir.join("single.sock"), true)?;
        rows.push(("single-node (agent signs)".to_owned(), p50, p99));
    }
    let grpc = free_port()?;
    let db = dir.join("collector.db");
    let _ = std::fs::remove_file(&db);
    let _collector = start_until(
        Command::new(bin_dir.join("sigil-collector"))
            .arg("--db")
            .arg(&db)
            .args(["serve", "--grpc-listen", &format!("127.0.0.1:{grpc}"), "--http-listen", &format!("127.0.0.1:{}", free_port()?)])
            .arg("--signer-policy")
            .arg(dir.join("policy.toml"))
            .args(["--issuer", "https://sigil.bench.invalid"]),
        "collector: gRPC on",
    )?;
    let url = format!("http://127.0.0.1:{grpc}");
    let _fleet = agent(&bin, dir, "fleet", &["--collector", &url, "--signer", &url])?;
    let (p50, p99) = measure(&bin, &dir.join("fleet.sock"), true)?;
    rows.push(("fleet, signed by the collector (cache miss)".to_owned(), p50, p99));
    let (p50, p99) = measure(&bin, &dir.join("fleet.sock"), false)?;
    rows.push(("fleet, served from the agent's cache".to_owned(), p50, p99));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    /// The issuance benchmark against the debug binaries (root, eBPF object built):
    /// `cargo test -p xtask bench_issue -- --ignored --nocapture`. `cargo xtask bench`
    /// runs the same code against release binaries.
    #[test]
    #[ignore = "needs root and `cargo xtask build`"]
    fn issuance_latency_on_debug_binaries() {
        let root = crate::build::workspace_root();
        let dir = root.join("target/bench-issue-debug");
        std::fs::create_dir_all(&dir).expect("dir");
        for (name, p50, p99) in super::run(&root.join("target/debug"), &dir).expect("bench") {
            println!("{name:<44} p50 {p50:>8} µs  p99 {p99:>8} µs");
        }
    }
}
