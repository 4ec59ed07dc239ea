//! What one batch changes in the aggregate tables `posture` and `static-credentials`
//! read, whatever the backend: per credential (class and fingerprint), per credential
//! and run, and per run. Each backend folds the newly stored credential uses (never a
//! duplicate: exactly once) into a [`Deltas`] and applies it with its own SQL in the
//! batch's transaction.
//!
//! An aggregated use (the agent folds repeated uses into one event carrying `count`,
//! `first_seen`, `last_seen`) counts `count` times, from its first to its last use.

use std::collections::BTreeMap;

use sigil_proto::{json, v1};

use super::StoreError;

/// The figures of one credential use that the aggregates take.
#[derive(Debug, Clone)]
pub struct UseFigures {
    pub count: i64,
    pub first: i64,
    pub last: i64,
    /// Not a short-lived or Sigil-issued credential: a run using one is not "short-lived
    /// only".
    pub long_lived: bool,
    pub detector: String,
    pub access_key_id: Option<String>,
    pub token_family: Option<String>,
}

impl UseFigures {
    /// `time` is the event's own time: for an aggregate, its last use (the agent sets
    /// `last_seen` to it).
    pub fn of(v: &v1::CredentialUse, time: i64) -> Self {
        let first = v.first_seen.as_deref().and_then(crate::cloud::parse_rfc3339).map_or(time, |f| f.min(time));
        let short = [v1::CredentialClass::ShortLived as i32, v1::CredentialClass::SigilIssued as i32];
        let ids = v.identifiers.as_ref();
        Self {
            // A count of 0 cannot be: the event itself is one use.
            count: v.count.map_or(1, |n| i64::try_from(n).unwrap_or(i64::MAX).max(1)),
            first,
            last: time,
            long_lived: !short.contains(&v.class),
            detector: json::detector::name(v.detector).unwrap_or_else(|| "unknown".into()),
            access_key_id: ids.and_then(|i| i.access_key_id.clone()),
            token_family: ids.and_then(|i| i.token_family.clone()),
        }
    }
}

/// One credential's change.
#[derive(Debug, Clone)]
pub struct CredentialDelta {
    pub uses: i64,
    pub first: i64,
    pub last: i64,
    pub detector: String,
    pub access_key_id: Option<String>,
    pub token_family: Option<String>,
}

/// One run's change: uses, and uses of long-lived credentials.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunDelta {
    pub uses: i64,
    pub long_uses: i64,
}

/// A batch's changes, keyed by `K` (the backend's name of a credential: class and
/// fingerprint), in key order so concurrent writers lock rows in one order.
#[derive(Debug)]
pub struct Deltas<K> {
    pub credentials: BTreeMap<K, CredentialDelta>,
    /// Uses per credential and run.
    pub credential_runs: BTreeMap<(K, i64), i64>,
    pub runs: BTreeMap<i64, RunDelta>,
}

impl<K> Default for Deltas<K> {
    fn default() -> Self {
        Self { credentials: BTreeMap::new(), credential_runs: BTreeMap::new(), runs: BTreeMap::new() }
    }
}

/// The larger of two optional strings (`None` below everything), as SQL's `max` does.
fn max_opt(a: &mut Option<String>, b: &Option<String>) {
    if b.as_deref() > a.as_deref() {
        a.clone_from(b);
    }
}

impl<K: Ord + Clone> Deltas<K> {
    pub fn is_empty(&self) -> bool {
        self.credentials.is_empty()
    }

    /// Adds one newly stored use of credential `key` by run `rid` (none when the agent
    /// could not tell the run).
    pub fn add(&mut self, key: K, rid: Option<i64>, u: UseFigures) {
        if let Some(rid) = rid {
            *self.credential_runs.entry((key.clone(), rid)).or_default() += u.count;
            let r = self.runs.entry(rid).or_default();
            r.uses += u.count;
            r.long_uses += if u.long_lived { u.count } else { 0 };
        }
        match self.credentials.get_mut(&key) {
            Some(c) => {
                c.uses += u.count;
                c.first = c.first.min(u.first);
                c.last = c.last.max(u.last);
                if u.detector > c.detector {
                    c.detector = u.detector;
                }
                max_opt(&mut c.access_key_id, &u.access_key_id);
                max_opt(&mut c.token_family, &u.token_family);
            }
            None => {
                let c = CredentialDelta {
                    uses: u.count,
                    first: u.first,
                    last: u.last,
                    detector: u.detector,
                    access_key_id: u.access_key_id,
                    token_family: u.token_family,
                };
                self.credentials.insert(key, c);
            }
        }
    }
}

/// The counts kept per run (by each batch) and the aggregates of cloud actions and links
/// (by triggers in both schemas): per table, its rows and the same rows computed from
/// scratch, in SQL both backends speak.
pub const SHARED_CHECKS: [(&str, &str, &str); 6] = [
    (
        "agg_tokens",
        "SELECT node_id, tokens, ttl_sum, ttl_count FROM agg_tokens WHERE tokens <> 0 ORDER BY node_id",
        "SELECT node_id, count(*) AS tokens, CAST(coalesce(sum(ttl), 0) AS BIGINT) AS ttl_sum, count(ttl) AS ttl_count
         FROM token_issuances GROUP BY node_id ORDER BY node_id",
    ),
    (
        "agg_denials",
        "SELECT node_id, reason, denials FROM agg_denials WHERE denials <> 0 ORDER BY node_id, reason",
        "SELECT node_id, reason, count(*) AS denials FROM token_denials GROUP BY node_id, reason ORDER BY node_id, reason",
    ),
    (
        "runs.processes/binaries",
        "SELECT rid, processes, binaries FROM runs ORDER BY rid",
        "SELECT r.rid, (SELECT count(*) FROM processes p WHERE p.rid = r.rid) AS processes,
                (SELECT count(DISTINCT binary_path) FROM processes p WHERE p.rid = r.rid) AS binaries FROM runs r ORDER BY r.rid",
    ),
    (
        "agg_actions",
        "SELECT provider, actions FROM agg_actions WHERE actions <> 0 ORDER BY provider",
        "SELECT provider, count(*) AS actions FROM cloud_actions GROUP BY provider ORDER BY provider",
    ),
    (
        "agg_links",
        "SELECT reason, links FROM agg_links WHERE links <> 0 ORDER BY reason",
        "SELECT reason, count(*) AS links FROM links GROUP BY reason ORDER BY reason",
    ),
    (
        "agg_delays",
        "SELECT seconds, actions FROM agg_delays WHERE actions <> 0 ORDER BY seconds",
        "SELECT seconds, count(*) AS actions FROM (
            SELECT min(l.created) - a.ingested AS seconds FROM cloud_actions a JOIN links l ON l.cloud_action_id = a.id GROUP BY a.id) x
         GROUP BY seconds ORDER BY seconds",
    ),
];

/// Fills in the token aggregates from the rows they summarise, for a database written
/// before they were kept (run once, right after the schema created them; both backends).
pub const FILL_TOKEN_AGGREGATES: &str = "INSERT INTO agg_tokens (node_id, tokens, ttl_sum, ttl_count)
        SELECT node_id, count(*), coalesce(sum(ttl), 0), count(ttl) FROM token_issuances GROUP BY node_id;
    INSERT INTO agg_denials (node_id, reason, denials) SELECT node_id, reason, count(*) FROM token_denials GROUP BY node_id, reason;";

/// Rows of an aggregate table against the same rows computed from scratch.
pub fn compare(table: &str, kept: &[serde_json::Value], fresh: &[serde_json::Value]) -> Result<(), StoreError> {
    if kept == fresh {
        return Ok(());
    }
    let at = kept.iter().zip(fresh).position(|(k, f)| k != f).unwrap_or(kept.len().min(fresh.len()));
    Err(StoreError::Inconsistent(format!(
        "{table}: {} rows kept, {} computed from the rows they summarise; first difference at row {at}: kept {} computed {}",
        kept.len(),
        fresh.len(),
        kept.get(at).map_or("nothing".into(), ToString::to_string),
        fresh.get(at).map_or("nothing".into(), ToString::to_string),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aggregated(count: Option<u64>, first: Option<&str>) -> v1::CredentialUse {
        v1::CredentialUse {
            time: "2026-01-01T00:01:00Z".into(),
            class: v1::CredentialClass::Static as i32,
            count,
            first_seen: first.map(Into::into),
            last_seen: Some("2026-01-01T00:01:00Z".into()),
            identifiers: Some(v1::Identifiers { access_key_id: Some("AKIA1".into()), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn an_aggregated_use_counts_its_count_from_its_first_to_its_last_use() {
        let t = 1_767_225_660;
        let mut d = Deltas::default();
        d.add("fp", Some(7), UseFigures::of(&aggregated(Some(40), Some("2026-01-01T00:00:00Z")), t));
        d.add("fp", Some(8), UseFigures::of(&aggregated(None, None), t));
        d.add("fp", None, UseFigures::of(&aggregated(Some(0), None), t));
        let c = &d.credentials["fp"];
        assert_eq!((c.uses, c.first, c.last), (42, t - 60, t));
        assert_eq!(c.access_key_id.as_deref(), Some("AKIA1"));
        assert_eq!((d.credential_runs[&("fp", 7)], d.credential_runs[&("fp", 8)]), (40, 1));
        assert_eq!((d.runs[&7].uses, d.runs[&7].long_uses), (40, 40));
    }
}
