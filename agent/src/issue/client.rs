//! A minimal Workload API client, for `sigil-agent token` (shell scripts, demos, tests).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use sigil_proto::spiffe::{JwtsvidRequest, spiffe_workload_api_client::SpiffeWorkloadApiClient};
use tokio::net::UnixStream;
use tonic::{Request, metadata::MetadataValue, transport::Endpoint};

use super::workload_api::SECURITY_HEADER;

/// Fetches JWT-SVIDs for `audience` from the agent at `socket`; returns (spiffe id, token).
pub async fn fetch_jwt(socket: &Path, audience: Vec<String>, spiffe_id: Option<String>) -> Result<Vec<(String, String)>> {
    let path: PathBuf = socket.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://workload-api.invalid")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("connecting to the Workload API at {}", socket.display()))?;
    let mut client = SpiffeWorkloadApiClient::new(channel);
    let mut req = Request::new(JwtsvidRequest { audience, spiffe_id: spiffe_id.unwrap_or_default() });
    req.metadata_mut().insert(SECURITY_HEADER, MetadataValue::from_static("true"));
    // The gRPC code first (e.g. "Unavailable: ..."), so scripts can tell retryable from refused.
    let resp = client.fetch_jwtsvid(req).await.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    Ok(resp.into_inner().svids.into_iter().map(|s| (s.spiffe_id, s.svid)).collect())
}
