//! Outbound connections and plaintext writes on them.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use sigil_agent_common::{ConnectEvent, DataEvent, DataSource, EventKind};

use super::{SYSCALL_ARG, SYSCALL_RET, process::header, tls::{copy_user, note_fd}};
use crate::maps::{CONNS, EVENTS, PENDING_CONNECT, PendingConnect, TLS_SKIP, count_lost, sock_key};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EINPROGRESS: i64 = 115;

#[tracepoint]
pub fn sigil_connect_enter(ctx: TracePointContext) -> u32 {
    try_connect_enter(&ctx).unwrap_or(0)
}

#[tracepoint]
pub fn sigil_connect_exit(ctx: TracePointContext) -> u32 {
    try_connect_exit(&ctx).unwrap_or(0)
}

#[tracepoint]
pub fn sigil_close(ctx: TracePointContext) -> u32 {
    // SAFETY: fixed syscall tracepoint layout.
    if let Ok(fd) = unsafe { ctx.read_at::<u64>(SYSCALL_ARG[0]) } {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let key = sock_key(tgid, fd as i32);
        let _ = CONNS.remove(&key);
        let _ = TLS_SKIP.remove(&key);
    }
    0
}

/// write(fd, buf, count) and sendto(fd, buf, len, ...) share their first three slots.
#[tracepoint]
pub fn sigil_write(ctx: TracePointContext) -> u32 {
    try_write(&ctx).unwrap_or(0)
}

/// sendmsg only tells us which fd a TLS library writes to; its iovecs are not captured.
#[tracepoint]
pub fn sigil_sendmsg(ctx: TracePointContext) -> u32 {
    // SAFETY: fixed syscall tracepoint layout.
    if let Ok(fd) = unsafe { ctx.read_at::<u64>(SYSCALL_ARG[0]) } {
        note_fd(bpf_get_current_pid_tgid(), fd as i32);
    }
    0
}

fn try_connect_enter(ctx: &TracePointContext) -> Result<u32, i64> {
    // SAFETY: fixed syscall tracepoint layout; user pointers are read with probe helpers.
    let fd: u64 = unsafe { ctx.read_at(SYSCALL_ARG[0]) }.map_err(|e| e as i64)?;
    let addr: u64 = unsafe { ctx.read_at(SYSCALL_ARG[1]) }.map_err(|e| e as i64)?;
    let family: u16 = unsafe { bpf_probe_read_user(addr as *const u16) }?;
    let port: u16 = unsafe { bpf_probe_read_user((addr + 2) as *const u16) }?;
    let mut pending = PendingConnect { fd: fd as i32, family, port: u16::from_be(port), addr: [0; 16] };
    match family {
        AF_INET => pending.addr[..4].copy_from_slice(&unsafe { bpf_probe_read_user((addr + 4) as *const [u8; 4]) }?),
        AF_INET6 => pending.addr = unsafe { bpf_probe_read_user((addr + 8) as *const [u8; 16]) }?,
        _ => return Ok(0),
    }
    PENDING_CONNECT.insert(&bpf_get_current_pid_tgid(), &pending, 0)?;
    Ok(0)
}

fn try_connect_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain data copied out of our own map.
    let Some(p) = (unsafe { PENDING_CONNECT.get(&pid_tgid) }).copied() else { return Ok(0) };
    let _ = PENDING_CONNECT.remove(&pid_tgid);
    // SAFETY: fixed syscall tracepoint layout.
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.map_err(|e| e as i64)?;
    if ret != 0 && ret != -EINPROGRESS {
        return Ok(0);
    }
    let tgid = (pid_tgid >> 32) as u32;
    CONNS.insert(&sock_key(tgid, p.fd), &1, 0)?;
    let Some(mut entry) = EVENTS.reserve::<ConnectEvent>(0) else {
        count_lost(EventKind::Connect.loss_slot());
        return Ok(0);
    };
    // SAFETY: exclusively owned reserved slot.
    unsafe {
        entry.as_mut_ptr().write(ConnectEvent {
            header: header(EventKind::Connect, tgid),
            fd: p.fd,
            family: p.family,
            port: p.port,
            addr: p.addr,
            result: ret as i32,
            _pad0: 0,
        });
    }
    entry.submit(0);
    Ok(0)
}

fn try_write(ctx: &TracePointContext) -> Result<u32, i64> {
    // SAFETY: fixed syscall tracepoint layout.
    let fd = unsafe { ctx.read_at::<u64>(SYSCALL_ARG[0]) }.map_err(|e| e as i64)? as i32;
    let pid_tgid = bpf_get_current_pid_tgid();
    // Inside a TLS library call: this is ciphertext. Only learn the fd.
    if note_fd(pid_tgid, fd) {
        return Ok(0);
    }
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: plain value.
    match unsafe { CONNS.get(&sock_key(tgid, fd)) } {
        Some(1) => {}
        _ => return Ok(0),
    }
    let buf: u64 = unsafe { ctx.read_at(SYSCALL_ARG[1]) }.map_err(|e| e as i64)?;
    let len: u64 = unsafe { ctx.read_at(SYSCALL_ARG[2]) }.map_err(|e| e as i64)?;
    emit_data(tgid, 0, fd, DataSource::PlainSocket, buf, len);
    Ok(0)
}

/// Copies the first bytes of a user buffer into a data event.
#[inline(always)]
pub fn emit_data(tgid: u32, conn: u64, fd: i32, source: DataSource, buf: u64, len: u64) {
    if len == 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<DataEvent>(0) else {
        count_lost(EventKind::Data.loss_slot());
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: exclusively owned reserved slot; the copy is bounded by the destination.
    unsafe {
        (*ev).header = header(EventKind::Data, tgid);
        (*ev).conn = conn;
        (*ev).len = len;
        (*ev).fd = fd;
        (*ev).source = source as u32;
        (*ev)._pad0 = 0;
        (*ev).captured = copy_user(&mut (*ev).data, buf, len);
    }
    entry.submit(0);
}
