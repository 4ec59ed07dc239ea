//! The issuance decision: who is calling (from the kernel), what are they entitled to
//! (policy), and a final check that the caller is still the process we decided about.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use serde_json::{Map, Value};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tracing::{info, warn};

use super::{
    events::{ConfigChange, ProcessRef, TokenDenied, TokenIssued},
    jwt::{self, Audience, Claims, JwtError},
    keys::KeyManager,
    peer::Peer,
    policy::{self, DenyReason, PodMeta, Policy, PolicyError, Subject},
    watched::{Refresh, Watched},
};
use sigil_proto::EventBody;

use crate::{attest::Attestor, output::Sink};

/// A refused request: why, in words a workload operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenyReason,
    pub detail: String,
}

/// One issued JWT-SVID.
#[derive(Debug, Clone)]
pub struct Issued {
    pub spiffe_id: String,
    pub token: String,
    pub hint: String,
}

/// What a Workload API request asked for.
#[derive(Debug, Clone, Default)]
pub struct JwtRequest {
    pub audience: Vec<String>,
    pub spiffe_id: Option<String>,
    pub has_security_header: bool,
}

pub struct IssuerConfig {
    pub node: String,
    pub issuer_url: String,
    pub policy_path: PathBuf,
    pub pods_path: Option<PathBuf>,
}

/// Counters for `agent_stats` (and, later, metrics).
#[derive(Debug, Default, Clone, Serialize)]
pub struct TokenStats {
    pub issued: u64,
    pub denied: HashMap<&'static str, u64>,
}

pub struct Issuer {
    node: String,
    issuer_url: String,
    attestor: Arc<Attestor>,
    policy: Watched<Policy, PolicyError>,
    pods: Option<Watched<HashMap<String, PodMeta>, PolicyError>>,
    keys: Arc<KeyManager>,
    sink: Arc<dyn Sink>,
    rng: SystemRandom,
    issued: AtomicU64,
    denied: Mutex<HashMap<DenyReason, u64>>,
    /// Token lifetimes, for the metrics histogram (set once metrics exist).
    lifetime: std::sync::OnceLock<opentelemetry::metrics::Histogram<f64>>,
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default()
}

fn with_path(path: &std::path::Path, mut e: PolicyError) -> PolicyError {
    e.file = format!("{}: ", path.display());
    e
}

impl Issuer {
    pub fn new(
        cfg: IssuerConfig,
        attestor: Arc<Attestor>,
        keys: Arc<KeyManager>,
        sink: Arc<dyn Sink>,
    ) -> Result<Self, PolicyError> {
        let policy = Watched::load(&cfg.policy_path, policy::parse).map_err(|e| with_path(&cfg.policy_path, e))?;
        let pods = match &cfg.pods_path {
            Some(p) => Some(Watched::load(p, policy::parse_pods).map_err(|e| with_path(p, e))?),
            None => None,
        };
        Ok(Self {
            node: cfg.node,
            issuer_url: cfg.issuer_url,
            attestor,
            policy,
            pods,
            keys,
            sink,
            rng: SystemRandom::new(),
            issued: AtomicU64::new(0),
            denied: Mutex::new(HashMap::new()),
            lifetime: std::sync::OnceLock::new(),
        })
    }

    pub fn record_lifetimes_in(&self, h: opentelemetry::metrics::Histogram<f64>) {
        let _ = self.lifetime.set(h);
    }

    pub fn trust_domain(&self) -> String {
        self.current_policy().trust_domain.clone()
    }

    pub fn keys(&self) -> &KeyManager {
        &self.keys
    }

    pub fn stats(&self) -> TokenStats {
        let denied = self.denied.lock().map(|d| d.iter().map(|(r, n)| (r.as_str(), *n)).collect()).unwrap_or_default();
        TokenStats { issued: self.issued.load(Ordering::Relaxed), denied }
    }

    /// The policy in force, reloading it (and reporting the outcome) if the file changed.
    pub fn current_policy(&self) -> Arc<Policy> {
        let (p, refresh) = self.policy.current();
        self.report(self.policy.path(), refresh);
        p
    }

    fn pod_meta(&self, uid: Option<&str>) -> Option<PodMeta> {
        let pods = self.pods.as_ref()?;
        let (map, refresh) = pods.current();
        self.report(pods.path(), refresh);
        map.get(uid?).cloned()
    }

    fn report(&self, path: &std::path::Path, refresh: Refresh<PolicyError>) {
        let (outcome, error) = match refresh {
            Refresh::Unchanged => return,
            Refresh::Reloaded => {
                info!("reloaded {}", path.display());
                ("reloaded", None)
            }
            Refresh::Rejected(e) => {
                let e = with_path(path, e);
                warn!("refused {} and kept the previous version in force: {e}", path.display());
                ("rejected", Some(e.to_string()))
            }
        };
        let ev = ConfigChange { time: now_rfc3339(), node: self.node.clone(), path: path.display().to_string(), outcome: outcome.into(), error };
        if let Err(e) = self.sink.emit(&EventBody::ConfigChange(ev)) {
            warn!("could not emit config_change: {e}");
        }
    }

    /// Re-reads watched files now (called periodically so a bad edit is reported even
    /// when no workload asks for a token).
    pub fn refresh(&self) {
        let _ = self.current_policy();
        let _ = self.pod_meta(None);
    }

    pub fn fetch_jwt(&self, peer: &Peer, req: &JwtRequest) -> Result<Vec<Issued>, Denial> {
        let span = tracing::info_span!("issue_jwt_svid", peer_pid = peer.pid, audience = ?req.audience, outcome = tracing::field::Empty);
        let _entered = span.enter();
        let result = self.fetch_jwt_inner(peer, req);
        match &result {
            Ok(issued) => span.record("outcome", format!("issued {}", issued.len())),
            Err(d) => span.record("outcome", d.reason.as_str()),
        };
        result
    }

    fn fetch_jwt_inner(&self, peer: &Peer, req: &JwtRequest) -> Result<Vec<Issued>, Denial> {
        let deny = |reason, detail: String, process: Option<&crate::attest::record::ProcessRecord>| {
            self.deny(peer, req, reason, detail, process)
        };
        if !req.has_security_header {
            return Err(deny(
                DenyReason::MissingSecurityHeader,
                "request lacks the `workload.spiffe.io: true` metadata".into(),
                None,
            ));
        }
        if req.audience.is_empty() || req.audience.iter().any(String::is_empty) {
            return Err(deny(DenyReason::MissingAudience, "a JWT-SVID needs at least one audience".into(), None));
        }
        // Who is calling: the kernel's answer, attested now if we have not seen it yet.
        let Some((process, fresh)) = self.attestor.attest_running(peer.pid) else {
            return Err(deny(DenyReason::UnknownProcess, format!("pid {} could not be attested", peer.pid), None));
        };
        if fresh {
            let _ = self.sink.emit(&EventBody::from(process.as_ref()));
        }
        let policy = self.current_policy();
        let meta = self.pod_meta(process.workload.pod_uid.as_deref());
        let subject = Subject { node: &self.node, process: &process, pod: meta.as_ref() };
        let entries = match policy.evaluate(&subject, req.spiffe_id.as_deref()) {
            Ok(e) => e,
            Err((reason, detail)) => return Err(deny(reason, detail, Some(&process))),
        };

        let iat = now_unix();
        let mut out = Vec::with_capacity(entries.len());
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            let ttl = entry.ttl.as_secs() as i64;
            let jti = self.jti().map_err(|e| deny(DenyReason::InternalError, e, Some(&process)))?;
            let claims = Claims {
                iss: self.issuer_url.clone(),
                sub: entry.spiffe_id.clone(),
                aud: Audience::from_list(req.audience.clone()),
                exp: iat + ttl,
                iat,
                jti,
                sigil_node: self.node.clone(),
                sigil_exec_id: process.exec_id.clone(),
                sigil_cgroup: process.cgroup.path.clone().unwrap_or_default(),
                sigil_pod_uid: process.workload.pod_uid.clone(),
                sigil_container_id: process.workload.container_id.clone(),
                sigil_binary_sha256: process.binary.sha256.clone(),
            };
            let token = jwt::sign(&self.keys, &claims)
                .map_err(|e| deny(DenyReason::InternalError, format!("signing failed: {e}"), Some(&process)))?;
            events.push(TokenIssued {
                time: now_rfc3339(),
                node: self.node.clone(),
                jti: claims.jti.clone(),
                spiffe_id: entry.spiffe_id.clone(),
                audience: req.audience.clone(),
                issuer: self.issuer_url.clone(),
                kid: self.keys.active_kid().unwrap_or_default(),
                issued_at: iat,
                expires_at: claims.exp,
                ttl_seconds: ttl,
                entry_line: entry.line as u64,
                process: Some(ProcessRef::from(process.as_ref())),
            });
            out.push(Issued { spiffe_id: entry.spiffe_id.clone(), token, hint: entry.hint.clone() });
        }

        // Still the same process? Read procfs first, then ask the pidfd: if the process is
        // still alive after the read, the read was about it and not a pid successor.
        if !self.attestor.still_same(&process) || !peer.still_alive() {
            return Err(deny(
                DenyReason::ProcessChanged,
                "the calling process exited or exec'd another binary while its request was decided".into(),
                Some(&process),
            ));
        }
        for ev in events {
            self.issued.fetch_add(1, Ordering::Relaxed);
            if let Some(h) = self.lifetime.get() {
                h.record(ev.ttl_seconds as f64, &[]);
            }
            if let Err(e) = self.sink.emit(&EventBody::TokenIssued(ev)) {
                warn!("could not emit token_issued: {e}");
            }
        }
        Ok(out)
    }

    /// 128 random bits: unique per token, and unguessable so a jti reveals nothing.
    fn jti(&self) -> Result<String, String> {
        let mut b = [0u8; 16];
        self.rng.fill(&mut b).map_err(|_| "the system random number generator failed".to_owned())?;
        Ok(hex::encode(b))
    }

    fn deny(
        &self,
        peer: &Peer,
        req: &JwtRequest,
        reason: DenyReason,
        detail: String,
        process: Option<&crate::attest::record::ProcessRecord>,
    ) -> Denial {
        if let Ok(mut d) = self.denied.lock() {
            *d.entry(reason).or_default() += 1;
        }
        let ev = TokenDenied {
            time: now_rfc3339(),
            node: self.node.clone(),
            reason: sigil_proto::v1::DenyReason::from(reason) as i32,
            detail: detail.clone(),
            audience: req.audience.clone(),
            requested_spiffe_id: req.spiffe_id.clone(),
            peer_pid: peer.pid,
            process: process.map(ProcessRef::from),
        };
        if let Err(e) = self.sink.emit(&EventBody::TokenDenied(ev)) {
            warn!("could not emit token_denied: {e}");
        }
        Denial { reason, detail }
    }

    /// ValidateJWTSVID: signature by a published key, not expired, audience, and a subject
    /// in this trust domain.
    pub fn validate(&self, token: &str, audience: &str) -> Result<(String, Map<String, Value>), JwtError> {
        let claims = jwt::verify(&self.keys, token, audience, now_unix())?;
        let sub = claims.get("sub").and_then(Value::as_str).ok_or(JwtError::Claim("sub"))?.to_owned();
        if !sub.starts_with(&format!("spiffe://{}/", self.trust_domain())) {
            return Err(JwtError::Claim("sub"));
        }
        Ok((sub, claims))
    }

    /// The SPIFFE JWT bundle (JWKS with `use: jwt-svid`) for this trust domain.
    pub fn jwt_bundle(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": self.keys.jwks("jwt-svid") })).unwrap_or_default()
    }
}
