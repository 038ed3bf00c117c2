#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;
use proptest::prelude::*;

/// An event whose entry is about `size` bytes long (the service name makes up the rest).
fn event_of(size: usize, tag: u64) -> Event {
    let name = format!("{tag}-").repeat(size / 2 + 1);
    Event::ExposeService(ExposeService {
        service: ServiceName::from(name.get(..size).unwrap_or(&name)),
        namespace: None,
    })
}

/// The bytes an entry takes in the ring.
fn size_of(event: &Event, r: &Response) -> usize {
    let mut count = Count(ENTRY_HEAD);
    encode(&mut count, event, r);
    count.0
}

/// Records `event` decided as `r` at time `t`, with nothing else to report.
fn record(monitor: &Monitor, event: &Event, r: &Response, t: u64) {
    monitor.record(&Outcome::new(event, r, Time(t)), Time(t));
}

fn allow() -> Response {
    serde_json::from_value(serde_json::json!({"decision": "allow", "reason": "ok"})).unwrap()
}

/// What the ring holds, decoded: (number, time, event).
fn held(ring: &Ring) -> Vec<(u64, u64, Event)> {
    ring.iter()
        .map(|(seq, time, bytes)| {
            let e = decode(seq, time, bytes).expect("every held entry decodes");
            (e.seq, e.time, e.event)
        })
        .collect()
}

proptest! {
    /// Against a model (every entry written, in order): the ring holds the newest ones,
    /// whole and numbered in order, never more than `capacity`, in a buffer never longer
    /// than `limit`; and all of the last `capacity` whenever they fit in the bound (the
    /// entries' bytes, and one entry's worth lost to the wrap).
    #[test]
    fn the_byte_ring_keeps_the_newest_entries_that_fit(
        capacity in 1..40usize,
        limit_log2 in 10..14u32,
        sizes in prop::collection::vec(prop_oneof![8 => 1..200usize, 1 => 200..6000usize], 1..400),
    ) {
        let limit = 1usize << limit_log2;
        let r = allow();
        let mut ring = Ring::default();
        let mut written: Vec<(Event, usize)> = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let event = event_of(*size, i as u64);
            let size = size_of(&event, &r);
            let logged = ring.write(capacity, limit, 1000 + i as u64, &event, &r);
            prop_assert_eq!(logged, size <= limit);
            if logged {
                written.push((event, size));
            }
            prop_assert!(ring.buf.len() <= limit);
            prop_assert!(ring.held.len() <= capacity);
            let got = held(&ring);
            let newest = &written[written.len() - got.len()..];
            prop_assert_eq!(got.len() as u64 <= ring.seq, true);
            for (k, ((seq, _, event), (want, _))) in got.iter().zip(newest).enumerate() {
                prop_assert_eq!(*seq, ring.seq + 1 + k as u64 - got.len() as u64);
                prop_assert_eq!(event, want);
            }
            let last = &written[written.len().saturating_sub(capacity)..];
            let bytes: usize = last.iter().map(|(_, s)| s).sum();
            let widest = last.iter().map(|(_, s)| *s).max().unwrap_or(0);
            if bytes + widest <= limit {
                prop_assert_eq!(got.len(), last.len());
            }
        }
    }
}

#[test]
fn the_ring_counts_entries_not_bytes_when_they_fit() {
    let r = allow();
    let mut ring = Ring::default();
    for i in 0..10u64 {
        let event = event_of(50, i);
        assert!(ring.write(3, MIN_LIMIT, i, &event, &r));
    }
    let got = held(&ring);
    assert_eq!(
        got.iter()
            .map(|(seq, time, _)| (*seq, *time))
            .collect::<Vec<_>>(),
        [(8, 7), (9, 8), (10, 9)]
    );
    assert_eq!(got[2].2, event_of(50, 9));
}

#[test]
fn the_ring_wraps_in_place_once_it_has_its_size() {
    let r = allow();
    let mut ring = Ring::default();
    let capacity = 16;
    for i in 0..capacity as u64 {
        ring.write(capacity, MIN_LIMIT, i, &event_of(100, i), &r);
    }
    let len = ring.buf.len();
    assert_eq!(len, start_len(capacity));
    let before = ring.buf.as_ptr();
    // Many laps: no growth, no new buffer, the last 16 always there.
    for i in 0..10_000u64 {
        ring.write(
            capacity,
            MIN_LIMIT,
            i,
            &event_of(90 + i as usize % 20, i),
            &r,
        );
        assert_eq!(ring.held.len(), capacity);
    }
    assert_eq!((ring.buf.len(), ring.buf.as_ptr()), (len, before));
    assert_eq!(
        held(&ring).last().unwrap().2,
        event_of(90 + 9_999 % 20, 9_999)
    );
}

#[test]
fn a_burst_of_large_entries_grows_the_buffer_and_it_is_given_back() {
    let r = allow();
    let mut ring = Ring::default();
    let capacity = 16;
    let limit = log_limit(capacity);
    for i in 0..capacity as u64 {
        assert!(ring.write(capacity, limit, i, &event_of(20_000, i), &r));
    }
    // All 16 held: the buffer grew for them, within the bound.
    assert_eq!(ring.held.len(), capacity);
    assert!(ring.buf.len() >= 16 * 20_000 && ring.buf.len() <= limit);
    // Halved at each lap (a buffer's length written) while the entries take less than a
    // quarter of it.
    for i in 0..10_000u64 {
        ring.write(capacity, limit, i, &event_of(60, i), &r);
    }
    let small = size_of(&event_of(60, 0), &r);
    assert!(
        ring.buf.len() < 4 * (capacity + 1) * small,
        "{}",
        ring.buf.len()
    );
    assert_eq!(held(&ring).len(), capacity);
}

#[test]
fn an_entry_larger_than_the_bound_is_dropped_and_counted() {
    let monitor = Monitor::new(4);
    let r = allow();
    record(&monitor, &event_of(10, 1), &r, 1);
    record(&monitor, &event_of(MIN_LIMIT + 1, 2), &r, 2);
    record(&monitor, &event_of(MIN_LIMIT / 2, 3), &r, 3);
    record(&monitor, &event_of(10, 4), &r, 4);
    assert_eq!(monitor.log_dropped(), 1);
    let log = monitor.decisions(10);
    let times: Vec<u64> = log.iter().map(|e| e.time).collect();
    assert_eq!(times, [1, 3, 4]);
    assert_eq!(log[1].event, event_of(MIN_LIMIT / 2, 3));
    // Counted all the same.
    assert!(
        monitor
            .render(&Runtime::new(0, 60))
            .contains("clpe_events_total{event=\"ExposeService\"} 4")
    );
}

#[test]
fn threads_log_apart_and_the_latest_are_merged_by_time() {
    let monitor = Monitor::new(100);
    let r = allow();
    std::thread::scope(|s| {
        for thread in 0..3u64 {
            let (monitor, r) = (&monitor, &r);
            s.spawn(move || {
                for i in 0..50u64 {
                    let event = event_of(10 + thread as usize, i);
                    record(monitor, &event, r, 1000 - i * 3 - thread);
                }
            });
        }
    });
    assert_eq!(monitor.log_dropped(), 0);
    // Times 1000 down to 851, each once: the 40 latest are 961..=1000, oldest first.
    let times: Vec<u64> = monitor.decisions(40).iter().map(|e| e.time).collect();
    assert_eq!(times, (961..=1000).collect::<Vec<_>>());
    for e in monitor.decisions(40) {
        let (thread, i) = ((1000 - e.time) % 3, (1000 - e.time) / 3);
        assert_eq!(e.event, event_of(10 + thread as usize, i));
    }
}

proptest! {
    /// The table counts as a map does, whatever the keys' origins and order.
    #[test]
    fn the_table_counts_as_a_map_does(keys in prop::collection::vec((0..4u8, 0..300u64, 0..3u64), 0..2000)) {
        let mut table: Table<u8, u64> = Table::default();
        let mut model: std::collections::HashMap<Key<u8>, u64> = Default::default();
        for (tag, a, b) in keys {
            // Origins as they come: any numbers (or 0).
            let key = (tag, a * 7, b * 7);
            match table.get_mut(&key) {
                Some(n) => *n += 1,
                None => *table.insert(key).unwrap() += 1,
            }
            *model.entry(key).or_default() += 1;
            prop_assert!(2 * table.len <= table.slots.len());
        }
        let got: std::collections::HashMap<Key<u8>, u64> = table.iter().map(|(k, v)| (*k, *v)).collect();
        prop_assert_eq!(table.len, model.len());
        prop_assert_eq!(&got, &model);
        let taken: std::collections::HashMap<Key<u8>, u64> = table.take().collect();
        prop_assert_eq!(taken, model);
        prop_assert_eq!(table.iter().count(), 0);
        prop_assert!(table.get_mut(&(0, 0, 0)).is_none());
    }
}

#[test]
fn a_decision_count_takes_32_bytes() {
    type Slot = (Option<Key<(EventType, Decision)>>, u64);
    assert!(std::mem::size_of::<Slot>() <= 32);
}

/// Totals by name, as rendering adds them up.
fn by_name(counts: &ByOrigin<(), u64>) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for (_, a, b, n) in counts.iter() {
        *out.entry((name(a), name(b))).or_default() += n;
    }
    out
}

#[test]
fn counts_by_origin_fold_into_counts_by_name_as_snapshots_come_and_go() {
    let mut counts: ByOrigin<(), u64> = ByOrigin::default();
    let agent = Text::named("acl");
    let mut want = BTreeMap::new();
    let mut largest = 0;
    // Snapshots of as many policies as a shard counts before folding: each brings every
    // name of a new origin.
    let n = FOLD_AT;
    for snapshot in 0..8 {
        let policies: Vec<Text> = (0..n).map(|p| Text::named(&format!("ns/p{p}"))).collect();
        for round in 0..3 {
            for (p, policy) in policies.iter().enumerate() {
                if (p + round + snapshot) % 3 == 0 {
                    continue;
                }
                counts.update((), Some(&agent), Some(policy), |c| *c += 1);
                *want
                    .entry(("acl".to_owned(), policy.to_string()))
                    .or_default() += 1;
            }
        }
        largest = largest.max(counts.live.len);
        // Every origin a live key holds is named, and no other.
        let origins: std::collections::BTreeSet<u64> = counts
            .live
            .iter()
            .flat_map(|((_, a, b), _)| [*a, *b])
            .collect();
        assert_eq!(origins, counts.names.iter().map(|(o, _)| *o).collect());
        assert!(counts.names.iter().all(|(a, n)| *a == origin(Some(n))));
        // A name for each key's policy, the agent's once per run of keys it decides.
        assert!(
            counts.names.len() <= counts.live.len + 1,
            "{}",
            counts.names.len()
        );
    }
    assert_eq!(by_name(&counts), want);
    // Bounded by the names in use, not by the origins seen.
    assert_eq!(counts.folded.len(), n);
    assert!(largest <= 2 * n, "{largest}");
}

#[test]
fn names_without_an_origin_are_counted_by_name_with_those_of_one() {
    // Names a WASM agent gives have no origin: counted by name, and added up with the
    // same names of an origin.
    let mut counts: ByOrigin<(), u64> = ByOrigin::default();
    let agent = Text::named("geo");
    let named: Vec<Text> = (0..1500).map(|i| Text::named(&format!("p{i}"))).collect();
    for i in 0..5000 {
        let policy = match (i / 1500) % 2 {
            0 => Text::new(&named[i % 1500]),
            _ => named[i % 1500].clone(),
        };
        counts.update((), Some(&agent), Some(&policy), |n| *n += 1);
    }
    let totals = by_name(&counts);
    assert_eq!(totals.len(), 1500);
    assert!(
        totals
            .iter()
            .all(|((a, p), n)| a == "geo"
                && *n == 3 + u64::from(p[1..].parse::<u64>().unwrap() < 500))
    );
    assert!(counts.names.iter().all(|(_, n)| n.origin().is_some()));
    let unnamed = |p: &Option<Text>| p.as_ref().is_some_and(|p| p.origin().is_none());
    assert!(counts.folded.keys().all(|(_, _, p)| unnamed(p)));
    assert_eq!(counts.live.len, 1500);
}

#[test]
fn copy_copies_every_length_exactly() {
    let src: Vec<u8> = (0..200u8).collect();
    for len in 0..=200 {
        let mut dst = vec![0xffu8; len];
        copy(&mut dst, &src[..len]);
        assert_eq!(dst, &src[..len], "length {len}");
    }
}

/// A response allowed by `policy` (decided by `agent`).
fn allowed_by(agent: &Text, policy: &Text) -> Response {
    let mut r = allow();
    r.decided_by = Some(agent.clone());
    r.matched_by = Some(policy.clone());
    r
}

/// The count of one line of the exposition, if it is there.
fn metric(text: &str, line: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_reader_takes_the_shards_counts_and_keeps_adding_them_up() {
    let monitor = Monitor::new(0);
    let runtime = Runtime::new(0, 60);
    let agent = Text::named("acl");
    // Policies of an origin, and one without (as a WASM agent names them).
    let policies = [Text::named("ns/a"), Text::named("ns/b"), Text::new("ns/c")];
    let event = event_of(10, 0);
    let line = |p: &str| {
        format!(
            "clpe_decisions_total{{event=\"ExposeService\",decision=\"allow\",agent=\"acl\",policy=\"{p}\"}}"
        )
    };
    let mut want = [0u64; 3];
    for round in 1..=3u64 {
        // Three threads count at once, some of them in shards another used before.
        std::thread::scope(|s| {
            for thread in 0..3usize {
                let (monitor, agent, policies, event) = (&monitor, &agent, &policies, &event);
                s.spawn(move || {
                    for i in 0..100 * round as usize {
                        let r = allowed_by(agent, &policies[(i + thread) % 3]);
                        let outcome = Outcome {
                            chain_nanos: Some(300),
                            ..Outcome::new(event, &r, Time(i as u64))
                        };
                        monitor.record(&outcome, Time(i as u64));
                    }
                });
            }
        });
        for w in &mut want {
            *w += 100 * round;
        }
        let text = monitor.render(&runtime);
        for (p, n) in ["ns/a", "ns/b", "ns/c"].iter().zip(want) {
            assert_eq!(metric(&text, &line(p)), Some(n), "round {round}, {p}");
        }
        let all: u64 = want.iter().sum();
        let events = "clpe_events_total{event=\"ExposeService\"}";
        assert_eq!(metric(&text, events), Some(all));
        assert_eq!(
            metric(&text, "clpe_decision_duration_seconds_count"),
            Some(all)
        );
        // What was counted is the readers' now: every shard is empty again.
        for shard in monitor.shards.iter() {
            let s = shard.lock();
            assert_eq!(s.events, [0; 4]);
            assert_eq!(s.decisions.live.len, 0);
            assert!(s.decisions.folded.is_empty() && s.decisions.names.is_empty());
            assert_eq!(s.chain.count, 0);
        }
    }
    // A reader with nothing new to add reports the same.
    let text = monitor.render(&runtime);
    assert_eq!(metric(&text, &line("ns/a")), Some(want[0]));
}
