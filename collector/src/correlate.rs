//! Attribution: which workload run made each cloud action, from the identifiers real
//! audit records carry.
//!
//! Rules, strongest first (each link records its reason and a confidence):
//! - `web_identity_token_jti`: an AssumeRoleWithWebIdentity whose role session name is the
//!   `jti` of a Sigil-issued token (the README tells users to do this): that issuance's run.
//! - `web_identity_subject_and_time`: the web-identity subject is a SPIFFE ID Sigil issued
//!   a token for, valid at the call's time.
//! - `temporary_key_from_attributed_assume_role`: the access key of this call was handed
//!   out by an AssumeRole* call already attributed: the same run(s).
//! - `access_key_id_in_window`: the agent saw this access key id in a SigV4 `Credential=`
//!   within the time window; one link per run that did, confidence split among them.
//! - `access_key_id_outside_window`: seen, but not near this call's time.
//! - `gcp_principal_in_self_signed_jwt`: GCP principal email equals the issuer/subject of
//!   a JWT the agent saw a run present (service-account self-signed JWTs), in the window.
//!
//! Actions matching nothing stay unattributed; that list is itself a finding.

use std::collections::{HashSet, VecDeque};

use crate::store::StoreError;

/// Audit records carry the time AWS/GCP received the call; the agent the time it was
/// sent. Allow for delivery delay and clock skew in both directions.
pub const WINDOW_BEFORE: i64 = 900;
pub const WINDOW_AFTER: i64 = 120;

/// An unattributed cloud action, as the rules need it.
#[derive(Debug, Clone)]
pub struct Action {
    pub id: String,
    pub provider: String,
    pub time: i64,
    pub action: String,
    pub access_key_id: Option<String>,
    pub principal: Option<String>,
    pub role_session_name: Option<String>,
    pub web_identity_subject: Option<String>,
    pub issued_access_key_id: Option<String>,
}

/// A row a rule matched: the run, and the process, credential use or token behind it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub run_id: String,
    pub exec_id: Option<String>,
    pub credential_use_id: Option<i64>,
    pub jti: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Link {
    pub hit: Hit,
    pub reason: &'static str,
    pub confidence: f64,
}

/// A link created by a correlation run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NewLink {
    pub cloud_action_id: String,
    pub run_id: String,
    pub reason: &'static str,
    pub confidence: f64,
}

/// What the rules read and write; each store backend answers it with its own queries
/// (index lookups by key id, jti, subject: never a scan of a whole table).
pub trait Lookups {
    /// Unattributed actions the identifiers queued since the last run may now link (and
    /// new actions), oldest first; the queue is drained.
    fn take_candidates(&mut self) -> Result<Vec<Action>, StoreError>;
    /// Unattributed actions that used access key `key`.
    fn unattributed_with_key(&mut self, key: &str) -> Result<Vec<Action>, StoreError>;
    /// Issuances whose jti is `jti` (a role session name), with their run.
    fn issuances_by_jti(&mut self, jti: &str) -> Result<Vec<Hit>, StoreError>;
    /// The most recent issuance for SPIFFE ID `subject` valid at `t` (± `slack`).
    fn issuance_for_subject(&mut self, subject: &str, t: i64, slack: i64) -> Result<Vec<Hit>, StoreError>;
    /// Links (and their confidence) of attributed AssumeRole* calls that handed out `key`.
    fn links_of_actions_issuing(&mut self, key: &str) -> Result<Vec<(Hit, f64)>, StoreError>;
    /// Per run, the use of access key `key` closest to `t`; only within the window when
    /// `window`.
    fn uses_of_key(&mut self, key: &str, t: i64, window: bool) -> Result<Vec<Hit>, StoreError>;
    /// Per run, a use in the window of a JWT whose issuer or subject is `principal`.
    fn uses_by_jwt_principal(&mut self, principal: &str, t: i64) -> Result<Vec<Hit>, StoreError>;
    /// Stores a link; false when it existed.
    fn insert_link(&mut self, action_id: &str, link: &Link, now: i64) -> Result<bool, StoreError>;
}

/// Links what the queued identifiers and new actions made attributable. The cost is
/// proportional to the candidates (and what linking them makes attributable in turn:
/// actions using temporary keys that a newly linked AssumeRole* handed out).
pub fn run(db: &mut impl Lookups, now: i64) -> Result<Vec<NewLink>, StoreError> {
    let mut pending: VecDeque<Action> = db.take_candidates()?.into();
    let mut seen = HashSet::new();
    let mut created = Vec::new();
    while let Some(a) = pending.pop_front() {
        if !seen.insert(a.id.clone()) {
            continue;
        }
        let links = find_links(db, &a)?;
        for l in &links {
            if db.insert_link(&a.id, l, now)? {
                created.push(NewLink { cloud_action_id: a.id.clone(), run_id: l.hit.run_id.clone(), reason: l.reason, confidence: l.confidence });
            }
        }
        if let (false, Some(key)) = (links.is_empty(), &a.issued_access_key_id) {
            pending.extend(db.unattributed_with_key(key)?.into_iter().filter(|b| !seen.contains(&b.id)));
        }
    }
    Ok(created)
}

fn find_links(db: &mut impl Lookups, a: &Action) -> Result<Vec<Link>, StoreError> {
    if a.action == "AssumeRoleWithWebIdentity" {
        let by_jti = web_identity(db, a)?;
        if !by_jti.is_empty() {
            return Ok(by_jti);
        }
    }
    if let Some(key) = &a.access_key_id {
        let inherited: Vec<Link> = db
            .links_of_actions_issuing(key)?
            .into_iter()
            .map(|(hit, c)| Link { hit, reason: "temporary_key_from_attributed_assume_role", confidence: (c * 0.95 * 100.0).round() / 100.0 })
            .collect();
        if !inherited.is_empty() {
            return Ok(inherited);
        }
        let seen = db.uses_of_key(key, a.time, true)?;
        if !seen.is_empty() {
            return Ok(split_among(seen, "access_key_id_in_window", 0.95));
        }
        let ever = db.uses_of_key(key, a.time, false)?;
        if !ever.is_empty() {
            return Ok(split_among(ever, "access_key_id_outside_window", 0.5));
        }
    }
    if a.provider == "gcp"
        && let Some(email) = &a.principal
    {
        return Ok(split_among(db.uses_by_jwt_principal(email, a.time)?, "gcp_principal_in_self_signed_jwt", 0.8));
    }
    Ok(Vec::new())
}

fn web_identity(db: &mut impl Lookups, a: &Action) -> Result<Vec<Link>, StoreError> {
    if let Some(session) = &a.role_session_name {
        let found = db.issuances_by_jti(session)?;
        if !found.is_empty() {
            return Ok(found.into_iter().map(|hit| Link { hit, reason: "web_identity_token_jti", confidence: 0.99 }).collect());
        }
    }
    let Some(subject) = &a.web_identity_subject else { return Ok(Vec::new()) };
    // The most recent token for that SPIFFE ID that was valid when the call was made.
    Ok(db
        .issuance_for_subject(subject, a.time, WINDOW_AFTER)?
        .into_iter()
        .map(|hit| Link { hit, reason: "web_identity_subject_and_time", confidence: 0.8 })
        .collect())
}

/// One link per run that used the credential; when n runs did, each is one of n suspects,
/// so `base` confidence is split among them (rounded to two decimals).
fn split_among(hits: Vec<Hit>, reason: &'static str, base: f64) -> Vec<Link> {
    let n = hits.len().max(1) as f64;
    hits.into_iter().map(|hit| Link { hit, reason, confidence: ((base / n) * 100.0).round() / 100.0 }).collect()
}
