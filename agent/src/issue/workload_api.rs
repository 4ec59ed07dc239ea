//! The SPIFFE Workload API over a Unix socket (gRPC, `/SpiffeWorkloadAPI/*`).

use std::{collections::HashMap, path::Path, pin::Pin, sync::Arc};

use prost_types::{ListValue, Struct, Value as PValue, value::Kind};
use serde_json::Value;
use sigil_proto::spiffe::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest,
    X509BundlesResponse, X509svidRequest, X509svidResponse,
    spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer},
};
use tokio::{net::UnixListener, sync::watch};
use tokio_stream::{Stream, StreamExt, wrappers::UnixListenerStream};
use tonic::{Request, Response, Status, transport::Server};
use tracing::warn;

use super::{
    issuer::{Issuer, JwtRequest},
    limits::{Connections, MAX_REQUEST_BYTES, WorkloadApiLimits},
    peer::{Peer, PeerStream},
    policy::DenyReason,
};

/// The metadata every Workload API request must carry (SPIFFE Workload Endpoint spec),
/// so a browser or SSRF-style request that reaches the socket cannot pass for a workload.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

fn has_security_header<T>(req: &Request<T>) -> bool {
    req.metadata().get(SECURITY_HEADER).and_then(|v| v.to_str().ok()) == Some("true")
}

fn require_header<T>(req: &Request<T>) -> Result<(), Status> {
    if has_security_header(req) { Ok(()) } else { Err(Status::invalid_argument("security header missing from request")) }
}

pub struct WorkloadApi {
    issuer: Arc<Issuer>,
    /// Bumped whenever the published key set changes; bundle streams resend on change.
    bundle_version: watch::Receiver<u64>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    async fn fetch_jwtsvid(&self, req: Request<JwtsvidRequest>) -> Result<Response<JwtsvidResponse>, Status> {
        let has_header = has_security_header(&req);
        let peer = req.extensions().get::<Peer>().cloned().ok_or_else(|| Status::permission_denied("caller could not be identified"))?;
        let body = req.into_inner();
        let request = JwtRequest { audience: body.audience, spiffe_id: Some(body.spiffe_id).filter(|s| !s.is_empty()), has_security_header: has_header };
        // Decided here when nothing on the way may block; otherwise (a binary to hash, a
        // pod to wait for, a remote signer) on a blocking thread, off the reactor.
        let result = match self.issuer.try_fetch_jwt_now(&peer, &request) {
            Some(result) => result,
            None => {
                let issuer = self.issuer.clone();
                tokio::task::spawn_blocking(move || issuer.fetch_jwt(&peer, &request))
                    .await
                    .map_err(|e| Status::internal(format!("issuance task failed: {e}")))?
            }
        };
        match result {
            Ok(issued) => Ok(Response::new(JwtsvidResponse {
                svids: issued.into_iter().map(|i| Jwtsvid { spiffe_id: i.spiffe_id, svid: i.token, hint: i.hint }).collect(),
            })),
            Err(d) => Err(match d.reason {
                DenyReason::MissingSecurityHeader => Status::invalid_argument("security header missing from request"),
                DenyReason::MissingAudience | DenyReason::InvalidRequest => Status::invalid_argument(d.detail),
                DenyReason::InternalError => Status::internal(d.detail),
                DenyReason::SignerUnavailable => Status::unavailable(d.detail),
                reason => Status::permission_denied(format!("{reason}: {}", d.detail)),
            }),
        }
    }

    type FetchJWTBundlesStream = BoxStream<JwtBundlesResponse>;

    async fn fetch_jwt_bundles(&self, req: Request<JwtBundlesRequest>) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        require_header(&req)?;
        let issuer = self.issuer.clone();
        let stream = tokio_stream::wrappers::WatchStream::new(self.bundle_version.clone()).map(move |_| {
            let mut bundles = HashMap::new();
            bundles.insert(format!("spiffe://{}", issuer.trust_domain()), issuer.jwt_bundle());
            Ok(JwtBundlesResponse { bundles })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn validate_jwtsvid(&self, req: Request<ValidateJwtsvidRequest>) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        require_header(&req)?;
        let body = req.into_inner();
        if body.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if body.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let (spiffe_id, claims) = self.issuer.validate(&body.svid, &body.audience).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(ValidateJwtsvidResponse { spiffe_id, claims: Some(to_struct(claims)) }))
    }

    type FetchX509SVIDStream = BoxStream<X509svidResponse>;

    async fn fetch_x509svid(&self, req: Request<X509svidRequest>) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        require_header(&req)?;
        Err(Status::unimplemented("this agent issues JWT-SVIDs only; X.509-SVIDs are not available"))
    }

    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;

    async fn fetch_x509_bundles(&self, req: Request<X509BundlesRequest>) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        require_header(&req)?;
        Err(Status::unimplemented("this agent issues JWT-SVIDs only; X.509 bundles are not available"))
    }
}

fn to_value(v: Value) -> PValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(a) => Kind::ListValue(ListValue { values: a.into_iter().map(to_value).collect() }),
        Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    PValue { kind: Some(kind) }
}

fn to_struct(m: serde_json::Map<String, Value>) -> Struct {
    Struct { fields: m.into_iter().map(|(k, v)| (k, to_value(v))).collect() }
}

/// Binds the socket (replacing a stale one). Must run inside a tokio runtime context.
pub fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    use anyhow::Context;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale socket {}", socket.display())),
    }
    let listener = UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    // Any local process may ask; who it is comes from the kernel, not from file modes.
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    Ok(listener)
}

/// Admits an accepted connection under the limits, binding its peer's exec now. Over a
/// limit, or unidentifiable: the connection is dropped (closed) at once.
fn admit(conn: tokio::net::UnixStream, conns: &Arc<Connections>, limits: &WorkloadApiLimits) -> std::io::Result<PeerStream> {
    let uid = conn.peer_cred()?.uid();
    let slot = conns.admit(uid).map_err(std::io::Error::other)?;
    PeerStream::new(conn, Some(slot), limits.idle())
}

/// Serves the Workload API until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    issuer: Arc<Issuer>,
    bundle_version: watch::Receiver<u64>,
    limits: WorkloadApiLimits,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let conns = Connections::new(&limits);
    let lim = limits.clone();
    let incoming = UnixListenerStream::new(listener).filter_map(move |conn| match conn {
        Ok(conn) => match admit(conn, &conns, &lim) {
            Ok(s) => Some(Ok::<_, std::io::Error>(s)),
            Err(e) if e.get_ref().is_some_and(|i| i.is::<super::limits::OverLimit>()) => None, // logged, rate-limited
            Err(e) => {
                // A peer we cannot identify gets no connection at all.
                warn!("refusing a Workload API connection: {e}");
                None
            }
        },
        Err(e) => {
            // EMFILE and the like: the listener stays up, the next accept may succeed.
            warn!("accepting a Workload API connection failed: {e}");
            None
        }
    });
    let api = WorkloadApi { issuer, bundle_version };
    let ping = limits.idle() / 3;
    Server::builder()
        .max_concurrent_streams(limits.max_streams)
        .http2_max_header_list_size(super::h2_authority::MAX_HEADER_LIST as u32)
        .http2_keepalive_interval(Some(ping))
        .http2_keepalive_timeout(Some(ping))
        .add_service(SpiffeWorkloadApiServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES).max_encoding_message_size(1 << 20))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("Workload API server: {e}"))
}
