//! Daily range partitions of the high-volume tables: created ahead as batches need them,
//! dropped whole by retention.

use std::collections::BTreeSet;

use postgres::{Client, Transaction};

use super::DDL_LOCK;
use crate::store::StoreError;

/// The tables partitioned by day of `time`.
const PARTITIONED: [&str; 2] = ["events", "credential_uses"];
const DAY: i64 = 86_400;

pub fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY)
}

fn name(table: &str, day: i64) -> String {
    if day < 0 { format!("{table}_dm{}", -day) } else { format!("{table}_d{day}") }
}

/// The day a partition name stands for.
fn day_in(table: &str, partition: &str) -> Option<i64> {
    let rest = partition.strip_prefix(table)?.strip_prefix("_d")?;
    match rest.strip_prefix('m') {
        Some(neg) => neg.parse::<i64>().ok().map(|d| -d),
        None => rest.parse().ok(),
    }
}

/// Creates the partitions of `days` (and of the day after each, so the next day's first
/// batch finds its partition) that `known` does not list, in their own short transaction.
pub fn ensure(client: &mut Client, known: &mut BTreeSet<i64>, days: impl Iterator<Item = i64>) -> Result<(), StoreError> {
    let missing: BTreeSet<i64> = days.flat_map(|d| [d, d + 1]).filter(|d| !known.contains(d)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])?;
    for &day in &missing {
        for table in PARTITIONED {
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {table} FOR VALUES FROM ({}) TO ({})",
                name(table, day),
                day * DAY,
                (day + 1) * DAY
            ))?;
        }
    }
    tx.commit()?;
    known.extend(missing);
    Ok(())
}

/// Drops the partitions wholly older than `before` in `tx`, first taking their events out
/// of the per-kind counts and recording the credentials and runs of their uses for the
/// aggregates' rebuild; returns the rows dropped.
pub fn drop_before(tx: &mut Transaction<'_>, known: &mut BTreeSet<i64>, before: i64) -> Result<usize, StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])?;
    let mut rows = 0;
    for table in PARTITIONED {
        let parts: Vec<String> = tx
            .query("SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::text::regclass", &[&table])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for p in parts {
            let Some(day) = day_in(table, &p) else { continue };
            if (day + 1) * DAY > before {
                continue;
            }
            if table == "events" {
                tx.execute(
                    &format!(
                        "UPDATE event_counts c SET n = greatest(c.n - g.n, 0) FROM (SELECT kind, count(*) AS n FROM {p} GROUP BY kind) g WHERE c.kind = g.kind"
                    ),
                    &[],
                )?;
            }
            if table == "credential_uses" {
                // Locked first, so no use arrives in it between the record and the drop.
                tx.batch_execute(&format!("LOCK TABLE {p} IN ACCESS EXCLUSIVE MODE"))?;
                super::aggregates::touch(tx, &p)?;
            }
            let n: i64 = tx.query_one(&format!("SELECT count(*) FROM {p}"), &[])?.get(0);
            rows += n as usize;
            tx.batch_execute(&format!("DROP TABLE {p}"))?;
            known.remove(&day);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip_to_their_day_including_before_1970() {
        for day in [-3, 0, 20_415] {
            assert_eq!(day_in("events", &name("events", day)), Some(day));
        }
        assert_eq!(day_in("events", "credential_uses_d5"), None);
        assert_eq!(day_of(-1), -1);
    }
}
