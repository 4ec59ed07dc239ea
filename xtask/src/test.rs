//! `cargo xtask test`: the whole suite, the same on a laptop, a fresh machine and CI.

use anyhow::{Result, bail};

use crate::{build, provision};

/// Debian packages the tests drive as real peers (mount, setpriv, unshare, sha256sum).
const TEST_PACKAGES: &[&str] = &["mount", "util-linux", "coreutils", "curl", "openssl", "gnutls-bin"];
/// Third-party clients the tests check Sigil against.
pub const PYTHON_PACKAGES: &[&str] = &["spiffe==0.3.2", "pyjwt[crypto]==2.15.1", "boto3==1.44.5"];

pub fn run(args: &[String]) -> Result<()> {
    if !provision::is_root() {
        bail!("cargo xtask test needs root: the integration tests load eBPF programs and create cgroups");
    }
    provision::debian_packages(TEST_PACKAGES)?;
    let python = provision::python_env(PYTHON_PACKAGES)?;
    let bin_dir = build::all(false)?;
    // One cargo invocation for unit and kernel tests, so one summary covers everything.
    let mut cmd = build::cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .env("SIGIL_EBPF_OBJECT", build::ebpf_object())
        .env("SIGIL_AGENT_BIN", bin_dir.join("sigil-agent"))
        .env("SIGIL_PYTHON", python);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    provision::run(&mut cmd)
}
