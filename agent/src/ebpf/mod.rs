//! Everything that touches the BPF syscall: kernel plumbing, feature probes, loading and
//! attaching programs, and decoding what they send.
pub mod decode;
pub mod features;
pub mod kernel_layout;
pub mod loader;
pub mod mounts;
pub mod tracefs;

pub use decode::{DecodeError, KernelEvent};
pub use loader::{LoadError, Probes};
