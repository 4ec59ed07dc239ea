//! `sigil.v1.Signer`: signs JWT-SVIDs that agents decided to issue, for the node their
//! certificate names, and only for SPIFFE IDs the registration entries allow there.
//!
//! The agent attests the caller (the signer cannot see the node's kernel); the signer
//! enforces what only it can: a node's credentials never buy another node's identities.
//! Every refusal is stored as a `token_denied` event with `source: "signer"`.

use std::{path::Path, sync::Arc};

use ring::rand::{SecureRandom, SystemRandom};
use sigil_agent::issue::{
    jwt::{Audience, Claims},
    policy::{self, Policy, PolicyError, Selector},
    watched::{Refresh, Watched},
};
use sigil_proto::{
    EventBody,
    v1::{self, KeysRequest, KeysResponse, SignJwtRequest, SignJwtResponse, signer_server::Signer},
};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::keystore::KeyStore;
use crate::{
    node_identity::{self, NodeError},
    server::Shared,
    store::{AgentEvent, sqlite::now_unix},
};

pub struct SignerService {
    keys: Arc<KeyStore>,
    policy: Watched<Policy, PolicyError>,
    issuer: String,
    shared: Shared,
    rng: SystemRandom,
}

/// Why the signer refused: stable names, stored as the denial's reason.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    NoEntry,
    NotAllowedOnNode,
    WrongNode,
    BadRequest,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::NoEntry => "no_entry_for_spiffe_id",
            Refusal::NotAllowedOnNode => "not_allowed_on_node",
            Refusal::WrongNode => "node_mismatch",
            Refusal::BadRequest => "bad_request",
        }
    }

    /// The contract's reason (`DENY_REASON_<name>`): the same name in the stored event.
    fn contract(self) -> v1::DenyReason {
        match self {
            Refusal::NoEntry => v1::DenyReason::NoEntryForSpiffeId,
            Refusal::NotAllowedOnNode => v1::DenyReason::NotAllowedOnNode,
            Refusal::WrongNode => v1::DenyReason::NodeMismatch,
            Refusal::BadRequest => v1::DenyReason::BadRequest,
        }
    }
}

impl SignerService {
    pub fn new(keys: Arc<KeyStore>, policy_path: &Path, issuer: String, shared: Shared) -> Result<Self, PolicyError> {
        let policy = Watched::load(policy_path, policy::parse).map_err(|mut e| {
            e.file = format!("{}: ", policy_path.display());
            e
        })?;
        Ok(Self { keys, policy, issuer, shared, rng: SystemRandom::new() })
    }

    fn current_policy(&self) -> Arc<Policy> {
        let (p, refresh) = self.policy.current();
        match refresh {
            Refresh::Unchanged => {}
            Refresh::Reloaded => info!("signer: reloaded {}", self.policy.path().display()),
            Refresh::Rejected(e) => warn!("signer: refused {} and kept the previous version: {e}", self.policy.path().display()),
        }
        p
    }

    /// The longest lifetime the entries for `spiffe_id` allow on `node`, or why none does.
    fn entitlement(&self, node: &str, spiffe_id: &str) -> Result<i64, (Refusal, String)> {
        let policy = self.current_policy();
        let entries: Vec<_> = policy.entries.iter().filter(|e| e.spiffe_id == spiffe_id).collect();
        if entries.is_empty() {
            return Err((Refusal::NoEntry, format!("no registration entry for {spiffe_id}")));
        }
        let nodes_of =
            |e: &&policy::Entry| -> Vec<String> { e.selectors.iter().filter_map(|s| if let Selector::Node(n) = s { Some(n.clone()) } else { None }).collect() };
        let allowed = entries.iter().filter(|e| nodes_of(e).iter().all(|n| n == node));
        match allowed.map(|e| e.ttl.as_secs() as i64).max() {
            Some(ttl) => Ok(ttl),
            None => {
                let bound: Vec<String> = entries.iter().flat_map(nodes_of).collect();
                Err((Refusal::NotAllowedOnNode, format!("{spiffe_id} is registered for node(s) {}; this request comes from node {node}", bound.join(", "))))
            }
        }
    }

    /// Stores the refusal as an event of the (authenticated) node that asked.
    async fn refuse(&self, node: &str, req: &SignJwtRequest, reason: Refusal, detail: String) -> Status {
        warn!(node, spiffe_id = %req.spiffe_id, reason = reason.as_str(), "signer refused: {detail}");
        let mut id = [0u8; 16];
        let _ = self.rng.fill(&mut id);
        let ev = v1::TokenDenied {
            source: Some("signer".into()),
            time: time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            node: node.to_owned(),
            reason: reason.contract() as i32,
            detail,
            requested_spiffe_id: Some(req.spiffe_id.clone()),
            audience: req.audience.clone(),
            audience_count: req.audience.len() as u64,
            process: req.evidence.as_ref().map(|e| v1::ProcessRef { exec_id: e.exec_id.clone(), ..Default::default() }),
            peer_pid: 0,
        };
        let detail = ev.detail.clone();
        let event = AgentEvent { id: format!("signer-{}", hex::encode(id)), body: EventBody::TokenDenied(ev) };
        if let Err(e) = crate::server::push(&self.shared, node.to_owned(), vec![event]).await {
            warn!("could not store the signer's refusal: {e}");
        }
        Status::permission_denied(format!("{}: {detail}", reason.as_str()))
    }
}

#[tonic::async_trait]
impl Signer for SignerService {
    async fn sign_jwt(&self, req: Request<SignJwtRequest>) -> Result<Response<SignJwtResponse>, Status> {
        let node = node_identity::authenticated_node(&req, &req.get_ref().node);
        let body = req.into_inner();
        let node = match node {
            Ok(n) => n,
            Err(NodeError::Mismatch { authenticated, claimed }) => {
                self.shared.counters.node_mismatch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let detail = format!("certificate names node {authenticated:?}, request claims {claimed:?}");
                return Err(self.refuse(&authenticated, &body, Refusal::WrongNode, detail).await);
            }
            Err(e) => return Err(e.into()),
        };
        if body.audience.is_empty() || body.audience.iter().any(String::is_empty) {
            return Err(self.refuse(&node, &body, Refusal::BadRequest, "a JWT-SVID needs at least one audience".into()).await);
        }
        let entry_ttl = match self.entitlement(&node, &body.spiffe_id) {
            Ok(t) => t,
            Err((reason, detail)) => return Err(self.refuse(&node, &body, reason, detail).await),
        };
        // The agent's entry, the signer's entry and the signer's ceiling: the shortest wins.
        let ttl = [entry_ttl, self.keys.max_ttl(), if body.ttl_seconds > 0 { body.ttl_seconds } else { i64::MAX }].into_iter().min().unwrap_or(entry_ttl);
        let mut jti = [0u8; 16];
        self.rng.fill(&mut jti).map_err(|_| Status::internal("the system random number generator failed"))?;
        let ev = body.evidence.unwrap_or_default();
        let non_empty = |s: String| Some(s).filter(|s| !s.is_empty());
        let iat = now_unix();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: body.spiffe_id,
            aud: Audience::from_list(body.audience),
            exp: iat + ttl,
            iat,
            jti: hex::encode(jti),
            sigil_node: node,
            sigil_exec_id: ev.exec_id,
            sigil_cgroup: ev.cgroup,
            sigil_pod_uid: non_empty(ev.pod_uid),
            sigil_container_id: non_empty(ev.container_id),
            sigil_binary_sha256: non_empty(ev.binary_sha256),
            sigil_k8s_ns: non_empty(ev.k8s_namespace),
            sigil_k8s_sa: non_empty(ev.k8s_service_account),
            sigil_k8s_pod: non_empty(ev.k8s_pod_name),
            sigil_run: non_empty(ev.run),
        };
        let (token, kid) = self.keys.sign(&claims).map_err(|e| Status::internal(format!("signing failed: {e}")))?;
        Ok(Response::new(SignJwtResponse { token, kid, jti: claims.jti, issuer: claims.iss, issued_at: claims.iat, expires_at: claims.exp }))
    }

    async fn keys(&self, _req: Request<KeysRequest>) -> Result<Response<KeysResponse>, Status> {
        let jwks = serde_json::json!({ "keys": self.keys.jwks("jwt-svid") }).to_string().into_bytes();
        Ok(Response::new(KeysResponse { issuer: self.issuer.clone(), jwks }))
    }
}
