//! The pods of this node as the watch last reported them, keyed by the UID their cgroups
//! carry, with a short bounded wait for pods the watch has not delivered yet.
//!
//! Lookups come from blocking threads (issuance runs under `spawn_blocking`), updates from
//! the watch task; both hold the lock only to read or swap map entries.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::pod::PodMeta;

/// Deleted pod UIDs remembered, so their leftover processes are refused at once rather
/// than after the wait (a bounded queue: the oldest are forgotten first).
const TOMBSTONES: usize = 4096;

/// The answer for one pod UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Arc<PodMeta>),
    /// The API server said this pod is gone (a delete event, or absent from a relist).
    Deleted,
    /// Not delivered by the watch within the wait. `synced` is false when no full list
    /// has completed yet (API server unreachable since start-up).
    NotSeen {
        synced: bool,
    },
}

#[derive(Default)]
struct Inner {
    pods: HashMap<String, Arc<PodMeta>>,
    tombstones: HashSet<String>,
    tombstone_order: VecDeque<String>,
    synced: bool,
    relists: u64,
}

impl Inner {
    fn bury(&mut self, uid: String) {
        if self.tombstones.insert(uid.clone()) {
            self.tombstone_order.push_back(uid);
        }
        while self.tombstone_order.len() > TOMBSTONES {
            if let Some(old) = self.tombstone_order.pop_front() {
                self.tombstones.remove(&old);
            }
        }
    }
}

pub struct PodCache {
    inner: Mutex<Inner>,
    changed: Condvar,
    wait: Duration,
}

/// Counters for logs and `agent_stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub pods: usize,
    pub synced: bool,
    pub relists: u64,
}

impl PodCache {
    /// `wait`: how long a lookup waits for a pod the watch has not delivered yet.
    pub fn new(wait: Duration) -> Self {
        Self { inner: Mutex::new(Inner::default()), changed: Condvar::new(), wait }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind; they are still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is known about `uid` now, without waiting (the exec path must not block).
    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.lock().pods.get(uid).cloned()
    }

    /// What is known about `uid`, waiting up to the configured bound for the watch to
    /// deliver a pod it has not seen yet. Never answers with another pod's metadata.
    pub fn lookup(&self, uid: &str) -> Lookup {
        let deadline = Instant::now() + self.wait;
        let mut inner = self.lock();
        loop {
            if let Some(m) = inner.pods.get(uid) {
                return Lookup::Found(m.clone());
            }
            if inner.tombstones.contains(uid) {
                return Lookup::Deleted;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Lookup::NotSeen { synced: inner.synced };
            }
            inner = self.changed.wait_timeout(inner, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Waits up to `timeout` for the first complete list; true once there is one.
    pub fn wait_synced(&self, timeout: Duration) -> bool {
        let inner = self.lock();
        let (inner, _) = self.changed.wait_timeout_while(inner, timeout, |i| !i.synced).unwrap_or_else(|p| p.into_inner());
        inner.synced
    }

    /// A pod was added or changed.
    pub fn apply(&self, uids: Vec<String>, meta: PodMeta) {
        let meta = Arc::new(meta);
        let mut inner = self.lock();
        for uid in uids {
            inner.tombstones.remove(&uid);
            inner.pods.insert(uid, meta.clone());
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// A pod was deleted.
    pub fn remove(&self, uids: Vec<String>) {
        let mut inner = self.lock();
        for uid in uids {
            inner.pods.remove(&uid);
            inner.bury(uid);
        }
        drop(inner);
        self.changed.notify_all();
    }

    /// A complete list (after start-up, a `410 Gone`, or an API server restart) replaces
    /// everything: pods missing from it were deleted while the watch was not looking.
    pub fn replace_all(&self, listed: Vec<(Vec<String>, PodMeta)>) {
        let mut next = HashMap::new();
        for (uids, meta) in listed {
            let meta = Arc::new(meta);
            for uid in uids {
                next.insert(uid, meta.clone());
            }
        }
        let mut inner = self.lock();
        let gone: Vec<String> = inner.pods.keys().filter(|u| !next.contains_key(*u)).cloned().collect();
        for uid in gone {
            inner.bury(uid);
        }
        for uid in next.keys() {
            inner.tombstones.remove(uid);
        }
        inner.tombstone_order.retain(|u| !next.contains_key(u));
        inner.pods = next;
        inner.synced = true;
        inner.relists += 1;
        drop(inner);
        self.changed.notify_all();
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats { pods: inner.pods.len(), synced: inner.synced, relists: inner.relists }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: &str) -> PodMeta {
        PodMeta { namespace: Some(ns.into()), ..Default::default() }
    }

    #[test]
    fn a_pod_delivered_during_the_wait_is_found_and_an_unknown_one_is_not_guessed() {
        let cache = Arc::new(PodCache::new(Duration::from_secs(2)));
        let c = cache.clone();
        let t = std::thread::spawn(move || c.lookup("u1"));
        std::thread::sleep(Duration::from_millis(100));
        cache.apply(vec!["u1".into()], meta("a"));
        assert_eq!(t.join().expect("thread"), Lookup::Found(Arc::new(meta("a"))));

        let short = PodCache::new(Duration::from_millis(50));
        short.apply(vec!["other".into()], meta("b"));
        assert_eq!(short.lookup("u2"), Lookup::NotSeen { synced: false });
    }

    #[test]
    fn a_relist_buries_pods_deleted_while_nobody_watched_and_keeps_new_labels() {
        let cache = PodCache::new(Duration::from_millis(10));
        cache.apply(vec!["gone".into()], meta("a"));
        cache.apply(vec!["kept".into()], meta("old"));
        cache.replace_all(vec![(vec!["kept".into()], meta("new"))]);
        assert_eq!(cache.lookup("gone"), Lookup::Deleted);
        assert_eq!(cache.lookup("kept"), Lookup::Found(Arc::new(meta("new"))));
        assert_eq!(cache.stats(), CacheStats { pods: 1, synced: true, relists: 1 });
        cache.remove(vec!["kept".into()]);
        assert_eq!(cache.lookup("kept"), Lookup::Deleted);
        assert!(cache.get("kept").is_none());
    }
}
