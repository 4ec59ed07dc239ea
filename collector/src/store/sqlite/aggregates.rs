//! The aggregate tables in SQLite (schema.sql: `agg_credentials`, `agg_credential_runs`,
//! `agg_runs`): a batch's [`Deltas`] applied in the batch's transaction; what retention
//! deletes subtracted step by step ([`subtract`], [`refresh`]); checked against a
//! computation from scratch ([`verify`]).

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::query::rows;
use crate::store::{
    StoreError,
    aggregate::{self, Deltas},
};

/// A credential as SQLite names it: the interned ids of its class and fingerprint.
pub type Key = (i64, i64);

/// Adds a batch's changes.
pub fn apply(tx: &Transaction<'_>, d: &Deltas<Key>) -> Result<(), StoreError> {
    let mut ids = HashMap::new();
    let mut upsert = tx.prepare_cached(
        "INSERT INTO agg_credentials (class, fingerprint, detector, access_key_id, token_family, uses, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (class, fingerprint) DO UPDATE SET uses = uses + excluded.uses,
            first_seen = min(first_seen, excluded.first_seen), last_seen = max(last_seen, excluded.last_seen),
            detector = CASE WHEN detector IS NULL OR excluded.detector > detector THEN excluded.detector ELSE detector END,
            access_key_id = CASE WHEN access_key_id IS NULL OR excluded.access_key_id > access_key_id THEN excluded.access_key_id ELSE access_key_id END,
            token_family = CASE WHEN token_family IS NULL OR excluded.token_family > token_family THEN excluded.token_family ELSE token_family END
         RETURNING id",
    )?;
    for (key, c) in &d.credentials {
        let id: i64 = upsert.query_row(params![key.0, key.1, c.detector, c.access_key_id, c.token_family, c.uses, c.first, c.last], |r| r.get(0))?;
        ids.insert(*key, id);
    }
    let mut new_runs: BTreeMap<i64, i64> = BTreeMap::new();
    let mut pair = tx.prepare_cached(
        "INSERT INTO agg_credential_runs (cred, rid, uses) VALUES (?1, ?2, ?3)
         ON CONFLICT (cred, rid) DO UPDATE SET uses = uses + excluded.uses RETURNING uses",
    )?;
    for ((key, rid), uses) in &d.credential_runs {
        let Some(&id) = ids.get(key) else { continue };
        let total: i64 = pair.query_row(params![id, rid, uses], |r| r.get(0))?;
        // Uses are at least 1 each: a total equal to this batch's means the pair is new.
        if total == *uses {
            *new_runs.entry(id).or_default() += 1;
        }
    }
    let mut runs = tx.prepare_cached("UPDATE agg_credentials SET runs = runs + ?2 WHERE id = ?1")?;
    for (id, n) in new_runs {
        runs.execute(params![id, n])?;
    }
    let mut run = tx.prepare_cached(
        "INSERT INTO agg_runs (rid, uses, long_uses) VALUES (?1, ?2, ?3)
         ON CONFLICT (rid) DO UPDATE SET uses = uses + excluded.uses, long_uses = long_uses + excluded.long_uses",
    )?;
    for (rid, r) in &d.runs {
        run.execute(params![rid, r.uses, r.long_uses])?;
    }
    Ok(())
}

/// Each aggregate table's rows, and the same rows computed from all the uses.
const CREDENTIALS: &str =
    "SELECT class, fingerprint, detector, access_key_id, token_family, runs, uses, first_seen, last_seen FROM agg_credentials ORDER BY class, fingerprint";
const CREDENTIALS_FROM_USES: &str = "SELECT u.class, u.fingerprint, max(de.s) AS detector, max(ak.s) AS access_key_id, max(tf.s) AS token_family,
        count(DISTINCT u.rid) AS runs, sum(u.count) AS uses, min(coalesce(u.first_seen, u.time)) AS first_seen, max(u.time) AS last_seen
    FROM credential_uses u LEFT JOIN strings de ON de.id = u.detector LEFT JOIN strings ak ON ak.id = u.access_key_id
    LEFT JOIN strings tf ON tf.id = u.token_family GROUP BY u.class, u.fingerprint ORDER BY u.class, u.fingerprint";
const CREDENTIAL_RUNS: &str =
    "SELECT c.class, c.fingerprint, cr.rid, cr.uses FROM agg_credential_runs cr JOIN agg_credentials c ON c.id = cr.cred ORDER BY 1, 2, 3";
const CREDENTIAL_RUNS_FROM_USES: &str = "SELECT u.class, u.fingerprint, u.rid, sum(u.count) AS uses FROM credential_uses u
    WHERE u.rid IS NOT NULL GROUP BY u.class, u.fingerprint, u.rid ORDER BY 1, 2, 3";
const RUNS: &str = "SELECT rid, uses, long_uses FROM agg_runs ORDER BY rid";
const RUNS_FROM_USES: &str = "SELECT u.rid, sum(u.count) AS uses, sum(CASE WHEN c.s IN ('short_lived', 'sigil_issued') THEN 0 ELSE u.count END) AS long_uses
    FROM credential_uses u JOIN strings c ON c.id = u.class WHERE u.rid IS NOT NULL GROUP BY u.rid ORDER BY u.rid";

/// Compares every aggregate table with the same figures computed from the uses, the
/// cloud actions and the links.
pub fn verify(conn: &Connection) -> Result<(), StoreError> {
    for (name, kept, fresh) in [
        ("agg_credentials", CREDENTIALS, CREDENTIALS_FROM_USES),
        ("agg_credential_runs", CREDENTIAL_RUNS, CREDENTIAL_RUNS_FROM_USES),
        ("agg_runs", RUNS, RUNS_FROM_USES),
    ]
    .into_iter()
    .chain(aggregate::SHARED_CHECKS)
    {
        aggregate::compare(name, &rows(conn, kept, &[])?, &rows(conn, fresh, &[])?)?;
    }
    Ok(())
}

/// Takes the uses matching `cond` (a condition on `credential_uses`, `?1` its parameter),
/// about to be deleted by retention, out of the counts; records the credentials whose
/// first and last use or largest names may have changed, for [`refresh`].
pub fn subtract(tx: &Transaction<'_>, cond: &str, param: i64, touched: &mut std::collections::BTreeSet<Key>) -> Result<(), StoreError> {
    let mut st = tx.prepare(&format!(
        "SELECT u.class, u.fingerprint, u.rid, sum(u.count), c.s IN ('short_lived', 'sigil_issued')
         FROM (SELECT class, fingerprint, rid, count FROM credential_uses WHERE {cond}) u JOIN strings c ON c.id = u.class
         GROUP BY u.class, u.fingerprint, u.rid"
    ))?;
    let groups: Vec<(i64, i64, Option<i64>, i64, bool)> =
        st.query_map([param], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?.collect::<Result<_, _>>()?;
    for (class, fingerprint, rid, uses, short) in groups {
        touched.insert((class, fingerprint));
        let id: Option<i64> = tx
            .prepare_cached("UPDATE agg_credentials SET uses = uses - ?3 WHERE class = ?1 AND fingerprint = ?2 RETURNING id")?
            .query_row(params![class, fingerprint, uses], |r| r.get(0))
            .optional()?;
        let (Some(id), Some(rid)) = (id, rid) else { continue };
        let left: Option<i64> = tx
            .prepare_cached("UPDATE agg_credential_runs SET uses = uses - ?3 WHERE cred = ?1 AND rid = ?2 RETURNING uses")?
            .query_row(params![id, rid, uses], |r| r.get(0))
            .optional()?;
        if left.is_some_and(|l| l <= 0) {
            tx.prepare_cached("DELETE FROM agg_credential_runs WHERE cred = ?1 AND rid = ?2")?.execute(params![id, rid])?;
            tx.prepare_cached("UPDATE agg_credentials SET runs = runs - 1 WHERE id = ?1")?.execute([id])?;
        }
        tx.prepare_cached("UPDATE agg_runs SET uses = uses - ?2, long_uses = long_uses - ?3 WHERE rid = ?1")?.execute(params![
            rid,
            uses,
            if short { 0 } else { uses }
        ])?;
    }
    tx.execute_batch("DELETE FROM agg_runs WHERE uses <= 0; DELETE FROM agg_credentials WHERE uses <= 0;")?;
    Ok(())
}

/// Recomputes what cannot be subtracted (first and last use, largest names) of one
/// credential from its uses left; a short transaction per credential.
pub fn refresh(tx: &Transaction<'_>, key: Key) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE agg_credentials SET (detector, access_key_id, token_family, first_seen, last_seen) = (
            SELECT max(de.s), max(ak.s), max(tf.s), min(coalesce(u.first_seen, u.time)), max(u.time)
            FROM credential_uses u LEFT JOIN strings de ON de.id = u.detector LEFT JOIN strings ak ON ak.id = u.access_key_id
            LEFT JOIN strings tf ON tf.id = u.token_family WHERE u.class = ?1 AND u.fingerprint = ?2)
         WHERE class = ?1 AND fingerprint = ?2",
    )?
    .execute(params![key.0, key.1])?;
    Ok(())
}
