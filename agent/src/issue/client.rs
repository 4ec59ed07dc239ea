//! A minimal Workload API client, for `sigil-agent token` (shell scripts, demos, tests).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use sigil_proto::spiffe::{JwtsvidRequest, spiffe_workload_api_client::SpiffeWorkloadApiClient};
use tokio::net::UnixStream;
use tonic::{Request, metadata::MetadataValue, transport::Endpoint};

use super::workload_api::SECURITY_HEADER;

/// Connects to the agent's Workload API at `socket`.
async fn connect(socket: &Path) -> Result<SpiffeWorkloadApiClient<tonic::transport::Channel>> {
    let path: PathBuf = socket.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://workload-api.invalid")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("connecting to the Workload API at {}", socket.display()))?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

async fn fetch_with(
    client: &mut SpiffeWorkloadApiClient<tonic::transport::Channel>,
    audience: Vec<String>,
    spiffe_id: Option<String>,
) -> Result<Vec<(String, String)>> {
    let mut req = Request::new(JwtsvidRequest { audience, spiffe_id: spiffe_id.unwrap_or_default() });
    req.metadata_mut().insert(SECURITY_HEADER, MetadataValue::from_static("true"));
    // The gRPC code first (e.g. "Unavailable: ..."), so scripts can tell retryable from refused.
    let resp = client.fetch_jwtsvid(req).await.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    Ok(resp.into_inner().svids.into_iter().map(|s| (s.spiffe_id, s.svid)).collect())
}

/// Fetches JWT-SVIDs for `audience` from the agent at `socket`; returns (spiffe id, token).
pub async fn fetch_jwt(socket: &Path, audience: Vec<String>, spiffe_id: Option<String>) -> Result<Vec<(String, String)>> {
    fetch_with(&mut connect(socket).await?, audience, spiffe_id).await
}

/// What `measure` found: latency percentiles (µs) and throughput.
pub struct Measured {
    pub p50_us: u128,
    pub p99_us: u128,
    pub tokens_per_s: f64,
}

/// Token fetch latency and throughput for `cargo xtask bench`: `n` fetches spread over
/// `clients` connections fetching at the same time, each for a new audience when
/// `distinct` (so no cache can answer). Each client first fetches once, untimed: the
/// agent attests a caller it has not seen (hashing its binary) on its first request,
/// which is attestation's cost, not issuance's.
pub async fn measure(socket: &Path, audience: &str, n: usize, distinct: bool, clients: usize) -> Result<Measured> {
    let clients = clients.max(1);
    let ready = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (socket, audience, ready) = (socket.to_owned(), audience.to_owned(), ready.clone());
        let share = n / clients + usize::from(c < n % clients);
        tasks.spawn(async move {
            let mut client = connect(&socket).await;
            if let Ok(client) = &mut client {
                let _ = fetch_with(client, vec![format!("{audience}-warm-{c}")], None).await;
            }
            ready.wait().await;
            let mut client = client?;
            let mut micros = Vec::with_capacity(share);
            for i in 0..share {
                let aud = if distinct { format!("{audience}-{c}-{i}") } else { audience.clone() };
                let start = std::time::Instant::now();
                fetch_with(&mut client, vec![aud], None).await?;
                micros.push(start.elapsed().as_micros());
            }
            anyhow::Ok(micros)
        });
    }
    ready.wait().await;
    let started = std::time::Instant::now();
    let mut micros = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        micros.extend(done.context("a fetching task failed")??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    micros.sort_unstable();
    let at = |q: f64| micros.get(((micros.len() as f64 * q) as usize).min(micros.len().saturating_sub(1))).copied().unwrap_or(0);
    Ok(Measured { p50_us: at(0.50), p99_us: at(0.99), tokens_per_s: micros.len() as f64 / elapsed.max(f64::EPSILON) })
}
