//! HTTP/1.1 chunked transfer coding (RFC 9112 section 7.1), decoded from bytes that may
//! still be arriving. Shared by request bodies (`http`) and responses (`response`).

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("bad chunked transfer coding")]
    Bad,
    #[error("chunked body larger than its limit")]
    TooLarge,
}

/// Decodes a chunked body from `rest`: `Ok(None)` until its last chunk and trailer
/// section have arrived; then the body and how many bytes of `rest` the coding took.
/// A body (or one chunk) over `limit` bytes is an error, so nothing unbounded is held.
pub fn decode(mut rest: &[u8], limit: usize) -> Result<Option<(Vec<u8>, usize)>, ChunkError> {
    let start = rest.len();
    let mut body = Vec::new();
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ChunkError::Bad),
        };
        rest = rest.get(size_len..).unwrap_or_default();
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(end) = rest.iter().position(|&b| b == b'\n') else { return Ok(None) };
                let line = rest.get(..end).unwrap_or_default();
                rest = rest.get(end + 1..).unwrap_or_default();
                if line.is_empty() || line == b"\r" {
                    return Ok(Some((body, start - rest.len())));
                }
            }
        }
        let size = usize::try_from(size).map_err(|_| ChunkError::TooLarge)?;
        if size > limit.saturating_sub(body.len()) {
            return Err(ChunkError::TooLarge);
        }
        let Some(data) = rest.get(..size) else { return Ok(None) };
        body.extend_from_slice(data);
        rest = rest.get(size..).unwrap_or_default();
        match rest {
            [b'\r', b'\n', tail @ ..] => rest = tail,
            [] | [b'\r'] => return Ok(None),
            _ => return Err(ChunkError::Bad),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_whole_waits_for_more_and_refuses_bad_or_large() {
        let coded = b"5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\nNEXT";
        assert_eq!(decode(coded, 100), Ok(Some((b"hello world".to_vec(), coded.len() - 4))));
        for cut in 0..coded.len() - 4 {
            assert_eq!(decode(&coded[..cut], 100), Ok(None), "cut at {cut}");
        }
        assert_eq!(decode(b"zz\r\n", 100), Err(ChunkError::Bad));
        assert_eq!(decode(b"5\r\nhelloXX", 100), Err(ChunkError::Bad));
        assert_eq!(decode(b"5\r\nhello\r\n6\r\n", 8), Err(ChunkError::TooLarge));
        assert_eq!(decode(b"ffffffffffffffff\r\n", 8), Err(ChunkError::TooLarge));
    }
}
