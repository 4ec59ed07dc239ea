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

use rusqlite::{Transaction, params};

use crate::store::StoreError;

/// Audit records carry the time AWS/GCP received the call; the agent the time it was
/// sent. Allow for delivery delay and clock skew in both directions.
pub const WINDOW_BEFORE: i64 = 900;
pub const WINDOW_AFTER: i64 = 120;

struct Action {
    id: String,
    provider: String,
    time: i64,
    action: String,
    access_key_id: Option<String>,
    principal: Option<String>,
    role_session_name: Option<String>,
    web_identity_subject: Option<String>,
}

struct Link {
    run_id: String,
    exec_id: Option<String>,
    credential_use_id: Option<String>,
    jti: Option<String>,
    reason: &'static str,
    confidence: f64,
}

/// A link created by a correlation run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NewLink {
    pub cloud_action_id: String,
    pub run_id: String,
    pub reason: &'static str,
    pub confidence: f64,
}

pub fn run(tx: &Transaction<'_>, now: i64) -> Result<Vec<NewLink>, StoreError> {
    let actions: Vec<Action> = {
        let mut st = tx.prepare(
            "SELECT id, provider, time, action, access_key_id, principal, role_session_name, web_identity_subject
             FROM cloud_actions a WHERE NOT EXISTS (SELECT 1 FROM links l WHERE l.cloud_action_id = a.id)
             ORDER BY time, id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(Action {
                id: r.get(0)?,
                provider: r.get(1)?,
                time: r.get(2)?,
                action: r.get(3)?,
                access_key_id: r.get(4)?,
                principal: r.get(5)?,
                role_session_name: r.get(6)?,
                web_identity_subject: r.get(7)?,
            })
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut created = Vec::new();
    for a in &actions {
        let links = find_links(tx, a)?;
        for l in links {
            let n = tx.execute(
                "INSERT OR IGNORE INTO links (cloud_action_id, run_id, exec_id, credential_use_id, jti, reason, confidence, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![a.id, l.run_id, l.exec_id, l.credential_use_id, l.jti, l.reason, l.confidence, now],
            )?;
            if n > 0 {
                created.push(NewLink { cloud_action_id: a.id.clone(), run_id: l.run_id, reason: l.reason, confidence: l.confidence });
            }
        }
    }
    Ok(created)
}

fn find_links(tx: &Transaction<'_>, a: &Action) -> Result<Vec<Link>, StoreError> {
    if a.action == "AssumeRoleWithWebIdentity" {
        let by_jti = web_identity(tx, a)?;
        if !by_jti.is_empty() {
            return Ok(by_jti);
        }
    }
    if let Some(key) = &a.access_key_id {
        let inherited = inherited_from_assume(tx, key)?;
        if !inherited.is_empty() {
            return Ok(inherited);
        }
        let seen = by_access_key(tx, key, a.time)?;
        if !seen.is_empty() {
            return Ok(seen);
        }
    }
    if a.provider == "gcp"
        && let Some(email) = &a.principal {
            return by_jwt_principal(tx, email, a.time);
        }
    Ok(Vec::new())
}

fn web_identity(tx: &Transaction<'_>, a: &Action) -> Result<Vec<Link>, StoreError> {
    if let Some(session) = &a.role_session_name {
        let mut st = tx.prepare("SELECT run_id, exec_id, jti FROM token_issuances WHERE jti = ?1 AND run_id IS NOT NULL")?;
        let found: Vec<(String, Option<String>, String)> =
            st.query_map(params![session], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
        if !found.is_empty() {
            return Ok(found
                .into_iter()
                .map(|(run_id, exec_id, jti)| Link {
                    run_id,
                    exec_id,
                    credential_use_id: None,
                    jti: Some(jti),
                    reason: "web_identity_token_jti",
                    confidence: 0.99,
                })
                .collect());
        }
    }
    let Some(subject) = &a.web_identity_subject else { return Ok(Vec::new()) };
    // The most recent token for that SPIFFE ID that was valid when the call was made.
    let mut st = tx.prepare(
        "SELECT run_id, exec_id, jti FROM token_issuances
         WHERE spiffe_id = ?1 AND run_id IS NOT NULL AND issued_at <= ?2 + ?3 AND expires_at >= ?2 - ?3
         ORDER BY issued_at DESC LIMIT 1",
    )?;
    let found: Vec<(String, Option<String>, String)> =
        st.query_map(params![subject, a.time, WINDOW_AFTER], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
    Ok(found
        .into_iter()
        .map(|(run_id, exec_id, jti)| Link {
            run_id,
            exec_id,
            credential_use_id: None,
            jti: Some(jti),
            reason: "web_identity_subject_and_time",
            confidence: 0.8,
        })
        .collect())
}

fn inherited_from_assume(tx: &Transaction<'_>, key: &str) -> Result<Vec<Link>, StoreError> {
    let mut st = tx.prepare(
        "SELECT l.run_id, l.exec_id, l.jti, l.confidence FROM cloud_actions a JOIN links l ON l.cloud_action_id = a.id
         WHERE a.issued_access_key_id = ?1",
    )?;
    let rows: Vec<(String, Option<String>, Option<String>, f64)> =
        st.query_map(params![key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .map(|(run_id, exec_id, jti, c)| Link {
            run_id,
            exec_id,
            credential_use_id: None,
            jti,
            reason: "temporary_key_from_attributed_assume_role",
            confidence: (c * 0.95 * 100.0).round() / 100.0,
        })
        .collect())
}

/// Runs that used `key` (closest use per run), in the window or, failing that, ever.
fn by_access_key(tx: &Transaction<'_>, key: &str, t: i64) -> Result<Vec<Link>, StoreError> {
    let query = |window: bool| -> Result<Vec<(String, Option<String>, String)>, StoreError> {
        let mut st = tx.prepare(
            "SELECT run_id, exec_id, event_id FROM (
                SELECT run_id, exec_id, event_id, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY abs(time - ?2)) AS rn
                FROM credential_uses
                WHERE access_key_id = ?1 AND run_id IS NOT NULL
                  AND (?5 = 0 OR time BETWEEN ?2 - ?3 AND ?2 + ?4))
             WHERE rn = 1 ORDER BY run_id",
        )?;
        let rows = st.query_map(params![key, t, WINDOW_BEFORE, WINDOW_AFTER, window as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    let (rows, reason, base) = match query(true)? {
        r if !r.is_empty() => (r, "access_key_id_in_window", 0.95),
        _ => (query(false)?, "access_key_id_outside_window", 0.5),
    };
    Ok(split_among(rows, reason, base))
}

/// One link per run that used the credential; when n runs did, each is one of n suspects,
/// so `base` confidence is split among them (rounded to two decimals).
fn split_among(rows: Vec<(String, Option<String>, String)>, reason: &'static str, base: f64) -> Vec<Link> {
    let n = rows.len().max(1) as f64;
    rows.into_iter()
        .map(|(run_id, exec_id, use_id)| Link {
            run_id,
            exec_id,
            credential_use_id: Some(use_id),
            jti: None,
            reason,
            confidence: ((base / n) * 100.0).round() / 100.0,
        })
        .collect()
}

fn by_jwt_principal(tx: &Transaction<'_>, email: &str, t: i64) -> Result<Vec<Link>, StoreError> {
    let mut st = tx.prepare(
        "SELECT run_id, exec_id, event_id FROM credential_uses
         WHERE (jwt_iss = ?1 OR jwt_sub = ?1) AND run_id IS NOT NULL AND time BETWEEN ?2 - ?3 AND ?2 + ?4
         GROUP BY run_id",
    )?;
    let rows: Vec<(String, Option<String>, String)> = st
        .query_map(params![email, t, WINDOW_BEFORE, WINDOW_AFTER], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(split_among(rows, "gcp_principal_in_self_signed_jwt", 0.8))
}
