//! Numbered names: interned strings, runs and nodes are stored once and referred to by id.
//! A cache in front saves the lookups. Ids handed out inside a transaction that then
//! fails are forgotten, so the cache never names a row that was rolled back.

use std::collections::HashMap;

/// Names seen more often than this are re-read from the database after the cache is
/// emptied (bounded memory; exec ids and fingerprints keep arriving).
const CAPACITY: usize = 1 << 20;

#[derive(Default)]
pub struct IdCache {
    ids: HashMap<String, i64>,
    /// Names added during the open transaction.
    fresh: Vec<String>,
    /// While retention prunes unused names: the ids batches referred to since it began
    /// (it keeps them, whatever its scan of the tables saw).
    used: Option<std::collections::HashSet<i64>>,
}

impl IdCache {
    pub fn get(&self, name: &str) -> Option<i64> {
        self.ids.get(name).copied()
    }

    /// Records that a row being written refers to `id` (see [`Self::track`]).
    pub fn used(&mut self, id: i64) {
        if let Some(u) = &mut self.used {
            u.insert(id);
        }
    }

    /// Starts (`true`) or stops recording the ids rows refer to.
    pub fn track(&mut self, on: bool) {
        self.used = on.then(Default::default);
    }

    /// The ids recorded since the last call.
    pub fn take_used(&mut self) -> Vec<i64> {
        self.used.as_mut().map(|u| u.drain().collect()).unwrap_or_default()
    }

    /// Forgets a name whose row was deleted.
    pub fn forget(&mut self, name: &str) {
        self.ids.remove(name);
    }

    pub fn put(&mut self, name: &str, id: i64) {
        if self.ids.len() >= CAPACITY {
            self.ids.clear();
            self.fresh.clear();
        }
        self.ids.insert(name.to_owned(), id);
        self.fresh.push(name.to_owned());
    }

    pub fn committed(&mut self) {
        self.fresh.clear();
    }

    pub fn rolled_back(&mut self) {
        for name in self.fresh.drain(..) {
            self.ids.remove(&name);
        }
    }
}

/// Every cache of one store.
#[derive(Default)]
pub struct Caches {
    pub strings: IdCache,
    pub runs: IdCache,
    pub nodes: IdCache,
}

impl Caches {
    pub fn committed(&mut self) {
        self.strings.committed();
        self.runs.committed();
        self.nodes.committed();
    }

    pub fn rolled_back(&mut self) {
        self.strings.rolled_back();
        self.runs.rolled_back();
        self.nodes.rolled_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolled_back_transaction_leaves_no_id_behind() {
        let mut c = IdCache::default();
        c.put("kept", 1);
        c.committed();
        c.put("lost", 2);
        c.rolled_back();
        assert_eq!((c.get("kept"), c.get("lost")), (Some(1), None));
    }
}
