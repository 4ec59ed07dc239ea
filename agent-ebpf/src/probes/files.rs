//! Opens of credential files, filtered in the kernel by base name so that the millions
//! of ordinary opens cost a string copy and one hash lookup, and never reach user space.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use sigil_agent_common::{EventKind, PATH_LEN, WATCH_NAME_LEN};

use super::{SYSCALL_ARG, process::header};
use crate::maps::{EVENTS, OPEN_SCRATCH, WATCHED_NAMES, WATCH_LENGTHS, count_lost};

/// openat(dfd, filename, flags, mode)
#[tracepoint]
pub fn sigil_openat(ctx: TracePointContext) -> u32 {
    try_open(&ctx, SYSCALL_ARG[1], SYSCALL_ARG[2]).unwrap_or(0)
}

/// open(filename, flags, mode)
#[tracepoint]
pub fn sigil_open(ctx: TracePointContext) -> u32 {
    try_open(&ctx, SYSCALL_ARG[0], SYSCALL_ARG[1]).unwrap_or(0)
}

fn try_open(ctx: &TracePointContext, name_at: usize, flags_at: usize) -> Result<u32, i64> {
    let ev = OPEN_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: fixed syscall tracepoint layout; per-CPU scratch owned by this program run.
    let name: u64 = unsafe { ctx.read_at(name_at) }.map_err(|e| e as i64)?;
    let flags: u64 = unsafe { ctx.read_at(flags_at) }.map_err(|e| e as i64)?;
    let buf = unsafe { &mut (*ev).filename };
    let len = unsafe { bpf_probe_read_user_str_bytes(name as *const u8, buf) }?.len();

    // Watched names are path suffixes on a '/' boundary: a base name ("id_ed25519"),
    // or parent/base for names too common alone (".aws/config"). Only the suffix lengths
    // that occur on the watch list are tried. Nothing here depends on where the slashes
    // are, so the verifier sees one shape of state per length, not one per path.
    let lengths = WATCH_LENGTHS.load();
    let mut hit = false;
    let mut l = 1usize;
    while l <= WATCH_NAME_LEN {
        if lengths & (1u64 << (l - 1)) != 0 && l <= len && suffix_watched(buf, len, l) {
            hit = true;
            break;
        }
        l += 1;
    }
    if !hit {
        return Ok(0);
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    unsafe {
        (*ev).header = header(EventKind::FileOpen, tgid);
        (*ev).flags = flags as i32;
        (*ev).filename_len = len as u16;
        (*ev)._pad0 = 0;
    }
    // SAFETY: `ev` is a valid FileOpenEvent in our scratch map.
    if EVENTS.output::<sigil_agent_common::FileOpenEvent>(unsafe { &*ev }, 0).is_err() {
        count_lost(EventKind::FileOpen.loss_slot());
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
