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
