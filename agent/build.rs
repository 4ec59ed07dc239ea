//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
//!
//! The object is built with a nightly toolchain for another target, which a build script
//! cannot provision responsibly, so xtask builds it and this script only copies it into
//! OUT_DIR. Without it the agent still compiles (for `cargo check`, clippy, unit tests)
//! but `sigil-agent run` refuses to start and says how to build it.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let object =
        env::var_os("SIGIL_EBPF_OBJECT").map(PathBuf::from).unwrap_or_else(|| manifest.join("../target/ebpf/bpfel-unknown-none/release/sigil-agent-ebpf"));
    println!("cargo:rerun-if-env-changed=SIGIL_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    let bytes = fs::read(&object).unwrap_or_default();
    if bytes.is_empty() {
        println!("cargo:warning=no eBPF object at {}; run `cargo xtask build` to embed one", object.display());
    }
    fs::write(out.join("sigil.bpf.o"), bytes).expect("writing OUT_DIR/sigil.bpf.o");
}
