//! The golden corpus through the daemon: `clpe test --daemon` starts a fresh daemon per
//! suite and runs every step over its HTTP API (suites that advance the virtual clock
//! run in-process, and the output says so).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

fn yaml_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    files
}

fn run_through_daemon(dir: &str) {
    let files = yaml_files(dir);
    assert!(!files.is_empty(), "no scenarios in {dir}");
    let out = Command::new(env!("CARGO_BIN_EXE_clpe"))
        .arg("test")
        .arg("--daemon")
        .args(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "clpe test --daemon failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().last().unwrap_or("");
    assert!(
        summary.ends_with(" 0 failed") && !summary.starts_with("0 passed"),
        "{stdout}"
    );
}

#[test]
fn shared_scenarios_pass_through_the_daemon() {
    run_through_daemon(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/scenarios"
    ));
}

#[test]
fn our_scenarios_pass_through_the_daemon() {
    run_through_daemon(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/scenarios"
    ));
}
