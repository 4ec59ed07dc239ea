//! `sigil-agent token-file`: keeps a file holding a fresh JWT-SVID, for SDKs that read a
//! web identity token from a file (AWS `AWS_WEB_IDENTITY_TOKEN_FILE`, GCP
//! `credential_source.file`).
//!
//! The file is replaced atomically (mode 0600) at half the token's remaining lifetime.
//! A failed refresh is retried with jittered exponential backoff, logged every time; once
//! the token in the file has expired every retry is logged as an error, so an expired
//! file never sits there silently. The first fetch must succeed: a workload started
//! without an identity should fail loudly (and be restarted), not wait unseen.

use std::{io::Write, path::Path, time::Duration};

use anyhow::{Context, Result};
use ring::rand::SystemRandom;

use super::{
    FIRST_FETCH_WITHIN, Fetched, args::TokenFileArgs, atomic::write_private, fetch, fetch_retrying, first_backoff, gcp::ExternalAccount, jitter, next_backoff,
    now_unix,
};

/// Never refresh more often than this, even for a token about to expire.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// Writes the file(s), prints the environment a user sets, and keeps the token fresh.
pub async fn run(args: TokenFileArgs) -> Result<()> {
    let first = fetch_retrying(&args.source, &args.audience, FIRST_FETCH_WITHIN).await.context("fetching the first token")?;
    write_token(&args.path, &first)?;
    if let (Some(config), Some(audience)) = (&args.gcp_config, &args.gcp_audience) {
        let account = ExternalAccount::new(audience, &args.gcp_token_url, &args.path, args.gcp_impersonation_url.as_deref());
        write_private(config, account.to_json().as_bytes()).with_context(|| format!("writing {}", config.display()))?;
    }
    print_environment(&args)?;
    tracing::info!(path = %args.path.display(), spiffe_id = %first.spiffe_id, expires_at = first.expires_at, "token file written");
    if args.once {
        return Ok(());
    }
    let mut expires_at = first.expires_at;
    loop {
        tokio::time::sleep(refresh_delay(now_unix(), expires_at)).await;
        expires_at = refresh(&args, expires_at).await;
    }
}

/// Retries until a new token is written; returns its expiry.
async fn refresh(args: &TokenFileArgs, expires_at: i64) -> i64 {
    let rng = SystemRandom::new();
    let mut backoff = first_backoff();
    loop {
        let result = match fetch(&args.source, &args.audience).await {
            Ok(f) => write_token(&args.path, &f).map(|()| f.expires_at),
            Err(e) => Err(e),
        };
        match result {
            Ok(next) => {
                tracing::info!(path = %args.path.display(), expires_at = next, "token file refreshed");
                return next;
            }
            Err(e) if now_unix() >= expires_at => {
                tracing::error!(path = %args.path.display(), expired_at = expires_at, "token file holds an EXPIRED token; refresh failed, retrying: {e:#}")
            }
            Err(e) => tracing::warn!(path = %args.path.display(), expires_at, "token refresh failed, retrying: {e:#}"),
        }
        tokio::time::sleep(jitter(&rng, backoff)).await;
        backoff = next_backoff(backoff);
    }
}

fn write_token(path: &Path, f: &Fetched) -> Result<()> {
    write_private(path, f.token.expose()).with_context(|| format!("writing the token file {}", path.display()))
}

/// Half of the remaining lifetime (at least [`MIN_REFRESH`]).
fn refresh_delay(now: i64, expires_at: i64) -> Duration {
    Duration::from_secs(u64::try_from((expires_at - now) / 2).unwrap_or(0)).max(MIN_REFRESH)
}

/// The lines a user puts into the workload's environment.
fn print_environment(args: &TokenFileArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if let Some(role) = &args.aws_role_arn {
        writeln!(out, "AWS_ROLE_ARN={role}")?;
        writeln!(out, "AWS_WEB_IDENTITY_TOKEN_FILE={}", args.path.display())?;
    }
    if let Some(config) = &args.gcp_config {
        writeln!(out, "GOOGLE_APPLICATION_CREDENTIALS={}", config.display())?;
    }
    if args.aws_role_arn.is_none() && args.gcp_config.is_none() {
        writeln!(out, "SIGIL_TOKEN_FILE={}", args.path.display())?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_at_half_the_remaining_lifetime_never_in_a_busy_loop() {
        assert_eq!(refresh_delay(1000, 1600), Duration::from_secs(300));
        assert_eq!(refresh_delay(1000, 1001), MIN_REFRESH);
        assert_eq!(refresh_delay(1000, 900), MIN_REFRESH);
    }

    #[test]
    fn jitter_stays_within_half_to_one_and_a_half_times() {
        let rng = SystemRandom::new();
        for _ in 0..100 {
            let d = jitter(&rng, Duration::from_secs(10));
            assert!(d >= Duration::from_secs(5) && d < Duration::from_secs(15), "{d:?}");
        }
    }
}
