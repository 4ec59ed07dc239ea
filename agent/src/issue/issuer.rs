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
    limits::{MAX_AUDIENCE_LEN, MAX_AUDIENCES, MAX_DETAIL, MAX_EVENT_AUDIENCES, MAX_EVENT_FIELD, truncated},
    peer::Peer,
    policy::{self, DenyReason, PodMeta, Policy, PolicyError, Subject},
    signing::{SignError, TokenSigner},
    watched::{Refresh, Watched},
};
use sigil_proto::EventBody;

use crate::{
    attest::{Attestor, record::ProcessRecord},
    k8s::{Lookup, PodCache},
    output::Sink,
};

/// The run an issuance event is about, with the pod metadata the decision used (fresher
/// than the record's when the pod was described after its exec).
fn process_ref(process: &ProcessRecord, meta: Option<&PodMeta>) -> ProcessRef {
    let mut r = ProcessRef::from(process);
    if let Some(m) = meta {
        r.run = m.run_key();
        r.pod = Some(m.into());
    }
    r
}

fn fill_from_file(cache: &PodCache, pods: &HashMap<String, PodMeta>) {
    cache.replace_all(pods.iter().map(|(uid, meta)| (vec![uid.clone()], meta.clone())).collect());
}

/// A refused request: why, in words a workload operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenyReason,
    pub detail: String,
}

/// Where a request is decided. `Now` is the gRPC task itself, where nothing may block;
/// a step that could (hashing an executable not attested yet, waiting for the pod watch,
/// re-reading a script, asking the cluster signer for a token it has not cached) stops
/// the decision there, before anything was emitted, and the request is decided again on
/// a blocking thread. Requests from attested workloads, nearly all of them, skip the
/// thread hop: about a fifth of a token's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Now,
    MayBlock,
}

/// Why a decision stopped short of issuing.
enum Stop {
    Denied(Denial),
    /// `Mode::Now` reached a step that may block.
    WouldBlock,
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
    /// Pod metadata from the API server's watch (instead of `pods_path`).
    pub pod_cache: Option<Arc<PodCache>>,
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
    signer: Arc<dyn TokenSigner>,
    pod_cache: Option<Arc<PodCache>>,
    /// The `--pods` file's pods, for attestation records (refilled on each reload).
    file_pods: Option<Arc<PodCache>>,
    sink: Arc<dyn Sink>,
    rng: SystemRandom,
    issued: AtomicU64,
    denied: Mutex<HashMap<DenyReason, u64>>,
    /// Token lifetimes, for the metrics histogram (set once metrics exist).
    lifetime: std::sync::OnceLock<opentelemetry::metrics::Histogram<f64>>,
}

fn exec_since_connect(pid: u32) -> String {
    format!("pid {pid} exec'd since it connected to the Workload API; a connection speaks for the exec that opened it")
}

/// The script the record names still has the digest the record holds.
fn script_unchanged(process: &crate::attest::record::ProcessRecord) -> Result<(), String> {
    let Some(script) = &process.script else { return Err("no script was recorded for this exec".into()) };
    let now = crate::attest::script::hash_file(&format!("/proc/{}/root{}", process.pid, script.path))?;
    if Some(&now.0) != script.sha256.as_ref() || Some(now.1) != script.inode {
        return Err(format!("the script {} changed since the process was started on it", script.path));
    }
    Ok(())
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
    pub fn new(cfg: IssuerConfig, attestor: Arc<Attestor>, signer: Arc<dyn TokenSigner>, sink: Arc<dyn Sink>) -> Result<Self, PolicyError> {
        let policy = Watched::load(&cfg.policy_path, policy::parse).map_err(|e| with_path(&cfg.policy_path, e))?;
        let pods = match &cfg.pods_path {
            Some(p) => Some(Watched::load(p, policy::parse_pods).map_err(|e| with_path(p, e))?),
            None => None,
        };
        let file_pods = pods.as_ref().map(|w| {
            let cache = Arc::new(PodCache::new(std::time::Duration::ZERO));
            fill_from_file(&cache, &w.current().0);
            cache
        });
        Ok(Self {
            node: cfg.node,
            issuer_url: cfg.issuer_url,
            attestor,
            policy,
            pods,
            signer,
            pod_cache: cfg.pod_cache,
            file_pods,
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

    pub fn signer(&self) -> &dyn TokenSigner {
        self.signer.as_ref()
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

    /// The caller's pod metadata. From the API server's watch, a pod the watch has not
    /// described within the cache's bounded wait (just started, or deleted) is an error:
    /// the request is refused rather than matched against missing or stale metadata.
    fn pod_meta(&self, uid: Option<&str>, mode: Mode) -> Result<Result<Option<PodMeta>, String>, Stop> {
        let Some(cache) = &self.pod_cache else { return Ok(Ok(self.pods_file_meta(uid))) };
        let Some(uid) = uid else { return Ok(Ok(None)) };
        // Only a pod the watch has not described yet is waited for.
        if mode == Mode::Now {
            return cache.get(uid).map(|m| Ok(Some((*m).clone()))).ok_or(Stop::WouldBlock);
        }
        Ok(match cache.lookup(uid) {
            Lookup::Found(m) => Ok(Some((*m).clone())),
            Lookup::Deleted => Err(format!("pod {uid} was deleted according to the API server")),
            Lookup::NotSeen { synced: true } => Err(format!("pod {uid} is not among this node's pods in the API server (waited for the watch to catch up)")),
            Lookup::NotSeen { synced: false } => Err(format!("pod {uid}: this node's pods have not been listed from the API server yet")),
        })
    }

    /// The `--pods` file as a pod cache, so attestation records carry the pods it names
    /// (None with the API server, whose cache the records use already).
    pub fn pods_file_cache(&self) -> Option<Arc<PodCache>> {
        self.file_pods.clone()
    }

    fn pods_file_meta(&self, uid: Option<&str>) -> Option<PodMeta> {
        let pods = self.pods.as_ref()?;
        let (map, refresh) = pods.current();
        if let (Refresh::Reloaded, Some(cache)) = (&refresh, &self.file_pods) {
            fill_from_file(cache, &map);
        }
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
        let _ = self.pods_file_meta(None);
    }

    /// Decides `req` without blocking the calling thread, or returns None when deciding
    /// it may block (see [`Mode`]): then call [`Self::fetch_jwt`] on a blocking thread.
    pub fn try_fetch_jwt_now(&self, peer: &Peer, req: &JwtRequest) -> Option<Result<Vec<Issued>, Denial>> {
        self.fetch_jwt_in(peer, req, Mode::Now)
    }

    /// Decides `req`; may block (procfs, hashing, the pod watch, a remote signer).
    pub fn fetch_jwt(&self, peer: &Peer, req: &JwtRequest) -> Result<Vec<Issued>, Denial> {
        self.fetch_jwt_in(peer, req, Mode::MayBlock)
            .unwrap_or_else(|| Err(Denial { reason: DenyReason::InternalError, detail: "a blocking decision was deferred".into() }))
    }

    fn fetch_jwt_in(&self, peer: &Peer, req: &JwtRequest, mode: Mode) -> Option<Result<Vec<Issued>, Denial>> {
        let span = tracing::info_span!("issue_jwt_svid", peer_pid = peer.pid, audience = ?req.audience, outcome = tracing::field::Empty);
        let _entered = span.enter();
        let result = match self.decide(peer, req, mode) {
            Ok(issued) => Ok(issued),
            Err(Stop::Denied(d)) => Err(d),
            Err(Stop::WouldBlock) => return None,
        };
        match &result {
            Ok(issued) => span.record("outcome", format!("issued {}", issued.len())),
            Err(d) => span.record("outcome", d.reason.as_str()),
        };
        Some(result)
    }

    fn decide(&self, peer: &Peer, req: &JwtRequest, mode: Mode) -> Result<Vec<Issued>, Stop> {
        let deny = |reason, detail: String, process: Option<&ProcessRecord>| Stop::Denied(self.deny(peer, req, reason, detail, process.map(ProcessRef::from)));
        if !req.has_security_header {
            return Err(deny(DenyReason::MissingSecurityHeader, "request lacks the `workload.spiffe.io: true` metadata".into(), None));
        }
        if req.audience.is_empty() || req.audience.iter().any(String::is_empty) {
            return Err(deny(DenyReason::MissingAudience, "a JWT-SVID needs at least one audience".into(), None));
        }
        if req.audience.len() > MAX_AUDIENCES || req.audience.iter().any(|a| a.len() > MAX_AUDIENCE_LEN) {
            return Err(deny(DenyReason::InvalidRequest, format!("at most {MAX_AUDIENCES} audiences of at most {MAX_AUDIENCE_LEN} bytes each"), None));
        }
        // Exec after connect: the connection belongs to the exec that connected. A
        // process that exec'd since (possibly into a registered binary, while a child of
        // its former self holds the connection) must reconnect.
        if !peer.same_exec_as_at_accept() {
            return Err(deny(DenyReason::ProcessChanged, exec_since_connect(peer.pid), None));
        }
        // Who is calling: the kernel's answer, attested now if we have not seen it yet.
        let current = |r: &ProcessRecord| peer.at_accept.describes(r);
        let attested = match mode {
            Mode::Now => Some((self.attestor.attested_where(peer.pid, current).ok_or(Stop::WouldBlock)?, false)),
            Mode::MayBlock => self.attestor.attest_running_where(peer.pid, current),
        };
        let Some((process, fresh)) = attested else {
            return Err(deny(DenyReason::UnknownProcess, format!("pid {} could not be attested", peer.pid), None));
        };
        // Attested here: this record is ours to emit (its exec event will not).
        if fresh && let Err(e) = self.sink.emit(&EventBody::from(process.as_ref())) {
            warn!("could not emit the exec record of pid {} attested on request: {e}", peer.pid);
        }
        let policy = self.current_policy();
        let meta = match self.pod_meta(process.workload.pod_uid.as_deref(), mode)? {
            Ok(m) => m,
            Err(detail) => return Err(deny(DenyReason::PodMetadataUnavailable, detail, Some(&process))),
        };
        // From here on, events name the pod as the decision saw it.
        let deny =
            |reason, detail: String, process: &ProcessRecord| Stop::Denied(self.deny(peer, req, reason, detail, Some(process_ref(process, meta.as_ref()))));
        let subject = Subject { node: &self.node, process: &process, pod: meta.as_ref() };
        let entries = match policy.evaluate(&subject, req.spiffe_id.as_deref()) {
            Ok(e) => e,
            Err((reason, detail)) => return Err(deny(reason, detail, &process)),
        };

        // A script hash was taken when the exec was attested; the file may have been
        // rewritten since. Sign only if it still holds.
        if entries.iter().any(|e| e.selectors.iter().any(|s| matches!(s, policy::Selector::ScriptSha256(_)))) {
            if mode == Mode::Now {
                return Err(Stop::WouldBlock);
            }
            if let Err(why) = script_unchanged(&process) {
                return Err(deny(DenyReason::ProcessChanged, why, &process));
            }
        }

        let iat = now_unix();
        let mut out = Vec::with_capacity(entries.len());
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            let ttl = entry.ttl.as_secs() as i64;
            let jti = self.jti().map_err(|e| deny(DenyReason::InternalError, e, &process))?;
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
                sigil_k8s_ns: meta.as_ref().and_then(|m| m.namespace.clone()),
                sigil_k8s_sa: meta.as_ref().and_then(|m| m.service_account.clone()),
                sigil_k8s_pod: meta.as_ref().and_then(|m| m.name.clone()),
                sigil_run: meta.as_ref().and_then(PodMeta::run_key),
            };
            let signed = match mode {
                Mode::Now => self.signer.sign_now(claims).ok_or(Stop::WouldBlock)?,
                Mode::MayBlock => self.signer.sign(claims),
            };
            let signed = signed.map_err(|e| {
                let reason = match &e {
                    SignError::Unavailable(_) => DenyReason::SignerUnavailable,
                    SignError::Refused(_) => DenyReason::SignerRefused,
                    SignError::Internal(_) => DenyReason::InternalError,
                };
                deny(reason, e.to_string(), &process)
            })?;
            // A token served again from the fleet cache was reported when it was issued.
            if signed.fresh {
                let c = &signed.claims;
                events.push(TokenIssued {
                    time: now_rfc3339(),
                    node: self.node.clone(),
                    jti: c.jti.clone(),
                    spiffe_id: entry.spiffe_id.clone(),
                    audience: req.audience.clone(),
                    issuer: c.iss.clone(),
                    kid: signed.kid.clone(),
                    issued_at: c.iat,
                    expires_at: c.exp,
                    ttl_seconds: c.exp - c.iat,
                    entry_line: entry.line as u64,
                    process: Some(process_ref(&process, meta.as_ref())),
                });
            }
            out.push(Issued { spiffe_id: entry.spiffe_id.clone(), token: signed.token, hint: entry.hint.clone() });
        }

        // Still the same process? Read procfs first, then ask the pidfd: if the process is
        // still alive after the read, the read was about it and not a pid successor.
        if !peer.same_exec_as_at_accept() {
            return Err(deny(DenyReason::ProcessChanged, exec_since_connect(peer.pid), &process));
        }
        if !peer.at_accept.describes(&process) || !peer.still_alive() {
            return Err(deny(DenyReason::ProcessChanged, "the calling process exited or exec'd another binary while its request was decided".into(), &process));
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

    fn deny(&self, peer: &Peer, req: &JwtRequest, reason: DenyReason, detail: String, process: Option<ProcessRef>) -> Denial {
        if let Ok(mut d) = self.denied.lock() {
            *d.entry(reason).or_default() += 1;
        }
        // The request is the caller's to fill: what it can put into an event is bounded.
        let ev = TokenDenied {
            time: now_rfc3339(),
            node: self.node.clone(),
            reason: sigil_proto::v1::DenyReason::from(reason) as i32,
            detail: truncated(&detail, MAX_DETAIL),
            audience: req.audience.iter().take(MAX_EVENT_AUDIENCES).map(|a| truncated(a, MAX_EVENT_FIELD)).collect(),
            audience_count: req.audience.len() as u64,
            requested_spiffe_id: req.spiffe_id.as_deref().map(|s| truncated(s, MAX_EVENT_FIELD)),
            source: None,
            peer_pid: peer.pid,
            process,
        };
        if let Err(e) = self.sink.emit(&EventBody::TokenDenied(ev)) {
            warn!("could not emit token_denied: {e}");
        }
        Denial { reason, detail: truncated(&detail, MAX_DETAIL) }
    }

    /// ValidateJWTSVID: signature by a published key, not expired, audience, and a subject
    /// in this trust domain.
    pub fn validate(&self, token: &str, audience: &str) -> Result<(String, Map<String, Value>), JwtError> {
        let claims = jwt::verify(self.signer.as_ref(), token, audience, now_unix())?;
        let sub = claims.get("sub").and_then(Value::as_str).ok_or(JwtError::Claim("sub"))?.to_owned();
        if !sub.starts_with(&format!("spiffe://{}/", self.trust_domain())) {
            return Err(JwtError::Claim("sub"));
        }
        Ok((sub, claims))
    }

    /// The SPIFFE JWT bundle (JWKS with `use: jwt-svid`) for this trust domain.
    pub fn jwt_bundle(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": self.signer.jwks("jwt-svid") })).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::{io, time::Duration};

    use tokio::net::UnixStream;

    use super::*;
    use crate::{issue::keys::KeyManager, issue::signing::LocalSigner, output::Sink};

    /// Records the kinds of the events emitted.
    #[derive(Default)]
    struct Kinds(Mutex<Vec<&'static str>>);

    impl Sink for Kinds {
        fn emit(&self, event: &EventBody) -> io::Result<()> {
            self.0.lock().map_err(|_| io::Error::other("poisoned"))?.push(event.kind());
            Ok(())
        }
    }

    /// A caller the agent has not attested yet cannot be decided without blocking (its
    /// binary must be hashed): the inline attempt gives up before emitting anything, and
    /// the blocking decision attests and issues. The next request is decided inline,
    /// from the attested record, and a request that is refused inline is refused the same.
    #[tokio::test]
    async fn a_caller_not_attested_yet_is_decided_on_a_blocking_thread_then_inline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("policy.toml");
        let exe = std::fs::canonicalize(std::env::current_exe().expect("exe")).expect("canonical");
        std::fs::write(
            &policy,
            format!("trust_domain = \"t.test\"\n[[entry]]\nspiffe_id = \"spiffe://t.test/me\"\nselectors = [\"unix:path:{}\"]\n", exe.display()),
        )
        .expect("policy");
        let attestor = Arc::new(Attestor::new("node".into(), std::path::Path::new("/sys/fs/cgroup"), 64, 1 << 30));
        let keys = KeyManager::new(Duration::from_secs(3600), Duration::from_secs(600)).expect("keys");
        let sink = Arc::new(Kinds::default());
        let cfg = IssuerConfig { node: "node".into(), issuer_url: "https://t.invalid".into(), policy_path: policy, pods_path: None, pod_cache: None };
        let issuer = Issuer::new(cfg, attestor, Arc::new(LocalSigner(Arc::new(keys))), sink.clone()).expect("issuer");
        let (a, _b) = UnixStream::pair().expect("pair");
        let peer = Peer::of(&a).expect("peer");
        let req = |aud: &str, header| JwtRequest { audience: vec![aud.into()], spiffe_id: None, has_security_header: header };
        let emitted = || sink.0.lock().expect("sink").clone();

        assert!(issuer.try_fetch_jwt_now(&peer, &req("a", true)).is_none(), "an unattested caller was decided inline");
        assert!(emitted().is_empty(), "a deferred decision emitted {:?}", emitted());
        let issued = issuer.fetch_jwt(&peer, &req("a", true)).expect("issued on a blocking thread");
        assert_eq!(issued[0].spiffe_id, "spiffe://t.test/me");
        assert_eq!(emitted(), ["process_exec", "token_issued"]);

        let issued = issuer.try_fetch_jwt_now(&peer, &req("b", true)).expect("decided inline").expect("issued inline");
        assert_eq!(issued[0].spiffe_id, "spiffe://t.test/me");
        let refused = issuer.try_fetch_jwt_now(&peer, &req("c", false)).expect("decided inline").expect_err("no header");
        assert_eq!(refused.reason, DenyReason::MissingSecurityHeader);
        assert_eq!(emitted(), ["process_exec", "token_issued", "token_issued", "token_denied"]);
    }
}
