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

use crate::{peers::Guard, ports};

/// Enough that one slow moment (this VM's neighbours) does not make the p99.
const FETCHES: usize = 2000;

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

/// What signing costs in the agent's own code (`sigil-agent sign-bench`), µs.
pub struct SignCost {
    pub es256_us: f64,
    pub jwt_us: f64,
}

pub fn sign_cost(bin: &Path) -> Result<SignCost> {
    let out = Command::new(bin).arg("sign-bench").output()?;
    if !out.status.success() {
        bail!("sigil-agent sign-bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let field = |k: &str| v[k].as_f64().with_context(|| format!("sign-bench printed no {k}: {v}"));
    Ok(SignCost { es256_us: field("es256_us")?, jwt_us: field("jwt_us")? })
}

/// One mode's figures: p50 and p99 (µs), tokens per second.
pub struct Row {
    pub name: String,
    pub p50_us: u64,
    pub p99_us: u64,
    pub tokens_per_s: f64,
}

/// Figures of `sigil-agent token --repeat` with `clients` connections fetching at once.
fn measure(bin: &Path, socket: &Path, distinct: bool, clients: usize, name: &str) -> Result<Row> {
    let mut cmd = Command::new(bin);
    cmd.args(["token", "--audience", "bench", "--repeat", &FETCHES.to_string(), "--clients", &clients.to_string(), "--socket"]).arg(socket);
    if distinct {
        cmd.arg("--distinct-audiences");
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("token fetch loop failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(Row {
        name: name.to_owned(),
        p50_us: v["p50_us"].as_u64().unwrap_or(0),
        p99_us: v["p99_us"].as_u64().unwrap_or(0),
        tokens_per_s: v["tokens_per_s"].as_f64().unwrap_or(0.0),
    })
}

fn agent(bin: &Path, dir: &Path, name: &str, extra: &[&str]) -> Result<Guard> {
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--no-trace", "--no-scan", "--stats-interval", "0", "--node-name", "bench-node", "--policy"])
        .arg(dir.join("policy.toml"))
        .arg("--socket")
        .arg(dir.join(format!("{name}.sock")))
        .arg("--state-dir")
        .arg(dir.join(format!("state-{name}")))
        .args(["--oidc-listen", &format!("127.0.0.1:{}", ports::free_port()?)])
        .args(extra);
    start_until(&mut cmd, "Workload API on")
}

/// Runs both modes; returns one row per mode.
pub fn run(bin_dir: &Path, dir: &Path) -> Result<Vec<Row>> {
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
        rows.push(measure(&bin, &dir.join("single.sock"), true, 1, "single-node (agent signs)")?);
        // Throughput: as many clients as a node's workloads would open at once.
        rows.push(measure(&bin, &dir.join("single.sock"), true, 4, "single-node, 4 clients at once")?);
    }
    let grpc = ports::free_port()?;
    let db = dir.join("collector.db");
    let _ = std::fs::remove_file(&db);
    let _collector = start_until(
        Command::new(bin_dir.join("sigil-collector"))
            .arg("--db")
            .arg(&db)
            .args(["serve", "--grpc-listen", &format!("127.0.0.1:{grpc}"), "--http-listen", &format!("127.0.0.1:{}", ports::free_port()?)])
            .arg("--signer-policy")
            .arg(dir.join("policy.toml"))
            .args(["--issuer", "https://sigil.bench.invalid"]),
        "collector: gRPC on",
    )?;
    let url = format!("http://127.0.0.1:{grpc}");
    let _fleet = agent(&bin, dir, "fleet", &["--collector", &url, "--signer", &url])?;
    rows.push(measure(&bin, &dir.join("fleet.sock"), true, 1, "fleet, signed by the collector (cache miss)")?);
    rows.push(measure(&bin, &dir.join("fleet.sock"), false, 1, "fleet, served from the agent's cache")?);
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
        for r in super::run(&root.join("target/debug"), &dir).expect("bench") {
            println!("{:<44} p50 {:>8} µs  p99 {:>8} µs  {:>8.0} tokens/s", r.name, r.p50_us, r.p99_us, r.tokens_per_s);
        }
    }
}
