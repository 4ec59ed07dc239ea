//! SHA-256 of executed files, computed once per file version.
//!
//! A node execs the same few hundred binaries millions of times, so hashing on every exec
//! would dominate the agent's cost. The cache key is everything that changes when a file's
//! content can have changed without us seeing it: (device, inode, size, mtime, ctime).
//! After hashing, the open file is stat'ed again; if it changed while we read it, the hash
//! is thrown away and computed again, so a binary rewritten in place is never reported
//! with its old digest.

use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    io::{self, Read},
    os::unix::fs::MetadataExt,
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
        let m = file.metadata()?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
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
        }
    }

    /// Digest of an open file (opened from /proc/<pid>/exe, so it is the inode that was
    /// actually executed even if the path now names another file).
    pub fn digest(&self, file: &mut File) -> Result<Digest, HashError> {
        let result = self.digest_inner(file);
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn digest_inner(&self, file: &mut File) -> Result<Digest, HashError> {
        let key = FileKey::of(file)?;
        if let Some(sha) = self.lookup(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Digest { sha256: sha, cache_hit: true, key });
        }
        if key.size > self.max_bytes {
            return Err(HashError::TooLarge { size: key.size, limit: self.max_bytes });
        }
        let mut key = key;
        for _ in 0..3 {
            let started = Instant::now();
            let sha = sha256_from_start(file)?;
            self.micros.fetch_add(duration_micros(started.elapsed()), Ordering::Relaxed);
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

    fn lookup(&self, key: &FileKey) -> Option<String> {
        self.entries.lock().ok()?.0.get(key).cloned()
    }

    fn insert(&self, key: FileKey, sha: String) {
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

/// SHA-256 of a whole file, read from offset 0 through `pread` (the fd's position is
/// irrelevant and other readers are unaffected).
pub fn sha256_from_start(file: &File) -> io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    loop {
        let n = file.read_at(&mut buf, off)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        off += n as u64;
    }
    Ok(hex::encode(ctx.finish().as_ref()))
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
    use std::io::Write;

    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn known_digests() {
        let tmp = tempfile::NamedTempFile::new().expect("tmp");
        assert_eq!(sha256_from_start(tmp.as_file()).expect("hash"), EMPTY_SHA);
        assert_eq!(
            sha256_reader(&b"abc"[..]).expect("hash"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn second_lookup_is_a_hit_and_a_rewrite_is_a_miss() {
        let mut tmp = tempfile::NamedTempFile::new().expect("tmp");
        tmp.write_all(b"version one").expect("write");
        let cache = HashCache::new(16, 1 << 20);
        let mut f = File::open(tmp.path()).expect("open");
        let a = cache.digest(&mut f).expect("digest");
        let b = cache.digest(&mut f).expect("digest");
        assert!(!a.cache_hit);
        assert!(b.cache_hit);
        assert_eq!(a.sha256, b.sha256);

        // Rewrite in place: same inode, new size/mtime/ctime.
        std::fs::write(tmp.path(), b"version two, longer").expect("rewrite");
        let mut f = File::open(tmp.path()).expect("open");
        let c = cache.digest(&mut f).expect("digest");
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
        let mut f = File::open(tmp.path()).expect("open");
        assert!(matches!(cache.digest(&mut f), Err(HashError::TooLarge { size: 100, limit: 10 })));
        assert_eq!(cache.stats().hash_errors, 1);
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
            cache.digest(&mut File::open(t.path()).expect("open")).expect("digest");
        }
        // The first was evicted, the last is still cached.
        assert!(!cache.digest(&mut File::open(files[0].path()).expect("open")).expect("d").cache_hit);
        assert!(cache.digest(&mut File::open(files[2].path()).expect("open")).expect("d").cache_hit);
    }
}
