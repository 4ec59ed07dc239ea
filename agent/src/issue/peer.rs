//! Who is on the other end of a Workload API connection, according to the kernel.
//!
//! SO_PEERCRED gives the pid that connected. A pid alone is racy: the caller can exit and
//! its pid be reused before we look it up (SPIRE documents this race). SO_PEERPIDFD
//! (Linux 6.5+) gives a pidfd bound to that exact process: while the pidfd still reports
//! the process alive, the pid has not been reused, so anything read from /proc/<pid>
//! before that check is about the caller.
//!
//! SO_PEERCRED names the process that called connect(), and it stays fixed for the life of
//! the connection, whoever holds the socket later: a child that inherited it across
//! fork, or a process it was sent to with SCM_RIGHTS, speaks with the connector's identity
//! (while the connector lives: once it exits, requests are refused). Passing a connection
//! on is the connector delegating its identity, which it could equally do by handing over
//! a token. What it must not allow is a process *becoming* someone else after it
//! connected: an unregistered program connects, forks, and then execs a registered
//! binary, and the child asks over the inherited connection. So the connector's exec is
//! bound at accept ([`ExecIdentity`]) and every request checks it is still the same.

use std::{
    ffi::{CStr, CString},
    fs,
    future::Future,
    io::{self, Read},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::FileExt,
    },
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::UnixStream,
    time::{Instant, Sleep},
};
use tonic::transport::server::Connected;
use tracing::warn;

use super::{
    h2_authority::{AuthorityFix, Refused},
    limits::Slot,
};
use crate::attest::{cgroup, procstat, record::ProcessRecord};

/// `SO_PEERPIDFD` from include/uapi/asm-generic/socket.h (not yet in every libc crate).
const SO_PEERPIDFD: libc::c_int = 77;

/// `AT_RANDOM` in the auxiliary vector: the address of 16 bytes the kernel fills with
/// fresh random data on the new stack at every exec.
const AT_RANDOM: u64 = 25;

/// `/proc/<pid>` of the process that connected, opened once at accept. procfs ties an
/// open pid directory to its process: once that process is reaped, every lookup beneath
/// it fails, so nothing read through it can be about a pid successor. Reading through it
/// also spares each request's checks the path walks from `/proc`.
#[derive(Debug)]
pub struct ProcDir(OwnedFd);

impl ProcDir {
    pub fn open(pid: u32) -> io::Result<Self> {
        let path = CString::new(format!("/proc/{pid}")).map_err(io::Error::other)?;
        // SAFETY: a NUL-terminated path; the result is a new fd we then own.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new fd.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn open_file(&self, name: &CStr) -> io::Result<fs::File> {
        // SAFETY: a valid directory fd and a NUL-terminated name; the result is ours.
        let fd = unsafe { libc::openat(self.0.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new fd.
        Ok(unsafe { fs::File::from_raw_fd(fd) })
    }

    fn read(&self, name: &CStr) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(512);
        self.open_file(name)?.read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// (device, inode) of the file `name` links to (`exe`).
    fn target_id(&self, name: &CStr) -> io::Result<(u64, u64)> {
        // SAFETY: an all-zero stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid directory fd, a NUL-terminated name, a stat-sized out-pointer.
        if unsafe { libc::fstatat(self.0.as_raw_fd(), name.as_ptr(), &mut st, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.st_dev, st.st_ino))
    }

    /// The bytes at `AT_RANDOM` of the exec the process runs now. The address comes from
    /// the auxiliary vector the kernel keeps for this exec (a process cannot rewrite it),
    /// never from an earlier reading: an exec's argv and environment are the caller's to
    /// fill, and without address randomisation they could lay a former exec's bytes out
    /// at the former address.
    fn exec_nonce(&self) -> Option<[u8; 16]> {
        let auxv = self.read(c"auxv").ok()?;
        let word = |b: &[u8]| b.try_into().map(u64::from_ne_bytes).unwrap_or_default();
        let addr = auxv
            .chunks_exact(16)
            .map(|kv| (word(&kv[..8]), word(&kv[8..])))
            .take_while(|&(key, _)| key != 0)
            .find_map(|(key, value)| (key == AT_RANDOM).then_some(value))?;
        let mut bytes = [0u8; 16];
        self.open_file(c"mem").ok()?.read_exact_at(&mut bytes, addr).ok()?;
        Some(bytes)
    }
}

/// Which exec of which process: what the kernel says a process is running, read from
/// procfs. Two readings are equal only if no exec happened in between.
///
/// The start time names the process across pid reuse; the executable's inode and the
/// cgroup name what runs and where, as in the attested record. They do not change when a
/// process re-execs the same file (an interpreter running another script does exactly
/// that), so the per-exec random bytes the kernel puts on every new stack (`AT_RANDOM`,
/// read through /proc/<pid>/mem; the agent's CAP_SYS_PTRACE allows it) are compared too:
/// no program can predict the bytes of an exec that has not happened yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecIdentity {
    pub start_ticks: u64,
    /// (device, inode) of /proc/<pid>/exe.
    pub exe: Option<(u64, u64)>,
    pub cgroup: Option<String>,
    /// None where /proc/<pid>/mem cannot be read (no CAP_SYS_PTRACE); then the fields
    /// above are all that is compared.
    pub exec_nonce: Option<[u8; 16]>,
}

impl ExecIdentity {
    /// Reads what `pid` runs now. Fails if the process is gone.
    pub fn read(pid: u32) -> io::Result<Self> {
        Self::read_in(&ProcDir::open(pid)?)
    }

    /// Reads what the process behind `dir` runs now. Fails once it has been reaped.
    fn read_in(dir: &ProcDir) -> io::Result<Self> {
        let start_ticks = procstat::parse(&dir.read(c"stat")?).ok_or_else(|| io::Error::other("unreadable stat"))?.starttime;
        let exe = dir.target_id(c"exe").ok();
        let cgroup = dir.read(c"cgroup").ok().and_then(|t| cgroup::v2_path_from_proc(&String::from_utf8_lossy(&t)));
        let exec_nonce = dir.exec_nonce();
        Ok(Self { start_ticks, exe, cgroup, exec_nonce })
    }

    /// True if `rec` was attested from this exec: the same start time, executable inode
    /// and cgroup (what [`crate::attest::Attestor::still_same`] re-reads from procfs).
    pub fn describes(&self, rec: &ProcessRecord) -> bool {
        rec.start_ticks == self.start_ticks && rec.binary.inode == self.exe.map(|(_, ino)| ino) && rec.cgroup.path == self.cgroup
    }
}

#[derive(Debug, Clone)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// None on kernels without SO_PEERPIDFD; then only the start-time check guards reuse.
    pub pidfd: Option<Arc<OwnedFd>>,
    /// The connector's procfs directory, which every later reading goes through.
    dir: Arc<ProcDir>,
    /// What the connecting process was running when its connection was accepted.
    pub at_accept: ExecIdentity,
}

impl Peer {
    pub fn of(stream: &UnixStream) -> io::Result<Self> {
        let cred = stream.peer_cred()?;
        let pid = cred
            .pid()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "peer pid is not visible from this pid namespace"))?;
        let pidfd = peer_pidfd(stream).map(Arc::new);
        let unreadable = |e: io::Error| io::Error::new(io::ErrorKind::PermissionDenied, format!("pid {pid} could not be read: {e}"));
        let dir = ProcDir::open(pid).map_err(unreadable)?;
        let at_accept = ExecIdentity::read_in(&dir).map_err(unreadable)?;
        Ok(Self { pid, uid: cred.uid(), gid: cred.gid(), pidfd, dir: Arc::new(dir), at_accept })
    }

    /// True while the connecting process still runs the exec it ran when its connection
    /// was accepted. False once it exec'd anything (even the same file again), exited, or
    /// its pid names another process.
    pub fn same_exec_as_at_accept(&self) -> bool {
        ExecIdentity::read_in(&self.dir).is_ok_and(|now| now == self.at_accept)
    }

    /// False once the process that connected has exited (its pid may then be reused).
    /// Without a pidfd this cannot tell, and says true: callers re-check the start time.
    ///
    /// A pidfd becomes readable (POLLIN) when its process exits. Polling needs no
    /// permission over the process, unlike `pidfd_send_signal(0)`, which fails with EPERM
    /// for a caller of another uid unless the agent holds CAP_KILL (the DaemonSet does
    /// not, and should not: the agent never signals workloads).
    pub fn still_alive(&self) -> bool {
        match &self.pidfd {
            Some(fd) => pidfd_alive(fd.as_raw_fd()),
            None => true,
        }
    }
}

/// True while the process behind `pidfd` has not exited. An error other than EINTR is
/// answered "not alive": refusing a token is the safe side.
fn pidfd_alive(pidfd: libc::c_int) -> bool {
    let mut pfd = libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: one valid pollfd; a zero timeout never blocks.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        if rc >= 0 {
            return rc == 0 || pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) == 0;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

fn peer_pidfd(stream: &UnixStream) -> Option<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid socket fd, out-pointers sized for a c_int.
    let rc = unsafe { libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, SO_PEERPIDFD, (&mut fd as *mut libc::c_int).cast(), &mut len) };
    // SAFETY: on success the kernel returned a new fd that we now own.
    (rc == 0 && fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A Unix stream that remembers its peer, for tonic's `ConnectInfo`. Reads pass
/// through [`AuthorityFix`] so gRPC-core clients are understood (see that module). It
/// holds its connection [`Slot`], and fails its reads once the peer has sent nothing for
/// the idle time, so the server closes it.
pub struct PeerStream {
    io: AuthorityFix<UnixStream>,
    peer: Peer,
    _slot: Option<Slot>,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl PeerStream {
    /// Identifies the peer of a freshly accepted connection (binding its exec now) and
    /// wraps the stream; `slot` is its place under the connection limits.
    pub fn new(io: UnixStream, slot: Option<Slot>, idle: Duration) -> io::Result<Self> {
        let peer = Peer::of(&io)?;
        Ok(Self { io: AuthorityFix::new(io), peer, _slot: slot, idle, deadline: Box::pin(tokio::time::sleep(idle)) })
    }
}

impl Connected for PeerStream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut me.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    me.deadline.as_mut().reset(Instant::now() + me.idle);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                if let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<Refused>()) {
                    warn!(pid = me.peer.pid, uid = me.peer.uid, "closing a Workload API connection: {r}");
                }
                Poll::Ready(Err(e))
            }
            Poll::Pending => match me.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    warn!(pid = me.peer.pid, uid = me.peer.uid, "closing a Workload API connection that sent nothing for {} s", me.idle.as_secs());
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "Workload API connection idle")))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_pair_reports_this_process_and_a_live_pidfd() {
        let (a, _b) = UnixStream::pair().expect("pair");
        let peer = Peer::of(&a).expect("peer");
        assert_eq!(peer.pid, std::process::id());
        assert!(peer.pidfd.is_some(), "kernel 6.5+ provides SO_PEERPIDFD");
        assert!(peer.still_alive());
        assert!(peer.same_exec_as_at_accept());
        assert!(peer.at_accept.exec_nonce.is_some(), "root reads AT_RANDOM through /proc/<pid>/mem");
    }

    #[test]
    fn the_exec_nonce_is_the_bytes_the_kernel_gave_this_exec() {
        // SAFETY: getauxval has no preconditions; AT_RANDOM points at 16 readable bytes.
        let expected = unsafe { *(libc::getauxval(libc::AT_RANDOM) as *const [u8; 16]) };
        let me = ExecIdentity::read(std::process::id()).expect("read");
        assert_eq!(me.exec_nonce, Some(expected));
        assert!(me.exe.is_some() && me.cgroup.is_some());
    }

    /// Whoever later holds the pid, a reading through the connector's directory never
    /// answers for it: the directory is bound to the process it was opened for.
    #[test]
    fn a_reaped_process_cannot_be_read_through_its_directory() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let dir = ProcDir::open(child.id()).expect("open");
        assert!(ExecIdentity::read_in(&dir).is_ok());
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert!(ExecIdentity::read_in(&dir).is_err(), "a reaped process read as alive");
    }

    #[test]
    fn a_process_that_execs_the_same_file_again_reads_differently() {
        use std::io::Write;
        // One process, one pid, one start time: a shell that waits, then execs the same
        // shell binary again (as an interpreter starting another script would).
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "read _; exec /bin/sh -c 'read _' second"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        let cmdline = || fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let wait_for_argv = |argv: &str| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while cmdline() != argv {
                assert!(std::time::Instant::now() < deadline, "the shell never exec'd {argv:?}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // `spawn` returns once the exec is past its point of no return, which is before the
        // kernel has written the new stack (the auxiliary vector, `AT_RANDOM`, then argv).
        // The argv being readable means the exec is complete.
        wait_for_argv("/bin/sh\0-c\0read _; exec /bin/sh -c 'read _' second\0");
        let first = ExecIdentity::read(pid).expect("read");
        assert_eq!(ExecIdentity::read(pid).expect("read again"), first, "no exec, same reading");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("write");
        // The new argv exactly (the first shell's own argv mentions `second` too).
        wait_for_argv("/bin/sh\0-c\0read _\0second\0");
        let second = ExecIdentity::read(pid).expect("read after exec");
        assert_eq!((second.start_ticks, second.exe, &second.cgroup), (first.start_ticks, first.exe, &first.cgroup));
        assert_ne!(second, first, "the exec is told apart by its AT_RANDOM bytes");
        drop(stdin);
        let _ = child.wait();
    }

    /// A local unprivileged user's process exits after connecting: the pidfd must say so
    /// even though the agent could not signal it (another uid, no CAP_KILL needed).
    #[test]
    fn a_pidfd_of_another_uids_process_reads_alive_then_exited() {
        let mut child =
            std::process::Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "30"]).spawn().expect("setpriv sleep");
        let pid = child.id() as libc::pid_t;
        // SAFETY: pidfd_open on our own child; the result is a new fd we then own.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
        assert!(raw >= 0, "pidfd_open: {}", io::Error::last_os_error());
        // SAFETY: the kernel returned a new fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        assert!(pidfd_alive(fd.as_raw_fd()));
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert!(!pidfd_alive(fd.as_raw_fd()));
    }
}
