//! Ring-buffer events.

/// Length of `task_struct::comm`, NUL-padded.
pub const COMM_LEN: usize = 16;
/// Bytes of an exec'd file name the kernel side copies. Longer names are cut and
/// flagged with [`ExecEvent::filename_truncated`]; user space then relies on
/// `/proc/<pid>/exe`, which is never truncated.
pub const PATH_LEN: usize = 256;

/// Event kind ids. Ranges are reserved per family (process 1..99, network 100..199,
/// credentials 200..299) and a retired id is never reused, so an old agent's spool
/// can still be decoded by a newer collector.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    Exit = 2,
    Connect = 100,
    Data = 101,
    FileOpen = 200,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Exec),
            2 => Some(Self::Exit),
            100 => Some(Self::Connect),
            101 => Some(Self::Data),
            200 => Some(Self::FileOpen),
            _ => None,
        }
    }

    /// Slot in the kernel's per-kind loss counters.
    pub fn loss_slot(self) -> u32 {
        match self {
            Self::Exec => 1,
            Self::Exit => 2,
            Self::Connect => 3,
            Self::Data => 4,
            Self::FileOpen => 5,
        }
    }
}

/// Bytes of each outbound write copied to user space: enough for request headers.
/// The true length travels with it, so user space can stay aligned past larger bodies.
pub const DATA_CAPTURE: usize = 4096;

/// Where captured application bytes came from.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// Plaintext handed to OpenSSL's SSL_write / SSL_write_ex.
    OpenSsl = 1,
    /// Plaintext handed to GnuTLS's gnutls_record_send.
    GnuTls = 2,
    /// A write()/sendto() on a connected TCP socket outside any TLS library call.
    PlainSocket = 3,
    /// Plaintext handed to Go's `crypto/tls.(*Conn).Write` (captured at entry).
    GoTls = 4,
    /// Plaintext returned by OpenSSL's SSL_read / SSL_read_ex: a response on a connection
    /// whose last request was a POST (see `RESPONSE_BUDGET`).
    OpenSslRead = 5,
    /// Plaintext returned by GnuTLS's gnutls_record_recv, likewise.
    GnuTlsRead = 6,
}

impl DataSource {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::OpenSsl),
            2 => Some(Self::GnuTls),
            3 => Some(Self::PlainSocket),
            4 => Some(Self::GoTls),
            5 => Some(Self::OpenSslRead),
            6 => Some(Self::GnuTlsRead),
            _ => None,
        }
    }
}

impl DataSource {
    /// Bytes the application read (a response), not wrote.
    pub fn is_read(self) -> bool {
        matches!(self, Self::OpenSslRead | Self::GnuTlsRead)
    }
}

/// Response bytes the kernel copies per TLS connection after each POST the client writes
/// on it (HTTP/1 `POST `): enough for a token endpoint's answer (an STS response is about
/// 1.5 KiB), and a bound on what a connection's other responses can cost. User space
/// stops it early when the POST was not a credential exchange.
pub const RESPONSE_BUDGET: u64 = 16 * 1024;

/// Name of the map of response budgets (`TlsConnKey` -> bytes still to copy).
pub const RESPONSE_WATCH_MAP: &str = "RESPONSE_WATCH";

/// Name of the map of executable versions (`ExeIdentity` as the exec program reads it)
/// whose execs need nothing read from the live process: their exec events are submitted
/// without a wakeup (see the agent's `Probes::quiet_exec`).
pub const QUIET_EXES_MAP: &str = "QUIET_EXES";

/// A TLS connection of a process: its tgid and the library's connection object
/// (`SSL*`, `gnutls_session_t`). Key of `TLS_FDS` and `RESPONSE_WATCH`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsConnKey {
    pub tgid: u32,
    pub _pad: u32,
    pub conn: u64,
}

/// An outbound connect() that succeeded or is in progress.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectEvent {
    pub header: EventHeader,
    pub fd: i32,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub addr: [u8; 16],
    /// 0, or -EINPROGRESS for a non-blocking connect.
    pub result: i32,
    pub _pad0: u32,
}

/// The first bytes of one outbound write.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEvent {
    pub header: EventHeader,
    /// The TLS connection object (SSL*, gnutls_session_t or Go's *tls.Conn), 0 for plain
    /// sockets.
    pub conn: u64,
    /// The write's true length (may exceed `captured`).
    pub len: u64,
    /// Socket fd, -1 when the TLS library wrote through something we did not see.
    pub fd: i32,
    /// A [`DataSource`] as u32.
    pub source: u32,
    /// Valid bytes in `data`.
    pub captured: u32,
    pub _pad0: u32,
    pub data: [u8; DATA_CAPTURE],
}

/// An open() of a credential file, sent when the open returns: either the name passed
/// was on the watch list ([`OPEN_BY_NAME`]), or the file opened is one the kernel already
/// knows as a credential file by its inode ([`OPEN_BY_IDENTITY`]: a link to it, a
/// relative or unusually spelled name).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileOpenEvent {
    pub header: EventHeader,
    pub flags: i32,
    pub filename_len: u16,
    /// [`OPEN_BY_NAME`], [`OPEN_BY_IDENTITY`] or [`OPEN_BY_NAME_IO_URING`].
    pub matched: u16,
    /// The open's result: the fd, or a negative errno (the file was not opened).
    pub ret: i32,
    pub _pad0: u32,
    /// The opened file's `super_block.s_dev` and inode (0 when the open failed).
    pub dev: u64,
    pub ino: u64,
    /// The name passed to open (empty for [`OPEN_BY_IDENTITY`]).
    pub filename: [u8; PATH_LEN],
}

/// The name passed to open() was on the watch list.
pub const OPEN_BY_NAME: u16 = 0;
/// The name was not, but the file opened is a known credential file (its inode).
pub const OPEN_BY_IDENTITY: u16 = 1;
/// The name given to an io_uring open request (`IORING_OP_OPENAT`/`OPENAT2`) was on the
/// watch list; sent when the request is submitted, before its result (`ret` 0).
pub const OPEN_BY_NAME_IO_URING: u16 = 2;
/// Credential-file inodes the kernel knows (learnt from opens by name, and from the
/// agent's scan of well-known places).
pub const WATCHED_INODES_ENTRIES: u32 = 8192;

/// Length of a watched name key (NUL-padded): room for the longest name on the watch
/// list (`application_default_credentials.json`, 36 bytes). At most 64, the bits of
/// the kernel's length mask.
pub const WATCH_NAME_LEN: usize = 40;

/// First field of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] as u32 (an enum would let a corrupt value be undefined behaviour).
    pub kind: u32,
    /// Thread-group id (what user space calls the pid).
    pub pid: u32,
    /// `bpf_ktime_get_boot_ns()` when the event was produced: comparable with process
    /// start times from procfs, which count from boot too.
    pub boot_ns: u64,
    /// cgroup v2 id (`bpf_get_current_cgroup_id`), the inode of the cgroup directory.
    pub cgroup_id: u64,
    /// When the process started (`task->group_leader->start_boottime`, ns since boot), 0
    /// when the kernel's layout is unknown. With the pid it names the process instance
    /// exactly: procfs's start time is this value in clock ticks, so user space can tell
    /// whether its record is of this very process without reading /proc on every event.
    pub start_ns: u64,
}

/// A successful `execve`/`execveat`, seen at `sched_process_exec`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Parent tgid recorded at fork time; 0 when the fork predates the agent.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of `filename` that are valid (without the NUL).
    pub filename_len: u16,
    /// 1 when the kernel's name was longer than [`PATH_LEN`] - 1.
    pub filename_truncated: u8,
    /// 1 when the executable was in [`QUIET_EXES_MAP`]: submitted without waking the agent.
    pub quiet: u8,
    /// `bpf_ktime_get_boot_ns()` at the fork that created this process; 0 if unknown.
    pub fork_boot_ns: u64,
    /// The executed file as the kernel knew it at exec (the hash-cache key), when the
    /// agent found the kernel's struct layouts in BTF.
    pub exe: ExeIdentity,
    pub comm: [u8; COMM_LEN],
    pub filename: [u8; PATH_LEN],
}

/// What `task->mm->exe_file->f_inode` said at exec: the identity and version of the
/// file that now runs, read in the exec program so that a hash-cache hit needs no procfs
/// read. `source` says whether the kernel filled it in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExeIdentity {
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub ctime_sec: i64,
    pub mtime_nsec: u32,
    pub ctime_nsec: u32,
    /// `super_block.s_dev`, the kernel's internal encoding (major << 20 | minor).
    pub dev: u32,
    /// An [`ExeSource`] as u32.
    pub source: u32,
}

/// Where the exec event's [`ExeIdentity`] came from.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExeSource {
    /// Not filled in (no BTF offsets, or a read failed): user space stats the file
    /// through `/proc/<pid>/exe`.
    Procfs = 0,
    /// Read by the exec program from the kernel's inode.
    Kernel = 1,
}

impl ExeIdentity {
    /// Major and minor of `dev` (the kernel's internal `dev_t` has a 20-bit minor).
    pub fn major_minor(&self) -> (u32, u32) {
        (self.dev >> 20, self.dev & 0xf_ffff)
    }

    pub fn from_kernel(&self) -> bool {
        self.source == ExeSource::Kernel as u32
    }
}

/// The last thread of a process has exited (`sched_process_exit` with `group_dead`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub _pad0: u32,
    pub _pad1: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data: repr(C), integers and byte arrays only, every byte initialised.
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::ExecEvent {}
    unsafe impl aya::Pod for super::ExeIdentity {}
    unsafe impl aya::Pod for super::ExitEvent {}
    unsafe impl aya::Pod for super::ConnectEvent {}
    unsafe impl aya::Pod for super::DataEvent {}
    unsafe impl aya::Pod for super::FileOpenEvent {}
    unsafe impl aya::Pod for super::TlsConnKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    /// Any implicit padding would show up as a size that is not the sum of the fields.
    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<EventHeader>(), 4 + 4 + 8 + 8 + 8);
        assert_eq!(size_of::<ExeIdentity>(), 8 * 4 + 4 * 4);
        assert_eq!(size_of::<ExecEvent>(), 32 + 4 * 3 + 2 + 1 + 1 + 8 + 48 + COMM_LEN + PATH_LEN);
        assert_eq!(size_of::<ExitEvent>(), 32 + 8);
        assert_eq!(size_of::<ConnectEvent>(), 32 + 4 + 2 + 2 + 16 + 4 + 4);
        assert_eq!(size_of::<DataEvent>(), 32 + 8 + 8 + 4 + 4 + 4 + 4 + DATA_CAPTURE);
        assert_eq!(size_of::<FileOpenEvent>(), 32 + 4 + 2 + 2 + 4 + 4 + 8 + 8 + PATH_LEN);
        assert_eq!(align_of::<ExecEvent>(), 8);
        assert_eq!(size_of::<TlsConnKey>(), 4 + 4 + 8);
    }

    #[test]
    fn kind_ids_round_trip_and_unknown_is_rejected() {
        for k in [EventKind::Exec, EventKind::Exit, EventKind::Connect, EventKind::Data, EventKind::FileOpen] {
            assert_eq!(EventKind::from_u32(k as u32), Some(k));
        }
        assert_eq!(EventKind::from_u32(0), None);
        assert_eq!(EventKind::from_u32(999), None);
    }

    #[test]
    fn data_sources_round_trip_and_unknown_is_rejected() {
        for s in [DataSource::OpenSsl, DataSource::GnuTls, DataSource::PlainSocket, DataSource::GoTls] {
            assert_eq!(DataSource::from_u32(s as u32), Some(s));
        }
        assert_eq!(DataSource::GoTls as u32, 4);
        assert_eq!(DataSource::from_u32(0), None);
        assert_eq!(DataSource::from_u32(99), None);
    }
}
