//! `sigil-ingest-bench`: the load side of `cargo xtask bench`'s ingest benchmark.
//!
//! Generates real-shaped agent events (1k pods, 2k credentials; 3 process_exec to 1
//! credential_use), pushes them to a running collector over gRPC in batches from this
//! separate process, then writes the same rows into a fresh SQLite file (or, when the
//! collector's `--db` is a PostgreSQL URL, into plain tables of that database) with plain
//! batched inserts (the baseline), and prints one JSON document with both rates and the
//! bytes per event of each database.
//!
//! With `--queries N`, it then imports CloudTrail records of calls made with the fleet's
//! keys (through `sigil-collector ingest cloudtrail`, as a responder would) and asks each
//! query verb N times over the gRPC Query API: p50 and p99 per verb.
#![forbid(unsafe_code)]

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rusqlite::{Connection, params};
use serde_json::json;
use sigil_collector::store::postgres::is_url;
use sigil_proto::{
    CONTRACT_VERSION, EventBody,
    v1::{self, Event, PushRequest, QueryRequest, ingest_client::IngestClient, query_client::QueryClient},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

#[derive(Parser)]
#[command(about = "Pushes real-shaped agent events to a collector and times a raw SQLite insert of the same rows")]
struct Args {
    /// The collector's gRPC endpoint.
    #[arg(long)]
    grpc: String,
    /// The collector's database file or PostgreSQL URL (read, after the pushes, for its size).
    #[arg(long)]
    db: String,
    /// Where the baseline database is written: a file, or a PostgreSQL URL (tables
    /// `raw_exec` and `raw_use`, replaced).
    #[arg(long)]
    raw_db: String,
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Agents pushing at once (each its own node and connection).
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Times each query verb is asked after the pushes (0: no query benchmark).
    #[arg(long, default_value_t = 0)]
    queries: usize,
    /// The collector binary, for importing the CloudTrail records (`--queries`).
    #[arg(long)]
    collector_bin: Option<PathBuf>,
    /// Skip the raw-insert baseline (the query benchmark's loads).
    #[arg(long)]
    no_raw: bool,
}

const PODS: u64 = 1000;
const CREDENTIALS: u64 = 2000;
const BINARIES: [&str; 8] =
    ["/usr/local/bin/app", "/bin/sh", "/usr/bin/python3", "/usr/bin/curl", "/usr/bin/aws", "/usr/bin/git", "/usr/bin/env", "/bin/sleep"];

/// A small deterministic generator (the figures must not depend on a seed from the clock).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

fn hex64(seed: u64) -> String {
    format!("{:016x}{:016x}{:016x}{:016x}", seed, seed.rotate_left(17) ^ 0x9e37, seed.rotate_left(31) ^ 0x7f4a, seed.rotate_left(47) ^ 0x1234)
}

struct Pod {
    uid: String,
    container: String,
    cgroup: String,
    ancestry: Vec<v1::Ancestor>,
}

fn pod(i: u64, boot: &str) -> Pod {
    let uid = format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", i, i % 0xffff, i % 0xfff, (i * 7) % 0xfff, i * 31);
    let container = hex64(i ^ 0xc0ffee);
    let cgroup = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container}.scope", uid.replace('-', "_"));
    let ancestry = vec![
        v1::Ancestor { pid: 1000 + i as u32, exec_id: format!("{boot}:{}:100:1000", 1000 + i), comm: "sh".into(), binary_path: Some("/bin/sh".into()) },
        v1::Ancestor {
            pid: 900,
            exec_id: format!("{boot}:900:50:500"),
            comm: "containerd-shim".into(),
            binary_path: Some("/usr/bin/containerd-shim-runc-v2".into()),
        },
    ];
    Pod { uid, container, cgroup, ancestry }
}

/// One agent's events, in push order: every fourth a credential use by a process of the
/// pod exec'd just before. Deterministic: the same node and stream give the same events.
struct Generator {
    node: String,
    stream: String,
    boot: String,
    pods: Vec<Pod>,
    rng: Lcg,
    last_exec: Vec<Option<v1::ProcessRef>>,
    seq: usize,
    n: usize,
}

impl Generator {
    fn new(n: usize, node: &str, stream: &str) -> Self {
        let boot = format!("{:08x}-0000-4000-8000-{:012x}", node.len() as u64 * 7919, stream.len() as u64);
        let pods: Vec<Pod> = (0..PODS).map(|i| pod(i, &boot)).collect();
        let rng = Lcg(0x5eed ^ node.len() as u64);
        Self { node: node.into(), stream: stream.into(), boot, pods, rng, last_exec: vec![None; PODS as usize], seq: 0, n }
    }

    /// The next batch of at most `size` events; None at the end.
    fn batch(&mut self, size: usize) -> Option<Vec<Event>> {
        let b: Vec<Event> = self.by_ref().take(size).collect();
        (!b.is_empty()).then_some(b)
    }
}

impl Iterator for Generator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        const T0: i64 = 1_767_225_600; // 2026-01-01
        if self.seq >= self.n {
            return None;
        }
        let seq = self.seq;
        self.seq += 1;
        let Self { node, stream, boot, pods, rng, last_exec, .. } = self;
        let (node, stream, boot) = (node.as_str(), stream.as_str(), boot.as_str());
        Some({
            let p = rng.next(PODS) as usize;
            let pod = &pods[p];
            let time = T0 + (seq / 50) as i64;
            let workload = v1::Workload {
                kind: v1::WorkloadKind::KubernetesPod as i32,
                pod_uid: Some(pod.uid.clone()),
                qos_class: Some(v1::QosClass::Burstable as i32),
                container_id: Some(pod.container.clone()),
                runtime: Some(v1::ContainerRuntime::Containerd as i32),
                unit: None,
                ..Default::default()
            };
            let body = match (seq % 4 == 3, last_exec[p].clone()) {
                (true, Some(process)) => {
                    let c = rng.next(CREDENTIALS);
                    let static_key = c.is_multiple_of(3);
                    EventBody::CredentialUse(v1::CredentialUse {
                        time: rfc3339(time),
                        node: node.into(),
                        pid: process.pid,
                        process: Some(process),
                        destination: Some(v1::Destination {
                            ip: Some(format!("52.216.{}.{}", c % 200, c % 250)),
                            port: Some(443),
                            host: Some("s3.us-east-1.amazonaws.com".into()),
                        }),
                        transport: "tls".into(),
                        tls_library: Some("openssl".into()),
                        protocol: v1::Protocol::Http1 as i32,
                        method: if c.is_multiple_of(5) { "PUT" } else { "GET" }.into(),
                        path: format!("/reports/{}/object-{}", c % 40, rng.next(200)),
                        detector: v1::Detector::AwsSigv4 as i32,
                        class: if static_key { v1::CredentialClass::Static } else { v1::CredentialClass::ShortLived } as i32,
                        lifetime_seconds: (!static_key).then_some(3600),
                        remaining_seconds: (!static_key).then_some(1800),
                        fingerprint: format!("hmac-sha256:{}", hex64(c)),
                        identifiers: Some(v1::Identifiers {
                            access_key_id: Some(format!("{}{:016}", if static_key { "AKIA" } else { "ASIA" }, c)),
                            aws_region: Some("us-east-1".into()),
                            aws_service: Some("s3".into()),
                            header: Some("authorization".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                }
                _ => {
                    let pid = 10_000 + seq as u32;
                    let bin = BINARIES[rng.next(BINARIES.len() as u64) as usize];
                    let process_id = format!("{boot}:{pid}:{}", 5000 + seq);
                    let exec_id = format!("{process_id}:{}", 1_000_000_000 + seq as u64 * 1000);
                    let exec = v1::ProcessExec {
                        source: v1::Source::Ebpf as i32,
                        exec_id: exec_id.clone(),
                        process_id: process_id.clone(),
                        node: node.into(),
                        time: rfc3339(time),
                        pid,
                        ppid: 1000 + p as u32,
                        start_time: rfc3339(time),
                        start_ticks: 5000 + seq as u64,
                        uid: 1000,
                        gid: 1000,
                        comm: bin.rsplit('/').next().unwrap_or(bin).into(),
                        binary: Some(v1::Binary {
                            path: Some(bin.into()),
                            exec_path: Some(bin.into()),
                            sha256: Some(hex64(bin.len() as u64 * 131 + p as u64 % 3)),
                            size: Some(1_000_000),
                            inode: Some(4242),
                            hash_cache: Some("hit".into()),
                            hashed_from: Some("exe".into()),
                            replaced_after_exec: false,
                            error: None,
                            ..Default::default()
                        }),
                        cgroup: Some(v1::CgroupInfo { id: 50_000 + p as u64, path: Some(pod.cgroup.clone()) }),
                        workload: Some(workload.clone()),
                        ancestry: pod.ancestry.clone(),
                        ..Default::default()
                    };
                    last_exec[p] = Some(v1::ProcessRef {
                        exec_id,
                        process_id,
                        pid,
                        binary_path: Some(bin.into()),
                        binary_sha256: exec.binary.as_ref().and_then(|b| b.sha256.clone()),
                        cgroup_path: Some(pod.cgroup.clone()),
                        workload: Some(workload),
                        ..Default::default()
                    });
                    EventBody::ProcessExec(exec)
                }
            };
            Event { id: format!("{stream}-{seq}"), kind: body.kind().into(), body: Some(body), ..Default::default() }
        })
    }
}

/// Where a fleet's batches come from: events generated before the clock starts (the
/// ingest figures measure the collector, not the generator), or, for runs too large to
/// hold in memory (10M events take about 24 GB as structs), generated while pushing.
enum Source {
    Ready(Vec<(String, std::sync::Arc<Vec<Event>>)>),
    Streamed(Vec<(String, usize)>),
}

/// Runs above this many events are generated while pushing.
const PREGENERATED_MAX: usize = 2_000_000;

fn stream_of(i: usize) -> String {
    format!("{:032x}", 0xb0a7_u128 + i as u128)
}

/// Pushes each agent's batches in order, agents concurrently; returns seconds taken.
async fn push_all(url: &str, source: &std::sync::Arc<Source>, batch: usize) -> Result<f64> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?.connect().await.context("connecting to the collector")?;
    let fleets = match &**source {
        Source::Ready(f) => f.len(),
        Source::Streamed(f) => f.len(),
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..fleets {
        let mut client = IngestClient::new(channel.clone()).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
        let source = source.clone();
        tasks.push(tokio::spawn(async move {
            let (node, mut batches): (String, Box<dyn Iterator<Item = Vec<Event>> + Send>) = match &*source {
                Source::Ready(f) => {
                    let (node, events) = f[i].clone();
                    let len = events.len();
                    (node, Box::new((0..len).step_by(batch.max(1)).map(move |at| events[at..(at + batch).min(len)].to_vec())))
                }
                Source::Streamed(f) => {
                    let (node, n) = f[i].clone();
                    let mut g = Generator::new(n, &node, &stream_of(i));
                    (node, Box::new(std::iter::from_fn(move || g.batch(batch))))
                }
            };
            let mut stored = 0u64;
            for chunk in &mut batches {
                let r = client.push(PushRequest { node: node.clone(), events: chunk, contract_version: CONTRACT_VERSION }).await?.into_inner();
                if r.rejected > 0 {
                    bail!("collector rejected {} events: {:?}", r.rejected, r.errors);
                }
                stored += u64::from(r.stored);
            }
            anyhow::Ok(stored)
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The baseline's two plain tables, strings inline, keyed by event id (the same DDL for
/// SQLite and PostgreSQL: BIGINT is an integer in both).
const RAW_TABLES: &str = "CREATE TABLE raw_exec (node TEXT, event_id TEXT, exec_id TEXT, process_id TEXT, run_id TEXT, pid BIGINT, ppid BIGINT, time TEXT,
        start_time TEXT, binary_path TEXT, sha256 TEXT, cgroup_path TEXT, comm TEXT, ancestry TEXT, PRIMARY KEY (node, event_id));
    CREATE TABLE raw_use (node TEXT, event_id TEXT, time TEXT, exec_id TEXT, run_id TEXT, dest_ip TEXT, dest_port BIGINT, host TEXT,
        method TEXT, path TEXT, detector INTEGER, class INTEGER, lifetime BIGINT, fingerprint TEXT, access_key_id TEXT, PRIMARY KEY (node, event_id));";

/// Bytes the database's live pages take (WAL frames included), read through SQLite.
fn db_bytes(path: &Path) -> Result<u64> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let (pages, free, size): (i64, i64, i64) =
        conn.query_row("SELECT * FROM pragma_page_count, pragma_freelist_count, pragma_page_size", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(u64::try_from((pages - free) * size).unwrap_or(0))
}

/// The baseline: the same rows, strings inline, into two plain tables keyed by event id,
/// one transaction per batch, with the collector's durability settings.
fn raw_insert(path: &Path, fleets: &[(String, &[Event])], batch: usize) -> Result<f64> {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(RAW_TABLES)?;
    let start = Instant::now();
    for (node, events) in fleets {
        for chunk in events.chunks(batch) {
            let tx = conn.transaction()?;
            for e in chunk {
                match &e.body {
                    Some(EventBody::ProcessExec(v)) => {
                        let w = v.workload.clone().unwrap_or_default();
                        let b = v.binary.clone().unwrap_or_default();
                        tx.prepare_cached("INSERT INTO raw_exec VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)")?.execute(params![
                            node,
                            e.id,
                            v.exec_id,
                            v.process_id,
                            w.container_id,
                            v.pid,
                            v.ppid,
                            v.time,
                            v.start_time,
                            b.path,
                            b.sha256,
                            v.cgroup.as_ref().and_then(|c| c.path.clone()),
                            v.comm,
                            serde_json::to_string(&v.ancestry)?
                        ])?;
                    }
                    Some(EventBody::CredentialUse(v)) => {
                        let p = v.process.clone().unwrap_or_default();
                        let d = v.destination.clone().unwrap_or_default();
                        tx.prepare_cached("INSERT INTO raw_use VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)")?.execute(
                            params![
                                node,
                                e.id,
                                v.time,
                                p.exec_id,
                                p.workload.and_then(|w| w.container_id),
                                d.ip,
                                d.port,
                                d.host,
                                v.method,
                                v.path,
                                v.detector,
                                v.class,
                                v.lifetime_seconds,
                                v.fingerprint,
                                v.identifiers.as_ref().and_then(|i| i.access_key_id.clone())
                            ],
                        )?;
                    }
                    _ => {}
                }
            }
            tx.commit()?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The access key id of credential `c` (as the generator writes it).
fn access_key(c: u64) -> String {
    format!("{}{:016}", if c.is_multiple_of(3) { "AKIA" } else { "ASIA" }, c)
}

/// CloudTrail records of `n` calls made with the fleet's keys over the pushes' time span,
/// as delivered (one `Records` document).
fn cloudtrail(n: usize, span: i64) -> String {
    let mut rng = Lcg(0xc1a0);
    let t0 = 1_767_225_600;
    let records: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let key = access_key(rng.next(CREDENTIALS));
            json!({
                "eventVersion": "1.10", "eventID": format!("bench-{i:08}"), "eventTime": rfc3339(t0 + rng.next(span.max(1) as u64) as i64),
                "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": "us-east-1", "sourceIPAddress": "52.216.1.1",
                "userAgent": "aws-cli/2.17", "eventType": "AwsApiCall", "recipientAccountId": "111122223333",
                "userIdentity": {"type": "IAMUser", "principalId": "AIDABENCH", "arn": "arn:aws:iam::111122223333:user/bench", "accountId": "111122223333", "accessKeyId": key},
            })
        })
        .collect();
    json!({"Records": records}).to_string()
}

/// p50 and p99 of `ms`, in milliseconds.
fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms.get(((ms.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
    ((at(0.50) * 100.0).round() / 100.0, (at(0.99) * 100.0).round() / 100.0)
}

/// Asks each query verb `n` times (random arguments from the fleet) and times the answers.
async fn query_latencies(url: &str, fleets: &[(String, usize)], actions: usize, n: usize) -> Result<serde_json::Value> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?.connect().await?;
    let mut client = QueryClient::new(channel).max_decoding_message_size(256 << 20);
    let runs: Vec<String> = fleets
        .iter()
        .enumerate()
        .flat_map(|(i, (node, n))| Generator::new(*n, node, &stream_of(i)).take(20_000))
        .filter_map(|e| match e.body {
            Some(EventBody::ProcessExec(v)) => v.workload.as_ref().and_then(|w| w.container_id.clone()).map(|c| format!("container:{c}")),
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut rng = Lcg(0x9e77);
    let mut out = serde_json::Map::new();
    for verb in ["trace", "who-used", "run", "posture", "static-credentials"] {
        let mut ms = Vec::with_capacity(n);
        let mut bytes = 0usize;
        for _ in 0..n {
            let argument = match verb {
                "trace" => format!("bench-{:08}", rng.next(actions.max(1) as u64)),
                "who-used" => access_key(rng.next(CREDENTIALS)),
                "run" => runs.get(rng.next(runs.len() as u64) as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            };
            let start = Instant::now();
            let r = client
                .ask(QueryRequest { name: verb.into(), argument: argument.clone(), ..Default::default() })
                .await
                .with_context(|| format!("{verb} {argument}"))?;
            ms.push(start.elapsed().as_secs_f64() * 1000.0);
            bytes += r.into_inner().json.len();
        }
        let (p50, p99) = percentiles(ms);
        out.insert(verb.into(), json!({"p50_ms": p50, "p99_ms": p99, "asked": n, "mean_answer_bytes": bytes / n.max(1)}));
    }
    Ok(serde_json::Value::Object(out))
}

/// Imports CloudTrail records through the collector's CLI (the collector keeps serving);
/// returns how many.
fn import_cloudtrail(collector: &Path, db: &str, n: usize, span: i64) -> Result<usize> {
    let file = std::env::temp_dir().join(format!("sigil-bench-cloudtrail-{}.json", std::process::id()));
    std::fs::write(&file, cloudtrail(n, span))?;
    let out = std::process::Command::new(collector).arg("--db").arg(db).args(["ingest", "cloudtrail"]).arg(&file).output()?;
    if !out.status.success() {
        bail!("importing CloudTrail: {}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = std::fs::remove_file(&file);
    Ok(n)
}

/// Bytes the collector's tables (or, `raw`, the baseline's) take in PostgreSQL, indexes
/// and TOAST included.
fn pg_bytes(url: &str, raw: bool) -> Result<u64> {
    let mut c = postgres::Client::connect(url, postgres::NoTls)?;
    let n: Option<i64> = c
        .query_one(
            "SELECT sum(pg_total_relation_size(c.oid))::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND (c.relname LIKE 'raw\\_%') = $1",
            &[&raw],
        )?
        .get(0);
    Ok(u64::try_from(n.unwrap_or(0)).unwrap_or(0))
}

/// The PostgreSQL baseline: the same rows as [`raw_insert`], into two plain tables keyed
/// by event id, one transaction per batch and one multi-row `INSERT ... SELECT FROM
/// unnest` per table (the fastest plain way to insert a batch without COPY).
fn raw_insert_pg(url: &str, fleets: &[(String, &[Event])], batch: usize) -> Result<f64> {
    let mut c = postgres::Client::connect(url, postgres::NoTls)?;
    c.batch_execute(&format!("DROP TABLE IF EXISTS raw_exec, raw_use; {RAW_TABLES}"))?;
    let start = Instant::now();
    for (node, events) in fleets {
        for chunk in events.chunks(batch) {
            let mut x: [Vec<Option<String>>; 11] = Default::default();
            let (mut pid, mut ppid) = (Vec::new(), Vec::new());
            let mut u: [Vec<Option<String>>; 10] = Default::default();
            let (mut port, mut det, mut class, mut life) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for e in chunk {
                match &e.body {
                    Some(EventBody::ProcessExec(v)) => {
                        let w = v.workload.clone().unwrap_or_default();
                        let b = v.binary.clone().unwrap_or_default();
                        let row = [
                            Some(e.id.clone()),
                            Some(v.exec_id.clone()),
                            Some(v.process_id.clone()),
                            w.container_id,
                            Some(v.time.clone()),
                            Some(v.start_time.clone()),
                            b.path,
                            b.sha256,
                            v.cgroup.as_ref().and_then(|c| c.path.clone()),
                            Some(v.comm.clone()),
                            Some(serde_json::to_string(&v.ancestry)?),
                        ];
                        for (col, val) in x.iter_mut().zip(row) {
                            col.push(val);
                        }
                        pid.push(i64::from(v.pid));
                        ppid.push(i64::from(v.ppid));
                    }
                    Some(EventBody::CredentialUse(v)) => {
                        let p = v.process.clone().unwrap_or_default();
                        let d = v.destination.clone().unwrap_or_default();
                        let row = [
                            Some(e.id.clone()),
                            Some(v.time.clone()),
                            Some(p.exec_id),
                            p.workload.and_then(|w| w.container_id),
                            d.ip,
                            d.host,
                            Some(v.method.clone()),
                            Some(v.path.clone()),
                            Some(v.fingerprint.clone()),
                            v.identifiers.as_ref().and_then(|i| i.access_key_id.clone()),
                        ];
                        for (col, val) in u.iter_mut().zip(row) {
                            col.push(val);
                        }
                        port.push(d.port.map(i64::from));
                        det.push(v.detector);
                        class.push(v.class);
                        life.push(v.lifetime_seconds);
                    }
                    _ => {}
                }
            }
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO raw_exec SELECT $1, u.* FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::text[],
                    $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[]) AS u",
                &[node, &x[0], &x[1], &x[2], &x[3], &pid, &ppid, &x[4], &x[5], &x[6], &x[7], &x[8], &x[9], &x[10]],
            )?;
            tx.execute(
                "INSERT INTO raw_use SELECT $1, u.* FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
                    $9::text[], $10::text[], $11::int4[], $12::int4[], $13::int8[], $14::text[], $15::text[]) AS u",
                &[node, &u[0], &u[1], &u[2], &u[3], &u[4], &port, &u[5], &u[6], &u[7], &det, &class, &life, &u[8], &u[9]],
            )?;
            tx.commit()?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Runs `f` on its own thread: the PostgreSQL client blocks on a runtime of its own,
/// which must not be started from inside this one.
fn blocking<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|_| bail!("the raw baseline panicked")))
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let per_agent = a.events / a.agents.max(1);
    let fleets: Vec<(String, usize)> = (0..a.agents.max(1)).map(|i| (format!("bench-node-{i}"), per_agent)).collect();
    let total = per_agent * a.agents.max(1);
    let source = std::sync::Arc::new(if total <= PREGENERATED_MAX {
        Source::Ready(
            fleets.iter().enumerate().map(|(i, (node, n))| (node.clone(), std::sync::Arc::new(Generator::new(*n, node, &stream_of(i)).collect()))).collect(),
        )
    } else {
        Source::Streamed(fleets.clone())
    });
    let ready: Vec<(String, &[Event])> = match &*source {
        Source::Ready(f) => f.iter().map(|(node, events)| (node.clone(), events.as_slice())).collect(),
        Source::Streamed(_) if a.no_raw => Vec::new(),
        Source::Streamed(_) => bail!("the raw baseline needs the events in memory: at most {PREGENERATED_MAX} events, or --no-raw"),
    };
    // The baseline runs before and after the pushes, and the ratio takes their mean: this
    // VM's speed drifts by tens of percent within minutes, and one baseline compared the
    // pushes with another moment's machine.
    let baseline = || -> Result<Option<f64>> {
        if a.no_raw {
            return Ok(None);
        }
        Ok(Some(if is_url(&a.db) { raw_insert_pg(&a.raw_db, &ready, a.batch)? } else { raw_insert(Path::new(&a.raw_db), &ready, a.batch)? }))
    };
    let raw_before = blocking(baseline)?;
    let grpc_seconds = push_all(&a.grpc, &source, a.batch).await?;
    let raw_after = blocking(baseline)?;
    let (grpc_bytes, raw_bytes) = if is_url(&a.db) {
        blocking(|| Ok((pg_bytes(&a.db, false)?, if a.no_raw { None } else { Some(pg_bytes(&a.raw_db, true)?) })))?
    } else {
        (db_bytes(Path::new(&a.db))?, if a.no_raw { None } else { Some(db_bytes(Path::new(&a.raw_db))?) })
    };
    let grpc_rate = total as f64 / grpc_seconds;
    let mut result = json!({
        "events": total,
        "batch": a.batch,
        "agents": a.agents,
        "mix": "3 process_exec : 1 credential_use",
        "grpc_events_per_second": grpc_rate.round(),
        "bytes_per_event": grpc_bytes / total as u64,
        "generated_while_pushing": matches!(*source, Source::Streamed(_)),
    });
    if let (Some(before), Some(after), Some(raw_bytes)) = (raw_before, raw_after, raw_bytes) {
        let raw_rate = total as f64 / ((before + after) / 2.0);
        result["raw_insert_rows_per_second"] = json!(raw_rate.round());
        result["raw_insert_rows_per_second_before_and_after"] = json!([(total as f64 / before).round(), (total as f64 / after).round()]);
        result["ratio_to_raw"] = json!((grpc_rate / raw_rate * 1000.0).round() / 1000.0);
        result["raw_bytes_per_event"] = json!(raw_bytes / total as u64);
    }
    if a.queries > 0 {
        let collector = a.collector_bin.as_deref().context("--queries needs --collector-bin")?;
        let span = (per_agent / 50) as i64;
        let actions = import_cloudtrail(collector, &a.db, 10_000, span)?;
        result["cloud_actions"] = json!(actions);
        result["queries"] = query_latencies(&a.grpc, &fleets, actions, a.queries).await?;
    }
    println!("{result}");
    Ok(())
}
