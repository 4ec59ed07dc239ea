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
use std::os::unix::fs::OpenOptionsExt;

use anyhow::Context;
use thiserror::Error;
use tracing::{error, info, warn};

use sigil_telemetry::Telemetry;

use sigil_proto::EventBody;

use crate::{
    attest::{Attestor, pool::HashBudget},
    cpu,
    ebpf::{KernelEvent, Probes, features::KernelFeatures, kernel_layout, mounts, tracefs},
    issue::{
        issuer::{Issuer, IssuerConfig},
        keys::KeyManager,
        oidc,
        policy::MAX_TTL,
        remote::RemoteSigner,
        signing::{LocalSigner, TokenSigner},
        workload_api,
    },
    metrics,
    output::{AgentStats, JsonLines, LostByKind, Sink, Tee},
    stream::exporter::{self, CollectorConfig, SpoolSink},
    trace::{files, fingerprint::Fingerprinter, tracer::Tracer},
};

/// Failures that have their own exit code, so supervisors can tell "misconfigured node"
/// from "bug".
#[derive(Debug, Error)]
pub enum StartError {
    #[error("{0}")]
    Privilege(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Config(String),
}

impl StartError {
    /// sysexits.h: EX_NOPERM, EX_UNAVAILABLE, EX_CONFIG.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Privilege(_) => 77,
            StartError::Unavailable(_) => 69,
            StartError::Config(_) => 78,
        }
    }
}

/// Token issuance settings; issuance runs only when a policy is configured.
#[derive(Debug, Clone)]
pub struct IssuanceConfig {
    pub policy: std::path::PathBuf,
    pub pods: Option<std::path::PathBuf>,
    pub socket: std::path::PathBuf,
    pub oidc_listen: std::net::SocketAddr,
    pub issuer_url: String,
    pub key_rotation: Duration,
    pub limits: crate::issue::limits::WorkloadApiLimits,
    /// Fleet mode: the cluster signer (URL and the agent's mTLS files); None signs locally.
    pub signer: Option<CollectorConfig>,
}

/// Credential-use tracing settings.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// Per-cluster fingerprint key (shared by every node, e.g. from a Secret).
    pub fingerprint_key: Option<std::path::PathBuf>,
    /// Where a generated key is kept when none is given.
    pub state_dir: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub node: String,
    /// Prometheus `/metrics` address, when metrics should be scraped.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub telemetry: sigil_telemetry::TelemetryConfig,
    pub stdout: bool,
    pub collector: Option<CollectorConfig>,
    pub issuance: Option<IssuanceConfig>,
    pub trace: Option<TraceConfig>,
    pub ring_buffer_bytes: u32,
    pub tls_calls_entries: u32,
    /// Where the exec program's field offsets come from (`--kernel-btf`).
    pub kernel_btf: std::path::PathBuf,
    pub hash_cache_entries: usize,
    pub max_hash_bytes: u64,
    /// Large executables' bytes waiting to be hashed at most.
    pub hash_queue_bytes: u64,
    /// Where pod and container cgroups may be (`--cgroup-root-prefix`).
    pub layouts: crate::attest::workload::Layouts,
    pub stats_interval: Option<Duration>,
    pub scan: bool,
    /// Pod metadata from the API server (`--kubernetes`).
    pub kubernetes: Option<crate::k8s::watch::WatchConfig>,
}

/// How often /proc/*/maps is scanned for newly loaded TLS libraries.
const LIBRARY_SCAN: Duration = Duration::from_secs(1);

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

/// Resolves once `stop` is set (polled: the flag is set from a signal handler task).
async fn stopped(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the Workload API, OIDC discovery and key maintenance on `rt`.
fn start_issuance(
    ic: &IssuanceConfig,
    node: &str,
    pod_cache: Option<Arc<crate::k8s::PodCache>>,
    attestor: Arc<Attestor>,
    sink: Arc<dyn Sink>,
    rt: &tokio::runtime::Handle,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Arc<Issuer>> {
    let _guard = rt.enter();
    // Single-node mode signs with in-memory keys and serves OIDC itself; fleet mode asks
    // the cluster signer, which serves the one OIDC issuer for the cluster.
    let (signer, local_keys): (Arc<dyn TokenSigner>, _) = match &ic.signer {
        Some(sc) => {
            // The signer is reached at the first URL given (a Service in front of the
            // collector replicas spreads it); only the event stream fails over in order.
            let channel = exporter::channel(sc)?.into_iter().next().context("no signer URL")?;
            let remote = RemoteSigner::new(sc.url.clone(), node.to_owned(), channel, rt.clone());
            (Arc::new(remote), None)
        }
        None => {
            let keys = Arc::new(KeyManager::new(ic.key_rotation, MAX_TTL)?);
            (Arc::new(LocalSigner(keys.clone())), Some(keys))
        }
    };
    let issuer = Arc::new(Issuer::new(
        IssuerConfig { node: node.to_owned(), issuer_url: ic.issuer_url.clone(), policy_path: ic.policy.clone(), pods_path: ic.pods.clone(), pod_cache },
        attestor,
        signer.clone(),
        sink,
    )?);
    let socket = workload_api::bind(&ic.socket)?;
    let (bump, bundle_version) = tokio::sync::watch::channel(0u64);

    let (i, s, limits) = (issuer.clone(), stop.clone(), ic.limits.clone());
    rt.spawn(async move {
        if let Err(e) = workload_api::serve(socket, i, bundle_version, limits, stopped(s)).await {
            error!("{e:#}");
        }
    });
    if let Some(k) = local_keys {
        let http = oidc::bind(ic.oidc_listen)?;
        let (s, url) = (stop.clone(), ic.issuer_url.clone());
        rt.spawn(async move {
            if let Err(e) = oidc::serve(http, url, k, stopped(s)).await {
                error!("{e:#}");
            }
        });
    }
    // Rotation, retirement, and noticing bad policy edits even when nobody asks.
    let (i, s) = (issuer.clone(), stop.clone());
    rt.spawn(async move {
        let mut failing = false;
        while !s.load(Ordering::Relaxed) {
            let sg = signer.clone();
            match tokio::task::spawn_blocking(move || sg.maintain()).await.unwrap_or_else(|e| Err(e.to_string())) {
                Ok(changed) => {
                    if changed {
                        bump.send_modify(|v| *v += 1);
                        let active = signer.active_kid().unwrap_or_else(|| "chosen by the cluster signer".into());
                        info!("signing keys changed; active kid {active} ({} published)", signer.jwks("sig").len());
                    }
                    failing = false;
                }
                // Reported once per outage, not every half second.
                Err(e) if !failing => {
                    error!("key maintenance: {e}");
                    failing = true;
                }
                Err(_) => {}
            }
            let i2 = i.clone();
            let _ = tokio::task::spawn_blocking(move || i2.refresh()).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    match &ic.signer {
        Some(sc) => info!(
            "Workload API on {}, tokens signed by the cluster signer at {} (fleet mode), trust domain {}",
            ic.socket.display(),
            sc.url,
            issuer.trust_domain()
        ),
        None => info!(
            "Workload API on {}, OIDC discovery on http://{} (issuer {}), trust domain {}",
            ic.socket.display(),
            ic.oidc_listen,
            ic.issuer_url,
            issuer.trust_domain()
        ),
    }
    Ok(issuer)
}

/// The fingerprint key: the configured file, else one generated once per state dir.
/// Fingerprints are only comparable across nodes when they share the key.
fn fingerprint_key(tc: &TraceConfig) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = &tc.fingerprint_key {
        let key = std::fs::read(path).with_context(|| format!("reading fingerprint key {}", path.display()))?;
        if key.len() < 16 {
            anyhow::bail!("fingerprint key {} is {} bytes; at least 16 are needed", path.display(), key.len());
        }
        return Ok(key);
    }
    let path = tc.state_dir.join("fingerprint.key");
    if let Ok(key) = std::fs::read(&path)
        && key.len() >= 16
    {
        return Ok(key);
    }
    warn!("no --fingerprint-key-file: generating {} (fingerprints are comparable only between agents sharing a key)", path.display());
    std::fs::create_dir_all(&tc.state_dir).with_context(|| format!("creating {}", tc.state_dir.display()))?;
    let key = Fingerprinter::generate_key().to_vec();
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&key)?;
    Ok(key)
}

/// Attaches credential-use tracing; on failure logs why and runs without it (exec
/// attestation and issuance do not depend on it).
fn start_tracing(tc: &TraceConfig, node: &str, probes: &mut Probes, tracefs: &std::path::Path, sigil_issuers: Vec<String>) -> anyhow::Result<Option<Tracer>> {
    let key = fingerprint_key(tc)?;
    if let Err(e) = probes.attach_tracing(tracefs).and_then(|()| probes.watch_file_names(files::WATCHED.iter().copied())) {
        warn!("credential-use tracing is off: {e}");
        return Ok(None);
    }
    let mut tracer = Tracer::new(node.to_owned(), Fingerprinter::new(&key), sigil_issuers);
    let found = files::scan_well_known();
    if let Err(e) = probes.watch_file_ids(found.iter().map(|(id, _, _)| *id)) {
        warn!("credential files found at start are matched by name only: {e}");
    }
    tracer.learn_files(found);
    tracer.libs.attach_system(probes);
    tracer.libs.scan(probes);
    Ok(Some(tracer))
}

pub fn run(cfg: RunConfig, stop: Arc<AtomicBool>, rt: tokio::runtime::Handle, telemetry: Option<Arc<Telemetry>>) -> anyhow::Result<()> {
    check_privileges()?;
    crate::attest::pidns::check_initial().map_err(|e| StartError::Config(e.to_string()))?;
    let mounted = mounts::ensure().map_err(|e| StartError::Privilege(e.to_string()))?;
    let features = KernelFeatures::probe();
    if !features.tracepoint.available() || !features.ring_buffer.available() {
        return Err(StartError::Unavailable(format!("the kernel refuses to load eBPF programs for this process ({features})")).into());
    }
    let offsets = tracefs::process_offsets(&mounted.tracefs)?;
    // Without the executable's inode offsets the exec program sends no identity and
    // every exec is stat'ed through procfs, as on kernels without BTF.
    let (exe_offsets, uring_offsets) = kernel_layout::offsets(&cfg.kernel_btf).map_or_else(|e| (Err(e), None), |o| (o.exe, Some(o.uring)));
    let exe_offsets = exe_offsets.unwrap_or_else(|e| {
        warn!("executable identity at exec: {e}; falling back to procfs");
        Default::default()
    });
    // Without them the io_uring programs are not attached (`attach_tracing` says so).
    let uring_offsets = uring_offsets.and_then(Result::ok).unwrap_or_default();
    let mut probes = Probes::load(offsets, exe_offsets, uring_offsets, cfg.ring_buffer_bytes, cfg.tls_calls_entries, files::WATCHED)
        .map_err(|e| if e.is_permission() { anyhow::Error::from(StartError::Unavailable(e.to_string())) } else { e.into() })?;
    probes.attach_process_lifecycle().map_err(|e| if e.is_permission() { anyhow::Error::from(StartError::Unavailable(e.to_string())) } else { e.into() })?;
    let hook = features.exec_hook();
    info!(
        "sigil-agent running on {}: kernel [{features}]; exec via {}; executable identity from {}; fell back from [{}]; attached [{}]; mounted by agent [{}]",
        cfg.node,
        hook.running,
        if exe_offsets.valid != 0 { "the kernel (BTF offsets)" } else { "procfs" },
        hook.fell_back_from.join(", "),
        probes.attached.join(", "),
        mounted.mounted_by_us.join(", "),
    );

    let mut tracer = match &cfg.trace {
        Some(tc) => {
            let issuers = cfg.issuance.iter().map(|i| i.issuer_url.clone()).collect();
            start_tracing(tc, &cfg.node, &mut probes, &mounted.tracefs, issuers)?
        }
        None => None,
    };
    let mut events = probes.take_events()?;
    let attestor = Arc::new(Attestor::new(cfg.node.clone(), &mounted.cgroup2, cfg.hash_cache_entries, cfg.max_hash_bytes).with_layouts(cfg.layouts.clone()));
    let pod_cache = match &cfg.kubernetes {
        Some(kc) => {
            let cache = crate::k8s::watch::start(kc, &cfg.node, &rt, stopped(stop.clone()))?;
            attestor.use_pod_cache(cache.clone());
            Some(cache)
        }
        None => None,
    };
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    if cfg.stdout {
        sinks.push(Arc::new(JsonLines));
    }
    let exporter = match &cfg.collector {
        Some(cc) => {
            let spool = SpoolSink::open(cc)?;
            let channel = {
                let _guard = rt.enter();
                exporter::channel(cc)?
            };
            rt.spawn(exporter::run(spool.clone(), channel, cfg.node.clone(), stop.clone()));
            info!("streaming events to {} (spool {}, at most {} bytes)", cc.url, cc.spool_dir.display(), cc.spool_bytes);
            sinks.push(Arc::new(spool.clone()));
            Some(spool)
        }
        None => None,
    };
    let tee = Arc::new(Tee::new(sinks));
    let sink: Arc<dyn Sink> = tee.clone();
    // Exec records whose binary must be hashed are emitted by the hashing pool.
    let hashed_sink = sink.clone();
    attestor.hash_in_background(
        HashBudget { large_queue_bytes: cfg.hash_queue_bytes, ..HashBudget::default() },
        Arc::new(move |rec, exit| {
            let bodies = std::iter::once(EventBody::from(rec)).chain(exit.cloned().map(EventBody::ProcessExit));
            for body in bodies {
                if let Err(e) = hashed_sink.emit(&body) {
                    error!("writing output: {e}");
                }
            }
        }),
    )?;

    // Metrics are observed from this snapshot, refreshed by the loop below.
    let snapshot: metrics::Snapshot = Arc::default();
    let lifetimes = telemetry.as_ref().map(|t| metrics::register(&t.meter("sigil-agent"), snapshot.clone()));
    if let (Some(addr), Some(t)) = (cfg.metrics_listen, &telemetry) {
        let listener = {
            let _guard = rt.enter();
            sigil_telemetry::bind(addr)?
        };
        let (t, s) = (t.clone(), stop.clone());
        rt.spawn(async move {
            if let Err(e) = sigil_telemetry::serve(listener, t, stopped(s)).await {
                error!("{e:#}");
            }
        });
        info!("metrics on http://{addr}/metrics");
    }
    let mut stats = Counters::default();

    if cfg.scan {
        let started = Instant::now();
        let scanned = attestor.scan();
        info!("attested {} running processes from procfs in {:?}", scanned.len(), started.elapsed());
        for rec in &scanned {
            sink.emit(&EventBody::from(rec)).context("writing output")?;
        }
    }
    // Issuance starts after the scan, so every running process already has a record.
    let issuer = match &cfg.issuance {
        Some(ic) => Some(start_issuance(ic, &cfg.node, pod_cache, attestor.clone(), sink.clone(), &rt, &stop)?),
        None => None,
    };
    // Without the API server, the `--pods` file names the pods in records.
    if let Some(c) = issuer.as_ref().and_then(|i| i.pods_file_cache()) {
        attestor.use_pod_cache(c);
    }
    if let (Some(i), Some(h)) = (&issuer, lifetimes) {
        i.record_lifetimes_in(h);
    }

    // A macro, not a closure: the loop borrows `probes` and `tracer` mutably in between.
    macro_rules! snapshot {
        () => {
            stats.snapshot(&cfg.node, &attestor, &probes, issuer.as_deref(), tracer.as_ref(), exporter.as_ref(), &tee)
        };
    }
    let mut last_stats = Instant::now();
    let mut last_lib_scan = Instant::now();
    let mut last_snapshot = Instant::now();
    crate::release_startup_memory();
    while !stop.load(Ordering::Relaxed) {
        wait_readable(events.as_raw_fd(), DATA_POLL_TICK);
        while let Some(item) = events.next() {
            stats.events += 1;
            let decoded = KernelEvent::decode(&item);
            let kind = decoded.as_ref().map_or("undecodable", KernelEvent::label);
            let cpu_before = stats.cpu.count(kind).then(cpu::thread_cpu_ns);
            match decoded {
                Ok(KernelEvent::Exec(ev)) => {
                    let rec = attestor.on_exec(&ev);
                    if let Some(t) = tracer.as_mut() {
                        // A record whose digest is still being computed (a large binary,
                        // e.g. a Go client) is emitted later by the hashing pool; the
                        // tracer needs only what the table already holds.
                        match &rec {
                            Some(r) => t.on_exec(r, &mut probes),
                            None => {
                                if let Some(r) = attestor.table().get(ev.header.pid) {
                                    t.on_exec(&r, &mut probes);
                                }
                            }
                        }
                    }
                    // An executable version attested from the event alone, with nothing for
                    // the tracer to attach or inspect: its next execs need not wake us.
                    if ev.quiet == 0
                        && ev.exe.from_kernel()
                        && let Some(r) = rec.as_ref().filter(|r| Attestor::attests_from_the_event(r))
                        && tracer.as_ref().is_none_or(|t| t.settled_executable(r))
                        && let Err(e) = probes.quiet_exec(&ev.exe)
                    {
                        tracing::debug!("execs of {:?} keep waking the agent: {e}", r.binary.path);
                    }
                    stats.quiet_execs += u64::from(ev.quiet);
                    if let Some(rec) = rec {
                        sink.emit(&EventBody::from(&rec)).context("writing output")?;
                    }
                }
                Ok(KernelEvent::Exit(ev)) => {
                    // Uses still being counted belong before the exit that ends them.
                    for used in tracer.as_mut().map(|t| t.on_exit(ev.header.pid)).unwrap_or_default() {
                        sink.emit(&EventBody::CredentialUse(used)).context("writing output")?;
                    }
                    if let Some(rec) = attestor.on_exit(&ev) {
                        sink.emit(&EventBody::ProcessExit(rec)).context("writing output")?;
                    }
                }
                Ok(KernelEvent::Connect(ev)) => {
                    if let Some(t) = tracer.as_mut() {
                        t.on_connect(&ev);
                    }
                }
                Ok(KernelEvent::Data(ev)) => {
                    if let Some(t) = tracer.as_mut() {
                        for body in t.on_data(&ev, &attestor, &mut probes) {
                            sink.emit(&body).context("writing output")?;
                        }
                    }
                }
                Ok(KernelEvent::FileOpen(ev)) => {
                    if let Some(read) = tracer.as_mut().and_then(|t| t.on_file_open(&ev, &attestor)) {
                        sink.emit(&EventBody::CredentialFileRead(read)).context("writing output")?;
                    }
                }
                Err(e) => {
                    stats.decode_errors += 1;
                    warn!("dropping undecodable ring-buffer record ({} so far): {e}", stats.decode_errors);
                }
            }
            if let Some(before) = cpu_before {
                stats.cpu.timed(kind, cpu::thread_cpu_ns().saturating_sub(before));
            }
        }
        for used in tracer.as_mut().map(Tracer::due).unwrap_or_default() {
            sink.emit(&EventBody::CredentialUse(used)).context("writing output")?;
        }
        if let Some(t) = tracer.as_mut() {
            t.attach_go_binaries(&mut probes);
        }
        if let Some(t) = tracer.as_mut().filter(|_| last_lib_scan.elapsed() >= LIBRARY_SCAN) {
            t.libs.scan(&mut probes);
            last_lib_scan = Instant::now();
        }
        if telemetry.is_some() && last_snapshot.elapsed() >= Duration::from_secs(1) {
            let snap = snapshot!();
            if let Ok(mut s) = snapshot.lock() {
                *s = snap;
            }
            last_snapshot = Instant::now();
        }
        if cfg.stats_interval.is_some_and(|every| last_stats.elapsed() >= every) {
            sink.emit(&EventBody::from(&snapshot!())).context("writing output")?;
            last_stats = Instant::now();
        }
    }
    for used in tracer.as_mut().map(Tracer::flush).unwrap_or_default() {
        sink.emit(&EventBody::CredentialUse(used)).context("writing output")?;
    }
    attestor.stop_hashing();
    let last = snapshot!();
    if let Some(t) = &telemetry {
        if let Ok(mut s) = snapshot.lock() {
            *s = last.clone();
        }
        t.flush();
    }
    sink.emit(&EventBody::from(&last)).context("writing output")?;
    info!("sigil-agent stopped");
    Ok(())
}

#[derive(Default)]
struct Counters {
    events: u64,
    decode_errors: u64,
    quiet_execs: u64,
    cpu: cpu::CpuByKind,
}

impl Counters {
    // Every stage the snapshot reads from; they are borrowed separately because the loop
    // holds some of them mutably between snapshots.
    #[allow(clippy::too_many_arguments)]
    fn snapshot(
        &self,
        node: &str,
        attestor: &Attestor,
        probes: &Probes,
        issuer: Option<&Issuer>,
        tracer: Option<&Tracer>,
        exporter: Option<&SpoolSink>,
        tee: &Tee,
    ) -> AgentStats {
        let lost = probes.lost().unwrap_or_default();
        let at = |k: EventKind| lost.get(k.loss_slot() as usize).copied().unwrap_or(0);
        AgentStats {
            node: node.to_owned(),
            hash: attestor.hash_stats(),
            ring_buffer_lost: LostByKind {
                exec: at(EventKind::Exec),
                exit: at(EventKind::Exit),
                connect: at(EventKind::Connect),
                data: at(EventKind::Data),
                file_open: at(EventKind::FileOpen),
            },
            kernel_drops: probes.drops().unwrap_or_default().into_iter().map(|(r, n)| (r.as_str(), n)).collect(),
            decode_errors: self.decode_errors,
            quiet_execs: self.quiet_execs,
            processes_tracked: attestor.table().len(),
            tokens: issuer.map(Issuer::stats),
            trace: tracer.map(Tracer::stats),
            export: exporter.map(SpoolSink::stats),
            events: self.events,
            cpu_by_kind: self.cpu.snapshot(),
            emitted: tee.events_by_kind(),
        }
    }
}

/// How long a data event can wait in the ring buffer: the kernel submits them without a
/// wakeup until an eighth of the ring is full (see `DATA_WAKEUP_BYTES` in agent-ebpf), so a
/// busy keep-alive client costs no interrupt per request. Process events wake at once.
const DATA_POLL_TICK: Duration = Duration::from_millis(20);

fn wait_readable(fd: i32, timeout: Duration) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd; EINTR and timeouts are both fine (the caller re-checks).
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// The node name: the DaemonSet's downward-API value, else the host name.
pub fn default_node_name() -> String {
    if let Ok(n) = std::env::var("NODE_NAME")
        && !n.is_empty()
    {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "unknown".into())
}
