//! One engine through a sequence of batches: the input is split at NUL bytes; each part
//! applies documents, deletes the documents it names (a first byte of `-`), or is
//! decided as an event (a first byte of `{`). After every batch, applied or refused,
//! the engine decides every kind of event. This drives the snapshot's reuse of what a
//! batch did not change (numbering, exports, access indexes) through arbitrary orders.
#![no_main]

use clpe_core::{Engine, EngineConfig, Event, parse_documents};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let engine = Engine::new(EngineConfig::default());
    let mut now = 0u64;
    for part in data.split(|b| *b == 0).take(16) {
        now += 1_000_000_000;
        let text = String::from_utf8_lossy(part);
        match part.first() {
            Some(b'{') => {
                if let Ok(event) = Event::from_json(&text) {
                    common::decide(&engine, &event, now);
                }
                continue;
            }
            Some(b'-') => {
                if let Ok(docs) = parse_documents(text.get(1..).unwrap_or_default()) {
                    let keys: Vec<_> = docs.into_iter().map(|d| d.key).collect();
                    let _ = engine.delete(&keys);
                }
            }
            _ => {
                if let Ok(docs) = parse_documents(&text) {
                    let _ = engine.apply(docs);
                }
            }
        }
        common::decide_all(&engine, now);
    }
});
