//! The `monitor` agent (SPEC §3.7): counts every event and decision, measures latency,
//! tracks bytes of closed connections, keeps a bounded decision log, renders it all as
//! Prometheus text.
//!
//! Counters live in per-thread shards (a thread always uses the same shard), so two
//! threads deciding at once never wait on each other. The log is a ring per shard whose
//! entries are re-encoded in place as bytes, decoded only when someone reads the log; it
//! is taken with `try_lock`, and an entry that would have to wait is dropped and counted.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hashbrown::HashTable;
use parking_lot::Mutex;
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

/// The address of a shared name (a policy's `matched_by`, an agent's name): counting by
/// address needs no string hashing and no reference-count traffic on the hot path.
/// INVARIANT: the map keeps the `Arc` of every address it holds, so an address cannot be
/// reused for another string while it is a key. Equal strings at different addresses
/// (from two snapshots) are merged when rendering.
fn addr(name: &Option<Arc<str>>) -> usize {
    name.as_ref().map_or(0, addr_of)
}

fn addr_of(name: &Arc<str>) -> usize {
    Arc::as_ptr(name) as *const u8 as usize
}

/// Bytes sent, bytes received, connections closed.
type Bytes = (u64, u64, u64);

/// (source service, target peer) and its bytes: found by the names' text, so closing a
/// connection neither allocates a key nor touches a reference count.
type BytesEntry = (Box<str>, Box<str>, Bytes);

fn bytes_hash(service: &str, peer: &str) -> u64 {
    FxBuildHasher.hash_one((service, peer))
}

type DecisionKey = (EventType, Decision, usize, usize);

/// A dry-run deny's key by name: (agent, policy).
type AgentPolicy = (Arc<str>, Arc<str>);

/// A decision count's key by name: (event type, decision, deciding agent, policy).
type NamedKey = (EventType, Decision, Option<Arc<str>>, Option<Arc<str>>);

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

/// Below this many keys by address a shard never folds (see [`ByAddress`]).
const FOLD_AT: usize = 1024;

/// Counts keyed by the addresses of shared names (see [`addr`]), each with the names it
/// stands for. Every snapshot brings names at new addresses, so keys pile up as policies
/// change: past a bound (twice the distinct names seen, at least [`FOLD_AT`]) the counts
/// are folded into counts by name and counting by address starts again. A fold costs
/// its length and comes only after as many new addresses: amortised O(1), and memory
/// bounded by the names in use.
struct ByAddress<K, N, V> {
    live: FxHashMap<K, (N, V)>,
    folded: FxHashMap<N, V>,
}

impl<K, N, V> Default for ByAddress<K, N, V> {
    fn default() -> Self {
        ByAddress {
            live: FxHashMap::default(),
            folded: FxHashMap::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq, N: std::hash::Hash + Eq, V: Tally> ByAddress<K, N, V> {
    /// Updates the count of `key`; `names` (which clones the `Arc`s) runs only for a new
    /// key.
    fn update(&mut self, key: K, names: impl FnOnce() -> N, f: impl FnOnce(&mut V)) {
        if let Some((_, v)) = self.live.get_mut(&key) {
            f(v);
            return;
        }
        if self.live.len() >= FOLD_AT.max(2 * self.folded.len()) {
            for (_, (n, v)) in self.live.drain() {
                self.folded.entry(n).or_default().add(&v);
            }
        }
        let mut v = V::default();
        f(&mut v);
        self.live.insert(key, (names(), v));
    }

    /// Every count with its names (one name may come more than once).
    fn iter(&self) -> impl Iterator<Item = (&N, &V)> {
        let live = self.live.values().map(|(n, v)| (n, v));
        live.chain(self.folded.iter())
    }
}

#[derive(Default)]
struct Shard {
    events: [u64; 4],
    decisions: ByAddress<DecisionKey, NamedKey, u64>,
    chain: Histogram,
    agents: ByAddress<usize, Arc<str>, Histogram>,
    failures: FxHashMap<Arc<str>, u64>,
    would_deny: ByAddress<(usize, usize), AgentPolicy, u64>,
    bytes: HashTable<BytesEntry>,
}

/// The shards added up, by name, for rendering.
#[derive(Default)]
struct Totals {
    events: [u64; 4],
    /// (event type, decision, agent, policy) → (decision, count).
    decisions: BTreeMap<(EventType, &'static str, String, String), (Decision, u64)>,
    chain: Histogram,
    agents: BTreeMap<Arc<str>, Histogram>,
    failures: BTreeMap<Arc<str>, u64>,
    would_deny: BTreeMap<(Arc<str>, Arc<str>), u64>,
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
    shards: Box<[Padded<Mutex<Shard>>]>,
    /// Per shard: the most recent decisions of the threads that use it.
    logs: Box<[Padded<Mutex<Ring>>]>,
    log_capacity: usize,
    log_dropped: AtomicU64,
}

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn my_shard() -> usize {
    SHARD
        .try_with(|s| {
            let mut v = s.get();
            if v == usize::MAX {
                v = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
                s.set(v);
            }
            v
        })
        .unwrap_or(0)
}

impl Monitor {
    pub fn new(log_capacity: usize) -> Monitor {
        Monitor {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
            logs: (0..SHARDS).map(|_| Padded::default()).collect(),
            log_capacity,
            log_dropped: AtomicU64::new(0),
        }
    }

    /// Records a settled decision (called by the engine when the monitor observes).
    pub fn record(&self, outcome: &Outcome<'_>, now: Time) {
        let et = outcome.event.event_type();
        let r = outcome.response;
        let me = my_shard();
        if let Some(shard) = self.shards.get(me) {
            let mut s = shard.lock();
            if let Some(c) = s.events.get_mut(et.index()) {
                *c += 1;
            }
            let key = (et, r.decision, addr(&r.decided_by), addr(&r.matched_by));
            let names = || (et, r.decision, r.decided_by.clone(), r.matched_by.clone());
            s.decisions.update(key, names, |n| *n += 1);
            if let Some(n) = outcome.chain_nanos {
                s.chain.record(n);
            }
            for (agent, n) in outcome.agent_nanos {
                let name = || agent.clone();
                s.agents.update(addr_of(agent), name, |h| h.record(*n));
            }
            for agent in outcome.failures {
                match s.failures.get_mut(&**agent) {
                    Some(n) => *n += 1,
                    None => {
                        s.failures.insert(agent.clone(), 1);
                    }
                }
            }
            for w in &r.would_deny {
                let key = (addr_of(&w.agent), addr_of(&w.policy));
                let names = || (w.agent.clone(), w.policy.clone());
                s.would_deny.update(key, names, |n| *n += 1);
            }
            if let (Event::ConnectionClosed(e), Some(conn)) = (outcome.event, outcome.closed) {
                let service = conn.src_service.as_ref().map_or("", |s| s.as_str());
                let peer = conn.target.as_ref().map_or("", |p| p.as_str());
                let hash = bytes_hash(service, peer);
                let eq = |b: &BytesEntry| *b.0 == *service && *b.1 == *peer;
                let entry = match s.bytes.find_mut(hash, eq) {
                    Some(b) => &mut b.2,
                    None => {
                        let b = (service.into(), peer.into(), Bytes::default());
                        let rehash = |b: &BytesEntry| bytes_hash(&b.0, &b.1);
                        &mut s.bytes.insert_unique(hash, b, rehash).into_mut().2
                    }
                };
                entry.0 += e.bytes_sent.unwrap_or(0);
                entry.1 += e.bytes_received.unwrap_or(0);
                entry.2 += 1;
            }
        }
        if self.log_capacity > 0 {
            // A reader copying the log holds it briefly: rather than wait, drop and count.
            match self.logs.get(me).and_then(|l| l.try_lock()) {
                Some(mut ring) => ring.write(self.log_capacity, now.0, outcome.event, r),
                None => {
                    self.log_dropped.fetch_add(1, Ordering::Relaxed);
                }
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
        let mut copies: Vec<Slot> = Vec::new();
        for log in self.logs.iter() {
            let ring = log.lock();
            let mut order: Vec<&Slot> = ring.iter().collect();
            order.sort_by_key(|s| (s.time, s.seq));
            let skip = order.len().saturating_sub(keep);
            copies.extend(order.into_iter().skip(skip).map(|s| Slot {
                seq: s.seq,
                time: s.time,
                bytes: s.bytes.clone(),
            }));
        }
        // Stable: equal keys keep shard order, then ring order, as they always have.
        copies.sort_by_key(|s| (s.time, s.seq));
        let skip = copies.len().saturating_sub(keep);
        copies.iter().skip(skip).filter_map(decode).collect()
    }

    fn log_len(&self) -> usize {
        self.logs
            .iter()
            .map(|l| l.lock().slots.len())
            .sum::<usize>()
            .min(self.log_capacity)
    }

    pub fn log_dropped(&self) -> u64 {
        self.log_dropped.load(Ordering::Relaxed)
    }

    fn merged(&self) -> Totals {
        let mut all = Totals::default();
        for shard in self.shards.iter() {
            let s = shard.lock();
            for (a, b) in all.events.iter_mut().zip(s.events.iter()) {
                *a += b;
            }
            for ((et, d, agent, policy), n) in s.decisions.iter() {
                all.decisions
                    .entry((*et, d.as_str(), name(agent), name(policy)))
                    .or_insert((*d, 0))
                    .1 += n;
            }
            all.chain.merge(&s.chain);
            for (name, h) in s.agents.iter() {
                all.agents.entry(name.clone()).or_default().merge(h);
            }
            for (k, v) in &s.failures {
                *all.failures.entry(k.clone()).or_default() += v;
            }
            for (k, v) in s.would_deny.iter() {
                *all.would_deny.entry(k.clone()).or_default() += v;
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
            "Time one agent took to decide, by agent.",
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

// ---- the decision log ----

/// One logged decision, encoded: the strings of the event and of the response copied as
/// bytes into a buffer that keeps its capacity, so logging allocates nothing once the
/// ring has gone round and touches no reference count.
#[derive(Default)]
struct Slot {
    seq: u64,
    time: u64,
    bytes: Vec<u8>,
}

/// A thread's most recent decisions: a ring of `capacity` slots, filled in place.
#[derive(Default)]
struct Ring {
    slots: Vec<Slot>,
    /// The slot written next: the oldest once the ring is full (0 until then).
    next: usize,
    seq: u64,
}

/// A slot keeps at most this much room beyond what its entry needs, so one huge event
/// does not pin its memory for ever.
const SLOT_SLACK: usize = 16 * 1024;

/// A new slot's room: most entries fit, so filling the ring allocates once per slot.
const SLOT_START: usize = 256;

/// The ring's slots are reserved at once up to this many (a larger ring grows as usual).
const MAX_RESERVE: usize = 4096;

impl Ring {
    fn write(&mut self, capacity: usize, time: u64, event: &Event, response: &Response) {
        self.seq += 1;
        let slot = if self.slots.len() < capacity {
            if self.slots.is_empty() {
                self.slots.reserve_exact(capacity.min(MAX_RESERVE));
            }
            self.slots.push(Slot {
                seq: 0,
                time: 0,
                bytes: Vec::with_capacity(SLOT_START),
            });
            self.slots.last_mut()
        } else {
            let i = self.next;
            self.next = if i + 1 >= self.slots.len() { 0 } else { i + 1 };
            self.slots.get_mut(i)
        };
        let Some(slot) = slot else {
            return;
        };
        slot.seq = self.seq;
        slot.time = time;
        encode(&mut slot.bytes, event, response);
        if slot.bytes.capacity() > slot.bytes.len() + SLOT_SLACK {
            slot.bytes.shrink_to(slot.bytes.len());
        }
    }

    /// The slots, oldest first.
    fn iter(&self) -> impl Iterator<Item = &Slot> {
        let (newer, older) = self.slots.split_at(self.next.min(self.slots.len()));
        older.iter().chain(newer)
    }
}

// The encoding, made for few and cheap writes: a header of little-endian u32 words (the
// kinds, the list counts, the numbers, the lengths of the fixed strings), then the fixed
// strings' bytes back to back, then the lists' strings, each its length and its bytes.
// An absent string has the length `NONE`.
const NONE: u32 = u32::MAX;

/// The strings every entry has a place for (absent where its event has no such field):
/// the event's (up to 5), then the response's `target_peer`, `connection_id`,
/// `matched_by`, `decided_by` and `reason`.
const STRINGS: usize = 10;

/// kinds and flags, 4 list counts, 3 numbers (2 words each), the fixed strings' lengths.
const WORDS: usize = 11 + STRINGS;

/// The first word of an entry that could not be encoded (a string of 4 GiB): `decisions`
/// leaves it out.
const UNLOGGABLE: u32 = 0xff;

// Flags (the first word's top byte): which optional parts are present.
const TARGET_PEERS: u32 = 1;
const SERVICES: u32 = 2;
const RATE_LIMIT: u32 = 4;
const BYTES_SENT: u32 = 8;
const BYTES_RECEIVED: u32 = 16;

fn len32(s: &str) -> Option<u32> {
    u32::try_from(s.len()).ok().filter(|l| *l != NONE)
}

/// A fixed string's length word (`NONE` if absent), adding its length to `total`.
fn len_word(s: Option<&str>, total: &mut usize) -> u32 {
    match s {
        None => NONE,
        Some(s) => {
            *total += s.len();
            // INVARIANT: exact, since `encode` checks the total fits below `NONE`.
            s.len() as u32
        }
    }
}

/// Writes into a buffer sized beforehand: the buffer's pointer stays in a register, and a
/// write is one bounds check and a copy. A write past the end is dropped (the entry then
/// fails to decode; sizes are computed so that it does not happen).
struct Out<'a>(&'a mut [u8]);

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some((dst, rest)) = std::mem::take(&mut self.0).split_at_mut_checked(bytes.len()) {
            dst.copy_from_slice(bytes);
            self.0 = rest;
        }
    }

    fn opt(&mut self, s: Option<&str>) {
        if let Some(s) = s {
            self.put(s.as_bytes());
        }
    }

    fn str(&mut self, s: &str) {
        // INVARIANT: exact, `lists_size` checked the length.
        self.put(&(s.len() as u32).to_le_bytes());
        self.put(s.as_bytes());
    }
}

/// The bytes the lists take, or `None` if a string or a count is too long to encode
/// (checked before anything is written, so an entry is whole or marked unloggable).
fn lists_size(attrs: Option<&BTreeMap<String, String>>, r: &Response) -> Option<usize> {
    let n = attrs.map_or(0, BTreeMap::len)
        + r.target_peers.as_ref().map_or(0, Vec::len)
        + r.services.as_ref().map_or(0, Vec::len)
        + r.would_deny.len();
    if n >= NONE as usize {
        return None;
    }
    let mut size = 0;
    let mut add = |s: &str| {
        size += 4 + s.len();
        len32(s).is_some()
    };
    let fits = attrs.into_iter().flatten().all(|(k, v)| add(k) && add(v))
        && r.target_peers.iter().flatten().all(|p| add(p.as_str()))
        && r.services.iter().flatten().all(|s| add(s))
        && r.would_deny.iter().all(|w| add(&w.agent) && add(&w.policy));
    fits.then_some(size)
}

fn encode(out: &mut Vec<u8>, event: &Event, r: &Response) {
    // The event's fixed strings (see `STRINGS`), and its attributes and byte counts.
    let (kind, direction, e0, e1, e2, e3, e4, attrs, sent, received) = match event {
        Event::NewConnection(e) => (
            0,
            e.direction as u32,
            Some(e.dst_service.as_str()),
            e.dst_namespace.as_ref().map(|n| n.as_str()),
            e.src_service.as_ref().map(|s| s.as_str()),
            e.src_peer.as_ref().map(|p| p.as_str()),
            e.connection_id.as_ref().map(|c| c.as_str()),
            Some(&e.src_attributes),
            None,
            None,
        ),
        Event::ExposeService(e) => (
            1,
            0,
            Some(e.service.as_str()),
            e.namespace.as_ref().map(|n| n.as_str()),
            None,
            None,
            None,
            None,
            None,
            None,
        ),
        Event::ServiceListRequest(e) => (
            2,
            0,
            Some(e.src_peer.as_str()),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ),
        Event::ConnectionClosed(e) => (
            3,
            0,
            Some(e.connection_id.as_str()),
            None,
            None,
            None,
            None,
            None,
            e.bytes_sent,
            e.bytes_received,
        ),
    };
    let r5 = r.target_peer.as_ref().map(|p| p.as_str());
    let r6 = r.connection_id.as_ref().map(|c| c.as_str());
    let r7 = r.matched_by.as_deref();
    let r8 = r.decided_by.as_deref();
    let r9 = Some(&*r.reason);
    let attrs = attrs.filter(|a| !a.is_empty());
    let has_lists = attrs.is_some()
        || r.target_peers.as_ref().is_some_and(|v| !v.is_empty())
        || r.services.as_ref().is_some_and(|v| !v.is_empty())
        || !r.would_deny.is_empty();
    let mut total = 0;
    let lens = [
        len_word(e0, &mut total),
        len_word(e1, &mut total),
        len_word(e2, &mut total),
        len_word(e3, &mut total),
        len_word(e4, &mut total),
        len_word(r5, &mut total),
        len_word(r6, &mut total),
        len_word(r7, &mut total),
        len_word(r8, &mut total),
        len_word(r9, &mut total),
    ];
    let lists = if has_lists {
        lists_size(attrs, r)
    } else {
        Some(0)
    };
    let Some(lists) = lists.filter(|_| total < NONE as usize) else {
        out.clear();
        out.extend_from_slice(&UNLOGGABLE.to_le_bytes());
        return;
    };
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
    let rate = r.rate_limit.map_or(0, |l| l.bits_per_second);
    let sent = sent.unwrap_or(0);
    let received = received.unwrap_or(0);
    let [l0, l1, l2, l3, l4, l5, l6, l7, l8, l9] = lens;
    let words: [u32; WORDS] = [
        kind | direction << 8 | (r.decision as u32) << 16 | flags << 24,
        attrs.map_or(0, |a| a.len() as u32),
        r.target_peers.as_ref().map_or(0, |v| v.len() as u32),
        r.services.as_ref().map_or(0, |v| v.len() as u32),
        r.would_deny.len() as u32,
        rate as u32,
        (rate >> 32) as u32,
        sent as u32,
        (sent >> 32) as u32,
        received as u32,
        (received >> 32) as u32,
        l0,
        l1,
        l2,
        l3,
        l4,
        l5,
        l6,
        l7,
        l8,
        l9,
    ];
    let mut head = [0u8; 4 * WORDS];
    for (bytes, word) in head.chunks_exact_mut(4).zip(words.iter()) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    // Keeps the old bytes where they will be overwritten: only growth is zeroed.
    out.resize(head.len() + total + lists, 0);
    let mut out = Out(out);
    out.put(&head);
    out.opt(e0);
    out.opt(e1);
    out.opt(e2);
    out.opt(e3);
    out.opt(e4);
    out.opt(r5);
    out.opt(r6);
    out.opt(r7);
    out.opt(r8);
    out.opt(r9);
    if has_lists {
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
}

/// Reads an encoded entry back; `None` if it does not decode (it always does, but a
/// decoder never trusts its input).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn str_of_len(&mut self, len: u32) -> Option<&'a str> {
        std::str::from_utf8(self.bytes(len as usize)?).ok()
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = u32::from_le_bytes(self.bytes(4)?.try_into().ok()?);
        self.str_of_len(len)
    }

    /// `Some(None)` for an absent string.
    fn opt(&mut self, len: u32) -> Option<Option<&'a str>> {
        match len {
            NONE => Some(None),
            len => self.str_of_len(len).map(Some),
        }
    }

    fn list<T>(&mut self, n: u32, f: impl Fn(&'a str) -> T) -> Option<Vec<T>> {
        let mut out = Vec::with_capacity((n as usize).min(self.0.len() / 4));
        for _ in 0..n {
            out.push(f(self.str()?));
        }
        Some(out)
    }
}

fn decode(slot: &Slot) -> Option<LogEntry> {
    let mut rd = Reader(&slot.bytes);
    let mut words = [0u32; WORDS];
    for (word, bytes) in words.iter_mut().zip(rd.bytes(4 * WORDS)?.chunks_exact(4)) {
        *word = u32::from_le_bytes(bytes.try_into().ok()?);
    }
    let [
        w0,
        attrs_n,
        peers_n,
        services_n,
        would_n,
        r0,
        r1,
        s0,
        s1,
        b0,
        b1,
        lens @ ..,
    ] = words;
    let number = |lo: u32, hi: u32| u64::from(lo) | u64::from(hi) << 32;
    let flags = w0 >> 24;
    let [
        e0,
        e1,
        e2,
        e3,
        e4,
        target_peer,
        connection_id,
        matched_by,
        decided_by,
        reason,
    ] = lens;
    let [e0, e1, e2, e3, e4] = [
        rd.opt(e0)?,
        rd.opt(e1)?,
        rd.opt(e2)?,
        rd.opt(e3)?,
        rd.opt(e4)?,
    ];
    let target_peer = rd.opt(target_peer)?.map(PeerName::from);
    let connection_id = rd.opt(connection_id)?.map(ConnectionId::from);
    let matched_by = rd.opt(matched_by)?.map(Arc::from);
    let decided_by = rd.opt(decided_by)?.map(Arc::from);
    let reason = Arc::from(rd.opt(reason)??);
    let event = match w0 & 0xff {
        0 => {
            let mut src_attributes = BTreeMap::new();
            for _ in 0..attrs_n {
                let k = rd.str()?;
                src_attributes.insert(k.to_owned(), rd.str()?.to_owned());
            }
            Event::NewConnection(NewConnection {
                direction: match (w0 >> 8) & 0xff {
                    0 => Direction::Egress,
                    _ => Direction::Ingress,
                },
                dst_service: ServiceName::from(e0?),
                dst_namespace: e1.map(Namespace::from),
                src_service: e2.map(ServiceName::from),
                src_peer: e3.map(PeerName::from),
                src_attributes,
                connection_id: e4.map(ConnectionId::from),
            })
        }
        1 => Event::ExposeService(ExposeService {
            service: ServiceName::from(e0?),
            namespace: e1.map(Namespace::from),
        }),
        2 => Event::ServiceListRequest(ServiceListRequest {
            src_peer: PeerName::from(e0?),
        }),
        3 => Event::ConnectionClosed(ConnectionClosed {
            connection_id: ConnectionId::from(e0?),
            bytes_sent: (flags & BYTES_SENT != 0).then(|| number(s0, s1)),
            bytes_received: (flags & BYTES_RECEIVED != 0).then(|| number(b0, b1)),
        }),
        _ => return None,
    };
    let target_peers = rd.list(peers_n, PeerName::from)?;
    let services = rd.list(services_n, str::to_owned)?;
    let mut would_deny = Vec::new();
    for _ in 0..would_n {
        would_deny.push(WouldDeny {
            agent: Arc::from(rd.str()?),
            policy: Arc::from(rd.str()?),
        });
    }
    Some(LogEntry {
        seq: slot.seq,
        time: slot.time,
        event,
        response: Response {
            decision: match (w0 >> 16) & 0xff {
                0 => Decision::Allow,
                _ => Decision::Deny,
            },
            target_peer,
            fallback_peers: None,
            target_peers: (flags & TARGET_PEERS != 0).then_some(target_peers),
            services: (flags & SERVICES != 0).then_some(services),
            rate_limit: (flags & RATE_LIMIT != 0).then(|| RateLimit {
                bits_per_second: number(r0, r1),
            }),
            connection_id,
            matched_by,
            decided_by,
            reason,
            would_deny,
            annotations: BTreeMap::new(),
            trace: None,
        },
    })
}
