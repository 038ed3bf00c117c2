//! Any text as a test file (SPEC §6): it parses or is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = clpe_core::scenario::parse_suites(&text);
});
