//! The live process table: pid -> the record of the process that pid currently names.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
};

use sigil_proto::v1::ProcessExit;

use super::record::{ProcessRecord, Source};

/// `a` and `b` describe one exec: same process instance, same executable inode, same
/// cgroup (attested at different moments, so their exec ids may differ).
fn same_exec(a: &ProcessRecord, b: &ProcessRecord) -> bool {
    a.process_id == b.process_id && a.binary.inode == b.binary.inode && a.cgroup.path == b.cgroup.path
}

/// `prev` is the on-request record of the exec `rec` (from the exec event) describes.
pub fn same_exec_on_request(prev: &ProcessRecord, rec: &ProcessRecord) -> bool {
    prev.source == Source::OnRequest && rec.source == Source::Ebpf && same_exec(prev, rec)
}

/// Shared between the event loop (writer) and, later, the Workload API (readers).
#[derive(Default)]
pub struct ProcessTable {
    inner: RwLock<HashMap<u32, Arc<ProcessRecord>>>,
    /// Exec ids whose record waits for its digest (at most one per queued hash job),
    /// with the exit of the process when it came first: the exit is held back until the
    /// record is out, so no consumer ever sees a run end before it began (a collector
    /// would otherwise count that run as live forever).
    to_emit: Mutex<HashMap<String, Option<ProcessExit>>>,
}

/// The right to emit a pending record, taken once.
pub struct EmitClaim {
    /// The process's exit, held back until the record is emitted: emit it right after.
    pub exit: Option<ProcessExit>,
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

    /// Inserts `rec` unless the table already holds another record of the same exec that
    /// must stay its one record, which is returned instead. Check and insert happen under
    /// one lock: the event loop and the Workload API attest the same exec concurrently
    /// (a token request racing its own exec event), and whichever enters second must see
    /// the first. The record that stays:
    /// - for an exec event, the on-request record made before it was handled;
    /// - for an on-request record, the exec event's record entered while the request
    ///   was reading and hashing.
    pub fn insert_unless_attested(&self, rec: Arc<ProcessRecord>) -> Result<(), Arc<ProcessRecord>> {
        let Ok(mut t) = self.inner.write() else { return Ok(()) };
        let keep = |cur: &ProcessRecord| match rec.source {
            Source::Ebpf => same_exec_on_request(cur, &rec),
            Source::OnRequest => cur.source == Source::Ebpf && same_exec(cur, &rec),
            _ => false,
        };
        match t.get(&rec.pid) {
            Some(cur) if keep(cur) => Err(cur.clone()),
            _ => {
                t.insert(rec.pid, rec);
                Ok(())
            }
        }
    }

    /// A record whose hash was computed after the exec was handled (by the pool, or on
    /// the spot when an event needed it first). It replaces the table's entry only if
    /// that entry is still this exec (the process may have exited or exec'd again
    /// meanwhile); an on-request record of the same exec wins, as in `insert`'s callers.
    /// Returns the record to emit.
    pub fn complete(&self, rec: ProcessRecord) -> ProcessRecord {
        let Ok(mut t) = self.inner.write() else { return rec };
        match t.get(&rec.pid) {
            Some(cur) if cur.exec_id == rec.exec_id => {
                t.insert(rec.pid, Arc::new(rec.clone()));
                rec
            }
            Some(cur) if same_exec_on_request(cur, &rec) => (**cur).clone(),
            _ => rec,
        }
    }

    /// Notes that the record of `exec_id` is to be emitted once its digest is known.
    pub fn expect_emit(&self, exec_id: &str) {
        if let Ok(mut p) = self.to_emit.lock() {
            p.insert(exec_id.to_owned(), None);
        }
    }

    /// The exit to emit now, or None when the record of its exec is still waiting for
    /// its digest: the exit is then kept and handed to whoever emits the record.
    pub fn exit_after_record(&self, exit: ProcessExit) -> Option<ProcessExit> {
        let Ok(mut p) = self.to_emit.lock() else { return Some(exit) };
        match p.get_mut(&exit.exec_id) {
            Some(held) => {
                *held = Some(exit);
                None
            }
            None => Some(exit),
        }
    }

    /// Some for the first caller only (the hashing pool, or an event that needed the
    /// digest before the pool had it): one exec, one record, even after the process has
    /// exited and left the table.
    pub fn claim_emit(&self, exec_id: &str) -> Option<EmitClaim> {
        let exit = self.to_emit.lock().ok()?.remove(exec_id)?;
        Some(EmitClaim { exit })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(exec_id: &str) -> ProcessExit {
        ProcessExit { exec_id: exec_id.to_owned(), pid: 7, ..ProcessExit::default() }
    }

    #[test]
    fn an_exit_before_its_pending_record_is_held_for_whoever_emits_the_record() {
        let table = ProcessTable::default();
        table.expect_emit("e1");
        assert!(table.exit_after_record(exit("e1")).is_none(), "held back while the record waits");
        let claim = table.claim_emit("e1").expect("first claim");
        assert_eq!(claim.exit.map(|e| e.exec_id).as_deref(), Some("e1"));
        assert!(table.claim_emit("e1").is_none(), "one exec, one record");
    }

    #[test]
    fn an_exit_after_its_record_went_out_is_emitted_at_once() {
        let table = ProcessTable::default();
        table.expect_emit("e1");
        assert!(table.claim_emit("e1").is_some_and(|c| c.exit.is_none()));
        assert_eq!(table.exit_after_record(exit("e1")).map(|e| e.exec_id).as_deref(), Some("e1"));
        assert_eq!(table.exit_after_record(exit("never-pending")).map(|e| e.pid), Some(7));
    }
}
