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

/// Free space, in bytes, on the filesystem holding `path` (POSIX `df` output).
fn free_bytes(path: &Path) -> Result<u64> {
    let out = Command::new("df").arg("-Pk").arg(path).output().context("running df")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib = text.lines().nth(1).and_then(|l| l.split_whitespace().nth(3)).and_then(|n| n.parse::<u64>().ok());
    kib.map(|k| k * 1024).with_context(|| format!("reading df's answer for {}: {text}", path.display()))
}

/// What a cold build of every binary, the fuzz targets and a test run's scratch take,
/// with room to spare: `target/` about 4 GB, the fuzz builds about 5 GB.
const ROOM: u64 = 12 << 30;

/// Before a build, when the disk has less than [`ROOM`] free: removes what only makes
/// builds faster, a step at a time until there is room (rustc's incremental caches, then
/// the fuzz builds, then the host builds, rebuilt cold). A checkout that stays between
/// runs, as CI's does, gathers stale artifacts build after build, and once filled the
/// disk in the middle of linking the tests.
fn make_room() -> Result<()> {
    make_room_in(&workspace_root(), ROOM).map(drop)
}

/// [`make_room`] under `root`, wanting `room` bytes free; the directories it removed.
fn make_room_in(root: &Path, room: u64) -> Result<Vec<PathBuf>> {
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let mut removed = Vec::new();
    for dir in ["target/debug/incremental", "target/release/incremental", "fuzz/target", "target/debug", "target/release"] {
        let free = free_bytes(root)?;
        if free >= room {
            return Ok(removed);
        }
        let path = root.join(dir);
        if path.exists() {
            eprintln!("xtask: {:.1} GiB free, under {:.0}: removing {} (a cache; it is rebuilt)", gib(free), gib(room), path.display());
            std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
            removed.push(path);
        }
    }
    let free = free_bytes(root)?;
    if free < room {
        eprintln!("xtask: only {:.1} GiB free after removing build caches; the build may run out of disk", gib(free));
    }
    Ok(removed)
}

/// Builds everything; returns the directory holding the host binaries.
pub fn all(release: bool) -> Result<PathBuf> {
    make_room()?;
    let object = ebpf()?;
    let mut cmd = cargo();
    cmd.args(["build", "--workspace", "--bins", "--tests"]).env("SIGIL_EBPF_OBJECT", &object);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    Ok(workspace_root().join("target").join(if release { "release" } else { "debug" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("xtask-room-{name}-{}", std::process::id()));
        for dir in ["target/debug/incremental/x", "target/debug/deps", "fuzz/target/y", "target/ebpf/z", "src"] {
            std::fs::create_dir_all(root.join(dir)).expect("creates the tree");
        }
        root
    }

    #[test]
    fn df_answers_for_the_workspace() {
        assert!(free_bytes(&workspace_root()).expect("df answers") > 0);
    }

    /// With room to spare nothing goes; short of room, the caches go cheapest first, and
    /// never the sources or the eBPF object.
    #[test]
    fn only_build_caches_are_removed_and_only_when_the_disk_is_short() {
        let root = tree("enough");
        assert!(make_room_in(&root, 0).expect("runs").is_empty());
        assert!(root.join("target/debug/incremental/x").exists());
        let _ = std::fs::remove_dir_all(&root);

        let root = tree("short");
        let removed = make_room_in(&root, u64::MAX).expect("runs");
        let names: Vec<String> = removed.iter().map(|p| p.strip_prefix(&root).expect("under root").display().to_string()).collect();
        assert_eq!(names, ["target/debug/incremental", "fuzz/target", "target/debug"]);
        assert!(root.join("src").exists() && root.join("target/ebpf/z").exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
