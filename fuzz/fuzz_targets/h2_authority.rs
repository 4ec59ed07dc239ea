//! Drives the Workload API's `:authority` rewriter (the adapter every gRPC-core client's
//! bytes pass through before h2) with arbitrary client bytes, fed in arbitrary pieces.
//!
//! The first byte chooses the piece size; the rest is prefixed with the HTTP/2 client
//! preface half of the time so the fuzzer reaches frame and HPACK parsing quickly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_agent::issue::h2_authority::Rewriter;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else { return };
    let mut input = Vec::with_capacity(PREFACE.len() + rest.len());
    if ctl & 0x80 == 0 {
        input.extend_from_slice(PREFACE);
    }
    input.extend_from_slice(rest);
    let piece = usize::from(ctl & 0x7f).max(1);
    let mut rewriter = Rewriter::default();
    let mut out = Vec::new();
    for chunk in input.chunks(piece) {
        rewriter.feed(chunk, &mut out);
    }
    // Bytes that are not an HTTP/2 connection are h2's to judge: passed on unchanged.
    let n = input.len().min(PREFACE.len());
    if input[..n] != PREFACE[..n] {
        assert_eq!(out, input);
    }
});
