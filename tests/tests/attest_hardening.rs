#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Attacks on attestation itself, each performed for real against the real agent: hostile
//! files at an exec path, floods of huge executables, spoofed cgroup trees, cgroup layouts
//! of real runtimes, and an agent started in the wrong PID namespace.

use std::{
    fs,
    io::{BufRead, BufReader},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use sigil_tests::*;

const NOBODY: u32 = 65534;

/// A minimal static x86-64 ELF that calls exit(0) at once (no loader, no libc): the
/// shortest possible life between exec and exit. `tail` makes each copy distinct.
fn exit_at_once_elf(tail: &[u8]) -> Vec<u8> {
    let code: &[u8] = &[0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05]; // mov eax,60; xor edi,edi; syscall
    let base: u64 = 0x40_0000;
    let size = (64 + 56 + code.len()) as u64;
    let mut e = Vec::new();
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(base + 120).to_le_bytes()); // entry
    e.extend_from_slice(&64u64.to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 0, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [0, base, base, size, size, 0x1000] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(code);
    e.extend_from_slice(tail);
    e
}

/// The attacker's helper: in its own cgroup (so the agent's exited-process fallback
/// looks at the path from its root), it runs each victim, reaps it, and at once puts a
/// FIFO or a symlink to /dev/zero at its path. Decoys exec'd just before give the agent
/// work to do first, so the victim is gone before the agent looks.
const RACER: &str = r#"
import os, sys, time
d, rounds, decoys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
decoy = os.path.join(d, "decoy")
for i in range(rounds):
    pids = [os.posix_spawn(decoy, [decoy], {}) for _ in range(decoys)]
    victim = os.path.join(d, "victim%d" % i)
    pid = os.posix_spawn(victim, [victim], {})
    os.waitpid(pid, 0)
    tmp = os.path.join(d, "tmp%d" % i)
    if i % 2 == 0:
        os.mkfifo(tmp)
    else:
        os.symlink("/dev/zero", tmp)
    os.rename(tmp, victim)
    for p in pids:
        os.waitpid(p, 0)
print("DONE", flush=True)
time.sleep(300)
"#;

fn chown(path: &Path, uid: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), uid, uid) }, 0, "chown {}", path.display());
}

/// Attacker: a local unprivileged user (uid 65534) who runs a program from a directory
/// it owns and, once the process has exited, renames a FIFO or a symlink to /dev/zero
/// over the binary. The agent, attesting the exited process from its exec path, used to
/// open that path with a blocking open and read it to the end: a FIFO hung the one
/// attestation thread forever, /dev/zero never ended. Now the file is opened with
/// O_NONBLOCK inside the process's root (symlinks resolved there), must be a regular file
/// on the descriptor, and is read only up to its size; the record says why it has no
/// digest, and attestation goes on.
#[test]
fn a_local_user_swapping_a_fifo_or_dev_zero_in_for_an_exited_binary_does_not_stall_attestation() {
    let agent = Agent::start(&["--no-trace"]);
    let dir = scratch_dir();
    chown(&dir, NOBODY);
    let rounds = 40;
    write_executable(&dir.join("decoy"), &exit_at_once_elf(unique("decoy-").as_bytes()));
    for i in 0..rounds {
        write_executable(&dir.join(format!("victim{i}")), &exit_at_once_elf(unique("victim-").as_bytes()));
    }
    for entry in fs::read_dir(&dir).unwrap() {
        chown(&entry.unwrap().path(), NOBODY);
    }
    let script = dir.join("racer.py");
    fs::write(&script, RACER).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();

    let cg = TestCgroup::create("racer.slice/racer.scope");
    let python = python();
    let mut racer = cg
        .command(
            Path::new("setpriv"),
            &[
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "--",
                python.to_str().unwrap(),
                script.to_str().unwrap(),
                dir.to_str().unwrap(),
                &rounds.to_string(),
                "30",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(racer.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "DONE", "the racer did not finish");
    let racer_pid = racer.id();

    // An ordinary exec afterwards is still attested: the agent did not hang.
    let other = scratch_dir();
    let bin = unique_binary(&other, "after-the-attack");
    let child = Command::new(&bin).arg("30").spawn().unwrap();
    let rec = agent.wait_exec(child.id(), &bin);
    assert_eq!(rec["binary"]["sha256"], sha256sum(&bin).as_str());

    // Every victim got a record; none has a digest of what is at its path now, and the
    // ones the agent reached after the swap say why nothing was hashed.
    let victims: Vec<Value> = (0..rounds)
        .map(|i| {
            let path = dir.join(format!("victim{i}"));
            let path = path.to_str().unwrap().to_owned();
            agent.wait_event(&format!("record of victim {i}"), move |v| {
                v["kind"] == "process_exec" && v["binary"]["exec_path"] == path.as_str() && v["ppid"] == racer_pid
            })
        })
        .collect();
    let refused: Vec<&Value> = victims.iter().filter(|v| v["binary"]["hash_skipped"] == "not_regular_file").collect();
    for v in &refused {
        let err = v["binary"]["error"].as_str().unwrap_or_default();
        assert!(err.contains("a FIFO") || err.contains("a character device"), "reason missing: {v}");
        assert_eq!(v["binary"]["sha256"], Value::Null);
    }
    assert!(!refused.is_empty(), "the race was never won: no victim was attested after its path was swapped ({} records)", victims.len());
    agent.wait_event("agent_stats counting the refusals", |v| {
        v["kind"] == "agent_stats" && v["hash"]["skipped_not_regular_file"].as_u64() >= Some(refused.len() as u64)
    });
    eprintln!("{} of {rounds} victims were attested after the swap and refused", refused.len());
    finish(child);
    finish(racer);
    drop(cg);
    let _ = fs::remove_dir_all(dir);
    let _ = fs::remove_dir_all(other);
}

/// Attacker: a workload (in a pod, or a local user) that writes and execs many distinct
/// huge executables (256 MiB sparse files: cheap to make, expensive to hash; every agent
/// on the node, including those of concurrent tests, hashes them too, so the test keeps
/// the total modest — the pool does not care about the size). The agent
/// hashed each on its one event thread before reading the next event, so every later
/// exec on the node waited behind them and the ring buffer filled. Now hashing runs on a
/// bounded pool (large files never take the last worker; a byte budget bounds the
/// queue); the ordinary exec's record is emitted while the huge ones are still being
/// hashed, huge files over the budget are skipped with a reason and counted, and no
/// ring-buffer event is lost.
#[test]
fn a_burst_of_huge_distinct_executables_does_not_delay_an_ordinary_exec() {
    // The byte budget is shared with every other large binary on the node (debug builds
    // of agents and tests are 150+ MiB each); whether a given huge file fits depends on
    // them, so the test requires only that one does and that every other is explained.
    // (Refusal at the budget is exercised exactly in the pool's unit tests.)
    let agent = Agent::start(&["--no-trace", "--hash-queue-bytes", &(4u64 << 30).to_string()]);
    let dir = scratch_dir();
    let huge: Vec<PathBuf> = (0..6)
        .map(|i| {
            let path = unique_binary(&dir, &format!("huge{i}"));
            fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(256 << 20).unwrap();
            path
        })
        .collect();
    let ordinary = unique_binary(&dir, "ordinary");
    let mut children: Vec<_> = huge.iter().map(|p| Command::new(p).arg("20").spawn().unwrap()).collect();
    let child = Command::new(&ordinary).arg("20").spawn().unwrap();
    let ordinary_pid = child.id();
    let huge_pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    children.push(child);

    let ordinary_rec = agent.wait_exec(ordinary_pid, &ordinary);
    assert_eq!(ordinary_rec["binary"]["sha256"], sha256sum(&ordinary).as_str());
    assert_eq!(ordinary_rec["binary"]["hash_pending"], false);
    // The huge records come when their hashes are done, behind whatever else large the
    // node runs (other tests' debug binaries): allow minutes, not the usual wait.
    let deadline = Instant::now() + Duration::from_secs(300);
    let huge_recs: Vec<Value> = huge
        .iter()
        .zip(&huge_pids)
        .map(|(p, pid)| {
            loop {
                let path = p.to_str().unwrap();
                if let Some(v) = agent.events().into_iter().find(|v| v["kind"] == "process_exec" && v["pid"] == *pid && v["binary"]["path"] == path) {
                    break v;
                }
                assert!(Instant::now() < deadline, "no record for {path}");
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .collect();

    // Output order proves who waited for whom: on the old code every huge record came
    // first (hashed in kernel order on the event thread).
    let lines = agent.stdout.snapshot();
    let position =
        |pid: u32| lines.iter().position(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["kind"] == "process_exec" && v["pid"] == pid)).unwrap();
    let hashed: Vec<(u32, &Value)> = huge_pids.iter().copied().zip(&huge_recs).filter(|(_, r)| r["binary"]["sha256"].is_string()).collect();
    assert!(!hashed.is_empty(), "at least one huge binary fits the budget and is hashed");
    assert!(hashed.iter().any(|(pid, _)| position(*pid) > position(ordinary_pid)), "the ordinary record must not wait for the huge hashes");
    // A hashed huge binary has the right digest (sha256sum reads it independently).
    let (first_pid, first) = hashed[0];
    let first_path = &huge[huge_pids.iter().position(|p| *p == first_pid).unwrap()];
    assert_eq!(first["binary"]["sha256"], sha256sum(first_path).as_str());
    // What did not fit was skipped with the reason, and counted.
    let skipped = huge_recs.iter().filter(|r| r["binary"]["hash_skipped"] == "queue_full").count();
    for r in huge_recs.iter().filter(|r| r["binary"]["sha256"].is_null()) {
        assert!(matches!(r["binary"]["hash_skipped"].as_str(), Some("queue_full" | "time_budget")), "{r}");
        assert!(r["binary"]["error"].is_string(), "{r}");
    }
    let last_hashed = hashed.iter().map(|(pid, _)| position(*pid)).max().unwrap_or(0);
    eprintln!(
        "ordinary record at output line {}, last huge digest at line {last_hashed}; {} of 6 huge hashed, {skipped} skipped (queue_full)",
        position(ordinary_pid),
        hashed.len()
    );
    for c in children {
        finish(c);
    }
    let (_, events) = agent.stop();
    let last = events.iter().rev().find(|v| v["kind"] == "agent_stats").expect("final agent_stats");
    assert!(last["hash"]["skipped_queue_full"].as_u64() >= Some(skipped as u64), "{last}");
    eprintln!("final hash stats: {}", last["hash"]);
    // The event thread's CPU time is accounted per kind, covering every exec it handled.
    let exec_cpu = &last["cpu_by_kind"]["exec"];
    assert!(exec_cpu["events"].as_u64() >= Some(7) && exec_cpu["cpu_us"].as_u64() > Some(0), "{last}");
    for (kind, lost) in last["ring_buffer_lost"].as_object().unwrap() {
        assert_eq!(lost, 0, "ring buffer lost {kind} events");
    }
    let _ = fs::remove_dir_all(dir);
}

/// The cgroup tree a systemd user manager gets: `user@UID.service` delegated to the
/// user (directory and its control files owned by them). Removed on drop, with whatever
/// the user created below it.
struct UserDelegation {
    created: Vec<PathBuf>,
    service: PathBuf,
}

impl UserDelegation {
    fn create(uid: u32) -> Self {
        let root = cgroup2_root();
        let chain =
            [root.join("user.slice"), root.join(format!("user.slice/user-{uid}.slice")), root.join(format!("user.slice/user-{uid}.slice/user@{uid}.service"))];
        let mut created = Vec::new();
        for d in &chain {
            if !d.exists() {
                fs::create_dir(d).unwrap();
                created.push(d.clone());
            }
        }
        let service = chain[2].clone();
        chown(&service, uid);
        for f in ["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"] {
            chown(&service.join(f), uid);
        }
        Self { created, service }
    }
}

impl Drop for UserDelegation {
    fn drop(&mut self) {
        // What the user created below the service, then what this test created above.
        if let Ok(rd) = fs::read_dir(&self.service) {
            for e in rd.filter_map(|e| e.ok()).filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                remove_cgroup_tree(&e.path());
            }
        }
        for d in self.created.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Attacker: a local unprivileged user (uid 65534). systemd delegates
/// `user.slice/user-UID.slice/user@UID.service` to every user's own service manager, so
/// the user may create any cgroup name below it. This user lays out the full kubelet +
/// containerd tree of a real pod there and runs a program in it. The agent used to take
/// the outermost pod-looking name anywhere in the path, attesting the user's process as
/// that pod (and its container). Now pod and container names count only where the
/// kubelet and runtimes put them, and anything in a user's slice is a `user_unit` of that
/// uid: never a pod, a container or a system unit.
#[test]
fn a_local_user_cannot_be_attested_as_a_pod_from_a_delegated_cgroup() {
    let pod_uid = "7d1c7e0a-2b7e-4c55-9f1e-3a4b5c6d7e8f";
    let container = "9a8b7c6d5e4f30112233445566778899aabbccddeeff00112233445566778899";
    let agent = Agent::start(&["--no-trace"]);
    let delegation = UserDelegation::create(NOBODY);
    let spoof = format!(
        "{}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container}.scope",
        unique("app-"),
        pod_uid.replace('-', "_")
    );
    let leaf = delegation.service.join(&spoof);
    let dir = scratch_dir();
    let bin = unique_binary(&dir, "impostor");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    // Root moves the shell into the user's delegated cgroup (as logind + systemd do);
    // everything after that runs as the user.
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"echo $$ > "$0/cgroup.procs" && exec setpriv --reuid=65534 --regid=65534 --clear-groups -- /bin/sh -c 'mkdir -p "$0" && echo $$ > "$0/cgroup.procs" && exec "$1" 30' "$1" "$2""#)
        .arg(&delegation.service)
        .arg(&leaf)
        .arg(&bin)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let rec = agent.wait_exec(pid, &bin);
    // The process really is where the user put it, as that user.
    let expected_path = format!("/{}", leaf.strip_prefix(cgroup2_root()).unwrap().display());
    assert_eq!(rec["cgroup"]["path"], expected_path.as_str());
    assert_eq!(rec["uid"], NOBODY);
    assert_eq!(fs::metadata(&leaf).unwrap().uid(), NOBODY, "the user created the spoofed tree");
    let w = &rec["workload"];
    assert_eq!(w["kind"], "user_unit", "{rec}");
    assert_eq!(w["user_uid"], NOBODY);
    assert_eq!(w["pod_uid"], Value::Null, "attested as the pod: {rec}");
    assert_eq!(w["container_id"], Value::Null);
    assert_eq!(w["unit"], Value::Null, "a user unit must never look like a system unit");
    finish(child);
    drop(delegation);
    let _ = fs::remove_dir_all(dir);
}

/// Runs a unique binary in `layout` (below the test prefix) and returns its record.
fn record_in(agent: &Agent, layout: &str) -> Value {
    let cg = TestCgroup::create(layout);
    let dir = scratch_dir();
    let bin = unique_binary(&dir, "workload");
    let child = cg.spawn(&bin, &["30"]);
    let rec = agent.wait_exec(child.id(), &bin);
    assert_eq!(rec["cgroup"]["path"], cg.path.as_str());
    finish(child);
    let _ = fs::remove_dir_all(dir);
    rec
}

/// Attacker position: none needed — a correct configuration produced a wrong identity. A
/// pod whose container cgroup sits inside containerd.service (containerd with cgroupfs
/// runc under a systemd-driver kubelet creates `<pod slice>:cri-containerd:<id>` there
/// literally) was attested as the unit containerd.service, so a `systemd:unit` selector
/// for containerd matched every pod process; a static pod's 32-hex uid got dashes
/// Kubernetes never reports. Real cgroups, real processes.
#[test]
fn pods_nested_in_a_runtime_unit_and_static_pods_get_their_real_identity() {
    let agent = Agent::start(&["--no-trace"]);
    let uid = "214f3ba8-4b69-4bdb-a7d5-5ecc73f04ae9";
    let id = "d4e8e05a546c86b6443f101966c618e47753ed01fa9929cae00d3b692f7a9f80";
    let rec = record_in(&agent, &format!("system.slice/containerd.service/kubepods-besteffort-pod{}.slice:cri-containerd:{id}", uid.replace('-', "_")));
    let w = &rec["workload"];
    assert_eq!(w["kind"], "kubernetes_pod", "{rec}");
    assert_eq!(w["pod_uid"], uid);
    assert_eq!(w["container_id"], id);
    assert_eq!(w["qos_class"], "best_effort");
    assert_eq!(w["unit"], Value::Null, "a pod is not containerd.service");

    let static_uid = "5d5ba0d8c3e6a2ec0e7aa43cd3a6ce34";
    let rec = record_in(&agent, &format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{static_uid}.slice/cri-containerd-{id}.scope"));
    assert_eq!(rec["workload"]["pod_uid"], static_uid, "{rec}");

    // Something container-like under a unit in no known form: unknown, not the unit.
    let rec = record_in(&agent, &format!("system.slice/containerd.service/{id}"));
    assert_eq!(rec["workload"]["kind"], "unknown", "{rec}");
    assert_eq!(rec["workload"]["unit"], Value::Null);
}

fn refuses_in_child_pid_namespace(extra: &[&str]) {
    ensure_tracefs();
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork"])
        .args(extra)
        .arg("--")
        .arg(agent_bin())
        .args(["run", "--stdout", "--no-trace"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent kept running in a child PID namespace");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(status.code(), Some(78), "stderr: {stderr}");
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("sigil-agent: not in the initial PID namespace"), "{stderr}");
    assert!(out.stdout.is_empty(), "no events may be printed");
}

/// Attacker position: a misdeployment (a DaemonSet without `hostPID: true`), or a
/// compromised node operator hiding processes. In a child PID namespace every pid the
/// kernel reports names another process or none, so records would describe the wrong
/// processes. The agent refuses to start, with one line and EX_CONFIG, both with the
/// namespace's own /proc mounted (where /proc/1 is the namespace's init, so comparing
/// with it proves nothing) and with the host's /proc.
#[test]
fn the_agent_refuses_to_run_outside_the_initial_pid_namespace() {
    refuses_in_child_pid_namespace(&["--mount-proc"]);
    refuses_in_child_pid_namespace(&[]);
}

/// Attacker: a local user (or a workload) whose process execs a second time at once
/// (`sh -c 'exec app'`, typically after moving itself to another cgroup). When both exec
/// events are handled in one batch, procfs already shows the second image, and the agent
/// reported the first exec (with its cgroup and time) as running the second binary. Now a
/// record whose procfs image is from a later exec (comm changed and the exec'd path names
/// another file) leaves the binary unknown, with the reason.
#[test]
fn an_exec_is_never_reported_with_the_binary_of_a_later_exec() {
    let agent = Agent::start(&["--no-trace"]);
    let cg = TestCgroup::create("again.slice/again.scope");
    let dir = scratch_dir();
    let bin = unique_binary(&dir, "later-image");
    let sha = sha256sum(&bin);
    let children: Vec<_> = (0..40).map(|_| cg.spawn(&bin, &["1"])).collect();
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    for pid in &pids {
        agent.wait_event("the shell's exec record", |v| v["kind"] == "process_exec" && v["pid"] == *pid && v["binary"]["exec_path"] == "/bin/sh");
        agent.wait_event("the binary's exec record", |v| v["kind"] == "process_exec" && v["pid"] == *pid && v["binary"]["exec_path"] == bin.to_str().unwrap());
    }
    let bin_path = bin.to_str().unwrap();
    for v in agent
        .events()
        .iter()
        .filter(|v| v["kind"] == "process_exec" && pids.contains(&(v["pid"].as_u64().unwrap_or(0) as u32)) && v["binary"]["exec_path"] == "/bin/sh")
    {
        assert_ne!(v["binary"]["sha256"], sha.as_str(), "the shell's exec claims the later binary: {v}");
        assert_ne!(v["binary"]["path"], bin_path, "{v}");
    }
    for c in children {
        finish(c);
    }
    let _ = fs::remove_dir_all(dir);
}
