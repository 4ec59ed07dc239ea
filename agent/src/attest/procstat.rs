//! The four fields of `/proc/<pid>/stat` attestation needs, read without parsing the
//! other fifty: the exec path reads this file twice per exec, and the procfs crate's full
//! parse was a tenth of the agent's CPU in an exec loop.

use std::io::Read;

use procfs::{ProcResult, process::Process};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub ppid: i32,
    /// `task->flags` (PF_KTHREAD and friends).
    pub flags: u32,
    /// Start in clock ticks since boot: with the pid, the process instance.
    pub starttime: u64,
}

/// Reads the process's stat file through its procfs handle (a reused pid fails the open
/// instead of answering for the new process).
pub fn read(p: &Process) -> ProcResult<Stat> {
    let mut buf = Vec::with_capacity(512);
    p.open_relative("stat")?.read_to_end(&mut buf)?;
    parse(&buf).ok_or_else(|| procfs::ProcError::Incomplete(Some(format!("/proc/{}/stat", p.pid).into())))
}

/// Parses a stat line. The command name may hold spaces and parentheses, so it runs from
/// the first `(` to the last `)`; the numbered fields follow (`man 5 proc`).
pub fn parse(text: &[u8]) -> Option<Stat> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    let comm = String::from_utf8_lossy(text.get(open + 1..close)?).into_owned();
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    // Fields 3 (state) onwards: ppid is field 4, flags 9, starttime 22.
    let mut fields = rest.split_ascii_whitespace();
    let ppid = fields.nth(1)?.parse().ok()?;
    let flags = fields.nth(4)?.parse().ok()?;
    let starttime = fields.nth(12)?.parse().ok()?;
    Some(Stat { comm, ppid, flags, starttime })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_procfs_crate_on_this_process() {
        let me = Process::myself().expect("self");
        let full = me.stat().expect("stat");
        let light = read(&me).expect("light stat");
        assert_eq!(light, Stat { comm: full.comm, ppid: full.ppid, flags: full.flags, starttime: full.starttime });
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line = b"42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        let s = parse(line).expect("parsed");
        assert_eq!(s, Stat { comm: "a) b (c)".into(), ppid: 7, flags: 4194560, starttime: 12345 });
        assert_eq!(parse(b"42 (unterminated S 7"), None);
        assert_eq!(parse(b"42 (x) S 7 42"), None, "too short");
        assert_eq!(parse(b""), None);
    }
}
