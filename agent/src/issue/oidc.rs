//! OIDC discovery for cloud STS services (AWS AssumeRoleWithWebIdentity, GCP workload
//! identity federation): the issuer document and its JWKS.
//!
//! Served over plain HTTP on a local address; in production put it behind the cluster's
//! ingress or publish the two documents to a static HTTPS location (cloud providers fetch
//! them over HTTPS from the issuer URL).

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

use super::keys::KeyManager;

#[derive(Clone)]
struct Oidc {
    issuer: String,
    keys: Arc<KeyManager>,
}

/// The discovery document. `issuer` must equal the tokens' `iss` exactly.
pub fn discovery(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/keys"),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti"],
    })
}

async fn configuration(State(s): State<Oidc>) -> Json<Value> {
    Json(discovery(&s.issuer))
}

async fn keys(State(s): State<Oidc>) -> Json<Value> {
    Json(json!({ "keys": s.keys.jwks("sig") }))
}

/// Binds the discovery listener (synchronously, so start-up reports a busy port).
/// Must run inside a tokio runtime context.
pub fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let std = std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    std.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(std)?)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    issuer: String,
    keys_: Arc<KeyManager>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Router::new().route("/.well-known/openid-configuration", get(configuration)).route("/keys", get(keys)).with_state(Oidc { issuer, keys: keys_ });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("OIDC discovery server")
}
