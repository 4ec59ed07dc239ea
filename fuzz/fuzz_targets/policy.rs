//! Drives the registration-policy parser (TOML entries and their selectors) and the pods
//! file parser with arbitrary text: a bad policy must be a clear error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_agent::issue::policy;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = policy::parse(&text);
    let _ = policy::parse_pods(&text);
    for line in text.lines() {
        let _ = policy::Selector::parse(line);
    }
});
