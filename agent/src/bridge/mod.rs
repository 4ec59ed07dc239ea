//! The legacy bridge: unmodified cloud SDKs use Sigil tokens.
//!
//! SDKs already know how to read a web identity token from a file (AWS
//! `AWS_WEB_IDENTITY_TOKEN_FILE`, GCP external-account `credential_source.file`) and how to
//! run a `credential_process`. These commands feed them from the local agent's Workload
//! API, so a workload gets cloud credentials from its attested identity without a code
//! change:
//! - [`token_file`]: keeps a token file fresh (and, for GCP, writes the credential
//!   configuration that points at it);
//! - [`sts`]: the AWS `credential_process` protocol, exchanging a token at STS.
//!
//! The token fetch is [`fetch`]: one JWT-SVID from the Workload API (the client the
//! `token` command uses), with its expiry read from the token itself.

pub mod args;
pub mod atomic;
pub mod gcp;
pub mod sts;
pub mod token_file;

use anyhow::{Context, Result, bail};

use crate::{issue::client, trace::detect::Secret};

/// A JWT-SVID and when it expires (unix seconds, from its `exp` claim).
pub struct Fetched {
    pub token: Secret,
    pub spiffe_id: String,
    pub expires_at: i64,
}

/// Fetches one JWT-SVID for `audience`: the one for the source's SPIFFE ID when given,
/// else the first the agent answers with (a workload entitled to several IDs must say which).
pub async fn fetch(source: &args::Source, audience: &str) -> Result<Fetched> {
    let svids = client::fetch_jwt(&source.socket, vec![audience.to_owned()], source.spiffe_id.clone()).await?;
    let Some((id, token)) = svids.into_iter().next() else { bail!("the Workload API answered with no JWT-SVID") };
    let expires_at = crate::trace::detect::jwt_expiry(&token).context("the JWT-SVID has no exp claim")?;
    Ok(Fetched { token: Secret::new(token.into_bytes()), spiffe_id: id, expires_at })
}

/// How long a command keeps trying to get its first token: long enough for an agent
/// restart or a binary hash still being computed, short enough that a workload without
/// an identity fails visibly.
pub const FIRST_FETCH_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);
/// Backoff bounds between attempts.
const FIRST_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// [`fetch`], retried with jittered exponential backoff (each failure logged) until it
/// succeeds or `within` has passed; then the last error.
pub async fn fetch_retrying(source: &args::Source, audience: &str, within: std::time::Duration) -> Result<Fetched> {
    let deadline = tokio::time::Instant::now() + within;
    let rng = ring::rand::SystemRandom::new();
    let mut backoff = FIRST_RETRY;
    loop {
        match fetch(source, audience).await {
            Ok(f) => return Ok(f),
            Err(e) => {
                let wait = jitter(&rng, backoff);
                if tokio::time::Instant::now() + wait >= deadline {
                    return Err(e);
                }
                tracing::warn!("token fetch failed, retrying in {wait:?}: {e:#}");
                tokio::time::sleep(wait).await;
                backoff = next_backoff(backoff);
            }
        }
    }
}

/// Doubles, up to the cap.
pub fn next_backoff(d: std::time::Duration) -> std::time::Duration {
    (d * 2).min(MAX_RETRY)
}

/// The first backoff.
pub const fn first_backoff() -> std::time::Duration {
    FIRST_RETRY
}

/// `base` scaled by a random factor in [0.5, 1.5), so many workloads retrying after an
/// agent restart do not do it in lockstep.
pub fn jitter(rng: &ring::rand::SystemRandom, base: std::time::Duration) -> std::time::Duration {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 2];
    let r = if rng.fill(&mut b).is_ok() { f64::from(u16::from_le_bytes(b)) / 65536.0 } else { 0.5 };
    base.mul_f64(0.5 + r)
}

/// Seconds since the epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// `sigil-agent credential-process`: fetches a token, exchanges it at STS, and returns the
/// `credential_process` JSON (for stdout only).
pub fn credential_process(args: &args::CredentialProcessArgs) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let fetched = rt.block_on(fetch_retrying(&args.source, &args.audience, FIRST_FETCH_WITHIN))?;
    let http = sts::http_client(args.ca_file.as_ref())?;
    // Not the jti: attribution follows the exchange the agent sees, not a naming convention.
    let session = args.session_name.clone().unwrap_or_else(|| format!("sigil-{}", now_unix()));
    let exchange = sts::Exchange {
        endpoint: &args.sts_endpoint,
        role_arn: &args.role_arn,
        session_name: &session,
        duration_seconds: args.duration_seconds,
        token: &fetched.token,
    };
    Ok(sts::assume_role_with_web_identity(&http, &exchange)?.process_json())
}
