//! Maps and load-time globals shared by every program.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use sigil_agent_common::TracepointOffsets;

/// All events go through one ring buffer so user space sees them in kernel order.
/// The size is overridden by the loader (`--ring-buffer-bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Events dropped because [`EVENTS`] was full, indexed by `EventKind as u32`.
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
pub static TP_OFFSETS: Global<TracepointOffsets> = Global::new(TracepointOffsets {
    valid: 0,
    exec_filename: 0,
    fork_child_pid: 0,
    exit_group_dead: 0,
});

/// Counts an event that could not be reserved in the ring buffer.
#[inline(always)]
pub fn count_lost(kind: u32) {
    if let Some(slot) = LOST.get_ptr_mut(kind % LOST_SLOTS) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
}
