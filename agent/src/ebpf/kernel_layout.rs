//! Where the exec program finds the executable's inode, from this kernel's BTF.
//!
//! The exec program follows `task->mm->exe_file->f_inode` to read the executed file's
//! identity (device, inode, size, mtime, ctime), so that a hash-cache hit needs no procfs
//! read. The programs are not CO-RE-relocated, so the field offsets are looked up here,
//! once at start-up, in `/sys/kernel/btf/vmlinux` and written into the object's read-only
//! data. Layouts that moved between kernels are tried newest first: the inode times are
//! `i_mtime_sec`/`i_mtime_nsec` since 6.11, `__i_mtime` (a `timespec64`) in 6.7-6.10 and
//! `i_mtime` before; the change time went through `__i_ctime` (6.6) the same way.
//! Anything not found leaves the offsets invalid and the agent stats through procfs.

use std::path::Path;

use agent_common::{ExeOffsets, UringOffsets};
use btf::btf::{Btf, Type};
use thiserror::Error;

/// The kernel's own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum LayoutError {
    #[error("reading kernel BTF {path}: {source}")]
    Btf { path: String, source: btf::Error },
    #[error("kernel BTF has no {0}")]
    Missing(String),
    #[error("{0} is a bit-field, not a readable field")]
    BitField(String),
}

/// What the programs that follow kernel pointers need; each may be missing alone.
pub struct KernelOffsets {
    pub exe: Result<ExeOffsets, LayoutError>,
    pub uring: Result<UringOffsets, LayoutError>,
}

/// The offsets of the exec program and of the io_uring program, from one parse of the
/// BTF at `path`.
pub fn offsets(path: &Path) -> Result<KernelOffsets, LayoutError> {
    let btf = Btf::from_file(path).map_err(|source| LayoutError::Btf { path: path.display().to_string(), source })?;
    let layout = Layout(&btf);
    // The parse's memory is freed on return, and given back to the kernel with the rest
    // of start-up's (`release_startup_memory`, before the event loop).
    Ok(KernelOffsets { exe: exe(&layout), uring: uring(&layout) })
}

/// Where an io_uring request keeps what the programs read: `io_kiocb.cmd` holds the
/// per-opcode data (`struct io_open` in io_uring/openclose.c, whose `filename` is the
/// kernel's copy of the path; `io_sr_msg`, `io_rw` and `io_connect` with user pointers).
fn uring(layout: &Layout<'_>) -> Result<UringOffsets, LayoutError> {
    Ok(UringOffsets {
        valid: 1,
        kiocb_cmd: layout.field("io_kiocb", "cmd")?,
        open_filename: layout.field("io_open", "filename")?,
        open_how_flags: layout.field("io_open", "how")? + layout.field("open_how", "flags")?,
        filename_name: layout.field("filename", "name")?,
        kiocb_fd: layout.field("io_kiocb", "cqe")? + layout.field("io_cqe", "fd")?,
        sr_buf: layout.field("io_sr_msg", "buf")?,
        sr_len: layout.field("io_sr_msg", "len")?,
        rw_addr: layout.field("io_rw", "addr")?,
        rw_len: layout.field("io_rw", "len")?,
        connect_addr: layout.field("io_connect", "addr")?,
        close_fd: layout.field("io_close", "fd")?,
        close_file_slot: layout.field("io_close", "file_slot")?,
    })
}

fn exe(layout: &Layout<'_>) -> Result<ExeOffsets, LayoutError> {
    let (mtime_sec, mtime_nsec) = layout.time("inode", &["i_mtime_sec", "__i_mtime", "i_mtime"], &["i_mtime_nsec"])?;
    let (ctime_sec, ctime_nsec) = layout.time("inode", &["i_ctime_sec", "__i_ctime", "i_ctime"], &["i_ctime_nsec"])?;
    let offsets = ExeOffsets {
        valid: 1,
        task_mm: layout.field("task_struct", "mm")?,
        mm_exe_file: layout.field("mm_struct", "exe_file")?,
        file_inode: layout.field("file", "f_inode")?,
        inode_ino: layout.field("inode", "i_ino")?,
        inode_sb: layout.field("inode", "i_sb")?,
        inode_size: layout.field("inode", "i_size")?,
        inode_mtime_sec: mtime_sec,
        inode_mtime_nsec: mtime_nsec,
        inode_ctime_sec: ctime_sec,
        inode_ctime_nsec: ctime_nsec,
        sb_dev: layout.field("super_block", "s_dev")?,
        task_group_leader: layout.field("task_struct", "group_leader")?,
        task_start_boottime: layout.field("task_struct", "start_boottime")?,
        task_files: layout.field("task_struct", "files")?,
        files_fdt: layout.field("files_struct", "fdt")?,
        fdtable_fd: layout.field("fdtable", "fd")?,
        fdtable_max_fds: layout.field("fdtable", "max_fds")?,
        file_flags: layout.field("file", "f_flags")?,
    };
    Ok(offsets)
}

struct Layout<'a>(&'a Btf);

impl Layout<'_> {
    /// Byte offset of `field` in struct `ty`, looking into anonymous struct and union
    /// members (the kernel nests many fields in them).
    fn field(&self, ty: &str, field: &str) -> Result<u32, LayoutError> {
        let t = self.struct_named(ty).ok_or_else(|| LayoutError::Missing(format!("struct {ty}")))?;
        let bits = self.find(t, field, 0, 0).ok_or_else(|| LayoutError::Missing(format!("{ty}.{field}")))?;
        if bits % 8 != 0 {
            return Err(LayoutError::BitField(format!("{ty}.{field}")));
        }
        Ok(bits / 8)
    }

    /// The struct or union named `ty`. A name may also be a function's (`io_connect` is
    /// both), and the name index keeps one type per name: the others are searched.
    fn struct_named(&self, ty: &str) -> Option<&Type> {
        let is_struct = |t: &Type| matches!(t, Type::Struct(_) | Type::Union(_));
        match self.0.get_type_by_name(ty) {
            Ok(t) if is_struct(&t.base_type) => Some(&t.base_type),
            _ => self.0.get_types().iter().find(|t| t.name.as_deref() == Some(ty) && is_struct(&t.base_type)).map(|t| &t.base_type),
        }
    }

    fn find(&self, ty: &Type, field: &str, base_bits: u32, depth: u32) -> Option<u32> {
        let (Type::Struct(s) | Type::Union(s)) = ty else { return None };
        for m in &s.members {
            match m.name.as_deref() {
                Some(n) if n == field => return Some(base_bits + m.offset),
                None | Some("") if depth < 8 => {
                    let inner = self.0.get_type_by_id(m.type_id).ok()?;
                    if let Some(found) = self.find(&inner.base_type, field, base_bits + m.offset, depth + 1) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// (seconds, nanoseconds) offsets of a time stored either as two fields (`*_sec`,
    /// `*_nsec`, the first name in each list) or as a `timespec64` member.
    fn time(&self, ty: &str, names: &[&str], nsec_names: &[&str]) -> Result<(u32, u32), LayoutError> {
        if let (Ok(sec), Some(Ok(nsec))) = (self.field(ty, names[0]), nsec_names.first().map(|n| self.field(ty, n))) {
            return Ok((sec, nsec));
        }
        for name in &names[1..] {
            if let Ok(at) = self.field(ty, name) {
                return Ok((at + self.field("timespec64", "tv_sec")?, at + self.field("timespec64", "tv_nsec")?));
            }
        }
        Err(LayoutError::Missing(format!("{ty}.{}", names.join(" / "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's offsets; None (and said) on a kernel without a BTF file.
    fn this_kernels_offsets() -> Option<KernelOffsets> {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("no {VMLINUX_BTF}: nothing to check on this kernel");
            return None;
        }
        Some(offsets(Path::new(VMLINUX_BTF)).expect("BTF"))
    }

    /// The running kernel's BTF yields every offset, at places consistent with the
    /// structs (the times after the size, the nanoseconds after or beside the seconds).
    #[test]
    fn this_kernels_btf_has_every_exec_field() {
        let Some(o) = this_kernels_offsets() else { return };
        let o = o.exe.expect("offsets");
        assert_eq!(o.valid, 1);
        assert!(o.task_mm > 0 && o.mm_exe_file > 0 && o.inode_ino > 0 && o.inode_size > 0);
        assert_ne!(o.inode_mtime_sec, o.inode_ctime_sec);
        assert_ne!(o.inode_mtime_nsec, o.inode_ctime_nsec);
        assert_ne!(o.inode_mtime_sec, o.inode_mtime_nsec);
    }

    /// io_uring's open request layout is in this kernel's BTF: `cmd` at the start of the
    /// request (a union with `file`), the path pointer after `file`, `dfd` and `file_slot`.
    #[test]
    fn this_kernels_btf_has_the_io_uring_open_layout() {
        let Some(o) = this_kernels_offsets() else { return };
        let o = o.uring.expect("io_uring offsets");
        assert_eq!((o.valid, o.kiocb_cmd, o.open_filename, o.filename_name), (1, 0, 16, 0), "{o:?}");
        assert!(o.open_how_flags > o.open_filename, "{o:?}");
        // The send's buffer and the connect's address follow the request's `file`.
        assert_eq!((o.sr_buf, o.connect_addr), (8, 8), "{o:?}");
        assert!(o.sr_len > o.sr_buf && o.rw_len > o.rw_addr && o.kiocb_fd > 0, "{o:?}");
    }

    #[test]
    fn a_missing_file_is_a_clear_error() {
        let Err(e) = offsets(Path::new("/nonexistent/vmlinux")) else { panic!("no file, no offsets") };
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
    }
}
