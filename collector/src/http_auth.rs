//! Who may use the collector's HTTP API (queries, audit-log uploads, metrics).
//!
//! - an operator presenting a bearer token equal to the one in `--http-token-file`;
//! - an operator presenting a client certificate that chains to `--client-ca` and is not
//!   a node certificate.
//!
//! Node (agent) certificates are refused: a node pushes its own events over gRPC and has
//! no business reading the fleet's data or uploading audit logs. Without TLS (loopback
//! only, enforced at start-up) the token is required when one is configured, and the API
//! is open otherwise (the demo). `/healthz` is always open and says nothing but "ok".

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ring::digest::{SHA256, digest};

use crate::{
    https::TlsPeer,
    node_identity::{self, CertNames},
};

#[derive(Clone, Default)]
pub struct ApiAuth {
    /// SHA-256 of the bearer token, so comparisons do not leak its prefix through timing.
    token_digest: Option<Arc<Vec<u8>>>,
}

impl ApiAuth {
    pub fn new(token: Option<&str>) -> Self {
        Self { token_digest: token.map(|t| Arc::new(digest(&SHA256, t.as_bytes()).as_ref().to_vec())) }
    }

    /// Reads the token file (16+ characters after trimming).
    pub fn from_file(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let Some(p) = path else { return Ok(Self::default()) };
        let t = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
        let t = t.trim();
        if t.len() < 16 {
            anyhow::bail!("the HTTP API token in {} is {} characters; at least 16 are needed", p.display(), t.len());
        }
        Ok(Self::new(Some(t)))
    }

    fn bearer_ok(&self, req: &Request) -> bool {
        let Some(want) = &self.token_digest else { return false };
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| digest(&SHA256, t.trim().as_bytes()).as_ref() == want.as_slice())
    }
}

fn refuse(code: StatusCode, why: &str) -> Response {
    let mut r = (code, axum::Json(serde_json::json!({ "error": why }))).into_response();
    if code == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    r
}

pub async fn require(State(auth): State<ApiAuth>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" || auth.bearer_ok(&req) {
        return next.run(req).await;
    }
    let tls = req.extensions().get::<axum::extract::ConnectInfo<TlsPeer>>().map(|c| c.0.clone());
    let refusal = match tls {
        // Plaintext: loopback only (checked at start-up); open unless a token is configured.
        None if auth.token_digest.is_none() => return next.run(req).await,
        None => (StatusCode::UNAUTHORIZED, "a bearer token is required".to_owned()),
        // Operators' certificates must not carry a node SPIFFE ID; nodes' certificates should.
        Some(TlsPeer { client_cert: Some(der) }) => match node_identity::certificate_names(&der) {
            Ok(CertNames { spiffe_node: Some(node), .. }) => {
                (StatusCode::FORBIDDEN, format!("node {node}'s certificate may push events over gRPC, not use the HTTP API"))
            }
            Ok(_) => return next.run(req).await,
            Err(_) => (StatusCode::UNAUTHORIZED, "unreadable client certificate".to_owned()),
        },
        Some(TlsPeer { client_cert: None }) => (StatusCode::UNAUTHORIZED, "a client certificate or a bearer token is required".to_owned()),
    };
    // Read (a bounded amount of) the body before answering: closing a connection with
    // unread data makes the kernel reset it, and the client may lose the refusal.
    let _ = axum::body::to_bytes(req.into_body(), DRAIN_LIMIT).await;
    refuse(refusal.0, &refusal.1)
}

/// How much of a refused request's body is read so the refusal reaches the client.
const DRAIN_LIMIT: usize = 64 * 1024;
