//! `clpe bench`: applies a workload's documents as one batch, then decides every event
//! in order, in-process, and reports throughput, latency, memory and a digest.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clpe_core::{DecideOptions, Decision, Engine, EngineConfig, Event, PeerName, Time};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// Documents, applied as one batch.
    #[arg(long)]
    policies: String,
    /// Events, one JSON object per line.
    #[arg(long)]
    events: String,
    /// Expected decisions, one per line (`allow`/`deny`): any difference fails.
    #[arg(long)]
    expected: Option<String>,
    /// The engine's own peer.
    #[arg(long, default_value = "local")]
    local_peer: String,
    /// Threads deciding on the same engine (each takes the next 256 events when it is
    /// free, as a server's workers take requests). Each event keeps its own time, but
    /// threads decide in no fixed order between them, so decisions that depend on time
    /// or on earlier ones (rate limits, connection limits) may differ from run to run.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// While deciding, apply one small batch after another on another thread (a policy in
    /// a namespace of its own, applied then deleted), to measure decisions during updates.
    #[arg(long)]
    churn: bool,
    /// With `--churn`: at most this many batches a second (0: one right after another).
    /// Builds that apply faster apply more batches flat out; a rate compares them under
    /// the same load.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "churn")]
    churn_rate: u32,
    /// While deciding, render the monitor's metrics on another thread, then wait this many
    /// milliseconds, over and over (a Prometheus scrape, much more often), to measure
    /// decisions during scrapes. 0: one render right after another.
    #[arg(long, value_name = "MS")]
    scrape: Option<u64>,
    /// Decide the events this many times over (a longer run; `--expected` checks each pass).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Passes over the events decided before the timed ones, by each deciding thread,
    /// untimed and unchecked (their connections stay open, their counts stay counted). A
    /// first pass pays what a running engine pays once per policy and thread: the
    /// monitor's first count of each policy, data not yet in cache. `--warmup 0` times it.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Print the monitor's Prometheus metrics after the run.
    #[arg(long)]
    metrics: bool,
    /// Time each decision on an event as it lies in the list read at the start (likely
    /// out of the cache), not read again just before, as a just-parsed event would be.
    #[arg(long)]
    cold_events: bool,
    /// Also time the anchors' floor (names interned to integers, hash-set probes) on the
    /// same events, just before and just after the engine, and report the median's ratio
    /// to it: one run, one machine. Access-policy workloads of the anchors' shape only;
    /// the peak memory reported then includes the floor's.
    #[arg(long)]
    floor: bool,
}

#[derive(Serialize)]
struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
}

#[derive(Serialize)]
struct Report {
    events: usize,
    /// Untimed passes over the events before the timed ones.
    warmup_passes: usize,
    decisions_per_second: f64,
    latency_ns: Latency,
    /// What reading the clock around an empty region costs (median): taken off every
    /// decision's timed region, so a latency is the decision's own time.
    timer_ns: u64,
    apply_ms: f64,
    memory_bytes: u64,
    peak_memory_bytes: u64,
    threads: usize,
    digest: String,
    mismatches: usize,
    /// Batches applied while deciding (with `--churn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    churn_batches: Option<u64>,
    /// What one of those batches took to apply, the median, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    churn_batch_us: Option<u64>,
    /// Renders of the metrics made while deciding (with `--scrape`).
    #[serde(skip_serializing_if = "Option::is_none")]
    scrapes: Option<u64>,
    /// With `--floor`: the floor's nanoseconds per decision (the mean of its runs before
    /// and after the engine's; each run's figure is itself a mean over one loop, as
    /// anchors.tsv's floor is timed, where the engine's `p50` is a median of decisions
    /// timed one by one), the median latency over it, and the events on which it decided
    /// otherwise than the engine (0, or one of the two is wrong).
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_ns: Option<f64>,
    /// Its two runs apart: how far the machine drifted during the engine's.
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_before_ns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_after_ns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_mismatches: Option<usize>,
    /// With `--floor`: the floor timed as the engine is (each decision on its own, the
    /// clock's cost taken off, the median), after its loop runs; and `p50` over it.
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_p50_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    floor_p50_ratio: Option<f64>,
}

/// Events a thread takes at a time with `--threads`.
const CHUNK: usize = 256;

/// Resident memory from /proc (bytes); 0 where there is no /proc.
fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn ticker() -> clpe_core::dispatcher::Ticker {
    let origin = Instant::now();
    Arc::new(move || origin.elapsed().as_nanos() as u64)
}

fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// What the report keeps of a decision: its event's position, its latency, and what the
/// digest and the expected file look at. The response itself is dropped as soon as it is
/// made (untimed), as a caller would, so a long run does not pile up responses. 16 bytes:
/// the list grows by one entry per decision while the engine is timed, and a larger entry
/// (72 bytes, with the target's name in it) streamed through the cache the engine's data
/// lives in.
#[derive(Clone, Copy)]
struct Kept {
    index: u32,
    nanos: u32,
    /// 0: no target; else the position + 1 in the deciding thread's [`Decided`] targets.
    target: u32,
    decision: Decision,
}

/// One thread's decisions, the targets they name, and the reasons of decisions that
/// differ from the expected file.
#[derive(Default)]
struct Decided {
    kept: Vec<Kept>,
    targets: Vec<PeerName>,
    /// A target's position in `targets`.
    numbers: FxHashMap<PeerName, u32>,
    /// (decision's position, what it decided, why).
    wrong: Vec<(u32, Decision, String)>,
}

impl Decided {
    fn target(&mut self, peer: Option<&PeerName>) -> u32 {
        let Some(peer) = peer else {
            return 0;
        };
        let next = u32::try_from(self.targets.len()).unwrap_or(u32::MAX);
        let at = *self.numbers.entry(peer.clone()).or_insert_with(|| {
            self.targets.push(peer.clone());
            next
        });
        at.saturating_add(1)
    }
}

fn digest_of(k: &Kept, target: Option<&PeerName>, hash: &mut u64) {
    fnv(hash, k.decision.as_str().as_bytes());
    fnv(hash, b" ");
    if let Some(t) = target {
        fnv(hash, t.as_str().as_bytes());
    }
    fnv(hash, b"\n");
}

pub fn run(args: Args) -> Result<Exit> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.floor && (args.threads > 1 || args.churn || args.scrape.is_some()) {
        bail!(
            "--floor times one thread deciding undisturbed: not with --threads, --churn or --scrape"
        );
    }
    let events_text = std::fs::read_to_string(&args.events)
        .with_context(|| format!("reading {}", args.events))?;
    let mut events = Vec::new();
    for (i, line) in events_text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = Event::from_json(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", args.events, i + 1))?;
        events.push(event);
    }
    let expected: Option<Vec<String>> = match &args.expected {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {path}"))?
                .lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
        ),
        None => None,
    };

    let config = EngineConfig {
        local_peer: PeerName::from(args.local_peer.as_str()),
        ticker: Some(ticker()),
        loader: crate::loader(),
        ..EngineConfig::default()
    };
    let engine = Engine::new(config);
    // The file's text is read first, and kept until memory is measured: it is input, not
    // what the engine holds. Parsing it is part of applying.
    let inputs = crate::files::read_inputs(&args.policies)?;
    let rss_before = proc_status("VmRSS:");
    let t0 = Instant::now();
    let docs = match crate::files::parse_inputs(&inputs) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("invalid: {e}");
            return Ok(Exit::Failed);
        }
    };
    let n_docs = docs.len();
    if let Err(e) = engine.apply(docs) {
        eprintln!("invalid: {e}");
        return Ok(Exit::Failed);
    }
    let apply_ms = t0.elapsed().as_secs_f64() * 1e3;
    // What the batch's temporaries occupied is free now; hand it back before measuring
    // what the engine holds (the daemon does the same after a batch). The input text is
    // still held: it was counted before, so it is not counted as added.
    crate::release_free_memory();
    let memory_bytes = proc_status("VmRSS:").saturating_sub(rss_before);
    // The floor is built once the engine is applied and its memory measured, from the
    // input parsed again: neither its time nor its memory is counted as the engine's.
    let floor = match args.floor {
        true => {
            let docs =
                crate::files::parse_inputs(&inputs).map_err(|e| anyhow::anyhow!("--floor: {e}"))?;
            let floor =
                crate::floor::Floor::new(&docs).map_err(|e| anyhow::anyhow!("--floor: {e}"))?;
            let events = (floor.events(&events)).map_err(|e| anyhow::anyhow!("--floor: {e}"))?;
            Some((floor, events))
        }
        false => None,
    };
    drop(inputs);

    let threads = args.threads;
    let repeat = args.repeat.max(1);
    if u32::try_from(events.len().saturating_mul(repeat)).is_err() {
        bail!("--repeat: more than {} decisions in one run", u32::MAX);
    }
    let timer_ns = crate::floor::timer_overhead();
    // The warm-up's decisions take the first times; the timed ones follow them.
    let warm = events.len().saturating_mul(args.warmup);
    if u32::try_from(warm).is_err() {
        bail!("--warmup: more than {} decisions", u32::MAX);
    }
    if let Some((f, e)) = floor.as_ref().filter(|_| args.warmup > 0) {
        f.time(e, args.warmup);
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let churned = std::sync::atomic::AtomicU64::new(0);
    let churn_times = std::sync::Mutex::new(Vec::new());
    let scraped = std::sync::atomic::AtomicU64::new(0);
    let floor_before = floor.as_ref().map(|(f, e)| f.time(e, repeat));
    // Each deciding thread makes the warm-up passes itself, then all start timing together:
    // what a pass warms is partly the deciding thread's own (the monitor's counts are
    // kept per thread), so a warm-up on another thread would leave the timed one cold.
    let ready = std::sync::Barrier::new(
        threads + usize::from(args.churn) + usize::from(args.scrape.is_some()),
    );
    let started = std::sync::OnceLock::new();
    let expected_of = |i: usize| -> Option<&str> {
        let exp = expected.as_ref()?;
        Some(exp.get(i).map(String::as_str).unwrap_or("<missing>"))
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Decided> = std::thread::scope(|s| {
        if args.churn {
            let (engine, done, churned, ready) = (&engine, &done, &churned, &ready);
            let (started, churn_times, rate) = (&started, &churn_times, args.churn_rate);
            s.spawn(move || {
                ready.wait();
                started.get_or_init(Instant::now);
                let times = churn(engine, done, churned, rate);
                if let Ok(mut t) = churn_times.lock() {
                    *t = times;
                }
            });
        }
        if let Some(ms) = args.scrape {
            let (engine, done, scraped, ready) = (&engine, &done, &scraped, &ready);
            let started = &started;
            s.spawn(move || {
                ready.wait();
                started.get_or_init(Instant::now);
                let render = || {
                    std::hint::black_box(engine.metrics());
                    true
                };
                let n = scrape_until(done, ms, render);
                scraped.store(n, std::sync::atomic::Ordering::Relaxed);
            });
        }
        // Threads take the events in turns of `CHUNK`, whoever is free next (as a
        // server's workers take requests): a thread whose core is slowed by the VM's
        // neighbours does less of the work instead of holding up the run's end.
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let engine = &engine;
                let events = &events;
                let expected_of = &expected_of;
                let next = &next;
                let (ready, started) = (&ready, &started);
                s.spawn(move || {
                    for (i, event) in events.iter().cycle().take(warm).enumerate() {
                        let now = Time(i as u64 * 1_000);
                        let r = engine.decide(event, now, DecideOptions::default());
                        let _ = std::hint::black_box(r);
                    }
                    // Whoever is released first starts the clock (the churning thread may
                    // be the barrier's leader).
                    ready.wait();
                    started.get_or_init(Instant::now);
                    let mut out = Decided {
                        kept: Vec::with_capacity(events.len() * repeat / threads + 1),
                        ..Decided::default()
                    };
                    let n = events.len();
                    let total = n * repeat;
                    let turns = std::iter::from_fn(|| {
                        let start = next.fetch_add(CHUNK, std::sync::atomic::Ordering::Relaxed);
                        (start < total).then(|| start..(start + CHUNK).min(total))
                    });
                    for i in turns.flatten() {
                        let Some(event) = events.get(i % n) else {
                            break;
                        };
                        let now = Time((warm + i) as u64 * 1_000);
                        // The daemon decides an event it has just parsed, so in cache;
                        // here events were parsed long before, into a list larger than
                        // the cache. Reading it once (untimed) puts it where the daemon's
                        // would be.
                        if !args.cold_events {
                            let _ = std::hint::black_box(event.check());
                        }
                        let t0 = Instant::now();
                        let r = engine.decide(event, now, DecideOptions::default());
                        let ns = (t0.elapsed().as_nanos() as u64).saturating_sub(timer_ns);
                        if let Ok(r) = r {
                            // `total` fits in a u32 (checked before the run).
                            let index = i as u32;
                            if expected_of(i % n).is_some_and(|w| w != r.decision.as_str()) {
                                out.wrong.push((index, r.decision, r.reason.to_string()));
                            }
                            let target = out.target(r.target_peer.as_ref());
                            out.kept.push(Kept {
                                index,
                                nanos: u32::try_from(ns).unwrap_or(u32::MAX),
                                target,
                                decision: r.decision,
                            });
                        }
                    }
                    out
                })
            })
            .collect();
        let out = handles.into_iter().filter_map(|h| h.join().ok()).collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    });
    let wall = started.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
    let floor_after = floor.as_ref().map(|(f, e)| f.time(e, repeat));
    let floor_p50 = (floor.as_ref()).map(|(f, e)| f.median_each(e, repeat, timer_ns));
    // Each decision with its target's name, in event order.
    let mut all: Vec<(Kept, Option<&PeerName>)> = (results.iter())
        .flat_map(|d| {
            (d.kept.iter()).map(|k| {
                (
                    *k,
                    (k.target as usize)
                        .checked_sub(1)
                        .and_then(|t| d.targets.get(t)),
                )
            })
        })
        .collect();
    all.sort_by_key(|(k, _)| k.index);
    let mut lat: Vec<u64> = all.iter().map(|(k, _)| u64::from(k.nanos)).collect();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for (k, target) in &all {
        digest_of(k, *target, &mut hash);
    }
    let mut wrong: Vec<&(u32, Decision, String)> = results.iter().flat_map(|d| &d.wrong).collect();
    wrong.sort_by_key(|(index, _, _)| *index);
    let mut mismatches = wrong.len();
    for (index, got, reason) in wrong.iter().take(5) {
        let at = *index as usize % events.len();
        let want = expected_of(at).unwrap_or_default();
        eprintln!(
            "event {}: expected {want}, got {} ({reason})",
            at + 1,
            got.as_str()
        );
    }
    if let Some(exp) = &expected
        && exp.len() != events.len()
    {
        eprintln!("{} expected lines for {} events", exp.len(), events.len());
        mismatches += exp.len().abs_diff(events.len());
    }
    let floor_ns = floor_before.zip(floor_after).map(|(a, b)| (a + b) / 2.0);
    let floor_mismatches = floor.as_ref().map(|(f, fe)| {
        (all.iter())
            .filter(|(k, _)| {
                fe.get(k.index as usize % fe.len()).map(|e| f.decide(e)) != Some(k.decision)
            })
            .count()
    });
    let p50 = pct(0.5);
    let report = Report {
        events: all.len(),
        warmup_passes: args.warmup,
        decisions_per_second: all.len() as f64 / wall.max(1e-9),
        latency_ns: Latency {
            p50,
            p90: pct(0.9),
            p99: pct(0.99),
            max: lat.last().copied().unwrap_or(0),
        },
        timer_ns,
        apply_ms,
        memory_bytes,
        // With `--floor`, the floor's tables and the input parsed again for it are part
        // of the process's peak (not of `memory_bytes` or `apply_ms`).
        peak_memory_bytes: proc_status("VmHWM:"),
        threads,
        digest: format!("{hash:016x}"),
        mismatches,
        churn_batches: args
            .churn
            .then(|| churned.load(std::sync::atomic::Ordering::Relaxed)),
        churn_batch_us: churn_times.lock().ok().and_then(|mut t| {
            t.sort_unstable();
            t.get(t.len() / 2).map(|ns| ns / 1000)
        }),
        scrapes: args
            .scrape
            .map(|_| scraped.load(std::sync::atomic::Ordering::Relaxed)),
        floor_ns,
        floor_before_ns: floor_before,
        floor_after_ns: floor_after,
        floor_ratio: floor_ns.map(|f| p50 as f64 / f.max(1e-9)),
        floor_mismatches,
        floor_p50_ns: floor_p50,
        floor_p50_ratio: floor_p50.map(|f| p50 as f64 / (f as f64).max(1.0)),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "events          {} (after {} untimed pass(es) over them)",
            report.events, report.warmup_passes
        );
        println!("threads         {}", report.threads);
        println!("decisions/s     {:.0}", report.decisions_per_second);
        println!(
            "latency (ns)    p50 {}  p90 {}  p99 {}  max {}",
            report.latency_ns.p50,
            report.latency_ns.p90,
            report.latency_ns.p99,
            report.latency_ns.max
        );
        println!(
            "                (the clock's own {} ns taken off each timing)",
            report.timer_ns
        );
        println!(
            "apply           {:.1} ms ({n_docs} documents), +{:.1} MiB resident",
            apply_ms,
            memory_bytes as f64 / 1048576.0
        );
        println!(
            "peak memory     {:.1} MiB",
            report.peak_memory_bytes as f64 / 1048576.0
        );
        println!("digest          {}", report.digest);
        if expected.is_some() {
            println!("mismatches      {}", report.mismatches);
        }
        if let Some(n) = report.churn_batches {
            println!("churn           {n} batches applied while deciding");
        }
        if let Some(us) = report.churn_batch_us {
            println!("                (each took {us} µs to apply, the median)");
        }
        if let Some(n) = report.scrapes {
            println!("scrape          {n} renders of the metrics while deciding");
        }
        if let (Some(f), Some(r), Some(m)) =
            (report.floor_ns, report.floor_ratio, report.floor_mismatches)
        {
            let (b, a) = (floor_before.unwrap_or(0.0), floor_after.unwrap_or(0.0));
            println!("floor           {f:.1} ns/decision ({b:.1} before, {a:.1} after: a mean");
            println!("                over a loop, as anchors.tsv's); p50 is {r:.2}x it");
            println!("                {m} events decided otherwise by the floor");
        }
        if let (Some(f), Some(r)) = (report.floor_p50_ns, report.floor_p50_ratio) {
            println!("floor, timed as the engine is: p50 {f} ns; the engine's p50 is {r:.2}x it");
        }
    }
    if args.metrics {
        print!("{}", engine.metrics());
    }
    Ok(
        if report.mismatches == 0 && report.floor_mismatches.unwrap_or(0) == 0 {
            Exit::Ok
        } else {
            Exit::Failed
        },
    )
}

/// Scrapes (`scrape` says whether one was served), then sleeps `ms`, until `done`, and at
/// least once however short the run: the scrapes served. For `clpe bench --scrape` (the
/// counts read while the deciding threads keep counting, which must not make them wait)
/// and `clpe loadgen --scrape`.
pub(crate) fn scrape_until(
    done: &std::sync::atomic::AtomicBool,
    ms: u64,
    mut scrape: impl FnMut() -> bool,
) -> u64 {
    let mut served = 0;
    loop {
        served += u64::from(scrape());
        if done.load(std::sync::atomic::Ordering::Relaxed) {
            return served;
        }
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Applies, then deletes, one access policy at a time until `done` (at most `rate`
/// batches a second, unless 0): updates that every decision must see whole or not at
/// all, and that must not slow decisions down. Returns what each batch took, in
/// nanoseconds.
fn churn(
    engine: &Engine,
    done: &std::sync::atomic::AtomicBool,
    churned: &std::sync::atomic::AtomicU64,
    rate: u32,
) -> Vec<u64> {
    use std::sync::atomic::Ordering;
    let doc = serde_json::json!({
        "kind": "AccessPolicy",
        "metadata": {"name": "churn", "namespace": "clpe-bench-churn"},
        "spec": {"action": "deny", "from": [{"workloadSelector": {}}], "to": [{"workloadSelector": {}}]},
    });
    let key = clpe_core::DocKey::new(
        clpe_core::Kind::AccessPolicy,
        Some("clpe-bench-churn"),
        "churn",
    );
    let mut times = Vec::new();
    // Two batches (an apply and a delete) per turn, each turn starting on time.
    let turn = (rate > 0).then(|| std::time::Duration::from_secs(2) / rate);
    let start = Instant::now();
    let mut turns = 0u32;
    while !done.load(Ordering::Relaxed) {
        if let Some(turn) = turn {
            let due = start + turn * turns;
            turns += 1;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let Ok(d) = clpe_core::document::parse_value(doc.clone(), 1) else {
            break;
        };
        let t0 = Instant::now();
        if engine.apply(vec![d]).is_err() {
            break;
        }
        let t1 = Instant::now();
        if engine.delete(std::slice::from_ref(&key)).is_err() {
            break;
        }
        times.extend([t1 - t0, t1.elapsed()].map(|d| d.as_nanos() as u64));
        churned.fetch_add(2, Ordering::Relaxed);
    }
    times
}
