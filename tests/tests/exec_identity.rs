#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! The executable's identity read in the kernel at exec (`task->mm->exe_file->f_inode`,
//! with offsets from the kernel's BTF): a second exec of the same file version is answered
//! from the hash cache without opening /proc/<pid>/exe, and a file changed in any way is
//! hashed again.

use std::{
    fs::{self, OpenOptions},
    os::unix::fs::{FileExt, MetadataExt},
    path::Path,
    process::Child,
};

use serde_json::Value;
use sigil_tests::*;

/// Runs `bin` in `cg` and returns its exec record once attested (digest included).
fn exec_record(agent: &Agent, cg: &TestCgroup, bin: &Path) -> (Child, Value) {
    let child = cg.spawn(bin, &["30"]);
    let pid = child.id();
    let bin_path = bin.to_str().unwrap().to_owned();
    let rec = agent.wait_event(&format!("hashed exec record of pid {pid}"), |v| {
        v["kind"] == "process_exec" && v["pid"] == pid && v["binary"]["path"] == bin_path.as_str() && !v["binary"]["sha256"].is_null()
    });
    (child, rec)
}

/// A workload that rewrites its own binary in place between two execs, keeping the inode
/// and the size and setting the modification time back to the old value, must not be
/// reported with the old digest: the identity the kernel reads at exec includes the
/// change time, which no user can set. The unchanged file's second exec is answered from
/// the kernel's identity alone (`hashed_from: kernel`), with the digest sha256sum computes.
#[test]
fn a_workload_rewriting_its_binary_in_place_with_the_old_mtime_is_hashed_again() {
    let agent = Agent::start(&["--no-trace"]);
    agent.stderr.wait_line("exec identity source", |l| l.contains("executable identity from the kernel"));
    let cg = TestCgroup::create("exec-identity.slice/exec-identity.scope");
    let dir = scratch_dir();
    let bin = unique_binary(&dir, "identity");
    let first_sha = sha256sum(&bin);
    let meta = fs::metadata(&bin).unwrap();

    // (Running sha256sum on it already put it in the cache: the script check hashes a
    // command's first argument. Either way the digest must be sha256sum's.)
    let (child, first) = exec_record(&agent, &cg, &bin);
    assert_eq!(first["binary"]["sha256"], first_sha.as_str(), "{first}");
    finish(child);

    let (child, again) = exec_record(&agent, &cg, &bin);
    assert_eq!(again["binary"]["sha256"], first_sha.as_str(), "{again}");
    assert_eq!(again["binary"]["hash_cache"], "hit", "{again}");
    assert_eq!(again["binary"]["hashed_from"], "kernel", "the kernel's identity must answer a known file: {again}");
    assert_eq!(again["binary"]["inode"], meta.ino(), "{again}");
    assert_eq!(again["binary"]["size"], meta.size(), "{again}");
    finish(child);

    // The attack: same inode, same size, one byte changed, mtime restored.
    let f = OpenOptions::new().write(true).open(&bin).unwrap();
    let last = meta.size() - 1;
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, last).ok();
    f.write_all_at(&[byte[0] ^ 0x01], last).unwrap();
    f.set_modified(meta.modified().unwrap()).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let after = fs::metadata(&bin).unwrap();
    assert_eq!((after.ino(), after.size(), after.mtime(), after.mtime_nsec()), (meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec()));
    let second_sha = sha256sum(&bin);
    assert_ne!(second_sha, first_sha);

    let (child, rewritten) = exec_record(&agent, &cg, &bin);
    assert_eq!(rewritten["binary"]["sha256"], second_sha.as_str(), "the rewritten binary was reported with its old digest: {rewritten}");
    finish(child);

    let (child, known) = exec_record(&agent, &cg, &bin);
    assert_eq!(known["binary"]["sha256"], second_sha.as_str(), "{known}");
    assert_eq!(known["binary"]["hashed_from"], "kernel", "{known}");
    finish(child);
    let _ = fs::remove_dir_all(dir);
}

/// Without usable BTF (a kernel built without it, or a wrong `--kernel-btf`), the agent
/// says so and attests as before: the digest comes from /proc/<pid>/exe, looked up in the
/// cache through `fstat`.
#[test]
fn without_kernel_btf_the_executable_is_read_through_procfs() {
    let agent = Agent::start(&["--no-trace", "--kernel-btf", "/nonexistent/vmlinux"]);
    agent.stderr.wait_line("the fallback warning", |l| l.contains("/nonexistent/vmlinux") && l.contains("falling back to procfs"));
    agent.stderr.wait_line("exec identity source", |l| l.contains("executable identity from procfs"));
    let cg = TestCgroup::create("exec-identity-procfs.slice/exec-identity-procfs.scope");
    let dir = scratch_dir();
    let bin = unique_binary(&dir, "identity-procfs");
    let sha = sha256sum(&bin);
    for _ in 0..2 {
        let (child, rec) = exec_record(&agent, &cg, &bin);
        assert_eq!(rec["binary"]["sha256"], sha.as_str(), "{rec}");
        assert_eq!(rec["binary"]["hashed_from"], "exe", "{rec}");
        finish(child);
    }
    let _ = fs::remove_dir_all(dir);
}
