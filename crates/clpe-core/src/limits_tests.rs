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
    conns.expire(Time(50));
    assert_eq!(counters.current(&p, &[]), 0, "the slot's lease ended at 50");
    assert!(
        conns.contains("c2"),
        "the connection itself is tracked until 1000"
    );
    conns.expire(Time(1000));
    assert!(!conns.contains("c2"));
    assert_eq!(conns.open(), 0);
}
