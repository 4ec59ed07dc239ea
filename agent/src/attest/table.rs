//! The live process table: pid -> the record of the process that pid currently names.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use super::record::ProcessRecord;

/// Shared between the event loop (writer) and, later, the Workload API (readers).
#[derive(Default)]
pub struct ProcessTable {
    inner: RwLock<HashMap<u32, Arc<ProcessRecord>>>,
}

impl ProcessTable {
    pub fn get(&self, pid: u32) -> Option<Arc<ProcessRecord>> {
        self.inner.read().ok()?.get(&pid).cloned()
    }

    /// Replaces whatever the pid named before: a re-exec of the same process or, with a
    /// different start time, a new process reusing the pid.
    pub fn insert(&self, rec: Arc<ProcessRecord>) {
        if let Ok(mut t) = self.inner.write() {
            t.insert(rec.pid, rec);
        }
    }

    pub fn remove(&self, pid: u32) -> Option<Arc<ProcessRecord>> {
        self.inner.write().ok()?.remove(&pid)
    }

    pub fn len(&self) -> usize {
        self.inner.read().map(|t| t.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
