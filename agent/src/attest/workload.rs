//! Workload identity from a cgroup v2 path.
//!
//! The `0::` line of `/proc/<pid>/cgroup` is the one kernel fact that ties a
//! process to the thing that launched it: the kubelet, a container runtime or
//! systemd each name the cgroups they create in a recognisable way. This module
//! reads those names back. It is pure string parsing: no I/O, never panics, and
//! anything it cannot validate is left out rather than guessed.
//!
//! Precedence, from most to least specific: Kubernetes pod, stand-alone
//! container, systemd unit, plain cgroup.
//!
//! Trust note: whoever may create cgroups below a given cgroup (a container
//! with a delegated cgroup subtree, a user's systemd instance) controls the
//! names below it. So pods and containers are taken from the *outermost*
//! component that looks like one, which is the one the kubelet or runtime
//! created, never from a deeper one the workload could have made up.

use sigil_proto::v1;

/// What kind of workload a cgroup path identifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    KubernetesPod,
    Container,
    SystemdUnit,
    Cgroup,
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
    /// Canonical dashed lowercase UUID form (8-4-4-4-12).
    pub pod_uid: Option<String>,
    pub qos_class: Option<QosClass>,
    /// 64 lowercase hex chars.
    pub container_id: Option<String>,
    pub runtime: Option<ContainerRuntime>,
    /// systemd unit name including its suffix, e.g. `nginx.service`.
    pub unit: Option<String>,
}

impl From<WorkloadKind> for v1::WorkloadKind {
    fn from(k: WorkloadKind) -> Self {
        match k {
            WorkloadKind::KubernetesPod => Self::KubernetesPod,
            WorkloadKind::Container => Self::Container,
            WorkloadKind::SystemdUnit => Self::SystemdUnit,
            WorkloadKind::Cgroup => Self::Cgroup,
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
        }
    }
}

impl Workload {
    fn bare(kind: WorkloadKind) -> Self {
        Self {
            kind,
            pod_uid: None,
            qos_class: None,
            container_id: None,
            runtime: None,
            unit: None,
        }
    }
}

/// Parse a cgroup v2 path (the part after `0::`) into a workload identity.
///
/// Components are matched individually, so the Kubernetes part may sit under
/// any prefix (kind's `kubelet.slice`, a test cgroup, a node container).
pub fn parse_cgroup_path(path: &str) -> Workload {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    kubernetes_pod(&parts)
        .or_else(|| standalone_container(&parts))
        .or_else(|| systemd_unit(&parts))
        .unwrap_or_else(|| Workload::bare(WorkloadKind::Cgroup))
}

/// A component that names a pod: its QoS, and its uid if that was well formed.
struct PodSlice {
    uid: Option<String>,
    qos: QosClass,
}

/// What a single component says about a container.
enum ContainerPart {
    /// A container cgroup with a valid id.
    Id(ContainerRuntime, String),
    /// The runtime's monitor (conmon) for a container: it runs in its own
    /// scope beside the container, so it belongs to the workload but is not it.
    Monitor(ContainerRuntime),
    /// Named like a container but the id is malformed: claims nothing, and is
    /// not a systemd unit either.
    Malformed,
}

/// Runtime prefixes of container cgroup names, most specific first
/// (`crio-conmon-` must be tried before `crio-`). The flag marks monitors.
const CONTAINER_PREFIXES: &[(&str, ContainerRuntime, bool)] = &[
    ("cri-containerd-", ContainerRuntime::Containerd, false),
    ("crio-conmon-", ContainerRuntime::CriO, true),
    ("crio-", ContainerRuntime::CriO, false),
    ("docker-", ContainerRuntime::Docker, false),
    ("libpod-conmon-", ContainerRuntime::Podman, true),
    ("libpod-", ContainerRuntime::Podman, false),
];

/// The component `up` levels above index `i`, if any.
fn ancestor<'a>(parts: &[&'a str], i: usize, up: usize) -> Option<&'a str> {
    i.checked_sub(up).and_then(|j| parts.get(j)).copied()
}

/// A Kubernetes pod, with the container (if any) directly under it.
///
/// The outermost pod-looking component decides (see the module trust note);
/// if its uid is malformed no pod is reported and the path is treated as if
/// it were not Kubernetes at all.
fn kubernetes_pod(parts: &[&str]) -> Option<Workload> {
    let (index, pod) = parts.iter().enumerate().find_map(|(i, part)| {
        pod_slice(part, ancestor(parts, i, 1), ancestor(parts, i, 2)).map(|pod| (i, pod))
    })?;
    let mut workload = Workload {
        pod_uid: Some(pod.uid?),
        qos_class: Some(pod.qos),
        ..Workload::bare(WorkloadKind::KubernetesPod)
    };
    // Inside a pod a bare 64-hex component is a container (cgroupfs driver),
    // but nothing says which runtime made it.
    let container = parts
        .iter()
        .skip(index + 1)
        .find_map(|part| container_part(part, Some(ContainerRuntime::Unknown)));
    match container {
        Some(ContainerPart::Id(runtime, id)) => {
            workload.runtime = Some(runtime);
            workload.container_id = Some(id);
        }
        Some(ContainerPart::Monitor(runtime)) => workload.runtime = Some(runtime),
        Some(ContainerPart::Malformed) | None => {}
    }
    Some(workload)
}

/// Recognise a pod component, given its parent and grandparent.
fn pod_slice(part: &str, parent: Option<&str>, grandparent: Option<&str>) -> Option<PodSlice> {
    if let Some(name) = part.strip_suffix(".slice") {
        // systemd driver: a slice name spells its whole ancestry joined by '-',
        // e.g. `kubepods-burstable-pod<uid>`, `kubepods-pod<uid>` (guaranteed),
        // possibly behind a prefix such as kind's `kubelet-`. A uid contains no
        // 'p', so the last "-pod" is the right split even for dashed uids.
        let (ancestry, uid) = name.rsplit_once("-pod")?;
        let mut segments = ancestry.split('-');
        let qos = match segments.next_back()? {
            "kubepods" => QosClass::Guaranteed,
            "burstable" if segments.any(|s| s == "kubepods") => QosClass::Burstable,
            "besteffort" if segments.any(|s| s == "kubepods") => QosClass::BestEffort,
            _ => return None,
        };
        return Some(PodSlice {
            uid: pod_uid(uid),
            qos,
        });
    }
    // cgroupfs driver: `kubepods/<qos>/pod<uid>` or `kubepods/pod<uid>`.
    let uid = part.strip_prefix("pod")?;
    let qos = match (grandparent, parent?) {
        (_, "kubepods") => QosClass::Guaranteed,
        (Some("kubepods"), "burstable") => QosClass::Burstable,
        (Some("kubepods"), "besteffort") => QosClass::BestEffort,
        _ => return None,
    };
    Some(PodSlice {
        uid: pod_uid(uid),
        qos,
    })
}

/// Normalise a pod uid: 32 hex digits once `-`/`_` separators are dropped
/// (systemd slice names cannot hold '-' inside a name, so the kubelet writes
/// `_`), returned in canonical dashed lowercase form.
fn pod_uid(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(36);
    let mut digits = 0;
    for c in raw.chars().filter(|c| !matches!(c, '-' | '_')) {
        if digits == 32 || !c.is_ascii_hexdigit() {
            return None;
        }
        if matches!(digits, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
        digits += 1;
    }
    (digits == 32).then_some(out)
}

/// A container id: exactly 64 hex chars, lowercased.
fn container_id(raw: &str) -> Option<String> {
    (raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| raw.to_ascii_lowercase())
}

/// Classify one component as a container cgroup.
///
/// Prefixed forms are `<prefix><id>.scope` (systemd) or `<prefix><id>`
/// (cgroupfs); any other dot means a unit such as `docker-compose@x.service`,
/// not a container. `bare` is what a bare 64-hex component means here: bare
/// ids are only containers in a context that says so (a pod, `/docker/`),
/// e.g. `containerd.service/<id>` is the daemon's own cgroup.
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

/// A container outside Kubernetes (docker, podman, or a CRI runtime whose pod
/// could not be validated). The outermost container-looking component decides.
fn standalone_container(parts: &[&str]) -> Option<Workload> {
    let found = parts.iter().enumerate().find_map(|(i, part)| {
        // cgroupfs docker: `/docker/<id>`.
        let bare = (ancestor(parts, i, 1) == Some("docker")).then_some(ContainerRuntime::Docker);
        container_part(part, bare)
    })?;
    let (runtime, id) = match found {
        ContainerPart::Id(runtime, id) => (runtime, Some(id)),
        ContainerPart::Monitor(runtime) => (runtime, None),
        ContainerPart::Malformed => return None,
    };
    Some(Workload {
        runtime: Some(runtime),
        container_id: id,
        ..Workload::bare(WorkloadKind::Container)
    })
}

/// The deepest `.service`/`.scope` component. Units inside a container's
/// cgroup belong to the container, so the search stops at the first
/// container-looking component.
fn systemd_unit(parts: &[&str]) -> Option<Workload> {
    let unit = parts
        .iter()
        .take_while(|part| container_part(part, None).is_none())
        .filter(|part| {
            [".service", ".scope"].iter().any(|suffix| {
                part.strip_suffix(suffix)
                    .is_some_and(|stem| !stem.is_empty())
            })
        })
        .last()?;
    Some(Workload {
        unit: Some((*unit).to_owned()),
        ..Workload::bare(WorkloadKind::SystemdUnit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1234abcd-5678-90ef-abcd-1234567890ab";
    const UID_US: &str = "1234abcd_5678_90ef_abcd_1234567890ab";
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const CID2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn none(kind: WorkloadKind) -> Workload {
        Workload::bare(kind)
    }

    fn pod(qos: QosClass, container: Option<(ContainerRuntime, &str)>) -> Workload {
        Workload {
            pod_uid: Some(UID.to_owned()),
            qos_class: Some(qos),
            runtime: container.map(|(r, _)| r),
            container_id: container.map(|(_, id)| id.to_owned()),
            ..none(WorkloadKind::KubernetesPod)
        }
    }

    fn container(runtime: ContainerRuntime, id: Option<&str>) -> Workload {
        Workload {
            runtime: Some(runtime),
            container_id: id.map(str::to_owned),
            ..none(WorkloadKind::Container)
        }
    }

    fn unit(name: &str) -> Workload {
        Workload {
            unit: Some(name.to_owned()),
            ..none(WorkloadKind::SystemdUnit)
        }
    }

    fn parse(path: String) -> Workload {
        parse_cgroup_path(&path)
    }

    // --- systemd cgroup driver -------------------------------------------

    #[test]
    fn systemd_containerd_burstable() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(
            parse(p),
            pod(
                QosClass::Burstable,
                Some((ContainerRuntime::Containerd, CID))
            )
        );
    }

    #[test]
    fn systemd_crio_besteffort() {
        let p = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-{CID}.scope"
        );
        assert_eq!(
            parse(p),
            pod(QosClass::BestEffort, Some((ContainerRuntime::CriO, CID)))
        );
    }

    #[test]
    fn systemd_docker_guaranteed() {
        let p = format!("/kubepods.slice/kubepods-pod{UID_US}.slice/docker-{CID}.scope");
        assert_eq!(
            parse(p),
            pod(QosClass::Guaranteed, Some((ContainerRuntime::Docker, CID)))
        );
    }

    #[test]
    fn systemd_pod_slice_without_container() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice"
        );
        assert_eq!(parse(p), pod(QosClass::Burstable, None));
        let p = format!("/kubepods.slice/kubepods-pod{UID_US}.slice/");
        assert_eq!(parse(p), pod(QosClass::Guaranteed, None));
    }

    #[test]
    fn crio_conmon_belongs_to_pod_but_is_not_the_container() {
        let p = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-conmon-{CID}.scope"
        );
        let w = parse(p);
        assert_eq!(w.kind, WorkloadKind::KubernetesPod);
        assert_eq!(w.pod_uid.as_deref(), Some(UID));
        assert_eq!(w.qos_class, Some(QosClass::BestEffort));
        assert_eq!(w.container_id, None);
        assert_eq!(w.runtime, Some(ContainerRuntime::CriO));
        assert_eq!(w.unit, None);
    }

    #[test]
    fn crio_nested_container_subcgroup() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-{CID}.scope/container"
        );
        assert_eq!(
            parse(p),
            pod(QosClass::Burstable, Some((ContainerRuntime::CriO, CID)))
        );
    }

    #[test]
    fn dashed_uid_in_systemd_slice_is_accepted() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(
            parse(p),
            pod(
                QosClass::Burstable,
                Some((ContainerRuntime::Containerd, CID))
            )
        );
    }

    #[test]
    fn uppercase_hex_is_lowercased() {
        let p = format!(
            "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{}.scope",
            UID_US.to_uppercase(),
            CID.to_uppercase()
        );
        assert_eq!(
            parse(p),
            pod(
                QosClass::Guaranteed,
                Some((ContainerRuntime::Containerd, CID))
            )
        );
    }

    // --- nesting under prefixes ------------------------------------------

    #[test]
    fn kind_cluster_nested_under_kubelet_slice() {
        let p = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(
            parse(p),
            pod(
                QosClass::BestEffort,
                Some((ContainerRuntime::Containerd, CID))
            )
        );
        let p = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(
            parse(p),
            pod(
                QosClass::Guaranteed,
                Some((ContainerRuntime::Containerd, CID))
            )
        );
    }

    #[test]
    fn kind_cluster_seen_from_host_pod_wins_over_node_container() {
        let p = format!(
            "/system.slice/docker-{CID2}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_US}.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(
            parse(p),
            pod(
                QosClass::Burstable,
                Some((ContainerRuntime::Containerd, CID))
            )
        );
    }

    #[test]
    fn test_prefix_before_kubepods() {
        let p = format!(
            "/sigil-test-42/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-{CID}.scope"
        );
        assert_eq!(
            parse(p),
            pod(QosClass::Burstable, Some((ContainerRuntime::CriO, CID)))
        );
        let p = format!("/sigil-test-42/kubepods/besteffort/pod{UID}/{CID}");
        assert_eq!(
            parse(p),
            pod(QosClass::BestEffort, Some((ContainerRuntime::Unknown, CID)))
        );
    }

    #[test]
    fn outermost_pod_and_container_win_over_workload_made_subcgroups() {
        // A container with a delegated cgroup subtree could create these
        // deeper names; the identity must stay the one the kubelet created.
        let fake_uid = "ffffffff_ffff_ffff_ffff_ffffffffffff";
        let p = format!(
            "/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{CID}.scope/kubepods-pod{fake_uid}.slice/cri-containerd-{CID2}.scope"
        );
        assert_eq!(
            parse(p),
            pod(
                QosClass::Guaranteed,
                Some((ContainerRuntime::Containerd, CID))
            )
        );
    }

    // --- cgroupfs driver -------------------------------------------------

    #[test]
    fn cgroupfs_all_qos_classes_with_bare_id() {
        let cases = [
            (
                format!("/kubepods/burstable/pod{UID}/{CID}"),
                QosClass::Burstable,
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/{CID}"),
                QosClass::BestEffort,
            ),
            (format!("/kubepods/pod{UID}/{CID}"), QosClass::Guaranteed),
        ];
        for (p, qos) in cases {
            assert_eq!(parse(p), pod(qos, Some((ContainerRuntime::Unknown, CID))));
        }
    }

    #[test]
    fn cgroupfs_prefixed_ids_name_the_runtime() {
        let cases = [
            ("crio-", ContainerRuntime::CriO),
            ("docker-", ContainerRuntime::Docker),
            ("cri-containerd-", ContainerRuntime::Containerd),
        ];
        for (prefix, runtime) in cases {
            let p = format!("/kubepods/burstable/pod{UID}/{prefix}{CID}");
            assert_eq!(parse(p), pod(QosClass::Burstable, Some((runtime, CID))));
        }
    }

    #[test]
    fn cgroupfs_pod_without_container_and_underscore_uid() {
        assert_eq!(
            parse(format!("/kubepods/pod{UID}")),
            pod(QosClass::Guaranteed, None)
        );
        assert_eq!(
            parse(format!("/kubepods/besteffort/pod{UID_US}")),
            pod(QosClass::BestEffort, None)
        );
    }

    #[test]
    fn cgroupfs_pod_needs_kubepods_ancestry() {
        // `burstable/pod<uid>` outside kubepods is not a pod, and a bare id
        // outside a pod or /docker/ is not a container.
        assert_eq!(
            parse(format!("/burstable/pod{UID}/{CID}")),
            none(WorkloadKind::Cgroup)
        );
        assert_eq!(
            parse(format!("/kubepods/weird/pod{UID}/{CID}")),
            none(WorkloadKind::Cgroup)
        );
    }

    // --- malformed pod uids and container ids ----------------------------

    #[test]
    fn malformed_pod_uids_are_not_reported() {
        let bad = [
            "1234abcd_5678_90ef_abcd_1234567890a",   // 31 digits
            "1234abcd_5678_90ef_abcd_1234567890abc", // 33 digits
            "1234abcd_5678_90ef_abcd_1234567890ag",  // non-hex
            "",
            "1234abcd.5678_90ef_abcd_1234567890ab", // wrong separator
        ];
        for uid in bad {
            let p = format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice"
            );
            assert_eq!(parse(p), none(WorkloadKind::Cgroup), "uid {uid:?}");
            let p = format!("/kubepods/burstable/pod{uid}/{CID}");
            assert_eq!(parse(p), none(WorkloadKind::Cgroup), "uid {uid:?}");
        }
    }

    #[test]
    fn malformed_pod_uid_still_reports_a_valid_container() {
        let p = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podnothex.slice/cri-containerd-{CID}.scope"
        );
        assert_eq!(parse(p), container(ContainerRuntime::Containerd, Some(CID)));
    }

    #[test]
    fn malformed_outer_pod_is_not_replaced_by_a_deeper_one() {
        let p = format!("/kubepods.slice/kubepods-podbad.slice/x/kubepods-pod{UID_US}.slice");
        assert_eq!(parse(p), none(WorkloadKind::Cgroup));
    }

    #[test]
    fn unknown_qos_segment_is_not_a_pod() {
        let p = format!("/kubepods.slice/kubepods-weird-pod{UID_US}.slice");
        assert_eq!(parse(p), none(WorkloadKind::Cgroup));
        // `burstable` without kubepods ancestry.
        let p = format!("/burstable-pod{UID_US}.slice");
        assert_eq!(parse(p), none(WorkloadKind::Cgroup));
    }

    #[test]
    fn malformed_container_ids_in_a_pod_are_not_reported() {
        let bad = [
            CID.get(..63).unwrap_or_default().to_owned(),
            format!("{CID}0"),
            format!("{}g", CID.get(..63).unwrap_or_default()),
        ];
        for id in bad {
            let p = format!("/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{id}.scope");
            assert_eq!(parse(p), pod(QosClass::Guaranteed, None), "id {id:?}");
            let p = format!("/kubepods/pod{UID}/{id}");
            assert_eq!(parse(p), pod(QosClass::Guaranteed, None), "id {id:?}");
        }
    }

    #[test]
    fn malformed_container_scope_is_neither_container_nor_unit() {
        assert_eq!(
            parse_cgroup_path("/system.slice/docker-abc.scope"),
            none(WorkloadKind::Cgroup)
        );
        assert_eq!(
            parse_cgroup_path("/system.slice/docker-abc.scope/inner.service"),
            none(WorkloadKind::Cgroup)
        );
    }

    // --- containers outside Kubernetes -----------------------------------

    #[test]
    fn docker_standalone_systemd_and_cgroupfs() {
        assert_eq!(
            parse(format!("/system.slice/docker-{CID}.scope")),
            container(ContainerRuntime::Docker, Some(CID))
        );
        assert_eq!(
            parse(format!("/docker/{CID}")),
            container(ContainerRuntime::Docker, Some(CID))
        );
        // Docker-in-docker: the outer container is the one the host knows.
        assert_eq!(
            parse(format!("/docker/{CID}/docker/{CID2}")),
            container(ContainerRuntime::Docker, Some(CID))
        );
        assert_eq!(
            parse_cgroup_path("/docker/notanid"),
            none(WorkloadKind::Cgroup)
        );
    }

    #[test]
    fn podman_machine_slice_and_rootless() {
        assert_eq!(
            parse(format!("/machine.slice/libpod-{CID}.scope")),
            container(ContainerRuntime::Podman, Some(CID))
        );
        assert_eq!(
            parse(format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope"
            )),
            container(ContainerRuntime::Podman, Some(CID))
        );
        assert_eq!(
            parse(format!("/machine.slice/libpod-{CID}.scope/container")),
            container(ContainerRuntime::Podman, Some(CID))
        );
    }

    #[test]
    fn podman_conmon_is_container_without_id() {
        assert_eq!(
            parse(format!("/machine.slice/libpod-conmon-{CID}.scope")),
            container(ContainerRuntime::Podman, None)
        );
    }

    #[test]
    fn units_inside_a_container_belong_to_the_container() {
        assert_eq!(
            parse(format!(
                "/system.slice/docker-{CID}.scope/system.slice/nginx.service"
            )),
            container(ContainerRuntime::Docker, Some(CID))
        );
    }

    #[test]
    fn containerd_daemon_unit_is_not_a_container() {
        assert_eq!(
            parse(format!("/system.slice/containerd.service/{CID}")),
            unit("containerd.service")
        );
        assert_eq!(
            parse(format!("/system.slice/containerd.service/default/{CID}")),
            unit("containerd.service")
        );
        // containerd with SystemdCgroup=false under a systemd-driver kubelet.
        assert_eq!(
            parse(format!(
                "/system.slice/containerd.service/kubepods-besteffort-pod{UID_US}.slice:cri-containerd:{CID}"
            )),
            unit("containerd.service")
        );
    }

    #[test]
    fn bare_id_outside_pod_or_docker_is_not_a_container() {
        assert_eq!(parse(format!("/{CID}")), none(WorkloadKind::Cgroup));
        assert_eq!(
            parse(format!("/system.slice/{CID}")),
            none(WorkloadKind::Cgroup)
        );
    }

    // --- systemd units ---------------------------------------------------

    #[test]
    fn systemd_system_units() {
        assert_eq!(
            parse_cgroup_path("/system.slice/nginx.service"),
            unit("nginx.service")
        );
        assert_eq!(
            parse_cgroup_path("/system.slice/system-getty.slice/getty@tty1.service"),
            unit("getty@tty1.service")
        );
        assert_eq!(parse_cgroup_path("/init.scope"), unit("init.scope"));
        assert_eq!(
            parse_cgroup_path("/system.slice/docker-compose@app.service"),
            unit("docker-compose@app.service")
        );
        assert_eq!(
            parse_cgroup_path("/system.slice/docker.service"),
            unit("docker.service")
        );
    }

    #[test]
    fn systemd_user_units_and_sessions() {
        assert_eq!(
            parse_cgroup_path(
                "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service"
            ),
            unit("foo.service")
        );
        assert_eq!(
            parse_cgroup_path("/user.slice/user-1000.slice/user@1000.service/init.scope"),
            unit("init.scope")
        );
        assert_eq!(
            parse_cgroup_path("/user.slice/user-1000.slice/user@1000.service/app.slice"),
            unit("user@1000.service")
        );
        assert_eq!(
            parse_cgroup_path("/user.slice/user-1000.slice/session-3.scope"),
            unit("session-3.scope")
        );
    }

    #[test]
    fn slices_only_are_plain_cgroups() {
        for p in [
            "/system.slice",
            "/user.slice",
            "/user.slice/user-1000.slice",
            "/kubepods.slice",
        ] {
            assert_eq!(parse_cgroup_path(p), none(WorkloadKind::Cgroup), "{p}");
        }
    }

    #[test]
    fn root_and_empty_are_plain_cgroups() {
        assert_eq!(parse_cgroup_path("/"), none(WorkloadKind::Cgroup));
        assert_eq!(parse_cgroup_path(""), none(WorkloadKind::Cgroup));
    }

    // --- garbage ---------------------------------------------------------

    #[test]
    fn garbage_is_a_plain_cgroup() {
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
        ];
        for p in cases {
            assert_eq!(parse_cgroup_path(p), none(WorkloadKind::Cgroup), "{p:?}");
        }
    }

    #[test]
    fn non_ascii_unit_name_is_kept_verbatim() {
        assert_eq!(
            parse_cgroup_path("/system.slice/ñgïnx.service"),
            unit("ñgïnx.service")
        );
    }

    #[test]
    fn very_long_inputs_do_not_panic() {
        let long = "a".repeat(100_000);
        assert_eq!(parse_cgroup_path(&long), none(WorkloadKind::Cgroup));
        let deep = "/x.slice".repeat(10_000);
        assert_eq!(parse_cgroup_path(&deep), none(WorkloadKind::Cgroup));
        let long_uid = format!("/kubepods/pod{}", "a".repeat(10_000));
        assert_eq!(parse(long_uid), none(WorkloadKind::Cgroup));
        let deep_pod = format!(
            "{}/kubepods.slice/kubepods-pod{UID_US}.slice/crio-{CID}.scope",
            "/p".repeat(10_000)
        );
        assert_eq!(
            parse(deep_pod),
            pod(QosClass::Guaranteed, Some((ContainerRuntime::CriO, CID)))
        );
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
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = usize::try_from(seed >> 33).unwrap_or(0) % pieces.len();
                s.push_str(pieces.get(i).copied().unwrap_or(""));
            }
            let w = parse_cgroup_path(&s);
            if let Some(uid) = &w.pod_uid {
                assert_eq!(uid.len(), 36, "{s:?}");
                assert_eq!(w.kind, WorkloadKind::KubernetesPod, "{s:?}");
            }
            if let Some(id) = &w.container_id {
                assert_eq!(id.len(), 64, "{s:?}");
                assert!(
                    id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                    "{s:?}"
                );
            }
            assert_eq!(
                w.unit.is_some(),
                w.kind == WorkloadKind::SystemdUnit,
                "{s:?}"
            );
        }
    }

    // --- serialization ---------------------------------------------------

    #[test]
    /// The contract type the agent emits writes every field in snake_case.
    fn serializes_all_fields_in_snake_case() {
        let p = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/crio-{CID}.scope"
        );
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
            })
        );
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
            })
        );
    }
}
