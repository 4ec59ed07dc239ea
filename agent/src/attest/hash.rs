//! SHA-256 of executed files, computed once per file version.
//!
//! A node execs the same few hundred binaries millions of times, so hashing on every exec
//! would dominate the agent's cost. The cache key is everything that changes when a file's
//! content can have changed without us seeing it: (device, inode, size, mtime, ctime).
//! After hashing, the open file is stat'ed again; if it changed while we read it, the hash
//! is thrown away and computed again, so a binary rewritten in place is never reported
//! with its old digest.
//!
//! Only regular files are hashed, and never more bytes than `fstat` reported: whoever
//! controls the file at an exec path may have put a FIFO, a device or a symlink to
//! `/dev/zero` there, and a read that blocks or never ends would stall attestation.

use std::{
    collections::{HashMap, VecDeque},
    ffi::CString,
    fs::File,
    io::{self, Read},
    os::{
        fd::{AsRawFd, FromRawFd},
        unix::fs::{FileTypeExt, MetadataExt},
    },
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ring::digest::{Context, SHA256};
use thiserror::Error;

/// Identity of one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileKey {
    pub fn of(file: &File) -> io::Result<Self> {
        Ok(Self::from_metadata(&file.metadata()?))
    }

    /// (device, inode, size, whole seconds of mtime): the coarser key the per-exec TLS
    /// library and blind-spot checks remember executables by, from `stat` or from the
    /// kernel's identity alike.
    pub fn version(&self) -> (u64, u64, u64, i64) {
        (self.dev, self.ino, self.size, self.mtime_ns.div_euclid(1_000_000_000) as i64)
    }

    /// The key of metadata already read (one `fstat` per lookup on the exec path).
    pub fn from_metadata(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        }
    }
}

impl FileKey {
    /// The key of the executable the kernel described at exec, if it did (the kernel's
    /// internal device number is re-encoded as `stat` reports it).
    pub fn from_kernel(e: &agent_common::ExeIdentity) -> Option<Self> {
        if !e.from_kernel() {
            return None;
        }
        let (major, minor) = e.major_minor();
        // The kernel keeps flags in the nanosecond words' high bits (multigrain
        // timestamps mark a queried ctime with bit 31); a nanosecond count fits in 30.
        const NSEC: u32 = (1 << 30) - 1;
        Some(Self {
            dev: libc::makedev(major, minor),
            ino: e.ino,
            size: e.size,
            mtime_ns: i128::from(e.mtime_sec) * 1_000_000_000 + i128::from(e.mtime_nsec & NSEC),
            ctime_ns: i128::from(e.ctime_sec) * 1_000_000_000 + i128::from(e.ctime_nsec & NSEC),
        })
    }
}

#[derive(Debug, Error)]
pub enum HashError {
    #[error("reading the executable: {0}")]
    Io(#[from] io::Error),
    #[error("executable is {size} bytes, over the {limit}-byte hashing limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("executable kept changing while it was hashed")]
    Unstable,
    #[error("not a regular file ({0}): not hashed")]
    NotRegular(&'static str),
    #[error("hashing stopped: {0}")]
    Cancelled(&'static str),
}

/// What a non-regular file is, for the record.
fn file_kind(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Refuses anything but a regular file (checked on the open descriptor, so the answer is
/// about the file that will be read, not about whatever the path names later).
pub fn ensure_regular(file: &File) -> Result<std::fs::Metadata, HashError> {
    let m = file.metadata()?;
    if m.file_type().is_file() { Ok(m) } else { Err(HashError::NotRegular(file_kind(&m))) }
}

/// Opens `path` as seen from the root directory `root` (e.g. `/proc/<pid>/root`) for
/// hashing, without ever blocking or leaving that root: symlinks are resolved inside it
/// (`RESOLVE_IN_ROOT`, no `/proc` magic links), opening a FIFO with no writer returns at
/// once (`O_NONBLOCK`), and the descriptor must be a regular file (`fstat`), so a symlink
/// to `/dev/zero` ends at a character device and is refused. A final symlink is followed
/// (inside the root): exec paths are often symlinks (`/usr/bin/sh`, `python3`), and
/// refusing them would only push an attacker from a symlink to a copy, whose digest is
/// the same.
pub fn open_for_hashing(root: &Path, path: &str) -> Result<File, HashError> {
    let root_dir = File::open(root)?;
    let rel = CString::new(path.trim_start_matches('/').as_bytes()).map_err(|_| HashError::Io(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    // SAFETY: an all-zero open_how is valid; the fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid dirfd, NUL-terminated path and a correctly sized open_how.
    let fd =
        unsafe { libc::syscall(libc::SYS_openat2, root_dir.as_raw_fd(), rel.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>()) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP) => HashError::NotRegular("a symbolic link"),
            _ => HashError::Io(e),
        });
    }
    // SAFETY: a fresh descriptor from the kernel that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd as i32) };
    ensure_regular(&file)?;
    Ok(file)
}

/// The cache's answer for an open file: a digest it already knows, or the key to compute.
pub enum Lookup {
    Hit(Digest),
    Miss(FileKey),
}

/// A digest and whether it came from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub sha256: String,
    pub cache_hit: bool,
    pub key: FileKey,
}

/// Counters for the agent's health output.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HashStats {
    pub cache_hits: u64,
    pub hashes_computed: u64,
    pub hash_errors: u64,
    /// Total time spent hashing, in microseconds.
    pub hash_micros: u64,
    /// Background hashing: what is pending and what was skipped, by reason.
    #[serde(flatten)]
    pub pool: super::pool::PoolStats,
}

pub struct HashCache {
    entries: Mutex<(HashMap<FileKey, String>, VecDeque<FileKey>)>,
    capacity: usize,
    max_bytes: u64,
    hits: AtomicU64,
    computed: AtomicU64,
    errors: AtomicU64,
    micros: AtomicU64,
}

impl HashCache {
    pub fn new(capacity: usize, max_bytes: u64) -> Self {
        Self {
            entries: Mutex::new((HashMap::new(), VecDeque::new())),
            capacity: capacity.max(1),
            max_bytes,
            hits: AtomicU64::new(0),
            computed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            micros: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> HashStats {
        HashStats {
            cache_hits: self.hits.load(Ordering::Relaxed),
            hashes_computed: self.computed.load(Ordering::Relaxed),
            hash_errors: self.errors.load(Ordering::Relaxed),
            hash_micros: self.micros.load(Ordering::Relaxed),
            pool: Default::default(),
        }
    }

    /// Digest of an open file (opened from /proc/<pid>/exe, so it is the inode that was
    /// actually executed even if the path now names another file).
    pub fn digest(&self, file: &File) -> Result<Digest, HashError> {
        match self.lookup(file)? {
            Lookup::Hit(d) => Ok(d),
            Lookup::Miss(key) => self.compute(file, key, &|| None),
        }
    }

    /// The cached digest of `file`, or the key under which it must be computed. Refuses
    /// (and counts) files that are not regular or over the size limit.
    pub fn lookup(&self, file: &File) -> Result<Lookup, HashError> {
        let result = self.lookup_inner(file);
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// The cached digest of the file version `key` names, without touching the file: for
    /// the identity the kernel read at exec. A key the cache has seen was produced by an
    /// `fstat` of that very file version, so a hit also proves the kernel's device and
    /// inode numbers read as `stat` reports them on that filesystem.
    pub fn cached_digest(&self, key: &FileKey) -> Option<Digest> {
        let sha = self.cached(key)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(Digest { sha256: sha, cache_hit: true, key: *key })
    }

    fn lookup_inner(&self, file: &File) -> Result<Lookup, HashError> {
        let key = FileKey::from_metadata(&ensure_regular(file)?);
        if let Some(sha) = self.cached(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Lookup::Hit(Digest { sha256: sha, cache_hit: true, key }));
        }
        if key.size > self.max_bytes {
            return Err(HashError::TooLarge { size: key.size, limit: self.max_bytes });
        }
        Ok(Lookup::Miss(key))
    }

    /// Hashes `file` (whose key `lookup` returned), reading at most `key.size` bytes, and
    /// caches the result if the file did not change meanwhile. `stop` is asked between
    /// chunks and ends the work early with its reason (a time budget, shutdown).
    pub fn compute(&self, file: &File, key: FileKey, stop: &dyn Fn() -> Option<&'static str>) -> Result<Digest, HashError> {
        let result = self.compute_inner(file, key, stop);
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn compute_inner(&self, file: &File, key: FileKey, stop: &dyn Fn() -> Option<&'static str>) -> Result<Digest, HashError> {
        let mut key = key;
        for _ in 0..3 {
            if key.size > self.max_bytes {
                return Err(HashError::TooLarge { size: key.size, limit: self.max_bytes });
            }
            let started = Instant::now();
            let sha = sha256_bounded(file, key.size, stop);
            self.micros.fetch_add(duration_micros(started.elapsed()), Ordering::Relaxed);
            let sha = sha?;
            self.computed.fetch_add(1, Ordering::Relaxed);
            let after = FileKey::of(file)?;
            if after == key {
                self.insert(key, sha.clone());
                return Ok(Digest { sha256: sha, cache_hit: false, key });
            }
            key = after;
        }
        Err(HashError::Unstable)
    }

    fn cached(&self, key: &FileKey) -> Option<String> {
        self.entries.lock().ok()?.0.get(key).cloned()
    }

    pub(super) fn insert(&self, key: FileKey, sha: String) {
        let Ok(mut guard) = self.entries.lock() else { return };
        let (map, order) = &mut *guard;
        if map.insert(key, sha).is_none() {
            order.push_back(key);
        }
        while map.len() > self.capacity {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// SHA-256 of the first `size` bytes of a file, read from offset 0 through `pread` (the
/// fd's position is irrelevant and other readers are unaffected). Never reads past
/// `size`: a file that still has bytes there grew while it was read, which the caller's
/// re-stat catches. `stop` is asked between chunks.
pub fn sha256_bounded(file: &File, size: u64, stop: &dyn Fn() -> Option<&'static str>) -> Result<String, HashError> {
    use std::os::unix::fs::FileExt;
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    while off < size {
        if let Some(why) = stop() {
            return Err(HashError::Cancelled(why));
        }
        let want = usize::try_from(size - off).unwrap_or(usize::MAX).min(buf.len());
        let n = file.read_at(&mut buf[..want], off)?;
        if n == 0 {
            // Shrank while read: the re-stat sees a new size.
            break;
        }
        ctx.update(&buf[..n]);
        off += n as u64;
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

/// SHA-256 of a whole regular file (tests and tools).
pub fn sha256_from_start(file: &File) -> Result<String, HashError> {
    let m = ensure_regular(file)?;
    sha256_bounded(file, m.len(), &|| None)
}

/// SHA-256 of a byte stream (used for files read by path in tests and tools).
pub fn sha256_reader(mut r: impl Read) -> io::Result<String> {
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Write, os::unix::fs::OpenOptionsExt};

    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn known_digests() {
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        assert_eq!(sha256_from_start(tmp.as_file()).expect("hash"), EMPTY_SHA);
        assert_eq!(sha256_reader(&b"abc"[..]).expect("hash"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn second_lookup_is_a_hit_and_a_rewrite_is_a_miss() {
        let mut tmp = tempfile::NamedTempFile::new().expect("tmp");
        tmp.write_all(b"version one").expect("write");
        let cache = HashCache::new(16, 1 << 20);
        let f = File::open(tmp.path()).expect("open");
        let a = cache.digest(&f).expect("digest");
        let b = cache.digest(&f).expect("digest");
        assert!(!a.cache_hit);
        assert!(b.cache_hit);
        assert_eq!(a.sha256, b.sha256);

        // Rewrite in place: same inode, new size/mtime/ctime.
        std::fs::write(tmp.path(), b"version two, longer").expect("rewrite");
        let f = File::open(tmp.path()).expect("open");
        let c = cache.digest(&f).expect("digest");
        assert!(!c.cache_hit);
        assert_ne!(c.sha256, a.sha256);
        assert_eq!(c.sha256, sha256_reader(&b"version two, longer"[..]).expect("hash"));
        assert_eq!(cache.stats().hashes_computed, 2);
        assert_eq!(cache.stats().cache_hits, 1);
    }

    #[test]
    fn oversized_files_are_refused_and_counted() {
        let mut tmp = tempfile::NamedTempFile::new().expect("tmp");
        tmp.write_all(&[0u8; 100]).expect("write");
        let cache = HashCache::new(16, 10);
        let f = File::open(tmp.path()).expect("open");
        assert!(matches!(cache.digest(&f), Err(HashError::TooLarge { size: 100, limit: 10 })));
        assert_eq!(cache.stats().hash_errors, 1);
    }

    /// What a local user can put at an exec path once the process is gone: a FIFO (an
    /// ordinary open would block forever), a symlink to /dev/zero (a read never ends), a
    /// device. None is read; each is refused at once with what it is.
    #[test]
    fn hostile_files_at_an_exec_path_are_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tmpdir");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero")).expect("symlink");
        std::fs::write(dir.path().join("real"), b"abc").expect("write");
        let started = Instant::now();
        let open = |name: &str| open_for_hashing(dir.path(), &format!("/{name}"));
        assert!(matches!(open("fifo"), Err(HashError::NotRegular("a FIFO"))));
        // Inside the temporary root there is no /dev/zero; from the real root there is.
        assert!(open("zero").is_err());
        let zero_link = dir.path().join("zero");
        assert!(matches!(open_for_hashing(Path::new("/"), zero_link.to_str().expect("utf-8")), Err(HashError::NotRegular("a character device"))));
        std::os::unix::fs::symlink("/fifo", dir.path().join("to-fifo")).expect("symlink");
        assert!(matches!(open("to-fifo"), Err(HashError::NotRegular("a FIFO"))));
        std::os::unix::fs::symlink("real", dir.path().join("to-real")).expect("symlink");
        assert!(open("to-real").is_ok(), "a symlink to a regular file (like /usr/bin/sh) is followed");
        std::os::unix::fs::symlink("/proc/self/exe", dir.path().join("magic")).expect("symlink");
        assert!(open("magic").is_err(), "no /proc magic links out of the root");
        assert!(matches!(open_for_hashing(Path::new("/"), "/dev/zero"), Err(HashError::NotRegular("a character device"))));
        assert!(matches!(open_for_hashing(Path::new("/"), "/tmp"), Err(HashError::NotRegular("a directory"))));
        let f = open("real").expect("a regular file opens");
        assert_eq!(HashCache::new(4, 1 << 20).digest(&f).expect("digest").sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        // An absolute symlink resolves inside the given root, not the agent's.
        std::os::unix::fs::symlink("/real", dir.path().join("abs")).expect("symlink");
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        std::os::unix::fs::symlink("/", dir.path().join("d/up")).expect("symlink");
        assert!(open("d/up/real").is_ok(), "`/` inside the root is the root");
        assert!(open_for_hashing(dir.path(), "/d/up/etc/passwd").is_err(), "the agent's /etc is out of reach");
        // An already-open descriptor on a FIFO is refused by the cache too.
        let fd = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).expect("open fifo");
        assert!(matches!(HashCache::new(4, 1 << 20).digest(&fd), Err(HashError::NotRegular(_))));
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "nothing blocked");
    }

    #[test]
    fn reads_stop_at_the_size_fstat_reported() {
        let mut tmp = tempfile::NamedTempFile::new().expect("tmp");
        tmp.write_all(b"abcdef").expect("write");
        assert_eq!(sha256_bounded(tmp.as_file(), 3, &|| None).expect("hash"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(matches!(sha256_bounded(tmp.as_file(), 6, &|| Some("stop")), Err(HashError::Cancelled("stop"))));
    }

    #[test]
    fn capacity_evicts_oldest() {
        let cache = HashCache::new(2, 1 << 20);
        let files: Vec<_> = (0..3)
            .map(|i| {
                let mut t = tempfile::NamedTempFile::new().expect("tmp");
                t.write_all(format!("file {i}").as_bytes()).expect("write");
                t
            })
            .collect();
        for t in &files {
            cache.digest(&File::open(t.path()).expect("open")).expect("digest");
        }
        // The first was evicted, the last is still cached.
        assert!(!cache.digest(&File::open(files[0].path()).expect("open")).expect("d").cache_hit);
        assert!(cache.digest(&File::open(files[2].path()).expect("open")).expect("d").cache_hit);
    }
}
