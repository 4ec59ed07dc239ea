//! Folding repeated credential uses into one event per interval.
//!
//! A keep-alive client that sends the same bearer token on every request would otherwise
//! produce one event per request. Uses of one credential (fingerprint) by one process to
//! one destination share a key; the first use of a key is emitted at once (attribution
//! and findings must not wait), later ones are counted and leave as one event per
//! interval carrying `count`, `first_seen` and `last_seen`. Nothing is dropped: pending
//! counts are flushed when the interval ends, when the process exits and when the agent
//! stops, and every event's counts add up to the uses seen.
//!
//! Exchanges (a token presented in a request body) are never folded: each one is the
//! start of a credential's life and is always its own event.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::events::CredentialUse;

/// How long uses of one key are folded together before they are reported.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Keys tracked at most; beyond it uses are emitted one by one (never dropped).
const MAX_KEYS: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    pid: u32,
    fingerprint: String,
    ip: Option<String>,
    port: Option<u32>,
    host: Option<String>,
}

impl Key {
    fn of(u: &CredentialUse) -> Self {
        let d = u.destination.as_ref();
        Self {
            pid: u.pid,
            fingerprint: u.fingerprint.clone(),
            ip: d.and_then(|d| d.ip.clone()),
            port: d.and_then(|d| d.port),
            host: d.and_then(|d| d.host.clone()),
        }
    }
}

struct Pending {
    /// The latest use folded in (its path, class and remaining lifetime are the freshest).
    latest: Option<CredentialUse>,
    first_seen: String,
    count: u64,
    /// When the current interval for this key started.
    since: Instant,
}

#[derive(Default)]
pub struct Aggregator {
    keys: HashMap<Key, Pending>,
}

impl Aggregator {
    /// Takes one use; returns it (marked `count: 1`) if it must be emitted now.
    pub fn observe(&mut self, mut used: CredentialUse, now: Instant) -> Option<CredentialUse> {
        used.count = Some(1);
        if used.exchange.is_some() {
            return Some(used);
        }
        let key = Key::of(&used);
        if let Some(p) = self.keys.get_mut(&key) {
            if p.count == 0 {
                p.first_seen.clone_from(&used.time);
            }
            p.count += 1;
            p.latest = Some(used);
            return None;
        }
        if self.keys.len() < MAX_KEYS {
            let pending = Pending { latest: None, first_seen: String::new(), count: 0, since: now };
            self.keys.insert(key, pending);
        }
        Some(used)
    }

    /// Reports every key whose interval has ended; forgets keys idle for a whole interval
    /// (so their next use is again emitted at once).
    pub fn due(&mut self, now: Instant) -> Vec<CredentialUse> {
        let mut out = Vec::new();
        self.keys.retain(|_, p| {
            if now.saturating_duration_since(p.since) < INTERVAL {
                return true;
            }
            p.since = now;
            match report(p) {
                Some(ev) => {
                    out.push(ev);
                    true
                }
                None => false,
            }
        });
        out
    }

    /// Reports and forgets everything pending for `pid` (the process exited).
    pub fn exited(&mut self, pid: u32) -> Vec<CredentialUse> {
        let mut out = Vec::new();
        self.keys.retain(|k, p| {
            if k.pid != pid {
                return true;
            }
            out.extend(report(p));
            false
        });
        out
    }

    /// Reports and forgets everything pending (the agent is stopping).
    pub fn flush(&mut self) -> Vec<CredentialUse> {
        self.keys.drain().filter_map(|(_, mut p)| report(&mut p)).collect()
    }
}

/// The aggregate event for what `p` has counted since its last report, if anything.
fn report(p: &mut Pending) -> Option<CredentialUse> {
    let mut ev = p.latest.take()?;
    ev.count = Some(std::mem::take(&mut p.count));
    ev.last_seen = Some(ev.time.clone());
    ev.first_seen = Some(std::mem::take(&mut p.first_seen));
    Some(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{body::Exchange, events::Destination};

    fn use_of(pid: u32, fingerprint: &str, port: u16, time: &str) -> CredentialUse {
        CredentialUse {
            time: time.into(),
            node: "n".into(),
            pid,
            destination: Some(Destination { ip: Some("127.0.0.1".into()), port: Some(u32::from(port)), host: None }),
            transport: "tls".into(),
            tls_library: Some("openssl".into()),
            protocol: sigil_proto::v1::Protocol::Http1 as i32,
            method: "GET".into(),
            path: "/".into(),
            detector: sigil_proto::v1::Detector::BearerToken as i32,
            class: sigil_proto::v1::CredentialClass::Unknown as i32,
            fingerprint: fingerprint.into(),
            identifiers: Some(Default::default()),
            ..Default::default()
        }
    }

    fn total(evs: &[CredentialUse]) -> u64 {
        evs.iter().map(|e| e.count.unwrap_or(0)).sum()
    }

    #[test]
    fn first_use_at_once_then_one_event_per_interval_with_counts_adding_up() {
        let mut a = Aggregator::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        out.extend(a.observe(use_of(1, "f", 443, "t0"), t0));
        assert_eq!(out.len(), 1, "the first use is emitted immediately");
        for i in 1..200u32 {
            out.extend(a.observe(use_of(1, "f", 443, &format!("t{i}")), t0));
        }
        assert_eq!(out.len(), 1, "repeats are folded");
        assert!(a.due(t0 + INTERVAL / 2).is_empty(), "not before the interval ends");
        let agg = a.due(t0 + INTERVAL);
        assert_eq!(agg.len(), 1);
        assert_eq!(agg[0].count, Some(199));
        assert_eq!(agg[0].first_seen.as_deref(), Some("t1"));
        assert_eq!(agg[0].last_seen.as_deref(), Some("t199"));
        out.extend(agg);
        assert_eq!(total(&out), 200);
        // Idle for a whole interval: forgotten, so the next use is immediate again.
        assert!(a.due(t0 + INTERVAL * 2).is_empty());
        assert!(a.observe(use_of(1, "f", 443, "later"), t0 + INTERVAL * 2).is_some());
    }

    #[test]
    fn distinct_processes_credentials_and_destinations_are_not_folded() {
        let mut a = Aggregator::default();
        let t0 = Instant::now();
        for u in [use_of(1, "f", 443, "t"), use_of(2, "f", 443, "t"), use_of(1, "g", 443, "t"), use_of(1, "f", 8443, "t")] {
            assert!(a.observe(u, t0).is_some());
        }
    }

    #[test]
    fn exit_and_shutdown_flush_everything_pending() {
        let mut a = Aggregator::default();
        let t0 = Instant::now();
        for pid in [1, 2] {
            for _ in 0..5 {
                let _ = a.observe(use_of(pid, "f", 443, "t"), t0);
            }
        }
        let one = a.exited(1);
        assert_eq!((one.len(), total(&one)), (1, 4));
        assert!(a.exited(1).is_empty(), "reported once");
        let rest = a.flush();
        assert_eq!((rest.len(), total(&rest)), (1, 4));
        assert_eq!(rest[0].pid, 2);
        assert!(a.flush().is_empty());
    }

    #[test]
    fn exchanges_are_never_folded() {
        let mut a = Aggregator::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            let mut u = use_of(1, "f", 443, "t");
            u.exchange = Some(Exchange { kind: "oauth_refresh_token", ..Exchange::default() }.into());
            assert_eq!(a.observe(u, t0).and_then(|e| e.count), Some(1));
        }
        assert!(a.flush().is_empty());
    }
}
