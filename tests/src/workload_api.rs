//! A raw Workload API client for negative tests: it can leave out the security header
//! or add metadata a caller might hope would change who it is.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use sigil_proto::spiffe::{
    JwtsvidRequest, ValidateJwtsvidRequest, spiffe_workload_api_client::SpiffeWorkloadApiClient,
};
use tokio::net::UnixStream;
use tonic::{Request, Status, metadata::MetadataValue, transport::Endpoint};

pub struct Call<'a> {
    pub audience: Vec<String>,
    pub spiffe_id: String,
    pub header: bool,
    pub metadata: Vec<(&'static str, &'a str)>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn connect(socket: &Path) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let path: PathBuf = socket.to_owned();
    let channel = Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

fn with_meta<T>(body: T, header: bool, metadata: &[(&'static str, &str)]) -> Request<T> {
    let mut req = Request::new(body);
    if header {
        req.metadata_mut().insert("workload.spiffe.io", MetadataValue::from_static("true"));
    }
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    req
}

/// FetchJWTSVID from this process; Ok(tokens) or the gRPC status.
pub fn fetch(socket: &Path, call: Call<'_>) -> Result<Vec<String>, Status> {
    runtime().block_on(async {
        let mut c = connect(socket).await;
        let req = with_meta(JwtsvidRequest { audience: call.audience, spiffe_id: call.spiffe_id }, call.header, &call.metadata);
        c.fetch_jwtsvid(req).await.map(|r| r.into_inner().svids.into_iter().map(|s| s.svid).collect())
    })
}

/// ValidateJWTSVID; Ok(spiffe id) or the gRPC status.
pub fn validate(socket: &Path, token: &str, audience: &str) -> Result<String, Status> {
    runtime().block_on(async {
        let mut c = connect(socket).await;
        let req = with_meta(ValidateJwtsvidRequest { audience: audience.into(), svid: token.into() }, true, &[]);
        c.validate_jwtsvid(req).await.map(|r| r.into_inner().spiffe_id)
    })
}
