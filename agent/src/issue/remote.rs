//! Fleet mode: the agent attests and decides, the cluster signer (in the collector) signs.
//!
//! The request goes over the agent's mTLS channel, so the signer knows which node asks
//! from the client certificate. Tokens are cached per (SPIFFE ID, audience set, run):
//! a cached token is served while more than half of its lifetime is left, and, while the
//! signer is unreachable, for as long as it is still valid. The run (cgroup and binary
//! digest) is part of the key because a token names the run it was issued to; a cached
//! token is never handed to another workload entitled to the same SPIFFE ID.

use std::{
    collections::HashMap,
    sync::{Mutex, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;
use sigil_proto::v1::{Evidence, KeysRequest, SignJwtRequest, signer_client::SignerClient};
use tonic::{Code, transport::Channel};

use super::{
    jwt::{Audience, Claims, PublicKeys},
    keys::{self, Jwk},
    signing::{SignError, Signed, TokenSigner},
};

/// How long one call to the signer may take before the agent answers UNAVAILABLE.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A cached token must have at least this much left to be served while the signer is down.
const MIN_LEFT_WHEN_DOWN: i64 = 5;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    spiffe_id: String,
    audience: Vec<String>,
    cgroup: String,
    binary_sha256: Option<String>,
}

impl CacheKey {
    fn of(c: &Claims) -> Self {
        let mut audience = audience_list(&c.aud);
        audience.sort();
        audience.dedup();
        Self { spiffe_id: c.sub.clone(), audience, cgroup: c.sigil_cgroup.clone(), binary_sha256: c.sigil_binary_sha256.clone() }
    }
}

fn audience_list(a: &Audience) -> Vec<String> {
    match a {
        Audience::One(s) => vec![s.clone()],
        Audience::Many(l) => l.clone(),
    }
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The signer's published keys, as last fetched.
#[derive(Default)]
struct Published {
    issuer: String,
    /// (kid, uncompressed point)
    keys: Vec<(String, Vec<u8>)>,
}

#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<JwkDoc>,
}

#[derive(Deserialize)]
struct JwkDoc {
    kid: String,
    x: String,
    y: String,
}

pub struct RemoteSigner {
    url: String,
    node: String,
    client: SignerClient<Channel>,
    rt: tokio::runtime::Handle,
    cache: Mutex<HashMap<CacheKey, Signed>>,
    published: RwLock<Published>,
}

impl RemoteSigner {
    /// `channel` is the agent's (lazily connecting) mTLS channel to the signer.
    pub fn new(url: String, node: String, channel: Channel, rt: tokio::runtime::Handle) -> Self {
        Self { url, node, client: SignerClient::new(channel), rt, cache: Mutex::default(), published: RwLock::default() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The issuer URL the signer writes into tokens (empty until keys were fetched).
    pub fn issuer(&self) -> String {
        self.published.read().map(|p| p.issuer.clone()).unwrap_or_default()
    }

    fn cached(&self, key: &CacheKey, min_left: impl Fn(&Signed) -> i64) -> Option<Signed> {
        let now = now_unix();
        let cache = self.cache.lock().ok()?;
        let hit = cache.get(key)?;
        (hit.claims.exp - now > min_left(hit)).then(|| Signed { fresh: false, ..hit.clone() })
    }

    /// A cached token with more than half of its lifetime left: served again.
    fn reusable(&self, key: &CacheKey) -> Option<Signed> {
        self.cached(key, |s| (s.claims.exp - s.claims.iat) / 2)
    }

    fn unavailable(&self, why: &str) -> SignError {
        SignError::Unavailable(format!("the cluster signer at {} is unreachable ({why}) and no cached token for this identity and audience is valid", self.url))
    }

    fn call(&self, req: SignJwtRequest) -> Result<sigil_proto::v1::SignJwtResponse, tonic::Status> {
        let mut client = self.client.clone();
        self.rt.block_on(async move {
            match tokio::time::timeout(CALL_TIMEOUT, client.sign_jwt(req)).await {
                Ok(r) => r.map(tonic::Response::into_inner),
                Err(_) => Err(tonic::Status::deadline_exceeded("no answer within 5 s")),
            }
        })
    }
}

impl PublicKeys for RemoteSigner {
    fn public_key(&self, kid: &str) -> Option<Vec<u8>> {
        let p = self.published.read().ok()?;
        p.keys.iter().find(|(k, _)| k == kid).map(|(_, point)| point.clone())
    }
}

impl TokenSigner for RemoteSigner {
    fn sign_now(&self, claims: Claims) -> Option<Result<Signed, SignError>> {
        self.reusable(&CacheKey::of(&claims)).map(Ok)
    }

    fn sign(&self, claims: Claims) -> Result<Signed, SignError> {
        let key = CacheKey::of(&claims);
        if let Some(hit) = self.reusable(&key) {
            return Ok(hit);
        }
        let req = SignJwtRequest {
            node: self.node.clone(),
            spiffe_id: claims.sub.clone(),
            audience: audience_list(&claims.aud),
            ttl_seconds: claims.exp - claims.iat,
            evidence: Some(Evidence {
                exec_id: claims.sigil_exec_id.clone(),
                cgroup: claims.sigil_cgroup.clone(),
                pod_uid: claims.sigil_pod_uid.clone().unwrap_or_default(),
                container_id: claims.sigil_container_id.clone().unwrap_or_default(),
                binary_sha256: claims.sigil_binary_sha256.clone().unwrap_or_default(),
                k8s_namespace: claims.sigil_k8s_ns.clone().unwrap_or_default(),
                k8s_service_account: claims.sigil_k8s_sa.clone().unwrap_or_default(),
                k8s_pod_name: claims.sigil_k8s_pod.clone().unwrap_or_default(),
                run: claims.sigil_run.clone().unwrap_or_default(),
            }),
        };
        let resp = match self.call(req) {
            Ok(r) => r,
            Err(s) => {
                return match s.code() {
                    Code::PermissionDenied | Code::InvalidArgument => {
                        Err(SignError::Refused(format!("the cluster signer at {} refused: {}", self.url, s.message())))
                    }
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                        // Still valid: better a token past its half-life than none.
                        self.cached(&key, |_| MIN_LEFT_WHEN_DOWN).ok_or_else(|| self.unavailable(s.message()))
                    }
                    _ => Err(SignError::Internal(format!("the cluster signer at {} failed: {}", self.url, s.message()))),
                };
            }
        };
        let signed = Signed {
            token: resp.token,
            kid: resp.kid,
            claims: Claims { iss: resp.issuer, jti: resp.jti, iat: resp.issued_at, exp: resp.expires_at, sigil_node: self.node.clone(), ..claims },
            fresh: true,
        };
        // A key we have not seen yet (a rotation, or the first token): refresh the bundle
        // so FetchJWTBundles and ValidateJWTSVID know it before the workload asks.
        if self.public_key(&signed.kid).is_none()
            && let Err(e) = self.maintain()
        {
            tracing::warn!("refreshing the signer's keys: {e}");
        }
        if let Ok(mut cache) = self.cache.lock() {
            let now = now_unix();
            cache.retain(|_, s| s.claims.exp > now);
            cache.insert(key, signed.clone());
        }
        Ok(signed)
    }

    fn jwks(&self, use_: &'static str) -> Vec<Jwk> {
        let Ok(p) = self.published.read() else { return Vec::new() };
        p.keys.iter().map(|(_, point)| Jwk::from_public(point, use_)).collect()
    }

    /// The signer decides which of its published keys signs.
    fn active_kid(&self) -> Option<String> {
        None
    }

    fn maintain(&self) -> Result<bool, String> {
        let mut client = self.client.clone();
        let resp = self
            .rt
            .block_on(async move { tokio::time::timeout(CALL_TIMEOUT, client.keys(KeysRequest {})).await })
            .map_err(|_| format!("the cluster signer at {} did not answer within 5 s", self.url))?
            .map_err(|s| format!("the cluster signer at {} is unreachable: {}", self.url, s.message()))?
            .into_inner();
        let doc: JwksDoc = serde_json::from_slice(&resp.jwks).map_err(|e| format!("the cluster signer's JWKS is malformed: {e}"))?;
        let mut keys = Vec::with_capacity(doc.keys.len());
        for k in doc.keys {
            let point = keys::point_from(&k.x, &k.y).ok_or_else(|| format!("key {} is not a P-256 point", k.kid))?;
            keys.push((k.kid, point));
        }
        let mut p = self.published.write().map_err(|_| "published keys poisoned".to_owned())?;
        let changed = p.keys != keys || p.issuer != resp.issuer;
        *p = Published { issuer: resp.issuer, keys };
        Ok(changed)
    }
}
