//! Sigil collector. Ingest, store, correlation and queries arrive with the collector issue;
//! until then the binary only parses its command line, so the workspace builds end to end.
#![forbid(unsafe_code)]

use clap::Parser;

/// Stores identity events from agents and attributes cloud actions to workload runs.
#[derive(Parser, Debug)]
#[command(name = "sigil-collector", version)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("sigil-collector: no subcommands are implemented yet (see the collector issue)")
}
