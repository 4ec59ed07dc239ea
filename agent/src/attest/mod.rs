//! Attestation: turning kernel facts about a process into an identity record.
//!
//! The kernel tells us *that* a process exec'd, with its pid, cgroup id and credentials at
//! that instant. Everything else comes from procfs through a handle opened on
//! `/proc/<pid>` (an O_PATH directory fd bound to that process instance: once it exits,
//! reads through it fail instead of silently reaching whoever reuses the pid), and every
//! read is checked against the process start time, so a recycled pid never inherits a
//! record.
pub mod cgroup;
pub mod clock;
pub mod hash;
pub mod hash_bench;
pub mod pidns;
pub mod pool;
pub mod procstat;
pub mod record;
pub mod script;
pub mod table;
pub mod workload;

use std::{
    fs,
    io::Read,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::Path,
    sync::{Arc, OnceLock},
};

use agent_common::{ExecEvent, ExitEvent};
use procfs::process::Process;

use crate::ebpf::decode::c_str;
use cgroup::CgroupResolver;
use clock::Clock;
use hash::{Digest, FileKey, HashCache, HashError, HashStats, Lookup};
use pool::{HashBudget, HashPool, HashSkip, Job};
use record::{Ancestor, Binary, CgroupInfo, ProcessRecord, Source};
use sigil_proto::v1::ProcessExit;
use table::ProcessTable;

/// How deep the ancestry of a record goes.
const MAX_ANCESTRY: usize = 16;
/// `PF_KTHREAD` in /proc/<pid>/stat flags: kernel threads have no binary to attest.
const PF_KTHREAD: u32 = 0x0020_0000;

/// What the kernel (or a procfs scan) said about a process before we looked at procfs.
#[derive(Debug, Clone)]
struct Observed {
    source: Source,
    pid: u32,
    /// 0 when unknown.
    ppid: u32,
    uid: u32,
    gid: u32,
    cgroup_id: Option<u64>,
    boot_ns: u64,
    fork_boot_ns: u64,
    /// The process's start time as the kernel gave it with the event (0: unknown).
    start_ns: u64,
    comm: String,
    exec_path: Option<String>,
    /// The executable's identity as the kernel read it at exec (the hash-cache key).
    exe: Option<FileKey>,
}

/// What `read_facts` reads besides the start time, parent and comm.
struct Reads<'a> {
    /// uid/gid from status (procfs sources; an exec event carries them).
    ids: bool,
    /// Open the executable (not needed when the kernel's identity hit the cache).
    exe: bool,
    /// Read /proc/<pid>/cgroup (not needed when the kernel's cgroup id resolves).
    cgroup: bool,
    /// The comm the kernel set at exec: if procfs shows another, the process may have
    /// exec'd again, and the executable is opened to find out.
    kernel_comm: &'a str,
    /// The kernel's exec filename: with the executable's path, it says whether the
    /// command line can name a script (see `script::may_have_script`).
    exec_path: Option<&'a str>,
    /// The kernel gave the process's start time with the event (the caller compares it):
    /// one read of stat, after the others, is enough, since every read goes through the
    /// handle of one process instance, and the final stat says which instance that is.
    start_known: bool,
}

/// Where finished records go when their hash was computed off the event thread, each
/// followed by its process's exit when the process ended before the digest was known.
pub type Emit = Arc<dyn Fn(&ProcessRecord, Option<&ProcessExit>) + Send + Sync>;

pub struct Attestor {
    node: String,
    boot_id: String,
    clock: Clock,
    hashes: Arc<HashCache>,
    cgroups: CgroupResolver,
    layouts: workload::Layouts,
    table: Arc<ProcessTable>,
    /// Set once by `hash_in_background`; without it every hash is computed inline.
    background: OnceLock<(HashPool, Emit)>,
    /// Pod metadata from the API server, when the agent watches it.
    pods: OnceLock<Arc<crate::k8s::PodCache>>,
}

/// Who emits a record attested on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announce {
    /// The Workload API, which attested it to decide on a token.
    ByCaller,
    /// Its exec event, later (the tracer attests to attribute, and emits no records).
    ByExecEvent,
}

/// An executable opened and looked up, whose digest is still to be computed.
struct PendingHash {
    file: fs::File,
    key: FileKey,
    from: &'static str,
}

/// Facts read from /proc/<pid>, all through one handle.
struct ProcFacts {
    start_ticks: u64,
    ppid: u32,
    comm: String,
    kthread: bool,
    exe_path: Option<String>,
    /// None when not opened (`Reads::exe` false and comm unchanged).
    exe: Option<Result<fs::File, String>>,
    cgroup_path: Option<String>,
    /// The command line, for the script check.
    argv: Option<Vec<String>>,
    uid: Option<u32>,
    gid: Option<u32>,
    /// comm changed between the first and last read: the process exec'd (or renamed
    /// itself) while it was read, so `exe` may be from a later image than the rest.
    comm_changed: bool,
}

/// The path `/proc/<pid>/exe` would have read for a process whose exe link is gone: its
/// exec path resolved in its parent's root (symbolic links followed inside that root),
/// only when that file is inode `ran`, the one the kernel ran (the parent may be gone, in
/// another root, or the file replaced).
fn exec_path_now(obs: &Observed, ran: (u64, u64)) -> Option<String> {
    let path = obs.exec_path.as_deref().filter(|p| p.starts_with('/'))?;
    let file = hash::open_for_hashing(Path::new(&format!("/proc/{}/root", obs.ppid)), path).ok()?;
    let m = file.metadata().ok()?;
    ((m.dev(), m.ino()) == ran).then(|| path_of_open(&file)).flatten()
}

/// The path of an open file as this process's `/proc/self/fd` reads it (with the kernel's
/// ` (deleted)` suffix for an unlinked file): for a file opened inside another mount
/// namespace's root, the path within that namespace, as `/proc/<pid>/exe` reads for a
/// process there.
pub(crate) fn path_of_open(file: &fs::File) -> Option<String> {
    let link = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    Some(link.to_string_lossy().into_owned())
}

/// A process that exec'd again before this exec event was handled (`sh -c 'exec app'`,
/// both events in one ring-buffer batch) shows the *later* image in procfs. Reporting it
/// here would pin the later binary to this exec's cgroup and time. Two independent signs
/// are required: the comm the kernel set at this exec differs from procfs's (a process
/// may rename itself, but then its exe is still the exec'd file), and the exec'd path
/// names another file than the running one (a `#!` script does too, but keeps its comm).
/// The binary is then left unknown, with the reason; the next exec record has it. The
/// same holds when comm changed while procfs was being read (the exec happened between
/// the reads).
fn forget_later_exec(obs: &Observed, mut f: ProcFacts) -> ProcFacts {
    let Some(path) = obs.exec_path.as_deref().filter(|p| p.starts_with('/') && obs.source == Source::Ebpf) else {
        return f;
    };
    if obs.comm.is_empty() || (obs.comm == f.comm && !f.comm_changed) {
        return f;
    }
    // `read_facts` opened the executable: comm differed.
    let running = f.exe.as_ref().and_then(|e| e.as_ref().ok()).and_then(|e| e.metadata().ok()).map(|m| (m.dev(), m.ino()));
    let named = fs::metadata(format!("/proc/{}/root{path}", obs.pid)).ok().map(|m| (m.dev(), m.ino()));
    if let (Some(running), Some(named)) = (running, named)
        && running != named
    {
        f.exe = Some(Err(format!(
            "the process exec'd again before this exec was attested (now {}, running {}); its next exec record describes that",
            f.comm,
            f.exe_path.as_deref().unwrap_or("?")
        )));
        f.exe_path = None;
    }
    f
}

/// The cgroup v2 path in /proc/<pid>/cgroup, read through the process's handle.
fn read_cgroup_path(p: &Process) -> Option<String> {
    let mut text = String::new();
    p.open_relative("cgroup").ok()?.read_to_string(&mut text).ok()?;
    cgroup::v2_path_from_proc(&text)
}

fn proc_error(e: procfs::ProcError) -> String {
    match e {
        procfs::ProcError::NotFound(_) => "process exited before it could be attested".to_owned(),
        other => other.to_string(),
    }
}

impl Attestor {
    pub fn new(node: String, cgroup2_mount: &std::path::Path, hash_cache_entries: usize, max_hash_bytes: u64) -> Self {
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().replace('-', "")).unwrap_or_default();
        Self {
            node,
            boot_id,
            clock: Clock::new(),
            hashes: Arc::new(HashCache::new(hash_cache_entries, max_hash_bytes)),
            cgroups: CgroupResolver::new(cgroup2_mount),
            layouts: workload::Layouts::default(),
            table: Arc::default(),
            background: OnceLock::new(),
            pods: OnceLock::new(),
        }
    }

    /// Where container runtimes and the kubelet may create cgroups besides the root.
    pub fn with_layouts(mut self, layouts: workload::Layouts) -> Self {
        self.layouts = layouts;
        self
    }

    /// From now on, exec events whose binary is not cached are hashed on a bounded pool;
    /// their records go to `emit` when the hash is done (or skipped, with the reason).
    pub fn hash_in_background(&self, budget: HashBudget, emit: Emit) -> std::io::Result<()> {
        let pool = HashPool::start(self.hashes.clone(), budget)?;
        // A second call keeps the first pool.
        let _ = self.background.set((pool, emit));
        Ok(())
    }

    /// Ends background hashing; records still waiting are emitted with `shutdown`.
    pub fn stop_hashing(&self) {
        if let Some((pool, _)) = self.background.get() {
            pool.stop();
        }
    }

    /// Records from now on carry their pod's metadata and run key from `cache` (looked
    /// up without waiting: attestation must not stall behind the API server).
    pub fn use_pod_cache(&self, cache: Arc<crate::k8s::PodCache>) {
        let _ = self.pods.set(cache);
    }

    pub fn hash_stats(&self) -> HashStats {
        let mut s = self.hashes.stats();
        if let Some((pool, _)) = self.background.get() {
            s.pool = pool.stats();
        }
        s
    }

    fn note_skip(&self, e: &HashError) {
        if let (Some((pool, _)), Some(why)) = (self.background.get(), HashSkip::of(e)) {
            pool.count_skip(why);
        }
    }

    pub fn table(&self) -> &ProcessTable {
        &self.table
    }

    /// The table's record of `pid` for an event about it (a credential use), with the
    /// digest filled in when it is still pending and the binary is small enough to hash
    /// now (at most the pool's small-file size: an event cannot be made to wait for a
    /// huge file).
    pub fn settled(&self, pid: u32) -> Option<Arc<ProcessRecord>> {
        let rec = self.table.get(pid)?;
        let small = rec.binary.size.is_some_and(|s| s <= pool::SMALL_FILE_BYTES);
        if !rec.binary.hash_pending || !small {
            return Some(rec);
        }
        Some(self.hash_now(&rec).unwrap_or(rec))
    }

    /// Computes a record's missing digest on the spot, from the executable of this very
    /// process (same inode as the record's), under the record's own exec id. The record
    /// is emitted here unless the hashing pool already did (or is doing) it; a record the
    /// pool gave up on was emitted without a digest and is emitted again, complete. None
    /// when the process or its executable changed.
    fn hash_now(&self, rec: &ProcessRecord) -> Option<Arc<ProcessRecord>> {
        let f = Process::new(rec.pid as i32).ok()?.open_relative("exe").ok().filter(|f| f.metadata().is_ok_and(|m| Some(m.ino()) == rec.binary.inode))?;
        let digest = match self.hashes.lookup(&f).ok()? {
            Lookup::Hit(d) => d,
            Lookup::Miss(key) => self.hashes.compute(&f, key, &|| None).ok()?,
        };
        let mut done = rec.clone();
        done.binary.hash_pending = false;
        done.binary.fill_digest(digest, "exe");
        let claim = self.table.claim_emit(&done.exec_id);
        if claim.is_some() || !rec.binary.hash_pending {
            let done = self.table.complete(done);
            if let Some((_, emit)) = self.background.get() {
                emit(&done, claim.and_then(|c| c.exit).as_ref());
            }
            return Some(Arc::new(done));
        }
        Some(Arc::new(done))
    }

    /// The record of an exec, or None when its binary is being hashed in the background
    /// (the record is then emitted through `Emit` once the digest is known).
    pub fn on_exec(&self, ev: &ExecEvent) -> Option<ProcessRecord> {
        let len = usize::from(ev.filename_len).min(ev.filename.len());
        let mut exec_path = String::from_utf8_lossy(&ev.filename[..len]).into_owned();
        if ev.filename_truncated != 0 {
            exec_path.push_str("...");
        }
        let rec = self.attest(Observed {
            source: Source::Ebpf,
            pid: ev.header.pid,
            ppid: ev.ppid,
            uid: ev.uid,
            gid: ev.gid,
            cgroup_id: Some(ev.header.cgroup_id),
            boot_ns: ev.header.boot_ns,
            fork_boot_ns: ev.fork_boot_ns,
            start_ns: ev.header.start_ns,
            comm: c_str(&ev.comm),
            exec_path: Some(exec_path),
            exe: FileKey::from_kernel(&ev.exe),
        })?;
        Self::unless_announced(rec)
    }

    /// None when `rec` is the record this exec was attested with on request and that
    /// was emitted then (by the Workload API; the tracer's are not emitted until now).
    fn unless_announced(rec: ProcessRecord) -> Option<ProcessRecord> {
        (!(rec.source == Source::OnRequest && rec.announced)).then_some(rec)
    }

    /// The exit to emit now; None for an unknown pid, and for a process whose exec
    /// record still waits for its digest (the exit then follows that record).
    pub fn on_exit(&self, ev: &ExitEvent) -> Option<ProcessExit> {
        let rec = self.table.remove(ev.header.pid)?;
        self.table.exit_after_record(ProcessExit {
            exec_id: rec.exec_id.clone(),
            process_id: rec.process_id.clone(),
            node: self.node.clone(),
            time: self.clock.rfc3339(ev.header.boot_ns),
            pid: ev.header.pid,
        })
    }

    /// Attests every process already running (call after the exec probe is attached, so
    /// nothing falls between the scan and the first event). Processes that already have a
    /// valid record (same pid *and* start time) are skipped.
    pub fn scan(&self) -> Vec<ProcessRecord> {
        let Ok(all) = procfs::process::all_processes() else { return Vec::new() };
        let mut pids: Vec<u32> = all.filter_map(|p| p.ok()).filter_map(|p| u32::try_from(p.pid).ok()).collect();
        // Parents first, so children find them for their ancestry.
        pids.sort_unstable();
        pids.into_iter()
            .filter(|pid| self.lookup(*pid).is_none())
            .filter_map(|pid| {
                let (rec, pending) = self.attest_from_procfs(pid, Source::ProcfsScan)?;
                // Hashed in the background when a pool runs (a node may run huge
                // binaries: start-up must not wait for them); those records are emitted
                // by the pool.
                self.dispatch(rec, pending)
            })
            .collect()
    }

    /// The record describing what `pid` is *now*, attesting it from procfs on the spot
    /// when the table has none or an outdated one (a caller can reach the Workload API
    /// before its exec event is handled, or after moving to another cgroup). The bool is
    /// true when the record was created by this call.
    /// The record is not emitted: its exec event will emit it.
    pub fn attest_running(&self, pid: u32) -> Option<(Arc<ProcessRecord>, bool)> {
        self.running(pid, |r| self.still_same(r), Announce::ByExecEvent)
    }

    /// [`Self::attest_running`] for the Workload API, which has just read what `pid` runs
    /// and says, through `current`, whether a table record describes it (no second procfs
    /// reading). A record created here (the bool is true) is the caller's to emit: its
    /// exec event will not emit it again.
    pub fn attest_running_where(&self, pid: u32, current: impl FnOnce(&ProcessRecord) -> bool) -> Option<(Arc<ProcessRecord>, bool)> {
        self.running(pid, current, Announce::ByCaller)
    }

    fn running(&self, pid: u32, current: impl FnOnce(&ProcessRecord) -> bool, announce: Announce) -> Option<(Arc<ProcessRecord>, bool)> {
        if let Some(rec) = self.table.get(pid).filter(|r| current(r)) {
            return Some((self.with_digest(rec), false));
        }
        let (mut rec, pending) = self.attest_from_procfs(pid, Source::OnRequest)?;
        self.hash_inline(&mut rec, pending);
        Some(self.enter_on_request(rec, announce))
    }

    /// Enters a record attested on request. Its exec event may have been handled while
    /// it was read and hashed (the table had no record to find then): the event's record
    /// is the exec's one record, and is returned instead (not created here). The record
    /// says who emits it before it is visible, so an exec event handled right after
    /// finds it already emitted.
    fn enter_on_request(&self, mut rec: ProcessRecord, announce: Announce) -> (Arc<ProcessRecord>, bool) {
        rec.announced = announce == Announce::ByCaller;
        let rec = Arc::new(rec);
        match self.table.insert_unless_attested(Arc::clone(&rec)) {
            Ok(()) => (rec, true),
            Err(by_event) => (self.with_digest(by_event), false),
        }
    }

    /// `rec` with its digest. None yet (still being computed in the background, or given
    /// up under the pool's time budget) is not good enough to decide on: it is hashed
    /// inline, without a budget, under the exec id it already has, so one exec keeps one
    /// record. A file that cannot be hashed at all stays without a digest.
    fn with_digest(&self, rec: Arc<ProcessRecord>) -> Arc<ProcessRecord> {
        if rec.binary.sha256.is_some() {
            return rec;
        }
        self.hash_now(&rec).unwrap_or(rec)
    }

    /// The record of `pid` if the table holds one that `current` accepts and that has its
    /// digest: what [`Self::attest_running_where`] answers without reading or hashing.
    pub fn attested_where(&self, pid: u32, current: impl FnOnce(&ProcessRecord) -> bool) -> Option<Arc<ProcessRecord>> {
        self.table.get(pid).filter(|r| r.binary.sha256.is_some() && current(r))
    }

    /// True while `pid` still is what `rec` describes: same start time, same executable
    /// inode and same cgroup (a pid reuse, a re-exec or a cgroup move changes one).
    pub fn still_same(&self, rec: &ProcessRecord) -> bool {
        let Ok(p) = Process::new(rec.pid as i32) else { return false };
        let same_start = procstat::read(&p).is_ok_and(|s| s.starttime == rec.start_ticks);
        let same_exe = match (p.open_relative("exe").and_then(|f| Ok(f.metadata()?)), rec.binary.inode) {
            (Ok(m), Some(ino)) => m.ino() == ino,
            (Err(_), None) => true,
            _ => false,
        };
        let cgroup_now = read_cgroup_path(&p);
        same_start && same_exe && cgroup_now == rec.cgroup.path
    }

    fn attest_from_procfs(&self, pid: u32, source: Source) -> Option<(ProcessRecord, Option<PendingHash>)> {
        let obs = Observed {
            source,
            pid,
            ppid: 0,
            uid: 0,
            gid: 0,
            cgroup_id: None,
            boot_ns: Clock::now_boot_ns(),
            fork_boot_ns: 0,
            start_ns: 0,
            comm: String::new(),
            exec_path: None,
            exe: None,
        };
        let proc = Process::new(pid as i32).ok()?;
        let facts = self.read_facts(&proc, Reads { ids: true, exe: true, cgroup: true, kernel_comm: "", exec_path: None, start_known: false }).ok()?;
        if facts.kthread {
            return None;
        }
        Some(self.build(obs, Ok(facts), None))
    }

    /// The current record for `pid`, or None if the process that pid now names is not the
    /// one the record describes (exited, or the pid was reused).
    pub fn lookup(&self, pid: u32) -> Option<Arc<ProcessRecord>> {
        let rec = self.table.get(pid)?;
        let now = procstat::read(&Process::new(pid as i32).ok()?).ok()?.starttime;
        (now == rec.start_ticks).then_some(rec)
    }

    fn attest(&self, obs: Observed) -> Option<ProcessRecord> {
        // What the kernel said at exec answers first: a known executable version needs
        // no open and no stat of /proc/<pid>/exe, a resolvable cgroup id no cgroup file.
        let known = obs.exe.as_ref().and_then(|k| self.hashes.cached_digest(k));
        if known.is_none() {
            tracing::debug!(pid = obs.pid, kernel_identity = ?obs.exe, "executable not known by the kernel's identity: reading procfs");
        }
        let reads = Reads {
            // The kernel gave the credentials at exec: status is not read.
            ids: false,
            exe: known.is_none(),
            cgroup: obs.cgroup_id.and_then(|id| self.cgroups.path_of(id)).is_none(),
            kernel_comm: &obs.comm,
            exec_path: obs.exec_path.as_deref(),
            start_known: obs.start_ns != 0,
        };
        let from_kernel = known.as_ref().and_then(|d| self.facts_from_kernel(&obs, &reads, d));
        let facts = from_kernel.map_or_else(
            || {
                Process::new(obs.pid as i32).map_err(proc_error).and_then(|p| {
                    let facts = self.read_facts(&p, reads)?;
                    // The pid named another process by the time we looked: not the start time
                    // the kernel gave with the exec or, without it, one after the exec (allow
                    // one tick of procfs rounding).
                    let reused = match obs.start_ns {
                        0 => self.clock.ticks_to_boot_ns(facts.start_ticks) > obs.boot_ns + self.clock.tick_ns(),
                        ns => facts.start_ticks != self.clock.boot_ns_to_ticks(ns),
                    };
                    if reused {
                        return Err("pid was reused before the process could be attested".to_owned());
                    }
                    Ok(facts)
                })
            },
            Ok,
        );
        let facts = facts.map(|f| forget_later_exec(&obs, f));
        let (rec, pending) = self.build(obs, facts, known);
        self.dispatch(rec, pending)
    }

    /// What procfs would add to an exec the kernel described in full (its start time, a
    /// resolvable cgroup, an executable version the cache knows): only the path the exe
    /// link reads. One open of that link, whose handle gives the file's identity and path
    /// together, instead of opening the process directory and reading its stat file.
    /// None where more is needed (a possible script's argv), or where the link no longer
    /// names the file the kernel ran (the process exited, exec'd again, or its pid now
    /// runs another program): the full read decides then.
    fn facts_from_kernel(&self, obs: &Observed, reads: &Reads, known: &Digest) -> Option<ProcFacts> {
        use std::os::unix::fs::OpenOptionsExt;
        if obs.source != Source::Ebpf || !reads.start_known || reads.cgroup || obs.comm.is_empty() {
            return None;
        }
        let exe = fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH).open(format!("/proc/{}/exe", obs.pid)).ok()?;
        let m = exe.metadata().ok()?;
        if (m.dev(), m.ino()) != (known.key.dev, known.key.ino) {
            return None;
        }
        let exe_path = path_of_open(&exe)?;
        if script::may_have_script(obs.exec_path.as_deref(), Some(&exe_path)) {
            return None;
        }
        Some(ProcFacts {
            start_ticks: self.clock.boot_ns_to_ticks(obs.start_ns),
            ppid: obs.ppid,
            comm: obs.comm.clone(),
            kthread: false,
            exe_path: Some(exe_path),
            exe: None,
            cgroup_path: None,
            argv: None,
            uid: None,
            gid: None,
            comm_changed: false,
        })
    }

    /// True when an exec like this one (same executable version, as the kernel identifies
    /// it) can be attested from its event alone, even after the process has exited: the
    /// digest came from the kernel's identity, the process runs no script (whose argv only
    /// the live process has), and it was attested without error.
    pub fn attests_from_the_event(rec: &ProcessRecord) -> bool {
        let b = &rec.binary;
        rec.kernel_exe.is_some()
            && b.hashed_from == Some("kernel")
            && b.error.is_none()
            && rec.script.is_none()
            && !script::may_have_script(b.exec_path.as_deref(), b.path.as_deref())
    }

    /// A record with a hash still to compute goes to the pool when one runs (None: the
    /// pool emits it); otherwise it is finished here.
    fn dispatch(&self, rec: ProcessRecord, pending: Option<PendingHash>) -> Option<ProcessRecord> {
        match (pending, self.background.get()) {
            (Some(p), Some((pool, emit))) => self.hash_later(rec, p, pool, emit),
            (pending, _) => Some(self.finish(rec, pending)),
        }
    }

    /// Completes a record inline (computing a pending hash now) and enters it in the table.
    fn finish(&self, mut rec: ProcessRecord, pending: Option<PendingHash>) -> ProcessRecord {
        self.hash_inline(&mut rec, pending);
        self.commit(rec)
    }

    /// Computes a pending hash now, into the record.
    fn hash_inline(&self, rec: &mut ProcessRecord, pending: Option<PendingHash>) {
        if let Some(p) = pending {
            match self.hashes.compute(&p.file, p.key, &|| None) {
                Ok(d) => rec.binary.fill_digest(d, p.from),
                Err(e) => {
                    self.note_skip(&e);
                    rec.binary.skip(&e);
                }
            }
        }
    }

    /// Enters the record in the table with its hash pending, and queues the hash; the
    /// finished record is emitted by the worker. If the queue refuses, the record is
    /// emitted now, saying why it has no digest.
    fn hash_later(&self, mut rec: ProcessRecord, p: PendingHash, pool: &HashPool, emit: &Emit) -> Option<ProcessRecord> {
        rec.binary.hash_pending = true;
        self.table.expect_emit(&rec.exec_id);
        let committed = self.commit(rec.clone());
        if committed.exec_id != rec.exec_id {
            // The same exec was already attested (and hashed) on request.
            self.table.claim_emit(&rec.exec_id);
            return Some(committed);
        }
        let (table, emit, from) = (self.table.clone(), emit.clone(), p.from);
        let job = Job {
            file: p.file,
            key: p.key,
            done: Box::new(move |result| {
                rec.binary.hash_pending = false;
                match result {
                    Ok(d) => rec.binary.fill_digest(d, from),
                    Err(e) => rec.binary.skip(&e),
                }
                // Unless an event needed the digest first and emitted the record.
                if let Some(claim) = table.claim_emit(&rec.exec_id) {
                    emit(&table.complete(rec), claim.exit.as_ref());
                }
            }),
        };
        if let Err((job, _)) = pool.submit(job) {
            (job.done)(Err(HashError::Cancelled(pool::QUEUE_FULL)));
        }
        None
    }

    /// Enters a finished record in the table. The same exec already attested on request
    /// (its Workload API call beat this event) keeps that record, so one exec has one
    /// exec_id everywhere.
    fn commit(&self, rec: ProcessRecord) -> ProcessRecord {
        match self.table.insert_unless_attested(Arc::new(rec.clone())) {
            Ok(()) => rec,
            Err(prev) => (*prev).clone(),
        }
    }

    /// Everything procfs says that `reads` asks for, followed by a read of the start time
    /// (and preceded by one too when the kernel did not give it: see `Reads::start_known`).
    fn read_facts(&self, p: &Process, reads: Reads) -> Result<ProcFacts, String> {
        let first = if reads.start_known { None } else { Some(procstat::read(p).map_err(proc_error)?) };
        let status = if reads.ids { p.status().ok() } else { None };
        let open_exe = || p.open_relative("exe").map_err(proc_error);
        let kernel_comm_differs = |comm: &str| !reads.kernel_comm.is_empty() && reads.kernel_comm != comm;
        let mut exe = (reads.exe || first.as_ref().is_some_and(|s| kernel_comm_differs(&s.comm))).then(open_exe);
        let exe_path = p.exe().ok().map(|p| p.to_string_lossy().into_owned());
        let cgroup_path = if reads.cgroup { read_cgroup_path(p) } else { None };
        let argv = script::may_have_script(reads.exec_path, exe_path.as_deref()).then(|| p.cmdline().ok()).flatten();
        // Same start time after all reads: everything above describes one process.
        let again = procstat::read(p).map_err(proc_error)?;
        if first.as_ref().is_some_and(|s| s.starttime != again.starttime) {
            return Err("pid was reused while the process was being attested".to_owned());
        }
        let stat = first.unwrap_or_else(|| again.clone());
        // Renamed or exec'd while read: `forget_later_exec` needs the running file. The
        // handle still names this process instance (a reused pid would fail the open).
        if exe.is_none() && (again.comm != stat.comm || kernel_comm_differs(&again.comm)) {
            exe = Some(open_exe());
        }
        Ok(ProcFacts {
            start_ticks: stat.starttime,
            ppid: u32::try_from(stat.ppid).unwrap_or(0),
            comm_changed: again.comm != stat.comm,
            comm: stat.comm,
            kthread: stat.flags & PF_KTHREAD != 0,
            exe_path,
            exe,
            cgroup_path,
            argv,
            uid: status.as_ref().map(|s| s.ruid),
            gid: status.as_ref().map(|s| s.rgid),
        })
    }

    /// The record, and the executable still to hash when the cache did not know it.
    /// `known`: the digest the kernel's identity of the executable found in the cache.
    fn build(&self, obs: Observed, facts: Result<ProcFacts, String>, known: Option<Digest>) -> (ProcessRecord, Option<PendingHash>) {
        let (start_ticks, (binary, pending), cgroup_path_from_proc, ppid, comm, uid, gid, argv) = match facts {
            Ok(mut f) => {
                let binary = self.binary(&obs, &mut f, known);
                let ppid = if obs.ppid != 0 { obs.ppid } else { f.ppid };
                let comm = if obs.comm.is_empty() { f.comm } else { obs.comm.clone() };
                let uid = if obs.source == Source::Ebpf { obs.uid } else { f.uid.unwrap_or(obs.uid) };
                let gid = if obs.source == Source::Ebpf { obs.gid } else { f.gid.unwrap_or(obs.gid) };
                (f.start_ticks, binary, f.cgroup_path, ppid, comm, uid, gid, f.argv)
            }
            Err(why) => {
                // Too late for procfs: the fork time the kernel gave us is the best start
                // estimate, and the binary cannot be read safely any more.
                // The kernel's own start time when it gave one, exact.
                let start = [obs.start_ns, obs.fork_boot_ns, obs.boot_ns].into_iter().find(|&ns| ns != 0).unwrap_or(0);
                // The kernel's identity of the executed file outlives the process: when
                // the cache knows that version, its digest is exact (unlike the file now
                // at the exec path).
                let binary = match known {
                    Some(d) => {
                        let mut b = Binary::unknown(obs.exec_path.clone());
                        b.path = exec_path_now(&obs, (d.key.dev, d.key.ino));
                        b.fill_digest(d, "kernel");
                        b.error = Some(why);
                        (b, None)
                    }
                    None => self.binary_of_exited(&obs, why),
                };
                (self.clock.boot_ns_to_ticks(start), binary, None, obs.ppid, obs.comm.clone(), obs.uid, obs.gid, None)
            }
        };
        // The kernel's cgroup id is authoritative (it is where the exec happened); the
        // procfs path is the fallback for scans and unresolvable ids.
        let cgroup_id = obs.cgroup_id.or_else(|| cgroup_path_from_proc.as_deref().and_then(|p| self.cgroups.id_of(p)));
        let cgroup_path = cgroup_id.and_then(|id| self.cgroups.path_of(id)).or(cgroup_path_from_proc);
        let workload = self.layouts.parse(cgroup_path.as_deref().unwrap_or(""));
        let pod = workload.pod_uid.as_deref().zip(self.pods.get()).and_then(|(uid, c)| c.get(uid)).map(|m| (*m).clone());
        let process_id = format!("{}:{}:{}", self.boot_id, obs.pid, start_ticks);
        let script = argv.and_then(|argv| script::identify(obs.pid, &argv, obs.exec_path.as_deref(), binary.path.as_deref(), &self.hashes));
        let rec = ProcessRecord {
            source: obs.source,
            exec_id: format!("{process_id}:{}", obs.boot_ns),
            process_id,
            node: self.node.clone(),
            time: self.clock.rfc3339(obs.boot_ns),
            pid: obs.pid,
            ppid,
            start_time: self.clock.rfc3339(self.clock.ticks_to_boot_ns(start_ticks)),
            start_ticks,
            uid,
            gid,
            comm,
            binary,
            cgroup: CgroupInfo { id: cgroup_id.unwrap_or(0), path: cgroup_path },
            workload,
            ancestry: self.ancestry(ppid, start_ticks),
            script,
            run: pod.as_ref().and_then(crate::k8s::PodMeta::run_key),
            pod,
            kernel_exe: obs.exe,
            announced: false,
        };
        (rec, pending)
    }

    /// A process that exited before procfs could be read (short-lived commands). Its exe
    /// is gone, but the parent usually shares its mount namespace; requiring the same
    /// cgroup rules out the common case where it does not (a container runtime's shim
    /// exec'ing the entrypoint lives in the host's namespace, in another cgroup).
    ///
    /// Whatever is at that path now is under the control of whoever can write there: it
    /// is opened without blocking or following a final symlink, inside the parent's root,
    /// and only a regular file is hashed (see `hash::open_for_hashing`).
    fn binary_of_exited(&self, obs: &Observed, why: String) -> (Binary, Option<PendingHash>) {
        let mut b = Binary::unknown(obs.exec_path.clone());
        b.error = Some(why);
        let Some(path) = obs.exec_path.as_deref().filter(|p| p.starts_with('/')) else {
            return (b, None);
        };
        // Whether the file at the path, resolved in the parent's root, is the one that
        // ran: the kernel's identity of it at exec says so exactly (a process exec'd into
        // another cgroup by a parent outside it, as runtimes and CI runners do, is still
        // named). Without that identity, the parent must share the exec's cgroup, so its
        // root is the child's.
        let shares_root = || {
            let parent = Process::new(obs.ppid as i32).ok();
            obs.cgroup_id.is_some() && parent.and_then(|p| read_cgroup_path(&p)).and_then(|p| self.cgroups.id_of(&p)) == obs.cgroup_id
        };
        let trusted = obs.exe.is_some() || shares_root();
        let root = format!("/proc/{}/root", obs.ppid);
        match hash::open_for_hashing(Path::new(&root), path) {
            Ok(file) => {
                let ran = match &obs.exe {
                    Some(k) => FileKey::of(&file).is_ok_and(|f| f == *k),
                    None => trusted,
                };
                if !ran {
                    if obs.exe.is_some() {
                        let why = b.error.take().unwrap_or_default();
                        b.error = Some(format!("{why}; the file now at the exec path is not the one that ran"));
                    }
                    return (b, None);
                }
                b.path = path_of_open(&file);
                self.look_up(b, file, "exec_path")
            }
            Err(e) if trusted => {
                self.note_skip(&e);
                let why = b.error.take().unwrap_or_default();
                b.skip(&e);
                b.error = Some(format!("{why}; the file now at the exec path: {e}"));
                (b, None)
            }
            Err(_) => (b, None),
        }
    }

    /// Looks the open executable up in the cache. A miss is hashed later (by the caller,
    /// inline or on the pool); a refusal (not a regular file, too large) is recorded.
    fn look_up(&self, mut b: Binary, file: fs::File, from: &'static str) -> (Binary, Option<PendingHash>) {
        match self.hashes.lookup(&file) {
            Ok(Lookup::Hit(d)) => {
                b.fill_digest(d, from);
                (b, None)
            }
            Ok(Lookup::Miss(key)) => {
                b.size = Some(key.size);
                b.inode = Some(key.ino);
                (b, Some(PendingHash { file, key, from }))
            }
            Err(e) => {
                self.note_skip(&e);
                b.skip(&e);
                (b, None)
            }
        }
    }

    fn binary(&self, obs: &Observed, f: &mut ProcFacts, known: Option<Digest>) -> (Binary, Option<PendingHash>) {
        let mut b = Binary::unknown(obs.exec_path.clone());
        b.path = f.exe_path.as_ref().map(|p| p.trim_end_matches(" (deleted)").to_owned());
        b.replaced_after_exec = f.exe_path.as_deref().is_some_and(|p| p.ends_with(" (deleted)"));
        let (running, mut b, pending) = match (f.exe.take(), known) {
            // A zombie (exited, not yet reaped) of a binary the cache does not know: its
            // stat reads, its exe link does not open. The file at the exec path, resolved
            // in the parent's root, is named and hashed when the kernel's identity says it
            // is the one that ran, as for a process already gone.
            (Some(Err(e)), None) if obs.exe.is_some() => return self.binary_of_exited(obs, e),
            (Some(Err(e)), _) => {
                b.error = Some(e);
                return (b, None);
            }
            // The kernel's identity of the executed file is in the cache: its digest.
            (_, Some(d)) => {
                let running = (d.key.dev, d.key.ino);
                // The exe link was read apart from the kernel's identity, and by then the
                // process may have exec'd again (`sh -c 'exec app'`): the link then named
                // the later image, between the kernel switching the image and the comm.
                // It names the file that ran only if the process still runs that file
                // after the read. A zombie (exited, not yet reaped) has no exe link at all.
                // Otherwise: the path that link would have read, when it names the file
                // that ran.
                let still_running = || fs::metadata(format!("/proc/{}/exe", obs.pid)).is_ok_and(|m| (m.dev(), m.ino()) == running);
                if b.path.is_none() || !still_running() {
                    b.path = exec_path_now(obs, running);
                    b.replaced_after_exec = false;
                }
                b.fill_digest(d, "kernel");
                (Some(running), b, None)
            }
            (Some(Ok(exe)), None) => {
                // The executed inode, before anything is read: the replacement check needs
                // only its identity, so it happens now, while the process exists.
                let running = exe.metadata().ok().map(|m| (m.dev(), m.ino()));
                // The kernel named the file this exec ran: an exe that is another file is a
                // later exec's image (the process exec'd again before this event was
                // handled), whatever the comm says. The file that ran is then named and
                // hashed from its exec path, when the kernel's identity says it is that one.
                if let (Some(k), Some(now)) = (&obs.exe, running)
                    && (k.dev, k.ino) != now
                {
                    return self.binary_of_exited(obs, "the process exec'd again before this exec was attested".to_owned());
                }
                // Named by the file opened, not by the link read apart from it: between
                // the open and that read, the process may have exec'd again, and the link
                // then names the later image (seen in the full suite: a `sh` exec with
                // dash's inode and digest under the later binary's path).
                if let Some(opened) = path_of_open(&exe) {
                    b.replaced_after_exec = opened.ends_with(" (deleted)");
                    b.path = Some(opened.trim_end_matches(" (deleted)").to_owned());
                }
                let (b, pending) = self.look_up(b, exe, "exe");
                (running, b, pending)
            }
            // `read_facts` opens the executable whenever no digest is known.
            (None, None) => {
                b.error = Some("the executable was not opened".to_owned());
                return (b, None);
            }
        };
        if let (Some((dev, ino)), Some(path)) = (running, obs.exec_path.as_deref().filter(|p| p.starts_with('/'))) {
            // Does the exec'd path (seen from the process's own root) still name the
            // file that runs? If not, it was replaced after exec.
            let inside = format!("/proc/{}/root{}", obs.pid, path);
            if let Ok(m) = fs::metadata(inside) {
                let same = m.dev() == dev && m.ino() == ino;
                // For a `#!` script the exec'd path is the script and the exe its
                // interpreter: different files by design, not a replacement.
                b.replaced_after_exec |= !same && b.path.as_deref() == Some(path);
            }
        }
        (b, pending)
    }

    fn ancestry(&self, ppid: u32, child_start: u64) -> Vec<Ancestor> {
        let mut out = Vec::new();
        let mut next = ppid;
        let mut start = child_start;
        while next > 0 && out.len() < MAX_ANCESTRY {
            let Some(parent) = self.table.get(next) else { break };
            // A parent must have started no later than its child; otherwise the pid
            // belongs to a newer process and the chain is broken here.
            if parent.start_ticks > start {
                break;
            }
            out.push(Ancestor { pid: parent.pid, exec_id: parent.exec_id.clone(), comm: parent.comm.clone(), binary_path: parent.binary.path.clone() });
            if parent.ppid == next {
                break;
            }
            start = parent.start_ticks;
            next = parent.ppid;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child running `/bin/true` that has exited and is not reaped yet (a zombie), and
    /// its pid. The caller reaps it.
    fn zombie_true() -> (std::process::Child, u32) {
        let child = std::process::Command::new("/bin/true").spawn().expect("spawn");
        let pid = child.id();
        while fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().starts_with('Z'))) != Some(true) {
            std::thread::yield_now();
        }
        (child, pid)
    }

    /// A child that runs `/bin/sleep 5` (its exec complete: the exe link names sleep), and
    /// its pid. The caller kills and reaps it.
    fn running_sleep() -> (std::process::Child, u32) {
        let child = std::process::Command::new("/bin/sleep").arg("5").spawn().expect("spawn sleep");
        let pid = child.id();
        let sleep = fs::canonicalize("/bin/sleep").expect("canonicalize").display().to_string();
        while fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).ok().as_deref() != Some(sleep.as_str()) {
            std::thread::yield_now();
        }
        (child, pid)
    }

    /// The record of an exec of `/bin/true` (kernel identity `ran`) by a process that by
    /// now runs `/bin/sleep`, with the same comm: a process as it is after a second exec,
    /// caught between the kernel switching its image and its comm. Whatever the path,
    /// the record names `/bin/true`, never the later image.
    fn true_exec_after_sleep_took_over(attestor: &Attestor, ran: FileKey) -> ProcessRecord {
        let (mut later, pid) = running_sleep();
        let rec = attestor.attest(Observed { comm: "sleep".into(), ..true_exec(pid, None, u64::MAX / 2, 0, ran) }).expect("a record");
        let _ = later.kill();
        let _ = later.wait();
        let resolved = fs::canonicalize("/bin/true").expect("canonicalize").display().to_string();
        assert_eq!(rec.binary.path.as_deref(), Some(resolved.as_str()), "the file that ran, never the later image: {:?}", rec.binary);
        rec
    }

    /// A workload's token request beats its exec event (a loaded node): the Workload
    /// API attests it on request and emits that record; the exec event, handled later,
    /// keeps the record and must not emit it again (the collector would see the exec
    /// twice). A record the tracer attested on request was not emitted, so it still is.
    #[test]
    fn an_exec_attested_on_request_is_emitted_once() {
        let attestor = Attestor::new("node".into(), Path::new("/sys/fs/cgroup"), 64, 1 << 30);
        for announced in [true, false] {
            let (mut child, pid) = running_sleep();
            let (on_request, fresh) = if announced { attestor.attest_running_where(pid, |r| attestor.still_same(r)) } else { attestor.attest_running(pid) }
                .expect("attested on request");
            assert!(fresh && on_request.source == Source::OnRequest);
            let kept = attestor.attest(sleep_exec_event(pid)).expect("a record");
            assert_eq!(kept.exec_id, on_request.exec_id, "one exec, one record");
            let emitted = Attestor::unless_announced(kept);
            assert_eq!(emitted.is_none(), announced, "announced: {announced}");
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exec event of `/bin/sleep` by `pid`, as the tracer observes it.
    fn sleep_exec_event(pid: u32) -> Observed {
        Observed {
            comm: "sleep".into(),
            exec_path: Some("/bin/sleep".into()),
            exe: None,
            ..true_exec(pid, None, Clock::now_boot_ns(), 0, FileKey { dev: 0, ino: 0, size: 0, mtime_ns: 0, ctime_ns: 0 })
        }
    }

    /// The other order of the same race (seen in CI): the request found no record, and
    /// while it read and hashed the caller, the exec event was handled and entered its
    /// own record. The request must use that record, not enter and emit a second one
    /// under another exec id, and must not mark it as emitted by the Workload API.
    #[test]
    fn an_exec_event_handled_while_a_request_attests_keeps_its_record() {
        let attestor = Attestor::new("node".into(), Path::new("/sys/fs/cgroup"), 64, 1 << 30);
        let (mut child, pid) = running_sleep();
        let (mut on_request, pending) = attestor.attest_from_procfs(pid, Source::OnRequest).expect("attested on request");
        attestor.hash_inline(&mut on_request, pending);
        let by_event = attestor.attest(sleep_exec_event(pid)).expect("a record");
        assert_eq!(by_event.source, Source::Ebpf);
        assert_ne!(by_event.exec_id, on_request.exec_id, "two attestations of one exec, at two moments");
        let (kept, fresh) = attestor.enter_on_request(on_request, Announce::ByCaller);
        assert!(!fresh, "not created by the request: the caller must not emit it");
        assert_eq!(kept.exec_id, by_event.exec_id, "one exec, one record");
        assert!(kept.binary.sha256.is_some(), "a decision needs the digest");
        assert_eq!(attestor.table.get(pid).map(|r| r.exec_id.clone()), Some(by_event.exec_id.clone()));
        assert_eq!(Attestor::unless_announced(by_event).map(|r| r.source), Some(Source::Ebpf), "the event's record is the event's to emit");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The exec event of `/bin/true` by a child of this test process.
    fn true_exec(pid: u32, cgroup_id: Option<u64>, boot_ns: u64, start_ns: u64, exe: FileKey) -> Observed {
        Observed {
            source: Source::Ebpf,
            pid,
            ppid: std::process::id(),
            uid: 0,
            gid: 0,
            cgroup_id,
            boot_ns,
            fork_boot_ns: 0,
            start_ns,
            comm: "true".into(),
            exec_path: Some("/bin/true".into()),
            exe: Some(exe),
        }
    }

    /// A process that exited before the agent looked (a busy node, a `cat` of a
    /// credential file): its record still names the file the kernel ran, by the path
    /// `/proc/<pid>/exe` would have read, and never a file the kernel did not run.
    #[test]
    fn an_exited_process_is_named_by_its_resolved_path_only_when_the_inode_matches() {
        let attestor = Attestor::new("node".into(), Path::new("/sys/fs/cgroup"), 64, 1 << 30);
        let ran = fs::File::open("/bin/true").expect("open /bin/true");
        let key = match attestor.hashes.lookup(&ran).expect("lookup") {
            Lookup::Hit(d) => d.key,
            Lookup::Miss(key) => attestor.hashes.compute(&ran, key, &|| None).expect("hash").key,
        };
        let mut child = std::process::Command::new("/bin/true").spawn().expect("spawn");
        let pid = child.id();
        assert!(child.wait().expect("wait").success());
        let observed = |exe: FileKey| true_exec(pid, None, 1, 1, exe);

        let rec = attestor.attest(observed(key)).expect("a record");
        let resolved = fs::canonicalize("/bin/true").expect("canonicalize").display().to_string();
        assert_eq!(rec.binary.path.as_deref(), Some(resolved.as_str()), "the path the exe link would have read");
        assert_eq!(rec.binary.exec_path.as_deref(), Some("/bin/true"));
        assert_eq!(rec.binary.hashed_from, Some("kernel"));
        assert!(rec.binary.error.is_some(), "the record says procfs came too late");

        // The kernel ran another inode than the one now at /bin/true (replaced since),
        // and the cache knows that version: the digest stands, the path is not claimed.
        let other = FileKey { ino: key.ino.wrapping_add(1), ..key };
        let digest = "ab".repeat(32);
        attestor.hashes.insert(other, digest.clone());
        let rec = attestor.attest(observed(other)).expect("a record");
        assert_eq!(rec.binary.path, None, "a path naming a file that did not run is never given");
        assert_eq!(rec.binary.sha256, Some(digest));
    }

    /// A zombie (exited, not reaped) still reads as the process in procfs, but its exe link
    /// is gone: its record still names the file that ran, by the path the link would have
    /// read.
    #[test]
    fn a_zombie_of_a_known_binary_is_named_by_its_resolved_path() {
        let attestor = Attestor::new("node".into(), Path::new("/sys/fs/cgroup"), 64, 1 << 30);
        let key = digest_of(&attestor, "/bin/true").key;
        let (mut child, pid) = zombie_true();
        assert!(fs::read_link(format!("/proc/{pid}/exe")).is_err(), "a zombie has no exe link");
        // No start time from the kernel: procfs's is taken (the exec event is "later").
        let rec = attestor.attest(true_exec(pid, None, u64::MAX / 2, 0, key)).expect("a record");
        child.wait().expect("reap");
        let resolved = fs::canonicalize("/bin/true").expect("canonicalize").display().to_string();
        assert_eq!(rec.binary.error, None, "procfs read the zombie");
        assert_eq!(rec.binary.path.as_deref(), Some(resolved.as_str()));
        assert_eq!(rec.binary.hashed_from, Some("kernel"));
    }

    /// Attacker: a process that execs again at once (`sh -c 'exec app'`), caught by the
    /// agent between the kernel switching its image and its comm. The exec event names
    /// `/bin/true` (known to the cache), procfs already shows the later image and the same
    /// comm, so nothing looks changed. The record of the first exec used to name the later
    /// binary's path next to the first binary's digest (seen once in the full suite, in
    /// `attest_hardening::an_exec_is_never_reported_with_the_binary_of_a_later_exec`).
    #[test]
    fn an_exec_record_never_names_the_path_of_a_later_image() {
        let attestor = Attestor::new("node".into(), Path::new("/sys/fs/cgroup"), 64, 1 << 30);
        let key = digest_of(&attestor, "/bin/true").key;
        let rec = true_exec_after_sleep_took_over(&attestor, key);
        assert_eq!(rec.binary.hashed_from, Some("kernel"));
        assert!(!rec.binary.replaced_after_exec, "{:?}", rec.binary);
    }

    /// The same race, for a binary the cache does not know yet: procfs's exe is the later
    /// image, which used to be named and hashed as this exec's binary. The kernel's
    /// identity says which file ran; that one is named and hashed from the exec path.
    #[test]
    fn an_exec_record_never_hashes_a_later_image() {
        let attestor = Attestor::new("node".into(), Path::new("/sys/fs/cgroup"), 64, 1 << 30);
        let ran = FileKey::of(&fs::File::open("/bin/true").expect("open /bin/true")).expect("stat");
        let rec = true_exec_after_sleep_took_over(&attestor, ran);
        assert_eq!(rec.binary.hashed_from, Some("exec_path"));
        assert_eq!(rec.binary.sha256, Some(digest_of(&attestor, "/bin/true").sha256), "{:?}", rec.binary);
    }

    /// The third window of the same race: the executable was opened before the process
    /// exec'd again, and the exe link read after, so the two name different files. The
    /// record names the file that was opened and hashed (the one that ran), never the
    /// later image the link shows.
    #[test]
    fn an_exec_record_is_named_by_the_file_it_hashed_not_a_later_link() {
        let attestor = Attestor::new("node".into(), Path::new("/sys/fs/cgroup"), 64, 1 << 30);
        let opened = fs::File::open("/bin/true").expect("open /bin/true");
        let ran = FileKey::of(&opened).expect("stat");
        let later = fs::canonicalize("/bin/sleep").expect("canonicalize").display().to_string();
        let mut facts = ProcFacts {
            start_ticks: 1,
            ppid: 1,
            comm: "true".into(),
            kthread: false,
            exe_path: Some(later.clone()),
            exe: Some(Ok(opened)),
            cgroup_path: None,
            argv: None,
            uid: Some(0),
            gid: Some(0),
            comm_changed: false,
        };
        let obs = Observed { comm: "true".into(), ..true_exec(std::process::id(), None, 1, 0, ran) };
        let (b, _) = attestor.binary(&obs, &mut facts, None);
        let resolved = fs::canonicalize("/bin/true").expect("canonicalize").display().to_string();
        assert_eq!(b.path.as_deref(), Some(resolved.as_str()), "{b:?}");
        assert_eq!(b.inode, Some(ran.ino), "{b:?}");
    }

    /// The same zombie, of a binary the cache does not know yet (an agent's first `cat`):
    /// the exe link does not open, and the record names and hashes the file at the exec
    /// path, which the kernel's identity says is the one that ran. This was the
    /// intermittent `binary_path: null` of `trace::reading_an_aws_shared_credentials_file`.
    #[test]
    fn a_zombie_of_an_unknown_binary_is_named_and_hashed_by_its_resolved_path() {
        let attestor = Attestor::new("node".into(), Path::new("/sys/fs/cgroup"), 64, 1 << 30);
        let ran = FileKey::of(&fs::File::open("/bin/true").expect("open /bin/true")).expect("stat");
        let (mut child, pid) = zombie_true();
        let rec = attestor.attest(true_exec(pid, None, u64::MAX / 2, 0, ran)).expect("a record");
        // The attacker's move: the file at the path is not the one the kernel ran (swapped
        // after the exec). Refused: neither named nor hashed.
        let replaced = FileKey { ctime_ns: ran.ctime_ns + 1, ..ran };
        let fresh = Attestor::new("node".into(), Path::new("/sys/fs/cgroup"), 64, 1 << 30);
        let swapped = fresh.attest(true_exec(pid, None, u64::MAX / 2, 0, replaced)).expect("a record");
        child.wait().expect("reap");
        let resolved = fs::canonicalize("/bin/true").expect("canonicalize").display().to_string();
        assert_eq!(rec.binary.path.as_deref(), Some(resolved.as_str()), "{:?}", rec.binary);
        assert_eq!(rec.binary.hashed_from, Some("exec_path"));
        assert!(rec.binary.sha256.is_some());
        assert_eq!((swapped.binary.path.as_deref(), swapped.binary.sha256.as_deref()), (None, None), "{:?}", swapped.binary);
        assert!(swapped.binary.error.as_deref().is_some_and(|e| e.contains("not the one that ran")), "{:?}", swapped.binary.error);
    }

    /// The first exec of a binary (not in the cache) by a process that exited at once,
    /// exec'd into a cgroup its parent is not in (a runtime, a CI runner, `cg.run` in the
    /// tests): the file at its path is hashed and named when it is the one the kernel
    /// ran, and neither when it is not.
    #[test]
    fn an_exited_first_exec_in_another_cgroup_is_named_when_the_kernel_identity_matches() {
        let fresh = || Attestor::new("node".into(), Path::new("/sys/fs/cgroup"), 64, 1 << 30);
        let ran = FileKey::of(&fs::File::open("/bin/true").expect("open /bin/true")).expect("stat");
        let mut child = std::process::Command::new("/bin/true").spawn().expect("spawn");
        let pid = child.id();
        assert!(child.wait().expect("wait").success());
        // No cgroup of ours: the parent does not share it.
        let observed = |exe: FileKey| true_exec(pid, Some(u64::MAX), 1, 1, exe);
        let rec = fresh().attest(observed(ran)).expect("a record");
        let resolved = fs::canonicalize("/bin/true").expect("canonicalize").display().to_string();
        assert_eq!(rec.binary.path.as_deref(), Some(resolved.as_str()));
        assert_eq!(rec.binary.hashed_from, Some("exec_path"));
        assert!(rec.binary.sha256.is_some());

        let replaced = FileKey { ctime_ns: ran.ctime_ns + 1, ..ran };
        let rec = fresh().attest(observed(replaced)).expect("a record");
        assert_eq!((rec.binary.path.as_deref(), rec.binary.sha256.as_deref()), (None, None), "not the file that ran: {:?}", rec.binary);
        assert!(rec.binary.error.as_deref().is_some_and(|e| e.contains("not the one that ran")), "{:?}", rec.binary.error);
    }

    fn digest_of(attestor: &Attestor, path: &str) -> Digest {
        let f = fs::File::open(path).expect("open");
        match attestor.hashes.lookup(&f).expect("lookup") {
            Lookup::Hit(d) => d,
            Lookup::Miss(key) => attestor.hashes.compute(&f, key, &|| None).expect("hash"),
        }
    }

    /// The common exec (a known binary, not an interpreter) is attested from the kernel's
    /// facts and the exe link alone; anything the link does not vouch for goes the long way.
    #[test]
    fn a_running_process_the_kernel_described_in_full_needs_only_its_exe_link() {
        let attestor = Attestor::new("node".into(), Path::new("/sys/fs/cgroup"), 64, 1 << 30);
        let spawn = |bin: &str, args: &[&str]| std::process::Command::new(bin).args(args).spawn().expect("spawn");
        let observed = |pid: u32, exec_path: &str, comm: &str| Observed {
            source: Source::Ebpf,
            pid,
            ppid: std::process::id(),
            uid: 0,
            gid: 0,
            cgroup_id: Some(1),
            boot_ns: 1,
            fork_boot_ns: 0,
            start_ns: 1_000_000_000,
            comm: comm.into(),
            exec_path: Some(exec_path.into()),
            exe: None,
        };
        let reads = |exec_path: &'static str, comm: &'static str| Reads {
            ids: false,
            exe: false,
            cgroup: false,
            kernel_comm: comm,
            exec_path: Some(exec_path),
            start_known: true,
        };

        let sleep = digest_of(&attestor, "/bin/sleep");
        let mut child = spawn("/bin/sleep", &["30"]);
        let obs = observed(child.id(), "/bin/sleep", "sleep");
        let f = attestor.facts_from_kernel(&obs, &reads("/bin/sleep", "sleep"), &sleep).expect("from the kernel and the exe link");
        let real = fs::canonicalize("/bin/sleep").expect("canonicalize").display().to_string();
        assert_eq!(f.exe_path.as_deref(), Some(real.as_str()));
        assert_eq!((f.ppid, f.comm.as_str(), f.start_ticks), (std::process::id(), "sleep", attestor.clock.boot_ns_to_ticks(1_000_000_000)));
        assert!(f.argv.is_none() && f.exe.is_none());

        // The kernel ran another version of the file than the link names now.
        let other = Digest { key: FileKey { ino: sleep.key.ino.wrapping_add(1), ..sleep.key }, ..sleep.clone() };
        assert!(attestor.facts_from_kernel(&obs, &reads("/bin/sleep", "sleep"), &other).is_none());
        // The cgroup id did not resolve: procfs must be read.
        assert!(attestor.facts_from_kernel(&obs, &Reads { cgroup: true, ..reads("/bin/sleep", "sleep") }, &sleep).is_none());
        let _ = child.kill();
        let _ = child.wait();
        // Gone: the link names nothing.
        assert!(attestor.facts_from_kernel(&obs, &reads("/bin/sleep", "sleep"), &sleep).is_none());

        // An interpreter may run a script: its argv is read, the long way.
        let sh = digest_of(&attestor, "/bin/sh");
        // (Two commands, so the shell stays the process rather than exec'ing sleep.)
        let mut child = spawn("/bin/sh", &["-c", "sleep 30; true"]);
        let obs = observed(child.id(), "/bin/sh", "sh");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs::metadata(format!("/proc/{}/exe", child.id())).map(|m| m.ino()).ok() != Some(sh.key.ino) {
            assert!(std::time::Instant::now() < deadline, "the shell never ran");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(attestor.facts_from_kernel(&obs, &reads("/bin/sh", "sh"), &sh).is_none(), "an interpreter is read the long way");
        let _ = child.kill();
        let _ = child.wait();
    }
}
