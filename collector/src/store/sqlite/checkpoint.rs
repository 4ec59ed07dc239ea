//! Checkpoints mostly on a thread of their own. A checkpoint copies the pages committed
//! to the WAL back into the database file (and syncs it). Left to SQLite, the connection
//! whose commit crosses the threshold runs it inline: that was the batch writer, under the
//! store's lock, a tenth of the ingest path's time.
//!
//! WAL checkpoints do not block writers, so a second connection copies the bulk while
//! batches keep committing. But the WAL only starts over once a checkpoint has copied
//! every frame in it, which one racing a busy writer never does: the writer still runs a
//! checkpoint itself a little later, which copies only what came after the background
//! pass, and lets the WAL start over. If this thread cannot keep up, that checkpoint does
//! the whole work, as before.
//!
//! Durability: with `synchronous = NORMAL` SQLite syncs the WAL only at checkpoints, so a
//! machine crash could lose every batch committed since the last one: at a quiet fleet's
//! rate, hours of batches the agents had already dropped from their spools. This thread
//! also syncs the WAL file within [`SYNC_EVERY`] of a commit, which bounds that loss to
//! about a second whatever the rate, for one `fsync` a second.

use std::{
    path::Path,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use rusqlite::Connection;

/// WAL pages (4 KiB) after which this thread checkpoints: ~160 MB. A page the batches
/// keep rewriting (index leaves and interiors, aggregates) is copied to the database once
/// per checkpoint, so fewer, larger checkpoints copy less: two-agent ingest went from 36k
/// to 41-44k events/s between 10k and 40k pages, with no clear gain at 100k. The WAL file
/// keeps its largest size on disk (SQLite reuses it from its start).
pub const PAGES: i32 = 40_000;

/// How long a commit may stay unsynced.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// When the writer checkpoints what the background pass left: a quarter past `pages`.
fn writer_pages(pages: i32) -> i32 {
    pages.saturating_add(pages / 4)
}

#[derive(Default)]
struct Signal {
    /// (a checkpoint is wanted, the store is closing)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
    /// Background checkpoints run.
    passes: AtomicU64,
    /// Commits the writer has made (counted by its WAL hook).
    commits: AtomicU64,
    /// Times this thread synced the WAL.
    syncs: AtomicU64,
}

impl Signal {
    fn set(&self, f: impl FnOnce(&mut (bool, bool))) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
            self.cv.notify_all();
        }
    }
}

/// Stops and joins the thread on drop.
pub struct Checkpointer {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Takes over `writer`'s checkpoints for the database at `db`, run every `pages` WAL
    /// pages. `None` when the thread cannot be started: the writer then keeps
    /// checkpointing itself, as SQLite does.
    pub fn start(db: &Path, writer: &mut Connection, pages: i32) -> Option<Self> {
        let signal = Arc::new(Signal::default());
        let (path, theirs) = (db.to_path_buf(), signal.clone());
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&path, &theirs))
            .map_err(|e| tracing::warn!("no checkpoint thread ({e}): the batch writer checkpoints"))
            .ok()?;
        let ours = signal.clone();
        // Called after each commit with the WAL's length in pages (this replaces SQLite's
        // automatic checkpoint on this connection).
        // An error returned here would fail the commit's statement although the commit
        // stands: a checkpoint that fails is only logged (the next commit tries again).
        let hooked = writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, wal_pages: i32| {
            ours.commits.fetch_add(1, Ordering::Relaxed);
            if wal_pages >= writer_pages(pages) {
                if let Err(e) = wal.checkpoint() {
                    tracing::debug!("checkpoint after a commit: {e}");
                }
            } else if wal_pages >= pages {
                ours.set(|s| s.0 = true);
            }
            Ok(())
        }));
        let me = Self { signal, thread: Some(thread) };
        match hooked {
            Ok(()) => Some(me),
            Err(e) => {
                tracing::warn!("no checkpoint hook ({e}): the batch writer checkpoints");
                None
            }
        }
    }
}

#[cfg(test)]
impl Checkpointer {
    /// Checkpoints this thread has run.
    pub fn passes(&self) -> u64 {
        self.signal.passes.load(Ordering::Relaxed)
    }

    /// Times this thread has synced the WAL.
    pub fn syncs(&self) -> u64 {
        self.signal.syncs.load(Ordering::Relaxed)
    }

    /// The most WAL pages a checkpointer started with `pages` lets the writer reach.
    pub fn writer_bound(pages: i32) -> i32 {
        writer_pages(pages)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.signal.set(|s| s.1 = true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: &Path, signal: &Signal) {
    let conn = match Connection::open(db).and_then(|c| c.busy_timeout(Duration::from_secs(5)).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("checkpoint connection to {}: {e}; the WAL grows to the writer's bound", db.display());
            return;
        }
    };
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let mut synced_at = 0;
    loop {
        let wanted = {
            let Ok(guard) = signal.state.lock() else { return };
            let Ok((mut guard, _)) = signal.cv.wait_timeout_while(guard, SYNC_EVERY, |(wanted, stop)| !*wanted && !*stop) else { return };
            if guard.1 {
                return;
            }
            std::mem::take(&mut guard.0)
        };
        if wanted {
            // PASSIVE: copies what no reader still needs, never waits for readers or the
            // writer; the rest goes with the next request.
            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                Ok(()) => _ = signal.passes.fetch_add(1, Ordering::Relaxed),
                Err(e) => tracing::debug!("checkpoint: {e}"),
            }
        }
        // Frames written to the WAL are in the page cache: syncing the file through any
        // descriptor makes them durable. A frame half-written meanwhile is a torn tail
        // that recovery drops by its checksum, as after any crash.
        let commits = signal.commits.load(Ordering::Relaxed);
        if commits != synced_at {
            match std::fs::File::open(&wal).and_then(|f| f.sync_data()) {
                Ok(()) => {
                    synced_at = commits;
                    signal.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!("syncing the WAL: {e}"),
            }
        }
    }
}
