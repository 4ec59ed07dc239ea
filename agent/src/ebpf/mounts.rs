//! Kernel filesystems the agent needs: tracefs (tracepoint ids and formats), bpffs (pins),
//! and a cgroup2 hierarchy (to turn cgroup ids into paths).
//!
//! A DaemonSet usually gets these from the host; on a bare machine they may be missing,
//! and mounting them is cheaper for the operator than a failed start.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MountError {
    #[error("cannot mount {fstype} at {target}: {source}")]
    Mount { fstype: &'static str, target: PathBuf, source: io::Error },
    #[error("reading /proc/self/mountinfo: {0}")]
    MountInfo(io::Error),
}

/// One line of /proc/self/mountinfo, reduced to what we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    pub target: PathBuf,
    pub fstype: String,
}

/// Parses /proc/self/mountinfo: `id parent maj:min root target opts [optional...] - fstype src superopts`.
pub fn parse_mountinfo(text: &str) -> Vec<MountPoint> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let target = fields.nth(4)?;
            let fstype = fields.skip_while(|f| *f != "-").nth(1)?;
            Some(MountPoint { target: PathBuf::from(unescape(target)), fstype: fstype.to_owned() })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') as u32 * 64 + (b[i + 2] - b'0') as u32 * 8 + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mounts() -> Result<Vec<MountPoint>, MountError> {
    fs::read_to_string("/proc/self/mountinfo").map(|t| parse_mountinfo(&t)).map_err(MountError::MountInfo)
}

/// First mount point of `fstype`, if any.
pub fn find(fstype: &str) -> Result<Option<PathBuf>, MountError> {
    Ok(mounts()?.into_iter().find(|m| m.fstype == fstype).map(|m| m.target))
}

fn mount(fstype: &'static str, target: &Path) -> Result<(), MountError> {
    let err = |source| MountError::Mount { fstype, target: target.to_owned(), source };
    fs::create_dir_all(target).map_err(err)?;
    let c_target = CString::new(target.as_os_str().as_encoded_bytes()).map_err(|e| err(io::Error::other(e)))?;
    let c_type = CString::new(fstype).map_err(|e| err(io::Error::other(e)))?;
    let c_src = CString::new("nodev").map_err(|e| err(io::Error::other(e)))?;
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe { libc::mount(c_src.as_ptr(), c_target.as_ptr(), c_type.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// What [`ensure`] found or did, for the start-up log line.
#[derive(Debug, Default)]
pub struct Mounted {
    pub tracefs: PathBuf,
    pub cgroup2: PathBuf,
    /// Filesystems this agent mounted itself.
    pub mounted_by_us: Vec<&'static str>,
}

/// Makes sure tracefs, bpffs and cgroup2 are mounted, mounting what is missing.
pub fn ensure() -> Result<Mounted, MountError> {
    let mut done = Mounted::default();
    done.tracefs = match find("tracefs")? {
        Some(p) => p,
        None => {
            let p = PathBuf::from("/sys/kernel/tracing");
            mount("tracefs", &p)?;
            done.mounted_by_us.push("tracefs");
            p
        }
    };
    if find("bpf")?.is_none() {
        mount("bpf", Path::new("/sys/fs/bpf"))?;
        done.mounted_by_us.push("bpffs");
    }
    done.cgroup2 = match find("cgroup2")? {
        Some(p) => p,
        None => {
            // Hybrid/v1 hosts still have the v2 hierarchy that bpf_get_current_cgroup_id
            // reports; it just is not mounted anywhere.
            let p = PathBuf::from("/run/sigil/cgroup2");
            mount("cgroup2", &p)?;
            done.mounted_by_us.push("cgroup2");
            p
        }
    };
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines_with_optional_fields_and_escapes() {
        let text = "\
36 35 98:0 / /sys/kernel/tracing rw,nosuid - tracefs nodev rw
37 35 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:9 master:1 - cgroup2 cgroup2 rw
38 35 0:31 / /mnt/with\\040space rw - ext4 /dev/vda rw
garbage
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], MountPoint { target: "/sys/kernel/tracing".into(), fstype: "tracefs".into() });
        assert_eq!(m[1].fstype, "cgroup2");
        assert_eq!(m[1].target, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m[2].target, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn unescape_leaves_incomplete_escapes_alone() {
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("\\134x"), "\\x");
    }
}
