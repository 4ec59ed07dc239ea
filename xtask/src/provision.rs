//! Toolchain and package provisioning.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// The nightly toolchain that builds the eBPF crate (`-Z build-std` needs nightly).
pub const NIGHTLY: &str = "nightly";

/// What the eBPF build needs, resolved to paths.
pub struct Toolchain {
    pub bpf_linker: PathBuf,
}

/// Where provisioned pieces live between runs. Outside the work tree so a fresh clone
/// reuses them; `SIGIL_CACHE_DIR` overrides it (delete it to test a cold start).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("SIGIL_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("sigil")
}

/// Runs a command, failing with its command line when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Ensures nightly `rust-src` and a bpf-linker that matches nightly's LLVM.
pub fn toolchain() -> Result<Toolchain> {
    let sysroot = PathBuf::from(
        output(Command::new("rustc").arg(format!("+{NIGHTLY}")).args(["--print", "sysroot"]))
            .context("the eBPF crate needs a nightly toolchain (rustup toolchain install nightly)")?,
    );
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        eprintln!("xtask: installing rust-src for {NIGHTLY}");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }
    let bpf_linker = bpf_linker(&sysroot)?;
    Ok(Toolchain { bpf_linker })
}

/// bpf-linker links against a shared libLLVM of the same major version as rustc's LLVM.
/// Debian has none new enough, but the nightly toolchain ships its own; we build the linker
/// against that, in a cache directory keyed by the libLLVM file name so that a toolchain
/// update rebuilds it instead of loading a mismatched LLVM.
fn bpf_linker(sysroot: &Path) -> Result<PathBuf> {
    let lib_dir = sysroot.join("lib");
    let libllvm = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}: cannot build bpf-linker", lib_dir.display()))?;
    let llvm_major = libllvm
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .with_context(|| format!("cannot read the LLVM version from {libllvm}"))?;

    let root = cache_dir().join("bpf-linker").join(&libllvm);
    let bin = root.join("bin/bpf-linker");
    if bin.is_file() && Command::new(&bin).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(bin);
    }
    eprintln!("xtask: building bpf-linker against {libllvm} (about a minute, once)");
    // The linker finds libLLVM through an rpath to this prefix, so the links must stay.
    let prefix = root.join("llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    for name in [libllvm.as_str(), "libLLVM.so"] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&libllvm), &link).with_context(|| format!("linking {}", link.display()))?;
    }
    run(Command::new("cargo")
        .args(["install", "--locked", "bpf-linker", "--version", "^0.13", "--no-default-features"])
        .args(["--features", &format!("llvm-{llvm_major}")])
        .arg("--root")
        .arg(&root)
        .env("LLVM_PREFIX", &prefix)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR"))
    .context("building bpf-linker")?;
    Ok(bin)
}

/// Installs Debian packages that are missing (tests and demo use real peers).
pub fn debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Effective uid 0 (from /proc/self/status, so xtask needs no unsafe code).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:").map(|v| v.split_whitespace().nth(1) == Some("0"))))
        .unwrap_or(false)
}

/// A Python virtualenv with `packages`, cached by the package list. The tests use real
/// third-party clients (py-spiffe, PyJWT) to check Sigil against code it did not write.
pub fn python_env(packages: &[&str]) -> Result<PathBuf> {
    let key: u64 = packages.iter().flat_map(|p| p.bytes()).fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let dir = cache_dir().join(format!("pyenv-{key:016x}"));
    let python = dir.join("bin/python3");
    let marker = dir.join(".complete");
    if marker.is_file() && python.is_file() {
        return Ok(python);
    }
    eprintln!("xtask: creating a Python environment with {}", packages.join(" "));
    let _ = fs::remove_dir_all(&dir);
    run(Command::new("python3").args(["-m", "venv"]).arg(&dir)).context("creating a virtualenv (python3-venv)")?;
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]).args(packages))?;
    fs::write(&marker, packages.join("\n"))?;
    Ok(python)
}

/// cargo-fuzz (crates.io), cached like bpf-linker. Invoked directly as `cargo-fuzz fuzz ...`.
pub fn cargo_fuzz() -> Result<PathBuf> {
    let root = cache_dir().join("cargo-fuzz");
    let bin = root.join("bin/cargo-fuzz");
    if bin.is_file() && Command::new(&bin).args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success()) {
        return Ok(bin);
    }
    eprintln!("xtask: installing cargo-fuzz (once)");
    run(Command::new("cargo")
        .args(["install", "--locked", "cargo-fuzz", "--version", "^0.13"])
        .arg("--root")
        .arg(&root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR"))
    .context("installing cargo-fuzz")?;
    Ok(bin)
}

/// Debian's own Node.js, dynamically linked (libnode, and the system's libssl), unpacked
/// under the cache rather than installed: the project's machines carry NodeSource's
/// statically linked build as /usr/bin/node, which installing Debian's package would
/// replace. Returns the `node` executable; its libnode is in `usr/lib/x86_64-linux-gnu`
/// beside it (run it with LD_LIBRARY_PATH there).
pub fn debian_node() -> Result<PathBuf> {
    // What libnode links and what it loads from /usr/share/nodejs at start-up (JS only;
    // their `nodejs` dependency is met by whichever node is installed).
    debian_packages(&[
        "libssl3",
        "libuv1",
        "libc-ares2",
        "libicu72",
        "libnghttp2-14",
        "libbrotli1",
        "zlib1g",
        "node-cjs-module-lexer",
        "node-acorn",
        "node-undici",
    ])?;
    // libnode108 is Debian's alone (bookworm); its version is the nodejs package's.
    let show = || output(Command::new("apt-cache").args(["show", "--no-all-versions", "libnode108"])).unwrap_or_default();
    let mut info = show();
    if info.is_empty() {
        run(Command::new("apt-get").arg("update").arg("-qq"))?;
        info = show();
    }
    let Some(version) = info.lines().find_map(|l| l.strip_prefix("Version: ")).map(str::to_owned) else {
        bail!("Debian's package lists have no libnode108 (Debian 12's Node.js)");
    };
    let dir = cache_dir().join(format!("debian-node-{version}"));
    let node = dir.join("usr/bin/node");
    if dir.join(".complete").is_file() && node.is_file() {
        return Ok(node);
    }
    eprintln!("xtask: unpacking Debian's Node.js {version}");
    let _ = fs::remove_dir_all(&dir);
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    run(Command::new("apt-get").args(["download", "-qq", &format!("nodejs={version}"), &format!("libnode108={version}")]).current_dir(&debs))?;
    for deb in fs::read_dir(&debs)? {
        run(Command::new("dpkg-deb").arg("-x").arg(deb?.path()).arg(&dir))?;
    }
    fs::write(dir.join(".complete"), &version)?;
    Ok(node)
}
