//! Command line.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    daemon::{IssuanceConfig, RunConfig, TraceConfig, default_node_name},
    k8s::watch::{ApiSource, WatchConfig},
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
    /// Benchmark: SHA-256 throughput of the agent's hasher on FILE and the cost of a
    /// hash-cache hit, as JSON (`cargo xtask bench`).
    #[command(hide = true)]
    HashBench {
        file: PathBuf,
        /// Full hashes to time (the fastest counts).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Benchmark: the cost of one ES256 signature and of one whole JWT-SVID, as JSON
    /// (`cargo xtask bench` sets the Workload API's latency against it).
    #[command(hide = true)]
    SignBench {
        /// Signatures to time (the mean counts).
        #[arg(long, default_value_t = 2000)]
        repeat: u32,
    },
    /// List the credential families Sigil names, and where each is looked for.
    Families(FamiliesArgs),
    /// Keep a token file fresh for SDKs that read one (AWS web identity, GCP external
    /// account); prints the environment to set.
    TokenFile(crate::bridge::args::TokenFileArgs),
    /// AWS `credential_process`: exchange this workload's token at STS and print the
    /// temporary credentials as JSON.
    CredentialProcess(crate::bridge::args::CredentialProcessArgs),
}

#[derive(Args, Debug)]
pub struct FamiliesArgs {
    /// One JSON object per family instead of a table.
    #[arg(long)]
    pub json: bool,
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
    /// Benchmark: fetch this many times over one connection and print the p50/p99
    /// latency as JSON instead of tokens (`cargo xtask bench`).
    #[arg(long, hide = true)]
    pub repeat: Option<usize>,
    /// With --repeat: a new audience for every fetch, so no cache can answer.
    #[arg(long, hide = true, requires = "repeat")]
    pub distinct_audiences: bool,
    /// With --repeat: this many connections fetching at the same time (throughput).
    #[arg(long, hide = true, requires = "repeat", default_value_t = 1)]
    pub clients: usize,
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
    /// Threads that can be inside a TLS write at once and still be captured (the kernel's
    /// per-thread TLS call map, LRU; losses are counted as kernel drops).
    #[arg(long, default_value_t = agent_common::TLS_CALLS_ENTRIES, hide = true)]
    pub tls_calls_entries: u32,
    /// Kernel BTF giving the struct layouts the exec program follows to the executable's
    /// inode (another file for a kernel built without BTF, e.g. from BTFHub). Unreadable:
    /// every exec's executable is stat'ed through procfs instead.
    #[arg(long, default_value = crate::ebpf::kernel_layout::VMLINUX_BTF)]
    pub kernel_btf: std::path::PathBuf,
    /// Binary digests kept in memory.
    #[arg(long, default_value_t = 8192)]
    pub hash_cache_entries: usize,
    /// Executables larger than this are not hashed (the record says so).
    #[arg(long, default_value_t = 1 << 30)]
    pub max_hash_bytes: u64,
    /// Bytes of large executables (over 16 MiB) waiting to be hashed at most; past it a
    /// record says `hash_skipped: queue_full` (hashing never holds up the event loop).
    #[arg(long, default_value_t = 4 << 30)]
    pub hash_queue_bytes: u64,
    /// Where the kubelet or container runtimes create cgroups besides the cgroup root
    /// (repeatable; `*` matches within one path component, e.g.
    /// `/system.slice/docker-*.scope` for kind nodes). Pod and container names anywhere
    /// else are not trusted.
    #[arg(long = "cgroup-root-prefix")]
    pub cgroup_root_prefixes: Vec<String>,
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
    #[arg(long, requires = "policy", conflicts_with = "kubernetes")]
    pub pods: Option<PathBuf>,
    /// Read this node's pods (namespace, service account, name, labels, owner) from the
    /// Kubernetes API server: in-cluster credentials unless --kubeconfig or --kube-api.
    #[arg(long)]
    pub kubernetes: bool,
    /// Kubeconfig for the API server (implies --kubernetes).
    #[arg(long, conflicts_with = "kube_api")]
    pub kubeconfig: Option<PathBuf>,
    /// API server URL without credentials, e.g. a local test server or `kubectl proxy`
    /// (implies --kubernetes).
    #[arg(long)]
    pub kube_api: Option<String>,
    /// How long a token request from a pod waits for the pod watch to deliver that pod,
    /// in milliseconds, before it is refused as pod_metadata_unavailable.
    #[arg(long, default_value_t = 2000)]
    pub pod_wait_ms: u64,
    /// Workload API socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Address of the OIDC discovery endpoint (issuer document and JWKS).
    #[arg(long, default_value = "127.0.0.1:8444")]
    pub oidc_listen: SocketAddr,
    /// Issuer URL written into tokens (`iss`); default http://<oidc-listen>.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Fleet mode: have tokens signed by the cluster signer at this URL (the collector;
    /// https:// with the --collector-ca/--collector-cert/--collector-key files, or
    /// http:// on loopback). Without it the agent signs with its own in-memory keys.
    #[arg(long, env = "SIGIL_SIGNER_URL", requires = "policy")]
    pub signer: Option<String>,
    /// Seconds between signing-key rotations.
    #[arg(long, default_value_t = 3600)]
    pub key_rotation_seconds: u64,
    #[command(flatten)]
    pub workload_api: crate::issue::limits::WorkloadApiLimits,
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
        // The collector and the cluster signer are reached with the same mTLS identity.
        let remote = |url: &String| CollectorConfig {
            url: url.clone(),
            ca: self.collector_ca.clone(),
            cert: self.collector_cert.clone(),
            key: self.collector_key.clone(),
            spool_dir: self.state_dir.join("spool"),
            spool_bytes: self.spool_bytes,
        };
        let issuance = self.policy.as_ref().map(|policy| IssuanceConfig {
            policy: policy.clone(),
            pods: self.pods.clone(),
            socket: self.socket.clone(),
            oidc_listen: self.oidc_listen,
            issuer_url: self.issuer.clone().map(|u| u.trim_end_matches('/').to_owned()).unwrap_or_else(|| format!("http://{}", self.oidc_listen)),
            key_rotation: Duration::from_secs(self.key_rotation_seconds),
            limits: self.workload_api.clone(),
            signer: self.signer.as_ref().map(remote),
        });
        if let Some(url) = &self.signer {
            crate::stream::exporter::check_transport(url)?;
        }
        let trace = (!self.no_trace).then(|| TraceConfig { fingerprint_key: self.fingerprint_key_file.clone(), state_dir: self.state_dir.clone() });
        if let Some(url) = &self.collector {
            crate::stream::exporter::check_transport(url)?;
        }
        let kubernetes = self.kubernetes_config()?;
        let collector = self.collector.as_ref().map(remote);
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
            tls_calls_entries: self.tls_calls_entries.max(1),
            kernel_btf: self.kernel_btf.clone(),
            hash_cache_entries: self.hash_cache_entries,
            max_hash_bytes: self.max_hash_bytes,
            hash_queue_bytes: self.hash_queue_bytes,
            layouts: crate::attest::workload::Layouts::new(&self.cgroup_root_prefixes)?,
            stats_interval: (self.stats_interval > 0).then(|| Duration::from_secs(self.stats_interval)),
            scan: !self.no_scan,
            kubernetes,
        })
    }

    fn kubernetes_config(&self) -> anyhow::Result<Option<WatchConfig>> {
        // Checked here, before anything is loaded, so a misconfiguration exits with 64.
        let api = match (&self.kubeconfig, &self.kube_api) {
            (Some(path), _) => {
                std::fs::metadata(path).map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?;
                ApiSource::Kubeconfig(path.clone())
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    anyhow::bail!("--kube-api {url:?} must be an http:// or https:// URL");
                }
                ApiSource::Url(url.clone())
            }
            (None, None) if self.kubernetes => {
                if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
                    anyhow::bail!(
                        "--kubernetes without --kubeconfig or --kube-api needs in-cluster credentials, and KUBERNETES_SERVICE_HOST is not set (not running in a pod?)"
                    );
                }
                ApiSource::InCluster
            }
            (None, None) => return Ok(None),
        };
        if self.pods.is_some() {
            anyhow::bail!("--pods and the API server (--kubernetes, --kubeconfig, --kube-api) are alternatives; pass one");
        }
        Ok(Some(WatchConfig { api, pod_wait: Duration::from_millis(self.pod_wait_ms) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> anyhow::Result<RunConfig> {
        let cli = Cli::try_parse_from([&["sigil-agent", "run", "--stdout"][..], args].concat())?;
        let Cmd::Run(run) = cli.cmd else { anyhow::bail!("not run") };
        run.config()
    }

    #[test]
    fn pod_metadata_sources_are_checked_before_anything_is_loaded() {
        let k = config(&["--kube-api", "http://127.0.0.1:6443", "--pod-wait-ms", "500"]).expect("valid").kubernetes.expect("on");
        assert_eq!(k.api, ApiSource::Url("http://127.0.0.1:6443".into()));
        assert_eq!(k.pod_wait, Duration::from_millis(500));
        assert!(config(&[]).expect("valid").kubernetes.is_none());
        let bad = config(&["--kube-api", "127.0.0.1:6443"]).expect_err("no scheme");
        assert!(bad.to_string().contains("http://"), "{bad}");
        let missing = config(&["--kubeconfig", "/nonexistent/kubeconfig"]).expect_err("missing file");
        assert!(missing.to_string().contains("/nonexistent/kubeconfig"), "{missing}");
        assert!(config(&["--policy", "p.toml", "--pods", "pods.toml", "--kubernetes"]).is_err(), "--pods or the API server, not both");
        assert!(config(&["--policy", "p.toml", "--pods", "pods.toml", "--kube-api", "http://a"]).is_err());
    }
}
