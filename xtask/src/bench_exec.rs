//! `cargo xtask bench`, exec cost: a bash fork+exec loop with nothing attached, with
//! bpftrace counting the same tracepoint, and with the release agent; the agent's RSS and
//! CPU per exec; and an exec storm that ramps up until the ring buffer loses events.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::peers::Guard;

/// The bpftrace program the agent is compared with: the same exec tracepoint, counted by
/// cgroup and comm in a kernel map (the least a per-exec observer can do).
const BPFTRACE_PROGRAM: &str = "tracepoint:sched:sched_process_exec { @[cgroup, comm] = count(); }";

/// A running release agent whose stdout (events and `agent_stats`) is read in the
/// background, keeping only the newest `agent_stats` and a count of lines.
pub struct Agent {
    guard: Option<Guard>,
    pid: u32,
    last_stats: Arc<Mutex<Option<Value>>>,
    reader: Option<JoinHandle<()>>,
}

impl Agent {
    pub fn start(bin: &Path, state: &Path, extra: &[&str]) -> Result<Self> {
        let _ = std::fs::remove_dir_all(state);
        let mut child = Command::new(bin)
            .args(["run", "--stdout", "--stats-interval", "1", "--state-dir"])
            .arg(state)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().context("agent stdout")?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let guard = Guard(child);
        let last_stats: Arc<Mutex<Option<Value>>> = Arc::default();
        let keep = last_stats.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"kind\":\"agent_stats\"")
                    && let (Ok(v), Ok(mut slot)) = (serde_json::from_str::<Value>(&line), keep.lock())
                {
                    *slot = Some(v);
                }
            }
        });
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            if line.contains("running processes from procfs") {
                // Keep draining the log so the agent never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return Ok(Self { guard: Some(guard), pid, last_stats, reader: Some(reader) });
            }
        }
        bail!("the agent exited during start-up")
    }

    /// The newest `agent_stats` (emitted every second).
    pub fn stats(&self) -> Option<Value> {
        self.last_stats.lock().ok().and_then(|s| s.clone())
    }

    /// Waits for an `agent_stats` newer than now (the agent emits one a second).
    pub fn fresh_stats(&self) -> Option<Value> {
        if let Ok(mut s) = self.last_stats.lock() {
            *s = None;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(s) = self.stats() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field =
            |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0);
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// User + system CPU of the whole agent (every thread), in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
        f.iter().sum()
    }

    pub fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// Stops the agent (SIGTERM) and returns its final `agent_stats`.
    pub fn stop(mut self) -> Option<Value> {
        if let Ok(mut s) = self.last_stats.lock() {
            *s = None;
        }
        drop(self.guard.take());
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.stats()
    }
}

/// bpftrace with the comparison program, attached.
fn start_bpftrace() -> Result<Guard> {
    let mut child = Command::new("bpftrace")
        .args(["-e", BPFTRACE_PROGRAM])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bpftrace (Debian package bpftrace)")?;
    let stdout = child.stdout.take().context("bpftrace stdout")?;
    let guard = Guard(child);
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if line.starts_with("Attaching") {
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(guard);
        }
    }
    bail!("bpftrace exited before attaching")
}

/// Seconds for bash to fork+exec `/bin/true` `n` times.
pub fn bash_loop(n: usize) -> Result<f64> {
    let started = Instant::now();
    let status = Command::new("bash").arg("-c").arg(format!("for ((i=0;i<{n};i++)); do /bin/true; done")).status()?;
    if !status.success() {
        bail!("the exec loop failed: {status}");
    }
    Ok(started.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// USER_HZ, the unit of utime/stime in /proc/<pid>/stat.
fn clock_ticks_per_s() -> f64 {
    Command::new("getconf").arg("CLK_TCK").output().ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}

/// What the exec loop measured, median of the rounds.
#[derive(Debug, Default)]
pub struct ExecLoop {
    pub nothing_s: f64,
    pub bpftrace_s: f64,
    pub agent_s: f64,
    pub agent_no_trace_s: f64,
    /// Whole-agent CPU per exec (every thread), µs, default agent.
    pub agent_cpu_us_per_exec: f64,
    /// Event-thread CPU per exec event from agent_stats, µs.
    pub agent_thread_us_per_exec: f64,
    pub rss_rest_kib: u64,
    pub rss_loop_kib: u64,
    pub rss_loop_hwm_kib: u64,
    pub lost: u64,
}

/// Modes of one round, in the order of the first round; each round starts one later.
const MODES: [&str; 4] = ["nothing", "bpftrace", "agent --no-trace", "agent"];

pub fn exec_loop(bin: &Path, dir: &Path, execs: usize, rounds: usize) -> Result<ExecLoop> {
    let mut times: [Vec<f64>; 4] = Default::default();
    let (mut cpu, mut thread_us, mut rest, mut under, mut hwm, mut lost) = (vec![], vec![], 0, 0, 0, 0);
    for round in 0..rounds {
        for i in 0..MODES.len() {
            let m = (i + round) % MODES.len();
            eprintln!("bench: exec loop round {}/{rounds}: {}", round + 1, MODES[m]);
            match m {
                0 => times[m].push(bash_loop(execs)?),
                1 => {
                    let _bt = start_bpftrace()?;
                    std::thread::sleep(Duration::from_millis(300));
                    times[m].push(bash_loop(execs)?);
                }
                _ => {
                    let extra: &[&str] = if m == 2 { &["--no-trace"] } else { &[] };
                    let agent = Agent::start(bin, &dir.join("state-exec"), extra)?;
                    std::thread::sleep(Duration::from_millis(1000));
                    let before = agent.cpu_ticks();
                    if m == 3 {
                        rest = rest.max(agent.rss_kib().0);
                    }
                    times[m].push(bash_loop(execs)?);
                    // Let the agent drain what the loop queued before reading its cost.
                    std::thread::sleep(Duration::from_millis(1000));
                    if m == 3 {
                        cpu.push((agent.cpu_ticks() - before) as f64 / clock_ticks_per_s() * 1e6 / execs as f64);
                        let (r, h) = agent.rss_kib();
                        under = under.max(r);
                        hwm = hwm.max(h);
                    }
                    let stats = agent.stop().context("the agent wrote no final agent_stats")?;
                    lost += stats["ring_buffer_lost"]["exec"].as_u64().unwrap_or(0) + stats["ring_buffer_lost"]["exit"].as_u64().unwrap_or(0);
                    if m == 3
                        && let Some(us) = stats["cpu_by_kind"]["exec"]["us_per_event"].as_f64()
                    {
                        thread_us.push(us);
                    }
                }
            }
        }
    }
    let [nothing, bpftrace, no_trace, agent] = times;
    Ok(ExecLoop {
        nothing_s: median(nothing),
        bpftrace_s: median(bpftrace),
        agent_no_trace_s: median(no_trace),
        agent_s: median(agent),
        agent_cpu_us_per_exec: median(cpu),
        agent_thread_us_per_exec: median(thread_us),
        rss_rest_kib: rest,
        rss_loop_kib: under,
        rss_loop_hwm_kib: hwm,
        lost,
    })
}

/// RSS with `n` distinct executables hashed and cached: `n` tiny `#!/bin/sh` scripts,
/// each exec'd once (the agent hashes every script it sees run). Returns (RSS KiB,
/// digests computed).
pub fn rss_with_cached_hashes(bin: &Path, dir: &Path, n: usize) -> Result<(u64, u64)> {
    let scripts = dir.join("scripts");
    let _ = std::fs::remove_dir_all(&scripts);
    std::fs::create_dir_all(&scripts)?;
    for i in 0..n {
        let p = scripts.join(format!("s{i}"));
        std::fs::write(&p, format!("#!/bin/sh\n# {i}\n"))?;
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let entries = (n * 2).to_string();
    let agent = Agent::start(bin, &dir.join("state-rss"), &["--no-trace", "--hash-cache-entries", &entries])?;
    let status = Command::new("bash").arg("-c").arg(format!("for f in {}/s*; do \"$f\"; done", scripts.display())).status()?;
    if !status.success() {
        bail!("running the scripts failed: {status}");
    }
    // Wait until the agent has handled the storm of execs.
    let mut computed = 0;
    for _ in 0..30 {
        let s = agent.fresh_stats().context("no agent_stats")?;
        let now = s["hash"]["hashes_computed"].as_u64().unwrap_or(0);
        if now == computed && now > 0 {
            break;
        }
        computed = now;
    }
    let rss = agent.rss_kib().0;
    agent.stop();
    std::fs::remove_dir_all(&scripts)?;
    Ok((rss, computed))
}

/// One step of the storm: `workers` parallel bash loops for `seconds`.
fn storm_step(workers: usize, seconds: u64) -> Result<f64> {
    let started = Instant::now();
    let children: Vec<_> = (0..workers)
        .map(|_| {
            Command::new("bash")
                .arg("-c")
                .arg(format!("n=0; end=$((SECONDS+{seconds})); while ((SECONDS<end)); do /bin/true; n=$((n+1)); done; echo $n"))
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    let mut execs = 0u64;
    for c in children {
        let out = c.wait_with_output()?;
        execs += String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap_or(0);
    }
    Ok(execs as f64 / started.elapsed().as_secs_f64())
}

fn lost_total(stats: &Value) -> u64 {
    ["exec", "exit"].iter().map(|k| stats["ring_buffer_lost"][k].as_u64().unwrap_or(0)).sum()
}

/// The overload ramp's findings.
#[derive(Debug, Default)]
pub struct Storm {
    /// Highest exec rate reached with no ring-buffer loss (exec/s).
    pub max_lossless_rate: f64,
    /// Lowest rate at which losses were counted (None: none at any rate reached).
    pub first_loss_rate: Option<f64>,
    pub lost: u64,
    /// After the storm: the agent still runs and handles a quiet exec loop with no new loss.
    pub recovered: bool,
    /// (ring-buffer bytes, workers, exec/s, lost) per step.
    pub steps: Vec<(u32, usize, f64, u64)>,
}

/// Ramps a parallel exec storm against the agent (default ring buffer, then a one-page
/// ring buffer so that losses are certain and the recovery can be shown).
pub fn storm(bin: &Path, dir: &Path, workers: &[usize], seconds: u64) -> Result<Storm> {
    let mut out = Storm::default();
    for ring in [4u32 << 20, 4096] {
        let ring_arg = ring.to_string();
        let agent = Agent::start(bin, &dir.join("state-storm"), &["--no-trace", "--ring-buffer-bytes", &ring_arg])?;
        let mut lost = lost_total(&agent.fresh_stats().context("no agent_stats")?);
        for &w in workers {
            eprintln!("bench: exec storm, ring buffer {ring} B, {w} workers");
            let rate = storm_step(w, seconds)?;
            std::thread::sleep(Duration::from_millis(1500));
            let now = lost_total(&agent.fresh_stats().context("no agent_stats")?);
            let step_lost = now - lost;
            lost = now;
            out.steps.push((ring, w, rate, step_lost));
            if ring == 4 << 20 {
                if step_lost == 0 {
                    out.max_lossless_rate = out.max_lossless_rate.max(rate);
                } else {
                    out.first_loss_rate = Some(out.first_loss_rate.map_or(rate, |r: f64| r.min(rate)));
                }
            }
            out.lost += step_lost;
        }
        // Recovery: a quiet loop afterwards is handled in full, with no new loss.
        let before = agent.fresh_stats().context("no agent_stats")?;
        bash_loop(200)?;
        std::thread::sleep(Duration::from_millis(1500));
        let after = agent.fresh_stats().context("no agent_stats")?;
        let handled = after["events"].as_u64().unwrap_or(0) - before["events"].as_u64().unwrap_or(0);
        out.recovered = agent.alive() && lost_total(&after) == lost_total(&before) && handled >= 400;
        agent.stop();
        if !out.recovered {
            break;
        }
    }
    Ok(out)
}

/// The agent's hasher vs `openssl dgst -sha256` on the same file: (agent MB/s, openssl
/// MB/s, cache-hit ns).
pub fn hashing(bin: &Path, dir: &Path, mib: usize) -> Result<(f64, f64, f64)> {
    let file: PathBuf = dir.join("hash-input.bin");
    let mut data = vec![0u8; mib << 20];
    // Incompressible-looking bytes (content does not matter to SHA-256, but keeps the
    // file honest if anything below compresses).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&file, &data)?;
    drop(data);
    let out = Command::new(bin).arg("hash-bench").arg(&file).output()?;
    if !out.status.success() {
        bail!("sigil-agent hash-bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let o = Command::new("openssl").args(["dgst", "-sha256"]).arg(&file).stdout(Stdio::null()).status()?;
        if !o.success() {
            bail!("openssl dgst failed");
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    std::fs::remove_file(&file)?;
    let bytes = (mib << 20) as f64;
    Ok((v["mb_per_s"].as_f64().unwrap_or(0.0), bytes / best / 1e6, v["cache_hit_ns"].as_f64().unwrap_or(0.0)))
}
