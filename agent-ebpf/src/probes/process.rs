//! Process lifecycle: fork (to learn the parent), exec (the attestation trigger), exit.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_ebpf_bindings::helpers::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_boot_ns};
use sigil_agent_common::{EventHeader, EventKind, ExeIdentity, ExeOffsets, ExeSource, ExecEvent, ExitEvent, PATH_LEN};

use crate::maps::{EVENTS, EXE_OFFSETS, FORKS, ForkInfo, QUIET_EXES, TP_OFFSETS, count_lost, data_wakeup_flags};

#[tracepoint]
pub fn sigil_fork(ctx: TracePointContext) -> u32 {
    try_fork(&ctx).unwrap_or(0)
}

#[tracepoint]
pub fn sigil_exec(ctx: TracePointContext) -> u32 {
    try_exec(&ctx).unwrap_or(0)
}

#[tracepoint]
pub fn sigil_exit(ctx: TracePointContext) -> u32 {
    try_exit(&ctx).unwrap_or(0)
}

#[inline(always)]
pub fn header(kind: EventKind, pid: u32) -> EventHeader {
    // SAFETY: plain helpers without pointer arguments.
    let (boot_ns, cgroup_id) = unsafe { (bpf_ktime_get_boot_ns(), bpf_get_current_cgroup_id()) };
    EventHeader { kind: kind as u32, pid, boot_ns, cgroup_id, start_ns: process_start_ns().unwrap_or(0) }
}

/// The current task's address and the offsets to follow from it; Err when the agent
/// found none in the kernel's BTF.
#[inline(always)]
fn current_task() -> Result<(u64, ExeOffsets), i32> {
    let off = EXE_OFFSETS.load();
    if off.valid == 0 {
        return Err(0);
    }
    // SAFETY: no arguments; returns the current task's address.
    Ok((unsafe { bpf_get_current_task() }, off))
}

/// The current process's start time (`task->group_leader->start_boottime`), at offsets
/// the agent took from BTF.
#[inline(always)]
fn process_start_ns() -> Result<u64, i32> {
    let (task, off) = current_task()?;
    let leader: u64 = read_field(task, off.task_group_leader)?;
    if leader == 0 {
        return Err(0);
    }
    read_field(leader, off.task_start_boottime)
}

fn try_fork(ctx: &TracePointContext) -> Result<u32, i32> {
    let off = TP_OFFSETS.load();
    if off.valid == 0 {
        return Ok(0);
    }
    // Runs in the parent's context: its tgid is the child's parent process.
    let ppid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: offset comes from this kernel's tracefs format file.
    let child: i32 = unsafe { ctx.read_at(off.fork_child_pid as usize)? };
    let info = ForkInfo { ppid, _pad: 0, boot_ns: unsafe { bpf_ktime_get_boot_ns() } };
    FORKS.insert(&(child as u32), &info, 0)?;
    Ok(0)
}

fn try_exec(ctx: &TracePointContext) -> Result<u32, i32> {
    let off = TP_OFFSETS.load();
    if off.valid == 0 {
        return Ok(0);
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        count_lost(EventKind::Exec.loss_slot());
        return Ok(0);
    };
    let ev = entry.as_mut_ptr();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: `FORKS` values are plain data; a racing delete only yields a stale copy.
    let fork = unsafe { FORKS.get(&tgid) }.copied();
    // SAFETY: `ev` points at a reserved, exclusively owned ring-buffer slot.
    unsafe {
        (*ev).header = header(EventKind::Exec, tgid);
        (*ev).ppid = fork.map_or(0, |f| f.ppid);
        (*ev).fork_boot_ns = fork.map_or(0, |f| f.boot_ns);
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*ev).filename_len = 0;
        (*ev).filename_truncated = 0;
    }
    // Looked up from the stack (map keys must not point into the ring buffer).
    let exe = exe_identity().unwrap_or_default();
    // SAFETY: `QUIET_EXES` values are plain data.
    let quiet = exe.source == ExeSource::Kernel as u32 && unsafe { QUIET_EXES.get(&exe) }.is_some();
    // SAFETY: `ev` points at a reserved, exclusively owned ring-buffer slot.
    unsafe {
        (*ev).exe = exe;
        (*ev).quiet = quiet as u8;
    }
    // `__data_loc`: low 16 bits are the offset of the string in the record, high 16 its length.
    let loc: u32 = match unsafe { ctx.read_at(off.exec_filename as usize) } {
        Ok(loc) => loc,
        Err(_) => 0,
    };
    let name_len = (loc >> 16) as usize;
    let src = unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) };
    // SAFETY: the kernel bounds the copy to the destination slice.
    let dst = unsafe { &mut (*ev).filename };
    if let Ok(copied) = unsafe { bpf_probe_read_kernel_str_bytes(src, dst) } {
        unsafe {
            (*ev).filename_len = copied.len() as u16;
            // `name_len` counts the NUL; anything longer than our buffer was cut.
            (*ev).filename_truncated = (name_len > PATH_LEN) as u8;
        }
    }
    // A wakeup unless user space said it needs nothing live from this executable's
    // processes: attestation races the process's exit, and data events submitted without
    // a wakeup may be waiting ahead of this one (the adaptive default would not wake).
    let flags = if quiet { data_wakeup_flags() } else { aya_ebpf_bindings::bindings::BPF_RB_FORCE_WAKEUP as u64 };
    entry.submit(flags);
    Ok(0)
}

/// Reads `base + off` as a `T` from kernel memory.
#[inline(always)]
pub fn read_field<T>(base: u64, off: u32) -> Result<T, i32> {
    // SAFETY: a probe read of kernel memory: a bad address is an error, never a fault.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }
}

/// The executable's inode identity, following `task->mm->exe_file->f_inode` at offsets
/// the agent took from BTF. Any failed read leaves the identity unset (user space stats
/// the file instead).
#[inline(always)]
fn exe_identity() -> Result<ExeIdentity, i32> {
    let (task, off) = current_task()?;
    let mm: u64 = read_field(task, off.task_mm)?;
    let file: u64 = read_field(mm, off.mm_exe_file)?;
    let inode: u64 = read_field(file, off.file_inode)?;
    let sb: u64 = read_field(inode, off.inode_sb)?;
    if mm == 0 || file == 0 || inode == 0 || sb == 0 {
        return Err(0);
    }
    Ok(ExeIdentity {
        ino: read_field(inode, off.inode_ino)?,
        size: read_field(inode, off.inode_size)?,
        mtime_sec: read_field(inode, off.inode_mtime_sec)?,
        ctime_sec: read_field(inode, off.inode_ctime_sec)?,
        mtime_nsec: read_field(inode, off.inode_mtime_nsec)?,
        ctime_nsec: read_field(inode, off.inode_ctime_nsec)?,
        dev: read_field(sb, off.sb_dev)?,
        source: ExeSource::Kernel as u32,
    })
}

/// (`s_dev`, inode, open flags) of the file behind the current process's `fd`, following
/// `task->files->fdt->fd[fd]->f_inode` at offsets the agent took from BTF.
#[inline(always)]
pub fn fd_file_identity(fd: u32) -> Result<(u64, u64, u32), i32> {
    let (task, off) = current_task()?;
    let files: u64 = read_field(task, off.task_files)?;
    let fdt: u64 = read_field(files, off.files_fdt)?;
    let max_fds: u32 = read_field(fdt, off.fdtable_max_fds)?;
    if files == 0 || fdt == 0 || fd >= max_fds {
        return Err(0);
    }
    let array: u64 = read_field(fdt, off.fdtable_fd)?;
    let file: u64 = read_field(array, fd * 8)?;
    let inode: u64 = read_field(file, off.file_inode)?;
    let sb: u64 = read_field(inode, off.inode_sb)?;
    if array == 0 || file == 0 || inode == 0 || sb == 0 {
        return Err(0);
    }
    let dev: u32 = read_field(sb, off.sb_dev)?;
    Ok((u64::from(dev), read_field(inode, off.inode_ino)?, read_field(file, off.file_flags)?))
}

fn try_exit(ctx: &TracePointContext) -> Result<u32, i32> {
    let off = TP_OFFSETS.load();
    if off.valid == 0 {
        return Ok(0);
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let _ = FORKS.remove(&(pid_tgid as u32));
    // SAFETY: offset comes from this kernel's tracefs format file.
    let group_dead: u8 = unsafe { ctx.read_at(off.exit_group_dead as usize)? };
    if group_dead == 0 {
        return Ok(0);
    }
    let tgid = (pid_tgid >> 32) as u32;
    let Some(mut entry) = EVENTS.reserve::<ExitEvent>(0) else {
        count_lost(EventKind::Exit.loss_slot());
        return Ok(0);
    };
    // SAFETY: exclusively owned reserved slot.
    unsafe {
        entry.as_mut_ptr().write(ExitEvent { header: header(EventKind::Exit, tgid), _pad0: 0, _pad1: 0 });
    }
    // Never a wakeup: nothing races an exit (the record stays until it is read), and in
    // an exec loop a woken agent would be woken again for every process's end. It is read
    // with the next exec or at the agent's poll tick.
    entry.submit(aya_ebpf_bindings::bindings::BPF_RB_NO_WAKEUP as u64);
    Ok(0)
}
