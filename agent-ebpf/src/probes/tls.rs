//! TLS plaintext: uprobes on the libraries' write and read functions.
//!
//! Entry saves the arguments; the library then writes ciphertext with a syscall, whose
//! tracepoint tells us the socket fd ([`note_fd`]); the return probe emits the plaintext
//! with the fd and the number of bytes the library accepted.
//!
//! Reads (responses) are copied only on connections the client just sent a `POST ` on,
//! and only up to `RESPONSE_BUDGET` bytes after it ([`RESPONSE_WATCH`]): token endpoints
//! answer POSTs, and user space withdraws the budget as soon as it sees the POST was no
//! credential exchange. The return probe copies, since only then is the buffer filled.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_probe_read_user as read_user_raw},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use sigil_agent_common::{DATA_CAPTURE, DataSource, DropReason, RESPONSE_BUDGET};

use super::net::emit_data;
use crate::maps::{RESPONSE_WATCH, SKIPPED_SLOTS, TLS_CALLS, TLS_FDS, TLS_READS, TLS_SKIP, TLS_SKIPPED_CALLS, TlsCall, TlsConnKey, count_drop, sock_key};

#[inline(always)]
fn enter(ctx: &ProbeContext, source: DataSource, has_written: bool) -> u32 {
    let (Some(conn), Some(buf), Some(len)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2)) else {
        return 0;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let reading = source.is_read();
    // A read on a connection with no response budget is not worth a map entry.
    let key = TlsConnKey { tgid: (pid_tgid >> 32) as u32, _pad: 0, conn };
    // SAFETY: plain value.
    if reading && unsafe { RESPONSE_WATCH.get(&key) }.is_none() {
        return 0;
    }
    // A write on a connection user space gave up on (a server's responses): let it go
    // here, before any map insert, and tell the return probe so.
    if !reading && skipped(key) {
        mark_skipped(pid_tgid);
        return 0;
    }
    let written = if has_written { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 };
    // SSL_write's and SSL_read's lengths are ints: keep the low 32 bits.
    let int_len = matches!(source, DataSource::OpenSsl | DataSource::OpenSslRead) && !has_written;
    let len = if int_len { len & 0xffff_ffff } else { len };
    let call = TlsCall { conn, buf, len, written, fd: -1, source: source as u32 };
    let calls = if reading { &TLS_READS } else { &TLS_CALLS };
    if calls.insert(&pid_tgid, &call, 0).is_err() {
        count_drop(DropReason::TlsCallInsert);
    }
    0
}

#[inline(always)]
fn leave(accepted: u64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain data copied out of our own map.
    let Some(call) = (unsafe { TLS_CALLS.get(&pid_tgid) }).copied() else {
        // Let go at entry, or evicted while this thread was inside the call (or never
        // saved): the latter is not captured, and counted.
        if !take_skipped(pid_tgid) {
            count_drop(DropReason::TlsCallLost);
        }
        return 0;
    };
    let _ = TLS_CALLS.remove(&pid_tgid);
    let tgid = (pid_tgid >> 32) as u32;
    let key = TlsConnKey { tgid, _pad: 0, conn: call.conn };
    let fd = if call.fd >= 0 {
        // An LRU update allocates a node: only when the fd changed.
        // SAFETY: plain value.
        if unsafe { TLS_FDS.get(&key) }.copied() != Some(call.fd) {
            let _ = TLS_FDS.insert(&key, &call.fd, 0);
        }
        call.fd
    } else {
        // SAFETY: plain value.
        unsafe { TLS_FDS.get(&key) }.copied().unwrap_or(-1)
    };
    // SAFETY: plain value.
    if fd >= 0 && unsafe { TLS_SKIP.get(&sock_key(tgid, fd)) }.copied() == Some(call.conn) {
        return 0;
    }
    let len = if call.written != 0 {
        // SAFETY: user pointer read through the probe helper.
        unsafe { bpf_probe_read_user(call.written as *const u64) }.unwrap_or(0)
    } else {
        accepted
    };
    let source = match call.source {
        2 => DataSource::GnuTls,
        _ => DataSource::OpenSsl,
    };
    let len = len.min(call.len);
    if len >= 5 {
        // SAFETY: user pointer read through the probe helper.
        if let Ok(head) = unsafe { bpf_probe_read_user(call.buf as *const [u8; 5]) }
            && &head == b"POST "
        {
            let _ = RESPONSE_WATCH.insert(&key, &RESPONSE_BUDGET, 0);
        }
    }
    emit_data(tgid, call.conn, fd, source, call.buf, len);
    0
}

/// Is this connection's socket one whose writes user space stopped (`TLS_SKIP`), as
/// far as the last fd seen under it tells?
#[inline(always)]
fn skipped(key: TlsConnKey) -> bool {
    // SAFETY: plain values.
    let Some(fd) = (unsafe { TLS_FDS.get(&key) }).copied() else { return false };
    unsafe { TLS_SKIP.get(&sock_key(key.tgid, fd)) }.copied() == Some(key.conn)
}

#[inline(always)]
fn mark_skipped(pid_tgid: u64) {
    if let Some(slot) = TLS_SKIPPED_CALLS.get_ptr_mut(pid_tgid as u32 % SKIPPED_SLOTS) {
        // SAFETY: our own array slot; a racing thread of the same slot only blurs a count.
        unsafe { *slot = pid_tgid };
    }
}

/// Whether this thread's current write was let go at entry (and forgets it).
#[inline(always)]
fn take_skipped(pid_tgid: u64) -> bool {
    let Some(slot) = TLS_SKIPPED_CALLS.get_ptr_mut(pid_tgid as u32 % SKIPPED_SLOTS) else { return false };
    // SAFETY: as above.
    unsafe {
        if *slot == pid_tgid {
            *slot = 0;
            return true;
        }
    }
    false
}

/// Return of a read: `got` bytes are now in the saved buffer (for SSL_read_ex, read
/// through its `readbytes` pointer instead). Copies them while the connection's response
/// budget lasts.
#[inline(always)]
fn leave_read(got: u64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain data copied out of our own map.
    let Some(call) = (unsafe { TLS_READS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = TLS_READS.remove(&pid_tgid);
    let tgid = (pid_tgid >> 32) as u32;
    let key = TlsConnKey { tgid, _pad: 0, conn: call.conn };
    let Some(budget) = RESPONSE_WATCH.get_ptr_mut(&key) else { return 0 };
    let got = if call.written != 0 {
        // SAFETY: user pointer read through the probe helper.
        unsafe { bpf_probe_read_user(call.written as *const u64) }.unwrap_or(0)
    } else {
        got
    };
    let got = got.min(call.len);
    // SAFETY: our own map value; a connection is read by one thread at a time.
    let left = unsafe { *budget };
    if got >= left {
        let _ = RESPONSE_WATCH.remove(&key);
    } else {
        // SAFETY: as above.
        unsafe { *budget = left - got };
    }
    // SAFETY: plain value.
    let fd = unsafe { TLS_FDS.get(&key) }.copied().unwrap_or(-1);
    let source = if call.source == DataSource::GnuTlsRead as u32 { DataSource::GnuTlsRead } else { DataSource::OpenSslRead };
    emit_data(tgid, call.conn, fd, source, call.buf, got.min(left));
    0
}

/// Records the socket fd a TLS library writes to, if a TLS call is in progress on this
/// thread. Returns true when it was (the bytes on this fd are ciphertext).
#[inline(always)]
pub fn note_fd(pid_tgid: u64, fd: i32) -> bool {
    match TLS_CALLS.get_ptr_mut(&pid_tgid) {
        Some(call) => {
            // SAFETY: our own map value; only this thread touches its entry.
            unsafe {
                if (*call).fd < 0 {
                    (*call).fd = fd;
                }
            }
            true
        }
        None => false,
    }
}

/// Copies up to DATA_CAPTURE bytes from user memory; returns how many were copied.
/// A cut copy and a failed one are counted as drops.
#[inline(always)]
pub fn copy_user(dst: &mut [u8; DATA_CAPTURE], src: u64, len: u64) -> u32 {
    if len > DATA_CAPTURE as u64 {
        count_drop(DropReason::DataTruncated);
    }
    // SAFETY: the destination is DATA_CAPTURE bytes long, the length is bounded below.
    unsafe { copy_user_to(dst.as_mut_ptr(), src, len) }
}

/// Copies `min(len, DATA_CAPTURE)` bytes from user memory to `dst`; returns how many.
///
/// # Safety
/// `dst` must have room for DATA_CAPTURE bytes.
#[inline(always)]
pub unsafe fn copy_user_to(dst: *mut u8, src: u64, len: u64) -> u32 {
    // Masked rather than only compared, so the verifier sees the bound on every path.
    let n = if len >= DATA_CAPTURE as u64 { DATA_CAPTURE as u32 } else { (len as u32) & (DATA_CAPTURE as u32 - 1) };
    // SAFETY: `n` <= DATA_CAPTURE, which the caller guarantees `dst` holds; the helper
    // faults safely on a bad `src`.
    let rc = unsafe { read_user_raw(dst as *mut c_void, n, src as *const c_void) };
    if rc == 0 {
        n
    } else {
        count_drop(DropReason::UserCopyFailed);
        0
    }
}

/// A failed write: nothing was sent.
#[inline(always)]
fn give_up() -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let _ = TLS_CALLS.remove(&pid_tgid);
    take_skipped(pid_tgid);
    0
}

#[uprobe]
pub fn sigil_ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, DataSource::OpenSsl, false)
}

#[uretprobe]
pub fn sigil_ssl_write_ret(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    if ret <= 0 {
        return give_up();
    }
    leave(ret as u64)
}

#[uprobe]
pub fn sigil_ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, DataSource::OpenSsl, true)
}

/// Also attached to OpenSSL's internal write function, when `SSL_write` and
/// `SSL_write_ex` share it (agent/src/trace/hook_site.rs): it returns a positive value on
/// success where `SSL_write_ex` returns 1, hence `> 0` rather than `== 1`.
#[uretprobe]
pub fn sigil_ssl_write_ex_ret(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    if ret <= 0 {
        return give_up();
    }
    leave(0)
}

#[uprobe]
pub fn sigil_gnutls_send(ctx: ProbeContext) -> u32 {
    enter(&ctx, DataSource::GnuTls, false)
}

#[uretprobe]
pub fn sigil_gnutls_send_ret(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret();
    if ret <= 0 {
        return give_up();
    }
    leave(ret as u64)
}

#[uprobe]
pub fn sigil_ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, DataSource::OpenSslRead, false)
}

#[uretprobe]
pub fn sigil_ssl_read_ret(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    if ret <= 0 {
        let _ = TLS_READS.remove(&bpf_get_current_pid_tgid());
        return 0;
    }
    leave_read(ret as u64)
}

#[uprobe]
pub fn sigil_ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, DataSource::OpenSslRead, true)
}

/// Like [`sigil_ssl_write_ex_ret`], also attached to the internal read function.
#[uretprobe]
pub fn sigil_ssl_read_ex_ret(ctx: RetProbeContext) -> u32 {
    let ret: i32 = ctx.ret();
    if ret <= 0 {
        let _ = TLS_READS.remove(&bpf_get_current_pid_tgid());
        return 0;
    }
    leave_read(0)
}

#[uprobe]
pub fn sigil_gnutls_recv(ctx: ProbeContext) -> u32 {
    enter(&ctx, DataSource::GnuTlsRead, false)
}

#[uretprobe]
pub fn sigil_gnutls_recv_ret(ctx: RetProbeContext) -> u32 {
    let ret: i64 = ctx.ret();
    if ret <= 0 {
        let _ = TLS_READS.remove(&bpf_get_current_pid_tgid());
        return 0;
    }
    leave_read(ret as u64)
}
