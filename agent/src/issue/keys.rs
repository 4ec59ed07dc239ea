//! JWT signing keys: ES256, generated in memory, never written anywhere.
//!
//! Keys rotate on a schedule. A retired key stays published for as long as a token it
//! signed can still be valid (its retirement time plus the longest TTL any token may
//! have), so verifiers never see a valid token whose key has vanished.

use std::{
    sync::RwLock,
    time::{Duration, SystemTime},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::{
    digest,
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, KeyPair},
};
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("generating an ES256 key: {0}")]
    Generate(String),
    #[error("signing: {0}")]
    Sign(String),
}

struct SigningKey {
    kid: String,
    pair: EcdsaKeyPair,
    created: SystemTime,
    retired: Option<SystemTime>,
}

/// A public key as a JWK (RFC 7517) for P-256.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub x: String,
    pub y: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<&'static str>,
}

pub struct KeyManager {
    keys: RwLock<Vec<SigningKey>>,
    rng: SystemRandom,
    rotate_every: Duration,
    /// The longest TTL any token can have: how long a retired key must stay published.
    max_ttl: Duration,
}

fn generate(rng: &SystemRandom) -> Result<SigningKey, KeyError> {
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, rng).map_err(|e| KeyError::Generate(e.to_string()))?;
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), rng).map_err(|e| KeyError::Generate(e.to_string()))?;
    let (x, y) = coordinates(pair.public_key().as_ref());
    Ok(SigningKey { kid: thumbprint(&x, &y), pair, created: SystemTime::now(), retired: None })
}

impl Jwk {
    /// The JWK of an uncompressed P-256 point (0x04 || X || Y); its kid is the RFC 7638
    /// thumbprint, so every holder of the same public key names it the same way.
    pub fn from_public(point: &[u8], use_: &'static str) -> Self {
        let (x, y) = coordinates(point);
        let kid = thumbprint(&x, &y);
        Jwk { kty: "EC", crv: "P-256", x, y, kid, use_, alg: (use_ == "sig").then_some("ES256") }
    }
}

/// The uncompressed SEC1 point from a JWK's base64url coordinates.
pub fn point_from(x: &str, y: &str) -> Option<Vec<u8>> {
    let (x, y) = (B64.decode(x).ok()?, B64.decode(y).ok()?);
    (x.len() == 32 && y.len() == 32).then(|| [&[4u8][..], &x, &y].concat())
}

/// Splits an uncompressed SEC1 point (0x04 || X || Y) into base64url coordinates.
fn coordinates(point: &[u8]) -> (String, String) {
    let body = point.get(1..).unwrap_or_default();
    let (x, y) = body.split_at(body.len() / 2);
    (B64.encode(x), B64.encode(y))
}

/// RFC 7638 JWK thumbprint: a stable key id derived from the key itself.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    B64.encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
}

impl KeyManager {
    pub fn new(rotate_every: Duration, max_ttl: Duration) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let first = generate(&rng)?;
        Ok(Self { keys: RwLock::new(vec![first]), rng, rotate_every, max_ttl })
    }

    /// Rotates if the active key is due, and forgets keys no valid token can use any more.
    /// Returns true when the published set changed.
    pub fn maintain(&self, now: SystemTime) -> Result<bool, KeyError> {
        let mut keys = self.keys.write().map_err(|_| KeyError::Sign("key store poisoned".into()))?;
        let mut changed = false;
        let due = keys.last().is_none_or(|k| now.duration_since(k.created).unwrap_or_default() >= self.rotate_every);
        if due {
            let fresh = generate(&self.rng)?;
            if let Some(active) = keys.last_mut() {
                active.retired = Some(now);
            }
            keys.push(fresh);
            changed = true;
        }
        let before = keys.len();
        keys.retain(|k| k.retired.is_none_or(|r| now.duration_since(r).unwrap_or_default() <= self.max_ttl));
        Ok(changed || keys.len() != before)
    }

    /// Signs `signing_input` (base64url header "." base64url claims) with the active key;
    /// returns (kid, signature).
    pub fn sign(&self, signing_input: &[u8]) -> Result<(String, Vec<u8>), KeyError> {
        let keys = self.keys.read().map_err(|_| KeyError::Sign("key store poisoned".into()))?;
        let active = keys.last().ok_or_else(|| KeyError::Sign("no signing key".into()))?;
        let sig = active.pair.sign(&self.rng, signing_input).map_err(|e| KeyError::Sign(e.to_string()))?;
        Ok((active.kid.clone(), sig.as_ref().to_vec()))
    }

    pub fn active_kid(&self) -> Option<String> {
        self.keys.read().ok()?.last().map(|k| k.kid.clone())
    }

    /// The uncompressed public key for `kid`, if it is still published.
    pub fn public_key(&self, kid: &str) -> Option<Vec<u8>> {
        let keys = self.keys.read().ok()?;
        keys.iter().find(|k| k.kid == kid).map(|k| k.pair.public_key().as_ref().to_vec())
    }

    /// Every published key as a JWK. `use_` is `sig` for OIDC verifiers and `jwt-svid`
    /// for SPIFFE bundles.
    pub fn jwks(&self, use_: &'static str) -> Vec<Jwk> {
        let Ok(keys) = self.keys.read() else { return Vec::new() };
        keys.iter().map(|k| Jwk::from_public(k.pair.public_key().as_ref(), use_)).collect()
    }

    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }
}

/// Verifies an ES256 (fixed-length r||s) signature.
pub fn verify(public_key: &[u8], message: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key).verify(message, sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_with_the_published_key() {
        let km = KeyManager::new(Duration::from_secs(3600), Duration::from_secs(300)).expect("keys");
        let (kid, sig) = km.sign(b"header.claims").expect("sign");
        let pk = km.public_key(&kid).expect("published");
        assert!(verify(&pk, b"header.claims", &sig));
        assert!(!verify(&pk, b"header.claimz", &sig));
        let jwks = km.jwks("sig");
        assert_eq!(jwks.len(), 1);
        assert_eq!(jwks[0].kid, kid);
        assert_eq!(B64.decode(&jwks[0].x).expect("b64").len(), 32);
        assert_eq!(point_from(&jwks[0].x, &jwks[0].y).as_deref(), Some(pk.as_slice()), "JWK round trip");
    }

    #[test]
    fn retired_keys_stay_published_for_max_ttl_then_go() {
        let km = KeyManager::new(Duration::from_secs(10), Duration::from_secs(30)).expect("keys");
        let t0 = SystemTime::now();
        let first = km.active_kid().expect("kid");
        assert!(!km.maintain(t0).expect("maintain"), "not due yet");
        assert!(km.maintain(t0 + Duration::from_secs(11)).expect("maintain"));
        let second = km.active_kid().expect("kid");
        assert_ne!(first, second);
        assert!(km.public_key(&first).is_some(), "old key still verifies");
        // 30 s after retirement the old key is still in its window...
        km.maintain(t0 + Duration::from_secs(12)).expect("maintain");
        assert!(km.public_key(&first).is_some());
        // ...and gone once no token signed by it can be valid. (The second key rotated too.)
        km.maintain(t0 + Duration::from_secs(11 + 31)).expect("maintain");
        assert!(km.public_key(&first).is_none());
        assert!(km.public_key(&second).is_some());
    }

    #[test]
    fn thumbprint_matches_rfc7638_example_shape() {
        // Deterministic: same coordinates, same kid; different, different.
        assert_eq!(thumbprint("a", "b"), thumbprint("a", "b"));
        assert_ne!(thumbprint("a", "b"), thumbprint("a", "c"));
        assert_eq!(thumbprint("a", "b").len(), 43);
    }
}
