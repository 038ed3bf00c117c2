//! The `monitor` agent (SPEC §3.7): counts every event and decision, measures latency,
//! tracks bytes of closed connections, keeps a bounded decision log, renders it all as
//! Prometheus text.
//!
//! Counters live in per-thread shards (a thread always uses the same shard), so two
//! threads deciding at once never wait on each other; the log is taken with `try_lock`
//! and an entry that would have to wait is dropped and counted instead.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::agent::{Agent, Outcome, Verdict};
use crate::context::Context;
use crate::error::AgentError;
use crate::event::{Decision, Event, EventType, Response};
use crate::names::Time;
use crate::runtime::Runtime;

const SHARDS: usize = 16;

/// Histogram upper bounds, nanoseconds: fine enough for sub-microsecond decisions.
const BOUNDS: [u64; 20] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    1_000_000_000,
];

#[derive(Clone, Default)]
struct Histogram {
    buckets: [u64; BOUNDS.len()],
    count: u64,
    sum_nanos: u64,
}

impl Histogram {
    fn record(&mut self, nanos: u64) {
        if let Some(i) = BOUNDS.iter().position(|b| nanos <= *b)
            && let Some(b) = self.buckets.get_mut(i)
        {
            *b += 1;
        }
        self.count += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum_nanos = self.sum_nanos.saturating_add(other.sum_nanos);
    }
}

/// The address of a shared name (a policy's `matched_by`, an agent's name): counting by
/// address needs no string hashing and no reference-count traffic on the hot path.
/// INVARIANT: the map keeps the `Arc` of every address it holds, so an address cannot be
/// reused for another string while it is a key. Equal strings at different addresses
/// (from two snapshots) are merged when rendering.
fn addr(name: &Option<Arc<str>>) -> usize {
    name.as_ref()
        .map_or(0, |a| Arc::as_ptr(a) as *const u8 as usize)
}

/// One shard's decision log and its sequence number.
type Log = (VecDeque<LogEntry>, u64);

/// Bytes sent, bytes received, connections closed.
type Bytes = (u64, u64, u64);

type DecisionKey = (EventType, Decision, usize, usize);

/// A count, and the names its key's addresses point at.
type Named = (u64, Option<Arc<str>>, Option<Arc<str>>);

#[derive(Default)]
struct Shard {
    events: [u64; 4],
    decisions: FxHashMap<DecisionKey, Named>,
    chain: Histogram,
    agents: FxHashMap<Arc<str>, Histogram>,
    failures: FxHashMap<Arc<str>, u64>,
    would_deny: FxHashMap<(Arc<str>, Arc<str>), u64>,
    /// (source service, target peer) → (bytes sent, bytes received, closes).
    bytes: FxHashMap<(Arc<str>, Arc<str>), Bytes>,
}

/// One entry of the decision log.
#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    pub seq: u64,
    /// Nanoseconds since the Unix epoch, on the engine's clock.
    pub time: u64,
    pub event: Event,
    pub response: Response,
}

pub struct Monitor {
    shards: Box<[Mutex<Shard>]>,
    /// Per shard: the most recent decisions of the threads that use it, and a sequence.
    logs: Box<[Mutex<Log>]>,
    log_capacity: usize,
    log_dropped: AtomicU64,
}

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn my_shard() -> usize {
    SHARD.with(|s| {
        let mut v = s.get();
        if v == usize::MAX {
            v = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
            s.set(v);
        }
        v
    })
}

impl Monitor {
    pub fn new(log_capacity: usize) -> Monitor {
        Monitor {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            logs: (0..SHARDS)
                .map(|_| Mutex::new((VecDeque::new(), 0)))
                .collect(),
            log_capacity,
            log_dropped: AtomicU64::new(0),
        }
    }

    /// Records a settled decision (called by the engine when the monitor observes).
    pub fn record(&self, outcome: &Outcome<'_>, now: Time) {
        let et = outcome.event.event_type();
        let r = outcome.response;
        if let Some(shard) = self.shards.get(my_shard()) {
            let mut s = shard.lock();
            if let Some(c) = s.events.get_mut(et.index()) {
                *c += 1;
            }
            let key = (et, r.decision, addr(&r.decided_by), addr(&r.matched_by));
            match s.decisions.get_mut(&key) {
                Some(n) => n.0 += 1,
                None => {
                    s.decisions
                        .insert(key, (1, r.decided_by.clone(), r.matched_by.clone()));
                }
            }
            if let Some(n) = outcome.chain_nanos {
                s.chain.record(n);
            }
            for (agent, n) in outcome.agent_nanos {
                match s.agents.get_mut(agent) {
                    Some(h) => h.record(*n),
                    None => {
                        let mut h = Histogram::default();
                        h.record(*n);
                        s.agents.insert(agent.clone(), h);
                    }
                }
            }
            for agent in outcome.failures {
                *s.failures.entry(agent.clone()).or_default() += 1;
            }
            for w in &r.would_deny {
                *s.would_deny
                    .entry((w.agent.clone(), w.policy.clone()))
                    .or_default() += 1;
            }
            if let (Event::ConnectionClosed(e), Some(conn)) = (outcome.event, outcome.closed) {
                let service = conn.src_service.clone().unwrap_or_else(|| "".into());
                let peer: Arc<str> = conn
                    .target
                    .as_ref()
                    .map_or_else(|| "".into(), |p| p.as_str().into());
                let entry = s.bytes.entry((service, peer)).or_default();
                entry.0 += e.bytes_sent.unwrap_or(0);
                entry.1 += e.bytes_received.unwrap_or(0);
                entry.2 += 1;
            }
        }
        if self.log_capacity > 0 {
            // A reader copying the log holds it briefly: rather than wait, drop and count.
            match self.logs.get(my_shard()).and_then(|l| l.try_lock()) {
                Some(mut guard) => {
                    let (log, seq) = &mut *guard;
                    *seq += 1;
                    if log.len() >= self.log_capacity {
                        log.pop_front();
                    }
                    let response = Response {
                        decision: r.decision,
                        target_peer: r.target_peer.clone(),
                        fallback_peers: None,
                        target_peers: r.target_peers.clone(),
                        services: r.services.clone(),
                        rate_limit: r.rate_limit,
                        connection_id: r.connection_id.clone(),
                        matched_by: r.matched_by.clone(),
                        decided_by: r.decided_by.clone(),
                        reason: r.reason.clone(),
                        would_deny: r.would_deny.clone(),
                        annotations: Default::default(),
                        trace: None,
                    };
                    log.push_back(LogEntry {
                        seq: *seq,
                        time: now.0,
                        event: outcome.event.clone(),
                        response,
                    });
                }
                None => {
                    self.log_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The most recent decisions, oldest first (at most `limit`, and at most the log's
    /// capacity). Threads log apart; entries are merged by time (then per-thread order).
    pub fn decisions(&self, limit: usize) -> Vec<LogEntry> {
        let mut all: Vec<LogEntry> = Vec::new();
        for log in self.logs.iter() {
            all.extend(log.lock().0.iter().cloned());
        }
        all.sort_by_key(|e| (e.time, e.seq));
        let skip = all.len().saturating_sub(limit.min(self.log_capacity));
        all.split_off(skip)
    }

    fn log_len(&self) -> usize {
        self.logs
            .iter()
            .map(|l| l.lock().0.len())
            .sum::<usize>()
            .min(self.log_capacity)
    }

    pub fn log_dropped(&self) -> u64 {
        self.log_dropped.load(Ordering::Relaxed)
    }

    fn merged(&self) -> Shard {
        let mut all = Shard::default();
        for shard in self.shards.iter() {
            let s = shard.lock();
            for (a, b) in all.events.iter_mut().zip(s.events.iter()) {
                *a += b;
            }
            for (k, v) in &s.decisions {
                all.decisions
                    .entry(*k)
                    .or_insert_with(|| (0, v.1.clone(), v.2.clone()))
                    .0 += v.0;
            }
            all.chain.merge(&s.chain);
            for (k, h) in &s.agents {
                all.agents.entry(k.clone()).or_default().merge(h);
            }
            for (k, v) in &s.failures {
                *all.failures.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &s.would_deny {
                *all.would_deny.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &s.bytes {
                let e = all.bytes.entry(k.clone()).or_default();
                e.0 += v.0;
                e.1 += v.1;
                e.2 += v.2;
            }
        }
        all
    }

    /// Everything as Prometheus text exposition (format 0.0.4).
    pub fn render(&self, runtime: &Runtime) -> String {
        let m = self.merged();
        let mut out = String::new();
        header(
            &mut out,
            "clpe_events_total",
            "counter",
            "Events received, by event type.",
        );
        for et in EventType::ALL {
            let n = m.events.get(et.index()).copied().unwrap_or(0);
            let _ = writeln!(out, "clpe_events_total{{event=\"{}\"}} {n}", et.as_str());
        }
        header(
            &mut out,
            "clpe_decisions_total",
            "counter",
            "Decisions, by event type, decision, deciding agent and matched policy.",
        );
        let mut decisions: std::collections::BTreeMap<
            (EventType, &'static str, String, String),
            (Decision, u64),
        > = std::collections::BTreeMap::new();
        for (k, (n, agent, policy)) in &m.decisions {
            let text = (k.0, k.1.as_str(), name(agent), name(policy));
            decisions.entry(text).or_insert((k.1, 0)).1 += n;
        }
        for ((et, _, agent, policy), (d, n)) in decisions {
            let _ = writeln!(
                out,
                "clpe_decisions_total{{event=\"{}\",decision=\"{}\",agent=\"{}\",policy=\"{}\"}} {n}",
                et.as_str(),
                d.as_str(),
                escape(&agent),
                escape(&policy)
            );
        }
        header(
            &mut out,
            "clpe_decision_duration_seconds",
            "histogram",
            "Time to run an event's whole chain.",
        );
        histogram(&mut out, "clpe_decision_duration_seconds", "", &m.chain);
        header(
            &mut out,
            "clpe_agent_duration_seconds",
            "histogram",
            "Time one agent took to decide, by agent.",
        );
        let mut agents: Vec<_> = m.agents.iter().collect();
        agents.sort_by(|a, b| a.0.cmp(b.0));
        for (agent, h) in agents {
            histogram(
                &mut out,
                "clpe_agent_duration_seconds",
                &format!("agent=\"{}\",", escape(agent)),
                h,
            );
        }
        header(
            &mut out,
            "clpe_agent_failures_total",
            "counter",
            "Agents that failed to decide (error, trap, time-out), by agent.",
        );
        let mut failures: Vec<_> = m.failures.iter().collect();
        failures.sort();
        for (agent, n) in failures {
            let _ = writeln!(
                out,
                "clpe_agent_failures_total{{agent=\"{}\"}} {n}",
                escape(agent)
            );
        }
        header(
            &mut out,
            "clpe_would_deny_total",
            "counter",
            "Denies a dry-run policy would have made, by agent and policy.",
        );
        let mut would: Vec<_> = m.would_deny.iter().collect();
        would.sort();
        for ((agent, policy), n) in would {
            let _ = writeln!(
                out,
                "clpe_would_deny_total{{agent=\"{}\",policy=\"{}\"}} {n}",
                escape(agent),
                escape(policy)
            );
        }
        header(
            &mut out,
            "clpe_open_connections",
            "gauge",
            "Connections admitted and neither closed nor expired.",
        );
        let _ = writeln!(out, "clpe_open_connections {}", runtime.connections.open());
        let mut bytes: Vec<_> = m.bytes.iter().collect();
        bytes.sort_by(|a, b| a.0.cmp(b.0));
        for (name, pick, help) in [
            (
                "clpe_connection_sent_bytes_total",
                0,
                "Bytes sent by closed connections, by source service and target peer.",
            ),
            (
                "clpe_connection_received_bytes_total",
                1,
                "Bytes received by closed connections, by source service and target peer.",
            ),
            (
                "clpe_connections_closed_total",
                2,
                "Connections closed, by source service and target peer.",
            ),
        ] {
            header(&mut out, name, "counter", help);
            for ((service, peer), v) in &bytes {
                let n = match pick {
                    0 => v.0,
                    1 => v.1,
                    _ => v.2,
                };
                let _ = writeln!(
                    out,
                    "{name}{{service=\"{}\",peer=\"{}\"}} {n}",
                    escape(service),
                    escape(peer)
                );
            }
        }
        header(
            &mut out,
            "clpe_decision_log_dropped_total",
            "counter",
            "Decision-log entries dropped rather than wait for the log.",
        );
        let _ = writeln!(
            out,
            "clpe_decision_log_dropped_total {}",
            self.log_dropped()
        );
        header(
            &mut out,
            "clpe_decision_log_entries",
            "gauge",
            "Entries held in the decision log.",
        );
        let _ = writeln!(out, "clpe_decision_log_entries {}", self.log_len());
        out
    }
}

fn name(n: &Option<Arc<str>>) -> String {
    n.as_deref().unwrap_or("").to_owned()
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (bound, n) in BOUNDS.iter().zip(h.buckets.iter()) {
        cumulative += n;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}le=\"{}\"}} {cumulative}",
            *bound as f64 / 1e9
        );
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", h.count);
    let labels = labels.trim_end_matches(',');
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum_nanos as f64 / 1e9);
    let _ = writeln!(out, "{name}_count{braces} {}", h.count);
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The agent: nothing to decide; it observes.
pub struct MonitorAgent(pub Arc<Monitor>);

impl Agent for MonitorAgent {
    fn decide(&self, _cx: &mut Context<'_>) -> Result<Verdict, AgentError> {
        Ok(Verdict::Continue)
    }

    fn observe(&self, outcome: &Outcome<'_>) {
        self.0.record(outcome, outcome.now);
    }
}
