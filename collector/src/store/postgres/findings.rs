//! The finding rules' lookups and the findings table in PostgreSQL: each lookup an index
//! probe by jti, access key id, run or fingerprint. A finding being updated is locked
//! (`FOR UPDATE`) and inserted with `ON CONFLICT DO NOTHING`, so replicas finding the
//! same misuse at once merge into one row and lose no evidence.

use postgres::{Row, Transaction};
use sigil_proto::v1;

use crate::{
    findings::{Fact, FindingLookups, Seen, from_json, kind_name, to_json},
    store::StoreError,
};

pub struct PgFindings<'a, 't> {
    tx: &'a mut Transaction<'t>,
}

impl<'a, 't> PgFindings<'a, 't> {
    pub fn new(tx: &'a mut Transaction<'t>) -> Self {
        Self { tx }
    }
}

/// Columns: run_id, node, exec_id, event_id, time.
fn seen(r: &Row, kind: &str) -> Seen {
    Seen { run_id: r.get(0), node: r.get(1), exec_id: r.get(2), event_id: r.get(3), kind: kind.to_owned(), time: r.get(4) }
}

impl FindingLookups for PgFindings<'_, '_> {
    fn issuances(&mut self, jti: &str) -> Result<Vec<Seen>, StoreError> {
        let rows = self.tx.query(
            "SELECT r.run_id, n.node, t.exec_id, t.stream, t.time FROM token_issuances t JOIN runs r ON r.rid = t.rid
             JOIN nodes n ON n.node_id = t.node_id WHERE t.jti = $1",
            &[&jti],
        )?;
        Ok(rows.iter().map(|r| seen(r, "token_issued")).collect())
    }

    fn run_ended(&mut self, run_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.tx.query_opt("SELECT ended FROM runs WHERE run_id = $1", &[&run_id])?.and_then(|r| r.get::<_, Option<i64>>(0)))
    }

    fn first_use_of_key(&mut self, key: &str) -> Result<Option<Seen>, StoreError> {
        let row = self.tx.query_opt(
            "SELECT r.run_id, n.node, u.exec_id, u.stream, u.time FROM credential_uses u JOIN runs r ON r.rid = u.rid
             JOIN nodes n ON n.node_id = u.node_id WHERE u.access_key_id = $1 ORDER BY u.time, u.row LIMIT 1",
            &[&key],
        )?;
        Ok(row.map(|r| seen(&r, "credential_use")))
    }

    fn note(&mut self, fact: Fact, subject: &str, detail: &str, s: &Seen) -> Result<bool, StoreError> {
        let n = self.tx.execute(
            "INSERT INTO finding_facts (fact, subject, detail, run_id, node, exec_id, event_id, kind, time)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            &[&fact.as_str(), &subject, &detail, &s.run_id, &s.node, &s.exec_id, &s.event_id, &s.kind, &s.time],
        )?;
        Ok(n == 1)
    }

    fn noted(&mut self, fact: Fact, subject: &str, limit: usize) -> Result<Vec<(String, Seen)>, StoreError> {
        let rows = self.tx.query(
            "SELECT run_id, node, exec_id, event_id, time, kind, detail FROM finding_facts WHERE fact = $1 AND subject = $2
             ORDER BY time, event_id LIMIT $3",
            &[&fact.as_str(), &subject, &(limit as i64)],
        )?;
        Ok(rows.iter().map(|r| (r.get(6), seen(r, &r.get::<_, String>(5)))).collect())
    }

    fn stored_finding(&mut self, id: &str) -> Result<Option<v1::Finding>, StoreError> {
        let row = self.tx.query_opt("SELECT json FROM findings WHERE id = $1 FOR UPDATE", &[&id])?;
        row.map(|r| from_json(&r.get::<_, String>(0))).transpose()
    }

    fn insert_finding(&mut self, f: &v1::Finding, first: i64, last: i64) -> Result<bool, StoreError> {
        let n = self.tx.execute(
            "INSERT INTO findings (id, kind, subject, first_time, last_time, json) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[&f.id, &kind_name(f), &f.subject, &first, &last, &to_json(f)?],
        )?;
        Ok(n == 1)
    }

    fn update_finding(&mut self, f: &v1::Finding, first: i64, last: i64) -> Result<(), StoreError> {
        self.tx.execute("UPDATE findings SET first_time = $2, last_time = $3, json = $4 WHERE id = $1", &[&f.id, &first, &last, &to_json(f)?])?;
        Ok(())
    }
}
