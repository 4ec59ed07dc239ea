//! `sigil-collector`: stores agents' identity events and attributes cloud actions.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sigil_collector::{
    cloud::{Limits, Provider, ingest},
    http_auth::ApiAuth,
    server::{self, RequestLimits, ServerConfig, SharedStore, TlsFiles},
    sign::SignerArgs,
    store::sqlite::now_unix,
};
use tracing::{error, info};

#[derive(Parser)]
#[command(name = "sigil-collector", version, about = "Stores identity events and attributes cloud actions to workload runs")]
struct Cli {
    /// The store: the path of the embedded SQLite file, or `postgres://user@host:port/db`
    /// for a PostgreSQL database shared by several collector replicas.
    #[arg(long, env = "SIGIL_DB", default_value = "/var/lib/sigil/collector.db", global = true)]
    db: String,
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once at start-up: the size of `Serve` costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Serve agent ingest (gRPC) and queries (gRPC and HTTP/JSON).
    Serve {
        #[arg(long, default_value = "127.0.0.1:50051")]
        grpc_listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8080")]
        http_listen: SocketAddr,
        /// Server certificate (PEM) for mTLS with agents; required off loopback.
        #[arg(long, requires_all = ["tls_key", "client_ca"])]
        tls_cert: Option<PathBuf>,
        #[arg(long)]
        tls_key: Option<PathBuf>,
        /// CA that agents' client certificates must chain to.
        #[arg(long)]
        client_ca: Option<PathBuf>,
        /// Delete what is older than this many days (0 keeps everything).
        #[arg(long, default_value_t = 30)]
        retention_days: u64,
        /// Push metrics over OTLP/HTTP to this endpoint (metrics are always at /metrics
        /// on the HTTP port).
        #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
        otlp_endpoint: Option<String>,
        #[arg(long, default_value_t = 30)]
        otlp_interval_seconds: u64,
        /// Largest gRPC message (agent batch or query) accepted; larger ones are refused
        /// with OUT_OF_RANGE.
        #[arg(long, default_value_t = RequestLimits::default().max_grpc_message_bytes)]
        max_grpc_message_bytes: usize,
        /// Largest HTTP audit-log upload (/v1/ingest/*) accepted; larger ones get a 413.
        #[arg(long, default_value_t = RequestLimits::default().max_ingest_body_bytes)]
        max_ingest_body_bytes: usize,
        /// Bearer token (16+ characters) that grants the HTTP API (queries, uploads).
        #[arg(long, env = "SIGIL_HTTP_TOKEN_FILE")]
        http_token_file: Option<PathBuf>,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Rotate the cluster signer's keys now (running replicas pick it up within seconds).
    /// Refused while a retired key is still needed to verify unexpired tokens.
    RotateKeys {
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Ingest cloud audit logs from files. Kept as evidence: retention ages imports by
    /// when they were ingested, not by when the calls happened.
    Ingest {
        #[command(subcommand)]
        what: IngestCmd,
        /// Largest file (and largest decompressed document) read; larger files are named
        /// and skipped.
        #[arg(long, global = true, default_value_t = Limits::default().max_file_bytes)]
        max_file_bytes: u64,
        /// Largest single record; larger records are reported and skipped.
        #[arg(long, global = true, default_value_t = Limits::default().max_record_bytes)]
        max_record_bytes: usize,
    },
}

#[derive(Subcommand)]
enum IngestCmd {
    /// AWS CloudTrail log files ({"Records":[...]}, gzipped or not, JSON lines, Logstash or
    /// OpenSearch exports) or a directory of them (judged by content, whatever the name).
    Cloudtrail { path: PathBuf },
    /// GCP Cloud Audit Log entries (JSON lines or a JSON array), a file or a directory.
    GcpAudit { path: PathBuf },
}

fn main() -> ExitCode {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt};
    let cli = Cli::parse();
    // Telemetry before logging, so spans reach OTLP from the first one.
    let telemetry = match &cli.cmd {
        Cmd::Serve { otlp_endpoint, otlp_interval_seconds, .. } => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let cfg = sigil_telemetry::TelemetryConfig {
                otlp_endpoint: otlp_endpoint.clone(),
                export_interval: Duration::from_secs((*otlp_interval_seconds).max(1)),
            };
            match sigil_telemetry::Telemetry::new("sigil-collector", host.trim(), &cfg) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    eprintln!("sigil-collector: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Cmd::Ingest { .. } | Cmd::RotateKeys { .. } => None,
    };
    tracing_subscriber::registry()
        .with(log_filter())
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(telemetry.as_ref().and_then(|t| t.tracing_layer()))
        .init();
    match real_main(cli, telemetry) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sigil-collector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What is logged: `SIGIL_LOG` (as the agent reads it), else `RUST_LOG` (what an operator
/// of any Rust service sets first, e.g. `RUST_LOG=warn` to quiet it), else `info`.
fn log_filter() -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    EnvFilter::try_from_env("SIGIL_LOG").or_else(|_| EnvFilter::try_from_default_env()).unwrap_or_else(|_| EnvFilter::new("info"))
}

fn real_main(cli: Cli, telemetry: Option<Arc<sigil_telemetry::Telemetry>>) -> Result<ExitCode> {
    let store: SharedStore = sigil_collector::store::open(&cli.db)?;
    match cli.cmd {
        Cmd::Ingest { what, max_file_bytes, max_record_bytes } => {
            let (provider, path) = match what {
                IngestCmd::Cloudtrail { path } => (Provider::Aws, path),
                IngestCmd::GcpAudit { path } => (Provider::Gcp, path),
            };
            let limits = Limits { max_file_bytes, max_record_bytes };
            // Each bad record and each file left out on its own line, then the summary:
            // nothing valid is dropped, nothing is left out silently.
            let started = std::time::Instant::now();
            let totals = ingest::ingest_path(&*store, provider, &path, &limits, &mut |n| eprintln!("{n}"))?;
            let stored_in = started.elapsed();
            let links = store.correlate()?;
            println!(
                "ingested {} cloud actions ({} already stored), {} skipped with errors, {} new attribution links (read and stored in {:.2}s, correlated in {:.2}s)",
                totals.stored,
                totals.duplicates,
                totals.record_errors,
                links.len(),
                stored_in.as_secs_f64(),
                (started.elapsed() - stored_in).as_secs_f64()
            );
            if totals.skipped_files > 0 {
                println!("{} files not ingested (each named above with the reason)", totals.skipped_files);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::RotateKeys { signer } => {
            anyhow::ensure!(signer.signer_kek_file.is_some(), "rotate-keys needs --signer-kek-file (keys kept in memory rotate only inside their process)");
            let keys = signer.key_store(std::path::Path::new(&cli.db))?;
            let before = keys.current_kid().unwrap_or_default();
            keys.maintain(now_unix(), true)?;
            println!("rotated: {before} retired, {} signs now", keys.current_kid().unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Serve {
            grpc_listen,
            http_listen,
            tls_cert,
            tls_key,
            client_ca,
            retention_days,
            http_token_file,
            signer,
            max_grpc_message_bytes,
            max_ingest_body_bytes,
            ..
        } => {
            let http_auth = ApiAuth::from_file(http_token_file.as_deref())?;
            let signer = signer.setup(std::path::Path::new(&cli.db))?;
            let limits = RequestLimits { max_grpc_message_bytes, max_ingest_body_bytes, ..RequestLimits::default() };
            let telemetry = telemetry.context("telemetry is created for serve")?;
            let tls = match (tls_cert, tls_key, client_ca) {
                (Some(cert), Some(key), Some(client_ca)) => Some(TlsFiles { cert, key, client_ca }),
                _ => None,
            };
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async move {
                if retention_days > 0 {
                    let s = store.clone();
                    tokio::spawn(async move {
                        loop {
                            let before = now_unix() - (retention_days as i64) * 86_400;
                            let s2 = s.clone();
                            match tokio::task::spawn_blocking(move || s2.retain(before)).await {
                                Ok(Ok(n)) if n > 0 => info!("retention: deleted {n} rows older than {retention_days} days"),
                                Ok(Err(e)) => error!("retention: {e}"),
                                _ => {}
                            }
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                    });
                }
                let shutdown = async {
                    use tokio::signal::unix::{SignalKind, signal};
                    match signal(SignalKind::terminate()) {
                        Ok(mut term) => {
                            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
                        }
                        Err(_) => {
                            let _ = tokio::signal::ctrl_c().await;
                        }
                    }
                };
                let result = server::serve(
                    ServerConfig { grpc: grpc_listen, http: http_listen, tls, telemetry: telemetry.clone(), signer, http_auth, limits },
                    store,
                    shutdown,
                )
                .await;
                telemetry.flush();
                result
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
