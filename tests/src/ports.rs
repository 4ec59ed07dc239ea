//! Loopback ports for the servers a test (or a bench) starts, picked before the server
//! binds them.
//!
//! A port from `bind(0)` is in the kernel's ephemeral range: between the pick and the
//! server's bind, any outgoing connection on the machine (a test's client, an agent
//! reaching its collector) may be given it as its local port, and another thread's
//! `bind(0)` may be handed the same port again once the probe is closed. Ports here come
//! from below that range, which the kernel never hands out by itself, and each is handed
//! out once per process. Shared, by `#[path]`, between the integration tests and `cargo
//! xtask` (std only).

use std::{
    net::TcpListener,
    sync::atomic::{AtomicU32, Ordering},
};

/// The lowest port handed out: above the registered services tests might meet.
const FIRST: u16 = 20_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Where the kernel's ephemeral range starts (32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
}

/// A loopback port nobody listens on now, not handed out before by this process.
pub fn free_port() -> std::io::Result<u16> {
    let end = ephemeral_start();
    if end <= FIRST {
        return Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    }
    let span = u32::from(end - FIRST);
    // Processes start at different places, so two test binaries (or a bench beside the
    // tests) rarely walk the same ports; a port still in use is skipped either way.
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = FIRST + ((offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports from many threads at once are distinct, outside the kernel's own range, and
    /// free when handed out.
    #[test]
    fn ports_are_handed_out_once_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| (0..50).map(|_| free_port().expect("a port")).collect::<Vec<_>>())).collect();
            handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
        });
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        let end = ephemeral_start();
        assert!(ports.iter().all(|p| (FIRST..end).contains(p)), "{ports:?} not in {FIRST}..{end}");
        let last = *ports.last().expect("ports");
        TcpListener::bind(("127.0.0.1", last)).expect("the port is free");
    }
}
