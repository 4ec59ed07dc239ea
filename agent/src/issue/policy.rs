//! Registration entries: which attested processes get which SPIFFE ID.
//!
//! ```toml
//! trust_domain = "sigil.example"
//! default_ttl_seconds = 300          # optional
//!
//! [[entry]]
//! spiffe_id = "spiffe://sigil.example/ns/payments/sa/checkout"
//! ttl_seconds = 120                   # optional; tokens never outlive it
//! selectors = ["k8s:ns:payments", "k8s:sa:checkout", "unix:sha256:9f86d0..."]
//! ```
//!
//! An entry matches when *all* of its selectors match the caller. Selectors use SPIRE's
//! `type:key:value` form so existing registrations read the same.

use std::{fmt, time::Duration};

use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::attest::record::ProcessRecord;

/// A policy file that cannot be used, with the line that says why.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{file}line {line}: {reason}")]
pub struct PolicyError {
    /// `path: ` prefix when known, empty otherwise.
    pub file: String,
    pub line: usize,
    pub reason: String,
}

impl From<std::io::Error> for PolicyError {
    fn from(e: std::io::Error) -> Self {
        PolicyError { file: String::new(), line: 0, reason: e.to_string() }
    }
}

pub use crate::k8s::PodMeta;

/// Everything a selector can look at.
pub struct Subject<'a> {
    pub node: &'a str,
    pub process: &'a ProcessRecord,
    pub pod: Option<&'a PodMeta>,
}

#[derive(Debug, Clone)]
pub enum Selector {
    Node(String),
    K8sNamespace(String),
    K8sServiceAccount(String),
    K8sPodName(String),
    /// `k8s:pod-label:KEY:VALUE`
    K8sPodLabel(String, String),
    /// `k8s:owner:KIND:NAME`, e.g. `k8s:owner:Deployment:checkout` (see `k8s::pod` for
    /// how owners are named).
    K8sOwner(String, String),
    K8sPodUid(String),
    K8sContainerId(String),
    CgroupPath(GlobMatcher),
    BinarySha256(String),
    BinaryPath(String),
    Uid(u32),
    Gid(u32),
    SystemdUnit(String),
    /// The `#!` script or interpreter argument the process was started on (see
    /// `attest::script` for what this does and does not prove).
    ScriptPath(String),
    ScriptSha256(String),
}

impl Selector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut it = s.splitn(3, ':');
        let (Some(kind), Some(key), Some(value)) = (it.next(), it.next(), it.next()) else {
            return Err(format!("selector {s:?} is not of the form type:key:value"));
        };
        if value.is_empty() {
            return Err(format!("selector {s:?} has an empty value"));
        }
        let v = value.to_owned();
        let number = |what| value.parse::<u32>().map_err(|_| format!("selector {s:?}: {what} must be a number"));
        // Label keys may contain `/` and `.` but never `:`, so the first `:` splits.
        let pair = |v: &str, form: &str| match v.split_once(':') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
            _ => Err(format!("selector {s:?}: the value must be {form}")),
        };
        Ok(match (kind, key) {
            ("node", "name") => Selector::Node(v),
            ("k8s", "ns") => Selector::K8sNamespace(v),
            ("k8s", "sa") => Selector::K8sServiceAccount(v),
            ("k8s", "pod-name") => Selector::K8sPodName(v),
            ("k8s", "pod-label") => {
                let (k, val) = pair(value, "KEY:VALUE")?;
                Selector::K8sPodLabel(k, val)
            }
            ("k8s", "owner") => {
                let (k, name) = pair(value, "KIND:NAME (e.g. Deployment:checkout)")?;
                Selector::K8sOwner(k, name)
            }
            ("k8s", "pod-uid") => Selector::K8sPodUid(v.to_ascii_lowercase()),
            ("k8s", "container-id") => Selector::K8sContainerId(v.to_ascii_lowercase()),
            ("cgroup", "path") => Selector::CgroupPath(Glob::new(value).map_err(|e| format!("selector {s:?}: bad glob: {e}"))?.compile_matcher()),
            ("unix", "sha256") => {
                if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("selector {s:?}: a sha256 is 64 hex digits"));
                }
                Selector::BinarySha256(v.to_ascii_lowercase())
            }
            ("unix", "path") => Selector::BinaryPath(v),
            ("unix", "script-path") => Selector::ScriptPath(v),
            ("unix", "script-sha256") => {
                if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("selector {s:?}: a sha256 is 64 hex digits"));
                }
                Selector::ScriptSha256(v.to_ascii_lowercase())
            }
            ("unix", "uid") => Selector::Uid(number("uid")?),
            ("unix", "gid") => Selector::Gid(number("gid")?),
            ("systemd", "unit") => Selector::SystemdUnit(v),
            _ => {
                return Err(format!(
                    "unknown selector type {kind}:{key} (known: node:name, k8s:ns, k8s:sa, k8s:pod-name, k8s:pod-label, k8s:owner, k8s:pod-uid, k8s:container-id, cgroup:path, unix:sha256, unix:path, unix:script-path, unix:script-sha256, unix:uid, unix:gid, systemd:unit)"
                ));
            }
        })
    }

    /// Selectors about *which binary* runs; failing only these is a hash mismatch.
    fn is_binary(&self) -> bool {
        matches!(self, Selector::BinarySha256(_) | Selector::BinaryPath(_) | Selector::ScriptPath(_) | Selector::ScriptSha256(_))
    }

    pub fn matches(&self, s: &Subject<'_>) -> bool {
        let p = s.process;
        let w = &p.workload;
        let eq = |a: &Option<String>, b: &str| a.as_deref() == Some(b);
        match self {
            Selector::Node(n) => s.node == n,
            Selector::K8sNamespace(ns) => s.pod.is_some_and(|m| eq(&m.namespace, ns)),
            Selector::K8sServiceAccount(sa) => s.pod.is_some_and(|m| eq(&m.service_account, sa)),
            Selector::K8sPodName(n) => s.pod.is_some_and(|m| eq(&m.name, n)),
            Selector::K8sPodLabel(k, v) => s.pod.is_some_and(|m| m.labels.get(k) == Some(v)),
            Selector::K8sOwner(kind, name) => s.pod.and_then(|m| m.owner.as_ref()).is_some_and(|o| o.kind == *kind && o.name == *name),
            Selector::K8sPodUid(u) => eq(&w.pod_uid, u),
            Selector::K8sContainerId(c) => eq(&w.container_id, c),
            Selector::CgroupPath(g) => p.cgroup.path.as_deref().is_some_and(|c| g.is_match(c)),
            Selector::BinarySha256(h) => eq(&p.binary.sha256, h),
            Selector::BinaryPath(path) => eq(&p.binary.path, path),
            Selector::Uid(u) => p.uid == *u,
            Selector::Gid(g) => p.gid == *g,
            Selector::SystemdUnit(u) => eq(&w.unit, u),
            Selector::ScriptPath(path) => p.script.as_ref().is_some_and(|sc| sc.path == *path),
            Selector::ScriptSha256(h) => p.script.as_ref().is_some_and(|sc| eq(&sc.sha256, h)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub spiffe_id: String,
    pub ttl: Duration,
    pub selectors: Vec<Selector>,
    /// Where the entry starts in the file (for events and errors).
    pub line: usize,
    pub hint: String,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub trust_domain: String,
    pub entries: Vec<Entry>,
}

/// Why a caller gets no token. The names are stable: they are event fields and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    NoMatchingEntry,
    BinaryHashMismatch,
    UnknownProcess,
    ProcessChanged,
    MissingAudience,
    MissingSecurityHeader,
    /// The request exceeds what the Workload API accepts (too many or too long audiences).
    InvalidRequest,
    /// The caller runs in a pod the API server has not described (yet, or any more):
    /// refused rather than matched against guessed or stale metadata.
    PodMetadataUnavailable,
    /// The agent could not sign (no key, RNG failure): not the caller's fault.
    InternalError,
    /// Fleet mode: the cluster signer is unreachable and no cached token is valid.
    SignerUnavailable,
    /// Fleet mode: the cluster signer refused (the ID is not allowed on this node).
    SignerRefused,
}

impl From<DenyReason> for sigil_proto::v1::DenyReason {
    fn from(r: DenyReason) -> Self {
        match r {
            DenyReason::NoMatchingEntry => Self::NoMatchingEntry,
            DenyReason::BinaryHashMismatch => Self::BinaryHashMismatch,
            DenyReason::UnknownProcess => Self::UnknownProcess,
            DenyReason::ProcessChanged => Self::ProcessChanged,
            DenyReason::MissingAudience => Self::MissingAudience,
            DenyReason::MissingSecurityHeader => Self::MissingSecurityHeader,
            DenyReason::InvalidRequest => Self::InvalidRequest,
            DenyReason::PodMetadataUnavailable => Self::PodMetadataUnavailable,
            DenyReason::InternalError => Self::InternalError,
            DenyReason::SignerUnavailable => Self::SignerUnavailable,
            DenyReason::SignerRefused => Self::SignerRefused,
        }
    }
}

impl DenyReason {
    pub const ALL: [DenyReason; 11] = [
        DenyReason::NoMatchingEntry,
        DenyReason::BinaryHashMismatch,
        DenyReason::UnknownProcess,
        DenyReason::ProcessChanged,
        DenyReason::MissingAudience,
        DenyReason::MissingSecurityHeader,
        DenyReason::InvalidRequest,
        DenyReason::PodMetadataUnavailable,
        DenyReason::InternalError,
        DenyReason::SignerUnavailable,
        DenyReason::SignerRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoMatchingEntry => "no_matching_entry",
            DenyReason::BinaryHashMismatch => "binary_hash_mismatch",
            DenyReason::UnknownProcess => "unknown_process",
            DenyReason::ProcessChanged => "process_changed",
            DenyReason::MissingAudience => "missing_audience",
            DenyReason::MissingSecurityHeader => "missing_security_header",
            DenyReason::InvalidRequest => "invalid_request",
            DenyReason::PodMetadataUnavailable => "pod_metadata_unavailable",
            DenyReason::InternalError => "internal_error",
            DenyReason::SignerUnavailable => "signer_unavailable",
            DenyReason::SignerRefused => "signer_refused",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str().replace('_', " "))
    }
}

impl Policy {
    /// The entries the subject is entitled to (optionally only `only_id`), or why none.
    pub fn evaluate(&self, s: &Subject<'_>, only_id: Option<&str>) -> Result<Vec<&Entry>, (DenyReason, String)> {
        let candidates: Vec<&Entry> = self.entries.iter().filter(|e| only_id.is_none_or(|id| e.spiffe_id == id)).collect();
        let matched: Vec<&Entry> = candidates.iter().copied().filter(|e| e.selectors.iter().all(|sel| sel.matches(s))).collect();
        if !matched.is_empty() {
            return Ok(matched);
        }
        // Everything but the binary matched: someone swapped what runs in a registered place.
        if let Some(e) = candidates
            .iter()
            .find(|e| e.selectors.iter().any(Selector::is_binary) && e.selectors.iter().filter(|sel| !sel.is_binary()).all(|sel| sel.matches(s)))
        {
            return Err((
                DenyReason::BinaryHashMismatch,
                format!(
                    "entry {} (line {}) is registered for another binary; this process runs {} (sha256 {})",
                    e.spiffe_id,
                    e.line,
                    s.process.binary.path.as_deref().unwrap_or("?"),
                    s.process.binary.sha256.as_deref().unwrap_or("unknown")
                ),
            ));
        }
        let detail = match only_id {
            Some(id) => format!("no entry for {id} matches this process"),
            None => format!("none of {} entries matches this process", self.entries.len()),
        };
        Err((DenyReason::NoMatchingEntry, detail))
    }
}

// === parsing ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    trust_domain: Spanned<String>,
    default_ttl_seconds: Option<Spanned<u64>>,
    #[serde(default)]
    entry: Vec<Spanned<FileEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    spiffe_id: Spanned<String>,
    ttl_seconds: Option<Spanned<u64>>,
    selectors: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    hint: String,
}

/// The longest token lifetime an entry may ask for.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

pub fn parse(text: &str) -> Result<Policy, PolicyError> {
    let err = |offset: usize, reason: String| PolicyError { file: String::new(), line: line_of(text, offset), reason };
    let doc: FileDoc = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        err(offset, e.message().to_owned())
    })?;
    let td = doc.trust_domain.get_ref();
    if td.is_empty() || td.contains('/') || td.contains(':') || td.to_ascii_lowercase() != *td {
        return Err(err(doc.trust_domain.span().start, format!("trust_domain {td:?} must be a lower-case name like example.org")));
    }
    let default_ttl = match &doc.default_ttl_seconds {
        Some(t) if *t.get_ref() == 0 || Duration::from_secs(*t.get_ref()) > MAX_TTL => {
            return Err(err(t.span().start, format!("default_ttl_seconds must be between 1 and {}", MAX_TTL.as_secs())));
        }
        Some(t) => Duration::from_secs(*t.get_ref()),
        None => DEFAULT_TTL,
    };
    let prefix = format!("spiffe://{td}/");
    let mut entries = Vec::new();
    for e in doc.entry {
        let line = line_of(text, e.span().start);
        let e = e.into_inner();
        let id = e.spiffe_id.get_ref();
        if !id.starts_with(&prefix) || id.len() == prefix.len() || id.contains("/../") || id.ends_with('/') {
            return Err(err(e.spiffe_id.span().start, format!("spiffe_id {id:?} must be a path under {prefix}")));
        }
        let ttl = match e.ttl_seconds {
            Some(t) if *t.get_ref() == 0 || Duration::from_secs(*t.get_ref()) > MAX_TTL => {
                return Err(err(t.span().start, format!("ttl_seconds must be between 1 and {}", MAX_TTL.as_secs())));
            }
            // Tokens get the default lifetime, capped by the entry.
            Some(t) => Duration::from_secs(*t.get_ref()).min(default_ttl),
            None => default_ttl,
        };
        if e.selectors.get_ref().is_empty() {
            // An entry without selectors would hand its identity to every process.
            return Err(err(e.selectors.span().start, "an entry needs at least one selector".into()));
        }
        let selectors_at = e.selectors.span().start;
        let selectors = e
            .selectors
            .into_inner()
            .into_iter()
            .map(|s| {
                let start = s.span().start;
                Selector::parse(s.get_ref()).map_err(|reason| err(start, reason))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(reason) = script_selectors_unpinned(&selectors) {
            return Err(err(selectors_at, reason));
        }
        entries.push(Entry { spiffe_id: id.clone(), ttl, selectors, line, hint: e.hint });
    }
    Ok(Policy { trust_domain: td.clone(), entries })
}

/// A script selector alone would let any program that names the script as its first
/// argument (`cat /srv/app.py`) pass for it, and a script hash alone any file with that
/// content at a path the caller can write. So script selectors need the interpreter
/// pinned, and a script hash needs the script's path.
fn script_selectors_unpinned(selectors: &[Selector]) -> Option<String> {
    let has = |f: fn(&Selector) -> bool| selectors.iter().any(f);
    let script = has(|s| matches!(s, Selector::ScriptPath(_) | Selector::ScriptSha256(_)));
    if script && !has(|s| matches!(s, Selector::BinarySha256(_) | Selector::BinaryPath(_))) {
        return Some("unix:script-* selectors need the interpreter pinned too (unix:sha256 or unix:path)".into());
    }
    if has(|s| matches!(s, Selector::ScriptSha256(_))) && !has(|s| matches!(s, Selector::ScriptPath(_))) {
        return Some("unix:script-sha256 needs unix:script-path (a path the workload cannot write)".into());
    }
    None
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PodsDoc {
    #[serde(default)]
    pod: Vec<PodDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PodDoc {
    uid: String,
    namespace: Option<String>,
    service_account: Option<String>,
    name: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    /// `owner = { kind = "Deployment", name = "checkout" }`
    owner: Option<OwnerDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerDoc {
    kind: String,
    name: String,
}

/// Pod metadata for nodes where the agent does not ask an API server (tests, demos,
/// bare hosts, clusters without API access): `[[pod]] uid = "...", namespace = "...",
/// service_account = "..."`, optionally `name`, `labels = { app = "..." }` and
/// `owner = { kind = "Deployment", name = "..." }`.
pub fn parse_pods(text: &str) -> Result<std::collections::HashMap<String, PodMeta>, PolicyError> {
    let doc: PodsDoc = toml::from_str(text).map_err(|e| PolicyError {
        file: String::new(),
        line: line_of(text, e.span().map_or(0, |s| s.start)),
        reason: e.message().to_owned(),
    })?;
    Ok(doc
        .pod
        .into_iter()
        .map(|p| {
            let owner = p.owner.map(|o| crate::k8s::Owner { kind: o.kind, name: o.name, via: None });
            let meta = PodMeta { namespace: p.namespace, service_account: p.service_account, name: p.name, labels: p.labels, owner };
            (p.uid.to_ascii_lowercase(), meta)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::{
        record::{Binary, CgroupInfo, Source},
        workload::parse_cgroup_path,
    };

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const POD: &str = "0c3d2a4e-5b6f-4a1b-9c8d-7e6f5a4b3c2d";

    fn process(sha: &str, cgroup: &str) -> ProcessRecord {
        let mut binary = Binary::unknown(Some("/app/checkout".into()));
        binary.path = Some("/app/checkout".into());
        binary.sha256 = Some(sha.into());
        ProcessRecord {
            source: Source::Ebpf,
            exec_id: "e".into(),
            process_id: "p".into(),
            node: "n1".into(),
            time: String::new(),
            pid: 10,
            ppid: 1,
            start_time: String::new(),
            start_ticks: 5,
            uid: 1000,
            gid: 1000,
            comm: "checkout".into(),
            binary,
            cgroup: CgroupInfo { id: 7, path: Some(cgroup.into()) },
            workload: parse_cgroup_path(cgroup),
            ancestry: vec![],
            script: None,
            pod: None,
            run: None,
            kernel_exe: None,
            announced: false,
        }
    }

    fn pod_cgroup() -> String {
        format!("/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{}.scope", POD.replace('-', "_"), "a".repeat(64))
    }

    const POLICY: &str = r#"
trust_domain = "sigil.test"

[[entry]]
spiffe_id = "spiffe://sigil.test/ns/payments/sa/checkout"
ttl_seconds = 120
selectors = ["k8s:ns:payments", "k8s:sa:checkout", "unix:sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]

[[entry]]
spiffe_id = "spiffe://sigil.test/batch"
selectors = ["cgroup:path:/batch.slice/**", "unix:uid:1000"]
"#;

    #[test]
    fn parses_entries_with_ttls_and_lines() {
        let p = parse(POLICY).expect("valid");
        assert_eq!(p.trust_domain, "sigil.test");
        assert_eq!(p.entries.len(), 2);
        assert_eq!(p.entries[0].ttl, Duration::from_secs(120));
        assert_eq!(p.entries[0].line, 4);
        assert_eq!(p.entries[1].ttl, DEFAULT_TTL);
    }

    #[test]
    fn all_selectors_must_match_and_a_wrong_binary_is_named_as_such() {
        let p = parse(POLICY).expect("valid");
        let meta = PodMeta { namespace: Some("payments".into()), service_account: Some("checkout".into()), ..Default::default() };
        let good = process(SHA, &pod_cgroup());
        let s = Subject { node: "n1", process: &good, pod: Some(&meta) };
        let ok = p.evaluate(&s, None).expect("entitled");
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].spiffe_id, "spiffe://sigil.test/ns/payments/sa/checkout");

        let other_binary = process(&"1".repeat(64), &pod_cgroup());
        let s = Subject { node: "n1", process: &other_binary, pod: Some(&meta) };
        assert_eq!(p.evaluate(&s, None).expect_err("denied").0, DenyReason::BinaryHashMismatch);

        let other_ns = PodMeta { namespace: Some("web".into()), ..meta.clone() };
        let s = Subject { node: "n1", process: &good, pod: Some(&other_ns) };
        assert_eq!(p.evaluate(&s, None).expect_err("denied").0, DenyReason::NoMatchingEntry);

        let s = Subject { node: "n1", process: &good, pod: None };
        assert_eq!(p.evaluate(&s, None).expect_err("denied").0, DenyReason::NoMatchingEntry);

        let batch = process(SHA, "/batch.slice/job-7.scope");
        let s = Subject { node: "n1", process: &batch, pod: None };
        assert_eq!(p.evaluate(&s, None).expect("batch")[0].spiffe_id, "spiffe://sigil.test/batch");
        // Asking for an ID the process is not entitled to.
        let denied = p.evaluate(&s, Some("spiffe://sigil.test/ns/payments/sa/checkout")).expect_err("denied");
        assert_eq!(denied.0, DenyReason::NoMatchingEntry);
        assert!(denied.1.contains("no entry for spiffe://sigil.test/ns/payments/sa/checkout"));
    }

    #[test]
    fn errors_name_the_line() {
        let cases: [(&str, usize, &str); 9] = [
            (
                "trust_domain = \"t.test\"\n[[entry]]\nspiffe_id = \"spiffe://t.test/a\"\nselectors = [\"unix:script-path:/srv/app.py\"]\n",
                4,
                "interpreter pinned",
            ),
            (
                "trust_domain = \"t.test\"\n[[entry]]\nspiffe_id = \"spiffe://t.test/a\"\nselectors = [\"unix:path:/usr/bin/python3\", \"unix:script-sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"]\n",
                4,
                "needs unix:script-path",
            ),
            ("trust_domain = \"t.test\"\n[[entry]]\nspiffe_id = \"spiffe://t.test/a\"\nselectors = [\"bogus:x:y\"]\n", 4, "unknown selector"),
            ("trust_domain = \"t.test\"\n\n[[entry]]\nspiffe_id = \"spiffe://other/a\"\nselectors = [\"unix:uid:1\"]\n", 4, "must be a path under"),
            ("trust_domain = \"t.test\"\n[[entry]]\nspiffe_id = \"spiffe://t.test/a\"\nselectors = []\n", 4, "at least one selector"),
            ("trust_domain = \"t.test\"\n[[entry]]\nspiffe_id = \"spiffe://t.test/a\"\nttl_seconds = 99999\nselectors = [\"unix:uid:1\"]\n", 4, "ttl_seconds"),
            ("trust_domain = \"t.test\"\n[[entry]]\nspiffe_id = \"spiffe://t.test/a\"\nselectors = [\"unix:sha256:abc\"]\n", 4, "64 hex"),
            ("trust_domain = \"t.test\"\n[[entry]\n", 2, ""),
            ("trust_domain = \"t.test\"\nsurprise = 1\n", 2, "unknown field"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.reason.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn pod_name_label_and_owner_selectors_match_only_their_pod() {
        let p = parse(
            r#"trust_domain = "t.test"
[[entry]]
spiffe_id = "spiffe://t.test/checkout"
selectors = ["k8s:ns:payments", "k8s:pod-name:checkout-1", "k8s:pod-label:app.kubernetes.io/name:checkout", "k8s:owner:Deployment:checkout"]
"#,
        )
        .expect("valid");
        let meta = parse_pods(
            r#"[[pod]]
uid = "u"
namespace = "payments"
name = "checkout-1"
labels = { "app.kubernetes.io/name" = "checkout" }
owner = { kind = "Deployment", name = "checkout" }
"#,
        )
        .expect("pods")["u"]
            .clone();
        let proc = process(SHA, &pod_cgroup());
        let ok = |m: &PodMeta| p.evaluate(&Subject { node: "n1", process: &proc, pod: Some(m) }, None).is_ok();
        assert!(ok(&meta));
        let mut relabelled = meta.clone();
        relabelled.labels.insert("app.kubernetes.io/name".into(), "web".into());
        assert!(!ok(&relabelled));
        let mut other_owner = meta.clone();
        other_owner.owner = Some(crate::k8s::Owner { kind: "StatefulSet".into(), name: "checkout".into(), via: None });
        assert!(!ok(&other_owner));
        let mut renamed = meta.clone();
        renamed.name = Some("checkout-2".into());
        assert!(!ok(&renamed));
        for bad in ["k8s:pod-label:novalue", "k8s:owner:Deployment:", "k8s:pod-label::v"] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pods_file_parses() {
        let pods = parse_pods("[[pod]]\nuid = \"ABC\"\nnamespace = \"payments\"\nservice_account = \"checkout\"\n").expect("ok");
        assert_eq!(pods["abc"].namespace.as_deref(), Some("payments"));
        assert!(parse_pods("[[pod]]\nname = 1\n").is_err());
    }
}
