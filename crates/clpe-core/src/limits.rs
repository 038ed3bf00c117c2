//! Counted things: limiter slots, and the table of open connections that holds them.
//!
//! A slot is an RAII guard ([`SlotGuard`]): reserved during the chain, it gives its count
//! back when dropped. A denied chain drops its guards; an allowed one moves them into the
//! connection's record, which drops them on `ConnectionClosed` or when the lease ends.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use hashbrown::HashTable;
use parking_lot::Mutex;
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::names::{PeerName, Time};

const SHARDS: usize = 32;

/// One unit of a counter, held; given back on drop.
#[derive(Debug)]
pub struct SlotGuard {
    counter: Arc<AtomicI64>,
    /// The limit policy that holds the slot (empty for a peer's open-connection count).
    pub policy: Arc<str>,
    /// When the slot is released if the connection is never closed.
    pub expires: Time,
}

impl SlotGuard {
    /// Takes one unit of `counter` unconditionally.
    pub fn take(counter: Arc<AtomicI64>, policy: Arc<str>, expires: Time) -> SlotGuard {
        counter.fetch_add(1, Ordering::AcqRel);
        SlotGuard {
            counter,
            policy,
            expires,
        }
    }
}

impl SlotGuard {
    /// The counter's value now (this slot included).
    pub fn count(&self) -> i64 {
        self.counter.load(Ordering::Acquire)
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

fn tuple_hash(policy: &str, values: &[&str]) -> u64 {
    let mut h = FxBuildHasher.build_hasher();
    policy.hash(&mut h);
    for v in values {
        v.hash(&mut h);
    }
    h.finish()
}

struct CounterEntry {
    policy: Arc<str>,
    values: Box<[Box<str>]>,
    count: Arc<AtomicI64>,
}

/// Counters per (policy, key tuple), sharded so threads rarely meet on a lock.
pub struct Counters {
    shards: Box<[Mutex<HashTable<CounterEntry>>]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
        }
    }
}

impl Counters {
    /// The counter of `(policy, values)`, made on first use.
    pub fn counter(&self, policy: &Arc<str>, values: &[&str]) -> Arc<AtomicI64> {
        let hash = tuple_hash(policy, values);
        let Some(shard) = self.shards.get(hash as usize % SHARDS) else {
            return Arc::default();
        };
        let mut table = shard.lock();
        let eq = |e: &CounterEntry| {
            *e.policy == **policy
                && e.values.len() == values.len()
                && e.values.iter().zip(values).all(|(a, b)| &**a == *b)
        };
        if let Some(e) = table.find(hash, eq) {
            return e.count.clone();
        }
        // Counters nobody holds any more are dropped as new ones come.
        if table.len() >= 64 && table.len().is_power_of_two() {
            table.retain(|e| {
                Arc::strong_count(&e.count) > 1 || e.count.load(Ordering::Acquire) != 0
            });
        }
        let entry = CounterEntry {
            policy: policy.clone(),
            values: values.iter().map(|v| Box::from(*v)).collect(),
            count: Arc::default(),
        };
        let count = entry.count.clone();
        table.insert_unique(hash, entry, |e| {
            let vs: smallvec::SmallVec<[&str; 4]> = e.values.iter().map(|v| &**v).collect();
            tuple_hash(&e.policy, &vs)
        });
        count
    }

    /// Reserves one slot under `max`, or `None` when the counter is full.
    pub fn try_reserve(
        &self,
        policy: &Arc<str>,
        values: &[&str],
        max: u64,
        expires: Time,
    ) -> Option<SlotGuard> {
        let counter = self.counter(policy, values);
        let before = counter.fetch_add(1, Ordering::AcqRel);
        let guard = SlotGuard {
            counter,
            policy: policy.clone(),
            expires,
        };
        if before < 0 || (before as u64) >= max {
            return None; // the guard gives the unit back
        }
        Some(guard)
    }

    /// The current count, without reserving (dry runs, metrics).
    pub fn current(&self, policy: &Arc<str>, values: &[&str]) -> i64 {
        self.counter(policy, values).load(Ordering::Acquire)
    }
}

/// An admitted connection: what it holds until it is closed or its lease ends.
#[derive(Debug)]
pub struct Connection {
    seq: u64,
    pub target: Option<PeerName>,
    pub src_service: Option<Arc<str>>,
    pub slots: Vec<SlotGuard>,
    /// The peer's open-connection count, held until the record goes.
    peer_slot: Option<SlotGuard>,
    pub expires: Time,
}

#[derive(Default)]
struct ConnShard {
    conns: FxHashMap<Arc<str>, Connection>,
    /// (when, sequence number, id): stale entries (closed connections) are skipped.
    heap: BinaryHeap<Reverse<(Time, u64, Arc<str>)>>,
}

impl ConnShard {
    fn push_expiries(&mut self, id: &Arc<str>, conn: &Connection) {
        let mut times: smallvec::SmallVec<[Time; 4]> =
            conn.slots.iter().map(|s| s.expires).collect();
        times.push(conn.expires);
        times.sort_unstable();
        times.dedup();
        for t in times {
            self.heap.push(Reverse((t, conn.seq, id.clone())));
        }
    }

    fn expire(&mut self, now: Time) {
        while let Some(Reverse((t, seq, id))) = self.heap.peek().cloned() {
            if t > now {
                break;
            }
            self.heap.pop();
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.seq != seq {
                continue;
            }
            conn.slots.retain(|s| s.expires > now);
            if conn.expires <= now {
                self.conns.remove(&id);
            }
        }
        // Closed connections leave entries behind: rebuild when they dominate.
        if self.heap.len() > 1024 && self.heap.len() > 4 * (self.conns.len() + 1) {
            let conns = std::mem::take(&mut self.conns);
            self.heap.clear();
            for (id, conn) in &conns {
                self.push_expiries(id, conn);
            }
            self.conns = conns;
        }
    }

    fn next(&self) -> u64 {
        self.heap.peek().map_or(u64::MAX, |Reverse((t, _, _))| t.0)
    }
}

/// The open connections, by id, with their slots; sharded by id.
pub struct Connections {
    shards: Box<[Mutex<ConnShard>]>,
    /// A lower bound of the earliest expiry anywhere: decisions sweep only past it.
    next_expiry: AtomicU64,
    sweeping: Mutex<()>,
    seq: AtomicU64,
    open: AtomicI64,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(ConnShard::default()))
                .collect(),
            next_expiry: AtomicU64::new(u64::MAX),
            sweeping: Mutex::new(()),
            seq: AtomicU64::new(0),
            open: AtomicI64::new(0),
        }
    }
}

fn shard_of(id: &str) -> usize {
    FxBuildHasher.hash_one(id) as usize % SHARDS
}

impl Connections {
    /// Releases everything whose lease ended at or before `now`. Cheap when nothing is due.
    pub fn expire(&self, now: Time) {
        if now.0 < self.next_expiry.load(Ordering::Acquire) {
            return;
        }
        let _one_sweeper = self.sweeping.lock();
        if now.0 < self.next_expiry.load(Ordering::Acquire) {
            return;
        }
        // Reset first: admissions racing with the sweep lower it again with fetch_min.
        self.next_expiry.store(u64::MAX, Ordering::Release);
        let mut removed = 0i64;
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            let before = s.conns.len() as i64;
            s.expire(now);
            removed += before - s.conns.len() as i64;
            self.next_expiry.fetch_min(s.next(), Ordering::AcqRel);
        }
        self.open.fetch_sub(removed, Ordering::AcqRel);
    }

    /// Records an admitted connection. A connection with the same id still open is
    /// replaced (its slots are given back).
    pub fn admit(
        &self,
        id: Arc<str>,
        target: Option<(PeerName, Arc<AtomicI64>)>,
        src_service: Option<Arc<str>>,
        slots: Vec<SlotGuard>,
        expires: Time,
    ) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let expires = slots.iter().map(|s| s.expires).fold(expires, Time::max);
        let (target, peer_slot) = match target {
            Some((name, counter)) => (
                Some(name),
                Some(SlotGuard::take(counter, "".into(), expires)),
            ),
            None => (None, None),
        };
        let conn = Connection {
            seq,
            target,
            src_service,
            slots,
            peer_slot,
            expires,
        };
        let Some(shard) = self.shards.get(shard_of(&id)) else {
            return;
        };
        let mut s = shard.lock();
        s.push_expiries(&id, &conn);
        let earliest = s.next();
        if s.conns.insert(id, conn).is_none() {
            self.open.fetch_add(1, Ordering::AcqRel);
        }
        drop(s);
        self.next_expiry.fetch_min(earliest, Ordering::AcqRel);
    }

    /// Closes a connection: its slots are given back. Unknown ids are fine (`None`).
    pub fn close(&self, id: &str) -> Option<Connection> {
        let shard = self.shards.get(shard_of(id))?;
        let conn = shard.lock().conns.remove(id);
        if conn.is_some() {
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
        conn.map(|mut c| {
            c.peer_slot = None;
            c
        })
    }

    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Acquire)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.shards
            .get(shard_of(id))
            .is_some_and(|s| s.lock().conns.contains_key(id))
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
