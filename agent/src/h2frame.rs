//! HTTP/2 frame layout (RFC 9113), shared by the two places that read client HTTP/2
//! bytes: the Workload API's `:authority` rewriter and credential-use request recovery.

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length (3), type (1), flags (1), stream id (4).
pub const FRAME_HEADER: usize = 9;

pub const HEADERS: u8 = 0x1;
pub const PUSH_PROMISE: u8 = 0x5;
pub const CONTINUATION: u8 = 0x9;

pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

/// Splits a HEADERS payload into its priority fields (if flagged) and the header-block
/// fragment without padding. None when the payload is too short for what its flags say.
pub fn split_headers(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut body = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, rest) = body.split_first()?;
        pad = usize::from(n);
        body = rest;
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        priority = Some(<[u8; 5]>::try_from(body.get(..5)?).ok()?);
        body = body.get(5..)?;
    }
    let end = body.len().checked_sub(pad)?;
    Some((priority, &body[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_padding_and_priority_and_refuses_short_payloads() {
        assert_eq!(split_headers(0, b"abc"), Some((None, &b"abc"[..])));
        assert_eq!(split_headers(PADDED, b"\x02abcXX"), Some((None, &b"abc"[..])));
        assert_eq!(split_headers(PRIORITY, b"12345abc"), Some((Some(*b"12345"), &b"abc"[..])));
        assert_eq!(split_headers(PADDED | PRIORITY, b"\x0112345abcX"), Some((Some(*b"12345"), &b"abc"[..])));
        assert_eq!(split_headers(PADDED, b"\x09ab"), None, "padding longer than the payload");
        assert_eq!(split_headers(PRIORITY, b"123"), None);
        assert_eq!(split_headers(PADDED, b""), None);
    }
}
