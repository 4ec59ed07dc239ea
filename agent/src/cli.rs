//! Command line.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    daemon::{IssuanceConfig, RunConfig, TraceConfig, default_node_name},
    stream::exporter::CollectorConfig,
};

#[derive(Parser, Debug)]
#[command(name = "sigil-agent", version, about = "Sigil node agent: eBPF process attestation")]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax); logs go to stderr.
    #[arg(long, env = "SIGIL_LOG", default_value = "info", global = true)]
    pub log: String,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up; boxing buys nothing
pub enum Cmd {
    /// Load the eBPF programs and attest every process on this node.
    Run(RunArgs),
    /// Report which eBPF program types this kernel accepts, and exit.
    Probe,
    /// Ask the local agent for a JWT-SVID and print it (for scripts and demos).
    Token(TokenArgs),
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Audience the token is for (repeatable; at least one).
    #[arg(long, required = true)]
    pub audience: Vec<String>,
    /// Workload API socket.
    #[arg(long, env = "SIGIL_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Only this SPIFFE ID (default: every ID this process is entitled to).
    #[arg(long)]
    pub spiffe_id: Option<String>,
}

pub const DEFAULT_SOCKET: &str = "/run/sigil/workload.sock";

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Print each identity event as one JSON line on stdout (also with --collector).
    #[arg(long)]
    pub stdout: bool,
    /// Node name recorded in every event.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Ring-buffer size in bytes (a power of two, multiple of the page size).
    #[arg(long, default_value_t = 4 << 20)]
    pub ring_buffer_bytes: u32,
    /// Binary digests kept in memory.
    #[arg(long, default_value_t = 8192)]
    pub hash_cache_entries: usize,
    /// Executables larger than this are not hashed (the record says so).
    #[arg(long, default_value_t = 1 << 30)]
    pub max_hash_bytes: u64,
    /// Emit an `agent_stats` event this often, in seconds (0: only at shutdown).
    #[arg(long, default_value_t = 60)]
    pub stats_interval: u64,
    /// Do not attest the processes that were running before the agent started.
    #[arg(long)]
    pub no_scan: bool,
    /// Registration entries (TOML). Token issuance runs only when this is given.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Pod namespace and service account by pod UID (TOML), for nodes where the agent
    /// does not ask an API server.
    #[arg(long, requires = "policy")]
    pub pods: Option<PathBuf>,
    /// Workload API socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Address of the OIDC discovery endpoint (issuer document and JWKS).
    #[arg(long, default_value = "127.0.0.1:8444")]
    pub oidc_listen: SocketAddr,
    /// Issuer URL written into tokens (`iss`); default http://<oidc-listen>.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Seconds between signing-key rotations.
    #[arg(long, default_value_t = 3600)]
    pub key_rotation_seconds: u64,
    /// Do not trace credential use (TLS/HTTP captures, credential files).
    #[arg(long)]
    pub no_trace: bool,
    /// Per-cluster key for credential fingerprints (16+ bytes; share it across nodes).
    #[arg(long, env = "SIGIL_FINGERPRINT_KEY_FILE")]
    pub fingerprint_key_file: Option<PathBuf>,
    /// Agent state (a generated fingerprint key, the event spool).
    #[arg(long, default_value = "/var/lib/sigil")]
    pub state_dir: PathBuf,
    /// Stream events to this collector (gRPC): http://127.0.0.1:50051 on loopback,
    /// https://... with --collector-ca elsewhere. Several replicas (sharing one PostgreSQL
    /// store): their URLs separated by commas; the agent fails over between them.
    #[arg(long, env = "SIGIL_COLLECTOR_URL")]
    pub collector: Option<String>,
    /// CA certificate (PEM) that signed the collector's certificate.
    #[arg(long, requires = "collector")]
    pub collector_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) this agent presents to the collector.
    #[arg(long, requires_all = ["collector", "collector_key"])]
    pub collector_cert: Option<PathBuf>,
    #[arg(long, requires = "collector_cert")]
    pub collector_key: Option<PathBuf>,
    /// On-disk spool for events the collector has not acknowledged yet.
    #[arg(long, default_value_t = 256 << 20)]
    pub spool_bytes: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9464 in a DaemonSet).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Push metrics over OTLP/HTTP to this endpoint (e.g. http://otel-collector:4318).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Seconds between OTLP pushes.
    #[arg(long, default_value_t = 30)]
    pub otlp_interval_seconds: u64,
}

impl RunArgs {
    pub fn config(&self) -> anyhow::Result<RunConfig> {
        if !self.stdout && self.collector.is_none() {
            anyhow::bail!("no output configured: pass --stdout and/or --collector URL");
        }
        if !self.ring_buffer_bytes.is_power_of_two() || self.ring_buffer_bytes < 4096 {
            anyhow::bail!("--ring-buffer-bytes must be a power of two of at least 4096, got {}", self.ring_buffer_bytes);
        }
        if self.key_rotation_seconds == 0 {
            anyhow::bail!("--key-rotation-seconds must be at least 1");
        }
        let issuance = self.policy.as_ref().map(|policy| IssuanceConfig {
            policy: policy.clone(),
            pods: self.pods.clone(),
            socket: self.socket.clone(),
            oidc_listen: self.oidc_listen,
            issuer_url: self
                .issuer
                .clone()
                .map(|u| u.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| format!("http://{}", self.oidc_listen)),
            key_rotation: Duration::from_secs(self.key_rotation_seconds),
        });
        let trace = (!self.no_trace)
            .then(|| TraceConfig { fingerprint_key: self.fingerprint_key_file.clone(), state_dir: self.state_dir.clone() });
        if let Some(url) = &self.collector {
            crate::stream::exporter::check_transport(url)?;
        }
        let collector = self.collector.as_ref().map(|url| CollectorConfig {
            url: url.clone(),
            ca: self.collector_ca.clone(),
            cert: self.collector_cert.clone(),
            key: self.collector_key.clone(),
            spool_dir: self.state_dir.join("spool"),
            spool_bytes: self.spool_bytes,
        });
        Ok(RunConfig {
            metrics_listen: self.metrics_listen,
            telemetry: sigil_telemetry::TelemetryConfig {
                otlp_endpoint: self.otlp_endpoint.clone(),
                export_interval: Duration::from_secs(self.otlp_interval_seconds.max(1)),
            },
            stdout: self.stdout,
            collector,
            issuance,
            trace,
            node: self.node_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(default_node_name),
            ring_buffer_bytes: self.ring_buffer_bytes,
            hash_cache_entries: self.hash_cache_entries,
            max_hash_bytes: self.max_hash_bytes,
            stats_interval: (self.stats_interval > 0).then(|| Duration::from_secs(self.stats_interval)),
            scan: !self.no_scan,
        })
    }
}
