//! Finding TLS libraries to hook, wherever processes load them from.
//!
//! A uprobe is attached to a file (an inode), so each distinct library file needs its
//! own attachment: the host's libssl, and each container image's copy, reached through
//! /proc/<pid>/root. Libraries on the host's standard paths are attached at start-up (so
//! the first request of the first curl is seen) and stay attached. Others are attached
//! when a scan of /proc/*/maps first sees them, and detached when no process maps them
//! any more. Go binaries carry their TLS inside: they are attached when they are exec'd
//! ([`LibraryWatcher::attach_go`]) and detached when no process runs them any more.
//!
//! Some executables carry OpenSSL compiled in (official Node.js builds, static curl):
//! they are attached themselves, at the offsets [`super::static_tls`] finds, as soon as
//! one is exec'd (before its first request) or a scan sees one running, and detached
//! when no process runs them any more.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use tracing::{debug, info, warn};

use super::{
    hook_site::{self, MachineCode, Shared},
    static_tls,
    uncovered::GoBinary,
};
use crate::attest::{hash::FileKey, record::ProcessRecord};
use crate::ebpf::loader::{LibraryLinks, LoadError, Probes, TlsLibrary};

/// Executables larger than this are not inspected for a TLS library of their own.
const MAX_EXECUTABLE: u64 = 1 << 30;
/// Executables found to carry no TLS library, remembered at most (then forgotten at once).
const PLAIN_EXECUTABLES: usize = 4096;

/// Host paths probed at start-up.
const SYSTEM_LIBS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/usr/lib/x86_64-linux-gnu/libssl.so.1.1",
    "/usr/lib/x86_64-linux-gnu/libgnutls.so.30",
    "/usr/lib/aarch64-linux-gnu/libssl.so.3",
    "/usr/lib/aarch64-linux-gnu/libgnutls.so.30",
    "/usr/lib64/libssl.so.3",
    "/usr/lib64/libgnutls.so.30",
    "/lib/libssl.so.3",
    "/usr/lib/libssl.so.3",
];

pub fn classify(path: &str) -> Option<TlsLibrary> {
    let base = path.rsplit('/').next()?;
    if base.starts_with("libssl.so") {
        Some(TlsLibrary::OpenSsl)
    } else if base.starts_with("libgnutls.so") {
        Some(TlsLibrary::GnuTls)
    } else {
        None
    }
}

/// Library paths in a /proc/<pid>/maps text (mapped files, deduplicated).
pub fn libraries_in_maps(maps: &str) -> HashSet<&str> {
    maps.lines().filter_map(|l| l.split_whitespace().nth(5)).filter(|p| p.starts_with('/') && classify(p).is_some()).collect()
}

struct Attached {
    path: PathBuf,
    links: LibraryLinks,
    pinned: bool,
}

#[derive(Default)]
pub struct LibraryWatcher {
    attached: HashMap<(u64, u64), Attached>,
    /// Files that could not be attached (no symbols, ...): not retried every scan.
    refused: HashSet<(u64, u64)>,
    /// Executables (dev, inode, size, mtime) inspected and found to carry no TLS library.
    plain_executables: HashSet<(u64, u64, u64, i64)>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A path to file `id`, which `pid` sees at `path_in_ns` (in its own mount namespace):
/// the host path when it is the same file, so the attachment does not depend on this pid
/// living on; else the path through the process's root.
fn stable_path(pid: &str, path_in_ns: &str, id: (u64, u64)) -> PathBuf {
    match file_id(Path::new(path_in_ns)) {
        Some(host) if host == id => PathBuf::from(path_in_ns),
        _ => PathBuf::from(format!("/proc/{pid}/root{path_in_ns}")),
    }
}

/// Offsets to hook, by symbol whose programs go there, and the pairs hooked once.
type Hooks = (Vec<(&'static str, u64)>, Vec<Shared>);

/// Where to hook `lib` in `file`: its functions' file offsets, where pairs that share a
/// cheaper internal function are hooked there once ([`hook_site`]).
fn hooks_in(file: &fs::File, lib: TlsLibrary) -> Result<Hooks, String> {
    let data = object::ReadCache::new(file.try_clone().map_err(|e| e.to_string())?);
    let mut offsets = static_tls::find_functions(&data, &lib.symbols()).map_err(|e| e.to_string())?;
    let executable = static_tls::executable_ranges(&data).map_err(|e| e.to_string())?;
    let shared = hook_site::share_sites(&MachineCode { data: &data, executable }, &mut offsets, lib.shared_pairs());
    Ok((offsets, shared))
}

/// The file as this process has it open: a uprobe attached through it lands on the inode
/// whose code was read, whatever happens to the path meanwhile.
fn via_fd(file: &fs::File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// What was attached, for the log line: the library, the `place` it lives, the pairs shared.
fn describe(lib: TlsLibrary, place: &str, shared: &[Shared]) -> String {
    let mut what = format!("{lib:?}{place}");
    for s in shared {
        what.push_str(&format!("; {} and {} hooked once, at the internal function both call ({:#x})", s.plain, s.ex, s.target));
    }
    what
}

impl LibraryWatcher {
    pub fn attached_count(&self) -> usize {
        self.attached.len()
    }

    fn attach(&mut self, probes: &mut Probes, lib: TlsLibrary, path: PathBuf, pinned: bool) {
        let Some(id) = file_id(&path) else { return };
        if self.attached.contains_key(&id) || self.refused.contains(&id) {
            return;
        }
        let attached = fs::File::open(&path).map_err(|e| e.to_string()).and_then(|file| hooks_in(&file, lib).map(|hooks| (file, hooks)));
        match attached {
            Ok((file, (offsets, shared))) if !offsets.is_empty() => {
                let attached = probes.attach_at(lib, &via_fd(&file), &offsets);
                self.record(id, path, pinned, attached, describe(lib, "", &shared));
            }
            Ok(_) => self.record(id, path, pinned, Err(LoadError::Missing("TLS function in the file")), format!("{lib:?}")),
            Err(e) => {
                warn!("cannot read {} for TLS capture: {e}", path.display());
                self.refused.insert(id);
            }
        }
    }

    fn record(&mut self, id: (u64, u64), path: PathBuf, pinned: bool, attached: Result<LibraryLinks, LoadError>, what: String) {
        match attached {
            Ok(links) => {
                info!("TLS capture attached to {} ({what})", path.display());
                self.attached.insert(id, Attached { path, links, pinned });
            }
            Err(e) => {
                warn!("cannot attach TLS capture to {} ({what}): {e}", path.display());
                self.refused.insert(id);
            }
        }
    }

    /// Attaches the Go TLS probe to an exec'd Go binary, unless it already is. The probe
    /// is attached through the file the inspector opened (`/proc/self/fd/N`), so it lands
    /// on the inode whose function table gave the offset, wherever the binary lives (a
    /// container's root, a deleted file still running).
    pub fn attach_go(&mut self, probes: &mut Probes, go: &GoBinary) -> Result<(), LoadError> {
        if self.attached.contains_key(&go.id) {
            return Ok(());
        }
        let links = probes.attach_go_tls(&via_fd(&go.file), go.offset)?;
        info!("Go TLS capture attached to {} at offset {:#x}", go.binary, go.offset);
        self.attached.insert(go.id, Attached { path: PathBuf::from(&go.binary), links, pinned: false });
        Ok(())
    }

    /// A process was exec'd: if its executable has OpenSSL compiled in, attach to it now,
    /// before the process sends its first request.
    pub fn on_exec(&mut self, probes: &mut Probes, rec: &ProcessRecord) {
        // Known by the kernel's identity of the file: nothing to open or stat.
        if let Some(k) = rec.kernel_exe
            && self.known(&k.version())
        {
            return;
        }
        self.check_executable(probes, &rec.pid.to_string());
    }

    /// The executable of this version was inspected and carries no TLS library of its own
    /// (nothing to attach when one of its processes starts).
    pub fn is_plain(&self, key: &(u64, u64, u64, i64)) -> bool {
        self.plain_executables.contains(key)
    }

    /// The executable of this (dev, inode, size, mtime) was inspected already.
    fn known(&self, key: &(u64, u64, u64, i64)) -> bool {
        let id = (key.0, key.1);
        self.attached.contains_key(&id) || self.refused.contains(&id) || self.plain_executables.contains(key)
    }

    /// Attaches to the executable `pid` runs if it carries OpenSSL of its own (once per
    /// file). Returns the file's id, to keep an attachment while a process runs it.
    fn check_executable(&mut self, probes: &mut Probes, pid: &str) -> Option<(u64, u64)> {
        let link = PathBuf::from(format!("/proc/{pid}/exe"));
        let meta = fs::metadata(&link).ok()?;
        let id = (meta.dev(), meta.ino());
        let key = FileKey::from_metadata(&meta).version();
        if self.known(&key) {
            return Some(id);
        }
        let lib = TlsLibrary::OpenSsl;
        // Attached through the file that was parsed (`/proc/self/fd/N`), not the process's
        // exe link: a short-lived process that exits meanwhile must not make the attach
        // fail (and the file be refused for good).
        let file = fs::File::open(&link).map_err(|e| e.to_string());
        let found = match &file {
            _ if meta.size() > MAX_EXECUTABLE => Ok((Vec::new(), Vec::new())),
            Ok(f) => hooks_in(f, lib),
            Err(e) => Err(e.clone()),
        };
        match (found, &file) {
            (Ok((offsets, shared)), Ok(f)) if !offsets.is_empty() => {
                let path = fs::read_link(&link).ok().map_or(link.clone(), |p| stable_path(pid, &p.to_string_lossy(), id));
                let attached = probes.attach_at(lib, &via_fd(f), &offsets);
                self.record(id, path, false, attached, describe(lib, " compiled into the executable", &shared));
            }
            (Ok(_), _) => self.remember_plain(key),
            (Err(e), _) => {
                debug!("executable of pid {pid} not inspected for TLS libraries: {e}");
                self.remember_plain(key);
            }
        }
        Some(id)
    }

    fn remember_plain(&mut self, key: (u64, u64, u64, i64)) {
        if self.plain_executables.len() >= PLAIN_EXECUTABLES {
            self.plain_executables.clear();
        }
        self.plain_executables.insert(key);
    }

    /// Attaches the host's standard libraries; they stay attached.
    pub fn attach_system(&mut self, probes: &mut Probes) {
        for p in SYSTEM_LIBS {
            let path = Path::new(p);
            if let (Some(lib), Ok(real)) = (classify(p), fs::canonicalize(path)) {
                self.attach(probes, lib, real, true);
            }
        }
    }

    /// One pass over /proc/*/maps: attach what is new, detach what nobody maps.
    pub fn scan(&mut self, probes: &mut Probes) {
        let mut seen = HashSet::new();
        let Ok(dir) = fs::read_dir("/proc") else { return };
        for entry in dir.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
            // Processes started before the agent, or whose exec event was missed.
            seen.extend(self.check_executable(probes, pid));
            let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else { continue };
            for lib_path in libraries_in_maps(&maps) {
                let Some(lib) = classify(lib_path) else { continue };
                // The path is in the process's mount namespace; reach it through its root.
                let Some(id) = file_id(Path::new(&format!("/proc/{pid}/root{lib_path}"))) else { continue };
                seen.insert(id);
                if !self.attached.contains_key(&id) {
                    self.attach(probes, lib, stable_path(pid, lib_path, id), false);
                }
            }
        }
        let gone: Vec<(u64, u64)> = self.attached.iter().filter(|(id, a)| !a.pinned && !seen.contains(id)).map(|(id, _)| *id).collect();
        for id in gone {
            if let Some(a) = self.attached.remove(&id) {
                info!("TLS capture detached from {} (no process maps or runs it)", a.path.display());
                probes.detach_library(a.links);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tls_libraries_in_maps() {
        let maps = "\
7f00-7f01 r-xp 00000000 fd:00 123 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f01-7f02 r--p 00001000 fd:00 123 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f02-7f03 r-xp 00000000 fd:00 124 /usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3
7f03-7f04 r-xp 00000000 fd:00 125 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f04-7f05 rw-p 00000000 00:00 0 [heap]
7f05-7f06 rw-p 00000000 00:00 0
garbage line
";
        let libs = libraries_in_maps(maps);
        assert_eq!(libs.len(), 2);
        assert!(libs.contains("/usr/lib/x86_64-linux-gnu/libssl.so.3"));
        assert_eq!(classify("/usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3"), Some(TlsLibrary::GnuTls));
        assert_eq!(classify("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"), None);
        assert_eq!(classify(""), None);
    }

    /// The host's libssl (Debian 12: OpenSSL 3.0) is what every test client here links:
    /// both pairs share their internal functions, each hooked once, and every offset lies
    /// inside the file.
    #[test]
    #[allow(clippy::expect_used)] // tests: the machines this suite runs on have it
    fn the_hosts_libssl_is_hooked_at_its_shared_internal_functions() {
        let file = fs::File::open("/usr/lib/x86_64-linux-gnu/libssl.so.3").expect("Debian's libssl3");
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (offsets, shared) = hooks_in(&file, TlsLibrary::OpenSsl).unwrap_or_default();
        assert_eq!(shared.iter().map(|s| s.ex).collect::<Vec<_>>(), ["SSL_write_ex", "SSL_read_ex"], "{offsets:x?}");
        assert_eq!(offsets.len(), 2);
        assert!(offsets.iter().all(|(_, o)| *o > 0 && *o < size));
        assert!(offsets.iter().all(|(s, o)| shared.iter().any(|sh| sh.ex == *s && sh.target == *o)));
    }

    /// GnuTLS exports no pair: its functions keep their own hooks.
    #[test]
    #[allow(clippy::expect_used)]
    fn gnutls_keeps_its_exported_hooks() {
        let file = fs::File::open("/usr/lib/x86_64-linux-gnu/libgnutls.so.30").expect("Debian's libgnutls30");
        let (offsets, shared) = hooks_in(&file, TlsLibrary::GnuTls).unwrap_or_default();
        assert!(shared.is_empty());
        assert_eq!(offsets.iter().map(|(s, _)| *s).collect::<Vec<_>>(), ["gnutls_record_send", "gnutls_record_recv"]);
    }
}
