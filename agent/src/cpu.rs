//! CPU time the event thread spends per kernel event, by kind: the agent's cost as the
//! node pays it, read from the thread's CPU clock around the handling of each event
//! (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`: nanoseconds, and cheaper than `getrusage`,
//! which the event loop paid twice per event).
//! Hashing on the pool's threads is not in these figures (it is in `hash.hash_micros`).

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

/// Accumulates thread CPU time by event kind (a fixed vocabulary: `exec`, `exit`, ...).
#[derive(Debug, Default)]
pub struct CpuByKind(BTreeMap<&'static str, (u64, u64)>);

impl CpuByKind {
    pub fn add(&mut self, kind: &'static str, cpu_ns: u64) {
        let e = self.0.entry(kind).or_default();
        e.0 += 1;
        e.1 += cpu_ns;
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, CpuCost> {
        self.0
            .iter()
            .map(|(k, &(events, cpu_ns))| {
                let us_per_event = if events == 0 { 0.0 } else { cpu_ns as f64 / 1000.0 / events as f64 };
                (*k, CpuCost { events, cpu_us: cpu_ns / 1000, us_per_event })
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
        c.add("exec", 300_000);
        c.add("exec", 100_000);
        c.add("exit", 5_000);
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
}
