//! `cargo xtask`: the only entry point a fresh machine needs.
//!
//! Every subcommand provisions what it uses (nightly `rust-src`, a bpf-linker built against
//! the nightly toolchain's own libLLVM, Debian packages) so that the README's two commands
//! work on a clean machine, and caches it so the second run costs seconds.
#![forbid(unsafe_code)]

mod bench;
mod bench_cloud;
mod bench_exec;
mod bench_issue;
mod build;
mod demo;
mod peers;
// The integration tests' loopback port picker and throwaway PostgreSQL server (std + anyhow
// only), for the benches.
#[path = "../../tests/src/ports.rs"]
mod ports;
#[path = "../../tests/src/postgres_server.rs"]
mod postgres_server;
mod provision;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, provision, demo and test Sigil")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the eBPF toolchain pieces (idempotent, cached).
    Provision,
    /// Build the eBPF object only.
    BuildEbpf,
    /// Build the eBPF object and every binary.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run the demo: the agent attesting demo workloads in demo cgroups.
    Demo,
    /// Measure what the agent costs the workloads it watches (ratios against a baseline),
    /// and collector ingest against a raw SQLite insert, and
    /// CloudTrail ingest at scale; figures also go to
    /// target/bench/results.json.
    Bench {
        /// Smaller runs (fewer rounds and events): a quick check, not the published figures.
        #[arg(long)]
        quick: bool,
        /// Run one benchmark only: `agent`, `ingest`, `queries` or `cloudtrail`.
        #[arg(long)]
        only: Option<String>,
        /// Query latencies at 10M events too (about 3 GB of database, some minutes).
        #[arg(long)]
        full: bool,
    },
    /// Run the whole test suite: unit tests, then the root-only kernel integration tests.
    Test {
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Provision => provision::toolchain().map(|_| ()),
        Cmd::BuildEbpf => build::ebpf().map(|_| ()),
        Cmd::Build { release } => build::all(release).map(|_| ()),
        Cmd::Demo => demo::run(),
        Cmd::Bench { quick, only, full } => bench::run(quick, full, only.as_deref()),
        Cmd::Test { args } => test::run(&args),
    }
}
