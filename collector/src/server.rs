//! The collector's network face: gRPC (agent ingest, queries) and HTTP/JSON (queries,
//! audit-log uploads). Every handler hands the work to the store on a blocking thread.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, Result, bail};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path as UrlPath, Query as UrlQuery, State, rejection::BytesRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};
use sigil_proto::v1::{
    PushRequest, PushResponse, QueryRequest, QueryResponse,
    ingest_server::{Ingest, IngestServer},
    query_server::{Query as QueryApi, QueryServer},
    signer_server::SignerServer,
};
use tonic::{
    Request, Response as GrpcResponse, Status,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};
use tracing::{info, warn};

use crate::{
    cloud::{Limits, Parsed, cloudtrail, gcp},
    http_auth::{self, ApiAuth},
    https::{self, TlsListener, TlsPeer},
    metrics,
    node_identity::{self, NodeError},
    sign::{self, SignerSetup},
    store::{AgentEvent, Page, Query, Store, StoreError},
};

pub type SharedStore = Arc<dyn Store>;

/// TLS for the agent-facing gRPC port: server identity, and the CA agents' client
/// certificates must chain to.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

pub struct ServerConfig {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub telemetry: Arc<sigil_telemetry::Telemetry>,
    /// Fleet mode: the cluster signer and its OIDC issuer.
    pub signer: Option<SignerSetup>,
    /// Who may use the HTTP API (see [`http_auth`]).
    pub http_auth: ApiAuth,
    pub limits: RequestLimits,
}

/// Bounds on what one request may make the collector read: a peer (or a broken agent)
/// must not be able to make it buffer without end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest gRPC message decoded (agent batches, queries).
    pub max_grpc_message_bytes: usize,
    /// Largest body of an HTTP audit-log upload (`/v1/ingest/*`), as sent.
    pub max_ingest_body_bytes: usize,
    /// Largest audit-log document an upload may decompress to.
    pub max_ingest_decompressed_bytes: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { max_grpc_message_bytes: 4 << 20, max_ingest_body_bytes: 32 << 20, max_ingest_decompressed_bytes: 256 << 20 }
    }
}

/// What handlers share: the store and the in-process counters.
#[derive(Clone)]
pub struct Shared {
    pub store: SharedStore,
    pub counters: Arc<metrics::Counters>,
    pub telemetry: Option<Arc<sigil_telemetry::Telemetry>>,
    pub limits: RequestLimits,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(StoreError::BadArgument(format!("task failed: {e}"))))
}

/// Each new attribution as an OTLP log record, so any OpenTelemetry backend keeps them.
fn log_links(telemetry: Option<&sigil_telemetry::Telemetry>, links: &[crate::correlate::NewLink]) {
    let Some(t) = telemetry else { return };
    for l in links {
        t.log(
            "cloud action attributed",
            &[
                ("sigil.cloud_action.id", l.cloud_action_id.clone()),
                ("sigil.run.id", l.run_id.clone()),
                ("sigil.attribution.reason", l.reason.to_owned()),
                ("sigil.attribution.confidence", format!("{:.2}", l.confidence)),
            ],
        );
    }
}

/// Correlates inside a span; logs what it linked.
fn correlate(s: &SharedStore, telemetry: Option<&sigil_telemetry::Telemetry>) -> Result<usize, StoreError> {
    let _span = tracing::info_span!("correlate").entered();
    let links = s.correlate()?;
    tracing::info!(links = links.len(), "correlation run");
    log_links(telemetry, &links);
    Ok(links.len())
}

/// Stores a batch and correlates what it may have made attributable (in the batch's
/// transaction where the store can).
pub async fn push(shared: &Shared, node: String, events: Vec<AgentEvent>) -> Result<crate::store::IngestOutcome, StoreError> {
    let (s, t) = (shared.store.clone(), shared.telemetry.clone());
    blocking(move || {
        let _span = tracing::info_span!("ingest_batch", node = %node, events = events.len()).entered();
        let (out, links) = s.ingest_and_correlate(node, events)?;
        // Committed: the batch's findings are stored, and may be told.
        crate::findings::log_new(&out.new_findings);
        if out.stored > 0 {
            // Per batch, so at debug: thousands of agents would drown the log.
            tracing::debug!(stored = out.stored, links = links.len(), "batch ingested");
            log_links(t.as_deref(), &links);
        }
        Ok(out)
    })
    .await
}

pub async fn ingest_cloud(shared: &Shared, parsed: Parsed) -> Result<Value, StoreError> {
    let (s, t) = (shared.store.clone(), shared.telemetry.clone());
    blocking(move || {
        let _span = tracing::info_span!("ingest_cloud_actions", records = parsed.actions.len(), errors = parsed.errors.len()).entered();
        let out = s.ingest_cloud(&parsed.actions)?;
        let links = correlate(&s, t.as_deref())?;
        Ok(json!({
            "stored": out.stored,
            "duplicates": out.duplicates,
            "links_created": links,
            "errors": parsed.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }))
    })
    .await
}

pub async fn ask(store: &SharedStore, q: Query) -> Result<Value, StoreError> {
    let s = store.clone();
    blocking(move || {
        let _span = tracing::info_span!("query", query = ?q).entered();
        s.query(&q)
    })
    .await
}

// === gRPC ===

struct IngestService(Shared);

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn push(&self, req: Request<PushRequest>) -> Result<GrpcResponse<PushResponse>, Status> {
        // The node is the one the client certificate names; a payload naming another
        // node is refused (and counted), never stored under either name.
        let node = node_identity::authenticated_node(&req, &req.get_ref().node).map_err(|e| {
            if matches!(e, NodeError::Mismatch { .. }) {
                self.0.counters.node_mismatch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!("refused a push: {e}");
            }
            Status::from(e)
        })?;
        let body = req.into_inner();
        let (events, mut out) = crate::ingest::decode(body.events);
        out.merge(push(&self.0, node, events).await.map_err(|e| Status::internal(e.to_string()))?);
        self.0.counters.duplicates.fetch_add(u64::from(out.duplicates), std::sync::atomic::Ordering::Relaxed);
        self.0.counters.rejected.fetch_add(u64::from(out.rejected), std::sync::atomic::Ordering::Relaxed);
        if out.rejected > 0 {
            warn!("rejected {} events: {}", out.rejected, out.errors.join("; "));
        }
        Ok(GrpcResponse::new(PushResponse { stored: out.stored, duplicates: out.duplicates, rejected: out.rejected, errors: out.errors }))
    }
}

struct QueryService(SharedStore);

#[tonic::async_trait]
impl QueryApi for QueryService {
    async fn ask(&self, req: Request<QueryRequest>) -> Result<GrpcResponse<QueryResponse>, Status> {
        // Nodes push; they do not read the fleet's data (see http_auth for the HTTP rule).
        if node_identity::is_node_certificate(&req) {
            return Err(Status::permission_denied("node certificates may push events, not query"));
        }
        let r = req.into_inner();
        let page = Page::new(Some(u64::from(r.limit)), Some(&r.after)).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let q = Query::parse_paged(&r.name, &r.argument, page).map_err(|e| Status::invalid_argument(e.to_string()))?;
        match ask(&self.0, q).await {
            Ok(v) => Ok(GrpcResponse::new(QueryResponse { json: v.to_string().into_bytes() })),
            Err(StoreError::NotFound(m)) => Err(Status::not_found(m)),
            Err(StoreError::BadArgument(m)) => Err(Status::invalid_argument(m)),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }
}

// === HTTP ===

struct ApiError(StoreError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self.0 {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::BadArgument(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (code, Json(json!({"error": self.0.to_string()}))).into_response()
    }
}

/// `?limit=N&after=CURSOR`: one page of a trace's or run's list.
#[derive(serde::Deserialize)]
struct PageParams {
    limit: Option<u64>,
    after: Option<String>,
}

async fn http_query(
    State(s): State<SharedStore>,
    UrlPath((name, arg)): UrlPath<(String, String)>,
    UrlQuery(p): UrlQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    let q = Query::parse_paged(&name, &arg, Page::new(p.limit, p.after.as_deref()).map_err(ApiError)?).map_err(ApiError)?;
    ask(&s, q).await.map(Json).map_err(ApiError)
}

async fn http_query_plain(State(s): State<SharedStore>, UrlPath(name): UrlPath<String>, UrlQuery(p): UrlQuery<PageParams>) -> Result<Json<Value>, ApiError> {
    let q = Query::parse_paged(&name, "", Page::new(p.limit, p.after.as_deref()).map_err(ApiError)?).map_err(ApiError)?;
    ask(&s, q).await.map(Json).map_err(ApiError)
}

/// An audit-log upload as parsed, or the response refusing it. An upload over the body
/// limit is refused whole (413) before anything from it is stored; earlier uploads stay.
fn upload(
    s: &Shared,
    body: Result<Bytes, BytesRejection>,
    parse: fn(&str, &[u8], &Limits, &mut dyn crate::cloud::Sink),
) -> Result<Parsed, (StatusCode, Json<Value>)> {
    let body = body.map_err(|r| {
        let status = r.status();
        let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "request body is larger than {} bytes, the limit for audit-log uploads (--max-ingest-body-bytes); nothing from it was stored: split it into smaller uploads",
                s.limits.max_ingest_body_bytes
            )
        } else {
            r.body_text()
        };
        (status, Json(json!({ "error": error })))
    })?;
    let limits = Limits { max_file_bytes: s.limits.max_ingest_decompressed_bytes, ..Limits::default() };
    let mut parsed = Parsed::default();
    parse("<http body>", &body, &limits, &mut parsed);
    Ok(parsed)
}

async fn http_cloudtrail(State(s): State<Shared>, body: Result<Bytes, BytesRejection>) -> Result<Json<Value>, Response> {
    let parsed = upload(&s, body, cloudtrail::parse_into).map_err(IntoResponse::into_response)?;
    s.counters.record_errors("aws", parsed.errors.len());
    ingest_cloud(&s, parsed).await.map(Json).map_err(|e| ApiError(e).into_response())
}

async fn http_gcp(State(s): State<Shared>, body: Result<Bytes, BytesRejection>) -> Result<Json<Value>, Response> {
    let parsed = upload(&s, body, gcp::parse_into).map_err(IntoResponse::into_response)?;
    s.counters.record_errors("gcp", parsed.errors.len());
    ingest_cloud(&s, parsed).await.map(Json).map_err(|e| ApiError(e).into_response())
}

async fn http_metrics(State(t): State<Arc<sigil_telemetry::Telemetry>>) -> impl IntoResponse {
    let body = tokio::task::spawn_blocking(move || t.render()).await.unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

pub fn http_router(shared: Shared, telemetry: Arc<sigil_telemetry::Telemetry>) -> Router {
    let queries =
        Router::new().route("/v1/query/{name}", get(http_query_plain)).route("/v1/query/{name}/{arg}", get(http_query)).with_state(shared.store.clone());
    let ingest = Router::new()
        .route("/v1/ingest/cloudtrail", post(http_cloudtrail))
        .route("/v1/ingest/gcp-audit", post(http_gcp))
        .layer(DefaultBodyLimit::max(shared.limits.max_ingest_body_bytes))
        .with_state(shared);
    let metrics = Router::new().route("/metrics", get(http_metrics)).with_state(telemetry);
    Router::new().route("/healthz", get(|| async { "ok" })).merge(queries).merge(ingest).merge(metrics)
}

/// Serves gRPC and HTTP until `shutdown` resolves.
pub async fn serve(cfg: ServerConfig, store: SharedStore, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<()> {
    let shared = Shared { store: store.clone(), counters: Arc::default(), telemetry: Some(cfg.telemetry.clone()), limits: cfg.limits };
    let snapshot: metrics::Snapshot = Arc::default();
    metrics::register(&cfg.telemetry.meter("sigil-collector"), shared.counters.clone(), snapshot.clone());
    {
        let (s, snap) = (store.clone(), snapshot.clone());
        tokio::spawn(async move {
            loop {
                let s2 = s.clone();
                match tokio::task::spawn_blocking(move || s2.metrics()).await {
                    Ok(Ok(v)) => {
                        if let Ok(mut g) = snap.lock() {
                            *g = v;
                        }
                    }
                    Ok(Err(e)) => warn!("metrics snapshot: {e}"),
                    Err(_) => {}
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        });
    }
    if cfg.tls.is_none() && !cfg.grpc.ip().is_loopback() {
        bail!("refusing plaintext gRPC on {} (not loopback): give --tls-cert, --tls-key and --client-ca", cfg.grpc);
    }
    let mut builder = Server::builder();
    if let Some(t) = &cfg.tls {
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let tls = ServerTlsConfig::new().identity(Identity::from_pem(read(&t.cert)?, read(&t.key)?)).client_ca_root(Certificate::from_pem(read(&t.client_ca)?));
        builder = builder.tls_config(tls).context("TLS configuration")?;
    }
    if cfg.tls.is_none() && !cfg.http.ip().is_loopback() {
        bail!("refusing a plaintext HTTP API on {} (not loopback): give --tls-cert, --tls-key and --client-ca", cfg.http);
    }
    let http = tokio::net::TcpListener::bind(cfg.http).await.with_context(|| format!("binding {}", cfg.http))?;
    let https_cfg = match &cfg.tls {
        Some(t) => Some(https::server_config(&t.cert, &t.key, Some(&t.client_ca))?),
        None => None,
    };
    let grpc_listener = tokio::net::TcpListener::bind(cfg.grpc).await.with_context(|| format!("binding {}", cfg.grpc))?;
    // The bound addresses, so `--grpc-listen 127.0.0.1:0` names the port it got.
    let (grpc_addr, http_addr) = (grpc_listener.local_addr().unwrap_or(cfg.grpc), http.local_addr().unwrap_or(cfg.http));
    let mode = if cfg.tls.is_some() { "mTLS" } else { "plaintext, loopback" };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut rx2 = rx.clone();
    let mut routes = builder
        .add_service(IngestServer::new(IngestService(shared.clone())).max_decoding_message_size(cfg.limits.max_grpc_message_bytes))
        .add_service(QueryServer::new(QueryService(store.clone())).max_decoding_message_size(cfg.limits.max_grpc_message_bytes));
    if let Some(sg) = cfg.signer {
        let service = sign::service::SignerService::new(sg.keys.clone(), &sg.policy, sg.issuer.clone(), shared.clone())?;
        routes = routes.add_service(SignerServer::new(service));
        sign::spawn_maintenance(sg.keys.clone(), std::time::Duration::from_secs(2));
        if let Some(o) = sg.oidc {
            let tcp = tokio::net::TcpListener::bind(o.addr).await.with_context(|| format!("binding {}", o.addr))?;
            let listener = TlsListener::new(tcp, https::server_config(&o.cert, &o.key, None)?)?;
            let mut rx4 = rx.clone();
            let app = sign::oidc_router(sg.issuer.clone(), sg.keys.clone());
            tokio::spawn(async move {
                let r = axum::serve(listener, app).with_graceful_shutdown(async move {
                    let _ = rx4.wait_for(|v| *v).await;
                });
                if let Err(e) = r.await {
                    warn!("OIDC issuer: {e}");
                }
            });
            info!("signer: OIDC issuer {} served over HTTPS on {}", sg.issuer, o.addr);
        }
        info!("signer: issuing for the cluster with current key {}", sg.keys.current_kid().unwrap_or_default());
    }
    info!("collector: gRPC on {grpc_addr} ({mode}), HTTP on {http_addr} ({})", if mode == "mTLS" { "HTTPS" } else { "plaintext, loopback" });
    let grpc = routes.serve_with_incoming_shutdown(tokio_stream_listener(grpc_listener), async move {
        let _ = rx2.wait_for(|v| *v).await;
    });
    let mut rx3 = rx.clone();
    let app = http_router(shared, cfg.telemetry.clone()).layer(axum::middleware::from_fn_with_state(cfg.http_auth.clone(), http_auth::require));
    let stop3 = async move {
        let _ = rx3.wait_for(|v| *v).await;
    };
    let web = async move {
        match https_cfg {
            Some(c) => {
                let listener = TlsListener::new(http, c)?;
                axum::serve(listener, app.into_make_service_with_connect_info::<TlsPeer>()).with_graceful_shutdown(stop3).await?;
            }
            None => axum::serve(http, app).with_graceful_shutdown(stop3).await?,
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    let (g, w) = tokio::join!(grpc, web);
    g.context("gRPC server")?;
    w.context("HTTP server")?;
    Ok(())
}

/// Accepted connections with Nagle off: tonic sets TCP_NODELAY only on listeners it binds
/// itself, and a unary answer (headers, body, trailers) would otherwise wait out the
/// peer's delayed ACK (~40 ms per signing request).
fn tokio_stream_listener(l: tokio::net::TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(l).map(|s| {
        let s = s?;
        s.set_nodelay(true)?;
        Ok(s)
    })
}
