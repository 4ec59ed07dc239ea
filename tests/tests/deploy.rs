#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! deploy/: the kustomize base renders, every object validates offline against the
//! Kubernetes schemas (kubernetes-validate, pinned version), the agent's RBAC is read-only
//! on pods, the shipped policy parses, and the images build what the tests build.

use std::{fs, path::Path, process::Command};

use serde_json::{Value, json};
use sigil_tests::{manifests, python, scratch_dir};

fn validate(files: &[&Path]) -> (bool, String) {
    let validator = python().with_file_name("kubernetes-validate");
    let out = Command::new(&validator)
        .args(["--strict", "--kubernetes-version", manifests::KUBERNETES_VERSION])
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (cargo xtask test installs kubernetes-validate)", validator.display()));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_kustomize_base_renders_and_every_object_validates_against_the_pinned_kubernetes_schemas() {
    let rendered = manifests::render();
    let example = manifests::base_dir().join("examples/workload.yaml");
    let docs = manifests::load(&[&rendered, &example]);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PersistentVolumeClaim",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let (ok, report) = validate(&[&rendered, &example]);
    assert!(ok, "kubernetes-validate refused the manifests:\n{report}");
    assert_eq!(report.matches("passed for resource").count(), docs.len(), "every object was validated:\n{report}");

    // The validator does refuse what the API server would refuse.
    let broken = scratch_dir().join("broken.yaml");
    let text = fs::read_to_string(&rendered).unwrap().replacen("containerPort: 9464", "containerPort: \"metrics\"", 1);
    fs::write(&broken, text).unwrap();
    let (ok, report) = validate(&[&broken]);
    assert!(!ok && report.contains("containerPort"), "a string port must not validate:\n{report}");
}

/// A compromised node holds the agent's service account token: with it, it can read pod
/// metadata and nothing else (no secrets, no exec, no writes).
#[test]
fn a_compromised_nodes_agent_token_can_only_read_pods() {
    let docs = manifests::load(&[&manifests::render()]);
    let role = manifests::find(&docs, "ClusterRole", "sigil-agent-pod-reader");
    assert_eq!(role["rules"], json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]));
    let bindings: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .filter(|d| d["subjects"].as_array().is_some_and(|s| s.iter().any(|s| s["name"] == "sigil-agent")))
        .collect();
    assert_eq!(bindings.len(), 1, "one binding for the agent: {bindings:?}");
    assert_eq!(bindings[0]["roleRef"]["name"], "sigil-agent-pod-reader");
    let ds = manifests::find(&docs, "DaemonSet", "sigil-agent");
    assert_eq!(ds["spec"]["template"]["spec"]["serviceAccountName"], "sigil-agent");
    let caps = manifests::agent_capabilities(&docs);
    assert!(!caps.iter().any(|c| c == "kill" || c == "sys_resource"), "{caps:?}");
    // The collector talks to no API server and runs as non-root without capabilities.
    let collector = manifests::find(&docs, "Deployment", "sigil-collector");
    let pod = &collector["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["containers"][0]["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    // Workloads mount the socket directory read-only.
    let example = manifests::load(&[&manifests::base_dir().join("examples/workload.yaml")]);
    let w = &example[0]["spec"]["template"]["spec"];
    assert_eq!(w["containers"][0]["volumeMounts"][0], json!({"name": "sigil", "mountPath": "/run/sigil", "readOnly": true}));
    assert_eq!(w["volumes"][0]["hostPath"]["path"], "/run/sigil");
}

#[test]
fn the_shipped_policy_is_one_the_agent_accepts() {
    let docs = manifests::load(&[&manifests::render()]);
    let cm = manifests::find(&docs, "ConfigMap", "sigil-policy");
    let policy = sigil_agent::issue::policy::parse(cm["data"]["policy.toml"].as_str().unwrap()).expect("the shipped policy parses");
    assert_eq!(policy.entries.len(), 2);
}

#[test]
fn each_dockerfile_builds_with_the_test_suites_command_and_the_collector_runs_as_non_root() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/docker");
    for name in ["agent.Dockerfile", "collector.Dockerfile"] {
        let text = fs::read_to_string(dir.join(name)).unwrap();
        let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
        assert!(stages >= 2, "{name} is multi-stage");
        assert!(text.contains("RUN cargo xtask build --release"), "{name} builds as `cargo xtask build --release` does");
    }
    let collector = fs::read_to_string(dir.join("collector.Dockerfile")).unwrap();
    let docs = manifests::load(&[&manifests::render()]);
    let uid = manifests::find(&docs, "Deployment", "sigil-collector")["spec"]["template"]["spec"]["securityContext"]["runAsUser"].clone();
    assert!(collector.contains(&format!("USER {uid}:{uid}")), "the image's user is the Deployment's runAsUser {uid}");
}
