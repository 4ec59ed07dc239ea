//! Where identity events go: one JSON object per line on stdout (logs go to stderr, so
//! stdout stays machine-readable), and the collector spool.

use std::io::{self, Write};

use sigil_proto::EventBody;

/// Every identity event goes through a sink as its typed contract body
/// (proto/sigil/v1/events.proto); each sink picks its encoding (JSON for stdout, protobuf
/// for the spool), so no sink parses what another serialized.
pub trait Sink: Send + Sync {
    /// Writes one event; an error means the sink is gone (e.g. the reader closed the pipe).
    fn emit(&self, event: &EventBody) -> io::Result<()>;
}

#[derive(Default)]
pub struct JsonLines;

impl Sink for JsonLines {
    /// An event that cannot be serialized is a bug in the agent: it is logged loudly, and
    /// the agent keeps attesting rather than leaving the node unwatched.
    fn emit(&self, event: &EventBody) -> io::Result<()> {
        let json = match event.to_json() {
            Ok(json) => json,
            Err(e) => {
                tracing::error!("a {} event could not be serialized and was not written: {e}", event.kind());
                return Ok(());
            }
        };
        let mut out = io::stdout().lock();
        out.write_all(&json)?;
        out.write_all(b"\n")?;
        // One flush per event: consumers (tests, `jq`, log shippers) read line by line.
        out.flush()
    }
}

/// Every event to several sinks (stdout and the collector spool), counted by kind. The
/// first error wins, after every sink was tried.
pub struct Tee {
    sinks: Vec<std::sync::Arc<dyn Sink>>,
    by_kind: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Tee {
    pub fn new(sinks: Vec<std::sync::Arc<dyn Sink>>) -> Self {
        Self { sinks, by_kind: Default::default() }
    }

    pub fn events_by_kind(&self) -> std::collections::BTreeMap<String, u64> {
        self.by_kind.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Sink for Tee {
    fn emit(&self, event: &EventBody) -> io::Result<()> {
        if let Ok(mut m) = self.by_kind.lock() {
            *m.entry(event.kind().to_owned()).or_default() += 1;
        }
        let mut first = Ok(());
        for s in &self.sinks {
            if let Err(e) = s.emit(event)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

/// Health counters, emitted periodically and at shutdown.
#[derive(Debug, Clone, Default)]
pub struct AgentStats {
    pub node: String,
    pub hash: crate::attest::hash::HashStats,
    /// Events the kernel could not queue because the ring buffer was full.
    pub ring_buffer_lost: LostByKind,
    /// Everything the kernel side gave up on (full maps, full ring buffer, cut copies),
    /// by `agent_common::DropReason` label.
    pub kernel_drops: std::collections::BTreeMap<&'static str, u64>,
    /// Records that arrived but could not be decoded (never silently ignored).
    pub decode_errors: u64,
    pub processes_tracked: usize,
    /// Present when token issuance runs.
    pub tokens: Option<crate::issue::issuer::TokenStats>,
    /// Present when credential-use tracing runs.
    pub trace: Option<crate::trace::tracer::TraceStats>,
    /// Present when events stream to a collector.
    pub export: Option<crate::stream::exporter::ExportStats>,
    /// Kernel records read from the ring buffer.
    pub events: u64,
    /// Execs read at a poll tick without waking the agent.
    pub quiet_execs: u64,
    /// Event-thread CPU time per kernel event, by kind.
    pub cpu_by_kind: std::collections::BTreeMap<&'static str, crate::cpu::CpuCost>,
    /// Identity events emitted, by kind.
    pub emitted: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LostByKind {
    pub exec: u64,
    pub exit: u64,
    pub connect: u64,
    pub data: u64,
    pub file_open: u64,
}

impl From<&AgentStats> for EventBody {
    fn from(a: &AgentStats) -> Self {
        use sigil_proto::v1;
        let l = a.ring_buffer_lost;
        EventBody::AgentStats(v1::AgentStats {
            node: a.node.clone(),
            hash: Some(v1::HashStats {
                cache_hits: a.hash.cache_hits,
                hashes_computed: a.hash.hashes_computed,
                hash_errors: a.hash.hash_errors,
                hash_micros: a.hash.hash_micros,
                pending: a.hash.pool.pending,
                skipped_queue_full: a.hash.pool.skipped_queue_full,
                skipped_time_budget: a.hash.pool.skipped_time_budget,
                skipped_too_large: a.hash.pool.skipped_too_large,
                skipped_not_regular_file: a.hash.pool.skipped_not_regular_file,
                skipped_shutdown: a.hash.pool.skipped_shutdown,
            }),
            ring_buffer_lost: Some(v1::LostByKind { exec: l.exec, exit: l.exit, connect: l.connect, data: l.data, file_open: l.file_open }),
            decode_errors: a.decode_errors,
            quiet_execs: a.quiet_execs,
            processes_tracked: a.processes_tracked as u64,
            tokens: a.tokens.as_ref().map(|t| v1::TokenStats { issued: t.issued, denied: t.denied.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect() }),
            trace: a.trace.as_ref().map(v1::TraceStats::from),
            export: a.export.map(|e| v1::ExportStats {
                batches_sent: e.batches_sent,
                events_acked: e.events_acked,
                send_errors: e.send_errors,
                spool_errors: e.spool_errors,
                spool: Some(v1::SpoolStats {
                    depth_events: e.spool.depth_events,
                    depth_bytes: e.spool.depth_bytes,
                    appended_total: e.spool.appended_total,
                    acked_total: e.spool.acked_total,
                    dropped_total: e.spool.dropped_total,
                    corrupt_records_total: e.spool.corrupt_records_total,
                }),
            }),
            events: a.events,
            emitted: a.emitted.clone(),
            kernel_drops: a.kernel_drops.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
            cpu_by_kind: a
                .cpu_by_kind
                .iter()
                .map(|(k, c)| ((*k).to_owned(), v1::CpuCost { events: c.events, cpu_us: c.cpu_us, us_per_event: c.us_per_event }))
                .collect(),
        })
    }
}
