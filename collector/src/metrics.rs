//! The collector's OpenTelemetry instruments.
//!
//! What only the server sees (duplicates, rejections, unparsable audit records) is
//! counted in process; everything that is a fact about the stored data (events by kind,
//! attribution links by reason, the posture figures) is read from the store into a
//! snapshot every few seconds, so metrics survive restarts and agree with `sigil posture`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use opentelemetry::{KeyValue, metrics::Meter};
use serde_json::Value;

#[derive(Default)]
pub struct Counters {
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    /// Pushes and signing requests whose payload named another node than the client
    /// certificate: a compromised or misconfigured node.
    pub node_mismatch: AtomicU64,
    pub record_errors: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub fn record_errors(&self, provider: &str, n: usize) {
        if let Ok(mut m) = self.record_errors.lock() {
            *m.entry(provider.to_owned()).or_default() += n as u64;
        }
    }
}

/// The store's aggregates (`Store::metrics`), refreshed by a background task.
pub type Snapshot = Arc<Mutex<Value>>;

fn get(s: &Snapshot, path: &[&str]) -> Value {
    s.lock().map(|v| path.iter().fold(v.clone(), |cur, k| cur.get(k).cloned().unwrap_or(Value::Null))).unwrap_or(Value::Null)
}

pub fn register(meter: &Meter, counters: Arc<Counters>, snap: Snapshot) {
    for (name, field, label, desc) in [
        ("sigil.collector.ingested_events", "events_by_kind", "kind", "Agent events stored, by kind"),
        ("sigil.collector.cloud_actions_ingested", "cloud_actions_by_provider", "provider", "Cloud audit records stored, by provider"),
        ("sigil.collector.attribution_links", "links_by_reason", "reason", "Cloud actions attributed to runs, by reason"),
    ] {
        let s = snap.clone();
        meter
            .u64_observable_counter(name)
            .with_description(desc)
            .with_callback(move |o| {
                if let Value::Object(m) = get(&s, &[field]) {
                    for (k, v) in m {
                        o.observe(v.as_u64().unwrap_or(0), &[KeyValue::new(label, k)]);
                    }
                }
            })
            .build();
    }
    // Every kind is reported (0 until found), so a dashboard shows the quiet kinds too.
    let s = snap.clone();
    meter
        .u64_observable_counter("sigil.collector.findings")
        .with_description("Misuse findings stored, by kind (one per kind, subject and runs)")
        .with_callback(move |o| {
            let found = get(&s, &["findings_by_kind"]);
            for kind in crate::findings::KIND_NAMES.iter() {
                o.observe(found.get(kind).and_then(Value::as_u64).unwrap_or(0), &[KeyValue::new("kind", *kind)]);
            }
        })
        .build();
    let c = counters.clone();
    meter
        .u64_observable_counter("sigil.collector.duplicate_events")
        .with_description("Agent events received again (retries) and not stored twice")
        .with_callback(move |o| o.observe(c.duplicates.load(Ordering::Relaxed), &[]))
        .build();
    let c = counters.clone();
    meter
        .u64_observable_counter("sigil.collector.rejected_events")
        .with_description("Agent events refused as malformed")
        .with_callback(move |o| o.observe(c.rejected.load(Ordering::Relaxed), &[]))
        .build();
    let c = counters.clone();
    meter
        .u64_observable_counter("sigil.collector.node_mismatch")
        .with_description("Requests refused because the payload named another node than the client certificate")
        .with_callback(move |o| o.observe(c.node_mismatch.load(Ordering::Relaxed), &[]))
        .build();
    let c = counters;
    meter
        .u64_observable_counter("sigil.collector.cloud_record_errors")
        .with_description("Cloud audit records skipped as malformed, by provider")
        .with_callback(move |o| {
            let m = c.record_errors.lock().map(|m| m.clone()).unwrap_or_default();
            for p in ["aws", "gcp"] {
                o.observe(m.get(p).copied().unwrap_or(0), &[KeyValue::new("provider", p)]);
            }
        })
        .build();
    for (name, path, unit, desc) in [
        ("sigil.collector.cloud_actions", &["posture", "cloud_actions"][..], "", "Cloud actions stored"),
        ("sigil.collector.cloud_actions_attributed", &["posture", "cloud_actions_attributed"][..], "", "Cloud actions tied to a run"),
        ("sigil.collector.runs_using_credentials", &["posture", "runs_using_credentials"][..], "", "Runs seen using any credential"),
        ("sigil.collector.runs_short_lived_only", &["posture", "runs_using_only_short_lived_credentials"][..], "", "Runs using only short-lived credentials"),
        ("sigil.collector.short_lived_share", &["posture", "share_of_runs_short_lived_only"][..], "", "Share of runs using only short-lived credentials"),
        ("sigil.collector.long_lived_credentials_in_use", &["posture", "long_lived_credentials_in_use"][..], "", "Distinct long-lived credentials in use"),
        ("sigil.collector.mean_token_lifetime", &["posture", "mean_token_lifetime_seconds"][..], "s", "Mean lifetime of issued tokens"),
        (
            "sigil.collector.median_time_to_attribute",
            &["posture", "median_seconds_to_attribute"][..],
            "s",
            "Median time from ingesting a cloud action to attributing it",
        ),
        ("sigil.collector.agents", &["agents"][..], "", "Agents seen in the last five minutes"),
    ] {
        let s = snap.clone();
        let mut b = meter.f64_observable_gauge(name).with_description(desc);
        if !unit.is_empty() {
            b = b.with_unit(unit);
        }
        b.with_callback(move |o| o.observe(get(&s, path).as_f64().unwrap_or(0.0), &[])).build();
    }
    let s = snap;
    meter
        .f64_observable_gauge("sigil.collector.unattributed_cloud_actions")
        .with_description("Cloud actions no run could be tied to: a finding")
        .with_callback(move |o| {
            let total = get(&s, &["posture", "cloud_actions"]).as_f64().unwrap_or(0.0);
            let linked = get(&s, &["posture", "cloud_actions_attributed"]).as_f64().unwrap_or(0.0);
            o.observe(total - linked, &[]);
        })
        .build();
}
