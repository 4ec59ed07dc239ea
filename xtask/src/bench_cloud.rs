//! `cargo xtask bench` (CloudTrail part): a million realistic CloudTrail records in one
//! delivery document, ingested through the real `sigil-collector ingest cloudtrail` into a
//! fresh SQLite store, and what correlation costs each agent push as unattributed cloud
//! actions pile up. Figures are printed and merged into `target/bench/results.json`.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{build, provision::run};

const RECORDS: u64 = 1_000_000;
/// Unattributed cloud actions stored when the correlation pass is timed.
const UNATTRIBUTED: [u64; 3] = [1_000, 10_000, 100_000];

fn example(dir: &Path, args: &[&str]) -> Result<Value> {
    let bin = build::workspace_root().join("target/release/examples/cloudtrail_bench");
    let out = Command::new(bin).args(args).current_dir(dir).output().context("running cloudtrail_bench")?;
    if !out.status.success() {
        bail!("cloudtrail_bench {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub fn run_bench() -> Result<Value> {
    run(build::cargo().args(["build", "--release", "-p", "sigil-collector", "--bin", "sigil-collector", "--example", "cloudtrail_bench"]))?;
    let root = build::workspace_root();
    let dir = root.join(format!("target/bench/cloudtrail-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&root, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let figures = result?;
    if let Value::Object(m) = &figures {
        crate::bench::record_results(m.clone())?;
    }
    Ok(figures)
}

fn measure(root: &Path, dir: &Path) -> Result<Value> {
    let file = dir.join("cloudtrail-1m.json");
    eprintln!("bench: generating {RECORDS} CloudTrail records");
    let generated = example(dir, &["generate", &RECORDS.to_string(), &file.display().to_string()])?;
    let file_bytes = std::fs::metadata(&file)?.len();
    eprintln!("bench: ingesting {} MB through `sigil-collector ingest cloudtrail`", file_bytes >> 20);
    let start = Instant::now();
    let out =
        Command::new(root.join("target/release/sigil-collector")).arg("--db").arg(dir.join("ingest.db")).args(["ingest", "cloudtrail"]).arg(&file).output()?;
    let seconds = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains(&format!("ingested {RECORDS} cloud actions")) {
        bail!("ingest failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    }
    // The CLI reports its two phases: reading and storing, then the correlation pass.
    let phase = |label: &str| -> Option<f64> {
        let rest = &stdout[stdout.find(label)? + label.len()..];
        rest[..rest.find('s')?].trim().parse().ok()
    };
    let (stored_in, correlated_in) = (phase("read and stored in "), phase("correlated in "));
    let (Some(stored_in), Some(correlated_in)) = (stored_in, correlated_in) else {
        bail!("no timings in the CLI's summary: {stdout}");
    };
    let rate = RECORDS as f64 / stored_in;
    eprintln!("bench: timing correlation with {UNATTRIBUTED:?} unattributed actions stored");
    let ks: Vec<String> = UNATTRIBUTED.iter().map(u64::to_string).collect();
    let mut args = vec!["correlate-cost", "."];
    args.extend(ks.iter().map(String::as_str));
    let correlate = example(dir, &args)?;
    println!("\n{:<58} {:>14}", "CloudTrail ingest (1 file, real CLI, SQLite)", "");
    println!("{:<58} {:>10.0} rec/s", format!("  {RECORDS} records, {} MB, read and stored", file_bytes >> 20), rate);
    println!("{:<58} {:>10.1} s", "  then the correlation pass over them", correlated_in);
    println!("{:<58} {:>10.1} s", "  wall time of the command", seconds);
    println!("correlation pass per agent push, by unattributed cloud actions stored:");
    for k in &ks {
        println!("{:<58} {:>10} ms", format!("  {k}"), correlate[k]);
    }
    Ok(json!({
        "cloudtrail_ingest_records": RECORDS,
        "cloudtrail_ingest_file_bytes": file_bytes,
        "cloudtrail_ingest_avg_record_bytes": generated["record_bytes"].as_u64().unwrap_or(0) / RECORDS,
        "cloudtrail_ingest_seconds": (stored_in * 100.0).round() / 100.0,
        "cloudtrail_ingest_records_per_s": rate.round(),
        "cloudtrail_ingest_correlation_seconds": (correlated_in * 100.0).round() / 100.0,
        "cloudtrail_ingest_command_seconds": (seconds * 100.0).round() / 100.0,
        "correlate_ms_per_push_by_unattributed_actions": correlate,
    }))
}
