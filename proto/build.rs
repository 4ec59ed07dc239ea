//! Generates Rust from the protos with a vendored protoc, so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY (edition 2024 set_var): build scripts are single-threaded.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["spiffe/workload.proto", "sigil/v1/sigil.proto", "sigil/v1/signer.proto"], &["."])?;
    println!("cargo:rerun-if-changed=spiffe");
    println!("cargo:rerun-if-changed=sigil");
    Ok(())
}
