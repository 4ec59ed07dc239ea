//! Loads the embedded object, configures it for this kernel and attaches its programs.

use std::io;

use std::path::Path;

use agent_common::{
    DROP_REASONS, DROPS_MAP, DropReason, ExeIdentity, ExeOffsets, QUIET_EXES_MAP, RESPONSE_WATCH_MAP, TLS_CALLS_MAP, TlsConnKey, TracepointOffsets,
    UringOffsets, WATCH_NAME_LEN,
};
use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        ProgramError, TracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope},
    },
};
use thiserror::Error;

/// The object built by `cargo xtask build-ebpf`, embedded at compile time (see build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sigil.bpf.o"));

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("this sigil-agent was built without its eBPF programs; build it with `cargo xtask build`")]
    NoObject,
    #[error("the kernel refused to load eBPF programs ({0}): run as root or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN")]
    PermissionDenied(String),
    #[error("loading the eBPF object: {0}")]
    Load(#[source] EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program { name: &'static str, source: ProgramError },
    #[error("eBPF map {name}: {source}")]
    Map { name: &'static str, source: MapError },
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
    #[error("syscall tracepoint {0} does not have the expected layout; credential tracing is off")]
    Layout(String),
    /// A name the kernel's key cannot hold would never be matched: refused, not dropped.
    #[error("credential file name {0:?} does not fit the kernel's watch list ({WATCH_NAME_LEN} bytes at most)")]
    WatchedName(String),
}

impl LoadError {
    /// True when the failure is the kernel saying no to this caller (not a bug in us).
    pub fn is_permission(&self) -> bool {
        matches!(self, LoadError::PermissionDenied(_))
    }
}

/// If any error in the chain is EPERM/EACCES, the kernel refused us for lack of privilege.
fn permission_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(ioe) = err.downcast_ref::<io::Error>()
            && matches!(ioe.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
        {
            return Some(ioe.to_string());
        }
        cur = err.source();
    }
    None
}

fn program_error(name: &'static str, source: ProgramError) -> LoadError {
    match permission_cause(&source) {
        Some(why) => LoadError::PermissionDenied(why),
        None => LoadError::Program { name, source },
    }
}

/// The loaded programs and the maps user space reads.
pub struct Probes {
    ebpf: Ebpf,
    lost: PerCpuArray<MapData, u64>,
    drops: PerCpuArray<MapData, u64>,
    /// Names of attached programs, in attach order, for the start-up log line.
    pub attached: Vec<&'static str>,
    /// The io_uring programs know where requests keep what they read.
    uring_offsets_valid: bool,
}

/// (program, tracepoint category, tracepoint name)
const PROCESS_PROGRAMS: [(&str, &str, &str); 3] = [
    // fork first: an exec right after start-up then already knows its parent.
    ("sigil_fork", "sched", "sched_process_fork"),
    ("sigil_exec", "sched", "sched_process_exec"),
    ("sigil_exit", "sched", "sched_process_exit"),
];

/// (program, syscall tracepoint) for credential-use tracing. `sigil_write` serves both
/// write and sendto: their first three arguments are (fd, buffer, length).
const TRACE_PROGRAMS: [(&str, &str); 14] = [
    ("sigil_connect_enter", "sys_enter_connect"),
    ("sigil_connect_exit", "sys_exit_connect"),
    ("sigil_close", "sys_enter_close"),
    ("sigil_write", "sys_enter_write"),
    ("sigil_write", "sys_enter_sendto"),
    ("sigil_writev", "sys_enter_writev"),
    ("sigil_sendmsg", "sys_enter_sendmsg"),
    ("sigil_openat", "sys_enter_openat"),
    ("sigil_open", "sys_enter_open"),
    ("sigil_openat2", "sys_enter_openat2"),
    // Every open's return: what was opened, matched by inode (open_by_handle_at names
    // no path at all).
    ("sigil_open_exit", "sys_exit_openat"),
    ("sigil_open_exit", "sys_exit_open"),
    ("sigil_open_exit", "sys_exit_openat2"),
    ("sigil_open_exit", "sys_exit_open_by_handle_at"),
];

/// A TLS library's write function and the programs that trace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsLibrary {
    OpenSsl,
    GnuTls,
}

impl TlsLibrary {
    /// The functions hooked, by symbol name.
    pub fn symbols(self) -> Vec<&'static str> {
        self.hooks().iter().map(|(symbol, _, _)| *symbol).collect()
    }

    /// (plain, ex) functions that may share one hook at the internal function both call
    /// (`trace::hook_site`): the `ex` programs read the arguments they pass it.
    pub fn shared_pairs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            TlsLibrary::OpenSsl => &[("SSL_write", "SSL_write_ex"), ("SSL_read", "SSL_read_ex")],
            TlsLibrary::GnuTls => &[],
        }
    }

    /// (symbol, entry program, return program)
    fn hooks(self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self {
            TlsLibrary::OpenSsl => &[
                ("SSL_write", "sigil_ssl_write", "sigil_ssl_write_ret"),
                ("SSL_write_ex", "sigil_ssl_write_ex", "sigil_ssl_write_ex_ret"),
                ("SSL_read", "sigil_ssl_read", "sigil_ssl_read_ret"),
                ("SSL_read_ex", "sigil_ssl_read_ex", "sigil_ssl_read_ex_ret"),
            ],
            TlsLibrary::GnuTls => {
                &[("gnutls_record_send", "sigil_gnutls_send", "sigil_gnutls_send_ret"), ("gnutls_record_recv", "sigil_gnutls_recv", "sigil_gnutls_recv_ret")]
            }
        }
    }

    const ALL_PROGRAMS: [&'static str; 12] = [
        "sigil_ssl_write",
        "sigil_ssl_write_ret",
        "sigil_ssl_write_ex",
        "sigil_ssl_write_ex_ret",
        "sigil_gnutls_send",
        "sigil_gnutls_send_ret",
        "sigil_ssl_read",
        "sigil_ssl_read_ret",
        "sigil_ssl_read_ex",
        "sigil_ssl_read_ex_ret",
        "sigil_gnutls_recv",
        "sigil_gnutls_recv_ret",
    ];
}

/// The entry-only probe on Go's `crypto/tls.(*Conn).Write` (no return probe: see
/// agent-ebpf/src/probes/go_tls.rs).
const GO_TLS_WRITE: &str = "sigil_go_tls_write";

/// Links of one attached library, kept to detach them.
pub struct LibraryLinks(Vec<(&'static str, UProbeLinkId)>);

impl Probes {
    /// A program of the object as its concrete type (TracePoint, UProbe, ...).
    fn program<'a, P>(&'a mut self, name: &'static str) -> Result<&'a mut P, LoadError>
    where
        &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        self.ebpf.program_mut(name).ok_or(LoadError::Missing("program"))?.try_into().map_err(|e| program_error(name, e))
    }

    /// `watched_names` are the credential-file suffixes the open() filter will look for;
    /// their lengths are fixed at load time. `tls_calls_entries` sizes the per-thread TLS
    /// call map (threads inside a TLS write at one moment). `exe` tells the exec program
    /// where the executable's inode is (invalid: it sends no identity), `uring` where
    /// io_uring requests keep their data (invalid: the io_uring programs are not attached).
    pub fn load(
        offsets: TracepointOffsets,
        exe: ExeOffsets,
        uring: UringOffsets,
        ring_buffer_bytes: u32,
        tls_calls_entries: u32,
        watched_names: &[&str],
    ) -> Result<Self, LoadError> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject);
        }
        if let Some(name) = watched_names.iter().find(|n| !(1..=WATCH_NAME_LEN).contains(&n.len())) {
            return Err(LoadError::WatchedName(name.to_string()));
        }
        let lengths: u64 = watched_names.iter().fold(0, |m, n| m | 1 << (n.len() - 1));
        // Data events wake user space once an eighth of the ring is waiting (else at its
        // next poll tick, `DATA_POLL_TICK`).
        let data_wakeup_bytes = u64::from(ring_buffer_bytes / 8);
        let agent_tgid = std::process::id();
        let mut ebpf = EbpfLoader::new()
            .override_global("AGENT_TGID", &agent_tgid, true)
            .override_global("DATA_WAKEUP_BYTES", &data_wakeup_bytes, true)
            .override_global("TP_OFFSETS", &offsets, true)
            .override_global("EXE_OFFSETS", &exe, true)
            .override_global("URING_OFFSETS", &uring, true)
            .override_global("WATCH_LENGTHS", &lengths, true)
            .map_max_entries("EVENTS", ring_buffer_bytes)
            .map_max_entries(TLS_CALLS_MAP, tls_calls_entries.max(1))
            .load(OBJECT)
            .map_err(|e| match permission_cause(&e) {
                Some(why) => LoadError::PermissionDenied(why),
                None => LoadError::Load(e),
            })?;
        let lost = ebpf.take_map("LOST").ok_or(LoadError::Missing("map LOST"))?;
        let lost = PerCpuArray::try_from(lost).map_err(|source| LoadError::Map { name: "LOST", source })?;
        let drops = ebpf.take_map(DROPS_MAP).ok_or(LoadError::Missing("map DROPS"))?;
        let drops = PerCpuArray::try_from(drops).map_err(|source| LoadError::Map { name: "DROPS", source })?;
        Ok(Self { ebpf, lost, drops, attached: Vec::new(), uring_offsets_valid: uring.valid != 0 })
    }

    /// Attaches fork, exec and exit tracepoints.
    pub fn attach_process_lifecycle(&mut self) -> Result<(), LoadError> {
        for (name, category, tracepoint) in PROCESS_PROGRAMS {
            let prog: &mut TracePoint = self.program(name)?;
            prog.load().map_err(|e| program_error(name, e))?;
            prog.attach(category, tracepoint).map_err(|e| program_error(name, e))?;
            self.attached.push(name);
        }
        Ok(())
    }

    /// Attaches the syscall tracepoints and loads (without attaching) the TLS uprobes.
    pub fn attach_tracing(&mut self, tracefs: &Path) -> Result<(), LoadError> {
        // The programs read syscall arguments at fixed 8-byte slots from offset 16.
        const LAYOUT: [(&str, &str, u32); 8] = [
            ("sys_enter_write", "fd", 16),
            ("sys_enter_write", "buf", 24),
            ("sys_enter_connect", "uservaddr", 24),
            ("sys_exit_connect", "ret", 16),
            ("sys_exit_openat", "ret", 16),
            ("sys_enter_writev", "vec", 24),
            ("sys_enter_writev", "vlen", 32),
            ("sys_enter_sendmsg", "msg", 24),
        ];
        for (tp, field, want) in LAYOUT {
            let format = std::fs::read_to_string(tracefs.join("events/syscalls").join(tp).join("format")).unwrap_or_default();
            if super::tracefs::field_offset(&format, field) != Some(want) {
                return Err(LoadError::Layout(format!("{tp}.{field}")));
            }
        }
        let mut loaded: Vec<&str> = Vec::new();
        for (name, tracepoint) in TRACE_PROGRAMS {
            // Not every kernel has every syscall (`open` is absent on arm64, `openat2`
            // before 5.6): what it lacks, no workload can call.
            if !tracefs.join("events/syscalls").join(tracepoint).exists() {
                tracing::info!("syscall tracepoint {tracepoint} is absent from this kernel; not traced");
                continue;
            }
            let prog: &mut TracePoint = self.program(name)?;
            if !loaded.contains(&name) {
                prog.load().map_err(|e| program_error(name, e))?;
                loaded.push(name);
            }
            prog.attach("syscalls", tracepoint).map_err(|e| program_error(name, e))?;
            self.attached.push(name);
        }
        self.attach_uring(tracefs);
        for name in TlsLibrary::ALL_PROGRAMS.into_iter().chain([GO_TLS_WRITE]) {
            let prog: &mut UProbe = self.program(name)?;
            prog.load().map_err(|e| program_error(name, e))?;
        }
        Ok(())
    }

    /// Opens, connects and writes submitted through io_uring never enter the syscalls:
    /// `sigil_uring_open` and `sigil_uring_net` see them as they are submitted. Best
    /// effort, with a line saying why when they cannot run (older kernels name the
    /// tracepoint and its fields differently; without BTF a request's data cannot be
    /// found): the rest of tracing does not depend on them.
    fn attach_uring(&mut self, tracefs: &Path) {
        let format = std::fs::read_to_string(tracefs.join("events/io_uring/io_uring_submit_req/format")).unwrap_or_default();
        let layout = [("req", 16), ("opcode", 32), ("flags", 40)].iter().all(|(field, at)| super::tracefs::field_offset(&format, field) == Some(*at));
        if !layout || !self.uring_offsets_valid {
            tracing::warn!(
                "credential files opened and plain HTTP sent through io_uring are not traced on this kernel (no io_uring_submit_req tracepoint of the known layout, or no io_uring layout in BTF)"
            );
            return;
        }
        for (name, what) in [("sigil_uring_open", "credential files opened"), ("sigil_uring_net", "plain HTTP sent")] {
            let attached = self.program::<TracePoint>(name).and_then(|prog| {
                prog.load().map_err(|e| program_error(name, e))?;
                prog.attach("io_uring", "io_uring_submit_req").map_err(|e| program_error(name, e))
            });
            match attached {
                Ok(_) => self.attached.push(name),
                Err(e) => tracing::warn!("{what} through io_uring are not traced: {e}"),
            }
        }
    }

    /// Attaches a TLS library's hooks at file offsets of the file at `path` (a path the
    /// agent can open, e.g. `/proc/self/fd/N` for the file whose code gave the offsets):
    /// each `(symbol, offset)` gets that symbol's entry and return programs. The offsets
    /// come from `trace::static_tls` and `trace::hook_site`.
    pub fn attach_at(&mut self, lib: TlsLibrary, path: &Path, offsets: &[(&str, u64)]) -> Result<LibraryLinks, LoadError> {
        self.attach_hooks(lib, path, |symbol| offsets.iter().find(|(s, _)| *s == symbol).map(|(_, o)| UProbeAttachLocation::AbsoluteOffset(*o)))
    }

    fn attach_hooks<'s>(
        &mut self,
        lib: TlsLibrary,
        path: &Path,
        at: impl Fn(&'static str) -> Option<UProbeAttachLocation<'s>>,
    ) -> Result<LibraryLinks, LoadError> {
        let mut links = Vec::new();
        let mut last_err = None;
        for (symbol, entry, ret) in lib.hooks() {
            for name in [*entry, *ret] {
                let Some(location) = at(symbol) else { continue };
                let prog: &mut UProbe = self.program(name)?;
                match prog.attach(location, path, UProbeScope::AllProcesses) {
                    Ok(id) => links.push((name, id)),
                    Err(e) => last_err = Some(program_error(name, e)),
                }
            }
        }
        match (links.is_empty(), last_err) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(LoadError::Missing("TLS write function in the file")),
            _ => Ok(LibraryLinks(links)),
        }
    }

    /// Attaches the Go crypto/tls write probe at `offset` (a file offset found in the
    /// binary's `.gopclntab`) of the executable at `path`.
    pub fn attach_go_tls(&mut self, path: &Path, offset: u64) -> Result<LibraryLinks, LoadError> {
        let prog: &mut UProbe = self.program(GO_TLS_WRITE)?;
        let id = prog.attach(offset, path, UProbeScope::AllProcesses).map_err(|e| program_error(GO_TLS_WRITE, e))?;
        Ok(LibraryLinks(vec![(GO_TLS_WRITE, id)]))
    }

    pub fn detach_library(&mut self, links: LibraryLinks) {
        for (name, id) in links.0 {
            if let Some(Ok(prog)) = self.ebpf.program_mut(name).map(<&mut UProbe>::try_from) {
                let _ = prog.detach(id);
            }
        }
    }

    /// Puts credential-file names on the kernel's watch list (`.aws/credentials`, `id_rsa`).
    pub fn watch_file_names<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> Result<(), LoadError> {
        let mut map: BpfHashMap<_, [u8; WATCH_NAME_LEN], u8> =
            BpfHashMap::try_from(self.ebpf.map_mut("WATCHED_NAMES").ok_or(LoadError::Missing("map WATCHED_NAMES"))?)
                .map_err(|source| LoadError::Map { name: "WATCHED_NAMES", source })?;
        for name in names {
            let mut key = [0u8; WATCH_NAME_LEN];
            let n = name.len().min(WATCH_NAME_LEN);
            key[..n].copy_from_slice(&name.as_bytes()[..n]);
            map.insert(key, 1, 0).map_err(|source| LoadError::Map { name: "WATCHED_NAMES", source })?;
        }
        Ok(())
    }

    /// Puts credential files on the kernel's identity list (`s_dev`, inode), so an open
    /// of one by any name is matched.
    pub fn watch_file_ids(&mut self, ids: impl IntoIterator<Item = (u64, u64)>) -> Result<(), LoadError> {
        let mut map: BpfHashMap<_, [u64; 2], u8> = BpfHashMap::try_from(self.ebpf.map_mut("WATCHED_INODES").ok_or(LoadError::Missing("map WATCHED_INODES"))?)
            .map_err(|source| LoadError::Map { name: "WATCHED_INODES", source })?;
        for (dev, ino) in ids {
            map.insert([dev, ino], 1, 0).map_err(|source| LoadError::Map { name: "WATCHED_INODES", source })?;
        }
        Ok(())
    }

    /// Stops copying plaintext writes of a socket (its first bytes showed it is not HTTP).
    pub fn stop_plain_capture(&mut self, tgid: u32, fd: i32) -> Result<(), LoadError> {
        let mut map: BpfHashMap<_, u64, u32> = BpfHashMap::try_from(self.ebpf.map_mut("CONNS").ok_or(LoadError::Missing("map CONNS"))?)
            .map_err(|source| LoadError::Map { name: "CONNS", source })?;
        let key = (u64::from(tgid) << 32) | u64::from(fd as u32);
        match map.insert(key, 0, 2 /* BPF_EXIST: only if still tracked */) {
            Ok(()) | Err(MapError::SyscallError(_)) => Ok(()),
            Err(source) => Err(LoadError::Map { name: "CONNS", source }),
        }
    }

    /// Lets the execs of this executable version go without a wakeup (read at the next
    /// poll tick): the caller knows it can attest them from the event alone.
    pub fn quiet_exec(&mut self, exe: &ExeIdentity) -> Result<(), LoadError> {
        let mut map: BpfHashMap<_, ExeIdentity, u8> = BpfHashMap::try_from(self.ebpf.map_mut(QUIET_EXES_MAP).ok_or(LoadError::Missing("map QUIET_EXES"))?)
            .map_err(|source| LoadError::Map { name: "QUIET_EXES", source })?;
        map.insert(*exe, 1, 0).map_err(|source| LoadError::Map { name: "QUIET_EXES", source })
    }

    /// Stops copying a TLS connection's writes (they are not requests).
    pub fn skip_tls(&mut self, tgid: u32, fd: i32, conn: u64) -> Result<(), LoadError> {
        let mut map: BpfHashMap<_, u64, u64> = BpfHashMap::try_from(self.ebpf.map_mut("TLS_SKIP").ok_or(LoadError::Missing("map TLS_SKIP"))?)
            .map_err(|source| LoadError::Map { name: "TLS_SKIP", source })?;
        let key = (u64::from(tgid) << 32) | u64::from(fd as u32);
        map.insert(key, conn, 0).map_err(|source| LoadError::Map { name: "TLS_SKIP", source })
    }

    /// Withdraws a TLS connection's response budget: its last POST was no credential
    /// exchange, so the kernel stops copying what the client reads on it.
    pub fn stop_response_capture(&mut self, tgid: u32, conn: u64) -> Result<(), LoadError> {
        let mut map: BpfHashMap<_, TlsConnKey, u64> =
            BpfHashMap::try_from(self.ebpf.map_mut(RESPONSE_WATCH_MAP).ok_or(LoadError::Missing("map RESPONSE_WATCH"))?)
                .map_err(|source| LoadError::Map { name: "RESPONSE_WATCH", source })?;
        match map.remove(&TlsConnKey { tgid, _pad: 0, conn }) {
            // Already gone: the budget ran out, or the LRU evicted it.
            Ok(()) | Err(MapError::SyscallError(_)) => Ok(()),
            Err(source) => Err(LoadError::Map { name: "RESPONSE_WATCH", source }),
        }
    }

    /// Takes the event ring buffer (once) for the reader task.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, LoadError> {
        let map = self.ebpf.take_map("EVENTS").ok_or(LoadError::Missing("map EVENTS"))?;
        RingBuf::try_from(map).map_err(|source| LoadError::Map { name: "EVENTS", source })
    }

    /// Everything the kernel side gave up on, per reason, summed over CPUs.
    pub fn drops(&self) -> Result<Vec<(DropReason, u64)>, LoadError> {
        (0..DROP_REASONS)
            .zip(DropReason::ALL)
            .map(|(i, reason)| self.drops.get(&i, 0).map(|v| (reason, v.iter().sum())).map_err(|source| LoadError::Map { name: "DROPS", source }))
            .collect()
    }

    /// Events the kernel side could not queue, per `EventKind::loss_slot`, summed over CPUs.
    pub fn lost(&self) -> Result<Vec<u64>, LoadError> {
        (0..8u32).map(|i| self.lost.get(&i, 0).map(|v| v.iter().sum()).map_err(|source| LoadError::Map { name: "LOST", source })).collect()
    }
}
