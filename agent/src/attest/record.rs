//! The attested process record: the identity every later decision is made on
//! (token issuance, credential-use attribution). It leaves the agent as the contract's
//! `ProcessExec` (sigil-proto), built here.

pub use sigil_proto::v1::ProcessRef;
use sigil_proto::{EventBody, v1};

use super::{hash::HashError, pool::HashSkip, workload::Workload};
use crate::k8s::PodMeta;

/// How the agent learned about the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The exec tracepoint fired while the agent was running.
    Ebpf,
    /// Already running when the agent started; attested from procfs.
    ProcfsScan,
    /// Attested from procfs when it called the Workload API before its exec event was
    /// handled.
    OnRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    /// The executable the kernel runs (`/proc/<pid>/exe`), inside the process's mount
    /// namespace; for a script this is the interpreter.
    pub path: Option<String>,
    /// The name passed to exec, as the kernel reported it (a script for `#!` files).
    pub exec_path: Option<String>,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub inode: Option<u64>,
    /// `hit` when the digest came from the cache, `miss` when it was computed now.
    pub hash_cache: Option<&'static str>,
    /// `exe`: the executed inode itself (/proc/<pid>/exe). `exec_path`: the process was
    /// gone before it could be read, so the file now at the exec'd path (seen from the
    /// parent's root, parent in the same cgroup) was hashed instead: weaker evidence.
    pub hashed_from: Option<&'static str>,
    /// The path now names a different file than the one that was executed (replaced or
    /// deleted after exec): the digest is of what ran, not of what is there now.
    pub replaced_after_exec: bool,
    /// Why a field could not be filled.
    pub error: Option<String>,
    /// Why no digest was computed, when it was skipped on purpose (a hostile or huge
    /// file, a full hash queue, a time budget): the record is complete otherwise.
    pub hash_skipped: Option<HashSkip>,
    /// The digest is being computed off the event thread. Emitted records never carry
    /// `true`; the process table holds such a record until the hash is done.
    pub hash_pending: bool,
}

impl Binary {
    pub fn unknown(exec_path: Option<String>) -> Self {
        Self {
            path: None,
            exec_path,
            sha256: None,
            size: None,
            inode: None,
            hash_cache: None,
            hashed_from: None,
            replaced_after_exec: false,
            error: None,
            hash_skipped: None,
            hash_pending: false,
        }
    }

    /// No digest, and why.
    pub fn skip(&mut self, e: &HashError) {
        self.sha256 = None;
        self.hash_cache = None;
        self.hashed_from = None;
        self.hash_skipped = HashSkip::of(e);
        self.error = Some(e.to_string());
    }

    pub fn fill_digest(&mut self, d: super::hash::Digest, from: &'static str) {
        self.sha256 = Some(d.sha256);
        self.size = Some(d.key.size);
        self.inode = Some(d.key.ino);
        self.hash_cache = Some(if d.cache_hit { "hit" } else { "miss" });
        self.hashed_from = Some(from);
        // A digest computed after the pool gave up replaces its reason.
        if self.hash_skipped.take().is_some() {
            self.error = None;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupInfo {
    pub id: u64,
    pub path: Option<String>,
}

/// One step up the parent chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    pub pid: u32,
    pub exec_id: String,
    pub comm: String,
    pub binary_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    pub source: Source,
    /// Unique per exec: `<boot id>:<pid>:<start ticks>:<exec boot ns>`.
    pub exec_id: String,
    /// Unique per process instance (survives re-exec): `<boot id>:<pid>:<start ticks>`.
    pub process_id: String,
    pub node: String,
    /// When the exec happened (or, for a scan, when it was observed), RFC 3339.
    pub time: String,
    pub pid: u32,
    pub ppid: u32,
    /// Process start, RFC 3339; with `pid` it names the process across pid reuse.
    pub start_time: String,
    /// Start in clock ticks since boot, as in /proc/<pid>/stat (the exact comparison key).
    pub start_ticks: u64,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub binary: Binary,
    pub cgroup: CgroupInfo,
    pub workload: Workload,
    /// Parent first, up to the oldest ancestor the agent knows.
    pub ancestry: Vec<Ancestor>,
    /// The script an interpreter was started on (`#!` file or first argument), if any.
    pub script: Option<super::script::Script>,
    /// The pod's namespace, service account, name, labels and owner, when the pod watch
    /// had delivered the pod by the time of this record.
    pub pod: Option<PodMeta>,
    /// The run this process belongs to, as users mean it (a Job's execution, a
    /// Deployment's pod): see [`PodMeta::run_key`]. Absent outside known pods, where the
    /// collector groups by container, unit or cgroup.
    pub run: Option<String>,
    /// The kernel's identity of the executed file at exec (device, inode, size, times),
    /// when the exec program could read it: later per-exec checks (TLS libraries, blind
    /// spots) look their caches up by it instead of stat'ing /proc/<pid>/exe again.
    pub kernel_exe: Option<super::hash::FileKey>,
    /// An on-request record its attester (the Workload API) emits itself: its exec
    /// event, handled later, keeps the record and does not emit it again. In no event.
    pub announced: bool,
}

impl From<Source> for v1::Source {
    fn from(s: Source) -> Self {
        match s {
            Source::Ebpf => v1::Source::Ebpf,
            Source::ProcfsScan => v1::Source::ProcfsScan,
            Source::OnRequest => v1::Source::OnRequest,
        }
    }
}

impl From<&Binary> for v1::Binary {
    fn from(b: &Binary) -> Self {
        Self {
            path: b.path.clone(),
            exec_path: b.exec_path.clone(),
            sha256: b.sha256.clone(),
            size: b.size,
            inode: b.inode,
            hash_cache: b.hash_cache.map(str::to_owned),
            hashed_from: b.hashed_from.map(str::to_owned),
            replaced_after_exec: b.replaced_after_exec,
            error: b.error.clone(),
            hash_skipped: b.hash_skipped.map(|h| h.as_str().to_owned()),
            hash_pending: b.hash_pending,
        }
    }
}

impl From<&ProcessRecord> for EventBody {
    fn from(r: &ProcessRecord) -> Self {
        EventBody::ProcessExec(v1::ProcessExec {
            source: v1::Source::from(r.source) as i32,
            exec_id: r.exec_id.clone(),
            process_id: r.process_id.clone(),
            node: r.node.clone(),
            time: r.time.clone(),
            pid: r.pid,
            ppid: r.ppid,
            start_time: r.start_time.clone(),
            start_ticks: r.start_ticks,
            uid: r.uid,
            gid: r.gid,
            comm: r.comm.clone(),
            binary: Some((&r.binary).into()),
            cgroup: Some(v1::CgroupInfo { id: r.cgroup.id, path: r.cgroup.path.clone() }),
            workload: Some((&r.workload).into()),
            ancestry: r
                .ancestry
                .iter()
                .map(|a| v1::Ancestor { pid: a.pid, exec_id: a.exec_id.clone(), comm: a.comm.clone(), binary_path: a.binary_path.clone() })
                .collect(),
            script: r.script.as_ref().map(v1::Script::from),
            pod: r.pod.as_ref().map(v1::PodMeta::from),
            run: r.run.clone(),
        })
    }
}

/// The attested run an event is about (issuance decision, credential use): enough to
/// find the full record by `exec_id`, and the fields queries filter on.
impl From<&ProcessRecord> for ProcessRef {
    fn from(r: &ProcessRecord) -> Self {
        Self {
            exec_id: r.exec_id.clone(),
            process_id: r.process_id.clone(),
            pid: r.pid,
            binary_path: r.binary.path.clone(),
            binary_sha256: r.binary.sha256.clone(),
            cgroup_path: r.cgroup.path.clone(),
            workload: Some((&r.workload).into()),
            pod: r.pod.as_ref().map(v1::PodMeta::from),
            run: r.run.clone(),
        }
    }
}
