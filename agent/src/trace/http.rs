//! Recovering HTTP requests from captured write prefixes.
//!
//! The kernel gives us, per write, only its first bytes and its real length. So the
//! parsers here track *positions* with true lengths (to skip bodies and DATA frames we
//! never saw) and only *interpret* bytes that were actually captured. Whenever a missing
//! byte would have mattered, we stop trusting our position instead of guessing: HTTP/1
//! waits for a write that starts with a request head, HTTP/2 gives up on the connection
//! (HPACK is stateful, so a lost header block poisons every later one).

use loona_hpack::Decoder;

use super::proxy_protocol;

/// Request heads and HTTP/2 header blocks larger than this are abandoned: it bounds the
/// memory held per stream, and no legitimate client sends heads this large.
const MAX_HEAD: usize = 64 * 1024;
/// HPACK dynamic table limit we accept from the client's encoder (it bounds decoder
/// memory; the common server setting is 4 KiB).
const MAX_HPACK_TABLE: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub protocol: Protocol,
    pub method: String,
    /// Raw request target (path + query) as sent.
    pub path: String,
    /// Host header (HTTP/1) or :authority (HTTP/2), if present.
    pub authority: Option<String>,
    /// Header names lower-cased; values as sent (lossy UTF-8).
    pub headers: Vec<(String, String)>,
}

/// Per-connection, per-direction (client -> server) state.
pub struct HttpStream {
    state: State,
}

enum State {
    Http1(Http1),
    Http2(Box<Http2>),
    /// Terminal: the connection is not HTTP, or HTTP/2 decoding lost sync.
    Ignored,
}

impl Default for HttpStream {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpStream {
    pub fn new() -> Self {
        Self { state: State::Http1(Http1::new()) }
    }

    /// `captured` is the prefix of one write; `true_len` is that write's real length
    /// (>= captured.len()).
    pub fn feed(&mut self, captured: &[u8], true_len: usize) -> Vec<Request> {
        self.feed_with_bodies(captured, true_len).0
    }

    /// [`Self::feed`], plus the requests whose body (selected by `body::wants_body`)
    /// was completed by this write, each with that body. Heads are never held back for
    /// their body: header credentials are reported at once either way.
    pub fn feed_with_bodies(&mut self, captured: &[u8], true_len: usize) -> (Vec<Request>, Vec<(Request, Vec<u8>)>) {
        let out = self.feed_requests(captured, true_len);
        let bodies = match &mut self.state {
            State::Http1(h1) => std::mem::take(&mut h1.bodies),
            _ => Vec::new(),
        };
        (out, bodies)
    }

    /// A request's body (wanted by `body::wants_body`) is still arriving: the last head
    /// reported is answered by [`Self::feed_with_bodies`] later, with its body.
    pub fn holding_body(&self) -> bool {
        matches!(&self.state, State::Http1(h1) if h1.holding.is_some())
    }

    fn feed_requests(&mut self, captured: &[u8], true_len: usize) -> Vec<Request> {
        let true_len = true_len.max(captured.len());
        let mut out = Vec::new();
        match &mut self.state {
            State::Ignored => {}
            State::Http1(h1) => match h1.feed(captured, true_len, &mut out) {
                Next::Stay => {}
                Next::NotHttp => self.state = State::Ignored,
                Next::Http2 { offset } => {
                    let mut h2 = Box::new(Http2::new());
                    let rest = captured.get(offset..).unwrap_or_default();
                    h2.feed(rest, true_len.saturating_sub(offset), &mut out);
                    self.state = h2.into_state();
                }
            },
            State::Http2(h2) => {
                h2.feed(captured, true_len, &mut out);
                if h2.dead {
                    self.state = State::Ignored;
                }
            }
        }
        out
    }
}

/// What the HTTP/1 parser wants to happen to the stream after a write.
enum Next {
    Stay,
    NotHttp,
    /// The HTTP/2 preface ended `offset` bytes into this write (prior knowledge or after
    /// an `Upgrade: h2c`).
    Http2 {
        offset: usize,
    },
}

// ---------------------------------------------------------------------------------------
// HTTP/1

struct Http1 {
    /// A head seen in part; always starts at a request boundary.
    head: Vec<u8>,
    /// Body bytes of the last request still to come (Content-Length).
    body_left: u64,
    /// Alignment was lost; only a write that starts with a request line restores it.
    lost: bool,
    /// A request line was seen, so garbage later means "lost", not "not HTTP".
    confirmed: bool,
    /// A request whose body (wanted by `body::wants_body`) is still arriving.
    holding: Option<Holding>,
    /// Bodies completed during the current `feed`, with their requests.
    bodies: Vec<(Request, Vec<u8>)>,
    /// The held body is chunked: `holding.body` collects its raw coding until complete.
    chunked: bool,
    /// Nothing has been read yet: a PROXY protocol header may come first (its start,
    /// when split across writes, is held in `head`).
    at_start: bool,
}

/// A request whose body is being collected; `whole` turns false when bytes are missing.
struct Holding {
    request: Request,
    body: Vec<u8>,
    whole: bool,
}

enum Body {
    Empty,
    Length(u64),
    /// `Transfer-Encoding: chunked` alone (followed only for bodies `wants_body` keeps).
    Chunked,
    /// Chunked, CONNECT, upgrades, or contradictory framing: where the next request
    /// starts cannot be known from truncated captures.
    Unfollowable,
}

enum Head {
    Complete {
        request: Request,
        len: usize,
        body: Body,
    },
    /// Valid so far. `line` means the request line is complete, which is strong enough
    /// evidence to resynchronise on; `method` that at least a method and space were seen.
    Partial {
        line: bool,
        method: bool,
    },
    Preface,
    Invalid,
}

impl Http1 {
    fn new() -> Self {
        Self { head: Vec::new(), body_left: 0, lost: false, confirmed: false, holding: None, bodies: Vec::new(), chunked: false, at_start: true }
    }

    /// Skips a PROXY protocol header at the connection's start, as a server that accepts
    /// one does. The position in `captured` where requests start, or None while the
    /// header's start is held for the next write. Bytes held that turn out to be no header
    /// go to the request parser (the start of a method) or away (empty lines, which a
    /// server skips too).
    fn skip_proxy_header(&mut self, captured: &[u8], true_len: usize) -> Option<usize> {
        let held = self.head.len();
        self.head.extend_from_slice(captured);
        let header = proxy_protocol::header(&self.head);
        self.head.truncate(held);
        match header {
            proxy_protocol::Header::Partial if captured.len() == true_len => {
                self.head.extend_from_slice(captured);
                return None;
            }
            proxy_protocol::Header::Complete { len, then } => {
                self.at_start = false;
                self.head.clear();
                self.body_left = then;
                return Some(len.saturating_sub(held));
            }
            _ => {}
        }
        self.at_start = false;
        if self.head.iter().all(|&b| b == b'\r' || b == b'\n') {
            self.head.clear();
        }
        Some(0)
    }

    /// Hands a finished body over, if every byte of it was captured.
    fn release(&mut self) {
        if let Some(h) = self.holding.take().filter(|h| h.whole) {
            self.bodies.push((h.request, h.body));
        }
    }

    fn lose(&mut self) -> Next {
        self.head.clear();
        self.body_left = 0;
        self.chunked = false;
        self.holding = None;
        self.lost = true;
        Next::Stay
    }

    /// Collects a chunked body from `pos` on; the position after it, or `None` when the
    /// write ended inside it (or the stream was lost).
    fn feed_chunked(&mut self, captured: &[u8], true_len: usize, pos: usize) -> Option<usize> {
        // The chunk framing must be read, so every byte must have been captured.
        let (Some(h), Some(bytes)) = (self.holding.as_mut(), captured.get(pos..).filter(|_| captured.len() == true_len)) else {
            self.lose();
            return None;
        };
        let before = h.body.len();
        h.body.extend_from_slice(bytes);
        match super::chunked::decode(&h.body, super::body::MAX_BODY as usize) {
            Ok(Some((body, consumed))) => {
                h.body = body;
                self.chunked = false;
                self.release();
                Some(pos + consumed.saturating_sub(before))
            }
            Ok(None) if h.body.len() <= 2 * super::body::MAX_BODY as usize => None,
            _ => {
                self.lose();
                None
            }
        }
    }

    fn feed(&mut self, captured: &[u8], true_len: usize, out: &mut Vec<Request>) -> Next {
        let mut pos = 0usize;
        if self.at_start {
            match self.skip_proxy_header(captured, true_len) {
                Some(start) => pos = start,
                None => return Next::Stay,
            }
        }
        loop {
            if self.chunked {
                match self.feed_chunked(captured, true_len, pos) {
                    Some(after) => pos = after,
                    None => return Next::Stay,
                }
            }
            if self.body_left > 0 {
                let skip = usize::try_from(self.body_left).unwrap_or(usize::MAX);
                let skip = skip.min(true_len.saturating_sub(pos));
                if let Some(h) = self.holding.as_mut() {
                    match captured.get(pos..pos.saturating_add(skip)) {
                        Some(bytes) => h.body.extend_from_slice(bytes),
                        None => h.whole = false,
                    }
                }
                pos = pos.saturating_add(skip);
                self.body_left = self.body_left.saturating_sub(skip as u64);
                if self.body_left == 0 {
                    self.release();
                }
            }
            if self.head.is_empty() {
                // Dropped, not buffered: a run of them must not overflow MAX_HEAD and
                // make the stream look like something other than HTTP.
                pos = pos.saturating_add(captured.get(pos..).map_or(0, blank_lines));
            }
            if pos >= true_len {
                return Next::Stay;
            }
            // The next head starts past what was captured: its bytes are gone.
            let Some(available) = captured.get(pos..).filter(|a| !a.is_empty()) else {
                return self.lose();
            };
            let resyncing = self.lost;
            let write_complete = captured.len() == true_len;
            let buffered = self.head.len();
            let parsed = if buffered == 0 {
                parse_head(available)
            } else {
                self.head.extend_from_slice(available);
                parse_head(&self.head)
            };
            match parsed {
                Head::Preface => {
                    self.head.clear();
                    let offset = pos.saturating_add(PREFACE.len().saturating_sub(buffered));
                    return Next::Http2 { offset };
                }
                Head::Complete { request, len, body } => {
                    self.head.clear();
                    self.lost = false;
                    self.confirmed = true;
                    pos = pos.saturating_add(len.saturating_sub(buffered));
                    let wanted = match body {
                        Body::Length(n) => super::body::wants_body(&request, n),
                        // A token request sent chunked: its size is unknown up front.
                        Body::Chunked => super::body::wants_body(&request, 1),
                        _ => false,
                    };
                    if wanted {
                        let request = request.clone();
                        self.holding = Some(Holding { request, body: Vec::new(), whole: true });
                    }
                    out.push(request);
                    match body {
                        Body::Empty => {}
                        Body::Length(n) => self.body_left = n,
                        Body::Chunked if wanted => self.chunked = true,
                        Body::Chunked | Body::Unfollowable => return self.lose(),
                    }
                }
                Head::Partial { line, method } => {
                    if resyncing && !line {
                        // Text that merely looks like a token (a body chunk, say) must
                        // not be glued to the next write's head.
                        return Next::Stay;
                    }
                    self.confirmed |= method;
                    let joined_len = if buffered == 0 { available.len() } else { self.head.len() };
                    if !write_complete || joined_len > MAX_HEAD {
                        // The rest of this head was never captured, or is too large.
                        return if self.confirmed { self.lose() } else { Next::NotHttp };
                    }
                    if buffered == 0 {
                        self.head.extend_from_slice(available);
                    }
                    self.lost = false;
                    return Next::Stay;
                }
                Head::Invalid => {
                    if !self.confirmed {
                        return Next::NotHttp;
                    }
                    return self.lose();
                }
            }
        }
    }
}

/// Can a connection whose first write is `first` (or its captured prefix) be carrying a
/// client's HTTP requests? Connections that cannot are no longer copied by the kernel, so
/// this must never say no to what a server would take as a request; the parser that reads
/// the requests decides. A list of known methods used to decide, and a workload could blind
/// the agent to a connection by opening it with a write a server accepts but the list did
/// not: an empty line (RFC 9112 section 2.2; nginx and Node's llhttp ignore it) or an
/// unknown method (RFC 9110 section 9.1; Go's net/http answers it and keeps the connection).
/// A PROXY protocol header is skipped first, as a server that accepts one skips it.
pub fn may_start_requests(first: &[u8]) -> bool {
    match proxy_protocol::header(first) {
        proxy_protocol::Header::Partial => true,
        proxy_protocol::Header::Complete { len, then } => {
            let after = usize::try_from(then).ok().and_then(|t| len.checked_add(t));
            after.and_then(|at| first.get(at..)).is_none_or(|rest| rest.is_empty() || !matches!(parse_head(rest), Head::Invalid))
        }
        proxy_protocol::Header::None => !matches!(parse_head(first), Head::Invalid),
    }
}

/// How many bytes of `bytes` are the empty lines a server skips before a request line:
/// CR and LF alone, as nginx and llhttp skip them, however many there are.
fn blank_lines(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count()
}

fn parse_head(buf: &[u8]) -> Head {
    if buf.starts_with(PREFACE) {
        return Head::Preface;
    }
    if PREFACE.starts_with(buf) {
        // httparse would reject "HTTP/2.0"; wait for the rest of the preface.
        return Head::Partial { line: buf.len() >= 16, method: buf.len() >= 4 };
    }
    // Unfolding keeps every length, so `len` below is still the true head length.
    let unfolded = unfold(buf);
    let buf = unfolded.as_deref().unwrap_or(buf);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // One malformed header line must not hide the well-formed ones (the credential may
    // be in those): it is skipped, as a lenient server would.
    let mut config = httparse::ParserConfig::default();
    config.ignore_invalid_headers_in_requests(true);
    match config.parse_request(&mut req, buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (request, body) = to_request(&req);
            Head::Complete { request, len, body }
        }
        Ok(httparse::Status::Partial) => Head::Partial { line: req.version.is_some(), method: req.path.is_some() || req.version.is_some() },
        Err(_) => Head::Invalid,
    }
}

/// Replaces obsolete line folding (RFC 9112 section 5.2: a header value continued on a
/// line that starts with a space or tab) with spaces, as the RFC lets a recipient do.
/// Old clients still send it, and an evader can use it to make a strict parser drop the
/// whole request, `Authorization` included. Replacement is in place (CR LF becomes two
/// spaces), so offsets into the head, and the head's length, stay true. `None` when
/// there is no fold in the head.
fn unfold(buf: &[u8]) -> Option<Vec<u8>> {
    // The request line itself is never folded: start at the first header line.
    let mut line = buf.iter().position(|&b| b == b'\n')? + 1;
    let mut out: Option<Vec<u8>> = None;
    loop {
        let rest = buf.get(line..)?;
        let len = rest.iter().position(|&b| b == b'\n')?;
        let newline = line + len;
        if len == 0 || (len == 1 && rest.first() == Some(&b'\r')) {
            break; // the blank line that ends the head
        }
        // Control bytes make httparse reject the whole head, not just their line: blank
        // them (the header they are in is malformed anyway; the others must survive).
        let body_end = if rest.get(len.wrapping_sub(1)) == Some(&b'\r') { len - 1 } else { len };
        for (i, b) in rest.iter().take(body_end).enumerate() {
            if (*b < 0x20 && *b != b'\t') || *b == 0x7f {
                let fixed = out.get_or_insert_with(|| buf.to_vec());
                if let Some(slot) = fixed.get_mut(line + i) {
                    *slot = b' ';
                }
            }
        }
        if matches!(buf.get(newline + 1), Some(b' ' | b'\t')) {
            let folded = out.get_or_insert_with(|| buf.to_vec());
            if let Some(b) = folded.get_mut(newline) {
                *b = b' ';
            }
            if newline > line
                && let Some(b) = folded.get_mut(newline - 1)
                && *b == b'\r'
            {
                *b = b' ';
            }
        }
        line = newline + 1;
    }
    out
}

fn to_request(req: &httparse::Request<'_, '_>) -> (Request, Body) {
    let method = req.method.unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = req.headers.iter().map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned())).collect();
    let authority = headers.iter().find(|(name, _)| name == "host").map(|(_, value)| value.trim().to_owned());
    let body = body_framing(&method, &headers);
    let request = Request { protocol: Protocol::Http1, method, path: req.path.unwrap_or_default().to_owned(), authority, headers };
    (request, body)
}

fn body_framing(method: &str, headers: &[(String, String)]) -> Body {
    let has = |name: &str| headers.iter().any(|(n, _)| n == name);
    if method.eq_ignore_ascii_case("CONNECT") || has("upgrade") {
        return Body::Unfollowable;
    }
    if has("transfer-encoding") {
        // Chunked alone; with a Content-Length too (a smuggling shape) or another coding,
        // where the body ends is not knowable.
        let codings: Vec<&(String, String)> = headers.iter().filter(|(n, _)| n == "transfer-encoding").collect();
        let chunked_only = codings.len() == 1 && codings.iter().all(|(_, v)| v.trim().eq_ignore_ascii_case("chunked"));
        return if chunked_only && !has("content-length") { Body::Chunked } else { Body::Unfollowable };
    }
    // Several Content-Length values (or a list) are fine only if they all agree.
    let mut length = None;
    for (_, value) in headers.iter().filter(|(n, _)| n == "content-length") {
        for item in value.split(',') {
            let item = item.trim();
            let parsed = match item.bytes().all(|b| b.is_ascii_digit()) {
                true => item.parse::<u64>().ok(),
                false => None,
            };
            match (parsed, length) {
                (None, _) => return Body::Unfollowable,
                (Some(n), Some(seen)) if n != seen => return Body::Unfollowable,
                (Some(n), _) => length = Some(n),
            }
        }
    }
    match length {
        Some(0) | None => Body::Empty,
        Some(n) => Body::Length(n),
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/2

use crate::h2frame::{CONTINUATION, END_HEADERS, FRAME_HEADER, HEADERS, PREFACE, PUSH_PROMISE, split_headers};

struct Http2 {
    decoder: Decoder<'static>,
    header: [u8; FRAME_HEADER],
    header_len: usize,
    frame: Option<Frame>,
    /// A header block waiting for CONTINUATION frames.
    block: Option<Block>,
    dead: bool,
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    left: usize,
    /// Collected only for frames that carry HPACK data; others are skipped by length.
    payload: Option<Vec<u8>>,
}

struct Block {
    stream: u32,
    fragment: Vec<u8>,
}

impl Http2 {
    fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(MAX_HPACK_TABLE);
        Self { decoder, header: [0; FRAME_HEADER], header_len: 0, frame: None, block: None, dead: false }
    }

    fn into_state(self: Box<Self>) -> State {
        if self.dead { State::Ignored } else { State::Http2(self) }
    }

    fn feed(&mut self, captured: &[u8], true_len: usize, out: &mut Vec<Request>) {
        let mut data = captured;
        while !data.is_empty() && !self.dead {
            data = match self.frame.as_mut() {
                Some(frame) => {
                    let (chunk, rest) = data.split_at(frame.left.min(data.len()));
                    if let Some(payload) = frame.payload.as_mut() {
                        payload.extend_from_slice(chunk);
                    }
                    frame.left -= chunk.len();
                    if frame.left == 0 {
                        self.finish_frame(out);
                    }
                    rest
                }
                None => {
                    let want = FRAME_HEADER.saturating_sub(self.header_len);
                    let (chunk, rest) = data.split_at(want.min(data.len()));
                    if let Some(slot) = self.header.get_mut(self.header_len..)
                        && let Some(slot) = slot.get_mut(..chunk.len())
                    {
                        slot.copy_from_slice(chunk);
                    }
                    self.header_len += chunk.len();
                    if self.header_len == FRAME_HEADER {
                        self.header_len = 0;
                        self.start_frame(out);
                    }
                    rest
                }
            };
        }
        let unseen = true_len.saturating_sub(captured.len());
        if unseen > 0 && !self.dead {
            self.skip_unseen(unseen);
        }
    }

    /// Bytes we know exist but never saw can only fall inside a payload we skip anyway.
    fn skip_unseen(&mut self, unseen: usize) {
        match self.frame.as_mut() {
            Some(frame) if frame.payload.is_none() && unseen <= frame.left => {
                frame.left -= unseen;
                if frame.left == 0 {
                    self.frame = None;
                }
            }
            _ => self.dead = true,
        }
    }

    fn start_frame(&mut self, out: &mut Vec<Request>) {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = self.header;
        let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        let stream = u32::from_be_bytes([s0 & 0x7f, s1, s2, s3]);
        let collect = match (kind, &self.block) {
            (CONTINUATION, Some(block)) => block.stream == stream,
            (_, Some(_)) | (CONTINUATION, None) | (PUSH_PROMISE, _) => false,
            (HEADERS, None) => true,
            (_, None) => {
                self.frame = (len > 0).then_some(Frame { kind, flags, stream, left: len, payload: None });
                return;
            }
        };
        // Anything that breaks the header-block sequence would desynchronise HPACK.
        let buffered = self.block.as_ref().map_or(0, |b| b.fragment.len());
        if !collect || buffered.saturating_add(len) > MAX_HEAD {
            self.dead = true;
            return;
        }
        self.frame = Some(Frame { kind, flags, stream, left: len, payload: Some(Vec::with_capacity(len)) });
        if len == 0 {
            self.finish_frame(out);
        }
    }

    fn finish_frame(&mut self, out: &mut Vec<Request>) {
        let Some(Frame { kind, flags, stream, payload: Some(payload), .. }) = self.frame.take() else {
            return;
        };
        let block = match (kind, self.block.take()) {
            (HEADERS, None) => match header_fragment(flags, &payload) {
                Some(fragment) => Block { stream, fragment: fragment.to_vec() },
                None => {
                    self.dead = true;
                    return;
                }
            },
            (CONTINUATION, Some(mut block)) => {
                block.fragment.extend_from_slice(&payload);
                block
            }
            _ => {
                self.dead = true;
                return;
            }
        };
        if flags & END_HEADERS == 0 {
            self.block = Some(block);
            return;
        }
        match decode_block(&mut self.decoder, &block.fragment) {
            Some(request) => out.extend(request),
            None => self.dead = true,
        }
    }
}

/// Strips the padding and priority fields that may surround a HEADERS fragment.
fn header_fragment(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    split_headers(flags, payload).map(|(_, fragment)| fragment)
}

/// Decodes one complete header block. `None` means HPACK failed and the decoder state
/// can no longer be trusted; `Some(None)` is a valid block that is not a request
/// (trailers).
fn decode_block(decoder: &mut Decoder<'static>, block: &[u8]) -> Option<Option<Request>> {
    let mut method = None;
    let mut path = None;
    let mut authority = None;
    let mut headers = Vec::new();
    // Indexed fields can repeat a large table entry many times: cap what we keep.
    let mut budget = MAX_HEAD;
    let result = decoder.decode_with_cb(block, |name, value| {
        let size = name.len().saturating_add(value.len());
        if size > budget {
            return;
        }
        budget -= size;
        let value = String::from_utf8_lossy(&value).into_owned();
        match &*name {
            b":method" => method = Some(value),
            b":path" => path = Some(value),
            b":authority" => authority = Some(value),
            n if n.starts_with(b":") => {}
            n => {
                let name = String::from_utf8_lossy(n).to_ascii_lowercase();
                headers.push((name, value));
            }
        }
    });
    result.ok()?;
    let Some(method) = method else {
        return Some(None);
    };
    let authority = authority.or_else(|| headers.iter().find(|(n, _)| n == "host").map(|(_, v)| v.clone()));
    Some(Some(Request { protocol: Protocol::Http2, method, path: path.unwrap_or_default(), authority, headers }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2frame::{PADDED, PRIORITY};
    use loona_hpack::Encoder;

    fn feed_all(stream: &mut HttpStream, writes: &[&[u8]]) -> Vec<Request> {
        writes.iter().flat_map(|w| stream.feed(w, w.len())).collect()
    }

    fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
        req.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_first_write_is_judged_by_the_request_parser() {
        assert!(may_start_requests(b"GET / HTTP/1.1\r\n"));
        assert!(may_start_requests(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(may_start_requests(b"PO"), "a partial method may still be HTTP");
        // What servers accept as a request's start must keep the connection watched.
        assert!(may_start_requests(b"\r\n"), "an empty line before a request");
        assert!(may_start_requests(b"\r\n\r\nGET / HTTP/1.1\r\n"));
        assert!(may_start_requests(b"XYZ / HTTP/1.1\r\n"), "an unknown method");
        assert!(may_start_requests(b"GETX"), "the start of an unknown method");
        // What no server takes as a request is let go.
        assert!(!may_start_requests(b"\x16\x03\x01\x02\x00"), "a TLS ClientHello is not");
        assert!(!may_start_requests(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), "postgres startup is not");
        assert!(!may_start_requests(b"HTTP/1.1 200 OK\r\n"), "a server's response is not");
        assert!(!may_start_requests(b"*1\r\n$4\r\nPING\r\n"), "a Redis command is not");
        assert!(!may_start_requests(b"EHLO mail.example\r\n"), "SMTP is not");
        assert!(!may_start_requests(b"SSH-2.0-OpenSSH_9.2\r\n"), "SSH is not");
    }

    /// An evader opens the connection with empty lines, in their own writes and before the
    /// request, more of them than a head may hold: the request after them is still read.
    #[test]
    fn empty_lines_before_a_request_are_skipped_however_many() {
        let mut s = HttpStream::new();
        let blanks = b"\r\n".repeat(MAX_HEAD);
        let reqs = feed_all(&mut s, &[b"\r\n", b"\r", b"\n", &blanks, b"\r\nGET /a HTTP/1.1\r\nAuthorization: Bearer t1\r\n\r\n"]);
        assert_eq!(reqs.len(), 1);
        assert_eq!(header(&reqs[0], "authorization"), Some("Bearer t1"));
        // And between requests (Go's net/http skips them after a POST).
        let reqs = feed_all(&mut s, &[b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nok\r\n", b"GET /c HTTP/1.1\r\nAuthorization: Bearer t2\r\n\r\n"]);
        assert_eq!(reqs.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/b", "/c"]);
        assert_eq!(header(&reqs[1], "authorization"), Some("Bearer t2"));
    }

    /// An evader opens its connection with a PROXY protocol header (its server, behind a
    /// load balancer, accepts one) and sends its token after it: in the same write, in a
    /// write of its own, split byte by byte, and as version 2 with TLVs.
    #[test]
    fn requests_after_a_proxy_protocol_header_are_read() {
        let request = b"GET /after HTTP/1.1\r\nAuthorization: Bearer t1\r\n\r\n".as_slice();
        let v1 = b"PROXY TCP4 10.0.0.1 10.0.0.2 51000 80\r\n".as_slice();
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x14".to_vec();
        v2.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0xc7, 0x38, 0, 80, 0x04, 0, 5, b'x', b'y', b'z', b'z', b'y']);
        let bytes: Vec<Vec<u8>> = v1.iter().map(|b| vec![*b]).collect();
        let mut one_by_one: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        one_by_one.push(request);
        let v2_then_request = [v2.as_slice(), request].concat();
        let v1_then_request = [v1, request].concat();
        let cases: [(&str, Vec<&[u8]>); 5] = [
            ("v1, one write", vec![&v1_then_request]),
            ("v1, its own write", vec![v1, request]),
            ("v1, a byte a write", one_by_one),
            ("v2 with TLVs, one write", vec![&v2_then_request]),
            ("v2, split inside its signature and its addresses", vec![&v2[..3], &v2[3..20], &v2[20..], request]),
        ];
        for (case, writes) in cases {
            let mut s = HttpStream::new();
            let reqs = feed_all(&mut s, &writes);
            assert_eq!(reqs.len(), 1, "{case}");
            assert_eq!((reqs[0].path.as_str(), header(&reqs[0], "authorization")), ("/after", Some("Bearer t1")), "{case}");
        }
        // Only at the start: later, PROXY is an unknown method like any other.
        let mut s = HttpStream::new();
        let reqs = feed_all(&mut s, &[request, b"PROXY / HTTP/1.1\r\n\r\n"]);
        assert_eq!(reqs.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(), ["GET", "PROXY"]);
        // Bytes held as a possible header that are not one still reach the parser.
        let mut s = HttpStream::new();
        let reqs = feed_all(&mut s, &[b"PRO", b"PFIND /dav HTTP/1.1\r\nAuthorization: Bearer t2\r\n\r\n"]);
        assert_eq!((reqs.len(), reqs.first().map(|r| r.method.as_str())), (1, Some("PROPFIND")));
        assert!(may_start_requests(v1) && may_start_requests(&v1_then_request) && may_start_requests(&v2_then_request));
        assert!(may_start_requests(b"PROX") && may_start_requests(&v2[..5]));
        assert!(!may_start_requests(&[v1, b"\x16\x03\x01\x02\x00"].concat()), "TLS behind a PROXY header is not HTTP");
    }

    #[test]
    fn single_http1_request() {
        let mut s = HttpStream::new();
        let reqs = s.feed(b"GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: example.com\r\nAuthorization: Bearer abc\r\n\r\n", 87);
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        assert_eq!(r.protocol, Protocol::Http1);
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api/v1/pods?watch=1");
        assert_eq!(r.authority.as_deref(), Some("example.com"));
        assert_eq!(header(r, "authorization"), Some("Bearer abc"));
        assert_eq!(header(r, "host"), Some("example.com"));
    }

    #[test]
    fn header_names_are_lower_cased_and_values_kept() {
        let mut s = HttpStream::new();
        let reqs = feed_all(&mut s, &[b"GET / HTTP/1.0\r\nX-API-Key:  k1 \r\n\r\n"]);
        assert_eq!(reqs[0].headers, [("x-api-key".to_owned(), "k1".to_owned())]);
        assert_eq!(reqs[0].authority, None);
    }

    #[test]
    fn head_split_across_three_writes_yields_exactly_one_request() {
        let mut s = HttpStream::new();
        assert!(s.feed(b"POST /upl", 9).is_empty());
        assert!(s.feed(b"oad HTTP/1.1\r\nHost: a.b\r\nAuthor", 31).is_empty());
        let reqs = s.feed(b"ization: Basic dTpw\r\nContent-Length: 0\r\n\r\n", 42);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].method, "POST");
        assert_eq!(reqs[0].path, "/upload");
        assert_eq!(header(&reqs[0], "authorization"), Some("Basic dTpw"));
        // Nothing is reported twice.
        assert!(s.feed(b"", 0).is_empty());
    }

    #[test]
    fn large_truncated_body_is_skipped_by_true_length() {
        let mut s = HttpStream::new();
        let head = b"PUT /obj HTTP/1.1\r\nHost: s3\r\nContent-Length: 1048576\r\n\r\n";
        assert_eq!(s.feed(head, head.len()).len(), 1);
        // The body is one 1 MiB write of which only 4096 bytes were captured.
        assert!(s.feed(&[b'x'; 4096], 1 << 20).is_empty());
        let next = b"GET /second HTTP/1.1\r\nHost: s3\r\n\r\n";
        let reqs = s.feed(next, next.len());
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/second");
    }

    #[test]
    fn body_in_the_same_truncated_write_as_its_head() {
        let mut s = HttpStream::new();
        let mut write = b"POST /a HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n".to_vec();
        let head_len = write.len();
        write.resize(4096, b'z');
        let reqs = s.feed(&write, head_len + (1 << 20));
        assert_eq!(reqs.len(), 1);
        let reqs = feed_all(&mut s, &[b"GET /b HTTP/1.1\r\n\r\n"]);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/b");
    }

    #[test]
    fn body_spread_over_several_writes() {
        let mut s = HttpStream::new();
        let reqs = feed_all(&mut s, &[b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123", b"456", b"789GET /b HTTP/1.1\r\n\r\n"]);
        let paths: Vec<_> = reqs.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/b"]);
    }

    #[test]
    fn pipelined_requests_in_one_write() {
        let mut s = HttpStream::new();
        let reqs = feed_all(
            &mut s,
            &[b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
                GET /3 HTTP/1.1\r\nAuthorization: token ghp_x\r\n\r\n"],
        );
        let paths: Vec<_> = reqs.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/1", "/2", "/3"]);
        assert_eq!(header(&reqs[2], "authorization"), Some("token ghp_x"));
    }

    #[test]
    fn pipelined_request_cut_by_truncation_is_not_invented() {
        let mut s = HttpStream::new();
        let write = b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\nAuthoriz";
        let reqs = s.feed(write, write.len() + 500);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/1");
        // The next write continues the cut head: it must not be parsed as a request.
        assert!(s.feed(b"ation: Bearer x\r\n\r\n", 19).is_empty());
        let reqs = feed_all(&mut s, &[b"GET /3 HTTP/1.1\r\n\r\n"]);
        assert_eq!(reqs[0].path, "/3");
    }

    #[test]
    fn head_cut_by_truncation_resyncs_on_a_later_write() {
        let mut s = HttpStream::new();
        let mut write = b"GET /big HTTP/1.1\r\nCookie: ".to_vec();
        write.resize(4096, b'c');
        assert!(s.feed(&write, 10_000).is_empty());
        let reqs = feed_all(&mut s, &[b"GET /after HTTP/1.1\r\n\r\n"]);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/after");
    }

    #[test]
    fn chunked_body_then_resync() {
        let mut s = HttpStream::new();
        let reqs = feed_all(
            &mut s,
            &[
                b"POST /stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                b"6\r\n world\r\n",
                b"0\r\n\r\n",
                b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n",
            ],
        );
        let paths: Vec<_> = reqs.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/stream", "/next"]);
    }

    #[test]
    fn resync_does_not_glue_body_text_to_the_next_head() {
        let mut s = HttpStream::new();
        let reqs = feed_all(&mut s, &[b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"abcdef", b"GET /y HTTP/1.1\r\n\r\n"]);
        let methods: Vec<_> = reqs.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(methods, ["POST", "GET"]);
    }

    #[test]
    fn oversized_head_is_abandoned() {
        let mut s = HttpStream::new();
        assert!(s.feed(b"GET / HTTP/1.1\r\n", 16).is_empty());
        let filler = [b"X-Fill: ".as_slice(), &[b'a'; 4000], b"\r\n"].concat();
        for _ in 0..20 {
            assert!(s.feed(&filler, filler.len()).is_empty());
        }
        assert!(s.feed(b"\r\n", 2).is_empty());
        let reqs = feed_all(&mut s, &[b"GET /ok HTTP/1.1\r\n\r\n"]);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/ok");
    }

    #[test]
    fn conflicting_content_length_is_not_trusted() {
        let mut s = HttpStream::new();
        let reqs = feed_all(&mut s, &[b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", b"GET /b HTTP/1.1\r\n\r\n"]);
        let paths: Vec<_> = reqs.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/b"]);
    }

    #[test]
    fn non_http_connections_are_ignored() {
        let mut s = HttpStream::new();
        // A TLS ClientHello as seen by a plain TCP write probe.
        assert!(s.feed(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01], 517).is_empty());
        assert!(matches!(s.state, State::Ignored));
        assert!(s.feed(b"GET / HTTP/1.1\r\n\r\n", 18).is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let inputs: &[&[u8]] = &[
            b"",
            b"\r\n\r\n",
            b"GET",
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
            b"\xff\xfe\x00",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\x01\x2d\x00\x00\x00\x01",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x01\x01\x08\x00\x00\x00\x01\xff",
        ];
        for input in inputs {
            for true_len in [input.len(), input.len() + 1, usize::MAX] {
                let mut s = HttpStream::new();
                for _ in 0..3 {
                    let _ = s.feed(input, true_len);
                }
            }
        }
        // true_len smaller than the capture is treated as the capture length.
        let mut s = HttpStream::new();
        assert_eq!(s.feed(b"GET / HTTP/1.1\r\n\r\n", 0).len(), 1);
    }

    // --- HTTP/2 -----------------------------------------------------------------------

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn request_headers<'a>(path: &'a str, token: &'a str) -> Vec<(&'a [u8], &'a [u8])> {
        vec![
            (b":method".as_slice(), b"GET".as_slice()),
            (b":scheme", b"https"),
            (b":path", path.as_bytes()),
            (b":authority", b"api.example.com"),
            (b"authorization", token.as_bytes()),
        ]
    }

    const SETTINGS: u8 = 0x4;
    const DATA: u8 = 0x0;
    const END_STREAM: u8 = 0x1;

    #[test]
    fn http2_requests_with_dynamic_table() {
        // loona's Encoder only indexes headers whose name is not in the static table, and
        // `authorization` is. So the authorization field is hand-encoded as "literal with
        // incremental indexing, name index 23" ahead of the encoder's output: the decoder
        // then holds [x-client (62), authorization (63)], which matches the encoder's own
        // view of index 62, and the second request refers to the token by index 63 only.
        let token = b"Bearer tok-1";
        let mut enc = Encoder::new();
        let mut first = vec![0x40 | 23, token.len() as u8];
        first.extend_from_slice(token);
        let pseudo = |path: &'static str| {
            vec![
                (b":method".as_slice(), b"GET".as_slice()),
                (b":scheme", b"https"),
                (b":path", path.as_bytes()),
                (b":authority", b"api.example.com"),
                (b"x-client", b"sigil-test/1.0"),
            ]
        };
        first.extend(enc.encode(pseudo("/one")));
        let mut second = enc.encode(pseudo("/two"));
        assert!(second.contains(&0xbe), "x-client comes from the dynamic table");
        second.push(0x80 | 63);
        assert!(!second.windows(token.len()).any(|w| w == token));

        let mut conn = PREFACE.to_vec();
        conn.extend(frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
        conn.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &first));
        let mut s = HttpStream::new();
        let reqs = s.feed(&conn, conn.len());
        assert_eq!(reqs.len(), 1);
        let later = frame(HEADERS, END_HEADERS | END_STREAM, 3, &second);
        let reqs2 = s.feed(&later, later.len());
        assert_eq!(reqs2.len(), 1);

        for (req, path) in [(&reqs[0], "/one"), (&reqs2[0], "/two")] {
            assert_eq!(req.protocol, Protocol::Http2);
            assert_eq!(req.method, "GET");
            assert_eq!(req.path, path);
            assert_eq!(req.authority.as_deref(), Some("api.example.com"));
            assert_eq!(header(req, "authorization"), Some("Bearer tok-1"));
            assert_eq!(header(req, "x-client"), Some("sigil-test/1.0"));
            assert!(req.headers.iter().all(|(n, _)| !n.starts_with(':')));
        }
    }

    #[test]
    fn http2_padded_priority_headers_and_continuation() {
        let mut enc = Encoder::new();
        let block = enc.encode(request_headers("/padded", "Bearer p"));
        let (a, b) = block.split_at(block.len() / 3);
        let (b, c) = b.split_at(b.len() / 2);
        let mut payload = vec![4u8]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 0, 16]); // exclusive dep on 0, weight 16
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0; 4]);
        let mut conn = PREFACE.to_vec();
        conn.extend(frame(HEADERS, PADDED | PRIORITY, 1, &payload));
        conn.extend(frame(CONTINUATION, 0, 1, b));
        conn.extend(frame(CONTINUATION, END_HEADERS, 1, c));
        // Deliver it in awkward pieces, splitting frame headers too.
        let mut s = HttpStream::new();
        let mut reqs = Vec::new();
        for piece in conn.chunks(7) {
            reqs.extend(s.feed(piece, piece.len()));
        }
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/padded");
        assert_eq!(header(&reqs[0], "authorization"), Some("Bearer p"));
    }

    #[test]
    fn http2_truncated_data_frames_are_skipped() {
        let mut enc = Encoder::new();
        let mut s = HttpStream::new();
        let mut start = PREFACE.to_vec();
        start.extend(frame(HEADERS, END_HEADERS, 1, &enc.encode(request_headers("/put", "x"))));
        assert_eq!(s.feed(&start, start.len()).len(), 1);
        // A 1 MiB DATA frame whose write was captured only in part.
        let data = frame(DATA, END_STREAM, 1, &vec![0u8; 1 << 20]);
        assert!(s.feed(&data[..4096], data.len()).is_empty());
        let next = frame(HEADERS, END_HEADERS, 3, &enc.encode(request_headers("/get", "y")));
        let reqs = s.feed(&next, next.len());
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/get");
        assert_eq!(header(&reqs[0], "authorization"), Some("y"));
    }

    #[test]
    fn http2_truncated_header_block_stops_decoding() {
        let mut enc = Encoder::new();
        let mut conn = PREFACE.to_vec();
        conn.extend(frame(HEADERS, END_HEADERS, 1, &enc.encode(request_headers("/a", "x"))));
        let cut = conn.len() - 3;
        let mut s = HttpStream::new();
        assert!(s.feed(&conn[..cut], conn.len()).is_empty());
        assert!(matches!(s.state, State::Ignored));
        let next = frame(HEADERS, END_HEADERS, 3, &enc.encode(request_headers("/b", "y")));
        assert!(s.feed(&next, next.len()).is_empty());
    }

    #[test]
    fn http2_bad_hpack_or_sequence_stops_decoding() {
        // Index 100 is not in any table.
        let mut conn = PREFACE.to_vec();
        conn.extend(frame(HEADERS, END_HEADERS, 1, &[0xe4]));
        let mut s = HttpStream::new();
        assert!(s.feed(&conn, conn.len()).is_empty());
        assert!(matches!(s.state, State::Ignored));

        // A DATA frame in the middle of a header block.
        let mut conn = PREFACE.to_vec();
        conn.extend(frame(HEADERS, 0, 1, &[0x82]));
        conn.extend(frame(DATA, 0, 1, b"x"));
        let mut s = HttpStream::new();
        assert!(s.feed(&conn, conn.len()).is_empty());
        assert!(matches!(s.state, State::Ignored));

        // Padding longer than the frame.
        let mut conn = PREFACE.to_vec();
        conn.extend(frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82]));
        let mut s = HttpStream::new();
        assert!(s.feed(&conn, conn.len()).is_empty());
        assert!(matches!(s.state, State::Ignored));
    }

    #[test]
    fn http2_trailers_are_not_requests() {
        let mut enc = Encoder::new();
        let mut conn = PREFACE.to_vec();
        conn.extend(frame(HEADERS, END_HEADERS, 1, &enc.encode(request_headers("/a", "x"))));
        conn.extend(frame(DATA, 0, 1, b"body"));
        let trailers = enc.encode([(b"grpc-status".as_slice(), b"0".as_slice())]);
        conn.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &trailers));
        let mut s = HttpStream::new();
        let reqs = s.feed(&conn, conn.len());
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/a");
    }

    #[test]
    fn http2_preface_split_across_writes() {
        let mut enc = Encoder::new();
        let mut conn = PREFACE.to_vec();
        conn.extend(frame(HEADERS, END_HEADERS, 1, &enc.encode(request_headers("/s", "x"))));
        let mut s = HttpStream::new();
        let reqs = feed_all(&mut s, &[&conn[..10], &conn[10..20], &conn[20..]]);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].protocol, Protocol::Http2);
    }

    #[test]
    fn h2c_upgrade_switches_to_http2() {
        let mut enc = Encoder::new();
        let mut s = HttpStream::new();
        let reqs = feed_all(&mut s, &[b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"]);
        assert_eq!(reqs.len(), 1);
        let mut conn = PREFACE.to_vec();
        conn.extend(frame(HEADERS, END_HEADERS, 3, &enc.encode(request_headers("/h2", "x"))));
        let reqs = s.feed(&conn, conn.len());
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].protocol, Protocol::Http2);
        assert_eq!(reqs[0].path, "/h2");
    }

    #[test]
    fn http2_oversized_header_block_stops_decoding() {
        let mut conn = PREFACE.to_vec();
        conn.extend(frame(HEADERS, 0, 1, &vec![0u8; MAX_HEAD]));
        conn.extend(frame(CONTINUATION, END_HEADERS, 1, &[0u8; 16]));
        let mut s = HttpStream::new();
        assert!(s.feed(&conn, conn.len()).is_empty());
        assert!(matches!(s.state, State::Ignored));
    }

    /// A network peer's view is irrelevant here: the evader is the client process itself
    /// (a workload hiding its credential use from the node's audit). One obsolete folded
    /// header, or one malformed line, must not make the whole request disappear.
    #[test]
    fn a_workload_cannot_hide_its_authorization_behind_a_folded_header() {
        let heads: [&[u8]; 5] = [
            // CRLF fold, then the credential.
            b"GET /a HTTP/1.1\r\nHost: h\r\nX-Old: one\r\n  two\r\nAuthorization: Bearer tok-1\r\n\r\n",
            // Tab fold, bare LF line ends.
            b"GET /a HTTP/1.1\nHost: h\nX-Old: one\n\ttwo\nAuthorization: Bearer tok-1\n\n",
            // A fold right after the request line (nothing to continue): skipped.
            b"GET /a HTTP/1.1\r\n folded-first\r\nHost: h\r\nAuthorization: Bearer tok-1\r\n\r\n",
            // A line with no colon and one with a control byte: skipped.
            b"GET /a HTTP/1.1\r\nHost: h\r\nnot a header\r\nX-Bad: a\x01b\r\nAuthorization: Bearer tok-1\r\n\r\n",
            // Found by the fuzzer: a folded line holding a NUL.
            b"GET /a HTTP/1.1\r\nHost: h\r\nX-Old: a\r\n \0\r\nAuthorization: Bearer tok-1\r\n\r\n",
        ];
        for head in heads {
            let mut s = HttpStream::new();
            let reqs = s.feed(head, head.len());
            let shown = String::from_utf8_lossy(head);
            assert_eq!(reqs.len(), 1, "{shown}");
            assert_eq!(header(&reqs[0], "authorization"), Some("Bearer tok-1"), "{shown}");
            assert_eq!(header(&reqs[0], "host"), Some("h"), "{shown}");
            let found = crate::trace::detect::detect(&reqs[0], 0, &[]);
            assert_eq!(found.len(), 1, "{shown}");
            assert_eq!(found[0].secret.expose(), b"tok-1");
        }
    }

    #[test]
    fn a_folded_authorization_value_is_joined_and_lengths_stay_true() {
        let first = b"POST /up HTTP/1.1\r\nAuthorization: Bearer\r\n tok-2\r\nContent-Length: 3\r\n\r\nabc";
        let second = b"GET /next HTTP/1.1\r\nX-Api-Key: k-3\r\n\r\n";
        let write = [&first[..], &second[..]].concat();
        let mut s = HttpStream::new();
        let reqs = s.feed(&write, write.len());
        assert_eq!(reqs.len(), 2, "the body was skipped by its true length");
        let auth = header(&reqs[0], "authorization").unwrap_or_default();
        assert_eq!(auth.split_whitespace().collect::<Vec<_>>(), ["Bearer", "tok-2"]);
        assert_eq!(reqs[1].path, "/next");
        assert_eq!(header(&reqs[1], "x-api-key"), Some("k-3"));
    }

    #[test]
    fn unfold_only_touches_folds_inside_the_head() {
        assert_eq!(unfold(b"GET / HTTP/1.1\r\nA: b\r\n\r\n"), None);
        let body_fold = b"GET / HTTP/1.1\r\nA: b\r\n\r\n continued-body";
        assert_eq!(unfold(body_fold), None);
        assert_eq!(unfold(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n").as_deref(), Some(&b"GET / HTTP/1.1\r\nA: b   c\r\n\r\n"[..]));
        // A partial head whose last line might still be folded is left for later.
        assert_eq!(unfold(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        for garbage in [&b""[..], b"\n", b"\n\n \n", b"x\n\t", b"\r\n\r"] {
            let _ = unfold(garbage);
        }
    }
}
