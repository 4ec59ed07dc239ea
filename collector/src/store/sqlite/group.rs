//! Group commit: agents' batches that arrive while another is being written share the
//! next transaction.
//!
//! SQLite has one writer, and a commit costs about as much as the batch it closes (its
//! pages go to the WAL). A fleet pushes many small batches at once: written one
//! transaction each, the commits are most of the work. Here every batch waits in a queue;
//! whoever takes the writer lock writes all that are waiting (up to [`GROUP_EVENTS`]) in
//! one transaction and hands every caller its own outcome. A batch that fails is stored
//! by no one's transaction but its own: the others are stored, and it gets its error, as
//! if it had been written by itself.

use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Transaction;

use super::{Inner, ids};
use crate::store::{AgentEvent, StoreError};

/// Events written under one commit at most: bounds the transaction (and what a failed
/// commit sends back to be retried), not the number of batches.
pub const GROUP_EVENTS: usize = 20_000;

/// One agent batch waiting for the writer, and, once written, its outcome.
pub struct Ticket<T> {
    pub node: String,
    pub events: Vec<AgentEvent>,
    outcome: Mutex<Option<Result<T, StoreError>>>,
}

impl<T> Ticket<T> {
    pub fn new(node: String, events: Vec<AgentEvent>) -> Arc<Self> {
        Arc::new(Self { node, events, outcome: Mutex::new(None) })
    }

    fn take(&self) -> Option<Result<T, StoreError>> {
        self.outcome.lock().ok().and_then(|mut o| o.take())
    }

    fn settle(&self, r: Result<T, StoreError>) {
        if let Ok(mut o) = self.outcome.lock() {
            *o = Some(r);
        }
    }
}

/// The batches waiting for the writer.
pub struct Queue<T> {
    waiting: Mutex<Vec<Arc<Ticket<T>>>>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self { waiting: Mutex::new(Vec::new()) }
    }
}

impl<T> Queue<T> {
    /// Writes `mine` with whatever else is waiting, and returns its outcome. `write` stores
    /// one batch inside the open transaction.
    pub fn write(
        &self,
        inner: &Mutex<Inner>,
        mine: Arc<Ticket<T>>,
        write: impl Fn(&Transaction<'_>, &mut ids::Caches, &Ticket<T>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.waiting.lock().map_err(|_| StoreError::Poisoned)?.push(Arc::clone(&mine));
        let mut guard = inner.lock().map_err(|_| StoreError::Poisoned)?;
        loop {
            // A writer that held the lock before us may have written ours already.
            if let Some(r) = mine.take() {
                return r;
            }
            let group = self.next_group()?;
            if group.is_empty() {
                return Err(StoreError::Shared("the batch left the write queue unwritten".into()));
            }
            commit_group(&mut guard, &group, &write);
        }
    }

    /// The oldest waiting batches, up to [`GROUP_EVENTS`] events (always at least one).
    fn next_group(&self) -> Result<Vec<Arc<Ticket<T>>>, StoreError> {
        let mut waiting = self.waiting.lock().map_err(|_| StoreError::Poisoned)?;
        let mut events = 0;
        let n = waiting
            .iter()
            .take_while(|t| {
                events += t.events.len();
                events <= GROUP_EVENTS
            })
            .count()
            .max(1)
            .min(waiting.len());
        Ok(waiting.drain(..n).collect())
    }
}

/// Writes `group` in one transaction and settles every ticket. A batch that fails undoes
/// the group's transaction; the group is then written again a batch per transaction, so
/// the failure stays that batch's own. (Savepoints would isolate it in one pass, but
/// SQLite copies every page a savepoint touches to a sub-journal: they cost more than
/// the commits they save.)
fn commit_group<T>(
    guard: &mut MutexGuard<'_, Inner>,
    group: &[Arc<Ticket<T>>],
    write: &impl Fn(&Transaction<'_>, &mut ids::Caches, &Ticket<T>) -> Result<T, StoreError>,
) {
    let Inner { conn, caches } = &mut **guard;
    if group.len() > 1 {
        let together = (|| {
            let tx = super::begin_write(conn)?;
            let outcomes = group.iter().map(|t| write(&tx, caches, t)).collect::<Result<Vec<T>, StoreError>>()?;
            tx.commit()?;
            Ok::<_, StoreError>(outcomes)
        })();
        match together {
            Ok(outcomes) => {
                caches.committed();
                for (t, v) in group.iter().zip(outcomes) {
                    t.settle(Ok(v));
                }
                return;
            }
            Err(e) => {
                caches.rolled_back();
                tracing::debug!("a group of {} batches failed ({e}); writing them one by one", group.len());
            }
        }
    }
    for t in group {
        let alone = (|| {
            let tx = super::begin_write(conn)?;
            let v = write(&tx, caches, t)?;
            tx.commit()?;
            Ok::<_, StoreError>(v)
        })();
        match &alone {
            Ok(_) => caches.committed(),
            Err(_) => caches.rolled_back(),
        }
        t.settle(alone);
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Barrier, thread, time::Duration};

    use rusqlite::Connection;

    use super::*;
    use crate::store::sqlite::SqliteStore;

    struct Pushed {
        outcomes: Vec<(String, Result<usize, StoreError>)>,
        /// Rows committed before each write, as another connection saw them.
        committed_before: Vec<i64>,
        stored: Vec<String>,
    }

    /// Ten agents push while the writer is busy, the `bad`th batch failing once written.
    fn ten_agents_push(bad: Option<usize>) -> Pushed {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("g.db");
        let store = SqliteStore::open(&path).expect("opens");
        store.inner.lock().expect("lock").conn.execute_batch("CREATE TABLE t (node TEXT)").expect("table");
        let reader = Mutex::new(Connection::open(&path).expect("reader"));
        let queue: Queue<usize> = Queue::default();
        let committed_before = Mutex::new(Vec::new());
        let write = |tx: &Transaction<'_>, _: &mut ids::Caches, t: &Ticket<usize>| {
            let n = reader.lock().expect("reader").query_row("SELECT count(*) FROM t", [], |r| r.get(0)).expect("count");
            committed_before.lock().expect("seen").push(n);
            tx.execute("INSERT INTO t (node) VALUES (?1)", [&t.node])?;
            if t.node == "node-bad" {
                return Err(StoreError::BadArgument("refused".into()));
            }
            Ok(t.events.len())
        };
        let busy = store.inner.lock().expect("lock");
        let start = Barrier::new(11);
        let outcomes = thread::scope(|s| {
            let handles: Vec<_> = (0..10)
                .map(|i| {
                    let (queue, store, start, write) = (&queue, &store, &start, &write);
                    s.spawn(move || {
                        let node = if Some(i) == bad { "node-bad".to_owned() } else { format!("node-{i}") };
                        start.wait();
                        let r = queue.write(&store.inner, Ticket::new(node.clone(), Vec::new()), write);
                        (node, r)
                    })
                })
                .collect();
            start.wait();
            while queue.waiting.lock().expect("queue").len() < 10 {
                thread::sleep(Duration::from_millis(1));
            }
            drop(busy);
            handles.into_iter().map(|h| h.join().expect("agent thread")).collect()
        });
        let conn = &store.inner.lock().expect("lock").conn;
        let stored =
            conn.prepare("SELECT node FROM t ORDER BY node").expect("select").query_map([], |r| r.get(0)).expect("rows").map(|r| r.expect("row")).collect();
        Pushed { outcomes, committed_before: committed_before.into_inner().expect("seen"), stored }
    }

    /// Batches that waited together are written in one transaction: no write of the group
    /// sees another's row committed.
    #[test]
    fn batches_waiting_together_commit_together() {
        let p = ten_agents_push(None);
        assert!(p.outcomes.iter().all(|(_, r)| r.is_ok()), "{:?}", p.outcomes);
        assert_eq!(p.committed_before, vec![0; 10], "one commit for the ten");
        assert_eq!(p.stored.len(), 10);
    }

    /// A batch that fails in a group is lost alone: the others are stored, each agent hears
    /// its own outcome.
    #[test]
    fn a_failing_batch_in_a_group_is_its_own_loss() {
        let p = ten_agents_push(Some(3));
        for (node, r) in &p.outcomes {
            assert_eq!(r.is_ok(), node != "node-bad", "{node}: {r:?}");
        }
        let expected: Vec<String> = (0..10).filter(|i| *i != 3).map(|i| format!("node-{i}")).collect();
        assert_eq!(p.stored, expected, "the failed batch's row was rolled back, no other");
    }
}
