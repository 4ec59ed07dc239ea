//! Builds: the eBPF object (nightly, bpfel) and the host binaries that embed it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::provision::{self, NIGHTLY, run};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf()
}

/// Where the agent's build script looks for the object (see agent/build.rs).
pub fn ebpf_object() -> PathBuf {
    workspace_root().join("target/ebpf/bpfel-unknown-none/release/sigil-agent-ebpf")
}

/// A host cargo command with the variables of the outer `cargo xtask` removed, so
/// that a nested build picks its own toolchain and target.
pub fn cargo() -> Command {
    cargo_env(Command::new("cargo"))
}

/// Removes what the outer `cargo xtask` set, so a nested tool picks its own toolchain.
pub fn cargo_env(mut cmd: Command) -> Command {
    for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTC_WRAPPER", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    cmd.current_dir(workspace_root());
    cmd
}

pub fn ebpf() -> Result<PathBuf> {
    let tc = provision::toolchain()?;
    let root = workspace_root();
    run(cargo()
        .current_dir(root.join("agent-ebpf"))
        .arg(format!("+{NIGHTLY}"))
        .args(["build", "--release", "--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(root.join("target/ebpf"))
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &tc.bpf_linker))
    .context("building the eBPF programs")?;
    Ok(ebpf_object())
}

/// Builds everything; returns the directory holding the host binaries.
pub fn all(release: bool) -> Result<PathBuf> {
    let object = ebpf()?;
    let mut cmd = cargo();
    cmd.args(["build", "--workspace", "--bins", "--tests"]).env("SIGIL_EBPF_OBJECT", &object);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    Ok(workspace_root().join("target").join(if release { "release" } else { "debug" }))
}
