//! Who is on the other end of a Workload API connection, according to the kernel.
//!
//! SO_PEERCRED gives the pid that connected. A pid alone is racy: the caller can exit and
//! its pid be reused before we look it up (SPIRE documents this race). SO_PEERPIDFD
//! (Linux 6.5+) gives a pidfd bound to that exact process: while the pidfd still reports
//! the process alive, the pid has not been reused, so anything read from /proc/<pid>
//! before that check is about the caller.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::UnixStream,
};
use tonic::transport::server::Connected;

use super::h2_authority::AuthorityFix;

/// `SO_PEERPIDFD` from include/uapi/asm-generic/socket.h (not yet in every libc crate).
const SO_PEERPIDFD: libc::c_int = 77;

#[derive(Debug, Clone)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// None on kernels without SO_PEERPIDFD; then only the start-time check guards reuse.
    pub pidfd: Option<Arc<OwnedFd>>,
}

impl Peer {
    fn of(stream: &UnixStream) -> io::Result<Self> {
        let cred = stream.peer_cred()?;
        let pid = cred.pid().and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0).ok_or_else(|| {
            io::Error::new(io::ErrorKind::PermissionDenied, "peer pid is not visible from this pid namespace")
        })?;
        Ok(Self { pid, uid: cred.uid(), gid: cred.gid(), pidfd: peer_pidfd(stream).map(Arc::new) })
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
    let rc = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, SO_PEERPIDFD, (&mut fd as *mut libc::c_int).cast(), &mut len)
    };
    // SAFETY: on success the kernel returned a new fd that we now own.
    (rc == 0 && fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A Unix stream that remembers its peer, for tonic's `ConnectInfo`. Reads pass
/// through [`AuthorityFix`] so gRPC-core clients are understood (see that module).
pub struct PeerStream {
    io: AuthorityFix<UnixStream>,
    peer: Peer,
}

impl PeerStream {
    pub fn new(io: UnixStream) -> io::Result<Self> {
        let peer = Peer::of(&io)?;
        Ok(Self { io: AuthorityFix::new(io), peer })
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
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
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
    }

    /// A local unprivileged user's process exits after connecting: the pidfd must say so
    /// even though the agent could not signal it (another uid, no CAP_KILL needed).
    #[test]
    fn a_pidfd_of_another_uids_process_reads_alive_then_exited() {
        let mut child = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "30"])
            .spawn()
            .expect("setpriv sleep");
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
