//! Load-time configuration the agent writes into the programs' read-only data.

/// Field offsets of the sched tracepoints, read from tracefs `format` files at load time.
///
/// These layouts are not a stable ABI (`sched_process_fork` switched its comm fields to
/// `__data_loc` in 6.x), so hard-coding them would silently misread on another kernel.
/// The agent fills this in; a zero `valid` makes every program a no-op rather than a liar.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TracepointOffsets {
    pub valid: u32,
    /// `sched_process_exec.filename` (`__data_loc char[]`).
    pub exec_filename: u32,
    /// `sched_process_fork.child_pid`.
    pub fork_child_pid: u32,
    /// `sched_process_exit.group_dead`.
    pub exit_group_dead: u32,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), u32 fields only, no padding.
unsafe impl aya::Pod for TracepointOffsets {}
