//! Kernel-side losses, counted per reason in the `DROPS` per-CPU array.
//!
//! A capture the kernel could not pass on must never vanish silently: every place an eBPF
//! program gives up (a full map, a full ring buffer, a cut copy) adds one to its reason's
//! slot, and the agent reports the sums in `agent_stats` and as
//! `sigil_agent_kernel_drops_total{reason}`.

/// Name of the per-CPU array (one u64 per [`DropReason`]), on both sides.
pub const DROPS_MAP: &str = "DROPS";
/// Name of the per-thread TLS call map, whose size the loader can set.
pub const TLS_CALLS_MAP: &str = "TLS_CALLS";
/// Default entries of `TLS_CALLS`: threads inside a TLS write at the same moment.
pub const TLS_CALLS_ENTRIES: u32 = 16_384;

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The ring buffer had no room for an event (also counted per kind in `LOST`).
    RingBufferFull = 0,
    /// A TLS write's arguments could not be saved at entry: that write is not captured.
    TlsCallInsert = 1,
    /// A TLS write returned but its saved arguments were gone (evicted from the LRU map
    /// by newer calls while it was blocked): that write is not captured.
    TlsCallLost = 2,
    /// A connected socket could not be remembered: its plaintext writes are not captured.
    ConnInsert = 3,
    /// connect() arguments could not be kept until the syscall returned.
    PendingConnectInsert = 4,
    /// A write longer than `DATA_CAPTURE`: only its first bytes were copied.
    DataTruncated = 5,
    /// A writev/sendmsg with more iovecs than the kernel side reads: the rest is unseen.
    IovecsBeyondLimit = 6,
    /// The user buffer could not be read (e.g. not paged in): nothing was copied.
    UserCopyFailed = 7,
}

/// Slots in `DROPS`.
pub const DROP_REASONS: u32 = 8;

impl DropReason {
    pub const ALL: [DropReason; DROP_REASONS as usize] = [
        Self::RingBufferFull,
        Self::TlsCallInsert,
        Self::TlsCallLost,
        Self::ConnInsert,
        Self::PendingConnectInsert,
        Self::DataTruncated,
        Self::IovecsBeyondLimit,
        Self::UserCopyFailed,
    ];

    /// The metric label and `agent_stats` key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RingBufferFull => "ring_buffer_full",
            Self::TlsCallInsert => "tls_call_insert",
            Self::TlsCallLost => "tls_call_lost",
            Self::ConnInsert => "conn_insert",
            Self::PendingConnectInsert => "pending_connect_insert",
            Self::DataTruncated => "data_truncated",
            Self::IovecsBeyondLimit => "iovecs_beyond_limit",
            Self::UserCopyFailed => "user_copy_failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot_and_label() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut labels: [&str; DROP_REASONS as usize] = DropReason::ALL.map(DropReason::as_str);
        labels.sort_unstable();
        assert!(labels.windows(2).all(|w| w[0] != w[1]));
    }
}
