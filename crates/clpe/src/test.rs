//! `clpe test FILE...`: runs policy test files (SPEC §6) on the in-process engine with a
//! virtual clock, or with `--daemon` through a fresh `clpe serve` per suite.

use anyhow::Result;
use clpe_core::EngineConfig;
use clpe_core::scenario::{EngineTarget, Report, Step, parse_suites, run_suite};

use crate::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// Test files (YAML, one suite per document).
    #[arg(required = true)]
    files: Vec<String>,
    /// Run every suite through a fresh daemon (temporary data directory, ephemeral
    /// port) over its HTTP API; suites with `advance` steps need the virtual clock and
    /// run in-process (the output says so).
    #[arg(long)]
    daemon: bool,
}

pub fn run(args: Args) -> Result<Exit> {
    let mut total = Report::default();
    let mut broken = 0;
    for path in &args.files {
        let file = std::path::Path::new(path);
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                println!("{path}: cannot read: {e}");
                broken += 1;
                continue;
            }
        };
        let mut suites = match parse_suites(&text) {
            Ok(s) => s,
            Err(e) => {
                println!("{path}: {e}");
                broken += 1;
                continue;
            }
        };
        let base = crate::files::base_dir(file);
        let mut resolve_failed = false;
        for suite in &mut suites {
            let mut docs: Vec<&mut serde_json::Value> = suite.setup.iter_mut().collect();
            for step in &mut suite.steps {
                if let Step::Apply(d) | Step::ApplyError(d) = step {
                    docs.extend(d.iter_mut());
                }
            }
            for d in docs {
                if let Err(e) = crate::files::resolve_module_files(d, &base) {
                    println!("{path}: suite `{}`: {e:#}", suite.name);
                    resolve_failed = true;
                }
            }
        }
        if resolve_failed {
            broken += 1;
            continue;
        }
        for suite in &suites {
            let mut report = Report::default();
            let advances = suite.steps.iter().any(|s| matches!(s, Step::Advance(_)));
            if args.daemon && !advances {
                match crate::test_daemon::HttpTarget::start(suite.local_peer.as_deref()) {
                    Ok(mut target) => run_suite(suite, &mut target, &mut report),
                    Err(e) => {
                        println!(
                            "{path}: suite `{}`: cannot start the daemon: {e:#}",
                            suite.name
                        );
                        broken += 1;
                        continue;
                    }
                }
            } else {
                if args.daemon {
                    println!(
                        "{path}: suite `{}`: runs in-process (it advances the virtual clock)",
                        suite.name
                    );
                }
                let config = EngineConfig {
                    loader: crate::loader(),
                    ..EngineConfig::default()
                };
                let mut target = EngineTarget::new(suite.local_peer.as_deref(), config);
                run_suite(suite, &mut target, &mut report);
            }
            for f in &report.failures {
                let at = if f.step == 0 {
                    "setup".to_owned()
                } else {
                    format!("step {}", f.step)
                };
                println!("{path}: suite `{}`: {at}: {}", f.suite, f.message);
            }
            total.passed += report.passed;
            total.failures.extend(report.failures);
        }
    }
    let failed = total.failures.len() + broken;
    println!("{} passed, {failed} failed", total.passed);
    Ok(if failed == 0 { Exit::Ok } else { Exit::Failed })
}
