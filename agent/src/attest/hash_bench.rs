//! `sigil-agent hash-bench FILE`: the agent's own hasher measured on one file, so
//! `cargo xtask bench` can compare it with `openssl dgst -sha256` on the same bytes, and
//! the cost of answering an exec from the cache.

use std::{fs::File, path::Path, time::Instant};

use anyhow::{Context, Result, bail};

use super::hash::{HashCache, Lookup, ensure_regular, sha256_bounded};

/// Cache lookups timed for the hit cost.
const HIT_LOOKUPS: u32 = 100_000;

/// Throughput of `repeat` full hashes (the fastest one counts: the file is in the page
/// cache after the first) and the mean cost of a cache hit, as one JSON object.
pub fn measure(path: &Path, repeat: usize) -> Result<serde_json::Value> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = ensure_regular(&file)?.len();
    let mut best = f64::MAX;
    for _ in 0..repeat.max(1) {
        let started = Instant::now();
        sha256_bounded(&file, size, &|| None)?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    let cache = HashCache::new(16, u64::MAX);
    cache.digest(&file)?;
    let started = Instant::now();
    for _ in 0..HIT_LOOKUPS {
        if !matches!(cache.lookup(&file)?, Lookup::Hit(_)) {
            bail!("{} changed during the benchmark", path.display());
        }
    }
    let hit_ns = started.elapsed().as_nanos() as f64 / f64::from(HIT_LOOKUPS);
    Ok(serde_json::json!({
        "bytes": size,
        "seconds": best,
        "mb_per_s": size as f64 / best / 1e6,
        "cache_hit_ns": hit_ns,
    }))
}
