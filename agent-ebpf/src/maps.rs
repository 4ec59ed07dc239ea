//! Maps and load-time globals shared by every program.

use aya_ebpf::maps::HashMap;
use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
};
use sigil_agent_common::{
    DATA_CAPTURE, DROP_REASONS, DataEvent, DropReason, ExeIdentity, ExeOffsets, FileOpenEvent, TLS_CALLS_ENTRIES, TracepointOffsets, UringOffsets,
    WATCH_NAME_LEN, WATCHED_INODES_ENTRIES,
};

/// All events go through one ring buffer so user space sees them in kernel order.
/// The size is overridden by the loader (`--ring-buffer-bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Unread bytes in [`EVENTS`] from which a data event wakes the agent at once (set by
/// the loader to a fraction of the ring). Below it, data events are submitted without a
/// wakeup and read at the agent's next poll tick: a keep-alive client's every request
/// would otherwise cost a cross-CPU interrupt and a context switch. Process events always
/// wake the agent (attestation races the process's exit).
#[unsafe(no_mangle)]
pub static DATA_WAKEUP_BYTES: Global<u64> = Global::new(0);

/// Submission flags for a data event: see [`DATA_WAKEUP_BYTES`].
#[inline(always)]
pub fn data_wakeup_flags() -> u64 {
    use aya_ebpf_bindings::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    let threshold = DATA_WAKEUP_BYTES.load();
    if threshold == 0 || EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= threshold { BPF_RB_FORCE_WAKEUP as u64 } else { BPF_RB_NO_WAKEUP as u64 }
}

/// Events dropped because [`EVENTS`] was full, indexed by `EventKind::loss_slot`.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);
pub const LOST_SLOTS: u32 = 8;

/// What the kernel told us at fork: tid of the new task -> parent and when.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ForkInfo {
    pub ppid: u32,
    pub _pad: u32,
    pub boot_ns: u64,
}

/// LRU so a missed exit (or a thread we never see exit) can never fill the map.
#[map]
pub static FORKS: LruHashMap<u32, ForkInfo> = LruHashMap::with_max_entries(65536, 0);

#[unsafe(no_mangle)]
pub static TP_OFFSETS: Global<TracepointOffsets> = Global::new(TracepointOffsets { valid: 0, exec_filename: 0, fork_child_pid: 0, exit_group_dead: 0 });

/// Where the exec program finds the executable's inode: computed by the agent from this
/// kernel's BTF and written into read-only data at load (`valid` 0: not read).
#[unsafe(no_mangle)]
pub static EXE_OFFSETS: Global<ExeOffsets> = Global::new(ExeOffsets {
    valid: 0,
    task_mm: 0,
    mm_exe_file: 0,
    file_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    inode_size: 0,
    inode_mtime_sec: 0,
    inode_mtime_nsec: 0,
    inode_ctime_sec: 0,
    inode_ctime_nsec: 0,
    sb_dev: 0,
    task_group_leader: 0,
    task_start_boottime: 0,
    task_files: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    fdtable_max_fds: 0,
    file_flags: 0,
});

/// Where the io_uring program finds an open request's path: from this kernel's BTF,
/// written at load (`valid` 0: the program does nothing).
#[unsafe(no_mangle)]
pub static URING_OFFSETS: Global<UringOffsets> = Global::new(UringOffsets {
    valid: 0,
    kiocb_cmd: 0,
    open_filename: 0,
    open_how_flags: 0,
    filename_name: 0,
    kiocb_fd: 0,
    sr_buf: 0,
    sr_len: 0,
    rw_addr: 0,
    rw_len: 0,
    connect_addr: 0,
    close_fd: 0,
    close_file_slot: 0,
});

/// Everything the kernel side gave up on, by [`DropReason`] (user space sums the CPUs).
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASONS, 0);

/// Counts one loss of `reason`.
#[inline(always)]
pub fn count_drop(reason: DropReason) {
    if let Some(slot) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
}

/// Counts an event that could not be reserved in the ring buffer.
#[inline(always)]
pub fn count_lost(kind: u32) {
    if let Some(slot) = LOST.get_ptr_mut(kind % LOST_SLOTS) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
    count_drop(DropReason::RingBufferFull);
}

// === credential-use tracing ===

/// Key of a socket: `tgid << 32 | fd`.
#[inline(always)]
pub fn sock_key(tgid: u32, fd: i32) -> u64 {
    ((tgid as u64) << 32) | (fd as u32 as u64)
}

/// Connected TCP sockets; value 1 = capture plaintext writes, 0 = known but not HTTP
/// (user space clears it after seeing the first bytes, so TLS ciphertext and other
/// protocols cost one lookup per write and nothing more).
#[map]
pub static CONNS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);

/// connect() arguments between sys_enter and sys_exit, by pid_tgid.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingConnect {
    pub fd: i32,
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 16],
}

#[map]
pub static PENDING_CONNECT: HashMap<u64, PendingConnect> = HashMap::with_max_entries(8192, 0);

/// A TLS write in progress on a thread (pid_tgid): arguments saved at entry, the fd
/// filled in by the socket syscall the library makes, emitted at return.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    pub conn: u64,
    pub buf: u64,
    pub len: u64,
    /// SSL_write_ex's `size_t *written`, else 0.
    pub written: u64,
    pub fd: i32,
    pub source: u32,
}

/// LRU, keyed by thread: a thread that dies (or blocks forever) inside a TLS write never
/// reaches the return probe, and with a plain hash map its entry stayed until the map was
/// full and every later TLS write went uncaptured. Now the oldest entry makes room, and a
/// call that finds its entry gone on return is counted (`DropReason::TlsCallLost`). The
/// loader may resize it (`--tls-calls-entries`).
#[map]
pub static TLS_CALLS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(TLS_CALLS_ENTRIES, 0);

/// Last socket fd seen under a TLS connection object, for writes that the library
/// buffers and flushes later. Key: tgid and the object's address.
pub use sigil_agent_common::TlsConnKey;

#[map]
pub static TLS_FDS: LruHashMap<TlsConnKey, i32> = LruHashMap::with_max_entries(65536, 0);

/// A TLS read in progress on a thread (pid_tgid), emitted at return. Apart from
/// [`TLS_CALLS`] so a read and a write of one thread (a library reading inside
/// SSL_write, an application interleaving) never overwrite each other's arguments.
#[map]
pub static TLS_READS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(TLS_CALLS_ENTRIES, 0);

/// Response bytes still to copy per TLS connection: set to `RESPONSE_BUDGET` when the
/// client writes a `POST ` on it, counted down by each read, deleted by user space as
/// soon as it sees the POST was no credential exchange. Connections without an entry
/// cost one lookup per read and copy nothing.
#[map]
pub static RESPONSE_WATCH: LruHashMap<TlsConnKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// Executable versions whose execs user space attests from the event alone (it knows
/// their digest by the kernel's identity, and they run no script): their exec events wait
/// for the agent's next poll tick instead of waking it. In an exec-heavy workload (a CI
/// runner's shells and compilers) that is most execs, and the wakeups were most of the
/// agent's cost. LRU: a forgotten version only costs a wakeup.
#[map]
pub static QUIET_EXES: LruHashMap<ExeIdentity, u8> = LruHashMap::with_max_entries(8192, 0);

/// TLS connections whose writes are not requests (a server's responses), set by user
/// space after the first write: `sock_key(tgid, fd)` -> the TLS object. Cleared on close,
/// and only honoured while the fd still carries the same TLS object.
#[map]
pub static TLS_SKIP: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// Threads whose TLS write the entry probe let go on a [`TLS_SKIP`]ped connection, so
/// that the return probe, finding no [`TLS_CALLS`] entry, knows it was not lost: slot
/// `tid % SKIPPED_SLOTS` holds that thread's pid_tgid. An array, not a hash map: the
/// point is to spare a busy server's every response write a map insert and delete. Two
/// threads sharing a slot at the same moment can only make a skip count as a loss.
#[map]
pub static TLS_SKIPPED_CALLS: Array<u64> = Array::with_max_entries(SKIPPED_SLOTS, 0);
pub const SKIPPED_SLOTS: u32 = 65536;

/// Base names of credential files (NUL-padded), filled by user space.
#[map]
pub static WATCHED_NAMES: HashMap<[u8; WATCH_NAME_LEN], u8> = HashMap::with_max_entries(256, 0);

/// The agent's own process id (set by the loader): its own opens, several per exec it
/// attests, are not a workload's and cost the open programs nothing.
#[unsafe(no_mangle)]
pub static AGENT_TGID: Global<u32> = Global::new(0);

/// Bit `l - 1` set when some watched name is `l` bytes long (set by the loader).
#[unsafe(no_mangle)]
pub static WATCH_LENGTHS: Global<u64> = Global::new(0);

/// Per-CPU scratch for an open() candidate, so unwatched opens never touch the ring buffer.
#[map]
pub static OPEN_SCRATCH: PerCpuArray<FileOpenEvent> = PerCpuArray::with_max_entries(1, 0);

/// Opens of a watched name between their entry and their return, by thread id: the
/// event is sent at the return, with the identity of the file opened.
#[map]
pub static OPENS_BY_NAME: HashMap<u32, FileOpenEvent> = HashMap::with_max_entries(4096, 0);

/// (`s_dev`, inode) of known credential files: every file opened by a watched name is
/// added at its open's return; the agent adds what its scan finds.
#[map]
pub static WATCHED_INODES: HashMap<[u64; 2], u8> = HashMap::with_max_entries(WATCHED_INODES_ENTRIES, 0);

/// A data event with room behind it, so writev/sendmsg can copy iovec after iovec at a
/// variable offset: each copy starts below `DATA_CAPTURE` and is at most `DATA_CAPTURE`
/// long, which the verifier can check against this size without knowing the sum.
#[repr(C)]
pub struct IovScratch {
    pub ev: DataEvent,
    pub spill: [u8; DATA_CAPTURE],
}

#[map]
pub static IOV_SCRATCH: PerCpuArray<IovScratch> = PerCpuArray::with_max_entries(1, 0);
