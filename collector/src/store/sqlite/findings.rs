//! The finding rules' lookups and the findings table in SQLite: each lookup an index probe
//! by jti, access key id, run or fingerprint.

use rusqlite::{OptionalExtension, Row, Transaction, params};
use sigil_proto::v1;

use crate::{
    findings::{Fact, FindingLookups, Seen, from_json, kind_name, to_json},
    store::StoreError,
};

pub struct SqliteFindings<'a, 't> {
    tx: &'a Transaction<'t>,
}

impl<'a, 't> SqliteFindings<'a, 't> {
    pub fn new(tx: &'a Transaction<'t>) -> Self {
        Self { tx }
    }
}

/// An agent's event id from its interned stream and sequence (see `project::split_id`).
const EVENT_ID: &str = "CASE WHEN {t}.seq < 0 THEN st.s ELSE st.s || '-' || {t}.seq END";

fn event_id(table: &str) -> String {
    EVENT_ID.replace("{t}", table)
}

/// Columns: run_id, node, exec_id, event_id, time.
fn seen(r: &Row<'_>, kind: &str) -> rusqlite::Result<Seen> {
    Ok(Seen { run_id: r.get(0)?, node: r.get(1)?, exec_id: r.get(2)?, event_id: r.get(3)?, kind: kind.to_owned(), time: r.get(4)? })
}

impl FindingLookups for SqliteFindings<'_, '_> {
    fn issuances(&mut self, jti: &str) -> Result<Vec<Seen>, StoreError> {
        let sql = format!(
            "SELECT r.run_id, n.node, x.s, {}, t.time FROM token_issuances t JOIN runs r ON r.rid = t.rid JOIN nodes n ON n.node_id = t.node_id
             JOIN strings st ON st.id = t.stream LEFT JOIN strings x ON x.id = t.exec_id WHERE t.jti = ?1",
            event_id("t")
        );
        let mut st = self.tx.prepare_cached(&sql)?;
        let rows = st.query_map([jti], |r| seen(r, "token_issued"))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn run_ended(&mut self, run_id: &str) -> Result<Option<i64>, StoreError> {
        let ended: Option<Option<i64>> = self.tx.prepare_cached("SELECT ended FROM runs WHERE run_id = ?1")?.query_row([run_id], |r| r.get(0)).optional()?;
        Ok(ended.flatten())
    }

    fn first_obtained(&mut self, key: &str) -> Result<Option<Seen>, StoreError> {
        let sql = format!(
            "SELECT r.run_id, n.node, x.s, {}, o.time FROM credential_obtained o JOIN runs r ON r.rid = o.rid JOIN nodes n ON n.node_id = o.node_id
             JOIN strings st ON st.id = o.stream LEFT JOIN strings x ON x.id = o.exec_id
             WHERE o.identifier = ?1 ORDER BY o.time, o.rowid LIMIT 1",
            event_id("o")
        );
        Ok(self.tx.prepare_cached(&sql)?.query_row([key], |r| seen(r, "credential_obtained")).optional()?)
    }

    fn first_use_of_key(&mut self, key: &str) -> Result<Option<Seen>, StoreError> {
        let sql = format!(
            "SELECT r.run_id, n.node, x.s, {}, u.time FROM credential_uses u JOIN runs r ON r.rid = u.rid JOIN nodes n ON n.node_id = u.node_id
             JOIN strings st ON st.id = u.stream LEFT JOIN strings x ON x.id = u.exec_id
             WHERE u.access_key_id = (SELECT id FROM strings WHERE s = ?1) ORDER BY u.time, u.rowid LIMIT 1",
            event_id("u")
        );
        Ok(self.tx.prepare_cached(&sql)?.query_row([key], |r| seen(r, "credential_use")).optional()?)
    }

    fn note(&mut self, fact: Fact, subject: &str, detail: &str, s: &Seen) -> Result<bool, StoreError> {
        let n = self
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO finding_facts (fact, subject, detail, run_id, node, exec_id, event_id, kind, time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![fact.as_str(), subject, detail, s.run_id, s.node, s.exec_id, s.event_id, s.kind, s.time])?;
        Ok(n == 1)
    }

    fn noted(&mut self, fact: Fact, subject: &str, limit: usize) -> Result<Vec<(String, Seen)>, StoreError> {
        let mut st = self.tx.prepare_cached(
            "SELECT run_id, node, exec_id, event_id, time, kind, detail FROM finding_facts WHERE fact = ?1 AND subject = ?2
             ORDER BY time, event_id LIMIT ?3",
        )?;
        let rows = st.query_map(params![fact.as_str(), subject, limit as i64], |r| {
            let kind: String = r.get(5)?;
            Ok((r.get(6)?, seen(r, &kind)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn stored_finding(&mut self, id: &str) -> Result<Option<v1::Finding>, StoreError> {
        let json: Option<String> = self.tx.prepare_cached("SELECT json FROM findings WHERE id = ?1")?.query_row([id], |r| r.get(0)).optional()?;
        json.as_deref().map(from_json).transpose()
    }

    fn insert_finding(&mut self, f: &v1::Finding, first: i64, last: i64) -> Result<bool, StoreError> {
        let n = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO findings (id, kind, subject, first_time, last_time, json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![f.id, kind_name(f), f.subject, first, last, to_json(f)?])?;
        Ok(n == 1)
    }

    fn update_finding(&mut self, f: &v1::Finding, first: i64, last: i64) -> Result<(), StoreError> {
        self.tx.prepare_cached("UPDATE findings SET first_time = ?2, last_time = ?3, json = ?4 WHERE id = ?1")?.execute(params![
            f.id,
            first,
            last,
            to_json(f)?
        ])?;
        Ok(())
    }
}
