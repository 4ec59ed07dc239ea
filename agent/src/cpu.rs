//! CPU time the event thread spends per kernel event, by kind: the agent's cost as the
//! node pays it, read from the thread's CPU clock around the handling of each event
//! (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`: nanoseconds, and cheaper than `getrusage`,
//! which the event loop paid twice per event).
//! Hashing on the pool's threads is not in these figures (it is in `hash.hash_micros`).
//!
//! The thread CPU clock is a system call (the vDSO serves only wall clocks): two per event
//! were about a fifth of the event thread's time in a TLS keep-alive loop. So the first
//! [`TIMED_FIRST`] events of each kind are timed, then one in [`TIMED_EVERY`]; the
//! figures are the timed events' average, and `cpu_us` that average times all events.

use std::collections::BTreeMap;

use serde::Serialize;

/// User + system CPU time of the calling thread, in nanoseconds (0 if unavailable).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// CPU spent on one kind of event so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuCost {
    pub events: u64,
    pub cpu_us: u64,
    pub us_per_event: f64,
}

/// Events of each kind timed before sampling starts.
pub const TIMED_FIRST: u64 = 64;
/// Then one event in this many is timed.
pub const TIMED_EVERY: u64 = 8;

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    events: u64,
    timed: u64,
    timed_ns: u64,
}

/// Accumulates thread CPU time by event kind (a fixed vocabulary: `exec`, `exit`, ...).
#[derive(Debug, Default)]
pub struct CpuByKind(BTreeMap<&'static str, Tally>);

impl CpuByKind {
    /// Counts an event of `kind`; true when it is to be timed (then [`Self::timed`]).
    pub fn count(&mut self, kind: &'static str) -> bool {
        let t = self.0.entry(kind).or_default();
        t.events += 1;
        t.events <= TIMED_FIRST || t.events.is_multiple_of(TIMED_EVERY)
    }

    /// The CPU time of a counted event that was to be timed.
    pub fn timed(&mut self, kind: &'static str, cpu_ns: u64) {
        let t = self.0.entry(kind).or_default();
        t.timed += 1;
        t.timed_ns += cpu_ns;
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, CpuCost> {
        self.0
            .iter()
            .map(|(k, t)| {
                let us_per_event = if t.timed == 0 { 0.0 } else { t.timed_ns as f64 / 1000.0 / t.timed as f64 };
                (*k, CpuCost { events: t.events, cpu_us: (us_per_event * t.events as f64) as u64, us_per_event })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_by_kind_and_thread_time_advances_with_work() {
        let mut c = CpuByKind::default();
        for ns in [300_000, 100_000] {
            assert!(c.count("exec"));
            c.timed("exec", ns);
        }
        assert!(c.count("exit"));
        c.timed("exit", 5_000);
        let s = c.snapshot();
        assert_eq!(s["exec"], CpuCost { events: 2, cpu_us: 400, us_per_event: 200.0 });
        assert_eq!(s["exit"].events, 1);
        let before = thread_cpu_ns();
        let mut x = 0u64;
        while thread_cpu_ns() < before + 2_000_000 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(thread_cpu_ns() >= before + 2_000_000, "{x}");
    }

    #[test]
    fn after_the_first_events_of_a_kind_one_in_eight_is_timed_and_the_average_covers_all() {
        let mut c = CpuByKind::default();
        let timed = (0..TIMED_FIRST + 80).filter(|_| c.count("data")).count() as u64;
        assert_eq!(timed, TIMED_FIRST + 80 / TIMED_EVERY);
        for _ in 0..timed {
            c.timed("data", 2_000);
        }
        assert_eq!(c.snapshot()["data"], CpuCost { events: TIMED_FIRST + 80, cpu_us: 2 * (TIMED_FIRST + 80), us_per_event: 2.0 });
        // Another kind starts its own count.
        assert!(c.count("exec"));
    }
}
