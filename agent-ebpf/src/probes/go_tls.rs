//! Go crypto/tls plaintext: a uprobe on `crypto/tls.(*Conn).Write`.
//!
//! Go links its TLS into each binary, so user space finds the function in the binary's
//! `.gopclntab` and attaches here (agent/src/trace/golang.rs). Two Go-specific rules:
//!
//! - Arguments follow Go's register ABI (ABIInternal, amd64, Go 1.17+): the receiver
//!   `*tls.Conn` in RAX, the slice `b` as pointer/len/cap in RBX/RCX/RDI.
//! - Everything is captured at entry. A uretprobe rewrites the return address on the
//!   goroutine's stack, which Go may move (stack growth copies it) and then crashes; so
//!   there is no return probe, and the length is what the caller asked to write.
//!
//! The socket fd is read from the connection itself rather than learnt from the next
//! write syscall on the thread (as the OpenSSL path does): a goroutine can move to another
//! thread inside `Write` (it blocks on the connection's lock, or is preempted), and another
//! goroutine's write on the first thread would then lend this data a wrong fd. The chain
//! `tls.Conn.conn` (a `net.Conn` interface, data word at +8) -> `*net.TCPConn` (its
//! embedded `conn.fd *netFD` at +0) -> `netFD.pfd.Sysfd` (+16, after poll.FD's 16-byte
//! `fdMutex`) is read from Go 1.19's sources (the version tested). The fd is only trusted
//! when it names a socket this process connect()ed (the CONNS map): a wrapped net.Conn (a
//! proxy dialer, a test harness) or a future layout change reads as no fd (-1, the
//! destination is then unknown) instead of another socket's.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};
use sigil_agent_common::DataSource;

use super::net::emit_data;
use crate::maps::{CONNS, TLS_SKIP, sock_key};

/// Offset of the data word of the `net.Conn` interface `tls.Conn.conn` (first field).
const TLS_CONN_NETCONN_DATA: u64 = 8;
/// Offset of `fd *netFD` in `net.TCPConn` (its embedded `conn` struct's only field).
const TCPCONN_NETFD: u64 = 0;
/// Offset of `pfd.Sysfd` in `net.netFD` (`poll.FD` starts with a 16-byte fdMutex).
const NETFD_SYSFD: u64 = 16;

#[uprobe]
pub fn sigil_go_tls_write(ctx: ProbeContext) -> u32 {
    let regs = ctx.regs;
    // SAFETY: the uprobe context is the user registers at the probed instruction.
    let (conn, buf, len) = unsafe { ((*regs).rax, (*regs).rbx, (*regs).rcx) };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let fd = socket_fd(tgid, conn);
    // SAFETY: plain value.
    if fd >= 0 && unsafe { TLS_SKIP.get(&sock_key(tgid, fd)) }.copied() == Some(conn) {
        return 0;
    }
    emit_data(tgid, conn, fd, DataSource::GoTls, buf, len);
    0
}

/// The socket fd under a `*tls.Conn`, or -1 when it is not a socket this process connected.
#[inline(always)]
fn socket_fd(tgid: u32, conn: u64) -> i32 {
    // SAFETY: user memory read through the probe helper (faults return an error).
    let Ok(tcp) = (unsafe { bpf_probe_read_user((conn + TLS_CONN_NETCONN_DATA) as *const u64) }) else { return -1 };
    let Ok(netfd) = (unsafe { bpf_probe_read_user((tcp + TCPCONN_NETFD) as *const u64) }) else { return -1 };
    let Ok(sysfd) = (unsafe { bpf_probe_read_user((netfd + NETFD_SYSFD) as *const i64) }) else { return -1 };
    if !(0..=i64::from(i32::MAX)).contains(&sysfd) {
        return -1;
    }
    let fd = sysfd as i32;
    // SAFETY: plain value.
    match unsafe { CONNS.get(&sock_key(tgid, fd)) } {
        Some(_) => fd,
        None => -1,
    }
}
