//! Interned strings nothing refers to any more, removed after retention deleted the rows
//! that did (an exec id, a path, a fingerprint lives once in `strings`; without this,
//! every string ever seen would stay).
//!
//! Mark and sweep, in steps like the rest of retention, so batches are stored between
//! steps: retention marks the ids the rows it walks refer to ([`mark_rows`],
//! [`mark_events`]) into a temporary table; meanwhile the string cache records every id a
//! batch refers to ([`super::ids::IdCache::track`]), found in the cache or not, and each
//! sweep step marks those before it deletes ([`sweep`]). A string is deleted only when no
//! row walked and no row written since the start refers to it, and the cache forgets
//! it, so no batch can name a deleted id.

use rusqlite::{Transaction, params};

use super::ids::Caches;
use crate::store::StoreError;

/// Every table with interned columns, and those columns.
pub const REFERENCES: [(&str, &[&str]); 7] = [
    ("processes", &["binary_path", "sha256", "cgroup_path", "comm", "ancestry"]),
    ("token_issuances", &["stream", "issuer", "exec_id"]),
    ("token_denials", &["exec_id"]),
    (
        "credential_uses",
        &[
            "stream",
            "exec_id",
            "dest_ip",
            "host",
            "method",
            "path",
            "detector",
            "class",
            "fingerprint",
            "access_key_id",
            "jwt_iss",
            "jwt_sub",
            "jwt_jti",
            "token_family",
        ],
    ),
    ("credential_file_reads", &["exec_id"]),
    ("credential_obtained", &["exec_id"]),
    ("agg_credentials", &["class", "fingerprint"]),
];

/// Starts a prune: nothing marked yet, and the cache records the ids batches use.
pub fn begin(tx: &Transaction<'_>, caches: &mut Caches) -> Result<(), StoreError> {
    tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS live_strings (id INTEGER PRIMARY KEY); DELETE FROM temp.live_strings;")?;
    caches.strings.track(true);
    Ok(())
}

/// Marks the strings rows `from < rowid <= to` of `table` refer to.
pub fn mark_rows(tx: &Transaction<'_>, table: &str, from: i64, to: i64) -> Result<(), StoreError> {
    let Some((_, columns)) = REFERENCES.iter().find(|(t, _)| *t == table) else { return Ok(()) };
    let select: Vec<String> = columns.iter().map(|c| format!("SELECT {c} FROM {table} WHERE rowid > ?1 AND rowid <= ?2 AND {c} IS NOT NULL")).collect();
    tx.prepare_cached(&format!("INSERT OR IGNORE INTO temp.live_strings (id) {}", select.join(" UNION ")))?.execute(params![from, to])?;
    Ok(())
}

/// Marks the event streams of the `events` rows whose key is in `range` (a condition on
/// `(node_id, stream, seq)` with six parameters).
pub fn mark_events(tx: &Transaction<'_>, range: &str, bounds: [i64; 6]) -> Result<(), StoreError> {
    tx.prepare_cached(&format!("INSERT OR IGNORE INTO temp.live_strings (id) SELECT DISTINCT stream FROM events WHERE {range}"))?.execute(bounds)?;
    Ok(())
}

/// One sweep step over ids `from < id <= to`: marks what batches used since the last
/// step, deletes what is unmarked, and makes the cache forget it. Returns strings deleted.
pub fn sweep(tx: &Transaction<'_>, caches: &mut Caches, from: i64, to: i64) -> Result<usize, StoreError> {
    let mut mark = tx.prepare_cached("INSERT OR IGNORE INTO temp.live_strings (id) VALUES (?1)")?;
    for id in caches.strings.take_used() {
        mark.execute([id])?;
    }
    let gone: Vec<String> = tx
        .prepare_cached("DELETE FROM strings WHERE id > ?1 AND id <= ?2 AND id NOT IN (SELECT id FROM temp.live_strings) RETURNING s")?
        .query_map(params![from, to], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for s in &gone {
        caches.strings.forget(s);
    }
    Ok(gone.len())
}

/// Ends a prune: the cache stops recording, the marks are dropped.
pub fn end(tx: &Transaction<'_>, caches: &mut Caches) -> Result<(), StoreError> {
    caches.strings.track(false);
    tx.execute_batch("DELETE FROM temp.live_strings;")?;
    Ok(())
}
