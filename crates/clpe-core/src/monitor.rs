//! The `monitor` agent (SPEC §3.7): counts every event and decision, measures latency,
//! tracks bytes of closed connections, keeps a bounded decision log, renders it all as
//! Prometheus text.
//!
//! Counters live in per-thread shards (a thread always uses the same shard), so two
//! threads deciding at once never wait on each other. A reader (a metrics scrape) takes
//! each shard's counts away whole, leaving an empty shard in their place, and adds them
//! up into totals only readers keep: a deciding thread waits at most for that swap, not
//! for the adding up (which took its shard's lock for 1.7 ms after one pass of
//! acl-10000, 5.8 ms of chain-10000). The log is a ring of bytes per
//! shard, entries encoded back to back and decoded only when someone reads the log; it
//! is taken with `try_lock`, and an entry that would have to wait is dropped and counted
//! (as is one larger than the log's bound, see [`LIMIT_PER_ENTRY`]).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::hash::BuildHasher as _;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};
use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::Serialize;

use crate::agent::{Agent, Outcome, Verdict};
use crate::context::Context;
use crate::error::AgentError;
use crate::event::{
    ConnectionClosed, Decision, Direction, Event, EventType, ExposeService, NewConnection,
    RateLimit, Response, ServiceListRequest, WouldDeny,
};
use crate::limits::Padded;
use crate::names::{ConnectionId, Namespace, PeerName, ServiceName, Time};
use crate::runtime::Runtime;
use crate::shard_lock::ShardLock;
use crate::snapshot::Snapshot;
use crate::text::Text;

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
        // Above the last bound: counted in `+Inf` only.
        if let Some(b) = self.buckets.get_mut(BOUNDS.partition_point(|b| *b < nanos)) {
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

/// The origin of a name (a policy's `matched_by`, an agent's name, see [`Text`]), 0 for
/// none: counting by origin needs no string hashing on the hot path. Equal names of
/// different origins (from two snapshots) are merged when rendering.
fn origin(name: Option<&Text>) -> u64 {
    name.and_then(Text::origin).unwrap_or(0)
}

/// Bytes sent, bytes received, connections closed.
type Bytes = (u64, u64, u64);

/// (source service, target peer) and its bytes: found by the names' text, so closing a
/// connection neither allocates a key nor touches a reference count.
type BytesEntry = (Box<str>, Box<str>, Bytes);

fn bytes_hash(service: &str, peer: &str) -> u64 {
    FxBuildHasher.hash_one((service, peer))
}

/// What a count adds up: a number, or a latency histogram.
trait Tally: Default {
    fn add(&mut self, other: &Self);
}

impl Tally for u64 {
    fn add(&mut self, other: &u64) {
        *self += other;
    }
}

impl Tally for Histogram {
    fn add(&mut self, other: &Histogram) {
        self.merge(other);
    }
}

/// A count's key: a small tag (an event type and decision, or nothing) and the origins
/// of up to two names (see [`origin`]).
type Key<T> = (T, u64, u64);

/// The same key by name.
type Named<T> = (T, Option<Text>, Option<Text>);

/// Counts by [`Key`] in one array, probed linearly from the key's hash and at most half
/// full, the key beside its count: finding a count reads one cache line, where a
/// `HashMap` reads its control bytes and then the entry, two lines and, among thousands
/// of policies, two cache misses per decision. Keys are only added, and cleared all at
/// once.
struct Table<T, V> {
    /// A power of two long (or empty).
    slots: Vec<(Option<Key<T>>, V)>,
    len: usize,
}

impl<T, V> Default for Table<T, V> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Copy + Eq + std::hash::Hash, V: Default> Table<T, V> {
    /// Where `key` is, or the free slot where it would go (`None` if there are no slots).
    fn find(&self, key: &Key<T>) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        // Fx hashes are best mixed in their low bits, as hashbrown uses them.
        let mut i = FxBuildHasher.hash_one(key) as usize & mask;
        // INVARIANT: there is a free slot (the table is at most half full): this ends.
        loop {
            match self.slots.get(i)? {
                (Some(k), _) if k != key => i = (i + 1) & mask,
                _ => return Some(i),
            }
        }
    }

    fn get_mut(&mut self, key: &Key<T>) -> Option<&mut V> {
        let i = self.find(key)?;
        match self.slots.get_mut(i)? {
            (Some(_), v) => Some(v),
            (None, _) => None,
        }
    }

    /// Adds `key` (not there yet) with a zero count.
    fn insert(&mut self, key: Key<T>) -> Option<&mut V> {
        if 2 * (self.len + 1) > self.slots.len() {
            let len = (2 * self.slots.len()).max(16);
            let old = std::mem::take(&mut self.slots);
            self.slots = (0..len).map(|_| (None, V::default())).collect();
            for (k, v) in old {
                if let Some(slot) = k
                    .and_then(|k| self.find(&k))
                    .and_then(|i| self.slots.get_mut(i))
                {
                    *slot = (k, v);
                }
            }
        }
        let slot = self.find(&key).and_then(|i| self.slots.get_mut(i))?;
        *slot = (Some(key), V::default());
        self.len += 1;
        Some(&mut slot.1)
    }

    fn iter(&self) -> impl Iterator<Item = (&Key<T>, &V)> {
        self.slots
            .iter()
            .filter_map(|(k, v)| Some((k.as_ref()?, v)))
    }

    /// Empties the table, giving its counts.
    fn take(&mut self) -> impl Iterator<Item = (Key<T>, V)> + use<T, V> {
        self.len = 0;
        let slots = std::mem::take(&mut self.slots);
        slots.into_iter().filter_map(|(k, v)| Some((k?, v)))
    }
}

/// Below this many keys by origin (a MiB of counts) a shard never folds (see
/// [`ByOrigin`]): folding sooner only to count the same names again is wasted work.
const FOLD_AT: usize = 16 * 1024;

/// Counts keyed by the origins of names (see [`origin`]), and the names behind those
/// origins. Every snapshot brings names of new origins, so keys pile up as policies
/// change: past a bound (twice the distinct names seen, at least [`FOLD_AT`]) the counts
/// are folded into counts by name and counting by origin starts again. A fold costs its
/// length and comes only after as many new origins: amortised O(1), and memory bounded by
/// the names in use. A name without an origin is counted by name straight away.
struct ByOrigin<T, V> {
    live: Table<T, V>,
    /// INVARIANT: the name of every origin a key in `live` holds (but 0), some more than
    /// once. Appended to as keys come, looked up only to render or fold: a map from
    /// origin to name cost each new key two cache misses (its control bytes and its
    /// entry), and on a workload's first pass nearly every decision brings a new key.
    names: Vec<(u64, Text)>,
    /// The origin last appended for each name of a key: a name that comes again straight
    /// away (the deciding agent, usually) is not appended again.
    last: [u64; 2],
    folded: FxHashMap<Named<T>, V>,
}

impl<T, V> Default for ByOrigin<T, V> {
    fn default() -> Self {
        ByOrigin {
            live: Table::default(),
            names: Vec::new(),
            last: [0; 2],
            folded: FxHashMap::default(),
        }
    }
}

impl<T: Copy + Eq + std::hash::Hash, V: Tally> ByOrigin<T, V> {
    /// Updates the count of (`tag`, `a`, `b`).
    fn update(&mut self, tag: T, a: Option<&Text>, b: Option<&Text>, f: impl FnOnce(&mut V)) {
        let key = (tag, origin(a), origin(b));
        // A name without an origin (origin 0 for a name that is there) goes by its text.
        if (a.is_some() && key.1 == 0) || (b.is_some() && key.2 == 0) {
            return f(self
                .folded
                .entry((tag, a.cloned(), b.cloned()))
                .or_default());
        }
        match self.live.get_mut(&key) {
            Some(v) => f(v),
            None => self.insert(key, [a, b], f),
        }
    }

    #[cold]
    fn insert(&mut self, key: Key<T>, names: [Option<&Text>; 2], f: impl FnOnce(&mut V)) {
        if self.live.len >= FOLD_AT.max(2 * self.folded.len()) {
            let by_origin = name_index(&self.names);
            for ((tag, a, b), v) in self.live.take() {
                let name = |a| by_origin.get(&a).copied().cloned();
                self.folded
                    .entry((tag, name(a), name(b)))
                    .or_default()
                    .add(&v);
            }
            self.names.clear();
            self.last = [0; 2];
        }
        for (name, last) in names.into_iter().zip(&mut self.last) {
            let Some(name) = name else { continue };
            let o = origin(Some(name));
            if o != *last {
                self.names.push((o, name.clone()));
                *last = o;
            }
        }
        if let Some(v) = self.live.insert(key) {
            f(v);
        }
    }

    /// Every count with its names (one name may come more than once).
    fn iter(&self) -> impl Iterator<Item = (T, Option<&Text>, Option<&Text>, &V)> {
        let by_origin = name_index(&self.names);
        let live = self.live.iter().map(move |((tag, a, b), v)| {
            let name = |o| by_origin.get(o).copied();
            (*tag, name(a), name(b), v)
        });
        let folded = self
            .folded
            .iter()
            .map(|((tag, a, b), v)| (*tag, a.as_ref(), b.as_ref(), v));
        live.chain(folded)
    }
}

/// The names of [`ByOrigin::names`] by origin.
fn name_index(names: &[(u64, Text)]) -> FxHashMap<u64, &Text> {
    names.iter().map(|(o, name)| (*o, name)).collect()
}

#[derive(Default)]
struct Shard {
    events: [u64; 4],
    /// By (event type, decision), deciding agent, matched policy.
    decisions: ByOrigin<(EventType, Decision), u64>,
    chain: Histogram,
    /// By agent.
    agents: ByOrigin<(), Histogram>,
    failures: FxHashMap<Text, u64>,
    /// By agent and policy.
    would_deny: ByOrigin<(), u64>,
    bytes: HashTable<BytesEntry>,
}

impl Shard {
    /// Counts a settled decision.
    fn count(&mut self, outcome: &Outcome<'_>) {
        let et = outcome.event.event_type();
        let r = outcome.response;
        if let Some(c) = self.events.get_mut(et.index()) {
            *c += 1;
        }
        let (agent, policy) = (r.decided_by.as_ref(), r.matched_by.as_ref());
        self.decisions
            .update((et, r.decision), agent, policy, |n| *n += 1);
        if let Some(n) = outcome.chain_nanos {
            self.chain.record(n);
        }
        for (agent, n) in outcome.agent_nanos {
            self.agents.update((), Some(agent), None, |h| h.record(*n));
        }
        for agent in outcome.failures {
            match self.failures.get_mut(&**agent) {
                Some(n) => *n += 1,
                None => {
                    self.failures.insert(agent.clone(), 1);
                }
            }
        }
        for w in &r.would_deny {
            self.would_deny
                .update((), Some(&w.agent), Some(&w.policy), |n| *n += 1);
        }
        if let (Event::ConnectionClosed(e), Some(conn)) = (outcome.event, outcome.closed) {
            let service = conn.src_service.as_ref().map_or("", |s| s.as_str());
            let peer = conn.target.as_ref().map_or("", |p| p.as_str());
            let hash = bytes_hash(service, peer);
            let eq = |b: &BytesEntry| *b.0 == *service && *b.1 == *peer;
            let entry = match self.bytes.find_mut(hash, eq) {
                Some(b) => &mut b.2,
                None => {
                    let b = (service.into(), peer.into(), Bytes::default());
                    let rehash = |b: &BytesEntry| bytes_hash(&b.0, &b.1);
                    &mut self.bytes.insert_unique(hash, b, rehash).into_mut().2
                }
            };
            entry.0 += e.bytes_sent.unwrap_or(0);
            entry.1 += e.bytes_received.unwrap_or(0);
            entry.2 += 1;
        }
    }
}

/// The shards added up, by name, for rendering: kept by the readers, each shard's counts
/// added in as they are taken away.
#[derive(Default)]
struct Totals {
    events: [u64; 4],
    /// (event type, decision, agent, policy) → (decision, count).
    decisions: BTreeMap<(EventType, &'static str, String, String), (Decision, u64)>,
    chain: Histogram,
    agents: BTreeMap<Text, Histogram>,
    failures: BTreeMap<Text, u64>,
    would_deny: BTreeMap<(Text, Text), u64>,
    /// (source service, target peer) → (bytes sent, bytes received, closes).
    bytes: BTreeMap<(Box<str>, Box<str>), Bytes>,
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
    shards: Box<[Padded<ShardLock<Shard>>]>,
    /// Everything counted until the last reader took the shards' counts.
    totals: Mutex<Totals>,
    /// Per shard: the most recent decisions of the threads that use it.
    logs: Box<[Padded<ShardLock<Ring>>]>,
    log_capacity: usize,
    /// The bound on each ring's buffer, in bytes (see [`LIMIT_PER_ENTRY`]).
    log_limit: usize,
    log_dropped: AtomicU64,
}

fn my_shard() -> usize {
    crate::limits::thread_number() % SHARDS
}

impl Monitor {
    pub fn new(log_capacity: usize) -> Monitor {
        Monitor {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
            totals: Mutex::default(),
            logs: (0..SHARDS).map(|_| Padded::default()).collect(),
            log_capacity,
            log_limit: log_limit(log_capacity),
            log_dropped: AtomicU64::new(0),
        }
    }

    /// Records a settled decision (called by the engine when the monitor observes).
    pub fn record(&self, outcome: &Outcome<'_>, now: Time) {
        let me = my_shard();
        if let Some(shard) = self.shards.get(me) {
            shard.lock().count(outcome);
        }
        if self.log_capacity > 0 {
            // A reader copying the log holds it briefly: rather than wait, drop and count
            // (as an entry too large for the log is).
            let logged = self
                .logs
                .get(me)
                .and_then(|l| l.try_lock())
                .is_some_and(|mut ring| {
                    let (capacity, limit) = (self.log_capacity, self.log_limit);
                    ring.write(capacity, limit, now.0, outcome.event, outcome.response)
                });
            if !logged {
                self.log_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The most recent decisions, oldest first (at most `limit`, and at most the log's
    /// capacity). Threads log apart; entries are merged by time (then per-thread order).
    pub fn decisions(&self, limit: usize) -> Vec<LogEntry> {
        let keep = limit.min(self.log_capacity);
        if keep == 0 {
            return Vec::new();
        }
        // Per shard, only its `keep` latest by (time, seq) can be among the `keep` latest
        // of all: copy those (bytes, under the lock), decode the chosen ones after.
        let mut bytes = Vec::new();
        let mut copies: Vec<(u64, u64, Range<usize>)> = Vec::new();
        for log in self.logs.iter() {
            let ring = log.lock();
            let mut order: Vec<(u64, u64, &[u8])> = ring.iter().collect();
            order.sort_by_key(|&(seq, time, _)| (time, seq));
            let skip = order.len().saturating_sub(keep);
            for (seq, time, b) in order.into_iter().skip(skip) {
                let start = bytes.len();
                bytes.extend_from_slice(b);
                copies.push((seq, time, start..bytes.len()));
            }
        }
        // Stable: equal keys keep shard order, then ring order, as they always have.
        copies.sort_by_key(|&(seq, time, _)| (time, seq));
        let skip = copies.len().saturating_sub(keep);
        copies
            .into_iter()
            .skip(skip)
            .filter_map(|(seq, time, at)| decode(seq, time, bytes.get(at)?))
            .collect()
    }

    fn log_len(&self) -> usize {
        self.logs
            .iter()
            .map(|l| l.lock().held.len())
            .sum::<usize>()
            .min(self.log_capacity)
    }

    /// Entries dropped rather than wait for a reader of the log, or too large for it.
    pub fn log_dropped(&self) -> u64 {
        self.log_dropped.load(Ordering::Relaxed)
    }

    /// Everything counted so far: each shard's counts taken (the shard left empty, its
    /// lock held only for that) and added to the totals.
    fn merged(&self) -> MutexGuard<'_, Totals> {
        let mut all = self.totals.lock();
        for shard in self.shards.iter() {
            let s = std::mem::take(&mut *shard.lock());
            for (a, b) in all.events.iter_mut().zip(s.events.iter()) {
                *a += b;
            }
            for ((et, d), agent, policy, n) in s.decisions.iter() {
                all.decisions
                    .entry((et, d.as_str(), name(agent), name(policy)))
                    .or_insert((d, 0))
                    .1 += n;
            }
            all.chain.merge(&s.chain);
            for (_, agent, _, h) in s.agents.iter() {
                if let Some(agent) = agent {
                    all.agents.entry(agent.clone()).or_default().merge(h);
                }
            }
            for (k, v) in &s.failures {
                *all.failures.entry(k.clone()).or_default() += v;
            }
            for (_, agent, policy, n) in s.would_deny.iter() {
                if let (Some(agent), Some(policy)) = (agent, policy) {
                    let key = (agent.clone(), policy.clone());
                    *all.would_deny.entry(key).or_default() += n;
                }
            }
            for (service, peer, v) in s.bytes.iter() {
                let e = all
                    .bytes
                    .entry((service.clone(), peer.clone()))
                    .or_default();
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
        for ((et, _, agent, policy), (d, n)) in &m.decisions {
            let _ = writeln!(
                out,
                "clpe_decisions_total{{event=\"{}\",decision=\"{}\",agent=\"{}\",policy=\"{}\"}} {n}",
                et.as_str(),
                d.as_str(),
                escape(agent),
                escape(policy)
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
            "Time one agent took to decide, by agent (agents are run, and timed, only for events they have work for).",
        );
        for (agent, h) in &m.agents {
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
        for (agent, n) in &m.failures {
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
        for ((agent, policy), n) in &m.would_deny {
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
            for ((service, peer), v) in &m.bytes {
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
            "Decision-log entries dropped rather than wait for the log, or too large for it.",
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

fn name(n: Option<&Text>) -> String {
    n.map_or("", |n| n).to_owned()
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
    /// It only observes.
    fn idle(&self, _: &Snapshot, _: EventType, _: Option<Direction>) -> bool {
        true
    }

    fn decide<'s>(&self, _cx: &mut Context<'s>) -> Result<Verdict<'s>, AgentError> {
        Ok(Verdict::Continue)
    }

    fn observe(&self, outcome: &Outcome<'_>) {
        self.0.record(outcome, outcome.now);
    }
}

// ---- the decision log ----

/// A ring's first buffer: this many bytes for each entry of its capacity (most entries
/// take less), for at most [`START_ENTRIES`] entries; a larger ring grows as it fills.
/// A buffer grown beyond it is halved when a lap starts with its entries taking less
/// than a quarter of it.
const START_BYTES_PER_ENTRY: usize = 256;
const START_ENTRIES: usize = 4096;

/// How far a ring's buffer may grow: this many bytes per entry of its capacity (room
/// for responses naming a few hundred services), between [`MIN_LIMIT`] and
/// [`MAX_LIMIT`]. Within that bound a ring holds its last `capacity` entries whatever
/// their sizes; larger entries leave it holding fewer, and an entry larger than the
/// whole bound is dropped and counted: the log's memory is bounded whatever it is sent.
const LIMIT_PER_ENTRY: usize = 16 * 1024;
const MIN_LIMIT: usize = 1 << 20;
/// Also keeps every length an entry records below `NONE`.
const MAX_LIMIT: usize = 1 << 30;

/// A ring's first buffer length (a power of two, at most [`MIN_LIMIT`]).
fn start_len(capacity: usize) -> usize {
    (capacity.min(START_ENTRIES) * START_BYTES_PER_ENTRY).next_power_of_two()
}

/// The bound on a ring's buffer for a log of `capacity` entries (a power of two).
fn log_limit(capacity: usize) -> usize {
    capacity
        .saturating_mul(LIMIT_PER_ENTRY)
        .checked_next_power_of_two()
        .unwrap_or(MAX_LIMIT)
        .clamp(MIN_LIMIT, MAX_LIMIT)
}

/// A thread's most recent decisions, encoded back to back into one buffer, the oldest
/// overwritten: logging writes sequentially, next to what the thread wrote a moment
/// ago, and allocates nothing once the buffer has its size.
///
/// Positions count bytes since the buffer was laid out: the entry at `at` starts at
/// `at % buf.len()`, whole (one that would cross the end starts the next lap instead).
/// Each entry is its length (this head included) as a `u32`, its time as a `u64`, then
/// its encoding. Where entries start is kept apart, so dropping the oldest reads
/// nothing from the buffer (whose oldest bytes have long left the cache).
#[derive(Default)]
struct Ring {
    /// Empty until the first entry, then a power of two long.
    buf: Vec<u8>,
    /// Where the entries held start, oldest first; they are numbered consecutively up
    /// to `seq`.
    held: VecDeque<u64>,
    /// Where the next entry goes.
    head: u64,
    /// The number of the newest entry.
    seq: u64,
}

/// An entry's length and time.
const ENTRY_HEAD: usize = 12;

impl Ring {
    /// Logs a decision, dropping the oldest entries as needed: past `capacity`, or where
    /// it goes once the buffer has grown to `limit`. `false` if it is larger than `limit`.
    fn write(
        &mut self,
        capacity: usize,
        limit: usize,
        time: u64,
        event: &Event,
        r: &Response,
    ) -> bool {
        // Most entries fit in the room ahead of the head: encoded there, in one pass.
        let (start, room) = (self.offset(self.head), self.room());
        if let Some(room) = self.buf.get_mut(start..start + room) {
            let mut out = Out::new(room);
            out.put(&[0; 4]);
            out.put(&time.to_le_bytes());
            encode(&mut out, event, r);
            if let Some(size) = out.written() {
                // INVARIANT: exact, the room is at most `limit` long.
                self.put_len(start, size as u32);
                self.push(capacity, self.head, size);
                return true;
            }
        }
        // Else: size it, make room, write it there.
        let mut count = Count(ENTRY_HEAD);
        encode(&mut count, event, r);
        let size = count.0;
        if size > limit {
            return false;
        }
        if self.held.len() >= capacity {
            self.held.pop_front();
        }
        let at = self.make_room(capacity, limit, size);
        let start = self.offset(at);
        if let Some(dst) = self.buf.get_mut(start..start + size) {
            let mut out = Out::new(dst);
            out.put(&(size as u32).to_le_bytes());
            out.put(&time.to_le_bytes());
            encode(&mut out, event, r);
        }
        self.push(capacity, at, size);
        true
    }

    /// The free bytes from the head to the end of the lap or to the oldest entry.
    fn room(&self) -> usize {
        let len = self.buf.len();
        let lap = len - self.offset(self.head);
        match self.held.front() {
            // INVARIANT: at most `len`, the entries held being within a buffer's length.
            Some(&oldest) => lap.min((oldest + len as u64 - self.head) as usize),
            None => lap,
        }
    }

    /// Adds the entry written at `at`, dropping the oldest past `capacity`.
    fn push(&mut self, capacity: usize, at: u64, size: usize) {
        if self.held.len() >= capacity {
            self.held.pop_front();
        }
        self.held.push_back(at);
        self.head = at + size as u64;
        self.seq += 1;
    }

    /// Where an entry of `size` bytes (at most `limit`) goes: on this lap or the next,
    /// the buffer grown (or given back) as needed, the entries it overwrites dropped.
    /// The buffer grows, within `limit`, until it holds the entries and this one with
    /// room for one more like it: the next entries then fit in the room ahead.
    fn make_room(&mut self, capacity: usize, limit: usize, size: usize) -> u64 {
        loop {
            let len = self.buf.len() as u64;
            if size as u64 <= len {
                let rest = len - self.offset(self.head) as u64;
                let skip = size as u64 > rest;
                let at = if skip { self.head + rest } else { self.head };
                let end = at + size as u64;
                let oldest = self.held.front().copied().unwrap_or(at);
                if (skip || rest == len) && self.buf.len() > start_len(capacity) {
                    // A new lap: room grown for entries since gone is given back.
                    if end - oldest <= len / 4 {
                        self.relayout(self.buf.len() / 2);
                        continue;
                    }
                }
                // An entry is overwritten once the head is more than a buffer past it.
                if oldest + len >= end + size as u64 || self.buf.len() >= limit {
                    while self.held.front().is_some_and(|&a| a + len < end) {
                        self.held.pop_front();
                    }
                    return at;
                }
            }
            let grown = (self.buf.len() * 2)
                .max(start_len(capacity))
                .max(size.next_power_of_two())
                .min(limit);
            self.relayout(grown);
        }
    }

    /// Moves the entries held into a new buffer of `len` bytes (a power of two at least
    /// as long as they are together), back to back from its start.
    fn relayout(&mut self, len: usize) {
        let mut buf = vec![0; len];
        let mut to = 0;
        let mut held = VecDeque::with_capacity(self.held.capacity());
        for (_, entry) in self.entries() {
            if let Some(dst) = buf.get_mut(to..to + entry.len()) {
                dst.copy_from_slice(entry);
            }
            held.push_back(to as u64);
            to += entry.len();
        }
        self.buf = buf;
        self.held = held;
        self.head = to as u64;
    }

    /// Where in the buffer the position `at` is.
    fn offset(&self, at: u64) -> usize {
        // INVARIANT: below the buffer's length, so it fits a `usize`.
        (at & (self.buf.len() as u64).wrapping_sub(1)) as usize
    }

    fn put_len(&mut self, start: usize, len: u32) {
        if let Some(b) = self.buf.get_mut(start..start + 4) {
            b.copy_from_slice(&len.to_le_bytes());
        }
    }

    /// The entries held, oldest first: (number, bytes with their head).
    fn entries(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let first = self.seq + 1 - self.held.len() as u64;
        self.held.iter().zip(first..).map(|(&at, seq)| {
            let i = self.offset(at);
            let len = self.buf.get(i..i + 4).and_then(|b| b.try_into().ok());
            let len = len.map_or(0, u32::from_le_bytes) as usize;
            (seq, self.buf.get(i..i + len).unwrap_or_default())
        })
    }

    /// The entries held, oldest first: (number, time, encoding).
    fn iter(&self) -> impl Iterator<Item = (u64, u64, &[u8])> {
        self.entries().map(|(seq, entry)| {
            let (head, body) = entry.split_at_checked(ENTRY_HEAD).unwrap_or_default();
            let time = head.get(4..).and_then(|t| t.try_into().ok());
            (seq, time.map_or(0, u64::from_le_bytes), body)
        })
    }
}

// The encoding, in one pass: a word of kinds and flags; the event's strings (which, its
// kind says); the response's `target_peer`, `connection_id`, `matched_by`, `decided_by`
// and `reason`; only if the flags say so, the numbers and the list counts; then the
// lists. Words are little-endian `u32`s; a string is its length and its bytes, an absent
// one the length `NONE`.
const NONE: u32 = u32::MAX;

// Flags (the first word's top byte): which optional parts are present.
const TARGET_PEERS: u32 = 1;
const SERVICES: u32 = 2;
const RATE_LIMIT: u32 = 4;
const BYTES_SENT: u32 = 8;
const BYTES_RECEIVED: u32 = 16;
/// The numbers (the rate limit, the bytes sent and received: `u64`s) and the 4 list
/// counts are there: most decisions have none of them.
const MORE: u32 = 32;

/// Where an entry is encoded: into the ring, or only counted.
trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn str(&mut self, s: &str) {
        // INVARIANT: exact for an entry that is logged, at most `MAX_LIMIT` long.
        self.put(&(s.len() as u32).to_le_bytes());
        self.put(s.as_bytes());
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.put(&NONE.to_le_bytes()),
        }
    }
}

/// Writes into a slice; what does not fit leaves the entry unwritten (`written` says
/// so).
struct Out<'a> {
    buf: &'a mut [u8],
    at: usize,
    full: bool,
}

impl<'a> Out<'a> {
    fn new(buf: &'a mut [u8]) -> Out<'a> {
        Out {
            buf,
            at: 0,
            full: false,
        }
    }

    /// The bytes written, if all were.
    fn written(&self) -> Option<usize> {
        (!self.full).then_some(self.at)
    }
}

impl Sink for Out<'_> {
    fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.at..self.at + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.at += bytes.len();
            }
            None => self.full = true,
        }
    }

    // One copy for the dozen strings of an entry: inlined at each, the copies would take
    // more instruction cache than a decision can spare.
    #[inline(never)]
    fn str(&mut self, s: &str) {
        let dst = self.buf.get_mut(self.at..self.at + 4 + s.len());
        match dst.and_then(|d| d.split_first_chunk_mut()) {
            Some((len, dst)) => {
                // INVARIANT: exact, the buffer is at most `MAX_LIMIT` long.
                *len = (s.len() as u32).to_le_bytes();
                copy(dst, s.as_bytes());
                self.at += 4 + s.len();
            }
            None => self.full = true,
        }
    }
}

/// Copies `src` into `dst`, as long. Most strings logged are names and sentences of a few
/// dozen bytes: two overlapping copies of a fixed size each, without the call
/// `copy_from_slice` makes to `memcpy`.
fn copy(dst: &mut [u8], src: &[u8]) {
    fn two<const N: usize>(dst: &mut [u8], src: &[u8]) {
        if let (Some(d), Some(s)) = (dst.first_chunk_mut::<N>(), src.first_chunk::<N>()) {
            *d = *s;
        }
        if let (Some(d), Some(s)) = (dst.last_chunk_mut::<N>(), src.last_chunk::<N>()) {
            *d = *s;
        }
    }
    match src.len() {
        0..4 => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = *s;
            }
        }
        4..8 => two::<4>(dst, src),
        8..16 => two::<8>(dst, src),
        16..32 => two::<16>(dst, src),
        // A policy's sentence ("allowed by AccessPolicy <name>") is usually here.
        32..=64 => two::<32>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// Counts the bytes an entry takes.
struct Count(usize);

impl Sink for Count {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

fn encode(out: &mut impl Sink, event: &Event, r: &Response) {
    let (kind, direction, attrs, sent, received) = match event {
        Event::NewConnection(e) => (0, e.direction as u32, Some(&e.src_attributes), None, None),
        Event::ExposeService(_) => (1, 0, None, None, None),
        Event::ServiceListRequest(_) => (2, 0, None, None, None),
        Event::ConnectionClosed(e) => (3, 0, None, e.bytes_sent, e.bytes_received),
    };
    let attrs = attrs.filter(|a| !a.is_empty());
    let has_lists = attrs.is_some()
        || r.target_peers.as_ref().is_some_and(|v| !v.is_empty())
        || r.services.as_ref().is_some_and(|v| !v.is_empty())
        || !r.would_deny.is_empty();
    let mut flags = 0;
    if r.target_peers.is_some() {
        flags |= TARGET_PEERS;
    }
    if r.services.is_some() {
        flags |= SERVICES;
    }
    if r.rate_limit.is_some() {
        flags |= RATE_LIMIT;
    }
    if sent.is_some() {
        flags |= BYTES_SENT;
    }
    if received.is_some() {
        flags |= BYTES_RECEIVED;
    }
    if flags != 0 || has_lists {
        flags |= MORE;
    }
    let word = kind | direction << 8 | (r.decision as u32) << 16 | flags << 24;
    out.put(&word.to_le_bytes());
    match event {
        Event::NewConnection(e) => {
            out.str(e.dst_service.as_str());
            out.opt(e.dst_namespace.as_ref().map(|n| n.as_str()));
            out.opt(e.src_service.as_ref().map(|s| s.as_str()));
            out.opt(e.src_peer.as_ref().map(|p| p.as_str()));
            out.opt(e.connection_id.as_ref().map(|c| c.as_str()));
        }
        Event::ExposeService(e) => {
            out.str(e.service.as_str());
            out.opt(e.namespace.as_ref().map(|n| n.as_str()));
        }
        Event::ServiceListRequest(e) => out.str(e.src_peer.as_str()),
        Event::ConnectionClosed(e) => out.str(e.connection_id.as_str()),
    }
    out.opt(r.target_peer.as_ref().map(|p| p.as_str()));
    out.opt(r.connection_id.as_ref().map(|c| c.as_str()));
    out.opt(r.matched_by.as_deref());
    out.opt(r.decided_by.as_deref());
    out.str(&r.reason);
    if flags & MORE == 0 {
        return;
    }
    let rate = r.rate_limit.map_or(0, |l| l.bits_per_second);
    let counts = [
        attrs.map_or(0, BTreeMap::len),
        r.target_peers.as_ref().map_or(0, Vec::len),
        r.services.as_ref().map_or(0, Vec::len),
        r.would_deny.len(),
    ];
    for n in [rate, sent.unwrap_or(0), received.unwrap_or(0)] {
        out.put(&n.to_le_bytes());
    }
    for n in counts {
        // INVARIANT: exact, each item takes at least 4 bytes of an entry.
        out.put(&(n as u32).to_le_bytes());
    }
    for (k, v) in attrs.into_iter().flatten() {
        out.str(k);
        out.str(v);
    }
    for p in r.target_peers.iter().flatten() {
        out.str(p.as_str());
    }
    for s in r.services.iter().flatten() {
        out.str(s);
    }
    for w in &r.would_deny {
        out.str(&w.agent);
        out.str(&w.policy);
    }
}

/// Reads an encoded entry back; `None` if it does not decode (it always does, but a
/// decoder never trusts its input).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.0.split_first_chunk()?;
        self.0 = tail;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.bytes().map(u64::from_le_bytes)
    }

    /// `Some(None)` for an absent string.
    fn opt(&mut self) -> Option<Option<&'a str>> {
        match self.u32()? {
            NONE => Some(None),
            len => {
                let (s, tail) = self.0.split_at_checked(len as usize)?;
                self.0 = tail;
                std::str::from_utf8(s).ok().map(Some)
            }
        }
    }

    fn str(&mut self) -> Option<&'a str> {
        self.opt()?
    }

    fn list<T>(&mut self, n: u32, f: impl Fn(&'a str) -> T) -> Option<Vec<T>> {
        let mut out = Vec::with_capacity((n as usize).min(self.0.len() / 4));
        for _ in 0..n {
            out.push(f(self.str()?));
        }
        Some(out)
    }
}

fn decode(seq: u64, time: u64, bytes: &[u8]) -> Option<LogEntry> {
    let mut rd = Reader(bytes);
    let word = rd.u32()?;
    let flags = word >> 24;
    let mut event = match word & 0xff {
        0 => Event::NewConnection(NewConnection {
            direction: match (word >> 8) & 0xff {
                0 => Direction::Egress,
                _ => Direction::Ingress,
            },
            dst_service: ServiceName::from(rd.str()?),
            dst_namespace: rd.opt()?.map(Namespace::from),
            src_service: rd.opt()?.map(ServiceName::from),
            src_peer: rd.opt()?.map(PeerName::from),
            src_attributes: BTreeMap::new(),
            connection_id: rd.opt()?.map(ConnectionId::from),
        }),
        1 => Event::ExposeService(ExposeService {
            service: ServiceName::from(rd.str()?),
            namespace: rd.opt()?.map(Namespace::from),
        }),
        2 => Event::ServiceListRequest(ServiceListRequest {
            src_peer: PeerName::from(rd.str()?),
        }),
        3 => Event::ConnectionClosed(ConnectionClosed {
            connection_id: ConnectionId::from(rd.str()?),
            bytes_sent: None,
            bytes_received: None,
        }),
        _ => return None,
    };
    let decision = match (word >> 16) & 0xff {
        0 => Decision::Allow,
        _ => Decision::Deny,
    };
    // In the order they were written.
    let target_peer = rd.opt()?.map(PeerName::from);
    let connection_id = rd.opt()?.map(ConnectionId::from);
    let matched_by = rd.opt()?.map(Text::new);
    let decided_by = rd.opt()?.map(Text::new);
    let reason = Text::new(rd.str()?);
    let mut response = Response {
        target_peer,
        connection_id,
        matched_by,
        decided_by,
        ..Response::new(decision, reason)
    };
    if flags & MORE == 0 {
        return Some(LogEntry {
            seq,
            time,
            event,
            response,
        });
    }
    let (rate, sent, received) = (rd.u64()?, rd.u64()?, rd.u64()?);
    let [attrs_n, peers_n, services_n, would_n] = [rd.u32()?, rd.u32()?, rd.u32()?, rd.u32()?];
    match &mut event {
        Event::NewConnection(e) => {
            for _ in 0..attrs_n {
                let k = rd.str()?;
                e.src_attributes.insert(k.to_owned(), rd.str()?.to_owned());
            }
        }
        Event::ConnectionClosed(e) => {
            e.bytes_sent = (flags & BYTES_SENT != 0).then_some(sent);
            e.bytes_received = (flags & BYTES_RECEIVED != 0).then_some(received);
        }
        Event::ExposeService(_) | Event::ServiceListRequest(_) => {}
    }
    let target_peers = rd.list(peers_n, PeerName::from)?;
    let services = rd.list(services_n, str::to_owned)?;
    for _ in 0..would_n {
        response.would_deny.push(WouldDeny {
            agent: Text::new(rd.str()?),
            policy: Text::new(rd.str()?),
        });
    }
    response.target_peers = (flags & TARGET_PEERS != 0).then_some(target_peers);
    response.services = (flags & SERVICES != 0).then_some(services);
    response.rate_limit = (flags & RATE_LIMIT != 0).then_some(RateLimit {
        bits_per_second: rate,
    });
    Some(LogEntry {
        seq,
        time,
        event,
        response,
    })
}

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;
