//! What Sigil keeps about a pod, and how it is read from a `Pod` object.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

/// The kubelet names a static pod's cgroup after its config hash, which its mirror pod in
/// the API carries in this annotation (the mirror pod's own UID differs).
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The ReplicaSet controller labels each pod with the hash its ReplicaSet name ends with.
const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Kubernetes facts about a pod that the cgroup path does not carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PodMeta {
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    pub name: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// The workload that manages a pod, as users name it (`Deployment/checkout`, not the
/// ReplicaSet `checkout-7d9f8b6c5d`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
    /// The direct controller when it is not the owner itself: the ReplicaSet of a
    /// Deployment's pod, the Job of a CronJob's pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<Box<Owner>>,
}

impl From<&Owner> for sigil_proto::v1::Owner {
    fn from(o: &Owner) -> Self {
        Self { kind: o.kind.clone(), name: o.name.clone(), via: o.via.as_deref().map(|v| Box::new(v.into())) }
    }
}

impl From<&PodMeta> for sigil_proto::v1::PodMeta {
    fn from(m: &PodMeta) -> Self {
        Self {
            namespace: m.namespace.clone(),
            service_account: m.service_account.clone(),
            name: m.name.clone(),
            labels: m.labels.clone(),
            owner: m.owner.as_ref().map(Into::into),
        }
    }
}

impl Owner {
    fn direct(kind: &str, name: &str) -> Self {
        Self { kind: kind.to_owned(), name: name.to_owned(), via: None }
    }

    fn through(kind: &str, name: &str, via: Owner) -> Self {
        Self { kind: kind.to_owned(), name: name.to_owned(), via: Some(Box::new(via)) }
    }

    /// The Job this pod runs for (directly, or through a CronJob).
    fn job(&self) -> Option<&str> {
        match (&*self.kind, &self.via) {
            ("Job", _) => Some(&self.name),
            (_, Some(v)) if v.kind == "Job" => Some(&v.name),
            _ => None,
        }
    }
}

impl PodMeta {
    /// What a run is to a user of this pod, as a stable key:
    /// - a Job's pods (also a CronJob's) are one run per Job execution:
    ///   `k8s/<namespace>/job/<job name>`, retries included;
    /// - a pod of any other owner is one run: `k8s/<namespace>/<owner kind>/<owner name>/<pod name>`
    ///   (e.g. `k8s/payments/deployment/checkout/checkout-7d9f8b6c5d-x2x4z`), across container restarts;
    /// - a bare pod: `k8s/<namespace>/pod/<pod name>`.
    ///
    /// None when the namespace or name is unknown (a `--pods` file entry without them).
    pub fn run_key(&self) -> Option<String> {
        let ns = self.namespace.as_deref()?;
        if let Some(job) = self.owner.as_ref().and_then(Owner::job) {
            return Some(format!("k8s/{ns}/job/{job}"));
        }
        let name = self.name.as_deref()?;
        Some(match &self.owner {
            Some(o) => format!("k8s/{ns}/{}/{}/{name}", o.kind.to_ascii_lowercase(), o.name),
            None => format!("k8s/{ns}/pod/{name}"),
        })
    }
}

/// The UIDs a pod's processes can carry in their cgroup path: its own, and for a static
/// pod the config hash the kubelet used (lower case, as the cgroup parser reports them).
/// The hash counts only on a mirror pod, which its node owns: anyone else's pod claiming
/// the annotation would otherwise name a static pod's processes.
pub fn cgroup_uids(pod: &Pod) -> Vec<String> {
    let m = &pod.metadata;
    let mut uids: Vec<String> = m.uid.iter().map(|u| u.to_ascii_lowercase()).collect();
    let node_owned = m.owner_references.as_ref().is_some_and(|r| r.iter().any(|o| o.kind == "Node"));
    if let Some(hash) = m.annotations.as_ref().and_then(|a| a.get(MIRROR_ANNOTATION)).filter(|_| node_owned) {
        uids.push(hash.to_ascii_lowercase());
    }
    uids
}

impl From<&Pod> for PodMeta {
    fn from(pod: &Pod) -> Self {
        let m = &pod.metadata;
        let labels = m.labels.clone().unwrap_or_default();
        Self {
            namespace: m.namespace.clone(),
            service_account: pod.spec.as_ref().and_then(|s| s.service_account_name.clone()),
            name: m.name.clone(),
            owner: owner_of(pod, &labels),
            labels,
        }
    }
}

/// The pod's managing controller, named as users name it.
///
/// The agent may read pods only, not ReplicaSets or Jobs, so the owner above the direct
/// controller is derived from names the controllers generate: a Deployment's ReplicaSet is
/// `<deployment>-<pod-template-hash>` (the hash is also a pod label), a CronJob's Job is
/// `<cronjob>-<scheduled time in minutes>`. Anyone who may create a ReplicaSet or Job in a
/// namespace can choose such names, which is why `k8s:owner` selectors belong next to a
/// `k8s:ns` selector (whoever controls the namespace's controllers controls its pods anyway).
fn owner_of(pod: &Pod, labels: &BTreeMap<String, String>) -> Option<Owner> {
    let refs = pod.metadata.owner_references.as_ref()?;
    let r = refs.iter().find(|r| r.controller == Some(true)).or_else(|| refs.first())?;
    let direct = Owner::direct(&r.kind, &r.name);
    match r.kind.as_str() {
        "ReplicaSet" => {
            let deployment = labels
                .get(TEMPLATE_HASH_LABEL)
                .filter(|h| !h.is_empty())
                .and_then(|h| r.name.strip_suffix(h.as_str()))
                .and_then(|rest| rest.strip_suffix('-'))
                .filter(|d| !d.is_empty());
            Some(match deployment {
                Some(d) => Owner::through("Deployment", d, direct),
                None => direct,
            })
        }
        "Job" => {
            let cronjob = r
                .name
                .rsplit_once('-')
                .filter(|(prefix, minutes)| !prefix.is_empty() && minutes.len() >= 8 && minutes.bytes().all(|b| b.is_ascii_digit()))
                .map(|(prefix, _)| prefix);
            Some(match cronjob {
                Some(c) => Owner::through("CronJob", c, direct),
                None => direct,
            })
        }
        _ => Some(direct),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("a valid Pod")
    }

    fn owned(kind: &str, name: &str, labels: serde_json::Value) -> PodMeta {
        PodMeta::from(&pod(serde_json::json!({
            "metadata": {"name": "p-1", "namespace": "ns", "uid": "U", "labels": labels,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "o", "controller": true}]},
            "spec": {"serviceAccountName": "sa", "containers": []}
        })))
    }

    #[test]
    fn a_deployments_pod_names_the_deployment_and_runs_per_pod() {
        let m = owned("ReplicaSet", "checkout-7d9f8b6c5d", serde_json::json!({"pod-template-hash": "7d9f8b6c5d", "app": "c"}));
        let o = m.owner.clone().expect("owner");
        assert_eq!((o.kind.as_str(), o.name.as_str()), ("Deployment", "checkout"));
        assert_eq!(o.via.as_deref().map(|v| v.name.as_str()), Some("checkout-7d9f8b6c5d"));
        assert_eq!(m.service_account.as_deref(), Some("sa"));
        assert_eq!(m.labels["app"], "c");
        assert_eq!(m.run_key().as_deref(), Some("k8s/ns/deployment/checkout/p-1"));
    }

    #[test]
    fn a_replicaset_without_the_hash_label_stays_a_replicaset() {
        let m = owned("ReplicaSet", "checkout-7d9f8b6c5d", serde_json::json!({}));
        assert_eq!(m.owner.expect("owner").kind, "ReplicaSet");
    }

    #[test]
    fn jobs_and_cronjobs_are_one_run_per_job() {
        let job = owned("Job", "migrate", serde_json::json!({}));
        assert_eq!(job.owner.as_ref().map(|o| o.kind.as_str()), Some("Job"));
        assert_eq!(job.run_key().as_deref(), Some("k8s/ns/job/migrate"));
        let cron = owned("Job", "nightly-report-29012345", serde_json::json!({}));
        let o = cron.owner.clone().expect("owner");
        assert_eq!((o.kind.as_str(), o.name.as_str()), ("CronJob", "nightly-report"));
        assert_eq!(cron.run_key().as_deref(), Some("k8s/ns/job/nightly-report-29012345"));
        // A short numeric suffix is a hand-named Job, not a CronJob's schedule.
        assert_eq!(owned("Job", "backup-2024", serde_json::json!({})).owner.expect("owner").kind, "Job");
    }

    #[test]
    fn a_static_pod_is_found_by_its_config_hash_and_a_bare_pod_cannot_claim_one() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "etcd-n1", "namespace": "kube-system", "uid": "AB-CD",
                         "annotations": {"kubernetes.io/config.mirror": "0123ABCD"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "n", "controller": true}]},
        }));
        assert_eq!(cgroup_uids(&p), vec!["ab-cd".to_owned(), "0123abcd".to_owned()]);
        assert_eq!(PodMeta::from(&p).run_key().as_deref(), Some("k8s/kube-system/node/n1/etcd-n1"));
        // A pod its node does not own cannot claim a static pod's cgroups.
        let impostor = pod(serde_json::json!({
            "metadata": {"name": "x", "namespace": "web", "uid": "EF", "annotations": {"kubernetes.io/config.mirror": "0123ABCD"}},
        }));
        assert_eq!(cgroup_uids(&impostor), vec!["ef".to_owned()]);
        assert_eq!(PodMeta::from(&impostor).run_key().as_deref(), Some("k8s/web/pod/x"));
        assert_eq!(PodMeta::default().run_key(), None);
    }
}
