//! The correlation rules' lookups in SQLite: each one an index probe by the identifier it
//! is given (access key id, jti, SPIFFE ID, JWT principal), never a table scan.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Row, ToSql, Transaction, params};

use super::project::Queue;
use crate::{
    correlate::{Action, Hit, Link, Lookups, WINDOW_AFTER, WINDOW_BEFORE},
    store::StoreError,
};

pub struct SqliteLookups<'a, 't> {
    tx: &'a Transaction<'t>,
    /// Identifiers of the batch being stored (not written to the queue table).
    batch: Queue,
}

impl<'a, 't> SqliteLookups<'a, 't> {
    /// Lookups in `tx`; the candidates are what the queue table holds and `batch`.
    pub fn new(tx: &'a Transaction<'t>, batch: Queue) -> Self {
        Self { tx, batch }
    }

    fn sid(&self, s: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.tx.prepare_cached("SELECT id FROM strings WHERE s = ?1")?.query_row([s], |r| r.get(0)).optional()?)
    }

    /// Unattributed actions matching `cond` (a condition on `a`, one parameter).
    fn actions(&self, cond: &str, value: &str) -> Result<Vec<Action>, StoreError> {
        let sql = format!(
            "SELECT a.id, a.provider, a.time, a.action, a.access_key_id, a.principal, a.role_session_name, a.web_identity_subject, a.issued_access_key_id
             FROM cloud_actions a WHERE {cond} AND NOT EXISTS (SELECT 1 FROM links l WHERE l.cloud_action_id = a.id)"
        );
        let mut st = self.tx.prepare_cached(&sql)?;
        let rows = st.query_map([value], |r| {
            Ok(Action {
                id: r.get(0)?,
                provider: r.get(1)?,
                time: r.get(2)?,
                action: r.get(3)?,
                access_key_id: r.get(4)?,
                principal: r.get(5)?,
                role_session_name: r.get(6)?,
                web_identity_subject: r.get(7)?,
                issued_access_key_id: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn hits(&self, sql: &str, args: &[&dyn ToSql], f: impl Fn(&Row<'_>) -> rusqlite::Result<Hit>) -> Result<Vec<Hit>, StoreError> {
        let mut st = self.tx.prepare_cached(sql)?;
        let rows = st.query_map(args, |r| f(r))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn token_hit(r: &Row<'_>) -> rusqlite::Result<Hit> {
    Ok(Hit { run_id: r.get(0)?, exec_id: r.get(1)?, credential_use_id: None, jti: Some(r.get(2)?) })
}

fn use_hit(r: &Row<'_>) -> rusqlite::Result<Hit> {
    Ok(Hit { run_id: r.get(0)?, exec_id: r.get(1)?, credential_use_id: Some(r.get(2)?), jti: None })
}

impl Lookups for SqliteLookups<'_, '_> {
    fn take_candidates(&mut self) -> Result<Vec<Action>, StoreError> {
        let mut queued: Vec<(String, String)> =
            self.tx.prepare_cached("SELECT what, value FROM correlate_queue")?.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        queued.extend(std::mem::take(&mut self.batch).into_iter().map(|(what, value)| (what.to_owned(), value)));
        let mut found = BTreeMap::new();
        for (what, value) in &queued {
            let cond = match what.as_str() {
                "action" => "a.id = ?1",
                "key" => "a.access_key_id = ?1",
                "principal" => "a.provider = 'gcp' AND a.principal = ?1",
                "jti" => "a.role_session_name = ?1",
                "subject" => "a.web_identity_subject = ?1",
                _ => continue,
            };
            for a in self.actions(cond, value)? {
                found.insert((a.time, a.id.clone()), a);
            }
        }
        self.tx.prepare_cached("DELETE FROM correlate_queue")?.execute([])?;
        Ok(found.into_values().collect())
    }

    fn unattributed_with_key(&mut self, key: &str) -> Result<Vec<Action>, StoreError> {
        let mut v = self.actions("a.access_key_id = ?1", key)?;
        v.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(v)
    }

    fn issuances_by_jti(&mut self, jti: &str) -> Result<Vec<Hit>, StoreError> {
        self.hits("SELECT run_id, exec_id, jti FROM token_issuances_v WHERE jti = ?1 AND rid IS NOT NULL", &[&jti], token_hit)
    }

    fn issuance_for_subject(&mut self, subject: &str, t: i64, slack: i64) -> Result<Vec<Hit>, StoreError> {
        self.hits(
            "SELECT run_id, exec_id, jti FROM token_issuances_v
             WHERE spiffe_id = ?1 AND rid IS NOT NULL AND issued_at <= ?2 + ?3 AND expires_at >= ?2 - ?3
             ORDER BY issued_at DESC LIMIT 1",
            &[&subject, &t, &slack],
            token_hit,
        )
    }

    fn links_of_actions_issuing(&mut self, key: &str) -> Result<Vec<(Hit, f64)>, StoreError> {
        let mut st = self.tx.prepare_cached(
            "SELECT l.run_id, l.exec_id, l.jti, l.confidence FROM cloud_actions a JOIN links l ON l.cloud_action_id = a.id
             WHERE a.issued_access_key_id = ?1",
        )?;
        let rows = st.query_map([key], |r| Ok((Hit { run_id: r.get(0)?, exec_id: r.get(1)?, credential_use_id: None, jti: r.get(2)? }, r.get(3)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn uses_of_key(&mut self, key: &str, t: i64, window: bool) -> Result<Vec<Hit>, StoreError> {
        let Some(key) = self.sid(key)? else { return Ok(Vec::new()) };
        self.hits(
            "SELECT r.run_id, x.s, u.row FROM (
                SELECT rid, exec_id, rowid AS row, ROW_NUMBER() OVER (PARTITION BY rid ORDER BY abs(time - ?2)) AS rn
                FROM credential_uses
                WHERE access_key_id = ?1 AND rid IS NOT NULL AND (?5 = 0 OR time BETWEEN ?2 - ?3 AND ?2 + ?4)) u
             JOIN runs r ON r.rid = u.rid LEFT JOIN strings x ON x.id = u.exec_id
             WHERE u.rn = 1 ORDER BY r.run_id",
            params![key, t, WINDOW_BEFORE, WINDOW_AFTER, window as i64],
            use_hit,
        )
    }

    fn uses_by_jwt_principal(&mut self, principal: &str, t: i64) -> Result<Vec<Hit>, StoreError> {
        let Some(p) = self.sid(principal)? else { return Ok(Vec::new()) };
        self.hits(
            "SELECT r.run_id, x.s, u.rowid FROM credential_uses u JOIN runs r ON r.rid = u.rid LEFT JOIN strings x ON x.id = u.exec_id
             WHERE (u.jwt_iss = ?1 OR u.jwt_sub = ?1) AND u.time BETWEEN ?2 - ?3 AND ?2 + ?4
             GROUP BY u.rid ORDER BY r.run_id",
            params![p, t, WINDOW_BEFORE, WINDOW_AFTER],
            use_hit,
        )
    }

    fn insert_link(&mut self, action_id: &str, l: &Link, now: i64) -> Result<bool, StoreError> {
        let n = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO links (cloud_action_id, run_id, exec_id, credential_use_id, jti, reason, confidence, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![action_id, l.hit.run_id, l.hit.exec_id, l.hit.credential_use_id, l.hit.jti, l.reason, l.confidence, now])?;
        Ok(n > 0)
    }
}
