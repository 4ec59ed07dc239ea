#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! A recycled pid must never inherit the record of the process that had it before.
//!
//! Its own test binary: it steers the kernel's next pid through ns_last_pid, which other
//! tests spawning processes at the same moment would disturb.

use std::{fs, time::Duration};

use sigil_agent::attest::Attestor;
use sigil_tests::*;

#[test]
fn a_recycled_pid_gets_a_fresh_record_not_the_old_one() {
    let agent = Agent::start(&[]);
    let dir = scratch_dir();
    let old_bin = unique_binary(&dir, "old-owner");
    let new_bin = unique_binary(&dir, "new-owner");
    let pod = TestCgroup::create("kubepods.slice/kubepods-pod0c3d2a4e_5b6f_4a1b_9c8d_7e6f5a4b3c2d.slice");
    let plain = TestCgroup::create("plain.slice");

    let old = pod.spawn(&old_bin, &["30"]);
    let pid = old.id();
    let old_rec = agent.wait_exec(pid, &old_bin);
    finish(old);
    agent.wait_event("exit of the old owner", |v| v["kind"] == "process_exit" && v["exec_id"] == old_rec["exec_id"]);

    let new = spawn_with_pid(&plain, &new_bin, pid);
    let new_rec = agent.wait_exec(pid, &new_bin);
    assert_ne!(new_rec["process_id"], old_rec["process_id"]);
    assert_ne!(new_rec["binary"]["sha256"], old_rec["binary"]["sha256"]);
    assert_eq!(new_rec["binary"]["sha256"], sha256sum(&new_bin).as_str());
    assert_eq!(new_rec["cgroup"]["path"], plain.path.as_str());
    assert_eq!(new_rec["workload"]["pod_uid"], serde_json::Value::Null);
    assert!(new_rec["start_ticks"].as_u64() >= old_rec["start_ticks"].as_u64());
    finish(new);
    let _ = fs::remove_dir_all(dir);
}

/// The lookup that token issuance will use: a record is only returned while the pid
/// still names the same process (start time re-read from procfs).
#[test]
fn lookup_refuses_a_record_whose_pid_was_reused() {
    let dir = scratch_dir();
    let old_bin = unique_binary(&dir, "old-lookup");
    let new_bin = unique_binary(&dir, "new-lookup");
    let cg = TestCgroup::create("lookup.slice");
    let attestor = Attestor::new("test-node".into(), &cgroup2_root(), 64, 1 << 30);

    let old = cg.spawn(&old_bin, &["30"]);
    let pid = old.id();
    wait_for_exe(pid, &old_bin);
    attestor.scan();
    let rec = attestor.lookup(pid).expect("attested");
    assert_eq!(rec.binary.sha256.as_deref(), Some(sha256sum(&old_bin).as_str()));
    finish(old);
    // Let the process be fully gone, then hand its pid to someone else.
    std::thread::sleep(Duration::from_millis(50));
    let new = spawn_with_pid(&cg, &new_bin, pid);
    wait_for_exe(pid, &new_bin);
    assert!(attestor.lookup(pid).is_none(), "the old record must not answer for the new process");
    attestor.scan();
    let fresh = attestor.lookup(pid).expect("re-attested");
    assert_eq!(fresh.binary.sha256.as_deref(), Some(sha256sum(&new_bin).as_str()));
    finish(new);
    let _ = fs::remove_dir_all(dir);
}
