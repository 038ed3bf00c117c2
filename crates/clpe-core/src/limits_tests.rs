#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;

#[test]
fn a_reservation_is_given_back_when_dropped() {
    let counters = Counters::default();
    let p: Arc<str> = "/p".into();
    let a = counters.try_reserve(&p, &["x"], 2, Time(10)).unwrap();
    let b = counters.try_reserve(&p, &["x"], 2, Time(10)).unwrap();
    assert!(counters.try_reserve(&p, &["x"], 2, Time(10)).is_none());
    assert!(
        counters.try_reserve(&p, &["y"], 2, Time(10)).is_some(),
        "another key has its own counter"
    );
    drop(a);
    assert_eq!(counters.current(&p, &["x"]), 1);
    drop(b);
    assert_eq!(counters.current(&p, &["x"]), 0);
}

#[test]
fn connections_release_their_slots_on_close_and_on_expiry() {
    let counters = Counters::default();
    let conns = Connections::default();
    let p: Arc<str> = "/p".into();
    let slot = counters.try_reserve(&p, &[], 5, Time(100)).unwrap();
    conns.admit("c1".into(), None, None, vec![slot], Time(1000));
    let slot = counters.try_reserve(&p, &[], 5, Time(50)).unwrap();
    conns.admit("c2".into(), None, None, vec![slot], Time(1000));
    assert_eq!(counters.current(&p, &[]), 2);
    assert!(conns.close("c1").is_some());
    assert!(conns.close("c1").is_none(), "closing twice is harmless");
    assert!(conns.close("nope").is_none());
    assert_eq!(counters.current(&p, &[]), 1);
    conns.expire(Time(49));
    assert_eq!(counters.current(&p, &[]), 1);
    // One no limit holds: the default lease.
    conns.admit("c3".into(), None, None, vec![], Time(1000));
    conns.expire(Time(50));
    assert_eq!(counters.current(&p, &[]), 0, "the slot's lease ended at 50");
    assert!(
        !conns.contains("c2"),
        "a connection a limit holds ends with that limit's lease, not the default one"
    );
    assert!(conns.contains("c3"));
    conns.expire(Time(999));
    assert!(conns.contains("c3"));
    conns.expire(Time(1000));
    assert!(!conns.contains("c3"));
    assert_eq!(conns.open(), 0);
}

/// A dry-run policy's slot counts until its lease, but the connection keeps the lease it
/// would have without the policy (the default one here): observing changes nothing.
#[test]
fn a_dry_run_slot_does_not_shorten_the_connection() {
    let counters = Counters::default();
    let conns = Connections::default();
    let p: Arc<str> = "/dry".into();
    let slot = SlotGuard::take(counters.counter(&p, &[]), Time(50));
    conns.admit("c".into(), None, None, vec![slot], Time(1000));
    conns.expire(Time(50));
    assert_eq!(counters.current(&p, &[]), 0, "released at its own lease");
    assert!(conns.contains("c"), "tracked for the default lease");
    conns.expire(Time(1000));
    assert!(!conns.contains("c"));
}

#[test]
fn a_reused_id_replaces_the_record_and_gives_its_slots_back() {
    let counters = Counters::default();
    let conns = Connections::default();
    let p: Arc<str> = "/p".into();
    let slot = counters.try_reserve(&p, &[], 5, Time(100)).unwrap();
    conns.admit("c".into(), None, None, vec![slot], Time(100));
    let slot = counters.try_reserve(&p, &[], 5, Time(200)).unwrap();
    conns.admit("c".into(), None, None, vec![slot], Time(200));
    assert_eq!(
        counters.current(&p, &[]),
        1,
        "the first record's slot came back"
    );
    assert_eq!(conns.open(), 1);
    // The replaced record's expiry is stale: it must not end the new one early.
    conns.expire(Time(150));
    assert!(conns.contains("c"));
    assert_eq!(counters.current(&p, &[]), 1);
    conns.expire(Time(200));
    assert!(!conns.contains("c"));
    assert_eq!(counters.current(&p, &[]), 0);
}

#[test]
fn a_peer_counts_the_connections_open_to_it() {
    let conns = Connections::default();
    let p0 = conns.peer(&PeerName::from("p0"));
    assert_eq!(conns.peer(&PeerName::from("p0")), p0, "one count per name");
    let p1 = conns.peer(&PeerName::from("p1"));
    conns.admit("x".into(), Some(p1), None, vec![], Time(5));
    let to_peer = || Some(p0);
    conns.admit(
        "a".into(),
        to_peer(),
        Some(ServiceName::from("svc")),
        vec![],
        Time(10),
    );
    conns.admit("b".into(), to_peer(), None, vec![], Time(20));
    assert_eq!((conns.open_to(p0), conns.open_to(p1)), (2, 1));
    // Another thread may close on another stripe: the sum is what counts.
    let closed = std::thread::scope(|s| s.spawn(|| conns.close("a")).join().unwrap()).unwrap();
    assert_eq!(conns.open_to(p0), 1, "given back on close");
    assert_eq!(closed.target.as_ref().map(|p| p.as_str()), Some("p0"));
    assert_eq!(closed.src_service.as_ref().map(|s| s.as_str()), Some("svc"));
    // A reused id replaces the record: the count is not taken twice.
    conns.admit("b".into(), to_peer(), None, vec![], Time(20));
    assert_eq!(conns.open_to(p0), 1);
    conns.expire(Time(20));
    assert_eq!(
        (conns.open_to(p0), conns.open_to(p1)),
        (0, 0),
        "given back on expiry"
    );
    assert_eq!(conns.open(), 0);
}

#[test]
fn closed_connections_do_not_pile_up_and_leases_stay_exact() {
    let counters = Counters::default();
    let conns = Connections::default();
    let p: Arc<str> = "/p".into();
    // Two expiries each (the slot's and the connection's, at the slot's lease): 200,000
    // entries if none went. The engine's default lease (50) is for connections no limit
    // holds: not these.
    for i in 0..100_000u64 {
        let slot = counters
            .try_reserve(&p, &[], u64::MAX, Time(100 + i % 7))
            .unwrap();
        let id = ConnectionId::new(format!("c{i}"));
        conns.admit(id.clone(), None, None, vec![slot], Time(50));
        if i % 5000 != 0 {
            assert!(conns.close(id.as_str()).is_some());
        }
    }
    let heap: usize = conns.shards.iter().map(|s| s.lock().expiries.len()).sum();
    assert!(
        heap <= SHARDS * 1025,
        "{heap} expiries kept for 20 open connections"
    );
    assert_eq!(conns.open(), 20);
    let places: usize = conns.shards.iter().map(|s| s.lock().places()).sum();
    assert!(
        places <= SHARDS * CHUNK,
        "{places} record places for 20 open connections: closed ones are reused"
    );
    assert_eq!(counters.current(&p, &[]), 20);
    conns.expire(Time(99));
    assert_eq!(counters.current(&p, &[]), 20);
    assert_eq!(conns.open(), 20);
    conns.expire(Time(105));
    let (held, open) = (counters.current(&p, &[]), conns.open());
    assert!(held > 0 && held < 20, "each at its own lease: {held}");
    assert_eq!(open, held, "a connection ends with its slot");
    conns.expire(Time(106));
    assert_eq!(counters.current(&p, &[]), 0);
    assert_eq!(conns.open(), 0);
}

#[test]
fn threads_admit_and_close_without_losing_count() {
    let counters = Counters::default();
    let conns = Connections::default();
    let p: Arc<str> = "/p".into();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (counters, conns, p) = (&counters, &conns, &p);
            s.spawn(move || {
                for i in 0..2_000 {
                    let id = ConnectionId::new(format!("t{t}-{i}"));
                    let slot = counters.try_reserve(p, &[], u64::MAX, Time(1_000)).unwrap();
                    conns.admit(id.clone(), None, None, vec![slot], Time(1_000));
                    if i % 2 == 0 {
                        conns.close(id.as_str());
                    }
                }
            });
        }
    });
    assert_eq!(conns.open(), 4_000);
    assert_eq!(counters.current(&p, &[]), 4_000);
    conns.expire(Time(1_000));
    assert_eq!(conns.open(), 0);
    assert_eq!(counters.current(&p, &[]), 0);
}

#[test]
fn leases_end_exactly_in_any_order_they_were_given() {
    let conns = Connections::default();
    // Late, early, in between, repeated: the queue and the heap both hold some.
    let ends = [300u64, 100, 200, 50, 400, 400, 150, 350, 50, 500];
    for (i, end) in ends.iter().enumerate() {
        conns.admit(
            ConnectionId::new(format!("c{i}")),
            None,
            None,
            vec![],
            Time(*end),
        );
    }
    let mut sorted = ends.to_vec();
    sorted.sort_unstable();
    for t in 0..=500u64 {
        conns.expire(Time(t));
        let left = sorted.iter().filter(|e| **e > t).count() as i64;
        assert_eq!(conns.open(), left, "at {t}");
    }
    for (i, end) in ends.iter().enumerate() {
        assert!(!conns.contains(&format!("c{i}")), "c{i} ended at {end}");
    }
}

#[test]
fn lanes_keep_each_threads_leases_in_order_and_pop_the_earliest_first() {
    // Two threads' clocks interleaved: each lane stays in order, the heap stays empty.
    let mut e = Expiries::default();
    for (lane, t) in [(1, 10), (2, 5), (1, 11), (2, 6), (3, 7), (1, 12)] {
        e.push(lane, (t, t as u32));
    }
    assert!(e.heap.is_empty());
    assert_eq!((e.len(), e.lane_len(1), e.next()), (6, 3, 5));
    // One that goes back within its lane goes to the heap, and still comes out in order.
    e.push(1, (4, 4));
    assert_eq!(e.heap.len(), 1);
    assert_eq!(e.pop_due(3), None, "nothing due at 3");
    let order: Vec<u64> = std::iter::from_fn(|| e.pop_due(11).map(|d| d.0)).collect();
    assert_eq!(order, [4, 5, 6, 7, 10, 11]);
    assert_eq!((e.len(), e.next()), (1, 12));
}

#[test]
fn threads_admitting_with_interleaved_clocks_push_no_heap_and_end_exactly() {
    // Thread A's leases end at 1000 + i, B's at 500 + i, admitted in turns, so each
    // shard gets them out of order: each thread's lane keeps its own in order.
    let conns = Connections::default();
    let turns = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        for (name, base) in [("a", 1_000u64), ("b", 500)] {
            let (conns, turns) = (&conns, &turns);
            s.spawn(move || {
                for i in 0..200u64 {
                    if name == "b" {
                        turns.wait();
                    }
                    let id = ConnectionId::new(format!("{name}{i}"));
                    conns.admit(id, None, None, vec![], Time(base + i));
                    if name == "a" {
                        turns.wait();
                    }
                }
            });
        }
    });
    let heaped: usize = conns
        .shards
        .iter()
        .map(|s| s.lock().expiries.heap.len())
        .sum();
    assert_eq!(heaped, 0);
    for t in [499, 550, 699, 700, 1_000, 1_100, 1_199] {
        conns.expire(Time(t));
        let left = |base: u64| (0..200).filter(|i| base + i > t).count() as i64;
        assert_eq!(conns.open(), left(1_000) + left(500), "at {t}");
        assert_eq!(conns.contains("b50"), t < 550, "b50 at {t}");
    }
}

#[test]
fn the_table_read_without_the_lock_is_the_index_current_one() {
    // Prefetching reads the shard's last published table: after every admission (and
    // so every growth), that is the table the index uses, and the entry's home in it is
    // where the index starts looking.
    let conns = Connections::default();
    for i in 0..5_000u64 {
        let id = format!("conn-{i}");
        conns.admit(id.as_str().into(), None, None, vec![], Time(100));
        let hash = id_hash(&id);
        let slot = conns.shard(hash).unwrap();
        let s = slot.lock();
        let last = slot.tables.get(slot.tables.count() - 1).unwrap();
        assert!(Arc::ptr_eq(last, &s.index.entries), "after {id}");
        let (pos, _) = s.find(hash, &id).unwrap();
        let home = home_in(last.len(), hash as u32);
        assert_eq!(home, s.index.home(hash as u32));
        assert!(
            (pos.wrapping_sub(home) & s.index.mask()) < 64,
            "{id} probed far"
        );
    }
    // Tables only double: all kept cost less than twice the current ones.
    let kept: usize = (conns.shards.iter())
        .map(|slot| slot.tables.iter().map(|(_, t)| t.len()).sum::<usize>())
        .sum();
    let current: usize = conns
        .shards
        .iter()
        .map(|s| s.lock().index.entries.len())
        .sum();
    assert!(
        kept < 2 * current,
        "{kept} entries kept for {current} in use"
    );
}

#[test]
fn a_record_stays_small() {
    // Every admitted connection writes one: the table holds as many as are open.
    assert_eq!(std::mem::size_of::<Place>(), 80);
    assert_eq!(std::mem::size_of::<Due>(), 16);
}

#[test]
fn a_shard_header_shares_its_lock_line() {
    // What admitting and closing touch first (index and slab headers, free list head)
    // is in the lock's line: the data starts 8 bytes in, and those fields fit in the
    // line's other 56.
    let shard = Padded(ShardLock::<ConnShard>::default());
    let base = &shard as *const _ as usize;
    let guard = shard.lock();
    let s = &*guard;
    assert_eq!(s as *const ConnShard as usize - base, 8);
    let end = |field: *const u8, size: usize| field as usize - base + size;
    assert!(end((&raw const s.held).cast(), size_of_val(&s.held)) <= 64);
    assert!(end((&raw const s.free).cast(), size_of_val(&s.free)) <= 64);
    assert!(end((&raw const s.slab).cast(), size_of_val(&s.slab)) <= 64);
    assert!(end((&raw const s.index).cast(), size_of_val(&s.index)) <= 64);
}

#[test]
fn the_index_finds_what_it_holds_through_inserts_and_removals() {
    // Against a model, with hashes crowded into few values so runs are long and
    // removals shift entries back across the table's end.
    let mut index = Index::default();
    let mut model: std::collections::HashMap<u32, u32> = Default::default();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..20_000u32 {
        let at = (next() % 3000) as u32;
        let hash = (next() % 64) as u32 * 0x0101_0101;
        match model.get(&at) {
            Some(h) => {
                let h = *h;
                let (i, found) = index.find(h, |a| a == at).expect("held");
                assert_eq!(found, at);
                index.remove_at(i);
                model.remove(&at);
            }
            None => {
                index.insert(hash, at);
                model.insert(at, hash);
            }
        }
        if round % 1000 == 0 {
            assert_eq!(index.len as usize, model.len());
            for (at, h) in &model {
                assert_eq!(index.find(*h, |a| a == *at).map(|f| f.1), Some(*at));
            }
            assert!(2 * index.len as usize <= index.entries.len());
        }
    }
    for at in (0..3000u32).filter(|a| !model.contains_key(a)) {
        for h in 0..64u32 {
            assert!(
                index.find(h * 0x0101_0101, |a| a == at).is_none(),
                "{at} removed"
            );
        }
    }
}

#[test]
fn engine_made_ids_stay_inline_for_2_to_the_44_serials_and_read_back_at_any_size() {
    let conns = Connections::new(0xbeef);
    // A place below 2^20 (a million connections open): serials below 2^44 fit in the 23
    // bytes an id keeps inline, so making one allocates nothing.
    for (serial, place) in [
        (0, 0),
        ((1 << 44) - 1, (1 << 20) - 1),
        ((1 << 40) - 1, (1 << 24) - 1),
    ] {
        let id = conns.id_text(serial, place);
        assert!(id.is_inline() && id.as_str().len() <= 23, "{id}");
        assert!(id.as_str().starts_with("cbeef-"), "{id}");
        let (shard, at) = (
            (place % SHARDS as u64) as usize,
            (place / SHARDS as u64) as u32,
        );
        assert_eq!(conns.locate(id.as_str()), Some((serial, shard, at)), "{id}");
    }
    // Beyond, ids are shared rather than inline, and still read back.
    let place = u64::from(u32::MAX) * SHARDS as u64 + (SHARDS as u64 - 1);
    let id = conns.id_text(u64::MAX, place);
    assert!(!id.is_inline(), "{id}");
    let at = u32::MAX;
    assert_eq!(
        conns.locate(id.as_str()),
        Some((u64::MAX, SHARDS - 1, at)),
        "{id}"
    );
}

#[test]
fn engine_made_ids_say_where_their_record_is() {
    let counters = Counters::default();
    let conns = Connections::new(0xbeef);
    let p: Arc<str> = "/p".into();
    let slot = counters.try_reserve(&p, &[], 5, Time(100)).unwrap();
    let a = conns.admit_new(|| 0, None, None, vec![slot], Time(1000));
    let b = conns.admit_new(|| 0x1f, None, None, vec![], Time(2000));
    assert!(a.as_str().starts_with("cbeef-0-"), "{a}");
    assert!(b.as_str().starts_with("cbeef-1f-"), "{b}");
    assert_eq!(conns.open(), 2);
    assert!(conns.contains(a.as_str()) && conns.contains(b.as_str()));
    // Only the exact text finds a record: another spelling of the same numbers, another
    // tag, a serial that is not the one at that place, trailing bytes.
    let place = a.as_str().rsplit('-').next().unwrap().to_owned();
    for other in [
        format!("cbeef-00-{place}"),
        format!("cbeef-0-0{place}"),
        format!("cBEEF-0-{place}"),
        format!("cbeee-0-{place}"),
        format!("cbeef-2-{place}"),
        format!("{a}-"),
        format!("{a}0"),
        "cbeef--".to_owned(),
        "cbeef-0-ffffffffffffffffff".to_owned(),
    ] {
        assert!(!conns.contains(&other), "{other}");
        assert!(conns.close(&other).is_none(), "{other}");
    }
    assert_eq!(counters.current(&p, &[]), 1);
    assert!(conns.close(a.as_str()).is_some());
    assert!(
        conns.close(a.as_str()).is_none(),
        "closing twice is harmless"
    );
    assert_eq!(counters.current(&p, &[]), 0, "the slot came back on close");
    // The freed place is reused (serials pick shards in turn: this one picks a's): the
    // new record's id differs by its serial, so the old id still closes nothing.
    let c = conns.admit_new(|| SHARDS as u64, None, None, vec![], Time(1000));
    assert!(
        c.as_str().ends_with(&format!("-{place}")),
        "{c} reuses {place}"
    );
    assert!(conns.close(a.as_str()).is_none());
    assert!(conns.contains(c.as_str()));
    // An event that names its connection with an id the engine made replaces that record.
    conns.admit(c.clone(), None, None, vec![], Time(3000));
    assert_eq!(conns.open(), 2, "one record for {c}");
    assert!(conns.close(c.as_str()).is_some());
    assert!(!conns.contains(c.as_str()));
    // Leases end for engine-named records too.
    conns.expire(Time(2000));
    assert!(!conns.contains(b.as_str()));
    assert_eq!(conns.open(), 0);
}

#[test]
fn engine_made_ids_close_from_another_thread() {
    let conns = Connections::new(1);
    let ids: Vec<ConnectionId> = (0..500)
        .map(|n| conns.admit_new(|| n, None, None, vec![], Time(10)))
        .collect();
    let closed = std::thread::scope(|s| {
        s.spawn(|| {
            ids.iter()
                .filter(|id| conns.close(id.as_str()).is_some())
                .count()
        })
        .join()
        .unwrap()
    });
    assert_eq!(closed, 500);
    assert_eq!(conns.open(), 0);
}

/// A thread's records go to its own shard (the place's low digits): threads admitting at
/// once do not share a lock or a cache line.
#[test]
fn a_thread_admits_into_its_own_shard() {
    let conns = Connections::new(1);
    let shard_of = |id: &ConnectionId| conns.locate(id.as_str()).map(|(_, shard, _)| shard);
    let mine: Vec<Option<usize>> = (0..100)
        .map(|n| shard_of(&conns.admit_new(|| n, None, None, vec![], Time(10))))
        .collect();
    assert!(
        mine.iter().all(|s| *s == Some(thread_number() % SHARDS)),
        "{mine:?}"
    );
    let theirs = std::thread::scope(|s| {
        s.spawn(|| {
            let id = conns.admit_new(|| 1000, None, None, vec![], Time(10));
            (shard_of(&id), thread_number() % SHARDS)
        })
        .join()
        .unwrap()
    });
    assert_eq!(theirs.0, Some(theirs.1));
    assert_eq!(conns.open(), 101);
}

#[test]
fn an_id_made_is_never_one_an_event_holds() {
    let conns = Connections::new(0xbeef);
    // The id serial 0 would get in the first place of this thread's shard, named by an
    // event first.
    let place = thread_number() % SHARDS;
    let guessed = ConnectionId::from(format!("cbeef-0-{place:x}").as_str());
    conns.admit(guessed.clone(), None, None, vec![], Time(1000));
    let next = std::cell::Cell::new(0u64);
    let serial = || {
        let n = next.get();
        next.set(n + 1);
        n
    };
    let made = conns.admit_new(serial, None, None, vec![], Time(1000));
    assert_ne!(made, guessed);
    assert!(
        made.as_str().ends_with(&format!("-{place:x}")),
        "{made}: still the first place of this thread's shard"
    );
    assert_eq!(conns.open(), 2, "two connections, two ids");
    assert!(conns.close(made.as_str()).is_some());
    assert!(
        conns.contains(guessed.as_str()),
        "the event's connection is still open"
    );
    assert!(conns.close(guessed.as_str()).is_some());
    assert_eq!(conns.open(), 0);
}

proptest::proptest! {
    /// The digits `hex` writes are `format!`'s, and `canonical_hex` reads them back.
    #[test]
    fn hex_writes_what_format_does(n in proptest::prelude::any::<u64>(), shift in 0..64u32) {
        for n in [n, n >> shift, u64::from(shift)] {
            let (count, all) = hex(n);
            let digits = &all[..count];
            proptest::prop_assert!(all[count..].iter().all(|b| *b == 0));
            proptest::prop_assert_eq!(std::str::from_utf8(digits).unwrap(), format!("{n:x}"));
            proptest::prop_assert_eq!(canonical_hex(digits), Some(n));
        }
    }
}

#[test]
fn hex_edges() {
    for (n, text) in [
        (0, "0"),
        (9, "9"),
        (10, "a"),
        (15, "f"),
        (16, "10"),
        (u64::MAX, "ffffffffffffffff"),
    ] {
        let (count, all) = hex(n);
        assert_eq!(std::str::from_utf8(&all[..count]).unwrap(), text);
    }
}

/// An event-named record admitted on one thread is found from any other: closed there,
/// replaced there.
#[test]
fn event_named_connections_are_found_from_any_thread() {
    let counters = Counters::default();
    let conns = Connections::default();
    let p: Arc<str> = "/p".into();
    let admit = |id: &str| {
        let slot = counters.try_reserve(&p, &[], u64::MAX, Time(100)).unwrap();
        conns.admit(ConnectionId::new(id), None, None, vec![slot], Time(100));
    };
    std::thread::scope(|s| {
        s.spawn(|| (0..300).for_each(|i| admit(&format!("c{i}"))))
            .join()
    })
    .unwrap();
    assert_eq!(conns.open(), 300);
    // A record of another thread's shard, replaced from this one: one record, its count
    // taken once.
    admit("c7");
    assert_eq!(conns.open(), 300);
    assert_eq!(counters.current(&p, &[]), 300);
    assert!(conns.contains("c7") && conns.contains("c8") && !conns.contains("c300"));
    let closed = (0..300)
        .filter(|i| i % 3 == 0)
        .filter(|i| conns.close(&format!("c{i}")).is_some())
        .count();
    assert_eq!(closed, 100);
    assert!(conns.close("c0").is_none(), "closed once");
    assert_eq!(conns.open(), 200);
    assert_eq!(counters.current(&p, &[]), 200);
    conns.expire(Time(100));
    assert_eq!(conns.open(), 0);
    assert_eq!(counters.current(&p, &[]), 0);
    assert!(!conns.contains("c8") && conns.close("c8").is_none());
}

/// Threads admitting, closing, reusing ids and sweeping at once: no record or slot
/// is lost or kept twice.
#[test]
fn threads_share_ids_admit_close_and_sweep_at_once() {
    let counters = Counters::default();
    let conns = Connections::default();
    let p: Arc<str> = "/p".into();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (counters, conns, p) = (&counters, &conns, &p);
            s.spawn(move || {
                for i in 0..3_000u64 {
                    // 50 ids shared by all threads; leases ending at once, some already.
                    let id = ConnectionId::new(format!("c{}", (i * 7 + t) % 50));
                    let now = Time(i);
                    let lease = Time(i + 1 + (i + t) % 3);
                    let slot = counters.try_reserve(p, &[], u64::MAX, lease).unwrap();
                    conns.admit(id.clone(), None, None, vec![slot], lease);
                    match i % 4 {
                        0 => drop(conns.close(id.as_str())),
                        1 => conns.expire(now),
                        _ => {}
                    }
                }
            });
        }
    });
    let open = conns.open();
    assert!(open <= 50, "{open} records for 50 ids");
    assert_eq!(counters.current(&p, &[]), open);
    conns.expire(Time(10_000));
    assert_eq!(conns.open(), 0);
    assert_eq!(counters.current(&p, &[]), 0);
}
