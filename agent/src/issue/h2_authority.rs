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
//!
//! The rewriter runs *before* h2, so h2's own limits do not protect it: it enforces the
//! same ones itself ([`Refused`]). A frame longer than h2's maximum frame size, an HPACK
//! dynamic table larger than h2 advertises, or a header block that decodes to more than
//! h2's header list limit closes the connection. Without these bounds one small HEADERS
//! frame that references a large table entry thousands of times (an HPACK bomb) makes
//! the agent allocate gigabytes.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::h2frame::{CONTINUATION, END_HEADERS, FRAME_HEADER, HEADERS, PADDED, PREFACE, split_headers};
/// h2's SETTINGS_MAX_FRAME_SIZE (the protocol default; tonic does not raise it). A
/// longer frame is a protocol error h2 would refuse, so it is never buffered here.
pub const MAX_FRAME: usize = 16_384;
/// h2's SETTINGS_HEADER_TABLE_SIZE (the protocol default): a client may not grow its
/// HPACK dynamic table beyond what the server advertised.
pub const MAX_TABLE: usize = 4_096;
/// hyper's SETTINGS_MAX_HEADER_LIST_SIZE, which tonic keeps: the decoded size of one
/// header block, counted as RFC 9113 does (name + value + 32 per field). The encoded
/// block can never usefully be larger, so that is bounded by the same number.
pub const MAX_HEADER_LIST: usize = 16 * 1024;

/// Why the rewriter closed a connection instead of handing it to h2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a frame of {0} bytes exceeds the maximum frame size of {MAX_FRAME}")]
    FrameTooLarge(usize),
    #[error("a header block of more than {MAX_HEADER_LIST} encoded bytes")]
    BlockTooLarge,
    #[error("an HPACK dynamic table size update beyond {MAX_TABLE} bytes")]
    TableTooLarge,
    #[error("a header block that decodes to more than {MAX_HEADER_LIST} bytes (HPACK amplification)")]
    HeaderListTooLarge,
}

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Preface,
    Frames,
    /// Something unexpected: hand the bytes to h2 unchanged.
    Passthrough,
}

/// A decoded header block: (name, value) pairs.
type HeaderList = Vec<(Vec<u8>, Vec<u8>)>;

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
            decoder: {
                let mut d = Decoder::new();
                d.set_max_allowed_table_size(MAX_TABLE);
                d
            },
            encoder: Encoder::new(),
            pending: None,
            rewritten: 0,
        }
    }
}

impl Rewriter {
    /// Feeds client bytes; appends what h2 should read to `out`. An error means the
    /// connection must be closed: nothing more may be fed.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Refused> {
        if self.mode == Mode::Passthrough {
            out.extend_from_slice(bytes);
            return Ok(());
        }
        self.input.extend_from_slice(bytes);
        loop {
            match self.mode {
                Mode::Passthrough => {
                    out.append(&mut self.input);
                    return Ok(());
                }
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    out.extend(self.input.drain(..PREFACE.len()));
                    self.mode = Mode::Frames;
                }
                Mode::Frames => {
                    if self.input.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = usize::from(self.input[0]) << 16 | usize::from(self.input[1]) << 8 | usize::from(self.input[2]);
                    if len > MAX_FRAME {
                        self.input = Vec::new();
                        return Err(Refused::FrameTooLarge(len));
                    }
                    if self.input.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let frame: Vec<u8> = self.input.drain(..FRAME_HEADER + len).collect();
                    self.frame(frame, out)?;
                }
            }
        }
    }

    fn frame(&mut self, frame: Vec<u8>, out: &mut Vec<u8>) -> Result<(), Refused> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = [frame[5], frame[6], frame[7], frame[8]];
        let payload = &frame[FRAME_HEADER..];
        match kind {
            HEADERS => {
                let Some((priority, fragment)) = split_headers(flags, payload) else {
                    self.give_up(frame, out);
                    return Ok(());
                };
                let p = Pending { stream, flags, priority, block: fragment.to_vec(), raw: frame.clone() };
                self.pending = Some(p);
            }
            CONTINUATION => {
                let Some(p) = self.pending.as_mut().filter(|p| p.stream == stream) else {
                    self.give_up(frame, out);
                    return Ok(());
                };
                p.block.extend_from_slice(payload);
                p.raw.extend_from_slice(&frame);
            }
            _ => {
                if self.pending.is_some() {
                    // HTTP/2 forbids frames between HEADERS and its CONTINUATIONs.
                    self.give_up(frame, out);
                    return Ok(());
                }
                out.extend_from_slice(&frame);
                return Ok(());
            }
        }
        if self.pending.as_ref().is_some_and(|p| p.block.len() > MAX_HEADER_LIST) {
            self.pending = None;
            return Err(Refused::BlockTooLarge);
        }
        if flags & END_HEADERS != 0
            && let Some(p) = self.pending.take()
        {
            self.rewrite(p, out)?;
        }
        Ok(())
    }

    /// Decodes one block within [`MAX_HEADER_LIST`]: indexed fields are borrowed from the
    /// table by the decoder and copied here only while the budget lasts.
    fn decode_bounded(&mut self, block: &[u8]) -> Result<Option<HeaderList>, Refused> {
        let mut headers = Vec::new();
        let mut budget = MAX_HEADER_LIST;
        let mut over = false;
        let decoded = self.decoder.decode_with_cb(block, |name, value| {
            let size = name.len().saturating_add(value.len()).saturating_add(32);
            match budget.checked_sub(size) {
                Some(left) if !over => {
                    budget = left;
                    headers.push((name.into_owned(), value.into_owned()));
                }
                _ => over = true,
            }
        });
        match decoded {
            _ if over => Err(Refused::HeaderListTooLarge),
            Err(loona_hpack::decoder::DecoderError::InvalidMaxDynamicSize) => Err(Refused::TableTooLarge),
            Err(_) => Ok(None),
            Ok(()) => Ok(Some(headers)),
        }
    }

    fn rewrite(&mut self, p: Pending, out: &mut Vec<u8>) -> Result<(), Refused> {
        let Some(mut headers) = self.decode_bounded(&p.block)? else {
            // Our decoder state no longer mirrors the client's: stop interfering.
            self.give_up(p.raw, out);
            return Ok(());
        };
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" {
                *value = b"localhost".to_vec();
            }
        }
        let block = self.encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        self.rewritten += 1;
        write_header_frames(&p, &block, out);
        Ok(())
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

/// A stream whose reads pass through a [`Rewriter`]. Once the rewriter refuses the
/// client's bytes every read fails with that [`Refused`] (as an `InvalidData` error), so
/// the server closes the connection.
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    ready: Vec<u8>,
    offset: usize,
    refused: Option<Refused>,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, rewriter: Rewriter::default(), ready: Vec::new(), offset: 0, refused: None }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if let Some(r) = &me.refused {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, r.clone())));
            }
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
                Poll::Ready(Ok(())) => {
                    if let Err(r) = me.rewriter.feed(rb.filled(), &mut me.ready) {
                        // What was rewritten before the refusal is dropped with the connection.
                        me.ready = Vec::new();
                        me.offset = 0;
                        me.refused = Some(r);
                    }
                }
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
            rw.feed(chunk, &mut out).expect("well-behaved client");
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
        rw.feed(&wire, &mut out).expect("well-behaved client");
        let blocks = h2_view(&out);
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].iter().any(|(n, v)| n == b":authority" && v == b"localhost"));
    }

    /// Counts the bytes this thread has live on the heap, and their peak, so a test can
    /// bound what one call allocates.
    mod counting {
        use std::{
            alloc::{GlobalAlloc, Layout, System},
            cell::Cell,
        };

        pub struct Counting;
        thread_local! {
            static LIVE: Cell<usize> = const { Cell::new(0) };
            static PEAK: Cell<usize> = const { Cell::new(0) };
        }

        // SAFETY: forwards to the system allocator; the counters never allocate.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = LIVE.try_with(|l| {
                    l.set(l.get() + layout.size());
                    let _ = PEAK.try_with(|p| p.set(p.get().max(l.get())));
                });
                // SAFETY: same contract as ours.
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(layout.size())));
                // SAFETY: same contract as ours.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        /// Bytes allocated by `f` above what was live when it started, at its peak.
        pub fn peak_during(f: impl FnOnce()) -> usize {
            let base = LIVE.with(Cell::get);
            PEAK.with(|p| p.set(base));
            f();
            PEAK.with(Cell::get) - base
        }
    }

    /// The HPACK bomb: one small block that names a 4 KB dynamic-table entry 12,000
    /// times (one byte each), i.e. 48 MB of headers from 12 KB on the wire. A workload in a
    /// pod (or any local user) can send it to the Workload API socket.
    fn bomb(refs: usize) -> Vec<u8> {
        let mut client = Encoder::new();
        let big = vec![b'a'; 4_000];
        let first = client.encode([(&b"x-bomb"[..], &big[..])]);
        let again = client.encode(std::iter::repeat_n((&b"x-bomb"[..], &big[..]), refs));
        assert_eq!(again.len(), refs, "every repeat is a one-byte index into the table");
        let mut wire = PREFACE.to_vec();
        push_frame(&mut wire, HEADERS, END_HEADERS, [0, 0, 0, 1], &first);
        push_frame(&mut wire, HEADERS, END_HEADERS, [0, 0, 0, 3], &again);
        wire
    }

    #[test]
    fn an_hpack_bomb_from_a_local_user_is_refused_without_allocating_its_expansion() {
        let wire = bomb(12_000);
        let mut rw = Rewriter::default();
        let mut out = Vec::new();
        let mut result = Ok(());
        let peak = counting::peak_during(|| result = rw.feed(&wire, &mut out));
        assert_eq!(result, Err(Refused::HeaderListTooLarge));
        assert!(peak < 256 * 1024, "the rewriter allocated {peak} bytes for a {}-byte input", wire.len());
        // The first, well-formed block went through; the bomb did not.
        assert_eq!(rw.rewritten, 1);
        assert!(out.len() < 8 * 1024);
    }

    #[test]
    fn oversized_frames_blocks_and_table_updates_are_refused_before_buffering() {
        // A 1 MiB frame announced in its header is refused at the header: nothing buffered.
        let mut wire = PREFACE.to_vec();
        wire.extend_from_slice(&[0x10, 0x00, 0x00, HEADERS, END_HEADERS, 0, 0, 0, 1]);
        let mut rw = Rewriter::default();
        assert_eq!(rw.feed(&wire, &mut Vec::new()), Err(Refused::FrameTooLarge(1 << 20)));

        // A header block spread over CONTINUATIONs beyond the header list limit.
        let mut wire = PREFACE.to_vec();
        push_frame(&mut wire, HEADERS, 0, [0, 0, 0, 1], &[0x82; MAX_FRAME]);
        push_frame(&mut wire, CONTINUATION, 0, [0, 0, 0, 1], &[0x82; MAX_FRAME]);
        let mut rw = Rewriter::default();
        assert_eq!(rw.feed(&wire, &mut Vec::new()), Err(Refused::BlockTooLarge));

        // A dynamic table size update to 16 MiB (h2 advertises 4096).
        let mut block = vec![0x3f];
        let mut n = (1usize << 24) - 31;
        while n >= 128 {
            block.push((n % 128 + 128) as u8);
            n /= 128;
        }
        block.push(n as u8);
        block.push(0x82); // :method GET, so the block does not end on the update
        let mut wire = PREFACE.to_vec();
        push_frame(&mut wire, HEADERS, END_HEADERS, [0, 0, 0, 1], &block);
        let mut rw = Rewriter::default();
        assert_eq!(rw.feed(&wire, &mut Vec::new()), Err(Refused::TableTooLarge));
    }

    #[test]
    fn garbage_and_http1_pass_through_untouched() {
        for input in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"\xff\xfe garbage", b""] {
            let mut rw = Rewriter::default();
            let mut out = Vec::new();
            rw.feed(input, &mut out).expect("passed through");
            assert_eq!(out, input);
        }
        // A valid preface followed by an undecodable header block.
        let mut wire = PREFACE.to_vec();
        push_frame(&mut wire, HEADERS, END_HEADERS, [0, 0, 0, 1], &[0xff, 0xff, 0xff]);
        let mut rw = Rewriter::default();
        let mut out = Vec::new();
        rw.feed(&wire, &mut out).expect("passed through");
        assert_eq!(out, wire);
        // Truncated padding never panics.
        let mut wire = PREFACE.to_vec();
        push_frame(&mut wire, HEADERS, END_HEADERS | PADDED, [0, 0, 0, 1], &[200, 1]);
        let mut rw = Rewriter::default();
        let mut out = Vec::new();
        rw.feed(&wire, &mut out).expect("passed through");
        assert_eq!(out, wire);
    }
}
