//! Sigil node agent.
//!
//! Data flows one way: [`ebpf`] (kernel events) -> [`attest`] (identity records) ->
//! [`output`] (sinks). [`daemon`] wires the stages together; [`cli`] is the command line.
pub mod attest;
pub mod bridge;
pub mod cli;
pub mod cpu;
pub mod daemon;
pub mod ebpf;
pub mod h2frame;
pub mod issue;
pub mod k8s;
pub mod metrics;
pub mod output;
pub mod stream;
pub mod trace;

/// Returns the heap pages start-up freed to the kernel. Parsing the kernel's BTF (ours and
/// aya's, for relocations) and compiling the credential catalogue leave tens of MiB free
/// but mapped in the allocator's arenas; the agent's resting RSS, on every node, should
/// not carry that one-off cost.
pub fn release_startup_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages (of every arena) to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
