//! cgroup v2 id <-> path.
//!
//! The kernel reports a cgroup as its id (the inode number of its directory in the cgroup2
//! filesystem); identities are written in terms of paths. The id can be opened directly as
//! a kernfs file handle (what systemd and bpftool do), which is O(1) and works for cgroups
//! created after start-up; a tree walk is the fallback when file handles are refused.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// kernfs file handle type (`FILEID_KERNFS` in include/linux/exportfs.h).
const FILEID_KERNFS: i32 = 0xfe;

/// Resolves cgroup ids under one cgroup2 mount, caching what it learns.
pub struct CgroupResolver {
    root: PathBuf,
    cache: Mutex<HashMap<u64, String>>,
}

impl CgroupResolver {
    pub fn new(cgroup2_mount: impl Into<PathBuf>) -> Self {
        Self { root: cgroup2_mount.into(), cache: Mutex::new(HashMap::new()) }
    }

    pub fn mount(&self) -> &Path {
        &self.root
    }

    /// The cgroup path (as in /proc/<pid>/cgroup, starting with `/`) for an id.
    pub fn path_of(&self, id: u64) -> Option<String> {
        if let Some(p) = self.cache.lock().ok()?.get(&id) {
            return Some(p.clone());
        }
        let found = self.by_handle(id).or_else(|| self.walk_for(id))?;
        if let Ok(mut c) = self.cache.lock() {
            // Bound the cache; a node runs thousands of cgroups at most, ids are never reused.
            if c.len() > 65_536 {
                c.clear();
            }
            c.insert(id, found.clone());
        }
        Some(found)
    }

    /// The id of a cgroup path (relative to the mount), from its directory inode.
    pub fn id_of(&self, path: &str) -> Option<u64> {
        let dir = self.root.join(path.trim_start_matches('/'));
        let id = fs::metadata(dir).ok()?.ino();
        if let Ok(mut c) = self.cache.lock() {
            c.insert(id, normalise(path));
        }
        Some(id)
    }

    fn relative(&self, abs: &Path) -> Option<String> {
        let rel = abs.strip_prefix(&self.root).ok()?;
        Some(normalise(&rel.to_string_lossy()))
    }

    fn by_handle(&self, id: u64) -> Option<String> {
        #[repr(C)]
        struct Handle {
            bytes: u32,
            kind: i32,
            id: u64,
        }
        let mount = fs::File::open(&self.root).ok()?;
        let mut h = Handle { bytes: 8, kind: FILEID_KERNFS, id };
        // SAFETY: `h` is a valid `struct file_handle` with an 8-byte payload; the returned fd
        // (if any) is owned and closed below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                std::os::fd::AsRawFd::as_raw_fd(&mount),
                &mut h as *mut Handle,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: a fresh fd from the kernel that nothing else owns.
        let dir = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        let abs = fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir))).ok()?;
        self.relative(&abs)
    }

    fn walk_for(&self, id: u64) -> Option<String> {
        let mut stack = vec![self.root.clone()];
        let mut found = None;
        let mut cache = self.cache.lock().ok()?;
        while let Some(dir) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else { continue };
            if let Some(rel) = self.relative(&dir) {
                cache.insert(meta.ino(), rel.clone());
                if meta.ino() == id {
                    found = Some(rel);
                }
            }
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            stack.extend(entries.filter_map(|e| e.ok()).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        found
    }
}

fn normalise(rel: &str) -> String {
    format!("/{}", rel.trim_matches('/'))
}

/// The cgroup v2 path from the contents of /proc/<pid>/cgroup (the `0::` line).
pub fn v2_path_from_proc(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("0::")).map(|p| normalise(p.trim_end_matches(" (deleted)")))
}

/// The cgroup v2 path of a process, read through its procfs handle.
pub fn v2_path_of(p: &procfs::process::Process) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    p.open_relative("cgroup").ok()?.read_to_string(&mut text).ok()?;
    v2_path_from_proc(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_unified_line_among_v1_lines() {
        let text = "12:pids:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n0::/kubepods.slice/x.scope\n";
        assert_eq!(v2_path_from_proc(text).as_deref(), Some("/kubepods.slice/x.scope"));
        assert_eq!(v2_path_from_proc("0::/\n").as_deref(), Some("/"));
        assert_eq!(v2_path_from_proc("3:cpu:/a\n"), None);
        assert_eq!(v2_path_from_proc(""), None);
    }

    /// Walks a plain directory tree (any filesystem has inodes), so the fallback is tested
    /// without root; the handle path is exercised by the kernel integration tests.
    #[test]
    fn walk_fallback_finds_a_directory_by_inode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let leaf = tmp.path().join("kubepods.slice/pod.slice");
        fs::create_dir_all(&leaf).expect("mkdir");
        let ino = fs::metadata(&leaf).expect("stat").ino();
        let r = CgroupResolver::new(tmp.path());
        assert_eq!(r.walk_for(ino).as_deref(), Some("/kubepods.slice/pod.slice"));
        assert_eq!(r.path_of(ino).as_deref(), Some("/kubepods.slice/pod.slice"));
        assert_eq!(r.id_of("/kubepods.slice/pod.slice"), Some(ino));
        assert_eq!(r.walk_for(u64::MAX), None);
    }
}
