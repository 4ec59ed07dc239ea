//! Makes the Workload API usable by gRPC-core clients (py-spiffe, grpc-java, C++).
//!
//! Over a Unix socket those clients send the socket path, %-encoded, as the HTTP/2
//! `:authority`. The `h2` crate under every Rust gRPC server rejects such an authority
//! with PROTOCOL_ERROR (hyperium/h2#487, still open), so every request fails. An authority
//! means nothing on a local socket, so this adapter sits between the socket and h2 and
//! rewrites it to `localhost`, which is what grpc-go sends.
//!
//! Header blocks are HPACK-compressed with per-connection state, so the rewrite decodes
//! each client header block with a decoder that mirrors the client's encoder and encodes
//! it again with an encoder that h2's decoder mirrors. Everything else passes through
//! byte for byte. Anything it cannot parse is passed through untouched from then on, for
//! h2 to judge.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::h2frame::{CONTINUATION, END_HEADERS, FRAME_HEADER, HEADERS, PADDED, PREFACE, split_headers};
/// The peer's default SETTINGS_MAX_FRAME_SIZE; tonic does not raise it.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is not ours to buffer: pass through.
const MAX_BLOCK: usize = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Preface,
    Frames,
    /// Something unexpected: hand the bytes to h2 unchanged.
    Passthrough,
}

/// HEADERS frame awaiting its CONTINUATIONs.
struct Pending {
    stream: [u8; 4],
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    /// The original frames, replayed as-is if the block cannot be rewritten.
    raw: Vec<u8>,
}

/// Pure state machine: bytes from the client in, bytes for h2 out.
pub struct Rewriter {
    mode: Mode,
    input: Vec<u8>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    pending: Option<Pending>,
    /// Header blocks rewritten so far (for tests and logs).
    pub rewritten: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self {
            mode: Mode::Preface,
            input: Vec::new(),
            decoder: Decoder::new(),
            encoder: Encoder::new(),
            pending: None,
            rewritten: 0,
        }
    }
}

impl Rewriter {
    /// Feeds client bytes; appends what h2 should read to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if self.mode == Mode::Passthrough {
            out.extend_from_slice(bytes);
            return;
        }
        self.input.extend_from_slice(bytes);
        loop {
            match self.mode {
                Mode::Passthrough => {
                    out.append(&mut self.input);
                    return;
                }
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    out.extend(self.input.drain(..PREFACE.len()));
                    self.mode = Mode::Frames;
                }
                Mode::Frames => {
                    if self.input.len() < FRAME_HEADER {
                        return;
                    }
                    let len = usize::from(self.input[0]) << 16 | usize::from(self.input[1]) << 8 | usize::from(self.input[2]);
                    if self.input.len() < FRAME_HEADER + len {
                        return;
                    }
                    let frame: Vec<u8> = self.input.drain(..FRAME_HEADER + len).collect();
                    self.frame(frame, out);
                }
            }
        }
    }

    fn frame(&mut self, frame: Vec<u8>, out: &mut Vec<u8>) {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = [frame[5], frame[6], frame[7], frame[8]];
        let payload = &frame[FRAME_HEADER..];
        match kind {
            HEADERS => {
                let Some((priority, fragment)) = split_headers(flags, payload) else {
                    return self.give_up(frame, out);
                };
                let p = Pending { stream, flags, priority, block: fragment.to_vec(), raw: frame.clone() };
                self.pending = Some(p);
            }
            CONTINUATION => {
                let Some(p) = self.pending.as_mut().filter(|p| p.stream == stream) else {
                    return self.give_up(frame, out);
                };
                p.block.extend_from_slice(payload);
                p.raw.extend_from_slice(&frame);
                if p.block.len() > MAX_BLOCK {
                    return self.give_up(Vec::new(), out);
                }
            }
            _ => {
                if self.pending.is_some() {
                    // HTTP/2 forbids frames between HEADERS and its CONTINUATIONs.
                    return self.give_up(frame, out);
                }
                out.extend_from_slice(&frame);
                return;
            }
        }
        if flags & END_HEADERS != 0
            && let Some(p) = self.pending.take() {
                self.rewrite(p, out);
            }
    }

    fn rewrite(&mut self, p: Pending, out: &mut Vec<u8>) {
        let Ok(mut headers) = self.decoder.decode(&p.block) else {
            // Our decoder state no longer mirrors the client's: stop interfering.
            return self.give_up(p.raw, out);
        };
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" {
                *value = b"localhost".to_vec();
            }
        }
        let block = self.encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        self.rewritten += 1;
        write_header_frames(&p, &block, out);
    }

    /// Replays `raw` (and anything pending) unchanged and stops rewriting.
    fn give_up(&mut self, raw: Vec<u8>, out: &mut Vec<u8>) {
        if let Some(p) = self.pending.take() {
            out.extend_from_slice(&p.raw);
        }
        out.extend_from_slice(&raw);
        self.mode = Mode::Passthrough;
    }
}

fn push_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: [u8; 4], payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream);
    out.extend_from_slice(payload);
}

/// One HEADERS frame (plus CONTINUATIONs if the block is large), unpadded.
fn write_header_frames(p: &Pending, block: &[u8], out: &mut Vec<u8>) {
    let mut first = Vec::with_capacity(block.len().min(MAX_FRAME) + 5);
    if let Some(pr) = p.priority {
        first.extend_from_slice(&pr);
    }
    let room = MAX_FRAME - first.len();
    let (head, mut rest) = block.split_at(block.len().min(room));
    first.extend_from_slice(head);
    let keep = p.flags & !(PADDED | END_HEADERS);
    let end = if rest.is_empty() { END_HEADERS } else { 0 };
    push_frame(out, HEADERS, keep | end, p.stream, &first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = tail;
        let end = if rest.is_empty() { END_HEADERS } else { 0 };
        push_frame(out, CONTINUATION, end, p.stream, chunk);
    }
}

/// A stream whose reads pass through a [`Rewriter`].
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    ready: Vec<u8>,
    offset: usize,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, rewriter: Rewriter::default(), ready: Vec::new(), offset: 0 }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if me.offset < me.ready.len() {
                let n = buf.remaining().min(me.ready.len() - me.offset);
                buf.put_slice(&me.ready[me.offset..me.offset + n]);
                me.offset += n;
                if me.offset == me.ready.len() {
                    me.ready.clear();
                    me.offset = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut me.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    // EOF: whatever is buffered was incomplete; h2 gets it and judges.
                    me.ready.append(&mut me.rewriter.input);
                    if me.ready.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => me.rewriter.feed(rb.filled(), &mut me.ready),
                other => return other,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2frame::PRIORITY;

    fn headers_frame(enc: &mut Encoder<'static>, authority: &[u8], flags: u8, pad: u8) -> Vec<u8> {
        let block = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/SpiffeWorkloadAPI/FetchJWTSVID"),
            (b":authority", authority),
            (b"workload.spiffe.io", b"true"),
        ]);
        let mut payload = Vec::new();
        if flags & PADDED != 0 {
            payload.push(pad);
        }
        if flags & PRIORITY != 0 {
            payload.extend_from_slice(&[0, 0, 0, 0, 16]);
        }
        payload.extend_from_slice(&block);
        payload.extend(std::iter::repeat_n(0u8, usize::from(pad)));
        let mut f = Vec::new();
        push_frame(&mut f, HEADERS, flags, [0, 0, 0, 1], &payload);
        f
    }

    /// Decodes what h2 would see: every header block, in order.
    fn h2_view(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert_eq!(&bytes[..PREFACE.len()], PREFACE);
        let mut rest = &bytes[PREFACE.len()..];
        let mut dec = Decoder::new();
        let mut blocks = Vec::new();
        let mut block = Vec::new();
        while rest.len() >= FRAME_HEADER {
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
            if kind == HEADERS || kind == CONTINUATION {
                let (_, frag) = if kind == HEADERS { split_headers(flags, payload).expect("valid") } else { (None, payload) };
                block.extend_from_slice(frag);
                if flags & END_HEADERS != 0 {
                    blocks.push(dec.decode(&block).expect("h2 can decode"));
                    block.clear();
                }
            }
            rest = &rest[FRAME_HEADER + len..];
        }
        blocks
    }

    #[test]
    fn rewrites_the_authority_across_requests_and_keeps_hpack_state_consistent() {
        let mut client = Encoder::new();
        let mut wire = PREFACE.to_vec();
        push_frame(&mut wire, 0x4, 0, [0; 4], &[]); // SETTINGS
        wire.extend(headers_frame(&mut client, b"%2Frun%2Fsigil%2Fworkload.sock", END_HEADERS, 0));
        push_frame(&mut wire, 0x0, 0x1, [0, 0, 0, 1], b"\0\0\0\0\x02hi"); // DATA
        // Second request reuses the client's dynamic table entries.
        wire.extend(headers_frame(&mut client, b"%2Frun%2Fsigil%2Fworkload.sock", END_HEADERS | PADDED | PRIORITY, 3));

        // Feed it in awkward pieces, as a socket would.
        let mut rw = Rewriter::default();
        let mut out = Vec::new();
        for chunk in wire.chunks(7) {
            rw.feed(chunk, &mut out);
        }
        assert_eq!(rw.rewritten, 2);
        let blocks = h2_view(&out);
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            let auth = b.iter().find(|(n, _)| n == b":authority").expect("authority");
            assert_eq!(auth.1, b"localhost");
            assert!(b.iter().any(|(n, v)| n == b"workload.spiffe.io" && v == b"true"));
            assert!(b.iter().any(|(n, v)| n == b":path" && v == b"/SpiffeWorkloadAPI/FetchJWTSVID"));
        }
        // The DATA frame is passed through unchanged.
        assert!(out.windows(7).any(|w| w == b"\0\0\0\0\x02hi"));
    }

    #[test]
    fn continuation_frames_are_joined() {
        let mut client = Encoder::new();
        let full = headers_frame(&mut client, b"%2Fa", END_HEADERS, 0);
        let block = &full[FRAME_HEADER..];
        let (a, b) = block.split_at(block.len() / 2);
        let mut wire = PREFACE.to_vec();
        push_frame(&mut wire, HEADERS, 0, [0, 0, 0, 1], a);
        push_frame(&mut wire, CONTINUATION, END_HEADERS, [0, 0, 0, 1], b);
        let mut rw = Rewriter::default();
        let mut out = Vec::new();
        rw.feed(&wire, &mut out);
        let blocks = h2_view(&out);
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].iter().any(|(n, v)| n == b":authority" && v == b"localhost"));
    }

    #[test]
    fn garbage_and_http1_pass_through_untouched() {
        for input in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"\xff\xfe garbage", b""] {
            let mut rw = Rewriter::default();
            let mut out = Vec::new();
            rw.feed(input, &mut out);
            assert_eq!(out, input);
        }
        // A valid preface followed by an undecodable header block.
        let mut wire = PREFACE.to_vec();
        push_frame(&mut wire, HEADERS, END_HEADERS, [0, 0, 0, 1], &[0xff, 0xff, 0xff]);
        let mut rw = Rewriter::default();
        let mut out = Vec::new();
        rw.feed(&wire, &mut out);
        assert_eq!(out, wire);
        // Truncated padding never panics.
        let mut wire = PREFACE.to_vec();
        push_frame(&mut wire, HEADERS, END_HEADERS | PADDED, [0, 0, 0, 1], &[200, 1]);
        let mut rw = Rewriter::default();
        let mut out = Vec::new();
        rw.feed(&wire, &mut out);
        assert_eq!(out, wire);
    }
}
