//! Drives the collector's CloudTrail and GCP audit-log parsers (their public entry points,
//! plain and gzip-named inputs) with arbitrary bytes: an uploaded log is attacker-shaped
//! input, and a bad record must become an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The collector's own module, unchanged (it only needs serde, serde_json, flate2 and
/// thiserror), so the fuzzer exercises exactly the code the collector runs.
#[allow(dead_code, unused_imports)]
#[path = "../../collector/src/cloud/mod.rs"]
mod cloud;

use cloud::{cloudtrail, gcp};

fuzz_target!(|data: &[u8]| {
    for name in ["fuzz.json", "fuzz.json.gz"] {
        let _ = cloudtrail::parse(name, data);
        let _ = gcp::parse(name, data);
    }
});
