//! Resource limits of the Workload API.
//!
//! The socket is open to every local process (mode 0777: who may have what is decided
//! from the kernel's answer, not from file modes), so any local user can open
//! connections. Without limits, thousands of idle connections each hold a file
//! descriptor in the agent, and the attestation path (which opens /proc/<pid> handles and
//! executables) starts failing with EMFILE while the agent looks healthy. The limits:
//! connections in total and per uid, HTTP/2 streams per connection, idle time, and the
//! size of a request (message and headers). A connection over a limit is accepted and
//! closed at once, so the listen backlog keeps draining and well-behaved clients still
//! get in.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::warn;

/// `sigil-agent run` flags that bound the Workload API.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkloadApiLimits {
    /// Open Workload API connections, all callers together. Each holds two file
    /// descriptors (the socket and its peer's pidfd), so the total is also kept to an
    /// eighth of the agent's descriptor limit: attestation always has most of them.
    #[arg(long = "workload-api-max-connections", default_value_t = 1024)]
    pub max_connections: usize,
    /// Open Workload API connections per calling uid.
    #[arg(long = "workload-api-max-connections-per-uid", default_value_t = 64)]
    pub max_per_uid: usize,
    /// Concurrent requests (HTTP/2 streams) per connection.
    #[arg(long = "workload-api-max-streams", default_value_t = 16)]
    pub max_streams: u32,
    /// Close a connection that sent nothing for this long. The agent pings every client
    /// at a third of this, and a live client's answer counts, so only connections whose
    /// peer does not speak (or no longer reads) HTTP/2 are closed.
    #[arg(long = "workload-api-idle-seconds", default_value_t = 120)]
    pub idle_seconds: u64,
}

impl Default for WorkloadApiLimits {
    fn default() -> Self {
        Self { max_connections: 1024, max_per_uid: 64, max_streams: 16, idle_seconds: 120 }
    }
}

/// The largest request message (a FetchJWTSVID with its audiences is a few hundred bytes).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// What a denied request may put into its event: this many audiences ...
pub const MAX_EVENT_AUDIENCES: usize = 16;
/// ... of at most this many bytes each (a requested SPIFFE ID too).
pub const MAX_EVENT_FIELD: usize = 256;
/// How many audiences a request may carry at all ...
pub const MAX_AUDIENCES: usize = 64;
/// ... and how long each may be (long enough for GCP's workload identity provider names;
/// an issued event carries them all).
pub const MAX_AUDIENCE_LEN: usize = 512;
/// Longest denial detail (it may quote what the caller asked for).
pub const MAX_DETAIL: usize = 1024;

impl WorkloadApiLimits {
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_seconds.max(1))
    }

    /// The total that fits the agent's file-descriptor limit: three descriptors each
    /// (the socket, the peer's pidfd and its procfs directory), a quarter of the limit
    /// for all of them.
    fn total(&self) -> usize {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we pass.
        let nofile = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX) } else { 1024 };
        self.max_connections.min(nofile / 12).max(1)
    }
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverLimit {
    #[error("{0} Workload API connections are open (the limit)")]
    Total(usize),
    #[error("uid {uid} already has {open} Workload API connections open (the per-uid limit)")]
    PerUid { uid: u32, open: usize },
}

#[derive(Default)]
struct Open {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// Counts open connections; a [`Slot`] is one of them, released on drop.
pub struct Connections {
    total: usize,
    per_uid: usize,
    open: Mutex<Open>,
    refused: AtomicU64,
    /// When the last refusal was logged (ms since `epoch`): one line a second at most,
    /// with the count since, so a flood cannot flood the log.
    last_log_ms: AtomicU64,
    epoch: Instant,
}

impl Connections {
    pub fn new(limits: &WorkloadApiLimits) -> Arc<Self> {
        Arc::new(Self {
            total: limits.total(),
            per_uid: limits.max_per_uid.max(1),
            open: Mutex::new(Open::default()),
            refused: AtomicU64::new(0),
            last_log_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// A slot for a connection from `uid`, or why not (logged, rate-limited).
    pub fn admit(self: &Arc<Self>, uid: u32) -> Result<Slot, OverLimit> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mine = open.by_uid.get(&uid).copied().unwrap_or(0);
        let refused = if open.total >= self.total {
            Some(OverLimit::Total(open.total))
        } else if mine >= self.per_uid {
            Some(OverLimit::PerUid { uid, open: mine })
        } else {
            None
        };
        if let Some(why) = refused {
            drop(open);
            self.log_refusal(why);
            return Err(why);
        }
        open.total += 1;
        *open.by_uid.entry(uid).or_default() += 1;
        Ok(Slot { owner: self.clone(), uid })
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn log_refusal(&self, why: OverLimit) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 1000) && self.last_log_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            warn!("closing a Workload API connection at accept: {why} ({n} refused since start)");
        }
    }

    fn release(&self, uid: u32) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_uid.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_uid.remove(&uid);
            }
        }
    }
}

/// One admitted connection; dropping it (when the connection closes) frees the slot.
pub struct Slot {
    owner: Arc<Connections>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.owner.release(self.uid);
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), marked when cut.
pub fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…(+{} bytes)", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_uid_and_total_limits_hold_and_slots_free_on_drop() {
        let limits = WorkloadApiLimits { max_connections: 3, max_per_uid: 2, ..Default::default() };
        let c = Connections::new(&limits);
        let a = c.admit(65534).expect("first");
        let _b = c.admit(65534).expect("second");
        assert_eq!(c.admit(65534).err(), Some(OverLimit::PerUid { uid: 65534, open: 2 }));
        let _d = c.admit(0).expect("another uid still gets in");
        assert_eq!(c.admit(1000).err(), Some(OverLimit::Total(3)));
        drop(a);
        assert!(c.admit(65534).is_ok(), "a closed connection frees its slot");
        assert_eq!(c.refused(), 2);
    }

    #[test]
    fn truncation_keeps_short_strings_and_marks_cut_ones() {
        assert_eq!(truncated("sts", 8), "sts");
        assert_eq!(truncated("abcdefgh", 3), "abc…(+5 bytes)");
        assert_eq!(truncated("ééé", 3), "é…(+4 bytes)", "never splits a character");
    }
}
