//! Command line.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::daemon::{RunConfig, default_node_name};

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
pub enum Cmd {
    /// Load the eBPF programs and attest every process on this node.
    Run(RunArgs),
    /// Report which eBPF program types this kernel accepts, and exit.
    Probe,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Print each identity event as one JSON line on stdout.
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
}

impl RunArgs {
    pub fn config(&self) -> anyhow::Result<RunConfig> {
        if !self.stdout {
            anyhow::bail!("no output configured: pass --stdout (collector streaming is not available yet)");
        }
        if !self.ring_buffer_bytes.is_power_of_two() || self.ring_buffer_bytes < 4096 {
            anyhow::bail!("--ring-buffer-bytes must be a power of two of at least 4096, got {}", self.ring_buffer_bytes);
        }
        Ok(RunConfig {
            node: self.node_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(default_node_name),
            ring_buffer_bytes: self.ring_buffer_bytes,
            hash_cache_entries: self.hash_cache_entries,
            max_hash_bytes: self.max_hash_bytes,
            stats_interval: (self.stats_interval > 0).then(|| Duration::from_secs(self.stats_interval)),
            scan: !self.no_scan,
        })
    }
}
