//! Conversions between the kernel's boot-relative clocks and wall-clock time.

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Translates boot-relative nanoseconds (eBPF `ktime_get_boot_ns`, procfs start ticks)
/// into wall-clock time, using one offset measured at start-up.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock nanoseconds at boot.
    boot_wall_ns: i128,
    ticks_per_sec: u64,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    pub fn new() -> Self {
        let boot_wall_ns = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_BOOTTIME);
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self { boot_wall_ns, ticks_per_sec: u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100) }
    }

    pub fn now_boot_ns() -> u64 {
        u64::try_from(clock_ns(libc::CLOCK_BOOTTIME)).unwrap_or(0)
    }

    pub fn ticks_to_boot_ns(&self, ticks: u64) -> u64 {
        ticks.saturating_mul(1_000_000_000 / self.ticks_per_sec)
    }

    pub fn boot_ns_to_ticks(&self, ns: u64) -> u64 {
        ns / (1_000_000_000 / self.ticks_per_sec)
    }

    /// Length of one tick: the resolution of procfs start times.
    pub fn tick_ns(&self) -> u64 {
        1_000_000_000 / self.ticks_per_sec
    }

    pub fn rfc3339(&self, boot_ns: u64) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(self.boot_wall_ns + boot_ns as i128).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_trip_and_format() {
        let c = Clock { boot_wall_ns: 1_700_000_000_000_000_000, ticks_per_sec: 100 };
        assert_eq!(c.ticks_to_boot_ns(150), 1_500_000_000);
        assert_eq!(c.boot_ns_to_ticks(1_509_999_999), 150);
        assert_eq!(c.rfc3339(0), "2023-11-14T22:13:20Z");
        assert_eq!(c.rfc3339(1_500_000_000), "2023-11-14T22:13:21.5Z");
    }

    #[test]
    fn live_clock_is_after_boot() {
        let c = Clock::new();
        assert!(Clock::now_boot_ns() > 0);
        assert!(c.rfc3339(Clock::now_boot_ns()).starts_with("20"));
    }
}
