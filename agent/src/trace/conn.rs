//! Which remote endpoint each socket talks to.
//!
//! Learned from the connect tracepoint; for sockets connected before the agent started
//! (or whose connect was lost), resolved once from procfs (/proc/<pid>/fd -> socket inode
//! -> /proc/<pid>/net/tcp{,6}).

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use agent_common::ConnectEvent;

/// Connections remembered at most; the oldest are forgotten first.
const CAPACITY: usize = 65_536;

#[derive(Default)]
pub struct ConnTable {
    conns: HashMap<(u32, i32), SocketAddr>,
    order: VecDeque<(u32, i32)>,
}

pub fn addr_of(ev: &ConnectEvent) -> Option<SocketAddr> {
    let ip = match ev.family {
        2 => IpAddr::V4(Ipv4Addr::new(ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3])),
        10 => {
            let v6 = Ipv6Addr::from(ev.addr);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, ev.port))
}

impl ConnTable {
    pub fn on_connect(&mut self, ev: &ConnectEvent) {
        if let Some(addr) = addr_of(ev) {
            self.insert(ev.header.pid, ev.fd, addr);
        }
    }

    fn insert(&mut self, tgid: u32, fd: i32, addr: SocketAddr) {
        if self.conns.insert((tgid, fd), addr).is_none() {
            self.order.push_back((tgid, fd));
        }
        while self.conns.len() > CAPACITY {
            match self.order.pop_front() {
                Some(k) => {
                    self.conns.remove(&k);
                }
                None => break,
            }
        }
    }

    /// The remote address of (tgid, fd), from the table or procfs.
    pub fn destination(&mut self, tgid: u32, fd: i32) -> Option<SocketAddr> {
        if fd < 0 {
            return None;
        }
        if let Some(a) = self.conns.get(&(tgid, fd)) {
            return Some(*a);
        }
        let addr = from_procfs(tgid, fd)?;
        self.insert(tgid, fd, addr);
        Some(addr)
    }
}

fn from_procfs(tgid: u32, fd: i32) -> Option<SocketAddr> {
    let link = std::fs::read_link(format!("/proc/{tgid}/fd/{fd}")).ok()?;
    let inode: u64 = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()?;
    let proc = procfs::process::Process::new(tgid as i32).ok()?;
    let v4 = proc.tcp().unwrap_or_default();
    let v6 = proc.tcp6().unwrap_or_default();
    v4.into_iter().chain(v6).find(|e| e.inode == inode).map(|e| e.remote_address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::{EventHeader, EventKind};

    fn ev(family: u16, addr: [u8; 16], port: u16) -> ConnectEvent {
        ConnectEvent {
            header: EventHeader { kind: EventKind::Connect as u32, pid: 7, boot_ns: 0, cgroup_id: 0, start_ns: 0 },
            fd: 3,
            family,
            port,
            addr,
            result: 0,
            _pad0: 0,
        }
    }

    #[test]
    fn decodes_v4_v6_and_mapped_addresses() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(addr_of(&ev(2, a, 443)), Some("127.0.0.1:443".parse().expect("addr")));
        let v6: [u8; 16] = "2001:db8::1".parse::<Ipv6Addr>().expect("v6").octets();
        assert_eq!(addr_of(&ev(10, v6, 8443)), Some("[2001:db8::1]:8443".parse().expect("addr")));
        let mapped = "::ffff:10.1.2.3".parse::<Ipv6Addr>().expect("v6").octets();
        assert_eq!(addr_of(&ev(10, mapped, 80)), Some("10.1.2.3:80".parse().expect("addr")));
        assert_eq!(addr_of(&ev(1, a, 0)), None);
    }

    #[test]
    fn remembers_and_replaces_on_reconnect() {
        let mut t = ConnTable::default();
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[10, 0, 0, 1]);
        t.on_connect(&ev(2, a, 443));
        assert_eq!(t.destination(7, 3), Some("10.0.0.1:443".parse().expect("addr")));
        a[3] = 2;
        t.on_connect(&ev(2, a, 80));
        assert_eq!(t.destination(7, 3), Some("10.0.0.2:80".parse().expect("addr")));
        assert_eq!(t.destination(7, -1), None);
    }
}
