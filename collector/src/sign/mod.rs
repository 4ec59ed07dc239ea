//! The cluster signer: one key set for the whole cluster ([`keystore`], sealed with
//! [`kek`]), the `sigil.v1.Signer` gRPC service agents call ([`service`]), and the one
//! OIDC issuer cloud STS services fetch (`/.well-known/openid-configuration` and `/keys`,
//! over HTTPS).

pub mod kek;
pub mod keystore;
pub mod service;

use std::{path::PathBuf, sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};
use tracing::{error, info};

use keystore::KeyStore;

/// What `serve` needs to run the signer.
pub struct SignerSetup {
    pub keys: Arc<KeyStore>,
    /// Registration entries (the agents' policy format); node selectors are enforced here.
    pub policy: PathBuf,
    /// The issuer URL written into tokens and served in the discovery document.
    pub issuer: String,
    /// Where the OIDC documents are served over HTTPS, with the certificate and key.
    pub oidc: Option<OidcListen>,
}

pub struct OidcListen {
    pub addr: std::net::SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone)]
struct Oidc {
    issuer: String,
    keys: Arc<KeyStore>,
}

async fn configuration(State(s): State<Oidc>) -> Json<Value> {
    Json(sigil_agent::issue::oidc::discovery(&s.issuer))
}

async fn jwks(State(s): State<Oidc>) -> Json<Value> {
    Json(json!({ "keys": s.keys.jwks("sig") }))
}

/// The public OIDC documents: no authentication (cloud STS services fetch them).
pub fn oidc_router(issuer: String, keys: Arc<KeyStore>) -> Router {
    Router::new().route("/.well-known/openid-configuration", get(configuration)).route("/keys", get(jwks)).with_state(Oidc { issuer, keys })
}

/// Rotates when due and picks up other replicas' rotations, every `every`.
pub fn spawn_maintenance(keys: Arc<KeyStore>, every: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let k = keys.clone();
            match tokio::task::spawn_blocking(move || k.maintain(crate::store::sqlite::now_unix(), false)).await {
                Ok(Ok(true)) => info!("signer: published keys changed; current {}", keys.current_kid().unwrap_or_default()),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => error!("signer key maintenance: {e}"),
                Err(e) => error!("signer key maintenance task: {e}"),
            }
        }
    });
}

/// `sigil-collector serve` flags for the cluster signer (fleet mode).
#[derive(clap::Args, Debug, Clone)]
pub struct SignerArgs {
    /// Run the cluster signer with these registration entries (the agents' policy
    /// format; node selectors are enforced against the client certificate's node).
    #[arg(long)]
    pub signer_policy: Option<PathBuf>,
    /// Issuer URL written into tokens (`iss`) and served in the discovery document
    /// (default https://<oidc-listen>).
    #[arg(long, requires = "signer_policy")]
    pub issuer: Option<String>,
    /// Key-encryption key (32 raw bytes or 64 hex digits): signing keys are stored in the
    /// database sealed with it and shared by every replica. Without it, keys live only in
    /// this process (one replica; a restart makes earlier tokens unverifiable).
    #[arg(long, env = "SIGIL_SIGNER_KEK_FILE")]
    pub signer_kek_file: Option<PathBuf>,
    /// Seconds between signing-key rotations (at least --max-token-ttl-seconds).
    #[arg(long, default_value_t = 3600)]
    pub key_rotation_seconds: u64,
    /// The longest lifetime the signer gives a token, and how long a retired key stays
    /// published.
    #[arg(long, default_value_t = 3600)]
    pub max_token_ttl_seconds: u64,
    /// Serve the OIDC discovery document and JWKS over HTTPS here.
    #[arg(long, requires_all = ["oidc_cert", "oidc_key", "signer_policy"])]
    pub oidc_listen: Option<std::net::SocketAddr>,
    /// Certificate and key (PEM) for the OIDC HTTPS listener.
    #[arg(long)]
    pub oidc_cert: Option<PathBuf>,
    #[arg(long)]
    pub oidc_key: Option<PathBuf>,
}

impl SignerArgs {
    /// Opens the key store: sealed in `db` with the KEK, or in memory without one.
    pub fn key_store(&self, db: &std::path::Path) -> anyhow::Result<KeyStore> {
        if self.signer_kek_file.is_some() && crate::store::postgres::is_url(&db.to_string_lossy()) {
            anyhow::bail!(
                "the cluster signer shares its sealed keys through an SQLite database; with --db postgres://… run the signer without --signer-kek-file (keys in memory, one replica) until the PostgreSQL key store exists"
            );
        }
        let rng = ring::rand::SystemRandom::new();
        let (db, kek) = match &self.signer_kek_file {
            Some(p) => (Some(db), kek::Kek::from_file(p)?),
            None => (None, kek::Kek::ephemeral(&rng)?),
        };
        Ok(KeyStore::open(db, kek, Duration::from_secs(self.key_rotation_seconds), Duration::from_secs(self.max_token_ttl_seconds.max(1)))?)
    }

    pub fn setup(&self, db: &std::path::Path) -> anyhow::Result<Option<SignerSetup>> {
        let Some(policy) = &self.signer_policy else { return Ok(None) };
        let issuer = match (&self.issuer, self.oidc_listen) {
            (Some(i), _) => i.trim_end_matches('/').to_owned(),
            (None, Some(addr)) => format!("https://{addr}"),
            (None, None) => anyhow::bail!("the signer needs --issuer (the HTTPS URL cloud providers fetch the JWKS from) or --oidc-listen"),
        };
        if self.signer_kek_file.is_none() {
            tracing::warn!("signer: no --signer-kek-file; signing keys live in this process only (one replica, lost on restart)");
        }
        let oidc = match (self.oidc_listen, &self.oidc_cert, &self.oidc_key) {
            (Some(addr), Some(cert), Some(key)) => Some(OidcListen { addr, cert: cert.clone(), key: key.clone() }),
            _ => None,
        };
        Ok(Some(SignerSetup { keys: Arc::new(self.key_store(db)?), policy: policy.clone(), issuer, oidc }))
    }
}
