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
pub mod record;
pub mod table;
pub mod workload;

use std::{fs, io::Read, os::unix::fs::MetadataExt, sync::Arc};

use agent_common::{ExecEvent, ExitEvent};
use procfs::process::Process;

use crate::ebpf::decode::c_str;
use cgroup::CgroupResolver;
use clock::Clock;
use hash::{HashCache, HashStats};
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
    comm: String,
    exec_path: Option<String>,
}

pub struct Attestor {
    node: String,
    boot_id: String,
    clock: Clock,
    hashes: HashCache,
    cgroups: CgroupResolver,
    table: ProcessTable,
}

/// Facts read from /proc/<pid>, all through one handle.
struct ProcFacts {
    start_ticks: u64,
    ppid: u32,
    comm: String,
    kthread: bool,
    exe_path: Option<String>,
    exe: Result<fs::File, String>,
    cgroup_path: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
}

fn proc_error(e: procfs::ProcError) -> String {
    match e {
        procfs::ProcError::NotFound(_) => "process exited before it could be attested".to_owned(),
        other => other.to_string(),
    }
}

impl Attestor {
    pub fn new(node: String, cgroup2_mount: &std::path::Path, hash_cache_entries: usize, max_hash_bytes: u64) -> Self {
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().replace('-', ""))
            .unwrap_or_default();
        Self {
            node,
            boot_id,
            clock: Clock::new(),
            hashes: HashCache::new(hash_cache_entries, max_hash_bytes),
            cgroups: CgroupResolver::new(cgroup2_mount),
            table: ProcessTable::default(),
        }
    }

    pub fn hash_stats(&self) -> HashStats {
        self.hashes.stats()
    }

    pub fn table(&self) -> &ProcessTable {
        &self.table
    }

    pub fn on_exec(&self, ev: &ExecEvent) -> ProcessRecord {
        let len = usize::from(ev.filename_len).min(ev.filename.len());
        let mut exec_path = String::from_utf8_lossy(&ev.filename[..len]).into_owned();
        if ev.filename_truncated != 0 {
            exec_path.push_str("...");
        }
        self.attest(Observed {
            source: Source::Ebpf,
            pid: ev.header.pid,
            ppid: ev.ppid,
            uid: ev.uid,
            gid: ev.gid,
            cgroup_id: Some(ev.header.cgroup_id),
            boot_ns: ev.header.boot_ns,
            fork_boot_ns: ev.fork_boot_ns,
            comm: c_str(&ev.comm),
            exec_path: Some(exec_path),
        })
    }

    pub fn on_exit(&self, ev: &ExitEvent) -> Option<ProcessExit> {
        let rec = self.table.remove(ev.header.pid)?;
        Some(ProcessExit {
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
            .filter_map(|pid| self.attest_from_procfs(pid, Source::ProcfsScan))
            .collect()
    }

    /// The record describing what `pid` is *now*, attesting it from procfs on the spot
    /// when the table has none or an outdated one (a caller can reach the Workload API
    /// before its exec event is handled, or after moving to another cgroup). The bool is
    /// true when the record was created by this call.
    pub fn attest_running(&self, pid: u32) -> Option<(Arc<ProcessRecord>, bool)> {
        if let Some(rec) = self.table.get(pid).filter(|r| self.still_same(r)) {
            return Some((rec, false));
        }
        let rec = Arc::new(self.attest_from_procfs(pid, Source::OnRequest)?);
        Some((rec, true))
    }

    /// True while `pid` still is what `rec` describes: same start time, same executable
    /// inode and same cgroup (a pid reuse, a re-exec or a cgroup move changes one).
    pub fn still_same(&self, rec: &ProcessRecord) -> bool {
        let Ok(p) = Process::new(rec.pid as i32) else { return false };
        let same_start = p.stat().is_ok_and(|s| s.starttime == rec.start_ticks);
        let same_exe = match (p.open_relative("exe").and_then(|f| Ok(f.metadata()?)), rec.binary.inode) {
            (Ok(m), Some(ino)) => m.ino() == ino,
            (Err(_), None) => true,
            _ => false,
        };
        let mut text = String::new();
        let cgroup_now = p
            .open_relative("cgroup")
            .ok()
            .and_then(|mut f| f.read_to_string(&mut text).ok())
            .and_then(|_| cgroup::v2_path_from_proc(&text));
        same_start && same_exe && cgroup_now == rec.cgroup.path
    }

    fn attest_from_procfs(&self, pid: u32, source: Source) -> Option<ProcessRecord> {
        let obs = Observed {
            source,
            pid,
            ppid: 0,
            uid: 0,
            gid: 0,
            cgroup_id: None,
            boot_ns: Clock::now_boot_ns(),
            fork_boot_ns: 0,
            comm: String::new(),
            exec_path: None,
        };
        let proc = Process::new(pid as i32).ok()?;
        let facts = self.read_facts(&proc).ok()?;
        (!facts.kthread).then(|| self.build(obs, Ok(facts)))
    }

    /// The current record for `pid`, or None if the process that pid now names is not the
    /// one the record describes (exited, or the pid was reused).
    pub fn lookup(&self, pid: u32) -> Option<Arc<ProcessRecord>> {
        let rec = self.table.get(pid)?;
        let now = Process::new(pid as i32).ok()?.stat().ok()?.starttime;
        (now == rec.start_ticks).then_some(rec)
    }

    fn attest(&self, obs: Observed) -> ProcessRecord {
        let facts = Process::new(obs.pid as i32).map_err(proc_error).and_then(|p| {
            let facts = self.read_facts(&p)?;
            // The pid named another process by the time we looked: the start time is
            // after the exec we are attesting (allow one tick of procfs rounding).
            if self.clock.ticks_to_boot_ns(facts.start_ticks) > obs.boot_ns + self.clock.tick_ns() {
                return Err("pid was reused before the process could be attested".to_owned());
            }
            Ok(facts)
        });
        self.build(obs, facts)
    }

    fn read_facts(&self, p: &Process) -> Result<ProcFacts, String> {
        let stat = p.stat().map_err(proc_error)?;
        let status = p.status().ok();
        let exe = p.open_relative("exe").map_err(proc_error);
        let exe_path = p.exe().ok().map(|p| p.to_string_lossy().into_owned());
        let mut cgroup_text = String::new();
        let cgroup_path = p
            .open_relative("cgroup")
            .ok()
            .and_then(|mut f| f.read_to_string(&mut cgroup_text).ok())
            .and_then(|_| cgroup::v2_path_from_proc(&cgroup_text));
        // Same start time after all reads: everything above describes one process.
        let again = p.stat().map_err(proc_error)?;
        if again.starttime != stat.starttime {
            return Err("pid was reused while the process was being attested".to_owned());
        }
        Ok(ProcFacts {
            start_ticks: stat.starttime,
            ppid: u32::try_from(stat.ppid).unwrap_or(0),
            comm: stat.comm,
            kthread: stat.flags & PF_KTHREAD != 0,
            exe_path,
            exe,
            cgroup_path,
            uid: status.as_ref().map(|s| s.ruid),
            gid: status.as_ref().map(|s| s.rgid),
        })
    }

    fn build(&self, obs: Observed, facts: Result<ProcFacts, String>) -> ProcessRecord {
        let (start_ticks, binary, cgroup_path_from_proc, ppid, comm, uid, gid) = match facts {
            Ok(mut f) => {
                let binary = self.binary(&obs, &mut f);
                let ppid = if obs.ppid != 0 { obs.ppid } else { f.ppid };
                let comm = if obs.comm.is_empty() { f.comm } else { obs.comm.clone() };
                let uid = if obs.source == Source::Ebpf { obs.uid } else { f.uid.unwrap_or(obs.uid) };
                let gid = if obs.source == Source::Ebpf { obs.gid } else { f.gid.unwrap_or(obs.gid) };
                (f.start_ticks, binary, f.cgroup_path, ppid, comm, uid, gid)
            }
            Err(why) => {
                // Too late for procfs: the fork time the kernel gave us is the best start
                // estimate, and the binary cannot be read safely any more.
                let start = if obs.fork_boot_ns != 0 { obs.fork_boot_ns } else { obs.boot_ns };
                let binary = self.binary_of_exited(&obs, why);
                (self.clock.boot_ns_to_ticks(start), binary, None, obs.ppid, obs.comm.clone(), obs.uid, obs.gid)
            }
        };
        // The kernel's cgroup id is authoritative (it is where the exec happened); the
        // procfs path is the fallback for scans and unresolvable ids.
        let cgroup_id = obs.cgroup_id.or_else(|| cgroup_path_from_proc.as_deref().and_then(|p| self.cgroups.id_of(p)));
        let cgroup_path = cgroup_id.and_then(|id| self.cgroups.path_of(id)).or(cgroup_path_from_proc);
        let workload = workload::parse_cgroup_path(cgroup_path.as_deref().unwrap_or(""));
        let process_id = format!("{}:{}:{}", self.boot_id, obs.pid, start_ticks);
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
        };
        // The same exec already attested on request (its Workload API call beat this
        // event): keep that record, so one exec has one exec_id everywhere.
        if let Some(prev) = self.table.get(obs.pid) {
            let same_exec = prev.source == Source::OnRequest
                && obs.source == Source::Ebpf
                && prev.process_id == rec.process_id
                && prev.binary.inode == rec.binary.inode
                && prev.cgroup.path == rec.cgroup.path;
            if same_exec {
                return (*prev).clone();
            }
        }
        self.table.insert(Arc::new(rec.clone()));
        rec
    }

    /// A process that exited before procfs could be read (short-lived commands). Its exe
    /// is gone, but the parent usually shares its mount namespace; requiring the same
    /// cgroup rules out the common case where it does not (a container runtime's shim
    /// exec'ing the entrypoint lives in the host's namespace, in another cgroup).
    fn binary_of_exited(&self, obs: &Observed, why: String) -> Binary {
        let mut b = Binary::unknown(obs.exec_path.clone());
        b.error = Some(why);
        let (Some(path), Some(cgroup_id)) = (obs.exec_path.as_deref().filter(|p| p.starts_with('/')), obs.cgroup_id)
        else {
            return b;
        };
        let Ok(parent) = Process::new(obs.ppid as i32) else { return b };
        let mut text = String::new();
        let parent_cgroup = parent
            .open_relative("cgroup")
            .ok()
            .and_then(|mut f| f.read_to_string(&mut text).ok())
            .and_then(|_| cgroup::v2_path_from_proc(&text))
            .and_then(|p| self.cgroups.id_of(&p));
        if parent_cgroup != Some(cgroup_id) {
            return b;
        }
        if let Ok(mut file) = fs::File::open(format!("/proc/{}/root{}", obs.ppid, path))
            && let Ok(d) = self.hashes.digest(&mut file) {
                b.fill_digest(d, "exec_path");
            }
        b
    }

    fn binary(&self, obs: &Observed, f: &mut ProcFacts) -> Binary {
        let mut b = Binary::unknown(obs.exec_path.clone());
        b.path = f.exe_path.as_ref().map(|p| p.trim_end_matches(" (deleted)").to_owned());
        b.replaced_after_exec = f.exe_path.as_deref().is_some_and(|p| p.ends_with(" (deleted)"));
        let exe = match &mut f.exe {
            Ok(file) => file,
            Err(e) => {
                b.error = Some(e.clone());
                return b;
            }
        };
        match self.hashes.digest(exe) {
            Ok(d) => {
                let key = d.key;
                b.fill_digest(d, "exe");
                // Does the exec'd path (seen from the process's own root) still name the
                // file that runs? If not, it was replaced after exec.
                if let Some(path) = obs.exec_path.as_deref().filter(|p| p.starts_with('/')) {
                    let inside = format!("/proc/{}/root{}", obs.pid, path);
                    if let Ok(m) = fs::metadata(inside) {
                        let same = m.dev() == key.dev && m.ino() == key.ino;
                        // For a `#!` script the exec'd path is the script and the exe its
                        // interpreter: different files by design, not a replacement.
                        b.replaced_after_exec |= !same && b.path.as_deref() == Some(path);
                    }
                }
            }
            Err(e) => b.error = Some(e.to_string()),
        }
        b
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
            out.push(Ancestor {
                pid: parent.pid,
                exec_id: parent.exec_id.clone(),
                comm: parent.comm.clone(),
                binary_path: parent.binary.path.clone(),
            });
            if parent.ppid == next {
                break;
            }
            start = parent.start_ticks;
            next = parent.ppid;
        }
        out
    }
}
