//! The correlation rules' lookups in PostgreSQL: each an index probe by the identifier it
//! is given. The queue is drained with `DELETE ... RETURNING`, so two replicas
//! correlating at once never both miss, nor both lose, a queued identifier; a batch's own
//! identifiers are handed over in memory, and every candidate is looked up in one
//! statement.

use postgres::{Row, Transaction, types::ToSql};

use super::{Stmts, project::Queue};
use crate::{
    correlate::{Action, Hit, Link, Lookups, WINDOW_AFTER, WINDOW_BEFORE},
    store::StoreError,
};

pub struct PgLookups<'a, 't> {
    tx: &'a mut Transaction<'t>,
    stmts: &'a mut Stmts,
    /// Identifiers of the batch being stored (not written to the queue table).
    batch: Queue,
}

/// An action from the columns `a.id, a.provider, a.time, a.action, a.access_key_id,
/// a.principal, a.role_session_name, a.web_identity_subject, a.issued_access_key_id`.
fn action(r: &Row) -> Action {
    Action {
        id: r.get(0),
        provider: r.get(1),
        time: r.get(2),
        action: r.get(3),
        access_key_id: r.get(4),
        principal: r.get(5),
        role_session_name: r.get(6),
        web_identity_subject: r.get(7),
        issued_access_key_id: r.get(8),
    }
}

impl<'a, 't> PgLookups<'a, 't> {
    /// Lookups in `tx`; the candidates are what the queue table holds and `batch`.
    pub fn new(tx: &'a mut Transaction<'t>, stmts: &'a mut Stmts, batch: Queue) -> Self {
        Self { tx, stmts, batch }
    }

    fn query(&mut self, sql: &'static str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let st = self.stmts.get(self.tx, sql)?;
        Ok(self.tx.query(&st, args)?)
    }

    fn hits(&mut self, sql: &'static str, args: &[&(dyn ToSql + Sync)], f: fn(&Row) -> Hit) -> Result<Vec<Hit>, StoreError> {
        Ok(self.query(sql, args)?.iter().map(f).collect())
    }
}

fn token_hit(r: &Row) -> Hit {
    Hit { run_id: r.get(0), exec_id: r.get(1), credential_use_id: None, jti: Some(r.get(2)) }
}

fn use_hit(r: &Row) -> Hit {
    Hit { run_id: r.get(0), exec_id: r.get(1), credential_use_id: Some(r.get(2)), jti: None }
}

impl Lookups for PgLookups<'_, '_> {
    fn take_candidates(&mut self) -> Result<Vec<Action>, StoreError> {
        let mut queued: Vec<(String, String)> =
            self.query("DELETE FROM correlate_queue RETURNING what, value", &[])?.iter().map(|r| (r.get(0), r.get(1))).collect();
        queued.extend(std::mem::take(&mut self.batch).into_iter().map(|(what, value)| (what.to_owned(), value)));
        if queued.is_empty() {
            return Ok(Vec::new());
        }
        // Every identifier in one statement: one index probe each, one round trip in all.
        let mut by: [Vec<&str>; 5] = Default::default();
        for (what, value) in &queued {
            let i = match what.as_str() {
                "action" => 0,
                "key" => 1,
                "principal" => 2,
                "jti" => 3,
                "subject" => 4,
                _ => continue,
            };
            by[i].push(value);
        }
        const SQL: &str =
            "SELECT a.id, a.provider, a.time, a.action, a.access_key_id, a.principal, a.role_session_name, a.web_identity_subject, a.issued_access_key_id
            FROM cloud_actions a WHERE a.id IN (
                SELECT id FROM cloud_actions WHERE id = ANY($1)
                UNION SELECT id FROM cloud_actions WHERE access_key_id = ANY($2)
                UNION SELECT id FROM cloud_actions WHERE provider = 'gcp' AND principal IS NOT NULL AND principal = ANY($3)
                UNION SELECT id FROM cloud_actions WHERE role_session_name IS NOT NULL AND role_session_name = ANY($4)
                UNION SELECT id FROM cloud_actions WHERE web_identity_subject IS NOT NULL AND web_identity_subject = ANY($5))
             AND NOT EXISTS (SELECT 1 FROM links l WHERE l.cloud_action_id = a.id)";
        let mut found: Vec<Action> = self.query(SQL, &[&by[0], &by[1], &by[2], &by[3], &by[4]])?.iter().map(action).collect();
        found.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(found)
    }

    fn unattributed_with_key(&mut self, key: &str) -> Result<Vec<Action>, StoreError> {
        const SQL: &str =
            "SELECT a.id, a.provider, a.time, a.action, a.access_key_id, a.principal, a.role_session_name, a.web_identity_subject, a.issued_access_key_id
            FROM cloud_actions a WHERE a.access_key_id = $1 AND NOT EXISTS (SELECT 1 FROM links l WHERE l.cloud_action_id = a.id) ORDER BY a.time, a.id";
        Ok(self.query(SQL, &[&key])?.iter().map(action).collect())
    }

    fn issuances_by_jti(&mut self, jti: &str) -> Result<Vec<Hit>, StoreError> {
        self.hits("SELECT run_id, exec_id, jti FROM token_issuances_v WHERE jti = $1 AND rid IS NOT NULL", &[&jti], token_hit)
    }

    fn issuance_for_subject(&mut self, subject: &str, t: i64, slack: i64) -> Result<Vec<Hit>, StoreError> {
        self.hits(
            "SELECT run_id, exec_id, jti FROM token_issuances_v
             WHERE spiffe_id = $1 AND rid IS NOT NULL AND issued_at <= $2::bigint + $3::bigint AND expires_at >= $2::bigint - $3::bigint
             ORDER BY issued_at DESC LIMIT 1",
            &[&subject, &t, &slack],
            token_hit,
        )
    }

    fn links_of_actions_issuing(&mut self, key: &str) -> Result<Vec<(Hit, f64)>, StoreError> {
        Ok(self
            .query(
                "SELECT l.run_id, l.exec_id, l.jti, l.confidence FROM cloud_actions a JOIN links l ON l.cloud_action_id = a.id
                 WHERE a.issued_access_key_id = $1",
                &[&key],
            )?
            .iter()
            .map(|r| (Hit { run_id: r.get(0), exec_id: r.get(1), credential_use_id: None, jti: r.get(2) }, r.get(3)))
            .collect())
    }

    fn uses_of_key(&mut self, key: &str, t: i64, window: bool) -> Result<Vec<Hit>, StoreError> {
        self.hits(
            "SELECT r.run_id, u.exec_id, u.row FROM (
                SELECT rid, exec_id, row, ROW_NUMBER() OVER (PARTITION BY rid ORDER BY abs(time - $2::bigint), row) AS rn
                FROM credential_uses
                WHERE access_key_id = $1 AND rid IS NOT NULL AND (NOT $5::bool OR time BETWEEN $2::bigint - $3::bigint AND $2::bigint + $4::bigint)) u
             JOIN runs r ON r.rid = u.rid
             WHERE u.rn = 1 ORDER BY r.run_id",
            &[&key, &t, &WINDOW_BEFORE, &WINDOW_AFTER, &window],
            use_hit,
        )
    }

    fn uses_by_jwt_principal(&mut self, principal: &str, t: i64) -> Result<Vec<Hit>, StoreError> {
        self.hits(
            "SELECT run_id, exec_id, row FROM (
                SELECT DISTINCT ON (u.rid) r.run_id, u.exec_id, u.row FROM credential_uses u JOIN runs r ON r.rid = u.rid
                WHERE (u.jwt_iss = $1 OR u.jwt_sub = $1) AND u.time BETWEEN $2::bigint - $3::bigint AND $2::bigint + $4::bigint
                ORDER BY u.rid, u.row) x ORDER BY run_id",
            &[&principal, &t, &WINDOW_BEFORE, &WINDOW_AFTER],
            use_hit,
        )
    }

    fn insert_link(&mut self, action_id: &str, l: &Link, now: i64) -> Result<bool, StoreError> {
        let st = self.stmts.get(
            self.tx,
            "INSERT INTO links (cloud_action_id, run_id, exec_id, credential_use_id, jti, reason, confidence, created)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )?;
        let n = self.tx.execute(&st, &[&action_id, &l.hit.run_id, &l.hit.exec_id, &l.hit.credential_use_id, &l.hit.jti, &l.reason, &l.confidence, &now])?;
        Ok(n > 0)
    }
}
