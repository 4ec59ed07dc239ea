//! The aggregate tables in PostgreSQL (schema.sql: `agg_credentials`,
//! `agg_credential_runs`, `agg_runs`): the credential uses a batch newly stored, folded
//! into [`Deltas`] and applied set-based in the batch's transaction (rows in key order,
//! so replicas lock them in one order); rebuilt from the uses for the credentials and
//! runs of dropped partitions; checked against a computation from scratch ([`verify`]).

use std::collections::{BTreeMap, HashMap};

use postgres::Transaction;
use sigil_proto::{EventBody, json};

use super::{Stmts, query::to_json};
use crate::store::{
    AgentEvent, StoreError,
    aggregate::{self, Deltas, UseFigures},
    sqlite::process_run,
};

/// A credential as PostgreSQL names it: class and fingerprint.
type Key = (String, String);

/// Folds the newly stored events of `node` (only those: a replayed event is never
/// counted twice) into the aggregate tables. `rids` are the batch's runs by run key (as
/// the projection found or created them); `time_of` gives an event's stored time.
pub fn add(
    tx: &mut Transaction<'_>,
    stmts: &mut Stmts,
    node: &str,
    stored: &[&AgentEvent],
    rids: &HashMap<String, i64>,
    time_of: impl Fn(&EventBody) -> i64,
) -> Result<(), StoreError> {
    let mut d: Deltas<Key> = Deltas::default();
    for e in stored {
        if let EventBody::CredentialUse(v) = &e.body {
            let class = json::credential_class::name(v.class).unwrap_or_else(|| "unknown".into());
            let rid = v.process.as_ref().and_then(|p| process_run(node, p)).and_then(|k| rids.get(&k).copied());
            d.add((class, v.fingerprint.clone()), rid, UseFigures::of(v, time_of(&e.body)));
        }
    }
    if d.credentials.is_empty() {
        return Ok(());
    }
    apply(tx, stmts, &d)
}

fn apply(tx: &mut Transaction<'_>, stmts: &mut Stmts, d: &Deltas<Key>) -> Result<(), StoreError> {
    let (mut class, mut fp, mut det, mut ak, mut tf, mut uses, mut first, mut last) = (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for ((c, f), x) in &d.credentials {
        class.push(c.as_str());
        fp.push(f.as_str());
        det.push(x.detector.as_str());
        ak.push(x.access_key_id.as_deref());
        tf.push(x.token_family.as_deref());
        uses.push(x.uses);
        first.push(x.first);
        last.push(x.last);
    }
    let st = stmts.get(
        tx,
        "INSERT INTO agg_credentials (class, fingerprint, detector, access_key_id, token_family, uses, first_seen, last_seen)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::int8[])
             ON CONFLICT (class, fingerprint) DO UPDATE SET uses = agg_credentials.uses + EXCLUDED.uses,
                first_seen = least(agg_credentials.first_seen, EXCLUDED.first_seen), last_seen = greatest(agg_credentials.last_seen, EXCLUDED.last_seen),
                detector = greatest(agg_credentials.detector, EXCLUDED.detector), access_key_id = greatest(agg_credentials.access_key_id, EXCLUDED.access_key_id),
                token_family = greatest(agg_credentials.token_family, EXCLUDED.token_family)
             RETURNING class, fingerprint, id",
    )?;
    let ids: HashMap<(String, String), i64> =
        tx.query(&st, &[&class, &fp, &det, &ak, &tf, &uses, &first, &last])?.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect();
    let (mut cred, mut rid, mut n) = (vec![], vec![], vec![]);
    for ((key, r), u) in &d.credential_runs {
        if let Some(&id) = ids.get(key) {
            cred.push(id);
            rid.push(*r);
            n.push(*u);
        }
    }
    // A pair is new when its total is what this batch added (every use counts at least 1).
    let added: HashMap<(i64, i64), i64> = cred.iter().zip(&rid).zip(&n).map(|((c, r), n)| ((*c, *r), *n)).collect();
    let mut new_runs: BTreeMap<i64, i64> = BTreeMap::new();
    let st = stmts.get(
        tx,
        "INSERT INTO agg_credential_runs (cred, rid, uses) SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[])
         ON CONFLICT (cred, rid) DO UPDATE SET uses = agg_credential_runs.uses + EXCLUDED.uses RETURNING cred, rid, uses",
    )?;
    for r in tx.query(&st, &[&cred, &rid, &n])? {
        let (c, r, total): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        if added.get(&(c, r)) == Some(&total) {
            *new_runs.entry(c).or_default() += 1;
        }
    }
    let (ids, counts): (Vec<i64>, Vec<i64>) = new_runs.into_iter().unzip();
    if !ids.is_empty() {
        let st = stmts.get(tx, "UPDATE agg_credentials a SET runs = a.runs + u.n FROM unnest($1::int8[], $2::int8[]) AS u(id, n) WHERE a.id = u.id")?;
        tx.execute(&st, &[&ids, &counts])?;
    }
    let (mut rids, mut uses, mut long) = (vec![], vec![], vec![]);
    for (r, x) in &d.runs {
        rids.push(*r);
        uses.push(x.uses);
        long.push(x.long_uses);
    }
    if !rids.is_empty() {
        let st = stmts.get(
            tx,
            "INSERT INTO agg_runs (rid, uses, long_uses) SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[])
             ON CONFLICT (rid) DO UPDATE SET uses = agg_runs.uses + EXCLUDED.uses, long_uses = agg_runs.long_uses + EXCLUDED.long_uses",
        )?;
        tx.execute(&st, &[&rids, &uses, &long])?;
    }
    Ok(())
}

const CREDENTIALS: &str =
    "SELECT class, fingerprint, detector, access_key_id, token_family, runs, uses, first_seen, last_seen FROM agg_credentials ORDER BY class, fingerprint";
const CREDENTIALS_FROM_USES: &str =
    "SELECT u.class, u.fingerprint, max(u.detector) AS detector, max(u.access_key_id) AS access_key_id, max(u.token_family) AS token_family,
        count(DISTINCT u.rid) AS runs, sum(u.count)::int8 AS uses, min(coalesce(u.first_seen, u.time)) AS first_seen, max(u.time) AS last_seen
    FROM credential_uses u WHERE {scope} GROUP BY u.class, u.fingerprint ORDER BY u.class, u.fingerprint";
const CREDENTIAL_RUNS: &str =
    "SELECT c.class, c.fingerprint, cr.rid, cr.uses FROM agg_credential_runs cr JOIN agg_credentials c ON c.id = cr.cred ORDER BY 1, 2, 3";
const CREDENTIAL_RUNS_FROM_USES: &str = "SELECT u.class, u.fingerprint, u.rid, sum(u.count)::int8 AS uses FROM credential_uses u
    WHERE u.rid IS NOT NULL AND {scope} GROUP BY u.class, u.fingerprint, u.rid ORDER BY 1, 2, 3";
const RUNS: &str = "SELECT rid, uses, long_uses FROM agg_runs ORDER BY rid";
const RUNS_FROM_USES: &str =
    "SELECT u.rid, sum(u.count)::int8 AS uses, sum(CASE WHEN u.class IN ('short_lived', 'sigil_issued') THEN 0 ELSE u.count END)::int8 AS long_uses
    FROM credential_uses u WHERE u.rid IS NOT NULL AND {scope} GROUP BY u.rid ORDER BY u.rid";

/// Records which credentials and runs the uses in `partition` belong to (it is about to
/// be dropped; the caller holds it locked, so no use arrives in it meanwhile).
pub fn touch(tx: &mut Transaction<'_>, partition: &str) -> Result<(), StoreError> {
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS touched_credentials (class TEXT NOT NULL, fingerprint TEXT NOT NULL, PRIMARY KEY (class, fingerprint)) ON COMMIT DELETE ROWS;
         CREATE TEMP TABLE IF NOT EXISTS touched_runs (rid BIGINT PRIMARY KEY) ON COMMIT DELETE ROWS;
         INSERT INTO touched_credentials SELECT DISTINCT class, fingerprint FROM {partition} ON CONFLICT DO NOTHING;
         INSERT INTO touched_runs SELECT DISTINCT rid FROM {partition} WHERE rid IS NOT NULL ON CONFLICT DO NOTHING;"
    ))?;
    Ok(())
}

/// Recomputes the aggregate rows of the credentials and runs [`touch`]ed, from the uses
/// left. The aggregate tables are locked against concurrent batches meanwhile (briefly:
/// only the touched keys are recomputed).
pub fn rebuild_touched(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS touched_credentials (class TEXT NOT NULL, fingerprint TEXT NOT NULL, PRIMARY KEY (class, fingerprint)) ON COMMIT DELETE ROWS;
         CREATE TEMP TABLE IF NOT EXISTS touched_runs (rid BIGINT PRIMARY KEY) ON COMMIT DELETE ROWS;",
    )?;
    let touched: bool = tx.query_one("SELECT EXISTS (SELECT 1 FROM touched_credentials) OR EXISTS (SELECT 1 FROM touched_runs)", &[])?.get(0);
    if !touched {
        return Ok(());
    }
    tx.batch_execute(
        "LOCK TABLE agg_credentials, agg_credential_runs, agg_runs IN SHARE ROW EXCLUSIVE MODE;
         DELETE FROM agg_credential_runs WHERE cred IN (SELECT c.id FROM agg_credentials c JOIN touched_credentials t USING (class, fingerprint));
         DELETE FROM agg_credentials c USING touched_credentials t WHERE t.class = c.class AND t.fingerprint = c.fingerprint;
         DELETE FROM agg_runs WHERE rid IN (SELECT rid FROM touched_runs);",
    )?;
    let scope = "(u.class, u.fingerprint) IN (SELECT class, fingerprint FROM touched_credentials)";
    tx.batch_execute(&format!(
        "INSERT INTO agg_credentials (class, fingerprint, detector, access_key_id, token_family, runs, uses, first_seen, last_seen) {};
         INSERT INTO agg_credential_runs (cred, rid, uses) SELECT c.id, x.rid, x.uses FROM ({}) x JOIN agg_credentials c ON c.class = x.class AND c.fingerprint = x.fingerprint;
         INSERT INTO agg_runs (rid, uses, long_uses) {};",
        CREDENTIALS_FROM_USES.replace("{scope}", scope),
        CREDENTIAL_RUNS_FROM_USES.replace("{scope}", scope),
        RUNS_FROM_USES.replace("{scope}", "u.rid IN (SELECT rid FROM touched_runs)"),
    ))?;
    Ok(())
}

/// Compares every aggregate table with the same figures computed from the uses, the
/// cloud actions and the links.
pub fn verify(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
    for (name, kept, fresh) in [
        ("agg_credentials", CREDENTIALS, CREDENTIALS_FROM_USES),
        ("agg_credential_runs", CREDENTIAL_RUNS, CREDENTIAL_RUNS_FROM_USES),
        ("agg_runs", RUNS, RUNS_FROM_USES),
    ]
    .into_iter()
    .chain(aggregate::SHARED_CHECKS)
    {
        aggregate::compare(name, &to_json(&tx.query(kept, &[])?), &to_json(&tx.query(&fresh.replace("{scope}", "true"), &[])?))?;
    }
    Ok(())
}
