//! JWT-SVIDs: JWS compact serialization, ES256.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use super::keys::{self, KeyError, KeyManager};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("token is not a JWS compact serialization")]
    Malformed,
    #[error("token algorithm {0:?} is not ES256")]
    Algorithm(String),
    #[error("token key {0:?} is not (or no longer) published")]
    UnknownKey(String),
    #[error("token signature does not verify")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token audience does not include {0:?}")]
    Audience(String),
    #[error("token has no valid `{0}` claim")]
    Claim(&'static str),
    #[error("{0}")]
    Key(String),
}

impl From<KeyError> for JwtError {
    fn from(e: KeyError) -> Self {
        JwtError::Key(e.to_string())
    }
}

/// `aud` may be one string or a list (RFC 7519 4.1.3). One audience is written as a
/// string, which every verifier (including cloud STS services) accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn from_list(mut list: Vec<String>) -> Self {
        if list.len() == 1 { Audience::One(list.remove(0)) } else { Audience::Many(list) }
    }

    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(l) => l.iter().any(|a| a == aud),
        }
    }
}

/// Claims Sigil puts in a token: the registered ones plus those that bind it to the
/// attested run, so a verifier (or the collector) can tell which process it was for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub sigil_node: String,
    pub sigil_exec_id: String,
    pub sigil_cgroup: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigil_pod_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigil_container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sigil_binary_sha256: Option<String>,
    /// The pod's namespace, service account and name (from the API server or `--pods`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigil_k8s_ns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigil_k8s_sa: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigil_k8s_pod: Option<String>,
    /// The run key (`k8s/<ns>/job/<job>`, ...): which run the token was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigil_run: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

pub fn sign(keys: &KeyManager, claims: &Claims) -> Result<String, JwtError> {
    let kid = keys.active_kid().ok_or_else(|| JwtError::Key("no signing key".into()))?;
    let mut used_kid = String::new();
    let token = encode(&kid, claims, |input| {
        let (k, sig) = keys.sign(input)?;
        used_kid = k;
        Ok(sig)
    })?;
    if used_kid != kid {
        // Rotation happened between reading the kid and signing: sign again with the
        // header naming the key that actually signs.
        return sign(keys, claims);
    }
    Ok(token)
}

/// The compact JWS for `claims` under key `kid`; `sign` turns the signing input into an
/// ES256 (r||s) signature. Shared by the agent's own keys and the cluster signer.
pub fn encode(kid: &str, claims: &Claims, sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, KeyError>) -> Result<String, JwtError> {
    let header = Header { alg: "ES256".into(), kid: kid.to_owned(), typ: Some("JWT".into()) };
    let head = B64.encode(serde_json::to_vec(&header).map_err(|_| JwtError::Malformed)?);
    let body = B64.encode(serde_json::to_vec(claims).map_err(|_| JwtError::Malformed)?);
    let input = format!("{head}.{body}");
    let sig = sign(input.as_bytes())?;
    Ok(format!("{input}.{}", B64.encode(sig)))
}

/// Where a verifier finds the public key a token names.
pub trait PublicKeys {
    /// The uncompressed P-256 point for `kid`, if that key is published.
    fn public_key(&self, kid: &str) -> Option<Vec<u8>>;
}

impl PublicKeys for KeyManager {
    fn public_key(&self, kid: &str) -> Option<Vec<u8>> {
        KeyManager::public_key(self, kid)
    }
}

/// A token split and decoded, not yet verified.
struct Parts<'a> {
    header: Header,
    claims: Map<String, Value>,
    /// `base64(header) "." base64(claims)`: what the signature covers.
    signing_input: &'a str,
    signature: Vec<u8>,
}

fn parts(token: &str) -> Result<Parts<'_>, JwtError> {
    let mut it = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(JwtError::Malformed);
    };
    let header: Header = serde_json::from_slice(&B64.decode(h).map_err(|_| JwtError::Malformed)?).map_err(|_| JwtError::Malformed)?;
    let claims: Map<String, Value> = serde_json::from_slice(&B64.decode(c).map_err(|_| JwtError::Malformed)?).map_err(|_| JwtError::Malformed)?;
    let sig = B64.decode(s).map_err(|_| JwtError::Malformed)?;
    Ok(Parts { header, claims, signing_input: &token[..h.len() + 1 + c.len()], signature: sig })
}

/// Verifies signature, expiry and audience; returns the claims.
pub fn verify(keys: &(impl PublicKeys + ?Sized), token: &str, audience: &str, now: i64) -> Result<Map<String, Value>, JwtError> {
    let Parts { header, claims, signing_input: input, signature: sig } = parts(token)?;
    if header.alg != "ES256" {
        return Err(JwtError::Algorithm(header.alg));
    }
    let pk = keys.public_key(&header.kid).ok_or(JwtError::UnknownKey(header.kid))?;
    if !keys::verify(&pk, input.as_bytes(), &sig) {
        return Err(JwtError::Signature);
    }
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or(JwtError::Claim("exp"))?;
    if exp <= now {
        return Err(JwtError::Expired);
    }
    claims.get("sub").and_then(Value::as_str).ok_or(JwtError::Claim("sub"))?;
    let aud: Audience = claims.get("aud").cloned().and_then(|v| serde_json::from_value(v).ok()).ok_or(JwtError::Claim("aud"))?;
    if !aud.contains(audience) {
        return Err(JwtError::Audience(audience.to_owned()));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "https://sigil.test".into(),
            sub: "spiffe://sigil.test/payments".into(),
            aud: Audience::One("sts.amazonaws.com".into()),
            exp,
            iat: exp - 300,
            jti: "abc".into(),
            sigil_node: "n1".into(),
            sigil_exec_id: "b:1:2:3".into(),
            sigil_cgroup: "/kubepods.slice/x".into(),
            sigil_pod_uid: Some("uid".into()),
            sigil_container_id: None,
            sigil_binary_sha256: Some("00".repeat(32)),
            sigil_k8s_ns: Some("payments".into()),
            sigil_k8s_sa: None,
            sigil_k8s_pod: None,
            sigil_run: None,
        }
    }

    fn keys() -> KeyManager {
        KeyManager::new(Duration::from_secs(3600), Duration::from_secs(3600)).expect("keys")
    }

    #[test]
    fn round_trip_and_claims_survive() {
        let km = keys();
        let t = sign(&km, &claims(2_000)).expect("sign");
        let c = verify(&km, &t, "sts.amazonaws.com", 1_000).expect("verify");
        assert_eq!(c["sub"], "spiffe://sigil.test/payments");
        assert_eq!(c["aud"], "sts.amazonaws.com");
        assert_eq!(c["sigil_pod_uid"], "uid");
        assert!(c.get("sigil_container_id").is_none());
    }

    #[test]
    fn every_kind_of_bad_token_is_refused() {
        let km = keys();
        let t = sign(&km, &claims(2_000)).expect("sign");
        assert_eq!(verify(&km, &t, "sts.amazonaws.com", 2_000), Err(JwtError::Expired));
        assert_eq!(verify(&km, &t, "other", 1_000), Err(JwtError::Audience("other".into())));
        assert_eq!(verify(&km, "a.b", "x", 0), Err(JwtError::Malformed));
        assert_eq!(verify(&km, "a.b.c.d", "x", 0), Err(JwtError::Malformed));
        assert_eq!(verify(&km, "!!.??.**", "x", 0), Err(JwtError::Malformed));
        // Tampered claims: same signature over different content.
        let mut p: Vec<&str> = t.split('.').collect();
        let other = B64.encode(serde_json::to_vec(&claims(9_999)).expect("json"));
        p[1] = &other;
        assert_eq!(verify(&km, &p.join("."), "sts.amazonaws.com", 1_000), Err(JwtError::Signature));
        // A token from another key set.
        let foreign = sign(&keys(), &claims(2_000)).expect("sign");
        assert!(matches!(verify(&km, &foreign, "sts.amazonaws.com", 1_000), Err(JwtError::UnknownKey(_))));
        // alg=none is never accepted.
        let none = format!("{}.{}.", B64.encode(br#"{"alg":"none"}"#), p[1]);
        assert_eq!(verify(&km, &none, "x", 0), Err(JwtError::Algorithm("none".into())));
    }

    #[test]
    fn audience_list_or_string() {
        assert!(Audience::from_list(vec!["a".into(), "b".into()]).contains("b"));
        assert_eq!(Audience::from_list(vec!["a".into()]), Audience::One("a".into()));
    }
}
