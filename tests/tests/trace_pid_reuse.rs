#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! A credential use must be attributed to the process that made it, never to another
//! process that had (or later got) the same pid.
//!
//! Its own test binary: it steers the kernel's next pid through ns_last_pid, which other
//! tests spawning processes at the same moment would disturb.

use std::{fs, time::Duration};

use agent_common::{EventHeader, EventKind};
use sigil_agent::{
    attest::{Attestor, clock::Clock},
    trace::tracer::process_at,
};
use sigil_tests::*;

/// A data event's header from `pid` at `boot_ns`; `start_ns` is the writer's start time
/// as the kernel gives it (0: a kernel whose layout the agent could not read).
fn written(pid: u32, boot_ns: u64, start_ns: u64) -> EventHeader {
    EventHeader { kind: EventKind::Data as u32, pid, boot_ns, cgroup_id: 0, start_ns }
}

/// The start time of `pid` in ns since boot, as exact as the kernel's to the tick.
fn start_ns(pid: u32, clock: &Clock) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ticks: u64 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap();
    clock.ticks_to_boot_ns(ticks)
}

/// A workload in a pod exits and a local unprivileged user's process is given its pid. The
/// table still holds the pod process's record (its exit event lost or not yet handled):
/// a credential the new process sends must be attributed to the new process, not to the
/// pod (at the branch point the tracer took the table's record without checking when that
/// process started). A write made before the reuse is never given to the new process.
#[test]
fn a_credential_use_after_pid_reuse_is_attributed_to_the_new_process() {
    let dir = scratch_dir();
    let pod_bin = unique_binary(&dir, "pod-writer");
    let user_bin = unique_binary(&dir, "user-writer");
    let pod = TestCgroup::create("kubepods.slice/kubepods-pod1a2b3c4d_5e6f_4a1b_9c8d_0e1f2a3b4c5d.slice");
    let user = TestCgroup::create("user.slice/reuser.scope");
    let attestor = Attestor::new("test-node".into(), &cgroup2_root(), 64, 1 << 30);
    let clock = Clock::new();

    let old = pod.spawn(&pod_bin, &["30"]);
    let pid = old.id();
    wait_for_exe(pid, &pod_bin);
    attestor.scan();
    let old_rec = attestor.table().get(pid).expect("attested");
    let written_by_old = Clock::now_boot_ns();
    let old_start = start_ns(pid, &clock);
    assert_eq!(process_at(&attestor, &clock, &written(pid, written_by_old, 0)).unwrap().process_id, old_rec.process_id);
    assert_eq!(process_at(&attestor, &clock, &written(pid, written_by_old, old_start)).unwrap().process_id, old_rec.process_id);
    finish(old);
    std::thread::sleep(Duration::from_millis(50));

    let new = spawn_with_pid(&user, &user_bin, pid);
    wait_for_exe(pid, &user_bin);
    // The table still names the pod process: nothing removed it.
    assert_eq!(attestor.table().get(pid).unwrap().process_id, old_rec.process_id);
    // An event from before the reuse, handled late, is still the old process's.
    let late = process_at(&attestor, &clock, &written(pid, written_by_old, 0)).expect("old record");
    assert_eq!(late.process_id, old_rec.process_id);
    // One from after it is the new process's, attested on the spot: also when the kernel
    // names the writer by its start time, which the stale record does not have.
    let written_by_new = Clock::now_boot_ns();
    let new_start = start_ns(pid, &clock);
    let by_kernel = process_at(&attestor, &clock, &written(pid, written_by_new, new_start)).expect("the new process is attested");
    assert_ne!(by_kernel.process_id, old_rec.process_id);
    let rec = process_at(&attestor, &clock, &written(pid, written_by_new, 0)).expect("the new process is attested");
    assert_eq!(rec.process_id, by_kernel.process_id);
    assert_ne!(rec.process_id, old_rec.process_id);
    assert_eq!(rec.binary.sha256.as_deref(), Some(sha256sum(&user_bin).as_str()));
    assert_eq!(rec.cgroup.path.as_deref(), Some(user.path.as_str()));
    assert_eq!(rec.workload.pod_uid, None);
    // Now the table names the new process; a late event of the old one is never given it.
    for header in [written(pid, written_by_old, 0), written(pid, written_by_old, old_start)] {
        let late = process_at(&attestor, &clock, &header);
        assert!(late.as_ref().is_none_or(|r| r.process_id == old_rec.process_id), "{late:?}");
    }
    finish(new);
    let _ = fs::remove_dir_all(dir);
}
