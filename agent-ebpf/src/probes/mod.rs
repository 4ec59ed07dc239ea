pub mod files;
pub mod go_tls;
pub mod net;
pub mod process;
pub mod tls;
pub mod uring;

/// Offsets of the arguments in a `syscalls/sys_enter_*` record (after the 8-byte common
/// header and the syscall number): each argument takes an 8-byte slot. This layout is
/// the same for every syscall tracepoint; the agent checks it against tracefs at load.
pub const SYSCALL_ARG: [usize; 3] = [16, 24, 32];
/// `ret` in a `syscalls/sys_exit_*` record.
pub const SYSCALL_RET: usize = 16;
