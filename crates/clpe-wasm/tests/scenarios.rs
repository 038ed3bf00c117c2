//! The project's WASM scenarios (`tests/scenarios/wasm-*.yaml`) run on the in-process
//! engine with this crate's loader, as `clpe test` runs them once the loader is
//! registered. `moduleFile` paths are resolved relative to the scenario file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::Path;

use base64::Engine as _;
use clpe_core::EngineConfig;
use clpe_core::scenario::{EngineTarget, Report, Step, parse_suites, run_suite};
use serde_json::Value;

/// Inlines `spec.moduleFile` of WasmAgent documents, as the CLI does.
fn resolve(value: &mut Value, base: &Path) {
    match value {
        Value::Object(map) => {
            if map.get("kind").and_then(Value::as_str) == Some("WasmAgent")
                && let Some(Value::Object(spec)) = map.get_mut("spec")
                && let Some(Value::String(file)) = spec.remove("moduleFile")
            {
                let path = base.join(&file);
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("moduleFile {}: {e}", path.display()));
                spec.insert(
                    "module".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(bytes)
                        .into(),
                );
            }
            map.values_mut().for_each(|v| resolve(v, base));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| resolve(v, base)),
        _ => {}
    }
}

#[test]
fn wasm_scenarios_pass() {
    // The scenarios load the example agents: build them if they are missing.
    support::example("business-hours");
    support::example("prefer-label");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("wasm-") && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected the wasm-*.yaml scenarios in {}",
        dir.display()
    );
    let mut total = Report::default();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut suites = parse_suites(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for suite in &mut suites {
            suite.setup.iter_mut().for_each(|d| resolve(d, &dir));
            for step in &mut suite.steps {
                if let Step::Apply(docs) | Step::ApplyError(docs) = step {
                    docs.iter_mut().for_each(|d| resolve(d, &dir));
                }
            }
            let config = EngineConfig {
                loader: Some(support::loader()),
                ..EngineConfig::default()
            };
            let mut target = EngineTarget::new(suite.local_peer.as_deref(), config);
            let mut report = Report::default();
            run_suite(suite, &mut target, &mut report);
            for f in &report.failures {
                eprintln!(
                    "{}: suite `{}`: step {}: {}",
                    file.display(),
                    f.suite,
                    f.step,
                    f.message
                );
            }
            total.passed += report.passed;
            total.failures.extend(report.failures);
        }
    }
    eprintln!(
        "wasm scenarios: {} passed, {} failed",
        total.passed,
        total.failures.len()
    );
    assert!(
        total.failures.is_empty(),
        "{} failing steps (listed above)",
        total.failures.len()
    );
}
