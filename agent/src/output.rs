//! Where identity events go. Until the collector stream exists, one JSON object per line
//! on stdout (logs go to stderr, so stdout stays machine-readable).

use std::io::{self, Write};

use serde::Serialize;

pub trait Sink: Send + Sync {
    /// Emits one event; an error means the sink is gone (e.g. the reader closed the pipe).
    fn emit(&self, event: &dyn erased::Event) -> io::Result<()>;
}

/// Object-safe wrapper over `Serialize` so sinks can be trait objects.
pub mod erased {
    pub trait Event {
        fn to_json(&self) -> serde_json::Result<Vec<u8>>;
    }
    impl<T: serde::Serialize> Event for T {
        fn to_json(&self) -> serde_json::Result<Vec<u8>> {
            serde_json::to_vec(self)
        }
    }
}

#[derive(Default)]
pub struct JsonLines;

impl Sink for JsonLines {
    fn emit(&self, event: &dyn erased::Event) -> io::Result<()> {
        let mut line = event.to_json().map_err(io::Error::other)?;
        line.push(b'\n');
        let mut out = io::stdout().lock();
        out.write_all(&line)?;
        // One flush per event: consumers (tests, `jq`, log shippers) read line by line.
        out.flush()
    }
}

/// Every event to several sinks (stdout and the collector spool). The first error wins,
/// after every sink was tried.
pub struct Tee(pub Vec<std::sync::Arc<dyn Sink>>);

impl Sink for Tee {
    fn emit(&self, event: &dyn erased::Event) -> io::Result<()> {
        let mut first = Ok(());
        for s in &self.0 {
            if let Err(e) = s.emit(event) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

/// Health counters, emitted periodically and at shutdown.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStats {
    pub kind: &'static str,
    pub node: String,
    pub hash: crate::attest::hash::HashStats,
    /// Events the kernel could not queue because the ring buffer was full.
    pub ring_buffer_lost: LostByKind,
    /// Records that arrived but could not be decoded (never silently ignored).
    pub decode_errors: u64,
    pub processes_tracked: usize,
    /// Present when token issuance runs.
    pub tokens: Option<crate::issue::issuer::TokenStats>,
    /// Present when credential-use tracing runs.
    pub trace: Option<crate::trace::tracer::TraceStats>,
    /// Present when events stream to a collector.
    pub export: Option<crate::stream::exporter::ExportStats>,
    pub events: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LostByKind {
    pub exec: u64,
    pub exit: u64,
    pub connect: u64,
    pub data: u64,
    pub file_open: u64,
}
