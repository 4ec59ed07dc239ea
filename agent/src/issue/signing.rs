//! Who signs a token the agent decided to issue: the agent's own in-memory keys
//! (single-node mode, the default) or the cluster signer ([`super::remote`], fleet mode).
//!
//! The decision (who is calling, which entries match) never moves: it is made by the
//! agent, from the kernel, before a signer is asked.

use std::{sync::Arc, time::SystemTime};

use thiserror::Error;

use super::{
    jwt::{self, Claims, PublicKeys},
    keys::{Jwk, KeyManager},
};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignError {
    /// The signer could not be reached; the workload may retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The signer refused (e.g. the SPIFFE ID is not allowed on this node).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Internal(String),
}

/// A signed token and the claims it carries (the signer may have set `iss`, `jti`,
/// `iat`, `exp` and `sigil_node`).
#[derive(Debug, Clone)]
pub struct Signed {
    pub token: String,
    pub kid: String,
    pub claims: Claims,
    /// False when an earlier token was served again from the agent's cache.
    pub fresh: bool,
}

pub trait TokenSigner: PublicKeys + Send + Sync {
    fn sign(&self, claims: Claims) -> Result<Signed, SignError>;
    /// Every published key as a JWK (`sig` for OIDC, `jwt-svid` for SPIFFE bundles).
    fn jwks(&self, use_: &'static str) -> Vec<Jwk>;
    /// Rotation (local) or a refresh of the published keys (remote); true when the
    /// published set changed. Blocking.
    fn maintain(&self) -> Result<bool, String>;
    /// The key that signs new tokens, when this process knows it.
    fn active_kid(&self) -> Option<String>;
    /// Signs without waiting on anything outside this process, or None when signing
    /// would have to (a remote signer with nothing cached for these claims).
    fn sign_now(&self, _claims: Claims) -> Option<Result<Signed, SignError>> {
        None
    }
}

/// Single-node mode: the agent's own keys.
pub struct LocalSigner(pub Arc<KeyManager>);

impl PublicKeys for LocalSigner {
    fn public_key(&self, kid: &str) -> Option<Vec<u8>> {
        self.0.public_key(kid)
    }
}

impl TokenSigner for LocalSigner {
    fn sign(&self, claims: Claims) -> Result<Signed, SignError> {
        let token = jwt::sign(&self.0, &claims).map_err(|e| SignError::Internal(format!("signing failed: {e}")))?;
        Ok(Signed { token, kid: TokenSigner::active_kid(self).unwrap_or_default(), claims, fresh: true })
    }

    fn jwks(&self, use_: &'static str) -> Vec<Jwk> {
        self.0.jwks(use_)
    }

    fn maintain(&self) -> Result<bool, String> {
        self.0.maintain(SystemTime::now()).map_err(|e| e.to_string())
    }

    fn active_kid(&self) -> Option<String> {
        self.0.active_kid()
    }

    fn sign_now(&self, claims: Claims) -> Option<Result<Signed, SignError>> {
        Some(self.sign(claims))
    }
}
