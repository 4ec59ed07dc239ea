//! Where identity events go. Until the collector stream exists, one JSON object per line
//! on stdout (logs go to stderr, so stdout stays machine-readable).

use std::io::{self, Write};

use serde::Serialize;

pub trait Sink: Send + Sync {
    /// Writes one serialized event; an error means the sink is gone (e.g. the reader
    /// closed the pipe).
    fn write(&self, kind: &str, json: &[u8]) -> io::Result<()>;

    /// Serializes an event once and writes it. An event that cannot be serialized is a
    /// bug in the agent: it is logged loudly, and the agent keeps attesting rather than
    /// leaving the node unwatched. Only a sink that is gone is an error.
    fn emit(&self, event: &dyn erased::Event) -> io::Result<()> {
        match event.to_json() {
            Ok(json) => self.write(kind_of(&json), &json),
            Err(e) => {
                tracing::error!("an event could not be serialized and was not emitted: {e}");
                Ok(())
            }
        }
    }
}

/// The `kind` of a serialized event. Every event type serializes `kind` first, so this is
/// a prefix check rather than a parse.
pub fn kind_of(json: &[u8]) -> &str {
    json.strip_prefix(br#"{"kind":""#)
        .and_then(|rest| rest.iter().position(|&b| b == b'"').map(|end| &rest[..end]))
        .and_then(|k| std::str::from_utf8(k).ok())
        .unwrap_or("unknown")
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
    fn write(&self, _kind: &str, json: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(json)?;
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
    fn write(&self, kind: &str, json: &[u8]) -> io::Result<()> {
        if let Ok(mut m) = self.by_kind.lock() {
            *m.entry(kind.to_owned()).or_default() += 1;
        }
        let mut first = Ok(());
        for s in &self.sinks {
            if let Err(e) = s.write(kind, json)
                && first.is_ok() {
                    first = Err(e);
                }
        }
        first
    }
}

/// Health counters, emitted periodically and at shutdown.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentStats {
    pub kind: &'static str,
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
    /// Event-thread CPU time per kernel event, by kind.
    pub cpu_by_kind: std::collections::BTreeMap<&'static str, crate::cpu::CpuCost>,
    /// Identity events emitted, by kind.
    pub emitted: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LostByKind {
    pub exec: u64,
    pub exit: u64,
    pub connect: u64,
    pub data: u64,
    pub file_open: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_read_from_the_serialized_prefix() {
        assert_eq!(kind_of(br#"{"kind":"process_exec","pid":1}"#), "process_exec");
        assert_eq!(kind_of(br#"{"pid":1}"#), "unknown");
        assert_eq!(kind_of(br#"{"kind":"unterminated"#), "unknown");
        assert_eq!(kind_of(b""), "unknown");
    }
}
