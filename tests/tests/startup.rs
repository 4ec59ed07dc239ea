#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Start-up failures: without privilege or without BPF the agent exits non-zero with one
//! line saying why, and never panics.

use std::process::Command;

use sigil_tests::*;

fn assert_one_line_refusal(out: &std::process::Output, expect_code: &[i32], mention: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(expect_code.contains(&out.status.code().unwrap_or(-1)), "exit {:?}, stderr: {stderr}", out.status);
    assert_eq!(lines.len(), 1, "want exactly one line, got: {stderr}");
    assert!(lines[0].starts_with("sigil-agent: "), "{stderr}");
    assert!(lines[0].contains(mention), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty(), "no events may be printed");
}

#[test]
fn without_root_the_agent_refuses_with_one_line() {
    let out =
        Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(agent_bin()).args(["run", "--stdout"]).output().unwrap();
    assert_one_line_refusal(&out, &[77], "needs root");
}

#[test]
fn root_without_capabilities_is_refused_too() {
    let out = Command::new("setpriv").args(["--bounding-set=-all", "--inh-caps=-all", "--"]).arg(agent_bin()).args(["run", "--stdout"]).output().unwrap();
    assert_one_line_refusal(&out, &[77], "CAP_BPF");
}

/// In a user namespace the agent holds every capability, but only inside the namespace:
/// the kernel refuses bpf() (unprivileged BPF is disabled), as in a rootless container.
#[test]
fn when_the_kernel_refuses_bpf_the_agent_says_so() {
    ensure_tracefs();
    let out = Command::new("unshare").args(["--user", "--map-root-user", "--"]).arg(agent_bin()).args(["run", "--stdout"]).output().unwrap();
    assert_one_line_refusal(&out, &[69], "eBPF");
}

#[test]
fn probe_reports_program_types() {
    let out = Command::new(agent_bin()).arg("probe").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for key in ["tracepoint=yes", "uprobe=", "cgroup_sock_addr=", "lsm=", "fentry=", "ring_buffer=yes"] {
        assert!(text.contains(key), "{text}");
    }
}

/// Invalid configuration exits 64 (EX_USAGE), before any program is loaded.
#[test]
fn bad_arguments_are_refused_before_touching_the_kernel() {
    let out = Command::new(agent_bin()).args(["run", "--stdout", "--ring-buffer-bytes", "1000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("power of two"));
    let out = Command::new(agent_bin()).args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stdout"));
}
