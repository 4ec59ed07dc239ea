//! Hashing off the event thread.
//!
//! Attestation must read procfs while the process still exists, so the event thread does
//! that at once; hashing a binary the cache does not know can take seconds (a 1 GiB file),
//! and a burst of distinct large executables would otherwise hold every later exec — and
//! the ring buffer behind it — hostage. The event thread opens the executable (the
//! descriptor pins the inode that ran) and hands it here.
//!
//! Bounded on every axis, and every refusal is counted and reported on the record:
//! - jobs queue in two lanes: small files (the common case) and large ones; at most
//!   `workers - 1` large files are hashed at a time, so one worker always serves small
//!   files and an ordinary exec is never stuck behind a flood of huge ones;
//! - each lane has a bound (jobs; bytes for the large lane), past which a job is skipped;
//! - each file has a time budget, checked between chunks.

use std::{
    collections::VecDeque,
    fs::File,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::hash::{Digest, FileKey, HashCache, HashError, Lookup};

/// Files at most this large take the small lane.
pub const SMALL_FILE_BYTES: u64 = 16 << 20;
/// Small-lane jobs waiting at most (each holds one open descriptor).
const SMALL_QUEUE_JOBS: usize = 1024;
/// Large-lane jobs waiting at most.
const LARGE_QUEUE_JOBS: usize = 64;

/// Why a binary was not hashed (a record field and a counter label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashSkip {
    /// The hash queue was full (too many distinct binaries at once).
    QueueFull,
    /// Hashing took longer than the per-file time budget.
    TimeBudget,
    /// Larger than `--max-hash-bytes`.
    TooLarge,
    /// The file was a FIFO, device, socket or symlink: never read.
    NotRegularFile,
    /// The agent stopped before the hash was computed.
    Shutdown,
}

impl HashSkip {
    /// The name in records (`binary.hash_skipped`) and counter labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::TimeBudget => "time_budget",
            Self::TooLarge => "too_large",
            Self::NotRegularFile => "not_regular_file",
            Self::Shutdown => "shutdown",
        }
    }

    pub fn of(e: &HashError) -> Option<Self> {
        match e {
            HashError::TooLarge { .. } => Some(Self::TooLarge),
            HashError::NotRegular(_) => Some(Self::NotRegularFile),
            HashError::Cancelled(why) if *why == TIME_BUDGET => Some(Self::TimeBudget),
            HashError::Cancelled(why) if *why == QUEUE_FULL => Some(Self::QueueFull),
            HashError::Cancelled(_) => Some(Self::Shutdown),
            _ => None,
        }
    }
}

const TIME_BUDGET: &str = "over the per-file hashing time budget";
const SHUTDOWN: &str = "the agent is stopping";
/// The reason a job refused by `submit` completes with.
pub const QUEUE_FULL: &str = "the hash queue is full";

/// Limits of the pool.
#[derive(Debug, Clone, Copy)]
pub struct HashBudget {
    pub workers: usize,
    /// Bytes of large files waiting or being hashed at most.
    pub large_queue_bytes: u64,
    /// Time one file may take.
    pub per_file: Duration,
}

impl Default for HashBudget {
    fn default() -> Self {
        Self { workers: 2, large_queue_bytes: 4 << 30, per_file: Duration::from_secs(60) }
    }
}

/// Counters for `agent_stats.hash`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Jobs waiting or running now.
    pub pending: u64,
    pub skipped_queue_full: u64,
    pub skipped_time_budget: u64,
    pub skipped_too_large: u64,
    pub skipped_not_regular_file: u64,
    pub skipped_shutdown: u64,
}

/// One binary to hash, and what to do with the outcome (runs on the worker thread).
pub struct Job {
    pub file: File,
    pub key: FileKey,
    pub done: Box<dyn FnOnce(Result<Digest, HashError>) + Send>,
}

#[derive(Default)]
struct Queues {
    small: VecDeque<Job>,
    large: VecDeque<Job>,
    large_running: usize,
    large_bytes: u64,
}

struct Shared {
    cache: Arc<HashCache>,
    budget: HashBudget,
    queues: Mutex<Queues>,
    ready: Condvar,
    stopping: AtomicBool,
    pending: AtomicU64,
    skipped: [AtomicU64; 5],
}

impl Shared {
    fn count_skip(&self, why: HashSkip) {
        let i = match why {
            HashSkip::QueueFull => 0,
            HashSkip::TimeBudget => 1,
            HashSkip::TooLarge => 2,
            HashSkip::NotRegularFile => 3,
            HashSkip::Shutdown => 4,
        };
        if let Some(c) = self.skipped.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The next job this worker may take: small first; large only while another worker
    /// stays free for small files (or when there is just one worker).
    fn next(&self) -> Option<(Job, bool)> {
        let mut q = self.queues.lock().ok()?;
        loop {
            if let Some(job) = q.small.pop_front() {
                return Some((job, false));
            }
            let large_slots = self.budget.workers.saturating_sub(1).max(1);
            if q.large_running < large_slots
                && let Some(job) = q.large.pop_front()
            {
                q.large_running += 1;
                return Some((job, true));
            }
            if self.stopping.load(Ordering::Relaxed) && q.small.is_empty() && q.large.is_empty() {
                return None;
            }
            q = self.ready.wait_timeout(q, Duration::from_millis(200)).ok()?.0;
        }
    }

    fn run(&self, job: Job, large: bool) {
        let deadline = Instant::now() + self.budget.per_file;
        let stop = || {
            if self.stopping.load(Ordering::Relaxed) {
                Some(SHUTDOWN)
            } else if Instant::now() > deadline {
                Some(TIME_BUDGET)
            } else {
                None
            }
        };
        let size = job.key.size;
        // The same file may have been hashed meanwhile (a burst of execs of one new
        // binary queues it once per exec, or an event needed it at once).
        let result = match self.cache.lookup(&job.file) {
            Ok(Lookup::Hit(d)) => Ok(d),
            _ => self.cache.compute(&job.file, job.key, &stop),
        };
        if let Err(e) = &result
            && let Some(why) = HashSkip::of(e)
        {
            self.count_skip(why);
        }
        drop(job.file);
        if large && let Ok(mut q) = self.queues.lock() {
            q.large_running = q.large_running.saturating_sub(1);
            q.large_bytes = q.large_bytes.saturating_sub(size);
        }
        self.pending.fetch_sub(1, Ordering::Relaxed);
        self.ready.notify_all();
        (job.done)(result);
    }
}

/// Hashing yields the CPU to the event thread, which must reach procfs before short-lived
/// processes exit: the calling thread's nice value goes up (Linux applies it per thread).
fn lower_priority() {
    // SAFETY: gettid has no preconditions; setpriority on our own thread id only.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, HASH_NICE);
    }
}

/// The nice value of hashing threads.
const HASH_NICE: i32 = 10;

/// A fixed set of hashing threads sharing the agent's digest cache.
pub struct HashPool {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl HashPool {
    pub fn start(cache: Arc<HashCache>, budget: HashBudget) -> std::io::Result<Self> {
        let budget = HashBudget { workers: budget.workers.max(1), ..budget };
        let shared = Arc::new(Shared {
            cache,
            budget,
            queues: Mutex::default(),
            ready: Condvar::new(),
            stopping: AtomicBool::new(false),
            pending: AtomicU64::new(0),
            skipped: Default::default(),
        });
        let mut workers = Vec::with_capacity(budget.workers);
        for i in 0..budget.workers {
            let s = shared.clone();
            workers.push(std::thread::Builder::new().name(format!("hash-{i}")).spawn(move || {
                lower_priority();
                while let Some((job, large)) = s.next() {
                    s.run(job, large);
                }
            })?);
        }
        Ok(Self { shared, workers: Mutex::new(workers) })
    }

    /// Queues a job, or gives it back with the reason it cannot be queued.
    pub fn submit(&self, job: Job) -> Result<(), (Job, HashSkip)> {
        let s = &self.shared;
        if s.stopping.load(Ordering::Relaxed) {
            s.count_skip(HashSkip::Shutdown);
            return Err((job, HashSkip::Shutdown));
        }
        let Ok(mut q) = s.queues.lock() else { return Err((job, HashSkip::QueueFull)) };
        let size = job.key.size;
        let fits = if size <= SMALL_FILE_BYTES {
            q.small.len() < SMALL_QUEUE_JOBS
        } else {
            q.large.len() < LARGE_QUEUE_JOBS && q.large_bytes.saturating_add(size) <= s.budget.large_queue_bytes
        };
        if !fits {
            drop(q);
            s.count_skip(HashSkip::QueueFull);
            return Err((job, HashSkip::QueueFull));
        }
        if size <= SMALL_FILE_BYTES {
            q.small.push_back(job);
        } else {
            q.large_bytes += size;
            q.large.push_back(job);
        }
        s.pending.fetch_add(1, Ordering::Relaxed);
        drop(q);
        s.ready.notify_one();
        Ok(())
    }

    /// Counts a binary skipped before it reached the pool (not regular, too large).
    pub fn count_skip(&self, why: HashSkip) {
        self.shared.count_skip(why);
    }

    pub fn stats(&self) -> PoolStats {
        let s = &self.shared;
        let at = |i: usize| s.skipped.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
        PoolStats {
            pending: s.pending.load(Ordering::Relaxed),
            skipped_queue_full: at(0),
            skipped_time_budget: at(1),
            skipped_too_large: at(2),
            skipped_not_regular_file: at(3),
            skipped_shutdown: at(4),
        }
    }

    /// Stops hashing: running jobs end at their next chunk, queued ones complete at once
    /// as skipped (`Shutdown`), so every pending record is still emitted. Waits for the
    /// workers.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.ready.notify_all();
        let handles = self.workers.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Write, sync::mpsc};

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().expect("tmp");
        t.write_all(bytes).expect("write");
        let f = File::open(t.path()).expect("open");
        (t, f)
    }

    fn job(f: File, tx: mpsc::Sender<Result<String, String>>) -> Job {
        let key = FileKey::of(&f).expect("key");
        Job { file: f, key, done: Box::new(move |r| drop(tx.send(r.map(|d| d.sha256).map_err(|e| e.to_string())))) }
    }

    fn sparse(len: u64) -> (tempfile::NamedTempFile, File) {
        let t = tempfile::NamedTempFile::new().expect("tmp");
        t.as_file().set_len(len).expect("sparse");
        let f = File::open(t.path()).expect("open");
        (t, f)
    }

    fn pool(workers: usize, large_queue_bytes: u64, per_file: Duration) -> HashPool {
        HashPool::start(Arc::new(HashCache::new(16, 1 << 30)), HashBudget { workers, large_queue_bytes, per_file }).expect("pool")
    }

    #[test]
    fn hashes_off_thread_and_reports_through_the_callback() {
        let pool = pool(2, 4 << 30, Duration::from_secs(60));
        let (tx, rx) = mpsc::channel();
        let (_t, f) = file_of(b"abc");
        assert!(pool.submit(job(f, tx)).is_ok());
        let got = rx.recv_timeout(Duration::from_secs(10)).expect("done");
        assert_eq!(got.as_deref(), Ok("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
        assert_eq!(pool.stats().pending, 0);
    }

    /// A large file over the queue's byte budget is refused at once, and counted.
    #[test]
    fn large_lane_is_bounded_in_bytes() {
        let pool = pool(2, 20 << 20, Duration::from_secs(60));
        let (tx, _rx) = mpsc::channel();
        let files: Vec<_> = (0..4u64).map(|i| sparse(17 << 20 | i)).collect();
        let outcomes: Vec<_> = files.iter().map(|(_, f)| pool.submit(job(f.try_clone().expect("dup"), tx.clone())).map_err(|(_, why)| why)).collect();
        assert!(outcomes[0].is_ok(), "one 17 MiB file fits a 20 MiB budget");
        assert_eq!(outcomes[1..], [Err(HashSkip::QueueFull); 3]);
        assert_eq!(pool.stats().skipped_queue_full, 3);
    }

    /// A file that takes longer than the per-file budget is given up, with that reason.
    #[test]
    fn per_file_time_budget_cancels() {
        let pool = pool(1, 4 << 30, Duration::ZERO);
        let (tx, rx) = mpsc::channel();
        let (_t, f) = sparse(64 << 20);
        assert!(pool.submit(job(f, tx)).is_ok());
        let got = rx.recv_timeout(Duration::from_secs(30)).expect("done");
        assert!(got.as_ref().is_err_and(|e| e.contains("time budget")), "{got:?}");
        assert_eq!(pool.stats().skipped_time_budget, 1);
    }

    /// Stopping completes queued work as skipped rather than dropping it silently.
    #[test]
    fn stop_completes_every_queued_job() {
        let pool = pool(1, 4 << 30, Duration::from_secs(60));
        let (tx, rx) = mpsc::channel();
        let files: Vec<_> = (0..5).map(|_| sparse(256 << 20)).collect();
        for (_, f) in &files {
            assert!(pool.submit(job(f.try_clone().expect("dup"), tx.clone())).is_ok());
        }
        drop(tx);
        pool.stop();
        let outcomes: Vec<_> = rx.iter().collect();
        assert_eq!(outcomes.len(), 5, "every job completes");
        assert!(outcomes.iter().any(|o| o.as_ref().is_err_and(|e| e.contains("stopping"))), "{outcomes:?}");
        assert!(pool.stats().skipped_shutdown >= 1);
    }
}
