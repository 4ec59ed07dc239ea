//! Records that cross the kernel/user boundary.
//!
//! Both the eBPF programs (`agent-ebpf`, `no_std`, bpfel) and the user-space agent compile
//! this crate, so the layout of every struct here *is* the wire format of the ring buffer.
//! Rules that keep it stable: `#[repr(C)]`, no `bool`, no implicit padding (every gap is a
//! named `_pad` field), and an [`EventHeader`] first so user space can dispatch on `kind`
//! before it knows the body.
#![no_std]

pub mod config;
pub mod drops;
pub mod event;

pub use config::{ExeOffsets, TracepointOffsets, UringOffsets};
pub use drops::{DROP_REASONS, DROPS_MAP, DropReason, TLS_CALLS_ENTRIES, TLS_CALLS_MAP};
pub use event::{
    COMM_LEN, ConnectEvent, DATA_CAPTURE, DataEvent, DataSource, EventHeader, EventKind, ExeIdentity, ExeSource, ExecEvent, ExitEvent, FileOpenEvent,
    OPEN_BY_IDENTITY, OPEN_BY_NAME, OPEN_BY_NAME_IO_URING, PATH_LEN, QUIET_EXES_MAP, RESPONSE_BUDGET, RESPONSE_WATCH_MAP, TlsConnKey, WATCH_NAME_LEN,
    WATCHED_INODES_ENTRIES,
};
