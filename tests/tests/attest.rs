#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Exec attestation against the real kernel: real programs loaded, real processes in
//! real cgroup trees laid out as kubelet and container runtimes lay them out.

use std::{fs, os::unix::fs::MetadataExt, path::Path, process::Command};

use serde_json::Value;
use sigil_tests::*;

const POD_UID: &str = "0c3d2a4e-5b6f-4a1b-9c8d-7e6f5a4b3c2d";
const CONTAINER: &str = "4f1b9a2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

/// Runs a unique binary in `layout`, then checks the record the agent printed.
fn check_layout(layout: &str, expect: impl Fn(&Value)) {
    let agent = Agent::start(&[]);
    let cg = TestCgroup::create(layout);
    let dir = scratch_dir();
    let bin = unique_binary(&dir, "workload");
    let child = cg.spawn(&bin, &["30"]);
    let pid = child.id();
    let rec = agent.wait_exec(pid, &bin);

    assert_eq!(rec["source"], "ebpf");
    assert_eq!(rec["pid"], pid);
    assert_eq!(rec["binary"]["sha256"], sha256sum(&bin).as_str(), "digest must equal sha256sum's");
    assert_eq!(rec["binary"]["hashed_from"], "exe");
    assert_eq!(rec["cgroup"]["path"], cg.path.as_str());
    assert_eq!(rec["cgroup"]["id"], cg.id());
    // Start time matches what procfs says about this very process.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = stat.rsplit_once(')').unwrap().1;
    let start_ticks: u64 = after_comm.split_whitespace().nth(19).unwrap().parse().unwrap();
    assert_eq!(rec["start_ticks"], start_ticks);
    // The shell exec'd itself into the workload, so the parent is this test process,
    // which was running before the agent and must head the ancestry.
    assert_eq!(rec["ppid"], std::process::id());
    assert_eq!(rec["ancestry"][0]["pid"], std::process::id());
    expect(&rec["workload"]);
    finish(child);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn containerd_systemd_driver_pod_is_attested_with_pod_uid_and_container_id() {
    let layout = format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CONTAINER}.scope", POD_UID.replace('-', "_"));
    check_layout(&layout, |w| {
        assert_eq!(w["kind"], "kubernetes_pod");
        assert_eq!(w["pod_uid"], POD_UID);
        assert_eq!(w["container_id"], CONTAINER);
        assert_eq!(w["qos_class"], "burstable");
        assert_eq!(w["runtime"], "containerd");
        assert_eq!(w["unit"], Value::Null);
    });
}

#[test]
fn crio_systemd_driver_pod_is_attested() {
    let layout = format!("kubepods.slice/kubepods-pod{}.slice/crio-{CONTAINER}.scope", POD_UID.replace('-', "_"));
    check_layout(&layout, |w| {
        assert_eq!(w["kind"], "kubernetes_pod");
        assert_eq!(w["pod_uid"], POD_UID);
        assert_eq!(w["container_id"], CONTAINER);
        assert_eq!(w["qos_class"], "guaranteed");
        assert_eq!(w["runtime"], "cri_o");
    });
}

#[test]
fn cgroupfs_driver_pod_is_attested() {
    let layout = format!("kubepods/besteffort/pod{POD_UID}/{CONTAINER}");
    check_layout(&layout, |w| {
        assert_eq!(w["kind"], "kubernetes_pod");
        assert_eq!(w["pod_uid"], POD_UID);
        assert_eq!(w["container_id"], CONTAINER);
        assert_eq!(w["qos_class"], "best_effort");
    });
}

#[test]
fn systemd_unit_is_attested() {
    check_layout("system.slice/sigil-demo.service", |w| {
        assert_eq!(w["kind"], "systemd_unit");
        assert_eq!(w["unit"], "sigil-demo.service");
        assert_eq!(w["pod_uid"], Value::Null);
    });
}

#[test]
fn one_binary_is_hashed_once_and_again_after_a_rewrite() {
    let agent = Agent::start(&[]);
    let cg = TestCgroup::create("cache.slice/cache-test.scope");
    let dir = scratch_dir();
    let bin = unique_binary(&dir, "cached");

    let run = |expect_cache: &str| {
        let mut child = cg.spawn(&bin, &["0.3"]);
        let rec = agent.wait_exec(child.id(), &bin);
        child.wait().unwrap();
        assert_eq!(rec["binary"]["hash_cache"], expect_cache, "record: {rec}");
        assert_eq!(rec["binary"]["sha256"], sha256sum(&bin).as_str());
        rec["binary"]["sha256"].as_str().unwrap().to_owned()
    };
    let first = run("miss");
    let second = run("hit");
    assert_eq!(first, second);

    // Rewrite the same inode with different content: the cache must not answer.
    let inode_before = fs::metadata(&bin).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
    let mut bytes = fs::read(&bin).unwrap();
    bytes.extend_from_slice(b"-rewritten");
    write_executable(&bin, &bytes);
    assert_eq!(inode_before, fs::metadata(&bin).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap());
    let third = run("miss");
    assert_ne!(third, first);

    // The agent's own counters agree: at least our two misses were computed, our hit
    // counted (other processes on the machine may add to both).
    let stats = agent.wait_event("agent_stats after the runs", |v| v["kind"] == "agent_stats" && v["hash"]["cache_hits"].as_u64().unwrap_or(0) >= 1);
    assert!(stats["hash"]["hashes_computed"].as_u64().unwrap() >= 2);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_process_started_before_the_agent_is_attested_by_the_startup_scan() {
    let cg = TestCgroup::create(&format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/docker-{CONTAINER}.scope",
        POD_UID.replace('-', "_")
    ));
    let dir = scratch_dir();
    let bin = unique_binary(&dir, "early");
    let child = cg.spawn(&bin, &["30"]);
    let pid = child.id();
    // Wait until the shell has exec'd the binary, so the process exists in its final form.
    wait_for_exe(pid, &bin);

    let agent = Agent::start(&[]);
    let rec = agent.wait_exec(pid, &bin);
    assert_eq!(rec["source"], "procfs_scan");
    assert_eq!(rec["binary"]["sha256"], sha256sum(&bin).as_str());
    assert_eq!(rec["cgroup"]["path"], cg.path.as_str());
    assert_eq!(rec["cgroup"]["id"], cg.id());
    assert_eq!(rec["workload"]["pod_uid"], POD_UID);
    assert_eq!(rec["workload"]["container_id"], CONTAINER);
    assert_eq!(rec["workload"]["runtime"], "docker");
    finish(child);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn exit_is_reported_for_an_attested_process() {
    let agent = Agent::start(&[]);
    let dir = scratch_dir();
    let bin = unique_binary(&dir, "short");
    let mut child = Command::new(&bin).arg("0.2").spawn().unwrap();
    let pid = child.id();
    let rec = agent.wait_exec(pid, &bin);
    child.wait().unwrap();
    let exit = agent.wait_event("process_exit", |v| v["kind"] == "process_exit" && v["pid"] == pid);
    assert_eq!(exit["exec_id"], rec["exec_id"]);
    assert_eq!(exit["process_id"], rec["process_id"]);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_binary_replaced_after_exec_is_flagged_and_the_running_file_is_hashed() {
    let dir = scratch_dir();
    let bin = unique_binary(&dir, "replaced");
    let original = sha256sum(&bin);
    let child = Command::new(&bin).arg("30").spawn().unwrap();
    let pid = child.id();
    wait_for_exe(pid, &bin);

    // Replace the file by rename, as package managers do: the running process keeps the
    // old inode, the path now names new content.
    let staged = dir.join("staged");
    let mut bytes = fs::read(&bin).unwrap();
    bytes.extend_from_slice(b"-v2");
    write_executable(&staged, &bytes);
    fs::rename(&staged, &bin).unwrap();

    let agent = Agent::start(&[]);
    let rec = agent.wait_exec(pid, &bin);
    assert_eq!(rec["binary"]["replaced_after_exec"], true, "record: {rec}");
    assert_eq!(rec["binary"]["sha256"], original.as_str(), "the digest is of what runs");

    // A new exec of the path runs (and hashes) the new file.
    let child2 = Command::new(&bin).arg("30").spawn().unwrap();
    let second = agent.wait_exec(child2.id(), &bin);
    assert_eq!(second["binary"]["sha256"], sha256sum(&bin).as_str());
    assert_ne!(second["binary"]["sha256"], original.as_str());
    assert_eq!(second["binary"]["replaced_after_exec"], false);
    assert_eq!(second["binary"]["hash_cache"], "miss");
    finish(child);
    finish(child2);
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn a_process_that_exits_at_once_is_still_reported_with_its_cgroup() {
    let agent = Agent::start(&[]);
    let cg = TestCgroup::create("quick.slice/quick.scope");
    let st = cg.spawn(Path::new("/bin/true"), &[]).wait().unwrap();
    assert!(st.success());
    let rec = agent.wait_event("exec of /bin/true in the test cgroup", |v| {
        v["kind"] == "process_exec" && v["cgroup"]["path"] == cg.path.as_str() && v["binary"]["exec_path"] == "/bin/true"
    });
    assert_eq!(rec["cgroup"]["id"], cg.id());
    // Either procfs was still readable (exe) or the fallback hashed the path; both must
    // agree with sha256sum when they produce a digest.
    if let Some(sha) = rec["binary"]["sha256"].as_str() {
        assert_eq!(sha, sha256sum(Path::new("/bin/true")));
    } else {
        assert!(rec["binary"]["error"].is_string(), "no digest and no reason: {rec}");
    }
}

/// Execs of an executable the agent has settled (digest known by the kernel's identity,
/// no script, nothing to attach) are read at the next poll tick, not woken for: still
/// attested in full although each process is gone by then. The attacker: a workload that
/// lets its binary become "quiet", then rewrites it in place (same inode, new content) and
/// runs it again, hoping the old digest is handed out. The new version is not quiet: it
/// is hashed again from the running process.
#[test]
fn execs_of_a_settled_binary_are_read_without_wakeups_and_a_rewrite_is_not() {
    let agent = Agent::start(&[]);
    let cg = TestCgroup::create("attest.slice/quiet.scope");
    let dir = scratch_dir();
    let bin = unique_binary(&dir, "quiet");
    let digest = sha256sum(&bin);
    let path = bin.display().to_string();
    let records = |sha: &str| {
        agent.events().into_iter().filter(|v| v["kind"] == "process_exec" && v["binary"]["exec_path"] == path.as_str() && v["binary"]["sha256"] == sha).count()
    };
    let mut runs = 0;
    // The first exec is hashed, the next ones find the digest by the kernel's identity;
    // once the background inspection has settled the file, its execs go quiet.
    let quiet_execs = || {
        let stats = agent.events().into_iter().rev().find(|v| v["kind"] == "agent_stats");
        stats.and_then(|s| s["quiet_execs"].as_u64()).unwrap_or(0)
    };
    while quiet_execs() == 0 && runs < 40 {
        let (code, _, err) = cg.run(&bin, &["0"]);
        assert_eq!(code, 0, "{err}");
        runs += 1;
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(quiet_execs() > 0, "no exec went quiet in {runs} runs");
    for _ in 0..5 {
        cg.run(&bin, &["0"]);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while records(&digest) < runs + 5 {
        assert!(std::time::Instant::now() < deadline, "{} records of {} runs", records(&digest), runs + 5);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let quiet: Vec<Value> =
        agent.events().into_iter().filter(|v| v["kind"] == "process_exec" && v["binary"]["exec_path"] == path.as_str()).skip(runs).collect();
    for rec in &quiet {
        assert_eq!(rec["binary"]["sha256"], digest.as_str(), "{rec}");
        assert_eq!(rec["binary"]["hashed_from"], "kernel", "{rec}");
        assert_eq!(rec["binary"]["path"], path.as_str(), "the exe link's path, from the parent's root: {rec}");
        assert_eq!(rec["cgroup"]["path"], cg.path.as_str(), "{rec}");
    }

    // Rewritten in place: same inode, new bytes, new ctime.
    let ino = fs::metadata(&bin).unwrap().ino();
    let mut bytes = fs::read(&bin).unwrap();
    bytes.extend_from_slice(b"-rewritten");
    write_executable(&bin, &bytes);
    assert_eq!(fs::metadata(&bin).unwrap().ino(), ino);
    let rewritten = sha256sum(&bin);
    let mut child = cg.spawn(&bin, &["30"]);
    let rec = agent.wait_exec(child.id(), &bin);
    assert_eq!(rec["binary"]["sha256"], rewritten.as_str(), "the new content, not the quiet version's digest");
    assert_eq!(records(&rewritten), 1);
    let _ = child.kill();
    let _ = child.wait();
    let _ = fs::remove_dir_all(dir);
}
