//! The deployable manifests under deploy/kubernetes, rendered the way users apply them
//! (`kubectl kustomize`) and loaded as JSON (PyYAML from the test virtualenv).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::{python, python_script, scratch_dir};

/// The Kubernetes version the manifests are validated against; the agent's k8s-openapi
/// is pinned to the same one (feature `v1_33` in agent/Cargo.toml).
pub const KUBERNETES_VERSION: &str = "1.33.0";

/// deploy/kubernetes in this checkout.
pub fn base_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// `kubectl kustomize deploy/kubernetes`, written to a scratch file.
pub fn render() -> PathBuf {
    let out = Command::new("kubectl").arg("kustomize").arg(base_dir()).output().expect("kubectl (with its built-in kustomize) renders deploy/kubernetes");
    assert!(out.status.success(), "kubectl kustomize failed: {}", String::from_utf8_lossy(&out.stderr));
    let path = scratch_dir().join("rendered.yaml");
    std::fs::write(&path, &out.stdout).expect("writing the rendered manifests");
    path
}

/// Every document of the given YAML files, as JSON.
pub fn load(paths: &[&Path]) -> Vec<Value> {
    let out = Command::new(python()).arg(python_script("manifests.py")).args(paths).output().expect("python");
    assert!(out.status.success(), "manifests.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).expect("JSON").as_array().cloned().unwrap_or_default()
}

/// The one object of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

/// The agent container's `securityContext.capabilities.add`, as setpriv names them
/// (`bpf`, `sys_admin`, ...).
pub fn agent_capabilities(docs: &[Value]) -> Vec<String> {
    let ds = find(docs, "DaemonSet", "sigil-agent");
    let c = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"];
    assert_eq!(c["capabilities"]["drop"], serde_json::json!(["ALL"]), "the agent drops every capability it does not add");
    c["capabilities"]["add"].as_array().expect("capabilities.add").iter().map(|v| v.as_str().expect("a capability name").to_ascii_lowercase()).collect()
}
