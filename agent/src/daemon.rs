//! `sigil-agent run`: assemble the pipeline and drive it until told to stop.
//!
//! ring buffer -> decode -> attest -> sink, on one blocking thread: attestation must read
//! procfs while the process still exists, so events are handled in kernel order as soon
//! as they arrive rather than queued behind unrelated work.

use std::{
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agent_common::EventKind;
use anyhow::Context;
use thiserror::Error;
use tracing::{info, warn};

use crate::{
    attest::Attestor,
    ebpf::{KernelEvent, Probes, features::KernelFeatures, mounts, tracefs},
    output::{AgentStats, JsonLines, LostByKind, Sink},
};

/// Failures that have their own exit code, so supervisors can tell "misconfigured node"
/// from "bug".
#[derive(Debug, Error)]
pub enum StartError {
    #[error("{0}")]
    Privilege(String),
    #[error("{0}")]
    Unavailable(String),
}

impl StartError {
    /// sysexits.h: EX_NOPERM, EX_UNAVAILABLE.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Privilege(_) => 77,
            StartError::Unavailable(_) => 69,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub node: String,
    pub ring_buffer_bytes: u32,
    pub hash_cache_entries: usize,
    pub max_hash_bytes: u64,
    pub stats_interval: Option<Duration>,
    pub scan: bool,
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities from /proc/self/status (`CapEff:` hex mask).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_owned())))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0)
}

/// Refuses early, with a reason, when this process cannot possibly load programs.
fn check_privileges() -> Result<(), StartError> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    Err(StartError::Privilege(format!(
        "needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN) to load eBPF programs; running as uid {euid} with effective capabilities {caps:#x}"
    )))
}

pub fn run(cfg: RunConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    check_privileges()?;
    let mounted = mounts::ensure().map_err(|e| StartError::Privilege(e.to_string()))?;
    let features = KernelFeatures::probe();
    if !features.tracepoint.available() || !features.ring_buffer.available() {
        return Err(StartError::Unavailable(format!(
            "the kernel refuses to load eBPF programs for this process ({features})"
        ))
        .into());
    }
    let offsets = tracefs::process_offsets(&mounted.tracefs)?;
    let mut probes = Probes::load(offsets, cfg.ring_buffer_bytes).map_err(|e| {
        if e.is_permission() { anyhow::Error::from(StartError::Unavailable(e.to_string())) } else { e.into() }
    })?;
    probes.attach_process_lifecycle().map_err(|e| {
        if e.is_permission() { anyhow::Error::from(StartError::Unavailable(e.to_string())) } else { e.into() }
    })?;
    let hook = features.exec_hook();
    info!(
        "sigil-agent running on {}: kernel [{features}]; exec via {}; fell back from [{}]; attached [{}]; mounted by agent [{}]",
        cfg.node,
        hook.running,
        hook.fell_back_from.join(", "),
        probes.attached.join(", "),
        mounted.mounted_by_us.join(", "),
    );

    let mut events = probes.take_events()?;
    let attestor = Attestor::new(cfg.node.clone(), &mounted.cgroup2, cfg.hash_cache_entries, cfg.max_hash_bytes);
    let sink = JsonLines;
    let mut stats = Counters::default();

    if cfg.scan {
        let started = Instant::now();
        let scanned = attestor.scan();
        info!("attested {} running processes from procfs in {:?}", scanned.len(), started.elapsed());
        for rec in &scanned {
            sink.emit(rec).context("writing output")?;
        }
    }

    let mut last_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        wait_readable(events.as_raw_fd(), Duration::from_millis(200));
        while let Some(item) = events.next() {
            stats.events += 1;
            match KernelEvent::decode(&item) {
                Ok(KernelEvent::Exec(ev)) => sink.emit(&attestor.on_exec(&ev)).context("writing output")?,
                Ok(KernelEvent::Exit(ev)) => {
                    if let Some(rec) = attestor.on_exit(&ev) {
                        sink.emit(&rec).context("writing output")?;
                    }
                }
                Err(e) => {
                    stats.decode_errors += 1;
                    warn!("dropping undecodable ring-buffer record ({} so far): {e}", stats.decode_errors);
                }
            }
        }
        if cfg.stats_interval.is_some_and(|every| last_stats.elapsed() >= every) {
            sink.emit(&stats.snapshot(&cfg.node, &attestor, &probes)).context("writing output")?;
            last_stats = Instant::now();
        }
    }
    sink.emit(&stats.snapshot(&cfg.node, &attestor, &probes)).context("writing output")?;
    info!("sigil-agent stopped");
    Ok(())
}

#[derive(Default)]
struct Counters {
    events: u64,
    decode_errors: u64,
}

impl Counters {
    fn snapshot(&self, node: &str, attestor: &Attestor, probes: &Probes) -> AgentStats {
        let lost = probes.lost().unwrap_or_default();
        let at = |k: EventKind| lost.get(k as usize).copied().unwrap_or(0);
        AgentStats {
            kind: "agent_stats",
            node: node.to_owned(),
            hash: attestor.hash_stats(),
            ring_buffer_lost: LostByKind { exec: at(EventKind::Exec), exit: at(EventKind::Exit) },
            decode_errors: self.decode_errors,
            processes_tracked: attestor.table().len(),
            events: self.events,
        }
    }
}

fn wait_readable(fd: i32, timeout: Duration) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd; EINTR and timeouts are both fine (the caller re-checks).
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// The node name: the DaemonSet's downward-API value, else the host name.
pub fn default_node_name() -> String {
    if let Ok(n) = std::env::var("NODE_NAME")
        && !n.is_empty() {
            return n;
        }
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "unknown".into())
}
