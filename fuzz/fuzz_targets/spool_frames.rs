//! Drives the spool's record reader with arbitrary segment bytes: a segment on disk may be
//! torn or rotten, and reading it must stop at the first bad record with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_agent::stream::spool::decode_records;

fuzz_target!(|data: &[u8]| {
    let decoded = decode_records(data);
    // Every intact record takes at least its 8-byte frame and 10-byte body header, and
    // reading only ends without a reason at the end of the bytes.
    assert!(decoded.records * 18 <= decoded.consumed && decoded.consumed <= data.len());
    assert!(decoded.stopped.is_some() || decoded.consumed == data.len());
});
