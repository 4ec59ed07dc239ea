#![allow(clippy::unwrap_used)] // tests: a failed step should stop the test loudly
//! Go crypto/tls clients against the real kernel: a client built here with Debian's
//! golang-go (plain, stripped with `-ldflags=-s -w`, and PIE) sends a bearer token and a
//! SigV4-signed request over real TLS to a real local server; the agent finds
//! `crypto/tls.(*Conn).Write` in the binary's `.gopclntab`, hooks it when the binary is
//! exec'd, and attributes both credentials to the right process.

use std::{fs, io::Write, path::PathBuf, process::Stdio, time::Instant};

use serde_json::Value;
use sigil_tests::*;

struct Run {
    agent: Agent,
    state: PathBuf,
    dir: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn traced() -> Run {
    let dir = scratch_dir();
    let state = dir.join("state");
    let agent = Agent::tracing(&state);
    Run { agent, state, dir }
}

/// A Go client built with `flags` sends a bearer token and a SigV4 request; both are
/// recorded with the client's pid, exec id and binary, and neither secret is kept.
fn go_client_credentials_are_attributed(flags: &[&str], name: &str) {
    let t = traced();
    let server = LocalServer::start(Some(&t.dir));
    let bin = go_build(&t.dir, "tls_client", name, flags);
    let cg = TestCgroup::create(&format!("go.slice/{name}.scope"));
    let token = format!("sigil-go-bearer-{}", unique("t"));
    let key_id = "AKIASIGILGOCLIENT001";
    let secret = format!("goPLANTEDsecretKEY/{}", unique("s"));
    let base = format!("https://127.0.0.1:{}", server.port);

    let started = Instant::now();
    let mut child = cg.command(&bin, &[&base, &token, key_id, &secret]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let mut out = child_stdout(&mut child);
    assert_eq!(next_line(&mut out), "READY");
    // The agent hooks the binary once its exec is inspected; the client goes on after.
    let bin_path = bin.display().to_string();
    t.agent.stderr.wait_line("Go TLS capture attached to the client", |l| l.contains("Go TLS capture attached") && l.contains(&bin_path));
    eprintln!("{name}: exec -> Go TLS probe attached in {:?}", started.elapsed());
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let sent = next_line(&mut out);
    let status = child.wait().unwrap();
    assert!(status.success() && sent == "SENT", "client failed: {status} {sent:?}");

    let exec = t.agent.wait_exec(pid, &bin);
    let uses_of = |what: &str, pred: &dyn Fn(&Value) -> bool| t.agent.wait_event(what, |v| v["kind"] == "credential_use" && v["pid"] == pid && pred(v));
    let bearer = uses_of("the Go client's bearer token", &|v| v["detector"] == "bearer_token");
    let sigv4 = uses_of("the Go client's SigV4 request", &|v| v["detector"] == "aws_sigv4");
    for ev in [&bearer, &sigv4] {
        assert_eq!(ev["transport"], "tls");
        assert_eq!(ev["tls_library"], "go_crypto_tls");
        assert_eq!(ev["process"]["exec_id"], exec["exec_id"]);
        assert_eq!(ev["process"]["binary_path"], bin_path.as_str());
        // Hashed at once when the use is handled while the client still runs. A client that
        // exited first (the agent behind on a loaded machine) leaves the digest to its exec
        // record, joined on exec_id: the digest is never wrong, and never missing from both.
        match ev["process"]["binary_sha256"].as_str() {
            Some(d) => assert_eq!(d, sha256sum(&bin)),
            None => {
                let hashed = t.agent.wait_event("the client's exec record with its digest", |v| {
                    v["kind"] == "process_exec" && v["exec_id"] == ev["process"]["exec_id"] && v["binary"]["sha256"].is_string()
                });
                assert_eq!(hashed["binary"]["sha256"], sha256sum(&bin).as_str());
            }
        }
        assert_eq!(ev["process"]["cgroup_path"], cg.path.as_str());
        // The fd read from the *tls.Conn names the connected socket: the destination.
        assert_eq!(ev["destination"]["ip"], "127.0.0.1");
        assert_eq!(ev["destination"]["port"], server.port);
    }
    assert_eq!(bearer["method"], "GET");
    assert_eq!(bearer["path"], "/v1/items");
    assert_eq!(sigv4["method"], "PUT");
    assert_eq!(sigv4["identifiers"]["access_key_id"], key_id);
    assert_eq!(sigv4["identifiers"]["aws_region"], "eu-west-1");
    assert_eq!(sigv4["identifiers"]["aws_service"], "s3");
    assert_eq!(sigv4["class"], "static");
    // Captured once each: the probe sits past the stack-growth check, so a goroutine
    // that grows its stack inside Write is not seen twice.
    let uses = t.agent.events().into_iter().filter(|v| v["kind"] == "credential_use" && v["pid"] == pid).count();
    assert_eq!(uses, 2, "one event per credential");

    // A hooked Go binary is no longer a blind spot.
    let stats = t.agent.wait_event("agent_stats after the client ran", |v| v["kind"] == "agent_stats");
    let listed = stats["trace"]["uncovered"].as_array().unwrap().iter().any(|u| u["binary"] == bin_path.as_str());
    assert!(!listed, "the covered Go client is still reported uncovered: {stats}");

    for s in [&secret, &token] {
        assert_secret_absent(&t.agent, &[&t.state], &[], s);
    }
}

#[test]
fn go_client_unstripped_is_attributed() {
    go_client_credentials_are_attributed(&[], "go-plain");
}

#[test]
fn go_client_stripped_with_s_w_is_attributed() {
    go_client_credentials_are_attributed(&["-ldflags=-s -w"], "go-stripped");
}

#[test]
fn go_client_built_as_pie_is_attributed() {
    go_client_credentials_are_attributed(&["-buildmode=pie"], "go-pie");
}

/// A Go program without crypto/tls is recognised as Go but has nothing to hook: it stays
/// reported as uncovered, with the reason, rather than silently counted as covered.
#[test]
fn go_binary_without_tls_write_stays_uncovered_with_the_reason() {
    let t = traced();
    let bin = go_build(&t.dir, "no_tls", "go-no-tls", &["-ldflags=-s -w"]);
    let cg = TestCgroup::create("go.slice/no-tls.scope");
    let (code, out, err) = cg.run(&bin, &[]);
    assert_eq!((code, out.as_str()), (0, "no TLS here"), "{err}");
    let bin_path = bin.display().to_string();
    let stats = t.agent.wait_event("agent_stats listing the TLS-less Go binary", |v| {
        v["kind"] == "agent_stats" && v["trace"]["uncovered"].as_array().is_some_and(|l| l.iter().any(|u| u["binary"] == bin_path.as_str()))
    });
    let entry = stats["trace"]["uncovered"].as_array().unwrap().iter().find(|u| u["binary"] == bin_path.as_str()).unwrap();
    assert_eq!(entry["client"], "go_crypto_tls");
    let reason = entry["reason"].as_str().unwrap();
    assert!(reason.contains("crypto/tls.(*Conn).Write is not in this binary"), "{reason}");
    assert!(!t.agent.stderr.snapshot().iter().any(|l| l.contains("Go TLS capture attached") && l.contains(&bin_path)));
}
