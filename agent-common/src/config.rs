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

/// Byte offsets of the kernel fields the programs follow from the current task: to the
/// executable's inode (`task->mm->exe_file->f_inode`, and its `i_sb->s_dev`) at exec,
/// and to the process's start time (`task->group_leader->start_boottime`) in every event.
///
/// The agent computes them at start-up from this kernel's BTF (`/sys/kernel/btf/vmlinux`):
/// struct layouts differ between kernels and configs, and the programs are not
/// CO-RE-relocated. A zero `valid` (no BTF, a field not found) makes the exec program
/// send no identity, and user space stats the executable through procfs as before.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExeOffsets {
    pub valid: u32,
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `mm_struct.exe_file`
    pub mm_exe_file: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `inode.i_size`
    pub inode_size: u32,
    /// Seconds of the modification time (`i_mtime_sec`, or `tv_sec` of the older
    /// `i_mtime` / `__i_mtime` timespec64).
    pub inode_mtime_sec: u32,
    /// Nanoseconds of the modification time (read as 32 bits: always below 10^9).
    pub inode_mtime_nsec: u32,
    /// Seconds of the change time (`i_ctime_sec`, `__i_ctime.tv_sec` or `i_ctime.tv_sec`).
    pub inode_ctime_sec: u32,
    /// Nanoseconds of the change time.
    pub inode_ctime_nsec: u32,
    /// `super_block.s_dev` (the kernel's internal `dev_t`: major << 20 | minor).
    pub sb_dev: u32,
    /// `task_struct.group_leader`
    pub task_group_leader: u32,
    /// `task_struct.start_boottime`
    pub task_start_boottime: u32,
    /// `task_struct.files`
    pub task_files: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.fd`
    pub fdtable_fd: u32,
    /// `fdtable.max_fds`
    pub fdtable_max_fds: u32,
    /// `file.f_flags`
    pub file_flags: u32,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), u32 fields only, no padding.
unsafe impl aya::Pod for ExeOffsets {}

/// Where the io_uring program finds the path of an `IORING_OP_OPENAT`/`OPENAT2` request:
/// `io_kiocb.cmd` (the per-opcode data, here a `struct io_open`), `io_open.filename` (the
/// kernel's copy of the path, a `struct filename`), `filename.name`, and the open flags
/// (`io_open.how.flags`); and where a send, write or connect request keeps its buffer and
/// address. From this kernel's BTF, like [`ExeOffsets`], and apart from
/// them: a kernel without these types loses only the io_uring program. A zero `valid`
/// makes it a no-op.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringOffsets {
    pub valid: u32,
    pub kiocb_cmd: u32,
    pub open_filename: u32,
    pub open_how_flags: u32,
    pub filename_name: u32,
    /// The request's fd (`io_kiocb.cqe.fd`, as the submission gave it).
    pub kiocb_fd: u32,
    /// `io_sr_msg.buf` (send; for sendmsg the same slot holds the user `msghdr`) and
    /// `io_sr_msg.len`.
    pub sr_buf: u32,
    pub sr_len: u32,
    /// `io_rw.addr` and `io_rw.len` (write: a buffer and its length; writev: the iovec
    /// array and its count).
    pub rw_addr: u32,
    pub rw_len: u32,
    /// `io_connect.addr`: the user `sockaddr`.
    pub connect_addr: u32,
    /// `io_close.fd` (a close needs no file, so `cqe.fd` is not set for it) and
    /// `io_close.file_slot` (non-zero: the close is of a registered file, not of an fd).
    pub close_fd: u32,
    pub close_file_slot: u32,
}

#[cfg(feature = "user")]
// SAFETY: repr(C), u32 fields only, no padding.
unsafe impl aya::Pod for UringOffsets {}
