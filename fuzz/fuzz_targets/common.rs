#![allow(dead_code)]
//! What the targets share: an engine, events of every kind, and the checks every
//! answer must pass.

use clpe_core::{DecideOptions, Engine, Event, Response, Time};

/// One event of each type and direction, decided on every engine a target builds.
pub const EVENTS: &[&str] = &[
    r#"{"type": "NewConnection", "direction": "ingress", "src_peer": "a", "src_service": "c", "dst_service": "s"}"#,
    r#"{"type": "NewConnection", "direction": "egress", "src_service": "c", "dst_service": "s", "src_attributes": {"env": "prod"}}"#,
    r#"{"type": "NewConnection", "direction": "egress", "src_service": "c", "dst_service": "s", "connection_id": "k1"}"#,
    r#"{"type": "ExposeService", "service": "s"}"#,
    r#"{"type": "ServiceListRequest", "src_peer": "a"}"#,
    r#"{"type": "ConnectionClosed", "connection_id": "k1", "bytes_sent": 10}"#,
];

/// Decides `event` explained and not, and checks what SPEC §2 promises of any response.
pub fn decide(engine: &Engine, event: &Event, now: u64) {
    for explain in [false, true] {
        let opts = DecideOptions {
            explain,
            dry_run: false,
        };
        if let Ok(r) = engine.decide(event, Time(now), opts) {
            check(&r);
        }
    }
}

fn check(r: &Response) {
    if let Some(peers) = &r.target_peers {
        assert!(
            peers.windows(2).all(|w| w[0] <= w[1]),
            "target_peers unsorted"
        );
    }
    if let Some(services) = &r.services {
        assert!(
            services.windows(2).all(|w| w[0] <= w[1]),
            "services unsorted"
        );
    }
    // Every response can be sent.
    serde_json::to_string(r).expect("a response serializes");
}

/// Every event of [`EVENTS`], in order.
pub fn decide_all(engine: &Engine, now: u64) {
    for (i, text) in EVENTS.iter().enumerate() {
        let event = Event::from_json(text).expect("the fixed events parse");
        decide(engine, &event, now + i as u64);
    }
}
