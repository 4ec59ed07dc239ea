//! Outbound connections and plaintext writes on them, made through the syscalls or
//! submitted through io_uring.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use sigil_agent_common::{ConnectEvent, DATA_CAPTURE, DataEvent, DataSource, DropReason, EventKind};

use super::{
    SYSCALL_ARG, SYSCALL_RET,
    process::{header, read_field},
    tls::{copy_user, copy_user_to, note_fd},
    uring,
};
use crate::maps::{CONNS, EVENTS, IOV_SCRATCH, PENDING_CONNECT, PendingConnect, TLS_SKIP, count_drop, count_lost, data_wakeup_flags, sock_key};

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
        forget_fd((bpf_get_current_pid_tgid() >> 32) as u32, fd as i32);
    }
    0
}

/// A closed fd: whatever reuses its number is not the connection it was.
#[inline(always)]
fn forget_fd(tgid: u32, fd: i32) {
    let key = sock_key(tgid, fd);
    // Nearly every close is of something never tracked: a lookup (lock-free) spares
    // those the delete's bucket lock.
    // SAFETY: plain values; the references do not outlive this program run.
    if unsafe { CONNS.get(&key) }.is_some() {
        let _ = CONNS.remove(&key);
    }
    if unsafe { TLS_SKIP.get(&key) }.is_some() {
        let _ = TLS_SKIP.remove(&key);
    }
}

/// write(fd, buf, count) and sendto(fd, buf, len, ...) share their first three slots.
#[tracepoint]
pub fn sigil_write(ctx: TracePointContext) -> u32 {
    try_write(&ctx).unwrap_or(0)
}

/// writev(fd, iov, iovcnt): the iovecs of a plaintext write, or the fd a TLS library
/// writes its records to.
#[tracepoint]
pub fn sigil_writev(ctx: TracePointContext) -> u32 {
    try_writev(&ctx).unwrap_or(0)
}

/// sendmsg(fd, msg, flags): likewise, with the iovecs inside a `struct msghdr`.
#[tracepoint]
pub fn sigil_sendmsg(ctx: TracePointContext) -> u32 {
    try_sendmsg(&ctx).unwrap_or(0)
}

/// An IPv4 or IPv6 `sockaddr` at user address `addr`, for a connect of `fd`; None for
/// another family.
#[inline(always)]
fn read_sockaddr(fd: i32, addr: u64) -> Result<Option<PendingConnect>, i64> {
    // SAFETY: user memory read through the probe helper.
    let family: u16 = unsafe { bpf_probe_read_user(addr as *const u16) }?;
    let port: u16 = unsafe { bpf_probe_read_user((addr + 2) as *const u16) }?;
    let mut pending = PendingConnect { fd, family, port: u16::from_be(port), addr: [0; 16] };
    match family {
        AF_INET => pending.addr[..4].copy_from_slice(&unsafe { bpf_probe_read_user((addr + 4) as *const [u8; 4]) }?),
        AF_INET6 => pending.addr = unsafe { bpf_probe_read_user((addr + 8) as *const [u8; 16]) }?,
        _ => return Ok(None),
    }
    Ok(Some(pending))
}

fn try_connect_enter(ctx: &TracePointContext) -> Result<u32, i64> {
    // SAFETY: fixed syscall tracepoint layout; user pointers are read with probe helpers.
    let fd: u64 = unsafe { ctx.read_at(SYSCALL_ARG[0]) }.map_err(|e| e as i64)?;
    let addr: u64 = unsafe { ctx.read_at(SYSCALL_ARG[1]) }.map_err(|e| e as i64)?;
    let Some(pending) = read_sockaddr(fd as i32, addr)? else { return Ok(0) };
    if let Err(e) = PENDING_CONNECT.insert(&bpf_get_current_pid_tgid(), &pending, 0) {
        count_drop(DropReason::PendingConnectInsert);
        return Err(e.into());
    }
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
    connected((pid_tgid >> 32) as u32, &p, ret as i32);
    Ok(0)
}

/// Marks `p.fd` as a connected socket whose plaintext writes are copied, and tells user
/// space where it goes.
#[inline(always)]
fn connected(tgid: u32, p: &PendingConnect, result: i32) {
    if CONNS.insert(&sock_key(tgid, p.fd), &1, 0).is_err() {
        count_drop(DropReason::ConnInsert);
    }
    let Some(mut entry) = EVENTS.reserve::<ConnectEvent>(0) else {
        count_lost(EventKind::Connect.loss_slot());
        return;
    };
    // SAFETY: exclusively owned reserved slot.
    unsafe {
        entry.as_mut_ptr().write(ConnectEvent {
            header: header(EventKind::Connect, tgid),
            fd: p.fd,
            family: p.family,
            port: p.port,
            addr: p.addr,
            result,
            _pad0: 0,
        });
    }
    entry.submit(0);
}

/// io_uring opcodes that connect or write (uapi, stable).
const IORING_OP_WRITEV: u8 = 2;
const IORING_OP_WRITE_FIXED: u8 = 5;
const IORING_OP_SENDMSG: u8 = 9;
const IORING_OP_CONNECT: u8 = 16;
const IORING_OP_CLOSE: u8 = 19;
const IORING_OP_WRITE: u8 = 23;
const IORING_OP_SEND: u8 = 26;
const IORING_OP_SEND_ZC: u8 = 47;
const IORING_OP_SENDMSG_ZC: u8 = 48;
/// `REQ_F_FIXED_FILE` in the request's flags: `IOSQE_FIXED_FILE`, bit 0 (uapi).
const REQ_F_FIXED_FILE: u64 = 1;

/// Connects and writes submitted through io_uring, which never enter the syscalls above:
/// read from the request as it is submitted (after its preparation), at offsets from BTF.
/// A connect is taken as made (its result comes later, in a completion not followed); a
/// write on a socket so connected is copied like a plain write; a close forgets the fd.
#[tracepoint]
pub fn sigil_uring_net(ctx: TracePointContext) -> u32 {
    try_uring_net(&ctx).unwrap_or(0)
}

fn try_uring_net(ctx: &TracePointContext) -> Result<u32, i64> {
    let wanted = |op| {
        matches!(
            op,
            IORING_OP_WRITEV
                | IORING_OP_WRITE_FIXED
                | IORING_OP_SENDMSG
                | IORING_OP_CONNECT
                | IORING_OP_CLOSE
                | IORING_OP_WRITE
                | IORING_OP_SEND
                | IORING_OP_SEND_ZC
                | IORING_OP_SENDMSG_ZC
        )
    };
    let Some(uring::Request { opcode, req, cmd, off }) = uring::submitted(ctx, wanted)? else { return Ok(0) };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if opcode == IORING_OP_CLOSE {
        // A close of a registered file slot carries fd 0: forgetting fd 0 then would let
        // a workload stop the capture of a socket it keeps on fd 0.
        let slot: u32 = read_field(cmd, off.close_file_slot).map_err(i64::from)?;
        if slot == 0 {
            forget_fd(tgid, read_field(cmd, off.close_fd).map_err(i64::from)?);
        }
        return Ok(0);
    }
    // A registered (fixed) file's number is an index into the ring's table, not an fd:
    // looked up as one, it could name another connection. Not followed.
    if uring::flags(ctx)? & REQ_F_FIXED_FILE != 0 {
        return Ok(0);
    }
    let fd: i32 = read_field(req, off.kiocb_fd).map_err(i64::from)?;
    if opcode == IORING_OP_CONNECT {
        let addr: u64 = read_field(cmd, off.connect_addr).map_err(i64::from)?;
        if let Some(p) = read_sockaddr(fd, addr)? {
            connected(tgid, &p, 0);
        }
        return Ok(0);
    }
    // SAFETY: plain value.
    if !matches!(unsafe { CONNS.get(&sock_key(tgid, fd)) }, Some(1)) {
        return Ok(0);
    }
    match opcode {
        IORING_OP_SEND | IORING_OP_SEND_ZC => {
            let buf: u64 = read_field(cmd, off.sr_buf).map_err(i64::from)?;
            let len: u32 = read_field(cmd, off.sr_len).map_err(i64::from)?;
            emit_data(tgid, 0, fd, DataSource::PlainSocket, buf, u64::from(len));
        }
        IORING_OP_WRITE | IORING_OP_WRITE_FIXED => {
            let buf: u64 = read_field(cmd, off.rw_addr).map_err(i64::from)?;
            let len: u32 = read_field(cmd, off.rw_len).map_err(i64::from)?;
            emit_data(tgid, 0, fd, DataSource::PlainSocket, buf, u64::from(len));
        }
        IORING_OP_WRITEV => {
            let iov: u64 = read_field(cmd, off.rw_addr).map_err(i64::from)?;
            let count: u32 = read_field(cmd, off.rw_len).map_err(i64::from)?;
            emit_iovecs(tgid, fd, iov, u64::from(count));
        }
        _ => {
            // sendmsg: the same slot as a send's buffer holds the user `msghdr`.
            let msg: u64 = read_field(cmd, off.sr_buf).map_err(i64::from)?;
            emit_msghdr(tgid, fd, msg)?;
        }
    }
    Ok(0)
}

/// The fd of a syscall's first argument and, when its plaintext is to be copied (a
/// connected socket still marked for capture, written outside any TLS library call), the
/// writer's tgid.
#[inline(always)]
fn plaintext_socket(ctx: &TracePointContext) -> Result<(i32, Option<u32>), i64> {
    // SAFETY: fixed syscall tracepoint layout.
    let fd = unsafe { ctx.read_at::<u64>(SYSCALL_ARG[0]) }.map_err(|e| e as i64)? as i32;
    let pid_tgid = bpf_get_current_pid_tgid();
    // Inside a TLS library call: this is ciphertext. Only learn the fd.
    if note_fd(pid_tgid, fd) {
        return Ok((fd, None));
    }
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: plain value.
    match unsafe { CONNS.get(&sock_key(tgid, fd)) } {
        Some(1) => Ok((fd, Some(tgid))),
        _ => Ok((fd, None)),
    }
}

fn try_write(ctx: &TracePointContext) -> Result<u32, i64> {
    let (fd, Some(tgid)) = plaintext_socket(ctx)? else { return Ok(0) };
    // SAFETY: fixed syscall tracepoint layout.
    let buf: u64 = unsafe { ctx.read_at(SYSCALL_ARG[1]) }.map_err(|e| e as i64)?;
    let len: u64 = unsafe { ctx.read_at(SYSCALL_ARG[2]) }.map_err(|e| e as i64)?;
    emit_data(tgid, 0, fd, DataSource::PlainSocket, buf, len);
    Ok(0)
}

fn try_writev(ctx: &TracePointContext) -> Result<u32, i64> {
    let (fd, Some(tgid)) = plaintext_socket(ctx)? else { return Ok(0) };
    // SAFETY: fixed syscall tracepoint layout.
    let iov: u64 = unsafe { ctx.read_at(SYSCALL_ARG[1]) }.map_err(|e| e as i64)?;
    let count: u64 = unsafe { ctx.read_at(SYSCALL_ARG[2]) }.map_err(|e| e as i64)?;
    emit_iovecs(tgid, fd, iov, count);
    Ok(0)
}

/// `struct msghdr` on 64-bit: msg_name, msg_namelen (+pad), then msg_iov and msg_iovlen.
const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;

fn try_sendmsg(ctx: &TracePointContext) -> Result<u32, i64> {
    let (fd, Some(tgid)) = plaintext_socket(ctx)? else { return Ok(0) };
    // SAFETY: fixed syscall tracepoint layout.
    let msg: u64 = unsafe { ctx.read_at(SYSCALL_ARG[1]) }.map_err(|e| e as i64)?;
    emit_msghdr(tgid, fd, msg)?;
    Ok(0)
}

/// The iovecs of the user `msghdr` at `msg`, as one data event.
#[inline(always)]
fn emit_msghdr(tgid: u32, fd: i32, msg: u64) -> Result<(), i64> {
    // SAFETY: user memory read through the probe helper.
    let iov: u64 = unsafe { bpf_probe_read_user((msg + MSGHDR_IOV) as *const u64) }?;
    let count: u64 = unsafe { bpf_probe_read_user((msg + MSGHDR_IOVLEN) as *const u64) }?;
    emit_iovecs(tgid, fd, iov, count);
    Ok(())
}

/// iovecs read per writev/sendmsg. HTTP clients gather a request from a few pieces
/// (head, body, chunk framing); more are counted as `IovecsBeyondLimit`.
const MAX_IOVECS: u64 = 8;

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// One data event with the first DATA_CAPTURE bytes of the iovecs, back to back, and
/// their total length, as if the client had made one write.
#[inline(always)]
fn emit_iovecs(tgid: u32, fd: i32, iov: u64, count: u64) {
    let Some(scratch) = IOV_SCRATCH.get_ptr_mut(0) else { return };
    let mut copied: u32 = 0;
    let mut total: u64 = 0;
    let mut i: u64 = 0;
    while i < MAX_IOVECS && i < count {
        // SAFETY: user memory read through the probe helper.
        let Ok(v) = (unsafe { bpf_probe_read_user((iov + i * 16) as *const Iovec) }) else { break };
        total = total.saturating_add(v.len);
        if copied < DATA_CAPTURE as u32 && v.len > 0 {
            // Below DATA_CAPTURE on every path the verifier walks; the copy after it is at
            // most DATA_CAPTURE long and lands in `data` or the spill behind it. The volatile
            // read keeps LLVM from dropping the mask (it knows `copied` < DATA_CAPTURE here;
            // the verifier, tracking another register, does not).
            // SAFETY: a read of a local.
            let at = unsafe { core::ptr::read_volatile(&copied) } & (DATA_CAPTURE as u32 - 1);
            let room = (DATA_CAPTURE as u32 - at) as u64;
            let want = if v.len < room { v.len } else { room };
            // SAFETY: `at` < DATA_CAPTURE and at most DATA_CAPTURE bytes are written, so
            // the copy stays inside `ev.data` + `spill` (2 * DATA_CAPTURE bytes).
            copied += unsafe { copy_user_to((*scratch).ev.data.as_mut_ptr().add(at as usize), v.base, want) };
        }
        i += 1;
    }
    if count > MAX_IOVECS {
        count_drop(DropReason::IovecsBeyondLimit);
    }
    if total > DATA_CAPTURE as u64 {
        count_drop(DropReason::DataTruncated);
    }
    if total == 0 {
        return;
    }
    // SAFETY: per-CPU scratch owned by this program run.
    unsafe {
        let ev = &mut (*scratch).ev;
        ev.header = header(EventKind::Data, tgid);
        ev.conn = 0;
        ev.len = total;
        ev.fd = fd;
        ev.source = DataSource::PlainSocket as u32;
        ev.captured = if copied > DATA_CAPTURE as u32 { DATA_CAPTURE as u32 } else { copied };
        ev._pad0 = 0;
        if EVENTS.output::<DataEvent>(ev, data_wakeup_flags()).is_err() {
            count_lost(EventKind::Data.loss_slot());
        }
    }
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
    entry.submit(data_wakeup_flags());
}
