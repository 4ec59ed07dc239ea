//! `sigil-agent`: thin entry point; the work lives in the library modules.

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use clap::Parser;
use sigil_agent::{
    cli::{Cli, Cmd},
    daemon::{self, StartError},
    ebpf::features::KernelFeatures,
    issue::client,
};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Telemetry exists before logging starts, so spans reach OTLP from the first one.
    let telemetry = match telemetry_for(&cli) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sigil-agent: {e:#}");
            return ExitCode::from(64);
        }
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry().with(filter).with(fmt).with(telemetry.as_ref().and_then(|t| t.tracing_layer())).init();
    match real_main(cli, telemetry) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the whole cause chain, no backtrace, no panic.
            eprintln!("sigil-agent: {e:#}");
            let code = e.downcast_ref::<StartError>().map_or(1, StartError::exit_code);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

/// Metrics, traces and logs, when `run` asks for a metrics endpoint or an OTLP endpoint.
fn telemetry_for(cli: &Cli) -> anyhow::Result<Option<Arc<sigil_telemetry::Telemetry>>> {
    let Cmd::Run(args) = &cli.cmd else { return Ok(None) };
    let cfg = args.config()?;
    if cfg.metrics_listen.is_none() && cfg.telemetry.otlp_endpoint.is_none() {
        return Ok(None);
    }
    Ok(Some(Arc::new(sigil_telemetry::Telemetry::new("sigil-agent", &cfg.node, &cfg.telemetry)?)))
}

fn real_main(cli: Cli, telemetry: Option<Arc<sigil_telemetry::Telemetry>>) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Probe => {
            println!("{}", KernelFeatures::probe());
            Ok(())
        }
        Cmd::Families(args) => {
            print!("{}", sigil_agent::trace::catalogue::catalogue().listing(args.json)?);
            Ok(())
        }
        Cmd::Token(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            if let Some(n) = args.repeat {
                let aud = args.audience.first().cloned().unwrap_or_default();
                let m = rt.block_on(client::measure(&args.socket, &aud, n.max(1), args.distinct_audiences, args.clients))?;
                println!("{}", serde_json::json!({"n": n, "clients": args.clients, "p50_us": m.p50_us, "p99_us": m.p99_us, "tokens_per_s": m.tokens_per_s}));
                return Ok(());
            }
            let svids = rt.block_on(client::fetch_jwt(&args.socket, args.audience, args.spiffe_id))?;
            for (_, token) in &svids {
                println!("{token}");
            }
            Ok(())
        }
        Cmd::TokenFile(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(sigil_agent::bridge::token_file::run(args))
        }
        Cmd::CredentialProcess(args) => {
            println!("{}", sigil_agent::bridge::credential_process(&args)?);
            Ok(())
        }
        Cmd::HashBench { file, repeat } => {
            println!("{}", sigil_agent::attest::hash_bench::measure(&file, repeat)?);
            Ok(())
        }
        Cmd::SignBench { repeat } => {
            println!("{}", sigil_agent::issue::sign_bench::measure(repeat)?);
            Ok(())
        }
        Cmd::Run(args) => {
            let cfg = args.config()?;
            let stop = Arc::new(AtomicBool::new(false));
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let flag = stop.clone();
            rt.spawn(async move {
                wait_for_shutdown().await;
                flag.store(true, Ordering::Relaxed);
            });
            // The event pipeline is blocking by design (see daemon.rs) and runs on its own
            // thread; the runtime serves the Workload API and watches for signals.
            let handle = rt.handle().clone();
            let worker = std::thread::Builder::new().name("attest".into()).spawn(move || daemon::run(cfg, stop, handle, telemetry))?;
            let result = rt.block_on(async { tokio::task::spawn_blocking(move || worker.join()).await });
            match result {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => anyhow::bail!("the attestation thread panicked"),
                Err(e) => Err(e.into()),
            }
        }
    }
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else { return };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
