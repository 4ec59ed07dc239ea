//! The PROXY protocol header (HAProxy's specification, versions 1 and 2): the bytes a
//! client sends before its first request to a server that accepts them (nginx's
//! `listen ... proxy_protocol`, HAProxy's `accept-proxy`, the backends of cloud load
//! balancers). A server that accepts it skips it and reads requests after it, so to the
//! HTTP parser it is a preamble to skip, never a reason to stop watching the connection:
//! a workload could otherwise open its connection with one and send its credentials
//! unseen.

/// What the start of a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A whole header of `len` bytes, followed by `then` more bytes that belong to it
    /// (version 2's addresses and TLVs, which may be longer than what was captured).
    Complete { len: usize, then: u64 },
    /// The start of a header: what follows decides.
    Partial,
    /// Not a PROXY protocol header.
    None,
}

/// Version 1: a text line, at most 107 bytes with its CRLF.
const V1_PREFIX: &[u8] = b"PROXY ";
const V1_MAX: usize = 107;
/// Version 2: a binary header, 16 bytes and the length of what follows.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED: usize = 16;

/// The header `buf` (a connection's first bytes) starts with.
pub fn header(buf: &[u8]) -> Header {
    if buf.starts_with(V2_SIGNATURE) {
        // The version is the high nibble of the 13th byte; only 2 exists.
        if buf.get(V2_SIGNATURE.len()).is_some_and(|b| b >> 4 != 2) {
            return Header::None;
        }
        return match buf.get(14..V2_FIXED) {
            Some(&[hi, lo]) => Header::Complete { len: V2_FIXED, then: u64::from(u16::from_be_bytes([hi, lo])) },
            _ => Header::Partial,
        };
    }
    if buf.starts_with(V1_PREFIX) {
        // Lenient on the line end (LF alone ends it too): an auditor must not be stricter
        // than the most lenient server.
        return match buf.iter().take(V1_MAX).position(|&b| b == b'\n') {
            Some(end) => Header::Complete { len: end + 1, then: 0 },
            None if buf.len() < V1_MAX => Header::Partial,
            None => Header::None,
        };
    }
    if !buf.is_empty() && (V2_SIGNATURE.starts_with(buf) || V1_PREFIX.starts_with(buf)) {
        return Header::Partial;
    }
    Header::None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_are_recognised_whole_and_in_part() {
        let v1 = b"PROXY TCP4 10.0.0.1 10.0.0.2 51000 80\r\nGET / HTTP/1.1\r\n";
        assert_eq!(header(v1), Header::Complete { len: 39, then: 0 });
        assert_eq!(header(b"PROXY UNKNOWN\r\n"), Header::Complete { len: 15, then: 0 });
        assert_eq!(header(b"PROXY UNKNOWN\n"), Header::Complete { len: 14, then: 0 });
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        assert_eq!(header(&v2), Header::Complete { len: 16, then: 12 });
        for part in [&b"P"[..], b"PROX", b"PROXY ", b"PROXY TCP4 10.0.0.1", b"\r\n", b"\r\n\r\n\0", &v2[..14]] {
            assert_eq!(header(part), Header::Partial, "{part:?}");
        }
    }

    #[test]
    fn what_no_server_takes_as_a_header_is_not_one() {
        assert_eq!(header(b"GET / HTTP/1.1\r\n"), Header::None);
        assert_eq!(header(b"PROPFIND / HTTP/1.1\r\n"), Header::None, "a WebDAV method shares the first three bytes");
        assert_eq!(header(&[b"PROXY ".as_slice(), &[b'x'; 200]].concat()), Header::None, "a version 1 line is at most 107 bytes");
        let mut v3 = V2_SIGNATURE.to_vec();
        v3.extend_from_slice(&[0x31, 0x11, 0x00, 0x0c]);
        assert_eq!(header(&v3), Header::None, "there is no version 3");
        assert_eq!(header(b""), Header::None);
    }
}
