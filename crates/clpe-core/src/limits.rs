//! Counted things: limiter slots, and the table of open connections that holds them.
//!
//! A slot is an RAII guard ([`SlotGuard`]): reserved during the chain, it gives its count
//! back when dropped. A denied chain drops its guards; an allowed one moves them into the
//! connection's record, which drops them on `ConnectionClosed` or when the lease ends.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use hashbrown::HashTable;
use parking_lot::Mutex;
use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::names::{ConnectionId, PeerName, ServiceName, Time};
use crate::shard_lock::ShardLock;

const SHARDS: usize = 32;

/// Keeps what it holds on a cache line of its own, so two threads working on neighbouring
/// shards (or one counter each) do not take the line from each other.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// One unit of a counter, held; given back on drop.
#[derive(Debug)]
pub struct SlotGuard {
    counter: Arc<AtomicI64>,
    /// When the slot is released if the connection is never closed.
    pub expires: Time,
    /// Whether the slot holds its connection: the connection's lease is that of the
    /// slots holding it. A dry-run policy's slot counts but holds nothing (it must not
    /// change how long the connection is tracked, which least-connections reads); it is
    /// released at its lease or with the connection, whichever comes first.
    pub holds: bool,
}

impl SlotGuard {
    /// Takes one unit of `counter` unconditionally, for a dry-run policy: the slot holds
    /// nothing.
    pub fn take(counter: Arc<AtomicI64>, expires: Time) -> SlotGuard {
        counter.fetch_add(1, Ordering::AcqRel);
        SlotGuard {
            counter,
            expires,
            holds: false,
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
    policy: Box<str>,
    values: Box<[Box<str>]>,
    count: Arc<AtomicI64>,
}

/// Counters per (policy, key tuple), sharded so threads rarely meet on a lock.
pub struct Counters {
    shards: Box<[Padded<ShardLock<HashTable<CounterEntry>>>]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
        }
    }
}

impl Counters {
    /// The counter of `(policy, values)`, made on first use.
    pub fn counter(&self, policy: &str, values: &[&str]) -> Arc<AtomicI64> {
        let hash = tuple_hash(policy, values);
        let Some(shard) = self.shards.get(shard_index(hash)) else {
            return Arc::default();
        };
        let mut table = shard.lock();
        let eq = |e: &CounterEntry| {
            *e.policy == *policy
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
            policy: Box::from(policy),
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
        policy: &str,
        values: &[&str],
        max: u64,
        expires: Time,
    ) -> Option<SlotGuard> {
        let counter = self.counter(policy, values);
        let before = counter.fetch_add(1, Ordering::AcqRel);
        let guard = SlotGuard {
            counter,
            expires,
            holds: true,
        };
        if before < 0 || (before as u64) >= max {
            return None; // the guard gives the unit back
        }
        Some(guard)
    }

    /// The current count, without reserving (dry runs, metrics).
    pub fn current(&self, policy: &str, values: &[&str]) -> i64 {
        self.counter(policy, values).load(Ordering::Acquire)
    }
}

/// A shard by bits of the hash that the shard's own table does not use to place entries
/// (its low bits pick the bucket, its top 7 bits are the tag).
fn shard_index(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

/// How many stripes a peer's open-connection count is split into. A thread adds and
/// subtracts on its own stripe, so admitting and closing never take a cache line from
/// another thread; only `least-connections` reads them all.
const STRIPES: usize = 4;

/// One peer's open connections, striped per thread (see [`STRIPES`]).
struct PeerOpen {
    name: PeerName,
    stripes: [Padded<AtomicI64>; STRIPES],
}

impl PeerOpen {
    fn add(&self, n: i64) {
        if let Some(s) = self.stripes.get(thread_number() % STRIPES) {
            s.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn sum(&self) -> i64 {
        self.stripes
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// This thread's number: handed out in turn as threads first ask, so the first threads
/// of a process get distinct numbers. Per-thread shards and stripes take it modulo
/// their count.
pub(crate) fn thread_number() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static NUMBER: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
    }
    NUMBER
        .try_with(|n| {
            if n.get() == usize::MAX {
                n.set(NEXT.fetch_add(1, Ordering::Relaxed) as usize);
            }
            n.get()
        })
        .unwrap_or(0)
}

/// A peer's place in [`Connections`]' open-connection counts: a number, so a connection's
/// record names its peer's count without holding a reference another thread also counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRef(u32);

/// A closed connection: what it held.
#[derive(Debug)]
pub struct Connection {
    pub target: Option<PeerName>,
    pub src_service: Option<ServiceName>,
    pub slots: Vec<SlotGuard>,
    pub expires: Time,
}

/// No peer holds the connection: see [`Record::peer`].
const NO_PEER: u32 = u32::MAX;

/// Who named a connection.
enum Named {
    /// The engine: its serial number. The id's text also says where the record is (see
    /// [`Connections::admit_new`]), so these records need no index entry.
    Engine(u64),
    /// The event (`connection_id`): found through the shard's index.
    Event(ConnectionId),
}

/// An admitted connection's record: what it holds until it is closed or its lease ends.
/// 80 bytes: every admitted connection writes one, and the table holds as many as are
/// open, so it is kept small (the target peer is a number, its name found on close).
struct Record {
    id: Named,
    src_service: Option<ServiceName>,
    slots: Box<[SlotGuard]>,
    expires: Time,
    /// The low half of the id's hash (event-named records): finds the record's index
    /// entry from its place.
    hash: u32,
    /// The [`PeerRef`] whose open-connection count holds this connection, or [`NO_PEER`].
    peer: u32,
}

/// Where a shard's event-named records are, by the low half of their id's hash: open
/// addressing over 8-byte entries (`hash << 32 | place + 1`; 0 is empty), linear probing,
/// at most half full, removal by shifting later entries back (no tombstones). A probe
/// reads one cache line where a table of control bytes and slots reads two, and with two
/// threads each line a shard's operation touches is one the other thread may hold.
///
/// Entries are atomics only so that [`Connections::prefetch`] can reach one without the
/// lock (it reads none); the shard's lock orders every read and write of them.
struct Index {
    /// Empty, or a power of two long.
    entries: Arc<[AtomicU64]>,
    len: u32,
    /// Whether `entries` is a new table not yet in the shard's [`Tables`].
    grew: bool,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            entries: Arc::new([]),
            len: 0,
            grew: false,
        }
    }
}

/// Every table a shard's index has had, the current one last: read without the lock, to
/// prefetch the line where an id's entry is. A table only doubles, so keeping the old
/// ones costs at most as much as the current one.
type Tables = boxcar::Vec<Arc<[AtomicU64]>>;

/// Where an entry of `hash` is first looked for in a table of `len` entries: the top
/// bits of a multiplicative mix, so ids alike in their low bits spread.
fn home_in(len: usize, hash: u32) -> usize {
    match len.trailing_zeros() {
        0 | 64 => 0,
        bits => (hash.wrapping_mul(0x9e37_79b9) >> (32 - bits)) as usize,
    }
}

impl Index {
    fn home(&self, hash: u32) -> usize {
        home_in(self.entries.len(), hash)
    }

    /// Adds the table to `tables` if it is new.
    fn publish(&mut self, tables: &Tables) {
        if std::mem::take(&mut self.grew) {
            tables.push(self.entries.clone());
        }
    }

    fn get(&self, i: usize) -> u64 {
        self.entries.get(i).map_or(0, |e| e.load(Ordering::Relaxed))
    }

    fn set(&self, i: usize, e: u64) {
        if let Some(slot) = self.entries.get(i) {
            slot.store(e, Ordering::Relaxed);
        }
    }

    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    /// The entry of `hash` for which `hit` holds: (its position, its place).
    fn find(&self, hash: u32, mut hit: impl FnMut(u32) -> bool) -> Option<(usize, u32)> {
        if self.len == 0 {
            return None;
        }
        let mut i = self.home(hash);
        loop {
            let e = self.entries.get(i)?.load(Ordering::Relaxed);
            if e == 0 {
                return None;
            }
            let at = (e as u32).wrapping_sub(1);
            if (e >> 32) as u32 == hash && hit(at) {
                return Some((i, at));
            }
            i = (i + 1) & self.mask();
        }
    }

    fn insert(&mut self, hash: u32, at: u32) {
        if 2 * (self.len as usize + 1) > self.entries.len() {
            self.grow();
        }
        // INVARIANT: a place is below `u32::MAX` (that many 80-byte records: over 300 GB).
        let e = (u64::from(hash) << 32) | (u64::from(at) + 1);
        let mut i = self.home(hash);
        while let Some(slot) = self.entries.get(i) {
            if slot.load(Ordering::Relaxed) == 0 {
                slot.store(e, Ordering::Relaxed);
                self.len += 1;
                return;
            }
            i = (i + 1) & self.mask();
        }
    }

    #[cold]
    fn grow(&mut self) {
        let fresh = (0..(2 * self.entries.len()).max(16)).map(|_| AtomicU64::new(0));
        let old = std::mem::replace(&mut self.entries, fresh.collect());
        self.len = 0;
        self.grew = true;
        for e in old
            .iter()
            .map(|e| e.load(Ordering::Relaxed))
            .filter(|e| *e != 0)
        {
            self.insert((e >> 32) as u32, (e as u32).wrapping_sub(1));
        }
    }

    /// Empties position `i`, moving back each later entry of the run that may take a
    /// freed position (one whose home is not between the freed position and it).
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.mask();
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let e = self.get(j);
            if e == 0 {
                break;
            }
            let home = self.home((e >> 32) as u32);
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(i) & mask {
                self.set(i, e);
                i = j;
            }
        }
        self.set(i, 0);
        self.len -= 1;
    }
}

/// When a lease ends: (time, a place in the slab). An entry can outlive the record it was
/// made for (closed, or replaced by a later one in the same place); acting on it is still
/// right, because it only removes what is due at `now`: the record in the place if its
/// lease has ended, else those of its slots whose lease has.
type Due = (u64, u32);

/// Lanes of expiries in a shard: a thread pushes to the lane of its number, so two
/// threads admitting into one shard do not write the same queue's header and tail (a
/// cache line each, which would move between their cores), and each lane stays in time
/// order (one thread's clock does not go back; two threads' clocks, interleaved, do).
const LANES: usize = 4;

/// A shard's pending expiries. Leases mostly end in the order connections came (one
/// lease length, one clock), so most go to the back of the admitting thread's lane, a
/// queue that stays in time order, at the cost of a push; one that would break the order
/// (another lease length) goes to a heap. The earliest of the fronts is next.
#[derive(Default)]
struct Expiries {
    /// Behind a pointer: a lane's header has a line of its own, and the shard's header
    /// stays in the lock's line.
    lanes: Box<[Padded<VecDeque<Due>>; LANES]>,
    heap: BinaryHeap<Reverse<Due>>,
}

impl Expiries {
    #[inline]
    fn push(&mut self, lane: usize, due: Due) {
        let Some(queue) = self.lanes.get_mut(lane % LANES) else {
            return;
        };
        match queue.0.back() {
            Some(last) if due.0 < last.0 => self.heap.push(Reverse(due)),
            _ => queue.0.push_back(due),
        }
    }

    /// The connection's lease end, and each earlier slot lease end: a connection that
    /// holds no slot (the common case) costs one entry. Returns the earliest of them.
    #[inline]
    fn push_conn(&mut self, lane: usize, at: u32, conn: &Record) -> u64 {
        self.push(lane, (conn.expires.0, at));
        let mut last = conn.expires;
        for slot in &conn.slots {
            // INVARIANT: no slot outlives its connection (`admit` makes sure), so a slot
            // ending with the connection needs no entry of its own. Repeats are harmless
            // (an entry whose work is done changes nothing) but skipped when adjacent.
            if slot.expires < conn.expires && slot.expires != last {
                self.push(lane, (slot.expires.0, at));
                last = slot.expires;
            }
        }
        last.0
    }

    /// Takes the earliest entry if it is due at `now`.
    fn pop_due(&mut self, now: u64) -> Option<Due> {
        let queued = (self.lanes.iter().enumerate())
            .filter_map(|(i, q)| q.0.front().map(|d| (i, *d)))
            .min_by_key(|(_, d)| d.0);
        let heaped = self.heap.peek().map(|r| r.0);
        match (queued, heaped) {
            (Some((_, q)), Some(h)) if h.0 < q.0 => self.pop_heap(now),
            (None, Some(_)) => self.pop_heap(now),
            (Some((lane, q)), _) if q.0 <= now => self.lanes.get_mut(lane)?.0.pop_front(),
            _ => None,
        }
    }

    fn pop_heap(&mut self, now: u64) -> Option<Due> {
        self.heap.peek().filter(|r| r.0.0 <= now)?;
        self.heap.pop().map(|r| r.0)
    }

    fn next(&self) -> u64 {
        let queued = (self.lanes.iter())
            .filter_map(|q| q.0.front().map(|d| d.0))
            .min()
            .unwrap_or(u64::MAX);
        let heaped = self.heap.peek().map_or(u64::MAX, |r| r.0.0);
        queued.min(heaped)
    }

    fn len(&self) -> usize {
        self.lanes.iter().map(|q| q.0.len()).sum::<usize>() + self.heap.len()
    }

    /// Entries in `lane` and the heap: what an admission on that lane checks (reading
    /// the other lanes would take their lines from the threads that push to them).
    fn lane_len(&self, lane: usize) -> usize {
        self.lanes.get(lane % LANES).map_or(0, |q| q.0.len()) + self.heap.len()
    }
}

/// Record places per slab chunk.
const CHUNK: usize = 256;

/// A place in a shard's slab: a record, or free (with the next free place: the free
/// places are a list through the slab, so freeing and reusing one writes only the place).
enum Place {
    Free(u32),
    Held(Record),
}

/// A shard's records sit in a slab, in the order they came (the place freed last is
/// reused first): admitting writes where the last admission wrote. Records the engine
/// named are found by their place, which their id's text gives; those the event named,
/// through an [`Index`] of 8 bytes each, so it stays in cache and grows cheaply. The
/// slab grows by chunks, so growing it moves nothing; a new chunk's places join the free
/// list in order. What every admission and close reads and writes first (the index's and
/// the slab's headers, the free list's head) fits in the lock's cache line: 56 bytes
/// after the lock's 8 (see the test `a_shard_header_shares_its_lock_line`).
#[derive(Default)]
#[repr(C)]
struct ConnShard {
    index: Index,
    slab: Vec<Box<[Place]>>,
    /// The first free place (read only while some place is free).
    free: u32,
    /// Records held.
    held: u32,
    /// Every pending expiry; entries of closed or replaced connections stay until they
    /// come due or a rebuild drops them (harmless: see [`Due`]).
    expiries: Expiries,
    /// The expiries kept after the last rebuild.
    rebuilt: usize,
}

impl ConnShard {
    fn record(&self, at: u32) -> Option<&Record> {
        let at = at as usize;
        match self.slab.get(at / CHUNK)?.get(at % CHUNK)? {
            Place::Held(r) => Some(r),
            Place::Free(_) => None,
        }
    }

    fn record_mut(&mut self, at: u32) -> Option<&mut Record> {
        let at = at as usize;
        match self.slab.get_mut(at / CHUNK)?.get_mut(at % CHUNK)? {
            Place::Held(r) => Some(r),
            Place::Free(_) => None,
        }
    }

    fn place_mut(&mut self, at: u32) -> Option<&mut Place> {
        let at = at as usize;
        self.slab.get_mut(at / CHUNK)?.get_mut(at % CHUNK)
    }

    /// The event-named record `id`: (its index position, its place).
    fn find(&self, hash: u64, id: &str) -> Option<(usize, u32)> {
        let named = |r: &Record| matches!(&r.id, Named::Event(n) if n.as_str() == id);
        self.index
            .find(hash as u32, |at| self.record(at).is_some_and(named))
    }

    /// Whether the record at `at` is the engine's `serial`.
    fn holds(&self, at: u32, serial: u64) -> bool {
        let named = |r: &Record| matches!(r.id, Named::Engine(n) if n == serial);
        self.record(at).is_some_and(named)
    }

    /// Records held.
    fn len(&self) -> usize {
        self.held as usize
    }

    /// Takes the record at `at` out of the slab and, when `indexed` gives its index
    /// position, out of the index.
    fn remove_found(
        &mut self,
        at: u32,
        indexed: Option<usize>,
        peers: &boxcar::Vec<PeerOpen>,
    ) -> Option<Record> {
        let free = self.free;
        let place = self.place_mut(at)?;
        let Place::Held(_) = place else {
            return None;
        };
        let Place::Held(record) = std::mem::replace(place, Place::Free(free)) else {
            return None;
        };
        self.free = at;
        self.held -= 1;
        if let Some(i) = indexed {
            self.index.remove_at(i);
        }
        if let Some(open) = peers.get(record.peer as usize) {
            open.add(-1);
        }
        Some(record)
    }

    /// Takes the record at `at` out of the slab and the index.
    fn remove(&mut self, at: u32, peers: &boxcar::Vec<PeerOpen>) -> Option<Record> {
        let indexed = match self.record(at)? {
            Record {
                id: Named::Event(_),
                hash,
                ..
            } => self.index.find(*hash, |a| a == at).map(|(i, _)| i),
            _ => None,
        };
        self.remove_found(at, indexed, peers)
    }

    /// Places in the slab.
    fn places(&self) -> usize {
        self.slab.len() * CHUNK
    }

    /// Puts a record in a free place, with its expiries in this thread's lane; returns
    /// the place and the earliest of those expiries.
    fn insert(&mut self, record: Record) -> (u32, u64) {
        if self.held as usize == self.places() {
            self.grow();
        }
        let at = self.free;
        let hash = record.hash;
        let indexed = matches!(record.id, Named::Event(_));
        let lane = thread_number();
        let earliest = self.expiries.push_conn(lane, at, &record);
        if let Some(place) = self.place_mut(at)
            && let Place::Free(next) = std::mem::replace(place, Place::Held(record))
        {
            self.free = next;
        }
        self.held += 1;
        if indexed {
            self.index.insert(hash, at);
        }
        self.compact(self.expiries.lane_len(lane));
        (at, earliest)
    }

    /// Adds a chunk of places to the slab, at the head of the free list in order.
    #[cold]
    fn grow(&mut self) {
        // INVARIANT: fewer than 4 billion places in a shard.
        let (first, head) = (self.places() as u32, self.free);
        let next = |i: usize| match i + 1 {
            CHUNK => head,
            n => first + n as u32,
        };
        let chunk = (0..CHUNK).map(|i| Place::Free(next(i))).collect();
        self.slab.push(chunk);
        self.free = first;
    }

    fn expire(&mut self, now: Time, peers: &boxcar::Vec<PeerOpen>) {
        while let Some((_, at)) = self.expiries.pop_due(now.0) {
            let Some(record) = self.record_mut(at) else {
                continue; // the connection it was for is gone
            };
            if record.expires <= now {
                self.remove(at, peers);
            } else {
                let mut slots = std::mem::take(&mut record.slots).into_vec();
                slots.retain(|s| s.expires > now);
                record.slots = slots.into_boxed_slice();
            }
        }
        self.compact(self.expiries.len());
    }

    /// Closed connections leave entries behind: rebuild when they dominate (`len`, the
    /// entries counted: all of them, or an admission's lane and the heap). Amortised
    /// O(1): the entries counted have at least doubled since the last rebuild, and a
    /// rebuild costs about as much as all entries, at most [`LANES`] times those counted.
    #[inline]
    fn compact(&mut self, len: usize) {
        if len > 1024 && len > 4 * (self.len() + 1) && len > 2 * self.rebuilt {
            self.rebuild();
        }
    }

    #[cold]
    fn rebuild(&mut self) {
        let mut fresh = Expiries::default();
        for (at, record) in self.slab.iter().flat_map(|c| c.iter()).enumerate() {
            if let Place::Held(r) = record {
                fresh.push_conn(0, at as u32, r);
            }
        }
        // All in time order in the first lane, none in the heap.
        let Expiries { mut lanes, heap } = fresh;
        let mut all: Vec<Due> = lanes.iter_mut().flat_map(|q| q.0.drain(..)).collect();
        all.extend(heap.into_iter().map(|r| r.0));
        all.sort_unstable();
        self.rebuilt = all.len();
        if let Some(first) = lanes.first_mut() {
            first.0 = all.into();
        }
        self.expiries = Expiries {
            lanes,
            heap: BinaryHeap::new(),
        };
    }

    fn next(&self) -> u64 {
        self.expiries.next()
    }
}

/// A shard and the tables its index has had (read without its lock: see [`Tables`]). The
/// lock comes first, so its line is the shard's first.
#[derive(Default)]
#[repr(C)]
struct ConnSlot {
    shard: ShardLock<ConnShard>,
    tables: Tables,
}

impl std::ops::Deref for ConnSlot {
    type Target = ShardLock<ConnShard>;
    fn deref(&self) -> &ShardLock<ConnShard> {
        &self.shard
    }
}

/// The open connections, by id, with their slots; sharded by id. Also the count of open
/// connections per peer, which `least-connections` balances on.
pub struct Connections {
    shards: Box<[Padded<ConnSlot>]>,
    /// A lower bound of the earliest expiry anywhere: decisions sweep only past it.
    next_expiry: AtomicU64,
    sweeping: Mutex<()>,
    /// Open connections per peer, by [`PeerRef`]: appended to, never moved, so reading a
    /// count takes no lock.
    peers: boxcar::Vec<PeerOpen>,
    /// A peer's place in `peers`, by name: kept for the engine's life, so a peer that
    /// leaves the inventory and comes back finds its connections still counted.
    peer_refs: Mutex<FxHashMap<PeerName, PeerRef>>,
    /// `c<4 hex digits>-`: the ids this table makes start so (see
    /// [`Connections::admit_new`]).
    prefix: [u8; PREFIX],
    /// Whether an event ever named its connection with an id starting with `prefix`:
    /// then an id made here is checked against the event-named records too.
    prefixed: AtomicBool,
}

/// The length of an engine-made id's prefix, `c<tag>-`. Short, so that the numbers after
/// it have room: an id is kept inline up to 23 bytes (see [`ConnectionId`]), which leaves
/// 17 for `<serial>-<place>`, enough for serials below 2^44 at places below 2^20 (a
/// million connections open), or below 2^40 at places below 2^24. With the 10-byte prefix
/// `clpe-<tag>-` it was serials below 2^28 at such places: a long-lived engine passed
/// that within hours and each id after it was an allocation.
const PREFIX: usize = 6;

impl Default for Connections {
    fn default() -> Self {
        Connections::new(0)
    }
}

fn id_hash(id: &str) -> u64 {
    FxBuildHasher.hash_one(id)
}

/// `n` in lower-case hex: (how many digits it takes, at least one; 16 bytes, those
/// digits first, then zeros). Each nibble is spread to a byte and turned into its digit in
/// one pass over the word, with no loop and no table.
fn hex(n: u64) -> (usize, [u8; 16]) {
    fn digits(half: u32) -> u64 {
        let x = u64::from(half);
        let x = (x | x << 16) & 0x0000_ffff_0000_ffff;
        let x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
        let x = (x | x << 4) & 0x0f0f_0f0f_0f0f_0f0f;
        // Nibbles of 10 and more carry into bit 4 when 6 is added: those are letters,
        // `'a' - '0' - 10` = 39 further on.
        let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        x + 0x3030_3030_3030_3030 + letters * 39
    }
    let count = (64 - n.leading_zeros() as usize).div_ceil(4).max(1);
    // Ids below 2^32 (most) spread one half.
    let high = match n >> 32 {
        0 => 0,
        high => digits(high as u32),
    };
    let all = u128::from(high) << 64 | u128::from(digits(n as u32));
    // The leading zeros shifted out, the digits to the front (big-endian: the first
    // digit is the highest byte).
    (count, (all << (8 * (16 - count))).to_be_bytes())
}

/// A number in lowercase hex as [`Connections::id_text`] writes it (no sign, no leading
/// zero, at most 16 digits): one text per number, so one id per record.
fn canonical_hex(digits: &[u8]) -> Option<u64> {
    let canonical = matches!(digits, [b'0'] | [b'1'..=b'9' | b'a'..=b'f', ..])
        && digits.len() <= 16
        && digits
            .iter()
            .all(|d| matches!(d, b'0'..=b'9' | b'a'..=b'f'));
    canonical.then(|| {
        digits.iter().fold(0u64, |n, d| {
            let v = match d {
                b'0'..=b'9' => d - b'0',
                _ => d - b'a' + 10,
            };
            n << 4 | u64::from(v)
        })
    })
}

impl Connections {
    /// An empty table whose ids carry `tag` (say, from the engine's seed).
    pub fn new(tag: u16) -> Connections {
        let mut prefix = *b"c0000-";
        for (i, digit) in prefix.iter_mut().skip(1).take(4).enumerate() {
            let nibble = (u32::from(tag) >> (4 * (3 - i))) & 0xf;
            *digit = char::from_digit(nibble, 16).map_or(b'0', |c| c as u8);
        }
        Connections {
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
            next_expiry: AtomicU64::new(u64::MAX),
            sweeping: Mutex::new(()),
            peers: boxcar::Vec::new(),
            peer_refs: Mutex::new(FxHashMap::default()),
            prefix,
            prefixed: AtomicBool::new(false),
        }
    }

    fn shard(&self, hash: u64) -> Option<&ConnSlot> {
        self.shards.get(shard_index(hash)).map(|p| &p.0)
    }

    /// The place of `peer`'s open-connection count, made on first use (when a snapshot
    /// is built, not per decision).
    pub fn peer(&self, peer: &PeerName) -> PeerRef {
        let mut refs = self.peer_refs.lock();
        if let Some(r) = refs.get(peer) {
            return *r;
        }
        // INVARIANT: fewer than 4 billion distinct peer names over an engine's life.
        let r = PeerRef(self.peers.push(PeerOpen {
            name: peer.clone(),
            stripes: Default::default(),
        }) as u32);
        refs.insert(peer.clone(), r);
        r
    }

    /// Connections open to a peer now.
    pub fn open_to(&self, peer: PeerRef) -> i64 {
        self.peers.get(peer.0 as usize).map_or(0, PeerOpen::sum)
    }

    /// Starts bringing in the cache lines the connection `id`'s admission or close will
    /// touch first, for writing: its shard's (the lock, and the headers read first), the
    /// shard its text names if this table made it, else its hash's; and for an id an
    /// event named, the line of the index where its entry is or will go (its place in
    /// the current table, read without the lock: if the table grows before the
    /// admission, a wasted prefetch). Called as a decision starts: a connection is
    /// admitted at the chain's end, and with two threads these lines are as likely in
    /// the other's cache as in this one's; and the two come in together, where the
    /// index's address is otherwise known only once the shard's line is in.
    #[inline]
    pub fn prefetch(&self, id: &str) {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some((_, shard, _)) = self.locate(id) {
                if let Some(slot) = self.shards.get(shard) {
                    safe_arch::prefetch_et0(slot);
                }
                return;
            }
            let hash = id_hash(id);
            let Some(slot) = self.shard(hash) else {
                return;
            };
            safe_arch::prefetch_et0(&slot.shard);
            let tables = &slot.tables;
            let table = tables.count().checked_sub(1).and_then(|n| tables.get(n));
            if let Some(entry) = table.and_then(|t| t.get(home_in(t.len(), hash as u32))) {
                safe_arch::prefetch_et0(entry);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = id;
    }

    /// Releases everything whose lease ended at or before `now`. Cheap when nothing is due.
    pub fn expire(&self, now: Time) {
        if now.0 < self.next_expiry.load(Ordering::Acquire) {
            return;
        }
        let _one_sweeper = self.sweeping.lock();
        if now.0 < self.next_expiry.load(Ordering::Acquire) {
            return;
        }
        // Reset first: admissions racing with the sweep lower it again.
        self.next_expiry.store(u64::MAX, Ordering::Release);
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            s.expire(now, &self.peers);
            self.next_expiry.fetch_min(s.next(), Ordering::AcqRel);
        }
    }

    /// What admitting needs besides the id: the lease end, and the peer's count taken. A
    /// connection that limit policies hold ends with the last of their leases (SPEC
    /// §3.4); `expires`, the engine's default lease, is for one that none holds (dry-run
    /// policies hold nothing).
    fn prepare(&self, target: Option<PeerRef>, slots: &[SlotGuard], expires: Time) -> (Time, u32) {
        let held = slots.iter().filter(|s| s.holds).map(|s| s.expires);
        let expires = held.max().unwrap_or(expires);
        let peer = match target {
            Some(peer) => {
                if let Some(open) = self.peers.get(peer.0 as usize) {
                    open.add(1);
                }
                peer.0
            }
            None => NO_PEER,
        };
        (expires, peer)
    }

    /// Lowers the bound on the earliest expiry to `earliest` if it is above. Lowering it
    /// is rare (leases end later than those before them): read it before writing, so
    /// admissions do not all write one shared line.
    fn expiring(&self, earliest: u64) {
        if earliest < self.next_expiry.load(Ordering::Acquire) {
            self.next_expiry.fetch_min(earliest, Ordering::AcqRel);
        }
    }

    /// Records an admitted connection named by its event. A connection with the same id
    /// still open is replaced (its slots are given back).
    pub fn admit(
        &self,
        id: ConnectionId,
        target: Option<PeerRef>,
        src_service: Option<ServiceName>,
        slots: Vec<SlotGuard>,
        expires: Time,
    ) {
        let (expires, peer) = self.prepare(target, &slots, expires);
        if id.as_str().as_bytes().starts_with(&self.prefix) {
            self.prefixed.store(true, Ordering::Release);
        }
        // An id this table made, reused by an event (rare): that record goes.
        if let Some((serial, shard, at)) = self.locate(id.as_str())
            && let Some(shard) = self.shards.get(shard)
        {
            let mut s = shard.lock();
            if s.holds(at, serial) {
                s.remove(at, &self.peers);
            }
        }
        let hash = id_hash(id.as_str());
        let Some(shard) = self.shard(hash) else {
            return;
        };
        let earliest = {
            let mut guard = shard.lock();
            let s = &mut *guard;
            // A reused id (rare): the old record gives its slots back here.
            if let Some((i, at)) = s.find(hash, id.as_str()) {
                s.remove_found(at, Some(i), &self.peers);
            }
            // The bound needs lowering only for what this admission adds.
            let (_, earliest) = s.insert(Record {
                id: Named::Event(id),
                src_service,
                slots: slots.into_boxed_slice(),
                expires,
                hash: hash as u32,
                peer,
            });
            s.index.publish(&shard.tables);
            earliest
        };
        self.expiring(earliest);
    }

    /// Records an admitted connection the event did not name, under a number `serial`
    /// gives (never the same twice), and returns the id made for it:
    /// `c<tag>-<serial>-<place>`, numbers in lowercase hex, where the place says which
    /// shard and where in it. Finding the record again reads the id; no index is written.
    /// A thread admits into a shard of its own (its number's): consecutive admissions
    /// write the same lock, slab and expiry queue, which stay in its cache, where taking
    /// shards in turn by serial had every admission touch a shard not touched for 31
    /// admissions (586–613 → 517–535 ns a decision at acl-10000, one thread). The price:
    /// a connection closed on another thread locks the admitting thread's shard, which
    /// that thread holds for a moment on each admission (a short wait when they meet).
    pub fn admit_new(
        &self,
        mut serial: impl FnMut() -> u64,
        target: Option<PeerRef>,
        src_service: Option<ServiceName>,
        slots: Vec<SlotGuard>,
        expires: Time,
    ) -> ConnectionId {
        let mut number = serial();
        // This thread's own shard (the id says where the record is, whoever closes it).
        let shard = thread_number() % SHARDS;
        let Some(lock) = self.shards.get(shard) else {
            return self.id_text(number, u64::MAX);
        };
        let (expires, peer) = self.prepare(target, &slots, expires);
        let serial_now = number;
        let (at, earliest) = {
            let mut s = lock.lock();
            s.insert(Record {
                id: Named::Engine(serial_now),
                src_service,
                slots: slots.into_boxed_slice(),
                expires,
                hash: 0,
                peer,
            })
        };
        self.expiring(earliest);
        let place = u64::from(at) * SHARDS as u64 + shard as u64;
        let mut id = self.id_text(number, place);
        // An event named its connection in this table's form (rare): the id made here
        // must not be one an event-named record holds (two records, one id), so the record
        // takes the next number until its id is free.
        if self.prefixed.load(Ordering::Acquire) {
            while self.named_by_event(id.as_str()) {
                let next = serial();
                let mut s = lock.lock();
                match s.record_mut(at) {
                    Some(r) if matches!(r.id, Named::Engine(n) if n == number) => {
                        r.id = Named::Engine(next);
                    }
                    // Closed already (by someone who guessed its id): nothing to rename.
                    _ => break,
                }
                drop(s);
                number = next;
                id = self.id_text(number, place);
            }
        }
        id
    }

    /// Whether an event-named record holds `id`.
    fn named_by_event(&self, id: &str) -> bool {
        let hash = id_hash(id);
        self.shard(hash)
            .is_some_and(|s| s.lock().find(hash, id).is_some())
    }

    /// `c<tag>-<serial>-<place>`, without the formatting machinery (this runs on
    /// most admissions).
    fn id_text(&self, serial: u64, place: u64) -> ConnectionId {
        // Each group of digits is written whole (16 bytes, its digits first): the dash or
        // the end comes right after the digits, the next write covers what follows them.
        let mut text = [0u8; PREFIX + 2 * 16 + 1];
        if let Some(prefix) = text.first_chunk_mut::<PREFIX>() {
            *prefix = self.prefix;
        }
        let mut len = PREFIX;
        for (i, n) in [serial, place].into_iter().enumerate() {
            if i > 0
                && let Some(dash) = text.get_mut(len)
            {
                *dash = b'-';
                len += 1;
            }
            let (count, digits) = hex(n);
            if let Some(out) = text.get_mut(len..).and_then(|t| t.first_chunk_mut::<16>()) {
                *out = digits;
            }
            len += count;
        }
        let text = text.get(..len).unwrap_or_default();
        ConnectionId::new(std::str::from_utf8(text).unwrap_or_default())
    }

    /// Where the record of an id this table made is: (serial, shard, place), if `id` is
    /// exactly as [`Connections::id_text`] writes one.
    fn locate(&self, id: &str) -> Option<(u64, usize, u32)> {
        let rest = id.as_bytes().strip_prefix(&self.prefix)?;
        let dash = rest.iter().position(|b| *b == b'-')?;
        let (serial, place) = (rest.get(..dash)?, rest.get(dash + 1..)?);
        let (serial, place) = (canonical_hex(serial)?, canonical_hex(place)?);
        let at = u32::try_from(place / SHARDS as u64).ok()?;
        Some((serial, (place % SHARDS as u64) as usize, at))
    }

    /// Closes a connection: its slots are given back. Unknown ids are fine (`None`).
    pub fn close(&self, id: &str) -> Option<Connection> {
        let r = self.take(id)?;
        Some(Connection {
            target: self.peers.get(r.peer as usize).map(|p| p.name.clone()),
            src_service: r.src_service,
            slots: r.slots.into_vec(),
            expires: r.expires,
        })
    }

    /// Takes the record of `id` out of the table.
    fn take(&self, id: &str) -> Option<Record> {
        if let Some((serial, shard, at)) = self.locate(id)
            && let Some(shard) = self.shards.get(shard)
        {
            let mut s = shard.lock();
            if s.holds(at, serial) {
                return s.remove(at, &self.peers);
            }
        }
        let hash = id_hash(id);
        let mut s = self.shard(hash)?.lock();
        let (i, at) = s.find(hash, id)?;
        s.remove_found(at, Some(i), &self.peers)
    }

    /// Connections admitted and neither closed nor expired.
    pub fn open(&self) -> i64 {
        self.shards.iter().map(|s| s.lock().len() as i64).sum()
    }

    pub fn contains(&self, id: &str) -> bool {
        if let Some((serial, shard, at)) = self.locate(id)
            && self
                .shards
                .get(shard)
                .is_some_and(|s| s.lock().holds(at, serial))
        {
            return true;
        }
        let hash = id_hash(id);
        self.shard(hash)
            .is_some_and(|s| s.lock().find(hash, id).is_some())
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
