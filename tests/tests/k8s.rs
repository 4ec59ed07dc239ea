#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Pod identity from the cluster. A real agent watches a local stand-in for
//! kube-apiserver's pods list/watch (`sigil_tests::fake_apiserver`); workloads are real
//! processes in real cgroups laid out as containers of those pods; tokens are verified
//! with PyJWT against the agent's published keys. There is no `--pods` file anywhere here.

use std::{
    fs,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sigil_tests::{
    fake_apiserver::{FakeApiServer, PodSpec},
    postgres::{Backend, Db},
    *,
};

const NS: &str = "payments";
const AUDIENCE: &str = "sts.amazonaws.com";
/// Granted on namespace + service account (+ the binary).
const ID_SA: &str = "spiffe://sigil.test/ns/payments/sa/checkout";
/// Granted only while the pod is labelled app=checkout and owned by Deployment checkout.
const ID_LABEL: &str = "spiffe://sigil.test/checkout/approved";
/// The bound within which a change on the API server must show in answers.
const CHANGE: Duration = Duration::from_secs(2);

/// A pod on the stand-in API server and a cgroup laid out as one of its containers.
struct Pod {
    name: String,
    uid: String,
    cgroup: TestCgroup,
}

struct Cluster {
    dir: PathBuf,
    api: FakeApiServer,
    agent: Agent,
    node: String,
    socket: PathBuf,
    issuer: String,
    client: PathBuf,
}

/// A pod UID no other test (or run) uses.
fn fresh_uid() -> String {
    let n = unique("");
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    format!("7e57{:0>4}-0000-4000-8000-{:0>12}", &digits[digits.len().saturating_sub(4)..], &digits[digits.len().saturating_sub(12)..])
}

/// A cgroup laid out as a containerd container of pod `uid` (systemd driver).
fn container_cgroup(uid: &str) -> TestCgroup {
    TestCgroup::create(&format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{:0>64}.scope",
        uid.replace('-', "_"),
        uid.replace('-', "")
    ))
}

/// The exec record of `child` running `worker` (not the shell's earlier exec, which a
/// loaded agent may attest only after the shell became the worker).
fn worker_exec(agent: &Agent, child: &std::process::Child, worker: &std::path::Path) -> Value {
    let (pid, path) = (child.id(), worker.display().to_string());
    agent.wait_event("the worker's exec", |v| v["kind"] == "process_exec" && v["pid"] == pid && v["binary"]["exec_path"] == path.as_str())
}

/// The claims of `token`, verified by PyJWT against the issuer's published keys.
fn verified_claims(issuer: &str, token: &str) -> Value {
    let out = std::process::Command::new(python()).arg(python_script("verify_jwt.py")).args([token, issuer, AUDIENCE]).output().unwrap();
    assert!(out.status.success(), "PyJWT refused the token: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["claims"].clone()
}

fn policy(client_sha: &str, extra: &str) -> String {
    format!(
        r#"trust_domain = "sigil.test"

[[entry]]
spiffe_id = "{ID_SA}"
selectors = ["k8s:ns:{NS}", "k8s:sa:checkout", "unix:sha256:{client_sha}"{extra}]

[[entry]]
spiffe_id = "{ID_LABEL}"
selectors = ["k8s:ns:{NS}", "k8s:pod-label:app:checkout", "k8s:owner:Deployment:checkout", "unix:sha256:{client_sha}"{extra}]
"#
    )
}

impl Cluster {
    fn start() -> Self {
        Self::start_with(&[], "", &[], false)
    }

    /// An agent (optionally through `wrapper`) watching a fresh stand-in API server for
    /// a node of its own; `extra` selectors are added to every entry. With `tls`, the
    /// server speaks HTTPS with a test CA and wants a bearer token, and the agent gets
    /// both from a kubeconfig (as in-cluster: a CA and a service account token).
    fn start_with(wrapper: &[&str], extra: &str, more_args: &[&str], tls: bool) -> Self {
        let dir = scratch_dir();
        let client = unique_client(&dir, "checkout");
        let policy_path = dir.join("policy.toml");
        fs::write(&policy_path, policy(&sha256sum(&client), extra)).unwrap();
        let api = if tls { FakeApiServer::start_tls(&dir, &unique("sa-token-")) } else { FakeApiServer::start() };
        let kubeconfig = dir.join("kubeconfig");
        api.kubeconfig(&kubeconfig);
        let kubeconfig = kubeconfig.display().to_string();
        let node = unique("node-");
        let socket = dir.join("workload.sock");
        let listen = format!("127.0.0.1:{}", free_port());
        let (p, s) = (policy_path.display().to_string(), socket.display().to_string());
        let url = api.url();
        let api_args = if tls { ["--kubeconfig", &kubeconfig] } else { ["--kube-api", &url] };
        let mut args = vec!["--node-name", &node, api_args[0], api_args[1], "--policy", &p, "--socket", &s, "--oidc-listen", &listen];
        args.extend_from_slice(more_args);
        let agent = Agent::start_wrapped(wrapper, &args);
        agent.stderr.wait_line("Workload API start", |l| l.contains("Workload API on"));
        agent.stderr.wait_line("first pod list", |l| l.contains("pod watch: listed"));
        Self { dir, api, agent, node, socket, issuer: format!("http://{listen}"), client }
    }

    /// A pod of Deployment `checkout` (through its ReplicaSet) on this node.
    fn create_pod(&self, labels: Value) -> Pod {
        self.create_owned(("ReplicaSet", "checkout-5d8f7c9b4"), labels)
    }

    /// A pod controlled by `owner` (kind, name) on this node, named as its controller would.
    fn create_owned(&self, owner: (&str, &str), labels: Value) -> Pod {
        let uid = fresh_uid();
        let name = format!("{}-{}", owner.1, &uid[uid.len() - 5..]);
        self.put_owned(&name, &uid, owner, labels);
        Pod { name, cgroup: container_cgroup(&uid), uid }
    }

    fn put(&self, name: &str, uid: &str, labels: Value) {
        self.put_owned(name, uid, ("ReplicaSet", "checkout-5d8f7c9b4"), labels);
    }

    fn put_owned(&self, name: &str, uid: &str, owner: (&str, &str), mut labels: Value) {
        if owner.0 == "ReplicaSet" {
            labels["pod-template-hash"] = json!("5d8f7c9b4");
        }
        self.api.put_pod(FakeApiServer::pod(&PodSpec { namespace: NS, name, uid, node: &self.node, service_account: "checkout", labels, owner: Some(owner) }));
    }

    /// A token for `id` requested from inside `pod`: Ok(token) or Err(why).
    fn ask(&self, pod: &Pod, id: &str) -> Result<String, String> {
        let s = self.socket.display().to_string();
        let (code, out, err) = pod.cgroup.run(&self.client, &["token", "--audience", AUDIENCE, "--socket", &s, "--spiffe-id", id]);
        if code == 0 { Ok(out) } else { Err(err) }
    }

    /// Polls until `pod` asking for `id` gets the expected answer (`Ok` or a denial
    /// naming `reason`), for at most `bound` after the change that should cause it.
    fn expect_within(&self, bound: Duration, pod: &Pod, id: &str, expect: Result<(), &str>) {
        let start = Instant::now();
        let deadline = start + bound;
        loop {
            let got = self.ask(pod, id);
            let done = match (&got, expect) {
                (Ok(_), Ok(())) => true,
                (Err(e), Err(reason)) => e.contains(&reason.replace('_', " ")) || e.contains(reason),
                _ => false,
            };
            if done {
                // A figure for the report, not an assertion beyond `bound`.
                eprintln!("{id} from pod {}: {expect:?} after {:?}", pod.name, start.elapsed());
                return;
            }
            assert!(Instant::now() < deadline, "{id} from pod {}: expected {expect:?} within {bound:?}, last answer {got:?}", pod.name);
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn claims(&self, token: &str) -> Value {
        verified_claims(&self.issuer, token)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_pod_process_matches_ns_and_sa_from_the_api_server_and_records_events_and_tokens_name_the_pod() {
    let c = Cluster::start();
    let pod = c.create_pod(json!({"app": "checkout"}));
    let token = c.ask(&pod, ID_SA).expect("a container of a known pod gets its k8s:ns + k8s:sa identity");
    let claims = c.claims(&token);
    let run = format!("k8s/{NS}/deployment/checkout/{}", pod.name);
    assert_eq!(claims["sub"], ID_SA);
    assert_eq!(claims["sigil_k8s_ns"], NS);
    assert_eq!(claims["sigil_k8s_sa"], "checkout");
    assert_eq!(claims["sigil_k8s_pod"], pod.name.as_str());
    assert_eq!(claims["sigil_run"], run.as_str());
    assert_eq!(claims["sigil_pod_uid"], pod.uid.as_str());

    let issued = c.agent.wait_event("token_issued with its pod", |v| v["kind"] == "token_issued" && v["process"]["pod"]["name"] == pod.name.as_str());
    assert_eq!(issued["process"]["pod"]["owner"]["kind"], "Deployment");
    assert_eq!(issued["process"]["pod"]["owner"]["via"]["name"], "checkout-5d8f7c9b4");
    assert_eq!(issued["process"]["pod"]["labels"]["app"], "checkout");
    assert_eq!(issued["process"]["run"], run.as_str());

    // Every attested process of the pod carries it, and the run key.
    let sleeper = unique_binary(&c.dir, "worker");
    let child = pod.cgroup.spawn(&sleeper, &["30"]);
    let rec = worker_exec(&c.agent, &child, &sleeper);
    assert_eq!(rec["pod"]["namespace"], NS, "{rec}");
    assert_eq!(rec["pod"]["service_account"], "checkout");
    assert_eq!(rec["run"], run.as_str());
    finish(child);
}

on_both_backends!(a_jobs_pods_are_one_run_and_the_collector_groups_by_it, jobs_pods_are_one_run);
/// A Job's pods (the first attempt and a retry) are one run, as users mean it, and the
/// collector groups what they did by it, on either store.
fn jobs_pods_are_one_run(backend: Backend) {
    let dir = scratch_dir();
    let db = Db::new(backend, &dir);
    let collector = Collector::start(&db.arg);
    // A spool of its own: the other backend's run streams at the same time.
    let state = dir.join("state").display().to_string();
    let c = Cluster::start_with(&[], "", &["--collector", &collector.grpc, "--state-dir", &state], false);
    let first = c.create_owned(("Job", "migrate-7"), json!({}));
    let retry = c.create_owned(("Job", "migrate-7"), json!({}));
    let run = format!("k8s/{NS}/job/migrate-7");
    let mut children = Vec::new();
    for (pod, name) in [(&first, "migrate-a"), (&retry, "migrate-b")] {
        // The watch has delivered the pod (its namespace and service account get their
        // token): an exec that beats the watch is recorded without its pod, so its run.
        c.expect_within(CHANGE, pod, ID_SA, Ok(()));
        let worker = unique_binary(&c.dir, name);
        let child = pod.cgroup.spawn(&worker, &["30"]);
        let rec = worker_exec(&c.agent, &child, &worker);
        assert_eq!(rec["run"], run.as_str(), "{rec}");
        assert_eq!(rec["pod"]["owner"]["kind"], "Job");
        children.push((child, worker.display().to_string()));
    }
    let paths: Vec<String> = children.iter().map(|(_, p)| p.clone()).collect();
    let v = collector.wait_for("both pods' processes in one run", &["run", &run], |v| {
        let execs: Vec<&str> =
            v["timeline"].as_array().into_iter().flatten().filter(|e| e["what"] == "exec").filter_map(|e| e["detail"]["binary_path"].as_str()).collect();
        paths.iter().all(|p| execs.contains(&p.as_str()))
    });
    assert_eq!(v["run"]["run_id"], run.as_str());
    for (child, _) in children {
        finish(child);
    }
}

/// A workload in a pod that is relabelled out of an entry, or deleted while its process
/// lingers, must not keep its identity: the agent follows the API server within 2 s.
#[test]
fn a_workload_whose_pod_is_relabelled_or_deleted_loses_its_identity_within_two_seconds() {
    let c = Cluster::start();
    let pod = c.create_pod(json!({"app": "checkout"}));
    c.expect_within(CHANGE, &pod, ID_LABEL, Ok(()));

    c.api.relabel(NS, &pod.name, json!({"app": "web", "pod-template-hash": "5d8f7c9b4"}));
    c.expect_within(CHANGE, &pod, ID_LABEL, Err("no_matching_entry"));
    // The denial names the pod as the decision saw it: relabelled.
    c.agent.wait_event("token_denied naming the relabelled pod", |v| {
        v["kind"] == "token_denied" && v["reason"] == "no_matching_entry" && v["process"]["pod"]["labels"]["app"] == "web"
    });
    assert!(c.ask(&pod, ID_SA).is_ok(), "namespace and service account did not change");

    c.api.relabel(NS, &pod.name, json!({"app": "checkout", "pod-template-hash": "5d8f7c9b4"}));
    c.expect_within(CHANGE, &pod, ID_LABEL, Ok(()));

    c.api.delete(NS, &pod.name);
    c.expect_within(CHANGE, &pod, ID_SA, Err("pod_metadata_unavailable"));
    let denied = c.agent.wait_event("token_denied pod_metadata_unavailable", |v| v["kind"] == "token_denied" && v["reason"] == "pod_metadata_unavailable");
    assert!(denied["detail"].as_str().unwrap().contains("deleted"), "{denied}");
}

/// A workload in a cgroup laid out by hand as a pod the API server does not know (or a
/// pod that started a moment ago) is refused after a bounded wait, never matched.
#[test]
fn a_workload_in_a_pod_the_api_server_has_not_described_is_refused_not_guessed() {
    let c = Cluster::start();
    let known = c.create_pod(json!({"app": "checkout"}));
    let forged_uid = fresh_uid();
    let forged = Pod { name: "not-on-the-api-server".into(), cgroup: container_cgroup(&forged_uid), uid: forged_uid };
    let why = c.ask(&forged, ID_SA).expect_err("an undescribed pod gets nothing");
    assert!(why.contains("pod metadata unavailable") || why.contains("pod_metadata_unavailable"), "{why}");
    c.agent.wait_event("token_denied for the undescribed pod", |v| {
        v["kind"] == "token_denied" && v["reason"] == "pod_metadata_unavailable" && v["process"]["workload"]["pod_uid"] == forged.uid.as_str()
    });
    assert!(c.ask(&known, ID_SA).is_ok(), "the known pod next to it is unaffected");

    // A pod the watch delivers while its first request waits is matched.
    let late = {
        let uid = fresh_uid();
        let name = format!("checkout-late-{}", &uid[uid.len() - 5..]);
        Pod { name, cgroup: container_cgroup(&uid), uid }
    };
    thread::scope(|s| {
        let asking = s.spawn(|| c.ask(&late, ID_SA));
        thread::sleep(Duration::from_millis(400));
        c.put(&late.name, &late.uid, json!({"app": "checkout"}));
        assert!(asking.join().unwrap().is_ok(), "the bounded wait covers a pod that was just created");
    });
}

/// The same agent (over HTTPS with a CA and a bearer token from its kubeconfig) through a
/// watch that ends, a 410 Gone, and an API server restart: every answer afterwards
/// reflects the API server's state, never a stale one.
#[test]
fn the_pod_watch_survives_a_watch_end_a_410_and_an_api_server_restart_without_stale_answers() {
    let mut c = Cluster::start_with(&[], "", &[], true);
    let a = c.create_pod(json!({"app": "checkout"}));
    let b = c.create_pod(json!({"app": "checkout"}));
    c.expect_within(CHANGE, &a, ID_LABEL, Ok(()));
    c.expect_within(CHANGE, &b, ID_LABEL, Ok(()));
    let labels = |app: &str| json!({"app": app, "pod-template-hash": "5d8f7c9b4"});

    // 1. The watch ends (timeout, load balancer): resumed from the last version, so a
    //    change made right after is still delivered.
    let watches = c.api.watches();
    c.api.end_watches();
    c.api.relabel(NS, &a.name, labels("web"));
    c.expect_within(CHANGE, &a, ID_LABEL, Err("no_matching_entry"));
    assert!(c.api.watches() > watches, "the agent opened a new watch");

    // 2. 410 Gone: the history is compacted past a change the watch never saw. Only a
    //    relist can tell the agent that pod a is labelled app=checkout again.
    let lists = c.api.lists();
    c.api.relabel_unannounced(NS, &a.name, labels("checkout"));
    c.api.expire_history();
    let deadline = Instant::now() + WAIT;
    while c.api.lists() == lists {
        assert!(Instant::now() < deadline, "no relist after 410 Gone");
        thread::sleep(Duration::from_millis(20));
    }
    c.expect_within(WAIT, &a, ID_LABEL, Ok(()));

    // 3. The API server restarts. While it is down, pod a is relabelled out of the entry
    //    and pod b is deleted (its process lingers). The last list says both are fine:
    //    answering from it after the restart would be a stale, wrong grant.
    c.api.stop();
    c.api.relabel(NS, &a.name, labels("web"));
    c.api.delete(NS, &b.name);
    let lists = c.api.lists();
    c.api.restart();
    c.expect_within(WAIT, &a, ID_LABEL, Err("no_matching_entry"));
    c.expect_within(CHANGE, &b, ID_SA, Err("pod_metadata_unavailable"));
    assert!(c.api.lists() > lists, "the agent relisted after the restart");
    assert!(c.ask(&a, ID_SA).is_ok(), "pod a still exists in its namespace with its service account");
    c.agent.stderr.wait_line("a relist logged", |l| l.contains("pod watch: listed") && l.contains("list #3"));
}

/// Capability numbers (include/uapi/linux/capability.h) of the names a manifest may use.
fn cap_number(name: &str) -> u32 {
    match name {
        "chown" => 0,
        "dac_override" => 1,
        "dac_read_search" => 2,
        "kill" => 5,
        "net_admin" => 12,
        "sys_ptrace" => 19,
        "sys_admin" => 21,
        "sys_resource" => 24,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("capability {other} is not in this test's table"),
    }
}

/// The DaemonSet runs the agent as uid 0 with exactly the capabilities its manifest adds
/// (no CAP_KILL). A local unprivileged workload (uid 65534, another uid than the agent's)
/// must still get its token: the liveness check may not depend on signalling it.
#[test]
fn a_uid_65534_workload_gets_its_token_from_an_agent_holding_only_the_manifests_capabilities() {
    ensure_tracefs();
    let docs = sigil_tests::manifests::load(&[&sigil_tests::manifests::render()]);
    let caps = sigil_tests::manifests::agent_capabilities(&docs);
    let ds = sigil_tests::manifests::find(&docs, "DaemonSet", "sigil-agent");
    assert_eq!(ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"], 0, "the manifest runs the agent as uid 0");
    let bounding = format!("-all,{}", caps.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(","));
    let wrapper = ["setpriv", "--bounding-set", &bounding, "--inh-caps", "-all", "--"];
    let c = Cluster::start_with(&wrapper, r#", "unix:uid:65534""#, &[], true);

    // The agent runs with exactly those capabilities, no more.
    let status = fs::read_to_string(format!("/proc/{}/status", c.agent.pid())).unwrap();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(|h| u64::from_str_radix(h.trim(), 16).unwrap()).unwrap();
    let want = caps.iter().fold(0u64, |m, c| m | 1 << cap_number(c));
    assert_eq!(eff, want, "agent CapEff {eff:#x}, manifest {caps:?} = {want:#x}");
    assert_eq!(eff & (1 << cap_number("kill")), 0);
    // ...and with them runs everything: the connect hook and the TLS uprobes load too.
    let running = c.agent.stderr.wait_line("start-up summary", |l| l.contains("sigil-agent running on"));
    assert!(running.contains("cgroup_sock_addr=yes"), "{running}");
    c.agent.stderr.wait_line("TLS capture attached", |l| l.contains("TLS capture attached to"));
    assert!(!c.agent.stderr.snapshot().iter().any(|l| l.contains("tracing is off")));

    let pod = c.create_pod(json!({"app": "checkout"}));
    let s = c.socket.display().to_string();
    let client = c.client.display().to_string();
    let as_nobody = |id: &str| {
        pod.cgroup.run(
            std::path::Path::new("/usr/bin/setpriv"),
            &["--reuid=65534", "--regid=65534", "--clear-groups", &client, "token", "--audience", AUDIENCE, "--socket", &s, "--spiffe-id", id],
        )
    };
    let (code, token, err) = as_nobody(ID_SA);
    assert_eq!(code, 0, "uid 65534 was refused: {err}");
    let claims = c.claims(&token);
    assert_eq!(claims["sub"], ID_SA);
    assert_eq!(claims["sigil_k8s_sa"], "checkout");
    // Root in the same pod is not uid 65534: the uid selector still holds.
    assert!(c.ask(&pod, ID_SA).is_err(), "a root process must not match unix:uid:65534");
}

/// Clusters without API access: the `--pods` file names the pod (owner and labels too)
/// in records and tokens, and its selectors match as the API server's would.
#[test]
fn without_api_access_the_pods_file_names_the_pod_in_records_and_tokens() {
    let dir = scratch_dir();
    let client = unique_client(&dir, "checkout");
    let policy_path = dir.join("policy.toml");
    fs::write(&policy_path, policy(&sha256sum(&client), "")).unwrap();
    let uid = fresh_uid();
    let pods = dir.join("pods.toml");
    fs::write(
        &pods,
        format!(
            "[[pod]]\nuid = \"{uid}\"\nnamespace = \"{NS}\"\nservice_account = \"checkout\"\nname = \"checkout-1\"\n\
             labels = {{ app = \"checkout\" }}\nowner = {{ kind = \"Deployment\", name = \"checkout\" }}\n"
        ),
    )
    .unwrap();
    let socket = dir.join("workload.sock");
    let listen = format!("127.0.0.1:{}", free_port());
    let (p, f, s) = (policy_path.display().to_string(), pods.display().to_string(), socket.display().to_string());
    let agent = Agent::start(&["--policy", &p, "--pods", &f, "--socket", &s, "--oidc-listen", &listen]);
    agent.stderr.wait_line("Workload API start", |l| l.contains("Workload API on"));
    let cg = container_cgroup(&uid);

    let worker = unique_binary(&dir, "worker");
    let child = cg.spawn(&worker, &["30"]);
    let rec = worker_exec(&agent, &child, &worker);
    assert_eq!(rec["pod"]["name"], "checkout-1", "{rec}");
    assert_eq!(rec["run"], format!("k8s/{NS}/deployment/checkout/checkout-1").as_str());
    finish(child);

    let (code, token, err) = cg.run(&client, &["token", "--audience", AUDIENCE, "--socket", &s, "--spiffe-id", ID_LABEL]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(verified_claims(&format!("http://{listen}"), &token)["sigil_k8s_pod"], "checkout-1");
    let _ = fs::remove_dir_all(&dir);
}
