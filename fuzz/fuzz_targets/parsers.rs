//! Drives the credential-tracing parsers with arbitrary captures.
//!
//! The input is read as a sequence of writes: a two-byte control word chooses how many
//! bytes the write has and whether (and by how much) its capture was truncated, the way
//! the kernel truncates large writes. The same bytes also go straight to the detectors
//! as header values, since detection must survive anything a client can send.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_agent::trace::{
    detect::detect,
    http::{HttpStream, Protocol, Request},
    redact::strip_credential_params,
    response::{ResponseStream, read_body},
};

const HEADER_NAMES: &[&str] = &["authorization", "Proxy-Authorization", "x-api-key", "x-amz-security-token", "apikey"];

/// What a response yields is only ever well-formed identifiers, never made up.
fn check_obtained(o: &sigil_agent::trace::response::Obtained) {
    if let Some(id) = &o.identifier {
        assert!(id.len() >= 16 && id.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()), "{id}");
    }
    assert!(o.expires_in.is_none_or(|s| s >= 0));
    assert!(!o.format.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let issuers = ["https://sigil.example".to_owned()];
    let mut stream = HttpStream::new();
    let mut responses = ResponseStream::default();
    let mut rest = data;
    while let [len, ctl, tail @ ..] = rest {
        // ctl bit 7: scale the length by 64 to reach multi-frame writes.
        let want = usize::from(*len) << if ctl & 0x80 != 0 { 6 } else { 0 };
        let (write, after) = tail.split_at(want.min(tail.len()));
        rest = after;
        // ctl bits 0-6: how many bytes the write really had beyond its capture; 0x7f
        // means a huge write, as with a large upload.
        let extra = match ctl & 0x7f {
            0x7f => 1 << 20,
            0x7e => usize::MAX / 2,
            n => usize::from(n) * 37,
        };
        for request in stream.feed(write, write.len().saturating_add(extra)) {
            check(&request, &issuers);
        }
        // The same reads as a response to a credential exchange: never a panic, and a
        // key id is only ever reported as an AWS key id.
        if let Some(Ok(obtained)) = responses.feed(write, write.len().saturating_add(extra)) {
            check_obtained(&obtained);
        }
    }
    if let Ok(obtained) = read_body(data) {
        check_obtained(&obtained);
    }

    // The raw input as header values and as a request target.
    let text = String::from_utf8_lossy(data);
    let mut headers = Vec::new();
    for (line, name) in text.split('\n').zip(HEADER_NAMES.iter().cycle()) {
        headers.push(((*name).to_owned(), line.to_owned()));
    }
    let request = Request { protocol: Protocol::Http1, method: "GET".into(), path: text.clone().into_owned(), authority: None, headers };
    check(&request, &issuers);
    folded_headers_never_hide_authorization(data);
});

/// The raw input as an obsolete folded continuation line, and as a header line of its
/// own, between two well-formed headers: the `Authorization` after it must still be
/// recovered and detected (issue 14: one malformed header must not hide a credential).
fn folded_headers_never_hide_authorization(data: &[u8]) {
    let junk: Vec<u8> = data.iter().copied().filter(|b| *b != b'\n' && *b != b'\r').take(512).collect();
    // An empty line of its own would end the head: that is the protocol, not evasion.
    let own_line: &[u8] = if junk.is_empty() { b"X-Old: a\r\n " } else { b"X-Old: a\r\n" };
    for before in [&b"X-Old: a\r\n "[..], b"X-Old: a\r\n\t", own_line] {
        let mut head = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        head.extend_from_slice(before);
        head.extend_from_slice(&junk);
        head.extend_from_slice(b"\r\nAuthorization: Bearer fuzz-token-1\r\n\r\n");
        let requests = HttpStream::new().feed(&head, head.len());
        let seen = requests.iter().any(|r| detect(r, 0, &[]).iter().any(|c| c.secret.expose() == b"fuzz-token-1"));
        assert!(seen, "credential hidden by {:?}", String::from_utf8_lossy(&head));
    }
}

fn check(request: &Request, issuers: &[String]) {
    for now in [0, 1_700_000_000, i64::MIN, i64::MAX] {
        for credential in detect(request, now, issuers) {
            // Debug output may show the identifiers (an AWS key id is both) but never
            // the secret itself.
            let expected = format!(
                "Credential {{ detector: {:?}, class: {:?}, identifiers: {:?}, \
                 secret: Secret(<redacted>) }}",
                credential.detector, credential.class, credential.identifiers
            );
            assert_eq!(format!("{credential:?}"), expected);
        }
    }
    let stripped = strip_credential_params(&request.path);
    assert!(stripped.len() <= request.path.len());
}
