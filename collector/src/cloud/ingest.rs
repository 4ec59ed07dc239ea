//! Audit logs into the store, as they are read: actions go to the store in batches (one
//! transaction each), so a file of a million records is never held as actions at once, and
//! what was stored before a failure stays stored.

use std::{fmt, path::Path};

use super::{CloudAction, Limits, Provider, RecordError, Sink, SkippedFile, cloudtrail, gcp};
use crate::store::{Store, StoreError};

/// Actions per store transaction: large enough that commits are a small share of the
/// cost, small enough that a batch of parsed records stays a few tens of MB.
pub const BATCH: usize = 5_000;

/// Something the operator must hear about while ingesting.
#[derive(Debug)]
pub enum Notice<'a> {
    /// A record (or document part) that could not be ingested.
    Record(&'a RecordError),
    /// A file of a directory that was not ingested.
    File(&'a SkippedFile),
}

impl fmt::Display for Notice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Record(e) => write!(f, "skipped: {e}"),
            Notice::File(s) => write!(f, "skipped file: {s}"),
        }
    }
}

/// What an ingest run did, in numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub stored: u64,
    pub duplicates: u64,
    pub record_errors: u64,
    pub skipped_files: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The path could not be read (the cause is the error's source).
    #[error("{path}")]
    Io { path: String, source: std::io::Error },
    #[error("storing cloud actions failed; the {stored} stored before the failure stay stored")]
    Store { stored: u64, source: StoreError },
}

/// A [`Sink`] that hands actions to the store writer in batches and reports everything
/// else as it comes.
struct StoreSink<'s> {
    batch: Vec<CloudAction>,
    writer: std::sync::mpsc::SyncSender<Vec<CloudAction>>,
    totals: Totals,
    report: &'s mut dyn FnMut(Notice<'_>),
}

impl StoreSink<'_> {
    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            // The writer only hangs up after a store failure, which `ingest_path` reports.
            let _ = self.writer.send(batch);
        }
    }
}

impl Sink for StoreSink<'_> {
    fn action(&mut self, action: CloudAction) {
        self.batch.push(action);
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    fn error(&mut self, error: RecordError) {
        self.totals.record_errors += 1;
        (self.report)(Notice::Record(&error));
    }

    fn skipped(&mut self, file: SkippedFile) {
        self.totals.skipped_files += 1;
        (self.report)(Notice::File(&file));
    }
}

/// Stores batches as they arrive, one transaction each, until the reader is done or the
/// store fails; returns (stored, duplicates) and the failure, if any.
fn write_batches(store: &dyn Store, batches: std::sync::mpsc::Receiver<Vec<CloudAction>>) -> (u64, u64, Option<StoreError>) {
    let (mut stored, mut duplicates) = (0, 0);
    for batch in batches {
        match store.ingest_cloud(&batch) {
            Ok(out) => {
                stored += u64::from(out.stored);
                duplicates += u64::from(out.duplicates);
            }
            Err(e) => return (stored, duplicates, Some(e)),
        }
    }
    (stored, duplicates, None)
}

/// Ingests a file or a directory of `provider` audit logs into `store`, reporting each
/// bad record and each file left out through `report`. Correlation is the caller's: one
/// run after everything is stored costs less than one per batch.
pub fn ingest_path(store: &dyn Store, provider: Provider, path: &Path, limits: &Limits, report: &mut dyn FnMut(Notice<'_>)) -> Result<Totals, IngestError> {
    // Reading and storing overlap: one thread parses while another commits the previous
    // batch. Two batches in flight bound the memory.
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    let (walked, mut totals, (stored, duplicates, failed)) = std::thread::scope(|scope| {
        let storing = scope.spawn(move || write_batches(store, rx));
        let mut sink = StoreSink { batch: Vec::with_capacity(BATCH), writer: tx, totals: Totals::default(), report };
        let walked = match provider {
            Provider::Aws => cloudtrail::parse_path_into(path, limits, &mut sink),
            Provider::Gcp => gcp::parse_path_into(path, limits, &mut sink),
        };
        sink.flush();
        let StoreSink { totals, writer, .. } = sink;
        drop(writer); // ends the writer's loop once the last batch is stored
        // A panic in the writer poisoned the store's lock: say so rather than guess counts.
        (walked, totals, storing.join().unwrap_or((0, 0, Some(StoreError::Poisoned))))
    });
    totals.stored = stored;
    totals.duplicates = duplicates;
    if let Some(source) = failed {
        return Err(IngestError::Store { stored, source });
    }
    walked.map_err(|source| IngestError::Io { path: path.display().to_string(), source })?;
    Ok(totals)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
mod tests {
    use serde_json::json;
    use sigil_proto::EventBody;
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};

    use super::*;
    use crate::store::{
        AgentEvent, Page, Query,
        sqlite::{SqliteStore, now_unix},
    };

    const CTR: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
    const KEY: &str = "AKIASIGILRETAIN00001";

    fn rfc3339(unix: i64) -> String {
        OffsetDateTime::from_unix_timestamp(unix).unwrap().format(&Rfc3339).unwrap()
    }

    /// What an agent reported `days` ago: a process in a container using `key`.
    fn agent_saw(store: &SqliteStore, tag: &str, container: &str, key: &str, when: i64) {
        let workload = json!({"kind": "kubernetes_pod", "pod_uid": format!("pod-{tag}"), "container_id": container});
        let exec = json!({
            "kind": "process_exec", "time": rfc3339(when), "exec_id": format!("exec-{tag}"), "process_id": format!("proc-{tag}"),
            "pid": 4242, "ppid": 1, "binary": {"path": "/usr/bin/python3", "sha256": "ab"},
            "cgroup": {"path": format!("/kubepods/{container}")}, "workload": workload, "comm": "python3",
        });
        let using = json!({
            "kind": "credential_use", "time": rfc3339(when), "process": {"exec_id": format!("exec-{tag}"), "workload": workload},
            "destination": {"ip": "52.216.1.1", "port": 443, "host": "s3.amazonaws.com"},
            "detector": "aws_sigv4", "class": "static", "fingerprint": format!("fp-{tag}"),
            "identifiers": {"access_key_id": key},
        });
        let events = [
            AgentEvent { id: format!("{tag}-1"), body: EventBody::from_json(exec.to_string().as_bytes()).unwrap() },
            AgentEvent { id: format!("{tag}-2"), body: EventBody::from_json(using.to_string().as_bytes()).unwrap() },
        ];
        let out = store.ingest_events("node-a", &events).unwrap();
        assert_eq!(out.stored, 2, "{out:?}");
    }

    /// An incident responder imports CloudTrail from 40 days ago, when the agents saw the
    /// calls; the collector is served with 30-day retention. The import is evidence: the
    /// records and what they are attributed to survive retention, while agent data nobody's
    /// evidence points at is still deleted.
    #[test]
    fn imported_evidence_and_its_attribution_survive_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        let then = now_unix() - 40 * 86_400;
        agent_saw(&store, "a", CTR, KEY, then);
        agent_saw(&store, "b", &CTR.replace("c", "d"), "AKIASIGILUNRELATED01", then);
        let trail = json!({"Records": [{
            "eventVersion": "1.10", "eventID": "ret-1", "eventTime": rfc3339(then + 30),
            "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": "us-east-1",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/ci", "accessKeyId": KEY},
            "sourceIPAddress": "198.51.100.7",
        }]});
        let file = dir.path().join("old-trail.json");
        std::fs::write(&file, trail.to_string()).unwrap();
        let mut notices = Vec::new();
        let totals = ingest_path(&store, Provider::Aws, &file, &Limits::default(), &mut |n| notices.push(n.to_string())).unwrap();
        assert_eq!(totals.stored, 1, "{notices:?}");
        assert_eq!(store.correlate().unwrap().len(), 1);

        // What `serve --retention-days 30` runs at start-up.
        store.retain(now_unix() - 30 * 86_400).unwrap();

        let trace = store.query(&Query::Trace("ret-1".into(), Page::default())).unwrap();
        assert_eq!(trace["attributed"], true, "{trace}");
        let at = &trace["attribution"][0];
        assert_eq!(at["run"]["run_id"], format!("container:{CTR}"), "{trace}");
        assert_eq!(at["credential"]["access_key_id"], KEY, "{trace}");
        assert_eq!(at["processes"][0]["binary_path"], "/usr/bin/python3", "{trace}");
        // The unrelated old run is gone: retention still works for everything else.
        let other = format!("container:{}", CTR.replace("c", "d"));
        assert!(store.query(&Query::Run(other, Page::default())).is_err_and(|e| matches!(e, StoreError::NotFound(_))));
    }
}
