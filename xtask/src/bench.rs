//! `cargo xtask bench`: what the agent costs the workloads it watches, and what the
//! collector ingests.
//!
//! Agent: each workload runs first without the agent (baseline), then with it attached, in
//! the same process and on the same machine, alternating rounds so drift hits both sides;
//! the median of each side is compared. Ratios near 1.0 mean the agent is invisible.
//!
//! Ingest: a release collector, and a separate process (`sigil-ingest-bench`) pushing
//! real-shaped events over gRPC in batches of 500, then writing the same rows with plain
//! batched inserts in the same run: events/s, the ratio, bytes per event; into SQLite, then
//! into a throwaway PostgreSQL.
//!
//! Figures are merged into target/bench/results.json (one key per benchmark).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use crate::{
    bench_exec::{self, Agent},
    build,
    peers::{self, Guard},
    ports, postgres_server, provision,
    test::PYTHON_PACKAGES,
};

/// How long each part runs; `--quick` shrinks every count.
struct Sizes {
    rounds: usize,
    execs: usize,
    tls_requests: usize,
    cached_hashes: usize,
    hash_mib: usize,
    storm_workers: &'static [usize],
    storm_seconds: u64,
}

const FULL: Sizes = Sizes {
    // Five: on these VMs one round's ratio moves by +-5%, as much as the goals' margins.
    rounds: 5,
    execs: 2000,
    tls_requests: 3000,
    cached_hashes: 10_000,
    hash_mib: 128,
    storm_workers: &[1, 2, 4, 8, 16],
    storm_seconds: 3,
};
const QUICK: Sizes = Sizes { rounds: 1, execs: 500, tls_requests: 500, cached_hashes: 1000, hash_mib: 32, storm_workers: &[2, 8], storm_seconds: 2 };

fn tls_round(python: &Path, script: &Path, port: u16, requests: usize) -> Result<f64> {
    let out = Command::new(python).arg(script).arg(port.to_string()).arg(requests.to_string()).output()?;
    if !out.status.success() {
        bail!("TLS loop failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `full`: the query benchmark at 10M events too (about 3 GB of database).
pub fn run(quick: bool, full: bool, only: Option<&str>) -> Result<()> {
    match only {
        None => {
            agent(quick)?;
            ingest(quick)?;
            queries(quick, full)?;
            crate::bench_cloud::run_bench().map(|_| ())
        }
        Some("agent") => agent(quick),
        Some("ingest") => ingest(quick),
        Some("queries") => queries(quick, full),
        Some("cloudtrail") => crate::bench_cloud::run_bench().map(|_| ()),
        Some(other) => bail!("unknown benchmark {other:?}: agent, ingest, queries or cloudtrail"),
    }
}

/// The release binaries the bench runs (agent and collector only: no test binaries).
fn release_bins() -> Result<PathBuf> {
    let object = build::ebpf()?;
    provision::run(build::cargo().args(["build", "--release", "-p", "sigil-agent", "-p", "sigil-collector", "--bins"]).env("SIGIL_EBPF_OBJECT", &object))?;
    Ok(build::workspace_root().join("target/release"))
}

/// One line of the closing table.
struct Row {
    figure: String,
    goal: &'static str,
    measured: String,
}

fn row(rows: &mut Vec<Row>, figure: impl Into<String>, goal: &'static str, measured: String) {
    rows.push(Row { figure: figure.into(), goal, measured });
}

/// Where every benchmark's figures are merged (each writes its own keys).
pub fn results_path() -> PathBuf {
    build::workspace_root().join("target/bench/results.json")
}

/// Adds `fresh` to whatever target/bench/results.json already holds (other benches
/// write their own keys there).
pub fn record_results(fresh: Map<String, Value>) -> Result<()> {
    let path = results_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut all = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| if let Value::Object(m) = v { Some(m) } else { None })
        .unwrap_or_default();
    all.extend(fresh);
    std::fs::write(&path, serde_json::to_vec_pretty(&Value::Object(all))?)?;
    Ok(())
}

/// Merges `value` under `key` into target/bench/results.json, keeping other benchmarks'.
fn record(key: &str, value: Value) -> Result<()> {
    record_results(Map::from_iter([(key.to_owned(), value)]))?;
    eprintln!("bench: wrote {}", results_path().display());
    Ok(())
}

/// Builds the release collector and its bench driver.
fn build_collector() -> Result<()> {
    let mut cmd = build::cargo();
    cmd.args(["build", "--release", "-p", "sigil-collector", "--bins"]);
    provision::run(&mut cmd)
}

/// A fresh directory `target/bench/<name>`.
fn fresh_dir(name: &str) -> Result<PathBuf> {
    let dir = build::workspace_root().join("target/bench").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The ingest benchmark on both backends: SQLite (a file) and PostgreSQL (a throwaway
/// server started the way the tests start theirs), each next to its own raw baseline.
fn ingest(quick: bool) -> Result<()> {
    build_collector()?;
    let dir = fresh_dir("ingest")?;
    let events = if quick { 100_000 } else { 400_000 };
    let args = ["--events".to_owned(), events.to_string()];
    eprintln!("bench: ingest of {events} events over gRPC (batches of 500) into SQLite, then the same rows raw");
    let r = against_collector(&dir.join("collector.db").display().to_string(), &dir.join("raw.db").display().to_string(), &args)?;
    print_ingest("SQLite", &r);
    record("ingest", r)?;
    // A fleet pushes from many nodes at once: batches that arrive together share a commit.
    let fleet = [&args[..], &["--agents".to_owned(), "8".to_owned()]].concat();
    eprintln!("bench: the same from 8 agents at once");
    let r = against_collector(&dir.join("collector-8.db").display().to_string(), &dir.join("raw-8.db").display().to_string(), &fleet)?;
    print_ingest("SQLite, 8 agents", &r);
    record("ingest_8_agents", r)?;
    provision::debian_packages(&["postgresql"])?;
    let pg = postgres_server::Server::start(std::env::temp_dir().join(format!("sigil-bench-pg-{}", std::process::id())))?;
    eprintln!("bench: ingest of {events} events into a throwaway PostgreSQL on port {}, then the same rows raw", pg.port);
    let r = against_collector(&pg.url, &pg.url, &args)?;
    print_ingest("PostgreSQL", &r);
    record("ingest_postgres", r)
}

fn print_ingest(backend: &str, r: &Value) {
    println!("\n{:<52} {:>12}", format!("collector ingest into {backend} ({} events, {})", r["events"], r["mix"].as_str().unwrap_or("")), "");
    println!("{:<52} {:>12}", format!("gRPC push into {backend} (events/s)"), r["grpc_events_per_second"]);
    println!("{:<52} {:>12}", "raw batched insert of the same rows (rows/s)", r["raw_insert_rows_per_second"]);
    let around = r["raw_insert_rows_per_second_before_and_after"].as_array().map(|a| a.iter().map(ToString::to_string).collect::<Vec<_>>().join(" / "));
    println!("{:<52} {:>12}", "  the mean of: before / after the pushes", around.unwrap_or_default());
    println!("{:<52} {:>12}", "ratio (gRPC / raw)", r["ratio_to_raw"]);
    println!("{:<52} {:>12}", "bytes per event (collector store)", r["bytes_per_event"]);
    println!("{:<52} {:>12}", "bytes per event (raw rows)", r["raw_bytes_per_event"]);
}

/// A release collector on `db` (a file or a PostgreSQL URL), fed by `sigil-ingest-bench`
/// (run with `args`) from a separate process, the raw baseline going into `raw`; the
/// bench's JSON.
fn against_collector(db: &str, raw: &str, args: &[String]) -> Result<Value> {
    let bins = build::workspace_root().join("target/release");
    let (grpc, http) = (ports::free_port()?, ports::free_port()?);
    let collector = Guard(
        Command::new(bins.join("sigil-collector"))
            .args(["--db", db])
            .args(["serve", "--grpc-listen", &format!("127.0.0.1:{grpc}"), "--http-listen", &format!("127.0.0.1:{http}"), "--retention-days", "0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting sigil-collector")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
        if Instant::now() > deadline {
            bail!("the collector did not listen on {grpc}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = Command::new(bins.join("sigil-ingest-bench"))
        .args(["--grpc", &format!("http://127.0.0.1:{grpc}"), "--batch", "500"])
        .args(["--db", db, "--raw-db", raw])
        .arg("--collector-bin")
        .arg(bins.join("sigil-collector"))
        .args(args)
        .output()?;
    drop(collector);
    if !out.status.success() {
        bail!("sigil-ingest-bench failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("sigil-ingest-bench output")
}

/// Query latency per verb over gRPC at 1M events (1k pods, 2k credentials, 10k imported
/// CloudTrail records), and at 10M with `full`.
fn queries(quick: bool, full: bool) -> Result<()> {
    let sizes: &[usize] = match (quick, full) {
        (true, _) => &[200_000],
        (false, false) => &[1_000_000],
        (false, true) => &[1_000_000, 10_000_000],
    };
    let asked = if quick { 50 } else { 200 };
    let goals = [("trace", "< 20 ms"), ("who-used", "< 20 ms"), ("run", "< 20 ms"), ("posture", "< 50 ms"), ("static-credentials", "< 50 ms")];
    let mut res = Map::new();
    build_collector()?;
    for &events in sizes {
        eprintln!("bench: {events} events over gRPC, 10k CloudTrail records imported, then each query verb asked {asked} times");
        let dir = fresh_dir("queries")?;
        let (db, raw) = (dir.join("collector.db").display().to_string(), dir.join("raw.db").display().to_string());
        let r = against_collector(&db, &raw, &["--events".into(), events.to_string(), "--queries".into(), asked.to_string(), "--no-raw".into()]);
        let _ = std::fs::remove_dir_all(&dir);
        let r = r?;
        println!(
            "\n{:<52} {:>12}  measured (p50 / p99)",
            format!("queries at {events} events ({} B/event, {} events/s ingest)", r["bytes_per_event"], r["grpc_events_per_second"]),
            "goal p99"
        );
        for (verb, goal) in goals {
            let q = &r["queries"][verb];
            println!("{:<52} {:>12}  {} ms / {} ms ({} B answers)", format!("  {verb}"), goal, q["p50_ms"], q["p99_ms"], q["mean_answer_bytes"]);
        }
        res.insert(format!("queries_{events}"), r);
    }
    record_results(res)?;
    eprintln!("bench: wrote {}", results_path().display());
    Ok(())
}

fn agent(quick: bool) -> Result<()> {
    if !provision::is_root() {
        bail!("cargo xtask bench needs root: the agent loads eBPF programs");
    }
    let sz = if quick { &QUICK } else { &FULL };
    provision::debian_packages(&["openssl", "bpftrace"])?;
    let python = provision::python_env(PYTHON_PACKAGES)?;
    let bin_dir = release_bins()?;
    let bin = bin_dir.join("sigil-agent");
    let root = build::workspace_root();
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    let mut res = Map::new();

    // Exec cost against nothing and against bpftrace, in one run.
    let e = bench_exec::exec_loop(&bin, &dir, sz.execs, sz.rounds)?;
    let (vs_nothing, vs_bpftrace) = (e.agent_s / e.nothing_s, e.agent_s / e.bpftrace_s);
    let (nt_nothing, nt_bpftrace) = (e.agent_no_trace_s / e.nothing_s, e.agent_no_trace_s / e.bpftrace_s);
    let loop_name = format!("bash loop of {} /bin/true execs (median of {})", sz.execs, sz.rounds);
    row(&mut rows, format!("{loop_name}: agent / nothing"), "<= 1.05", format!("{vs_nothing:.3}"));
    row(&mut rows, "  same loop: agent / bpftrace", "<= 1.05", format!("{vs_bpftrace:.3}"));
    row(&mut rows, "  same loop: agent --no-trace / nothing", "<= 1.05", format!("{nt_nothing:.3}"));
    row(&mut rows, "  same loop: agent --no-trace / bpftrace", "<= 1.05", format!("{nt_bpftrace:.3}"));
    row(&mut rows, "  same loop: bpftrace / nothing", "-", format!("{:.3}", e.bpftrace_s / e.nothing_s));
    row(&mut rows, "  agent CPU per exec, all threads", "-", format!("{:.0} µs", e.agent_cpu_us_per_exec));
    row(&mut rows, "  agent CPU per exec event, event thread", "-", format!("{:.0} µs", e.agent_thread_us_per_exec));
    row(&mut rows, "  ring-buffer losses during the loops", "0", e.lost.to_string());
    row(&mut rows, "agent RSS at rest", "< 64 MiB", format!("{:.1} MiB", e.rss_rest_kib as f64 / 1024.0));
    row(
        &mut rows,
        "agent RSS after the exec loop (peak)",
        "-",
        format!("{:.1} MiB ({:.1})", e.rss_loop_kib as f64 / 1024.0, e.rss_loop_hwm_kib as f64 / 1024.0),
    );
    res.extend([
        ("exec_loop.execs".into(), json!(sz.execs)),
        ("exec_loop.nothing_s".into(), json!(e.nothing_s)),
        ("exec_loop.bpftrace_s".into(), json!(e.bpftrace_s)),
        ("exec_loop.agent_s".into(), json!(e.agent_s)),
        ("exec_loop.agent_no_trace_s".into(), json!(e.agent_no_trace_s)),
        ("exec_loop.agent_over_nothing".into(), json!(vs_nothing)),
        ("exec_loop.agent_over_bpftrace".into(), json!(vs_bpftrace)),
        ("exec_loop.agent_no_trace_over_nothing".into(), json!(nt_nothing)),
        ("exec_loop.agent_no_trace_over_bpftrace".into(), json!(nt_bpftrace)),
        ("exec_loop.agent_cpu_us_per_exec".into(), json!(e.agent_cpu_us_per_exec)),
        ("exec_loop.event_thread_us_per_exec".into(), json!(e.agent_thread_us_per_exec)),
        ("exec_loop.ring_buffer_lost".into(), json!(e.lost)),
        ("rss.rest_kib".into(), json!(e.rss_rest_kib)),
        ("rss.exec_loop_kib".into(), json!(e.rss_loop_kib)),
        ("rss.exec_loop_hwm_kib".into(), json!(e.rss_loop_hwm_kib)),
    ]);

    let (rss, computed) = bench_exec::rss_with_cached_hashes(&bin, &dir, sz.cached_hashes)?;
    row(&mut rows, format!("agent RSS with {computed} cached hashes"), "-", format!("{:.1} MiB", rss as f64 / 1024.0));
    res.extend([("rss.cached_hashes".into(), json!(computed)), ("rss.cached_hashes_kib".into(), json!(rss))]);

    let (agent_mbs, openssl_mbs, hit_ns) = bench_exec::hashing(&bin, &dir, sz.hash_mib)?;
    row(
        &mut rows,
        format!("SHA-256 of {} MiB: agent / openssl dgst", sz.hash_mib),
        ">= 0.9",
        format!("{:.2} ({agent_mbs:.0} vs {openssl_mbs:.0} MB/s)", agent_mbs / openssl_mbs),
    );
    row(&mut rows, "hash-cache hit (fstat + lookup)", "-", format!("{:.2} µs", hit_ns / 1000.0));
    res.extend([
        ("hash.agent_mb_per_s".into(), json!(agent_mbs)),
        ("hash.openssl_mb_per_s".into(), json!(openssl_mbs)),
        ("hash.agent_over_openssl".into(), json!(agent_mbs / openssl_mbs)),
        ("hash.cache_hit_ns".into(), json!(hit_ns)),
    ]);

    let storm = bench_exec::storm(&bin, &dir, sz.storm_workers, sz.storm_seconds)?;
    row(&mut rows, "exec rate with zero ring-buffer loss (4 MiB ring)", ">= 20k/s", format!("{:.0}/s", storm.max_lossless_rate));
    row(
        &mut rows,
        "  exec rate at which losses start",
        "-",
        storm.first_loss_rate.map_or("none up to the highest rate reached".to_owned(), |r| format!("{r:.0}/s")),
    );
    row(&mut rows, "  agent recovers by itself after loss (4 KiB ring too)", "yes", if storm.recovered { "yes" } else { "NO" }.to_owned());
    for (ring, w, rate, lost) in &storm.steps {
        eprintln!("bench: storm step ring={ring} B workers={w}: {rate:.0} exec/s, {lost} lost");
    }
    res.extend([
        ("storm.max_lossless_exec_per_s".into(), json!(storm.max_lossless_rate)),
        ("storm.first_loss_exec_per_s".into(), json!(storm.first_loss_rate)),
        ("storm.recovered".into(), json!(storm.recovered)),
        ("storm.steps".into(), json!(storm.steps)),
    ]);

    // TLS keep-alive loop with a bearer token (the tracer's hot path).
    let port = 18_600;
    let _server = peers::https_server(&python, &dir, port)?;
    let script = root.join("tests/python/tls_loop.py");
    let (mut tls_base, mut tls_agent) = (vec![], vec![]);
    for round in 1..=sz.rounds {
        eprintln!("bench: TLS round {round}/{}", sz.rounds);
        tls_base.push(tls_round(&python, &script, port, sz.tls_requests)?);
        let agent = Agent::start(&bin, &dir.join("state-tls"), &[])?;
        std::thread::sleep(Duration::from_millis(500));
        tls_agent.push(tls_round(&python, &script, port, sz.tls_requests)?);
        agent.stop();
    }
    let (b, w) = (median(tls_base), median(tls_agent));
    row(&mut rows, "TLS keep-alive bearer loop: agent / nothing (req/s)", ">= 0.95", format!("{:.3} ({w:.0} vs {b:.0})", w / b));
    res.extend([("tls.nothing_req_per_s".into(), json!(b)), ("tls.agent_req_per_s".into(), json!(w)), ("tls.agent_over_nothing".into(), json!(w / b))]);

    let issue_dir = dir.join("issue");
    std::fs::create_dir_all(&issue_dir)?;
    let sign = crate::bench_issue::sign_cost(&bin)?;
    row(&mut rows, "one ES256 signature; one whole JWT-SVID", "-", format!("{:.1} µs; {:.1} µs", sign.es256_us, sign.jwt_us));
    res.extend([("workload_api.es256_us".into(), json!(sign.es256_us)), ("workload_api.jwt_us".into(), json!(sign.jwt_us))]);
    for (i, r) in crate::bench_issue::run(&bin_dir, &issue_dir)?.into_iter().enumerate() {
        let (name, p50, p99, per_s) = (&r.name, r.p50_us, r.p99_us, r.tokens_per_s);
        row(&mut rows, format!("Workload API, {name}: p50 / p99, tokens/s"), "p99 < 1 ms, >= 5k/s", format!("{p50} µs / {p99} µs, {per_s:.0}/s"));
        res.insert(format!("workload_api.{name}.p50_us"), json!(p50));
        res.insert(format!("workload_api.{name}.p99_us"), json!(p99));
        res.insert(format!("workload_api.{name}.tokens_per_s"), json!(per_s));
        if i == 0 {
            let ratio = p50 as f64 / sign.es256_us;
            row(&mut rows, format!("Workload API, {name}: p50 / one ES256 signature"), "<= 3", format!("{ratio:.1}"));
            res.insert("workload_api.p50_over_es256".into(), json!(ratio));
        }
    }

    println!("\n{:<68} {:>12}  measured", "figure", "goal");
    for r in &rows {
        println!("{:<68} {:>12}  {}", r.figure, r.goal, r.measured);
    }
    res.insert("bench.quick".into(), json!(quick));
    record_results(res)?;
    println!("\nresults: {}", results_path().display());
    Ok(())
}
