//! Any text as a batch of documents: it parses or is refused; what parses applies or is
//! refused; an engine it built decides every kind of event.
#![no_main]

use clpe_core::{Engine, EngineConfig, parse_documents};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(docs) = parse_documents(&text) {
        let engine = Engine::new(EngineConfig::default());
        if engine.apply(docs).is_ok() {
            common::decide_all(&engine, 1_000);
        }
    }
});
