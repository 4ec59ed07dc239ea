//! The agent must run in the initial PID namespace.
//!
//! Every pid the kernel reports (exec events, `SO_PEERCRED` of Workload API callers) is
//! a pid of the initial namespace, and every procfs read must name the same process. In
//! a child namespace (a pod without `hostPID: true`) the same numbers name other
//! processes or none, so the agent would attest the wrong process. Comparing
//! `/proc/self/ns/pid` with `/proc/1/ns/pid` proves nothing inside a container (its
//! pid 1 shares its namespace); the initial namespace has a fixed inode number instead.

use std::{os::unix::fs::MetadataExt, path::Path};

/// `PROC_PID_INIT_INO` in include/linux/proc_ns.h: the inode of the initial PID
/// namespace, the same on every boot.
pub const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

#[derive(Debug, thiserror::Error)]
pub enum PidNsError {
    #[error(
        "not in the initial PID namespace (pid namespace inode {0:#x}, the initial one is {PROC_PID_INIT_INO:#x}): pids from the kernel would name other processes; run with the host's PID namespace (hostPID: true)"
    )]
    NotInitial(u64),
    #[error("cannot tell which PID namespace this is: {0}")]
    Unreadable(std::io::Error),
}

/// Ok when this process is in the initial PID namespace.
pub fn check_initial() -> Result<(), PidNsError> {
    check(Path::new("/proc/self/ns/pid"))
}

fn check(ns: &Path) -> Result<(), PidNsError> {
    // stat follows the magic link to the nsfs inode: its number is the namespace's.
    let ino = std::fs::metadata(ns).map_err(PidNsError::Unreadable)?.ino();
    if ino == PROC_PID_INIT_INO { Ok(()) } else { Err(PidNsError::NotInitial(ino)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test runner itself runs on the host (the integration test runs the agent in
    /// a new namespace); a file that is not a namespace is refused, not misread.
    #[test]
    fn a_non_namespace_inode_is_refused() {
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        assert!(matches!(check(tmp.path()), Err(PidNsError::NotInitial(_))));
        assert!(matches!(check(Path::new("/nonexistent/ns/pid")), Err(PidNsError::Unreadable(_))));
    }
}
