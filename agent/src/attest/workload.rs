//! Workload identity from a cgroup v2 path.
//!
//! The `0::` line of `/proc/<pid>/cgroup` is the one kernel fact that ties a
//! process to the thing that launched it: the kubelet, a container runtime or
//! systemd each name the cgroups they create in a recognisable way. This module
//! reads those names back. It is pure string parsing: no I/O, never panics, and
//! anything it cannot validate is reported as `unknown` rather than guessed.
//!
//! Trust: a cgroup's *name* proves nothing; its *place* does. Whoever may create
//! cgroups below a given cgroup (a user's systemd instance under
//! `user.slice/user-UID.slice/user@UID.service`, a service with `Delegate=yes`,
//! a container with a writable cgroup subtree) controls every name below it. So
//! Kubernetes and container layouts are only accepted where the kubelet and
//! runtimes create them:
//! - anchored at the cgroup root, or at a configured prefix (`--cgroup-root-prefix`,
//!   e.g. the node container of kind), and, for systemd slices, at exactly the
//!   position their name encodes (`a-b-c.slice` lives in `a.slice/a-b.slice`);
//! - directly below a system service whose runtime puts containers there
//!   (`containerd.service/<slice>:cri-containerd:<id>`, podman's
//!   `<unit>.service/libpod-payload-<id>`).
//!
//! Anything under a user's slice is that user's (`user_unit`, with the uid) and
//! never a system unit, pod or container, whatever it is named.

use globset::{GlobBuilder, GlobMatcher};
use sigil_proto::v1;

/// What kind of workload a cgroup path identifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    KubernetesPod,
    Container,
    /// A unit of the system's service manager (PID 1).
    SystemdUnit,
    /// Anything below `user.slice/user-UID.slice`: a user's session, a unit of the
    /// user's own service manager, or a rootless container; named by the user.
    UserUnit,
    /// A plain cgroup that claims nothing (the root, slices, test directories).
    Cgroup,
    /// Names that look like a pod, container or runtime layout, but not in a place
    /// or form a runtime produces: claims nothing.
    Unknown,
}

/// The container runtime that created a container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerRuntime {
    Containerd,
    CriO,
    Docker,
    Podman,
    /// A bare container id (cgroupfs driver) does not say which runtime made it.
    Unknown,
}

/// Kubernetes QoS class, which the kubelet encodes in the pod's parent cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// The workload identity of a process, as far as its cgroup path tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: WorkloadKind,
    /// As Kubernetes reports it: canonical dashed lowercase UUID (8-4-4-4-12), or the
    /// 32 lowercase hex digits of a static pod's config hash.
    pub pod_uid: Option<String>,
    pub qos_class: Option<QosClass>,
    /// 64 lowercase hex chars.
    pub container_id: Option<String>,
    pub runtime: Option<ContainerRuntime>,
    /// System systemd unit name including its suffix, e.g. `nginx.service`. Never set
    /// for user units, so a `systemd:unit` selector cannot match a user's cgroup.
    pub unit: Option<String>,
    /// The user unit (or session scope) for `user_unit` workloads.
    pub user_unit: Option<String>,
    /// The uid whose slice the cgroup is in, for `user_unit` workloads.
    pub user_uid: Option<u32>,
}

impl From<WorkloadKind> for v1::WorkloadKind {
    fn from(k: WorkloadKind) -> Self {
        match k {
            WorkloadKind::KubernetesPod => Self::KubernetesPod,
            WorkloadKind::Container => Self::Container,
            WorkloadKind::SystemdUnit => Self::SystemdUnit,
            WorkloadKind::UserUnit => Self::UserUnit,
            WorkloadKind::Cgroup => Self::Cgroup,
            WorkloadKind::Unknown => Self::Unknown,
        }
    }
}

impl From<ContainerRuntime> for v1::ContainerRuntime {
    fn from(r: ContainerRuntime) -> Self {
        match r {
            ContainerRuntime::Containerd => Self::Containerd,
            ContainerRuntime::CriO => Self::CriO,
            ContainerRuntime::Docker => Self::Docker,
            ContainerRuntime::Podman => Self::Podman,
            ContainerRuntime::Unknown => Self::Unknown,
        }
    }
}

impl From<QosClass> for v1::QosClass {
    fn from(q: QosClass) -> Self {
        match q {
            QosClass::Guaranteed => Self::Guaranteed,
            QosClass::Burstable => Self::Burstable,
            QosClass::BestEffort => Self::BestEffort,
        }
    }
}

impl From<&Workload> for v1::Workload {
    fn from(w: &Workload) -> Self {
        Self {
            kind: v1::WorkloadKind::from(w.kind) as i32,
            pod_uid: w.pod_uid.clone(),
            qos_class: w.qos_class.map(|q| v1::QosClass::from(q) as i32),
            container_id: w.container_id.clone(),
            runtime: w.runtime.map(|r| v1::ContainerRuntime::from(r) as i32),
            unit: w.unit.clone(),
            user_unit: w.user_unit.clone(),
            user_uid: w.user_uid,
        }
    }
}

impl Workload {
    fn bare(kind: WorkloadKind) -> Self {
        Self { kind, pod_uid: None, qos_class: None, container_id: None, runtime: None, unit: None, user_unit: None, user_uid: None }
    }

    fn container(runtime: ContainerRuntime, id: Option<String>) -> Self {
        Self { runtime: Some(runtime), container_id: id, ..Self::bare(WorkloadKind::Container) }
    }
}

/// A `--cgroup-root-prefix` that is not a valid pattern.
#[derive(Debug, thiserror::Error)]
#[error("--cgroup-root-prefix {prefix:?}: {reason}")]
pub struct LayoutError {
    prefix: String,
    reason: String,
}

/// Where the kubelet and container runtimes create cgroups on this node: the cgroup
/// root, plus configured prefixes (a path whose components may use `*`, `?`, `[..]`
/// within one component, e.g. `/system.slice/docker-*.scope` for kind nodes).
#[derive(Debug, Clone, Default)]
pub struct Layouts {
    prefixes: Vec<Vec<GlobMatcher>>,
}

impl Layouts {
    pub fn new(prefixes: &[String]) -> Result<Self, LayoutError> {
        let mut out = Vec::new();
        for prefix in prefixes {
            let err = |reason: String| LayoutError { prefix: prefix.clone(), reason };
            if !prefix.starts_with('/') {
                return Err(err("must be an absolute cgroup path (start with /)".into()));
            }
            let parts = components(prefix);
            if parts.is_empty() {
                return Err(err("the root is always accepted; give a path below it".into()));
            }
            let globs = parts
                .iter()
                .map(|p| GlobBuilder::new(p).literal_separator(true).build().map(|g| g.compile_matcher()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(e.to_string()))?;
            out.push(globs);
        }
        Ok(Self { prefixes: out })
    }

    /// Parse a cgroup v2 path (the part after `0::`) into a workload identity.
    pub fn parse(&self, path: &str) -> Workload {
        let parts = components(path);
        // `..` appears when the process is outside our cgroup namespace: its real place
        // is unknowable from here.
        if parts.iter().any(|p| *p == ".." || *p == ".") {
            return Workload::bare(WorkloadKind::Unknown);
        }
        if let Some(w) = user_slice(&parts) {
            return w;
        }
        // Deepest anchor first: a configured prefix says what lives below it.
        let mut anchors: Vec<usize> =
            self.prefixes.iter().filter(|globs| globs.len() <= parts.len() && globs.iter().zip(&parts).all(|(g, p)| g.is_match(p))).map(Vec::len).collect();
        anchors.sort_unstable_by(|a, b| b.cmp(a));
        anchors.push(0);
        for at in anchors {
            let rest = parts.get(at..).unwrap_or_default();
            if let Some(w) = runtime_layout(rest).or_else(|| system_unit(rest)) {
                return w;
            }
        }
        if parts.iter().any(|p| looks_like_runtime(p)) { Workload::bare(WorkloadKind::Unknown) } else { Workload::bare(WorkloadKind::Cgroup) }
    }
}

/// [`Layouts::parse`] with only the cgroup root as anchor.
pub fn parse_cgroup_path(path: &str) -> Workload {
    Layouts::default().parse(path)
}

fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|p| !p.is_empty()).collect()
}

/// A Kubernetes pod: its QoS (None when the layout has no QoS level) and uid.
struct Pod {
    uid: String,
    qos: Option<QosClass>,
}

/// What a single component says about a container.
enum ContainerPart {
    /// A container cgroup with a valid id.
    Id(ContainerRuntime, String),
    /// The runtime's monitor (conmon) for a container: it runs in its own
    /// scope beside the container, so it belongs to the workload but is not it.
    Monitor(ContainerRuntime),
    /// Named like a container but the id is malformed: claims nothing.
    Malformed,
}

/// Runtime prefixes of container cgroup names, most specific first
/// (`crio-conmon-` must be tried before `crio-`). The flag marks monitors.
const CONTAINER_PREFIXES: &[(&str, ContainerRuntime, bool)] = &[
    ("cri-containerd-", ContainerRuntime::Containerd, false),
    ("crio-conmon-", ContainerRuntime::CriO, true),
    ("crio-", ContainerRuntime::CriO, false),
    ("cri-dockerd-", ContainerRuntime::Docker, false),
    ("docker-", ContainerRuntime::Docker, false),
    ("nerdctl-", ContainerRuntime::Containerd, false),
    ("libpod-conmon-", ContainerRuntime::Podman, true),
    ("libpod-payload-", ContainerRuntime::Podman, false),
    ("libpod-", ContainerRuntime::Podman, false),
];

/// The middle field of the `slice:prefix:id` cgroupsPath form, by runtime.
const COLON_PREFIXES: &[(&str, ContainerRuntime)] = &[
    ("cri-containerd", ContainerRuntime::Containerd),
    ("crio", ContainerRuntime::CriO),
    ("docker", ContainerRuntime::Docker),
    ("cri-dockerd", ContainerRuntime::Docker),
    ("libpod", ContainerRuntime::Podman),
];

/// Pod and container layouts whose first component is `rest[0]` (an anchor).
fn runtime_layout(rest: &[&str]) -> Option<Workload> {
    let first = rest.first()?;
    // The `slice:runtime:id` form runc creates literally with the cgroupfs driver.
    if let Some(w) = colon_form(first) {
        return Some(w);
    }
    let chain = slice_chain(rest);
    if !chain.is_empty() {
        let next = rest.get(chain.len()).copied();
        if let Some(k) = chain.iter().position(|s| *s == "kubepods") {
            let Some(pod) = pod_in_chain(chain.get(k + 1..).unwrap_or_default()) else {
                // `kubepods.slice` or a QoS slice alone: plain; anything else is not a
                // layout the kubelet writes.
                let tail = chain.len() - k - 1;
                let qos_only = tail == 1 && matches!(chain.get(k + 1), Some(&("burstable" | "besteffort")));
                let plain = (tail == 0 || qos_only) && next.is_none();
                return Some(Workload::bare(if plain { WorkloadKind::Cgroup } else { WorkloadKind::Unknown }));
            };
            return Some(pod_workload(pod, next.and_then(|p| container_part(p, None))));
        }
        // A container scope in a plain slice chain (docker, podman, nerdctl with the
        // systemd driver).
        return match next.and_then(|p| p.strip_suffix(".scope")).and_then(|p| container_part(p, None)) {
            Some(ContainerPart::Id(rt, id)) => Some(Workload::container(rt, Some(id))),
            Some(ContainerPart::Monitor(rt)) => Some(Workload::container(rt, None)),
            Some(ContainerPart::Malformed) => Some(Workload::bare(WorkloadKind::Unknown)),
            None => None,
        };
    }
    // cgroupfs driver: `kubepods[/<qos>]/pod<uid>/<container>`.
    if *first == "kubepods" {
        let (qos, at) = match rest.get(1).copied() {
            Some("burstable") => (Some(QosClass::Burstable), 2),
            Some("besteffort") => (Some(QosClass::BestEffort), 2),
            _ => (Some(QosClass::Guaranteed), 1),
        };
        let Some(raw) = rest.get(at) else { return Some(Workload::bare(WorkloadKind::Cgroup)) };
        let Some(uid) = raw.strip_prefix("pod").and_then(pod_uid) else {
            return Some(Workload::bare(WorkloadKind::Unknown));
        };
        let container = rest.get(at + 1).and_then(|p| container_part(p, Some(ContainerRuntime::Unknown)));
        return Some(pod_workload(Pod { uid, qos }, container));
    }
    // A pod without a `kubepods` level (kubelet --cgroup-root with QoS cgroups off).
    if let Some(uid) = first.strip_prefix("pod").and_then(pod_uid) {
        let container = rest.get(1).and_then(|p| container_part(p, Some(ContainerRuntime::Unknown)));
        return Some(pod_workload(Pod { uid, qos: None }, container));
    }
    // `<namespace>/<id>`: docker's cgroupfs parent, containerd namespaces (nerdctl,
    // ctr), GitHub Actions job containers (`/actions_job`), podman's `libpod_parent`.
    let second = rest.get(1)?;
    if !is_namespace(first) {
        return None;
    }
    let bare = match *first {
        "docker" | "actions_job" => ContainerRuntime::Docker,
        "libpod_parent" => ContainerRuntime::Podman,
        _ => ContainerRuntime::Containerd,
    };
    match container_part(second, Some(bare))? {
        ContainerPart::Id(rt, id) => Some(Workload::container(rt, Some(id))),
        ContainerPart::Monitor(rt) => Some(Workload::container(rt, None)),
        ContainerPart::Malformed => Some(Workload::bare(WorkloadKind::Unknown)),
    }
}

/// The pod and the container component below it.
fn pod_workload(pod: Pod, container: Option<ContainerPart>) -> Workload {
    let mut w = Workload { pod_uid: Some(pod.uid), qos_class: pod.qos, ..Workload::bare(WorkloadKind::KubernetesPod) };
    match container {
        Some(ContainerPart::Id(runtime, id)) => {
            w.runtime = Some(runtime);
            w.container_id = Some(id);
        }
        Some(ContainerPart::Monitor(runtime)) => w.runtime = Some(runtime),
        Some(ContainerPart::Malformed) | None => {}
    }
    w
}

/// The segments of the leading systemd slices of `parts`, as long as each is named
/// for its exact place (`a.slice`, `a-b.slice`, `a-b-c.slice`): `[a, b, c]`.
fn slice_chain<'a>(parts: &[&'a str]) -> Vec<&'a str> {
    let mut segs = Vec::new();
    let mut stem_before = "";
    for part in parts {
        let Some(stem) = part.strip_suffix(".slice") else { break };
        let seg = if stem_before.is_empty() {
            stem
        } else {
            match stem.strip_prefix(stem_before).and_then(|s| s.strip_prefix('-')) {
                Some(s) => s,
                None => break,
            }
        };
        if seg.is_empty() || seg.contains('-') {
            break;
        }
        segs.push(seg);
        stem_before = stem;
    }
    segs
}

/// After `kubepods` in a slice chain: `[pod<uid>]` or `[<qos>, pod<uid>]`, and nothing
/// more.
fn pod_in_chain(after: &[&str]) -> Option<Pod> {
    let (qos, pod) = match after {
        [pod] => (QosClass::Guaranteed, pod),
        ["burstable", pod] => (QosClass::Burstable, pod),
        ["besteffort", pod] => (QosClass::BestEffort, pod),
        _ => return None,
    };
    Some(Pod { uid: pod.strip_prefix("pod").and_then(pod_uid)?, qos: Some(qos) })
}

/// `kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`: the cgroupsPath the
/// kubelet's systemd driver hands the runtime, created as one literal directory when
/// the runtime itself uses cgroupfs.
fn colon_form(part: &str) -> Option<Workload> {
    let mut fields = part.split(':');
    let (slice, prefix, raw_id) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return Some(Workload::bare(WorkloadKind::Unknown));
    }
    let runtime = COLON_PREFIXES.iter().find(|(p, _)| *p == prefix).map(|(_, r)| *r);
    let (Some(runtime), Some(id)) = (runtime, container_id(raw_id)) else {
        return Some(Workload::bare(WorkloadKind::Unknown));
    };
    let Some(stem) = slice.strip_suffix(".slice") else { return Some(Workload::bare(WorkloadKind::Unknown)) };
    let segs: Vec<&str> = stem.split('-').collect();
    let pod = segs.iter().position(|s| *s == "kubepods").map(|k| pod_in_chain(segs.get(k + 1..).unwrap_or_default()));
    Some(match pod {
        Some(Some(pod)) => pod_workload(pod, Some(ContainerPart::Id(runtime, id))),
        Some(None) => Workload::bare(WorkloadKind::Unknown),
        None => Workload::container(runtime, Some(id)),
    })
}

/// A system unit: after the leading slices, the first `.service`/`.scope` component
/// (systemd creates units only there). Below it: a container a runtime placed directly
/// in the unit's cgroup is that container; other names that look like runtime layouts
/// make the answer `unknown` (a pod must never be taken for the unit that hosts it);
/// anything else is the unit's own sub-cgroup.
fn system_unit(rest: &[&str]) -> Option<Workload> {
    let n = rest.iter().take_while(|p| p.ends_with(".slice")).count();
    let unit = rest.get(n).filter(|p| is_unit(p))?;
    // A unit or slice named like a runtime's cgroup, away from where runtimes put them.
    if rest.get(..=n).unwrap_or_default().iter().any(|p| looks_like_runtime(p)) {
        return Some(Workload::bare(WorkloadKind::Unknown));
    }
    let below = rest.get(n + 1..).unwrap_or_default();
    if let Some(first) = below.first() {
        if let Some(w) = placed_in_unit(first, below.get(1).copied()) {
            return Some(w);
        }
        if below.iter().any(|p| looks_like_runtime(p)) {
            return Some(Workload::bare(WorkloadKind::Unknown));
        }
    }
    Some(Workload { unit: Some((*unit).to_owned()), ..Workload::bare(WorkloadKind::SystemdUnit) })
}

/// The forms runtimes create directly in a service's cgroup: the `slice:runtime:id`
/// cgroupsPath (containerd.service with cgroupfs runc under a systemd-driver kubelet),
/// podman's `--cgroups=split` payload (quadlet units), and a containerd namespace
/// directory `<namespace>/<id>` (nerdctl/ctr run from a service).
fn placed_in_unit(first: &str, second: Option<&str>) -> Option<Workload> {
    if let Some(w) = colon_form(first) {
        return Some(w);
    }
    if first.starts_with("libpod-payload-") {
        return Some(match container_part(first, None) {
            Some(ContainerPart::Id(rt, id)) => Workload::container(rt, Some(id)),
            _ => Workload::bare(WorkloadKind::Unknown),
        });
    }
    if !is_namespace(first) {
        return None;
    }
    match container_part(second?, Some(ContainerRuntime::Containerd))? {
        ContainerPart::Id(rt, id) => Some(Workload::container(rt, Some(id))),
        _ => None,
    }
}

/// A containerd namespace name (`default`, `k8s.io`, `moby`), not a systemd unit or
/// slice.
fn is_namespace(part: &str) -> bool {
    !part.contains(':') && !part.ends_with(".slice") && !is_unit(part)
}

fn is_unit(part: &str) -> bool {
    [".service", ".scope"].iter().any(|s| part.strip_suffix(s).is_some_and(|stem| !stem.is_empty()))
}

/// `/user.slice/user-UID.slice/...`: the user's own cgroups (logind creates the slice
/// and session scopes; `user@UID.service` is delegated to the user's service manager,
/// where the user may create any name).
fn user_slice(parts: &[&str]) -> Option<Workload> {
    let [first, slice, rest @ ..] = parts else { return None };
    if *first != "user.slice" {
        return None;
    }
    let uid_text = slice.strip_prefix("user-")?.strip_suffix(".slice")?;
    let uid: u32 = uid_text.parse().ok().filter(|_| uid_text.bytes().all(|b| b.is_ascii_digit()))?;
    let mut w = Workload { user_uid: Some(uid), ..Workload::bare(WorkloadKind::UserUnit) };
    let Some(top) = rest.first() else { return Some(Workload::bare(WorkloadKind::Cgroup)) };
    if !is_unit(top) {
        return Some(Workload::bare(WorkloadKind::Unknown));
    }
    // Inside the user's service manager: its first unit below the slices, if any.
    let inner = rest.get(1..).unwrap_or_default();
    let n = inner.iter().take_while(|p| p.ends_with(".slice")).count();
    let unit = if *top == format!("user@{uid}.service") { inner.get(n).filter(|p| is_unit(p)).unwrap_or(top) } else { top };
    w.user_unit = Some((*unit).to_owned());
    Some(w)
}

/// A component a runtime or the kubelet could have written (for `unknown`).
fn looks_like_runtime(part: &str) -> bool {
    part.contains("kubepods")
        || part.contains(':')
        || container_part(part.strip_suffix(".scope").unwrap_or(part), Some(ContainerRuntime::Unknown)).is_some()
        || part.strip_prefix("pod").is_some_and(|u| pod_uid(u).is_some())
}

/// A pod uid as Kubernetes reports it. The kubelet writes UUIDs with `_` for `-` in
/// systemd slice names (a `-` there would be a deeper slice) and as-is for cgroupfs;
/// static and mirror pods use a 32-hex config hash with no separators, which Kubernetes
/// reports without dashes, so none are added.
fn pod_uid(raw: &str) -> Option<String> {
    let lower = raw.to_ascii_lowercase();
    if lower.len() == 32 && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(lower);
    }
    let sep = if lower.contains('_') { '_' } else { '-' };
    let groups: Vec<&str> = lower.split(sep).collect();
    let shape_ok = groups.len() == 5 && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    shape_ok.then(|| groups.join("-"))
}

/// A container id: exactly 64 hex chars, lowercased.
fn container_id(raw: &str) -> Option<String> {
    (raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit())).then(|| raw.to_ascii_lowercase())
}

/// Classify one component as a container cgroup: `<prefix><id>` with an optional
/// `.scope`, or a bare 64-hex id where the context says it is a container (`bare`).
fn container_part(part: &str, bare: Option<ContainerRuntime>) -> Option<ContainerPart> {
    let name = part.strip_suffix(".scope").unwrap_or(part);
    if !name.contains('.') {
        for &(prefix, runtime, monitor) in CONTAINER_PREFIXES {
            if let Some(raw) = name.strip_prefix(prefix) {
                return Some(match container_id(raw) {
                    Some(_) if monitor => ContainerPart::Monitor(runtime),
                    Some(id) => ContainerPart::Id(runtime, id),
                    None => ContainerPart::Malformed,
                });
            }
        }
    }
    let runtime = bare?;
    container_id(part).map(|id| ContainerPart::Id(runtime, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerRuntime::*;
    use QosClass::*;

    const UID: &str = "1234abcd-5678-90ef-abcd-1234567890ab";
    const UID_US: &str = "1234abcd_5678_90ef_abcd_1234567890ab";
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const CID2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn none(kind: WorkloadKind) -> Workload {
        Workload::bare(kind)
    }

    fn pod_of(uid: &str, qos: Option<QosClass>, container: Option<(ContainerRuntime, &str)>) -> Workload {
        Workload {
            pod_uid: Some(uid.to_owned()),
            qos_class: qos,
            runtime: container.map(|(r, _)| r),
            container_id: container.map(|(_, id)| id.to_owned()),
            ..none(WorkloadKind::KubernetesPod)
        }
    }

    fn pod(qos: QosClass, container: Option<(ContainerRuntime, &str)>) -> Workload {
        pod_of(UID, Some(qos), container)
    }

    fn container(runtime: ContainerRuntime, id: Option<&str>) -> Workload {
        Workload::container(runtime, id.map(str::to_owned))
    }

    fn unit(name: &str) -> Workload {
        Workload { unit: Some(name.to_owned()), ..none(WorkloadKind::SystemdUnit) }
    }

    fn user_unit(uid: u32, name: &str) -> Workload {
        Workload { user_unit: Some(name.to_owned()), user_uid: Some(uid), ..none(WorkloadKind::UserUnit) }
    }

    fn parse(path: String) -> Workload {
        parse_cgroup_path(&path)
    }

    /// Real layouts, each from the runtime's (or another attestor's) own documentation,
    /// code or test data. Paths with made-up ids keep the runtime's exact shape.
    #[test]
    fn layouts_published_by_runtimes_and_attestors() {
        let rows: Vec<(String, Workload)> = vec![
            // kubelet systemd driver (kubernetes pkg/kubelet/cm/cgroup_manager_linux.go:
            // ToSystemd, escapeSystemdCgroupName turns '-' into '_'), containerd scope.
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{CID}.scope"),
                pod(Burstable, Some((Containerd, CID))),
            ),
            // Same driver, guaranteed pod (no QoS level), docker scope
            // (CJLove/rt-operator notes/cgroupv1_notes.md, "Kubernetes 1.23.5 w/Docker").
            (format!("/kubepods.slice/kubepods-pod{UID_US}.slice/docker-{CID}.scope"), pod(Guaranteed, Some((Docker, CID)))),
            // CRI-O systemd scope, and crun's nested `container` sub-cgroup.
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-{CID}.scope/container"),
                pod(BestEffort, Some((CriO, CID))),
            ),
            // CRI-O's conmon scope beside the container: the pod's, not a container.
            (
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-conmon-{CID}.scope"),
                Workload { runtime: Some(CriO), ..pod(BestEffort, None) },
            ),
            // containerd with SystemdCgroup=false under a systemd-driver kubelet: runc
            // creates the cgroupsPath `slice:cri-containerd:id` literally inside
            // containerd.service (spiffe/spire k8s attestor test mountinfo; containerd's
            // getCgroupsPath test: "/a.slice/b.slice" -> "b.slice:cri-containerd:test-id").
            (
                "/system.slice/containerd.service/kubepods-besteffort-pod214f3ba8_4b69_4bdb_a7d5_5ecc73f04ae9.slice:cri-containerd:d4e8e05a546c86b6443f101966c618e47753ed01fa9929cae00d3b692f7a9f80".into(),
                pod_of("214f3ba8-4b69-4bdb-a7d5-5ecc73f04ae9", Some(BestEffort), Some((Containerd, "d4e8e05a546c86b6443f101966c618e47753ed01fa9929cae00d3b692f7a9f80"))),
            ),
            // The same form at the root of a v1 controller (same SPIRE mountinfo), and k3s.
            (
                "/kubepods-burstable-pod57e67067_89e4_4001_bdd4_8632d39ea02b.slice:cri-containerd:6d393320601b821561e43bd46f658284cb172cf297ecc3d3665be657870d32e2".into(),
                pod_of("57e67067-89e4-4001-bdd4-8632d39ea02b", Some(Burstable), Some((Containerd, "6d393320601b821561e43bd46f658284cb172cf297ecc3d3665be657870d32e2"))),
            ),
            // kubelet cgroupfs driver (kubelet docs "cgroupsPath": /kubepods/pod<uid>/<id>;
            // cilium pkg/cgroups/manager test: /kubepods/burstable/pod<uid>/<id>).
            (
                "/kubepods/burstable/pod1858680e-b044-4fd5-9dd4-f137e30e2180/d8f227cc24940cfdce8d8e601f3b92242ac9661b0e83f0ea57fdea1cb6bc93ec".into(),
                pod_of("1858680e-b044-4fd5-9dd4-f137e30e2180", Some(Burstable), Some((Unknown, "d8f227cc24940cfdce8d8e601f3b92242ac9661b0e83f0ea57fdea1cb6bc93ec"))),
            ),
            (format!("/kubepods/pod{UID}/{CID}"), pod(Guaranteed, Some((Unknown, CID)))),
            // CRI-O with cgroupfs names its container `crio-<id>`.
            (format!("/kubepods/besteffort/pod{UID}/crio-{CID}"), pod(BestEffort, Some((CriO, CID)))),
            // Static and mirror pods: the uid is the 32-hex md5 of the manifest
            // (kubernetes pkg/kubelet/config/common.go), reported without dashes.
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5d5ba0d8c3e6a2ec0e7aa43cd3a6ce34.slice/cri-containerd-".to_owned() + CID + ".scope",
                pod_of("5d5ba0d8c3e6a2ec0e7aa43cd3a6ce34", Some(Burstable), Some((Containerd, CID))),
            ),
            ("/kubepods/pod5D5BA0D8C3E6A2EC0E7AA43CD3A6CE34".into(), pod_of("5d5ba0d8c3e6a2ec0e7aa43cd3a6ce34", Some(Guaranteed), None)),
            // A pod with no `kubepods` level (QoS cgroups off): pod<uid>/<id>.
            (format!("/pod{UID}/{CID}"), pod_of(UID, None, Some((Unknown, CID)))),
            // Docker, cgroupfs driver (DataDog/dd-trace ContainerInfoTest: /docker/<id>).
            (
                "/docker/3726184226f5d3147c25fdeab5b60097e378e8a720503a5e19ecfdf29f869860".into(),
                container(Docker, Some("3726184226f5d3147c25fdeab5b60097e378e8a720503a5e19ecfdf29f869860")),
            ),
            // Docker, systemd driver (neuvector share/system/cgroup_test.go, CentOS).
            (
                "/system.slice/docker-9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d.scope".into(),
                container(Docker, Some("9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d")),
            ),
            // containerd namespaces with cgroupfs runc: /<namespace>/<id> (containerd's
            // own error text: cgroupsPath "/k8s.io/<id>"; nerdctl/ctr use /default/<id>).
            (
                "/k8s.io/368492d2e8d70cc1be67f43bc3a4d3f816d6a6857d9802e5e946460bbef8aace".into(),
                container(Containerd, Some("368492d2e8d70cc1be67f43bc3a4d3f816d6a6857d9802e5e946460bbef8aace")),
            ),
            (format!("/default/{CID}"), container(Containerd, Some(CID))),
            // nerdctl with the systemd driver: cgroupsPath "system.slice:nerdctl:<id>".
            (format!("/system.slice/nerdctl-{CID}.scope"), container(Containerd, Some(CID))),
            // GitHub Actions hosted runners: dockerd has "cgroup-parent": "/actions_job"
            // (nginx-proxy/docker-gen#315), so job and service containers are here.
            (format!("/actions_job/{CID}"), container(Docker, Some(CID))),
            // A self-hosted Actions runner installed with svc.sh is a system unit named
            // actions.runner.<owner>-<repo>.<runner>.service (GitHub docs).
            ("/system.slice/actions.runner.octo-org-app.build-1.service".into(), unit("actions.runner.octo-org-app.build-1.service")),
            // Podman, rootful (machine.slice) and its conmon.
            (format!("/machine.slice/libpod-{CID}.scope"), container(Podman, Some(CID))),
            (format!("/machine.slice/libpod-conmon-{CID}.scope"), container(Podman, None)),
            // Podman --cgroups=split (quadlet's default): the payload sits in the unit's
            // cgroup (podman docs; `systemctl status nginx.service` output).
            (
                "/system.slice/nginx.service/libpod-payload-9687bac58d5c4d1606aa46af33d1a21c1d1652e0ac9fb3fc0fc86e3495f42869".into(),
                container(Podman, Some("9687bac58d5c4d1606aa46af33d1a21c1d1652e0ac9fb3fc0fc86e3495f42869")),
            ),
            // ... and conmon's `runtime` sub-cgroup is the unit's own.
            ("/system.slice/nginx.service/runtime".into(), unit("nginx.service")),
            // Rootless podman (user's systemd instance): the user's, not a container.
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/redis.service/libpod-payload-e8c29da1a2f6c4bb032304f7dfbc5a767e026092c4a2fcbc830e58565f972f54".into(),
                user_unit(1000, "redis.service"),
            ),
            (format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope"), user_unit(1000, &format!("libpod-{CID}.scope"))),
            // systemd system units and sessions (systemd.special(7), systemd-logind).
            ("/system.slice/nginx.service".into(), unit("nginx.service")),
            ("/system.slice/system-getty.slice/getty@tty1.service".into(), unit("getty@tty1.service")),
            ("/init.scope".into(), unit("init.scope")),
            ("/user.slice/user-1000.slice/session-3.scope".into(), user_unit(1000, "session-3.scope")),
            ("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service".into(), user_unit(1000, "foo.service")),
            ("/user.slice/user-1000.slice/user@1000.service/init.scope".into(), user_unit(1000, "init.scope")),
            // Paths relative to another cgroup namespace's root (seen inside containers,
            // e.g. "0::/../crio-<id>.scope"): the real place is unknowable.
            ("/../crio-45490e76e0878aaa4d9808f7d2eefba37f093c3efbba9838b6d8ab804d9bd814.scope".into(), none(WorkloadKind::Unknown)),
            (
                "/../../pod2c48913c-b29f-11e7-9350-020968147796/9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961".into(),
                none(WorkloadKind::Unknown),
            ),
            // minikube (docker driver) seen from the host: the node container is what the
            // host runtime made; the pod inside needs --cgroup-root-prefix /docker/<id>.
            (
                "/docker/72be2865c435abce6fb5167e6c0604027a41964dba3b920bd34b23762af67fb8/kubepods/besteffort/pod0635783e-afc4-448c-b3c2-ed3c739eaf39/c165b8760bf6a5687d806ba33f1da4f78c81fb3f28e3e9568620da989277ee2a".into(),
                container(Docker, Some("72be2865c435abce6fb5167e6c0604027a41964dba3b920bd34b23762af67fb8")),
            ),
        ];
        for (path, want) in rows {
            assert_eq!(parse_cgroup_path(&path), want, "{path}");
        }
    }

    /// A local unprivileged user owns `user@UID.service` (systemd delegates it) and can
    /// create any cgroup name below it: a full kubelet + containerd layout there is not
    /// the pod, and never a system unit either.
    #[test]
    fn a_users_delegated_subtree_never_yields_a_pod_container_or_system_unit() {
        let spoof = format!(
            "/user.slice/user-65534.slice/user@65534.service/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        let w = parse(spoof.clone());
        assert_eq!(w, user_unit(65534, &format!("cri-containerd-{CID}.scope")));
        assert_eq!((w.pod_uid, w.container_id, w.unit), (None, None, None));
        // A configured prefix does not make the user's subtree trusted either.
        let layouts = Layouts::new(&["/sigil-test-*".to_owned()]).expect("layouts");
        assert_eq!(layouts.parse(&spoof).kind, WorkloadKind::UserUnit);
        // Named like a system unit: still the user's.
        assert_eq!(parse_cgroup_path("/user.slice/user-65534.slice/user@65534.service/app.slice/sshd.service"), user_unit(65534, "sshd.service"));
    }

    /// Pod and container names are accepted only where the runtime puts them.
    #[test]
    fn pod_names_away_from_an_anchor_claim_nothing() {
        for p in [
            format!("/sigil-test-42/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{CID}.scope"),
            format!("/user.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{CID}.scope"),
            format!("/system.slice/foo.service/kubepods.slice/kubepods-pod{UID_US}.slice/crio-{CID}.scope"),
            format!("/kubepods.slice/kubepods-burstable-pod{UID_US}.slice/crio-{CID}.scope"), // slice not at its place
            format!("/burstable/pod{UID}/{CID}"),
            format!("/kubepods/weird/pod{UID}/{CID}"),
            format!("/system.slice/containerd.service/{CID}"),
        ] {
            let w = parse_cgroup_path(&p);
            assert_eq!(w, none(WorkloadKind::Unknown), "{p}");
        }
    }

    #[test]
    fn configured_prefixes_anchor_layouts_below_them() {
        let layouts = Layouts::new(&["/sigil-test-*".to_owned(), "/system.slice/docker-*.scope".to_owned()]).expect("layouts");
        let p = format!("/sigil-test-42/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-{CID}.scope");
        assert_eq!(layouts.parse(&p), pod(Burstable, Some((CriO, CID))));
        assert_eq!(layouts.parse(&format!("/sigil-test-42/kubepods/besteffort/pod{UID}/{CID}")), pod(BestEffort, Some((Unknown, CID))));
        assert_eq!(layouts.parse("/sigil-test-42/system.slice/demo.service"), unit("demo.service"));
        // kind: the node container is a prefix, the pod inside it is what runs.
        let kind = format!(
            "/system.slice/docker-{CID2}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(layouts.parse(&kind), pod(Burstable, Some((Containerd, CID))));
        // Without the prefix it is the node container.
        assert_eq!(parse_cgroup_path(&kind), container(Docker, Some(CID2)));
        // `*` stays inside one component.
        assert_eq!(layouts.parse(&format!("/sigil-test-42/x/kubepods/pod{UID}")).kind, WorkloadKind::Unknown);
        assert!(Layouts::new(&["relative".to_owned()]).is_err());
        assert!(Layouts::new(&["/".to_owned()]).is_err());
        assert!(Layouts::new(&["/a[".to_owned()]).is_err());
    }

    #[test]
    fn kubelet_cgroup_root_prefix_in_slice_names() {
        // kind: kubelet --cgroup-root=/kubelet with the systemd driver.
        let p = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(parse(p), pod(BestEffort, Some((Containerd, CID))));
    }

    #[test]
    fn outermost_pod_and_container_win_over_workload_made_subcgroups() {
        // A container with a delegated cgroup subtree could create these deeper names.
        let fake_uid = "ffffffff_ffff_ffff_ffff_ffffffffffff";
        let p = format!("/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{CID}.scope/kubepods-pod{fake_uid}.slice/cri-containerd-{CID2}.scope");
        assert_eq!(parse(p), pod(Guaranteed, Some((Containerd, CID))));
        assert_eq!(parse(format!("/docker/{CID}/docker/{CID2}")), container(Docker, Some(CID)));
        assert_eq!(parse(format!("/system.slice/docker-{CID}.scope/system.slice/nginx.service")), container(Docker, Some(CID)));
    }

    #[test]
    fn uppercase_hex_is_lowercased() {
        let p = format!("/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{}.scope", UID_US.to_uppercase(), CID.to_uppercase());
        assert_eq!(parse(p), pod(Guaranteed, Some((Containerd, CID))));
    }

    /// The kubelet writes `_` in slice names: a dashed uid there would be a deeper
    /// slice, so it is not where the kubelet puts a pod.
    #[test]
    fn dashed_uid_in_a_systemd_slice_is_unknown() {
        let p = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID}.slice/cri-containerd-{CID}.scope");
        assert_eq!(parse(p), none(WorkloadKind::Unknown));
    }

    #[test]
    fn malformed_pod_uids_claim_nothing() {
        let bad = [
            "1234abcd_5678_90ef_abcd_1234567890a",   // 31 digits
            "1234abcd_5678_90ef_abcd_1234567890abc", // 33 digits
            "1234abcd_5678_90ef_abcd_1234567890ag",  // non-hex
            "",
            "1234abcd.5678_90ef_abcd_1234567890ab", // wrong separator
            "1234abcd5_678_90ef_abcd_1234567890ab", // separators in the wrong places
            "5d5ba0d8c3e6a2ec0e7aa43cd3a6ce3",      // 31-hex static uid
        ];
        for uid in bad {
            let p = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{CID}.scope");
            assert_eq!(parse(p), none(WorkloadKind::Unknown), "uid {uid:?}");
            let p = format!("/kubepods/burstable/pod{uid}/{CID}");
            assert_eq!(parse(p), none(WorkloadKind::Unknown), "uid {uid:?}");
        }
    }

    #[test]
    fn malformed_container_ids_in_a_pod_leave_the_pod() {
        let bad = [CID.get(..63).unwrap_or_default().to_owned(), format!("{CID}0"), format!("{}g", CID.get(..63).unwrap_or_default())];
        for id in bad {
            let p = format!("/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{id}.scope");
            assert_eq!(parse(p), pod(Guaranteed, None), "id {id:?}");
            let p = format!("/kubepods/pod{UID}/{id}");
            assert_eq!(parse(p), pod(Guaranteed, None), "id {id:?}");
        }
    }

    #[test]
    fn malformed_container_scope_is_unknown_not_a_unit() {
        assert_eq!(parse_cgroup_path("/system.slice/docker-abc.scope"), none(WorkloadKind::Unknown));
        assert_eq!(parse_cgroup_path("/system.slice/docker-abc.scope/inner.service"), none(WorkloadKind::Unknown));
        assert_eq!(parse(format!("/system.slice/containerd.service/x.slice:cri-containerd:{CID}")), container(Containerd, Some(CID)));
        assert_eq!(parse("/system.slice/containerd.service/a.slice:bogus:abc".into()), none(WorkloadKind::Unknown));
    }

    /// A unit selector must never match a pod's processes: pods placed in a runtime's
    /// unit are pods; other runtime-looking names below a unit make it unknown.
    #[test]
    fn pods_and_containers_nested_in_a_service_are_not_the_service() {
        assert_eq!(
            parse(format!("/system.slice/containerd.service/kubepods-burstable-pod{UID_US}.slice:cri-containerd:{CID}")),
            pod(Burstable, Some((Containerd, CID)))
        );
        assert_eq!(parse(format!("/system.slice/containerd.service/default/{CID}")), container(Containerd, Some(CID)));
        assert_eq!(parse(format!("/system.slice/app.service/libpod-payload-{CID}")), container(Podman, Some(CID)));
        assert_eq!(parse(format!("/system.slice/app.service/deep/er/{CID}")), none(WorkloadKind::Unknown));
        // The runtime's own processes stay its unit.
        assert_eq!(parse_cgroup_path("/system.slice/containerd.service"), unit("containerd.service"));
        assert_eq!(parse_cgroup_path("/system.slice/docker-compose@app.service"), unit("docker-compose@app.service"));
        // A service's own sub-cgroup named like another unit is still that service.
        assert_eq!(parse_cgroup_path("/system.slice/app.service/nginx.service"), unit("app.service"));
    }

    #[test]
    fn slices_only_are_plain_cgroups() {
        for p in
            ["/system.slice", "/user.slice", "/user.slice/user-1000.slice", "/kubepods.slice", "/kubepods.slice/kubepods-burstable.slice", "/kubepods", "/", ""]
        {
            assert_eq!(parse_cgroup_path(p), none(WorkloadKind::Cgroup), "{p}");
        }
    }

    #[test]
    fn garbage_claims_nothing() {
        let cases = [
            "////",
            "kubepods-pod.slice",
            "/kubepods.slice/kubepods-pod.slice",
            "/kubepods/pod",
            "/kubepods/pod/",
            "pod",
            ".service",
            ".scope",
            "/-pod.slice",
            "/kubepods-burstable-pod.slice",
            "/cri-containerd-.scope",
            "crio-conmon-",
            "\0\0\0",
            "/sys\u{fffd}tem.slice/ngïnx.slice",
            "/kubepods.slice/kubepods-pod日本語.slice/cri-containerd-日本.scope",
            ":::",
            "/a:b:c:d",
        ];
        for p in cases {
            let w = parse_cgroup_path(p);
            assert!(matches!(w.kind, WorkloadKind::Cgroup | WorkloadKind::Unknown), "{p:?}: {w:?}");
            assert_eq!((w.pod_uid, w.container_id, w.unit, w.user_unit), (None, None, None, None), "{p:?}");
        }
    }

    #[test]
    fn non_ascii_unit_name_is_kept_verbatim() {
        assert_eq!(parse_cgroup_path("/system.slice/ñgïnx.service"), unit("ñgïnx.service"));
    }

    #[test]
    fn very_long_inputs_do_not_panic() {
        let long = "a".repeat(100_000);
        assert_eq!(parse_cgroup_path(&long), none(WorkloadKind::Cgroup));
        let deep = "/x.slice".repeat(10_000);
        assert_eq!(parse_cgroup_path(&deep), none(WorkloadKind::Cgroup));
        let long_uid = format!("/kubepods/pod{}", "a".repeat(10_000));
        assert_eq!(parse(long_uid), none(WorkloadKind::Unknown));
        let deep_pod = format!("{}/kubepods.slice/kubepods-pod{UID_US}.slice/crio-{CID}.scope", "/p".repeat(10_000));
        assert_eq!(parse(deep_pod), none(WorkloadKind::Unknown));
    }

    #[test]
    fn fuzzed_combinations_never_panic_and_keep_invariants() {
        let pieces = [
            "",
            "/",
            "kubepods",
            "kubepods.slice",
            "burstable",
            "besteffort",
            "pod",
            "-pod",
            "_",
            "-",
            ".slice",
            ".scope",
            ".service",
            "crio-",
            "crio-conmon-",
            "docker",
            "docker-",
            "libpod-",
            "cri-containerd-",
            ":",
            "user.slice",
            "user-1.slice",
            "user@1.service",
            "..",
            UID,
            UID_US,
            CID,
            "é",
            "\u{10ffff}",
            "a",
        ];
        let mut seed: u64 = 0x5eed;
        for _ in 0..5_000 {
            let mut s = String::new();
            for _ in 0..(seed % 12) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let i = usize::try_from(seed >> 33).unwrap_or(0) % pieces.len();
                s.push_str(pieces.get(i).copied().unwrap_or(""));
            }
            let w = parse_cgroup_path(&s);
            if let Some(uid) = &w.pod_uid {
                assert!(uid.len() == 36 || uid.len() == 32, "{s:?}");
                assert_eq!(w.kind, WorkloadKind::KubernetesPod, "{s:?}");
            }
            if let Some(id) = &w.container_id {
                assert_eq!(id.len(), 64, "{s:?}");
                assert!(id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{s:?}");
            }
            assert_eq!(w.unit.is_some(), w.kind == WorkloadKind::SystemdUnit, "{s:?}");
            assert_eq!(w.user_uid.is_some(), w.kind == WorkloadKind::UserUnit, "{s:?}");
        }
    }

    #[test]
    /// The contract type the agent emits writes every field in snake_case.
    fn serializes_all_fields_in_snake_case() {
        let p = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-{CID}.scope");
        let json = serde_json::to_value(v1::Workload::from(&parse(p))).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "kubernetes_pod",
                "pod_uid": UID,
                "qos_class": "best_effort",
                "container_id": CID,
                "runtime": "cri_o",
                "unit": null,
                "user_unit": null,
                "user_uid": null,
            })
        );
        let json = serde_json::to_value(v1::Workload::from(&parse_cgroup_path("/user.slice/user-7.slice/session-1.scope"))).expect("serialize");
        assert_eq!(json["kind"], "user_unit");
        assert_eq!(json["user_uid"], 7);
        assert_eq!(json["unit"], serde_json::Value::Null);
        assert_eq!(serde_json::to_value(v1::Workload::from(&parse_cgroup_path("/x/../y"))).expect("serialize")["kind"], "unknown");
        let json = serde_json::to_value(v1::Workload::from(&parse_cgroup_path("/"))).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "cgroup",
                "pod_uid": null,
                "qos_class": null,
                "container_id": null,
                "runtime": null,
                "unit": null,
                "user_unit": null,
                "user_uid": null,
            })
        );
    }
}
