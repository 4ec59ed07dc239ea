//! Opens of credential files, filtered in the kernel so that the millions of ordinary
//! opens never reach user space. At entry, the name passed is matched against the watch
//! list (a string copy and a few hash lookups). At return, the file actually opened is
//! matched by its inode against the credential files the kernel already knows: a link
//! to `.aws/credentials`, a relative name (`cd ~/.aws; cat credentials`) or a path
//! spelled with `.` or `//` names the same inode. Every file opened by a watched name
//! becomes known that way. Opens submitted through io_uring, which never enter the open
//! syscalls, are matched by name when the request is submitted.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use sigil_agent_common::{EventKind, FileOpenEvent, OPEN_BY_IDENTITY, OPEN_BY_NAME, OPEN_BY_NAME_IO_URING, PATH_LEN, WATCH_NAME_LEN};

use super::{
    SYSCALL_ARG, SYSCALL_RET,
    process::{fd_file_identity, header, read_field},
    uring,
};
use crate::maps::{AGENT_TGID, EVENTS, OPEN_SCRATCH, OPENS_BY_NAME, WATCH_LENGTHS, WATCHED_INODES, WATCHED_NAMES, count_lost};

/// openat(dfd, filename, flags, mode)
#[tracepoint]
pub fn sigil_openat(ctx: TracePointContext) -> u32 {
    // SAFETY: fixed syscall tracepoint layout.
    let flags = unsafe { ctx.read_at::<u64>(SYSCALL_ARG[2]) }.unwrap_or(0);
    try_open(&ctx, SYSCALL_ARG[1], flags).unwrap_or(0)
}

/// open(filename, flags, mode)
#[tracepoint]
pub fn sigil_open(ctx: TracePointContext) -> u32 {
    // SAFETY: fixed syscall tracepoint layout.
    let flags = unsafe { ctx.read_at::<u64>(SYSCALL_ARG[1]) }.unwrap_or(0);
    try_open(&ctx, SYSCALL_ARG[0], flags).unwrap_or(0)
}

/// openat2(dfd, filename, how, size): the flags are the first field of `struct open_how`.
#[tracepoint]
pub fn sigil_openat2(ctx: TracePointContext) -> u32 {
    // SAFETY: fixed syscall tracepoint layout; the user pointer is only probe-read.
    let how = unsafe { ctx.read_at::<u64>(SYSCALL_ARG[2]) }.unwrap_or(0);
    let flags = unsafe { bpf_probe_read_user(how as *const u64) }.unwrap_or(0);
    try_open(&ctx, SYSCALL_ARG[1], flags).unwrap_or(0)
}

fn try_open(ctx: &TracePointContext, name_at: usize, flags: u64) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == AGENT_TGID.load() {
        return Ok(0);
    }
    let ev = OPEN_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: fixed syscall tracepoint layout; per-CPU scratch owned by this program run.
    let name: u64 = unsafe { ctx.read_at(name_at) }.map_err(|e| e as i64)?;
    let buf = unsafe { &mut (*ev).filename };
    let len = unsafe { bpf_probe_read_user_str_bytes(name as *const u8, buf) }?.len();
    if !name_watched(buf, len) {
        return Ok(0);
    }
    // SAFETY: `ev` is a valid FileOpenEvent in our scratch map.
    unsafe { stamp(ev, pid_tgid, flags, len, OPEN_BY_NAME) };
    // Sent at the open's return, with what was opened. With no room to wait (thousands
    // of threads inside such an open at once), sent now, without the identity.
    // SAFETY: `ev` is a valid FileOpenEvent in our scratch map.
    if OPENS_BY_NAME.insert(&(pid_tgid as u32), unsafe { &*ev }, 0).is_err() {
        send(unsafe { &*ev });
    }
    Ok(0)
}

/// Watched names are path suffixes on a '/' boundary: a base name ("id_ed25519"), or
/// parent/base for names too common alone (".aws/config"). Only the suffix lengths that
/// occur on the watch list are tried. Nothing here depends on where the slashes are, so
/// the verifier sees one shape of state per length, not one per path.
#[inline(always)]
fn name_watched(buf: &[u8; PATH_LEN], len: usize) -> bool {
    let lengths = WATCH_LENGTHS.load();
    let mut l = 1usize;
    while l <= WATCH_NAME_LEN {
        if lengths & (1u64 << (l - 1)) != 0 && l <= len && suffix_watched(buf, len, l) {
            return true;
        }
        l += 1;
    }
    false
}

/// `IORING_OP_OPENAT` and `IORING_OP_OPENAT2` (uapi, stable).
const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_OPENAT2: u8 = 28;

/// Every io_uring request as it is submitted (after its preparation, so an open request
/// holds the kernel's copy of its path). An open of a watched name is sent at once: its
/// result comes later, in a completion this program does not follow.
#[tracepoint]
pub fn sigil_uring_open(ctx: TracePointContext) -> u32 {
    try_uring_open(&ctx).unwrap_or(0)
}

fn try_uring_open(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some(r) = uring::submitted(ctx, |op| op == IORING_OP_OPENAT || op == IORING_OP_OPENAT2)? else { return Ok(0) };
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == AGENT_TGID.load() {
        return Ok(0);
    }
    let off = r.off;
    let filename: u64 = read_field(r.cmd, off.open_filename).map_err(i64::from)?;
    let flags: u64 = read_field(r.cmd, off.open_how_flags).map_err(i64::from)?;
    if filename == 0 {
        return Ok(0);
    }
    let name: u64 = read_field(filename, off.filename_name).map_err(i64::from)?;
    let ev = OPEN_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch owned by this program run; the path is a kernel string.
    let buf = unsafe { &mut (*ev).filename };
    let len = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, buf) }?.len();
    if !name_watched(buf, len) {
        return Ok(0);
    }
    // SAFETY: as above.
    unsafe {
        stamp(ev, pid_tgid, flags, len, OPEN_BY_NAME_IO_URING);
        send(&*ev);
    }
    Ok(0)
}

/// Fills every field of the event in `ev` but the path (already copied, `len` bytes):
/// no result and no file identity yet.
///
/// # Safety
/// `ev` points at a FileOpenEvent this program run owns (the per-CPU scratch).
#[inline(always)]
unsafe fn stamp(ev: *mut FileOpenEvent, pid_tgid: u64, flags: u64, len: usize, matched: u16) {
    // SAFETY: the caller's promise.
    unsafe {
        (*ev).header = header(EventKind::FileOpen, (pid_tgid >> 32) as u32);
        (*ev).flags = flags as i32;
        (*ev).filename_len = len as u16;
        (*ev).matched = matched;
        (*ev).ret = 0;
        (*ev)._pad0 = 0;
        (*ev).dev = 0;
        (*ev).ino = 0;
    }
}

fn send(ev: &FileOpenEvent) {
    if EVENTS.output::<FileOpenEvent>(ev, 0).is_err() {
        count_lost(EventKind::FileOpen.loss_slot());
    }
}

/// The return of open(), openat(), openat2() and open_by_handle_at().
#[tracepoint]
pub fn sigil_open_exit(ctx: TracePointContext) -> u32 {
    try_open_exit(&ctx).unwrap_or(0)
}

fn try_open_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == AGENT_TGID.load() {
        return Ok(0);
    }
    let tid = pid_tgid as u32;
    // SAFETY: fixed syscall tracepoint layout.
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET) }.map_err(|e| e as i64)?;
    let identity = if ret >= 0 { fd_file_identity(ret as u32).ok() } else { None };
    if let Some(ev) = OPENS_BY_NAME.get_ptr_mut(&tid) {
        // Sent whatever the result: a failed attempt on a watched name is reported too
        // (probing for keys). A file it opened becomes known by its identity.
        let (dev, ino) = identity.map_or((0, 0), |(dev, ino, _)| (dev, ino));
        // SAFETY: a valid entry of our map, ours until removed below.
        unsafe {
            (*ev).ret = ret as i32;
            (*ev).dev = dev;
            (*ev).ino = ino;
            send(&*ev);
        }
        let _ = OPENS_BY_NAME.remove(&tid);
        if identity.is_some() {
            let _ = WATCHED_INODES.insert(&[dev, ino], &1, 0);
        }
        return Ok(0);
    }
    let Some((dev, ino, flags)) = identity else { return Ok(0) };
    // SAFETY: plain value.
    if unsafe { WATCHED_INODES.get(&[dev, ino]) }.is_none() {
        return Ok(0);
    }
    let ev = OPEN_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU scratch owned by this program run.
    unsafe {
        stamp(ev, pid_tgid, u64::from(flags), 0, OPEN_BY_IDENTITY);
        (*ev).ret = ret as i32;
        (*ev).dev = dev;
        (*ev).ino = ino;
        send(&*ev);
    }
    Ok(0)
}

/// Are the last `l` bytes of `buf[..len]`, starting after a '/', on the watch list?
#[inline(always)]
fn suffix_watched(buf: &[u8; PATH_LEN], len: usize, l: usize) -> bool {
    let start = len - l;
    if start > 0 && buf[(start - 1) & (PATH_LEN - 1)] != b'/' {
        return false;
    }
    let mut key = [0u8; WATCH_NAME_LEN];
    let mut j = 0usize;
    while j < WATCH_NAME_LEN && j < l {
        key[j] = buf[(start + j) & (PATH_LEN - 1)];
        j += 1;
    }
    // SAFETY: plain value.
    unsafe { WATCHED_NAMES.get(&key) }.is_some()
}
