//! Ring-buffer bytes -> typed kernel events. Nothing from the kernel is trusted to be the
//! right size: a short or unknown record is an error, never a panic or a misread.

use agent_common::{ConnectEvent, DataEvent, EventHeader, EventKind, ExecEvent, ExitEvent, FileOpenEvent};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need} its kind needs")]
    Short { got: usize, need: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

/// Decoded by value: an event lives only until it is attested, so the size difference
/// between variants costs a copy, not memory.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum KernelEvent {
    Exec(ExecEvent),
    Exit(ExitEvent),
    Connect(ConnectEvent),
    /// Boxed: 4 KiB of captured bytes.
    Data(Box<DataEvent>),
    FileOpen(FileOpenEvent),
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short { got: bytes.len(), need });
    }
    // SAFETY: length checked; T is a repr(C) plain-data type valid for any bit pattern,
    // and read_unaligned copes with the ring buffer's 8-byte (not T-) alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl KernelEvent {
    /// The kind's name in stats and metrics (a fixed vocabulary).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Exec(_) => "exec",
            Self::Exit(_) => "exit",
            Self::Connect(_) => "connect",
            Self::Data(_) => "data",
            Self::FileOpen(_) => "file_open",
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let header: EventHeader = read(bytes)?;
        match EventKind::from_u32(header.kind) {
            Some(EventKind::Exec) => read(bytes).map(KernelEvent::Exec),
            Some(EventKind::Exit) => read(bytes).map(KernelEvent::Exit),
            Some(EventKind::Connect) => read(bytes).map(KernelEvent::Connect),
            Some(EventKind::Data) => read(bytes).map(|d| KernelEvent::Data(Box::new(d))),
            Some(EventKind::FileOpen) => read(bytes).map(KernelEvent::FileOpen),
            None => Err(DecodeError::UnknownKind(header.kind)),
        }
    }
}

/// A NUL-padded kernel string as UTF-8 (lossy: file names are bytes, not text).
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::{COMM_LEN, PATH_LEN};

    fn exec_bytes() -> Vec<u8> {
        let mut ev = ExecEvent {
            header: EventHeader { kind: EventKind::Exec as u32, pid: 42, boot_ns: 7, cgroup_id: 9, start_ns: 3 },
            ppid: 1,
            uid: 0,
            gid: 0,
            filename_len: 9,
            filename_truncated: 0,
            quiet: 0,
            fork_boot_ns: 5,
            exe: Default::default(),
            comm: [0; COMM_LEN],
            filename: [0; PATH_LEN],
        };
        ev.filename[..9].copy_from_slice(b"/bin/true");
        // SAFETY: viewing a plain-data struct as bytes.
        unsafe { std::slice::from_raw_parts((&ev as *const ExecEvent).cast::<u8>(), std::mem::size_of::<ExecEvent>()) }.to_vec()
    }

    #[test]
    fn decodes_exec_even_when_unaligned() {
        let mut buf = vec![0u8];
        buf.extend(exec_bytes());
        match KernelEvent::decode(&buf[1..]) {
            Ok(KernelEvent::Exec(e)) => {
                assert_eq!(e.header.pid, 42);
                assert_eq!(e.header.cgroup_id, 9);
                assert_eq!(c_str(&e.filename), "/bin/true");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        let bytes = exec_bytes();
        assert_eq!(KernelEvent::decode(&bytes[..10]).err(), Some(DecodeError::Short { got: 10, need: std::mem::size_of::<EventHeader>() }));
        assert!(matches!(KernelEvent::decode(&bytes[..100]), Err(DecodeError::Short { got: 100, .. })));
        let mut unknown = bytes.clone();
        unknown[..4].copy_from_slice(&77u32.to_le_bytes());
        assert_eq!(KernelEvent::decode(&unknown).err(), Some(DecodeError::UnknownKind(77)));
        assert_eq!(KernelEvent::decode(&[]).err(), Some(DecodeError::Short { got: 0, need: std::mem::size_of::<EventHeader>() }));
    }

    #[test]
    fn c_str_stops_at_nul_and_tolerates_invalid_utf8() {
        assert_eq!(c_str(b"ab\0cd"), "ab");
        assert_eq!(c_str(b"abc"), "abc");
        assert_eq!(c_str(&[0xff, b'x', 0]), "\u{fffd}x");
    }
}
