//! The agent's OpenTelemetry instruments.
//!
//! Counters and gauges are observed from the stats snapshot the event loop refreshes
//! (one source of truth for `agent_stats` events and metrics); the token-lifetime
//! histogram is recorded where tokens are issued. Labels are fixed vocabularies only
//! (event kind, deny reason, credential class and detector, file kind): never a pid, a
//! jti, a fingerprint or anything a workload controls.

use std::sync::{Arc, Mutex};

use opentelemetry::{
    KeyValue,
    metrics::{Histogram, Meter},
};

use crate::{issue::policy::DenyReason, output::AgentStats};

pub type Snapshot = Arc<Mutex<AgentStats>>;

/// (instrument name, description, how to read its value from the snapshot)
type Reading = (&'static str, &'static str, fn(&AgentStats) -> u64);

fn read<T>(s: &Snapshot, f: impl FnOnce(&AgentStats) -> T) -> Option<T> {
    s.lock().ok().map(|g| f(&g))
}

/// Registers every instrument; returns the histogram the issuer records into.
pub fn register(meter: &Meter, snap: Snapshot) -> Histogram<f64> {
    let s = snap.clone();
    meter
        .u64_observable_counter("sigil.agent.events")
        .with_description("Identity events emitted, by kind")
        .with_callback(move |o| {
            for (kind, n) in read(&s, |a| a.emitted.clone()).unwrap_or_default() {
                o.observe(n, &[KeyValue::new("kind", kind)]);
            }
        })
        .build();
    let s = snap.clone();
    meter
        .u64_observable_counter("sigil.agent.ringbuf.lost_events")
        .with_description("Events the kernel could not queue because the ring buffer was full")
        .with_callback(move |o| {
            if let Some(l) = read(&s, |a| a.ring_buffer_lost) {
                for (k, n) in [("exec", l.exec), ("exit", l.exit), ("connect", l.connect), ("data", l.data), ("file_open", l.file_open)] {
                    o.observe(n, &[KeyValue::new("kind", k)]);
                }
            }
        })
        .build();
    let s = snap.clone();
    meter
        .u64_observable_counter("sigil.agent.kernel.drops")
        .with_description("Captures the kernel side gave up on, by reason (full maps or ring buffer, cut copies)")
        .with_callback(move |o| {
            if let Some(drops) = read(&s, |a| a.kernel_drops.clone()) {
                for (reason, n) in drops {
                    o.observe(n, &[KeyValue::new("reason", reason)]);
                }
            }
        })
        .build();
    let counters: [Reading; 8] = [
        ("sigil.agent.decode_errors", "Ring-buffer records that could not be decoded", |a| a.decode_errors),
        ("sigil.agent.hash.cache_hits", "Binary digests answered from the cache", |a| a.hash.cache_hits),
        ("sigil.agent.hash.cache_misses", "Binary digests computed", |a| a.hash.hashes_computed),
        ("sigil.agent.hash.errors", "Executables that could not be hashed", |a| a.hash.hash_errors),
        ("sigil.agent.tokens.issued", "JWT-SVIDs issued", |a| a.tokens.as_ref().map_or(0, |t| t.issued)),
        ("sigil.agent.spool.dropped_events", "Events dropped because the spool was full", |a| a.export.map_or(0, |e| e.spool.dropped_total)),
        ("sigil.agent.export.errors", "Failed pushes to the collector", |a| a.export.map_or(0, |e| e.send_errors)),
        ("sigil.agent.exported_events", "Events acknowledged by the collector", |a| a.export.map_or(0, |e| e.events_acked)),
    ];
    for (name, desc, f) in counters {
        let s = snap.clone();
        meter
            .u64_observable_counter(name)
            .with_description(desc)
            .with_callback(move |o| {
                if let Some(v) = read(&s, f) {
                    o.observe(v, &[]);
                }
            })
            .build();
    }
    let s = snap.clone();
    meter
        .f64_observable_counter("sigil.agent.hash.duration")
        .with_unit("s")
        .with_description("Time spent hashing executables")
        .with_callback(move |o| {
            if let Some(us) = read(&s, |a| a.hash.hash_micros) {
                o.observe(us as f64 / 1e6, &[]);
            }
        })
        .build();
    let s = snap.clone();
    meter
        .f64_observable_gauge("sigil.agent.event.cpu_per_event")
        .with_unit("us")
        .with_description("Event-thread CPU time per kernel event since start, by kind (getrusage)")
        .with_callback(move |o| {
            for (kind, c) in read(&s, |a| a.cpu_by_kind.clone()).unwrap_or_default() {
                o.observe(c.us_per_event, &[KeyValue::new("kind", kind)]);
            }
        })
        .build();
    let s = snap.clone();
    meter
        .u64_observable_counter("sigil.agent.token.denials")
        .with_description("Token requests refused, by reason")
        .with_callback(move |o| {
            let denied = read(&s, |a| a.tokens.as_ref().map(|t| t.denied.clone())).flatten();
            if let Some(denied) = denied {
                for r in DenyReason::ALL {
                    o.observe(denied.get(r.as_str()).copied().unwrap_or(0), &[KeyValue::new("reason", r.as_str())]);
                }
            }
        })
        .build();
    let s = snap.clone();
    meter
        .u64_observable_counter("sigil.agent.credential.uses")
        .with_description("Credentials seen on outbound requests, by class and detector")
        .with_callback(move |o| {
            for ((class, detector), n) in read(&s, |a| a.trace.as_ref().map(|t| t.uses_by_class_detector.clone())).flatten().unwrap_or_default() {
                o.observe(n, &[KeyValue::new("class", class), KeyValue::new("detector", detector)]);
            }
        })
        .build();
    let s = snap.clone();
    meter
        .u64_observable_counter("sigil.agent.credential.file_reads")
        .with_description("Opens of credential files, by kind")
        .with_callback(move |o| {
            for (kind, n) in read(&s, |a| a.trace.as_ref().map(|t| t.file_reads_by_kind.clone())).flatten().unwrap_or_default() {
                o.observe(n, &[KeyValue::new("file_kind", kind)]);
            }
        })
        .build();
    let gauges: [Reading; 4] = [
        ("sigil.agent.processes_tracked", "Live processes with an attestation record", |a| a.processes_tracked as u64),
        ("sigil.agent.long_lived_credentials", "Distinct long-lived credentials seen in use", |a| {
            a.trace.as_ref().map_or(0, |t| t.long_lived_credentials as u64)
        }),
        ("sigil.agent.shared_credentials", "Long-lived credentials used by more than one workload run", |a| {
            a.trace.as_ref().map_or(0, |t| t.shared_credentials as u64)
        }),
        ("sigil.agent.spool.depth_events", "Events spooled, not yet acknowledged by the collector", |a| a.export.map_or(0, |e| e.spool.depth_events)),
    ];
    for (name, desc, f) in gauges {
        let s = snap.clone();
        meter
            .u64_observable_gauge(name)
            .with_description(desc)
            .with_callback(move |o| {
                if let Some(v) = read(&s, f) {
                    o.observe(v, &[]);
                }
            })
            .build();
    }
    meter
        .f64_histogram("sigil.agent.token.lifetime")
        .with_unit("s")
        .with_description("Lifetime of issued tokens")
        .with_boundaries(vec![30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0])
        .build()
}
