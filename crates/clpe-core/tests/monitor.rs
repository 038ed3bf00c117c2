//! The monitor's Prometheus text parses with a real parser and agrees with the decisions,
//! and rate-limit state stays bounded under unbounded keys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use clpe_core::document::parse_value;
use clpe_core::{DecideOptions, Engine, EngineConfig, Event, PeerName, Time};
use serde_json::json;

fn engine(extra: Vec<serde_json::Value>) -> Engine {
    engine_with(extra, 3600)
}

fn engine_with(extra: Vec<serde_json::Value>, lease: u64) -> Engine {
    let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker: clpe_core::dispatcher::Ticker =
        Arc::new(move || ticks.fetch_add(700, std::sync::atomic::Ordering::Relaxed));
    let engine = Engine::new(EngineConfig {
        local_peer: PeerName::from("home"),
        ticker: Some(ticker),
        default_lease_secs: lease,
        ..EngineConfig::default()
    });
    let mut docs = vec![
        json!({"kind": "Peer", "metadata": {"name": "p0"}}),
        json!({"kind": "Import", "metadata": {"name": "db"}, "spec": {"sources": [{"peer": "p0", "exportName": "db", "exportNamespace": "default"}]}}),
        json!({"kind": "AccessPolicy", "metadata": {"name": "allow-a"}, "spec": {"action": "allow", "from": [{"workloadSelector": {"matchLabels": {"client.clusterlink.net/service": "a"}}}], "to": [{"workloadSelector": {}}]}}),
    ];
    docs.extend(extra);
    let docs = docs
        .into_iter()
        .enumerate()
        .map(|(i, d)| parse_value(d, i + 1).unwrap())
        .collect();
    engine.apply(docs).unwrap();
    engine
}

fn conn(src: &str, id: &str) -> Event {
    serde_json::from_value(json!({"type": "NewConnection", "direction": "egress", "src_service": src, "dst_service": "db", "connection_id": id})).unwrap()
}

#[test]
fn prometheus_text_parses_and_counts_agree() {
    let engine = engine(vec![]);
    let opts = DecideOptions::default();
    for i in 0..5 {
        engine
            .decide(&conn("a", &format!("c{i}")), Time::ZERO, opts)
            .unwrap();
    }
    for i in 0..3 {
        engine
            .decide(&conn("b", &format!("d{i}")), Time::ZERO, opts)
            .unwrap();
    }
    let closed: Event = serde_json::from_value(json!({"type": "ConnectionClosed", "connection_id": "c0", "bytes_sent": 10, "bytes_received": 20})).unwrap();
    engine.decide(&closed, Time::ZERO, opts).unwrap();
    // Dry runs are not counted.
    engine
        .decide(
            &conn("a", "dry"),
            Time::ZERO,
            DecideOptions {
                explain: false,
                dry_run: true,
            },
        )
        .unwrap();

    let text = engine.metrics();
    let lines: Vec<_> = text.lines().map(|l| Ok(l.to_owned())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(
        value("clpe_events_total", &[("event", "NewConnection")]),
        8.0
    );
    assert_eq!(
        value("clpe_events_total", &[("event", "ConnectionClosed")]),
        1.0
    );
    assert_eq!(
        value(
            "clpe_decisions_total",
            &[
                ("decision", "allow"),
                ("event", "NewConnection"),
                ("policy", "default/allow-a")
            ]
        ),
        5.0
    );
    assert_eq!(
        value(
            "clpe_decisions_total",
            &[("decision", "deny"), ("agent", "acl")]
        ),
        3.0
    );
    assert_eq!(value("clpe_open_connections", &[]), 4.0);
    assert_eq!(
        value(
            "clpe_connection_sent_bytes_total",
            &[("service", "a"), ("peer", "p0")]
        ),
        10.0
    );
    assert_eq!(
        value(
            "clpe_connection_received_bytes_total",
            &[("service", "a"), ("peer", "p0")]
        ),
        20.0
    );
    let chain = scrape
        .samples
        .iter()
        .find(|s| s.metric == "clpe_decision_duration_seconds")
        .unwrap();
    match &chain.value {
        prometheus_parse::Value::Histogram(h) => {
            // Latency is sampled (a thread's first decision, then one in 256): 9 decisions
            // here, all on this thread, so exactly one is timed.
            let timed = h.last().unwrap().count;
            assert_eq!(timed, 1.0, "{timed} timed decisions")
        }
        other => panic!("not a histogram: {other:?}"),
    }
    assert_eq!(engine.monitor().decisions(100).len(), 9);
}

#[test]
fn agents_are_timed_for_events_they_have_work_for_and_explained_decisions_are_not_timed() {
    // A thread of its own: its first decision that is not explained is the one sampled.
    std::thread::spawn(|| {
        let engine = engine(vec![]);
        let explain = DecideOptions {
            explain: true,
            dry_run: false,
        };
        let r = engine
            .decide(&conn("a", "e1"), Time::ZERO, explain)
            .unwrap();
        assert_eq!(
            r.trace.map(|t| t.len()),
            Some(5),
            "explained: every agent runs"
        );
        engine
            .decide(&conn("a", "e2"), Time::ZERO, DecideOptions::default())
            .unwrap();
        let text = engine.metrics();
        let counts: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("clpe_agent_duration_seconds_count"))
            .collect();
        // Egress, no limit policies: the limiters and the monitor have no work.
        assert_eq!(
            counts,
            [
                "clpe_agent_duration_seconds_count{agent=\"acl\"} 1",
                "clpe_agent_duration_seconds_count{agent=\"lb\"} 1",
            ]
        );
        assert!(
            text.contains("clpe_decision_duration_seconds_count 1\n"),
            "{text}"
        );
    })
    .join()
    .unwrap();
}

#[test]
fn a_million_rate_limit_keys_stay_bounded() {
    // Connections are released after a second of simulated time: only rate state grows.
    let engine = engine_with(
        vec![json!({
            "kind": "RateLimitPolicy", "metadata": {"name": "per-client"},
            "spec": {"from": [{"workloadSelector": {}}], "to": [{"workloadSelector": {}}], "connectionsPerSecond": 10, "burst": 5,
                     "key": ["client.clusterlink.net/labels.id"]}
        })],
        1,
    );
    let rates = &engine.runtime().rates;
    let mut peak = 0;
    let mut now = Time::ZERO;
    for i in 0..1_000_000u64 {
        // 10,000 new keys per simulated second; a key is idle 100 ms after its one use.
        now = Time(i * 100_000);
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert("client.clusterlink.net/labels.id".to_owned(), i.to_string());
        let ev = Event::NewConnection(clpe_core::event::NewConnection {
            direction: clpe_core::event::Direction::Egress,
            dst_service: "db".into(),
            dst_namespace: None,
            src_service: Some("a".into()),
            src_peer: None,
            src_attributes: attrs,
            connection_id: None,
        });
        engine
            .decide(
                &ev,
                now,
                DecideOptions {
                    explain: false,
                    dry_run: false,
                },
            )
            .unwrap();
        engine.runtime().connections.expire(now);
        if i % 10_000 == 0 {
            peak = peak.max(rates.len());
        }
    }
    assert!(peak < 50_000, "rate buckets grew to {peak}");
    rates.sweep(now.plus_nanos(1_000_000_000));
    assert_eq!(rates.len(), 0, "idle keys are dropped");
}

fn response(v: serde_json::Value) -> clpe_core::Response {
    serde_json::from_value(v).unwrap()
}

/// What the log keeps of a response: everything but the fallbacks, annotations and trace.
fn logged(r: &clpe_core::Response) -> clpe_core::Response {
    clpe_core::Response {
        fallback_peers: None,
        annotations: Default::default(),
        trace: None,
        ..r.clone()
    }
}

fn record(monitor: &clpe_core::monitor::Monitor, event: &Event, r: &clpe_core::Response, t: u64) {
    monitor.record(&clpe_core::Outcome::new(event, r, Time(t)), Time(t));
}

#[test]
fn the_decision_log_gives_back_every_field_it_keeps() {
    let attrs: serde_json::Map<String, serde_json::Value> = (0..64)
        .map(|i| (format!("k{i}"), json!("é".repeat(i))))
        .collect();
    let events: Vec<Event> = [
        json!({"type": "NewConnection", "direction": "egress", "dst_service": "db", "dst_namespace": "ns",
               "src_service": "a", "src_peer": "p", "src_attributes": attrs, "connection_id": "c1"}),
        json!({"type": "NewConnection", "direction": "ingress", "dst_service": "db", "src_peer": "p"}),
        json!({"type": "ExposeService", "service": "s", "namespace": "ns"}),
        json!({"type": "ExposeService", "service": "s"}),
        json!({"type": "ServiceListRequest", "src_peer": "p"}),
        json!({"type": "ConnectionClosed", "connection_id": "c1", "bytes_sent": 0, "bytes_received": u64::MAX}),
        json!({"type": "ConnectionClosed", "connection_id": "c1"}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect();
    let responses = [
        response(
            json!({"decision": "allow", "target_peer": "p0", "fallback_peers": ["p1"],
            "target_peers": ["p0", "p1"], "services": ["ns/a", ""], "rate_limit": {"bits_per_second": 1u64 << 40},
            "connection_id": "c1", "matched_by": "ns/policy", "decided_by": "acl", "reason": "because",
            "would_deny": [{"agent": "acl", "policy": "/dry"}, {"agent": "rate-limiter", "policy": "/r"}],
            "annotations": {"x": "y"}}),
        ),
        response(json!({"decision": "deny", "reason": ""})),
        response(json!({"decision": "deny", "target_peers": [], "services": [], "reason": "no"})),
    ];
    let monitor = clpe_core::monitor::Monitor::new(1000);
    let mut want = Vec::new();
    let mut t = 0;
    for event in &events {
        for r in &responses {
            t += 1;
            record(&monitor, event, r, t);
            want.push((event.clone(), logged(r)));
        }
    }
    let log = monitor.decisions(1000);
    assert_eq!(log.len(), want.len());
    for (entry, (event, r)) in log.iter().zip(&want) {
        assert_eq!(&entry.event, event);
        assert_eq!(&entry.response, r);
    }
    assert_eq!(monitor.log_dropped(), 0);
}

#[test]
fn the_decision_log_keeps_its_capacity_and_orders_by_time() {
    let monitor = clpe_core::monitor::Monitor::new(4);
    let r = response(json!({"decision": "allow", "reason": "ok"}));
    // Out of order on purpose: the log answers by time, then by the order of decisions.
    let times = [50, 10, 70, 30, 90, 20, 60, 80, 40, 70];
    for (i, t) in times.iter().enumerate() {
        record(&monitor, &conn("a", &format!("c{i}")), &r, *t);
    }
    let log = monitor.decisions(100);
    // The last four decided are kept (capacity 4): 40, 60, 70 (c9), 80.
    let got: Vec<(u64, String)> = log
        .iter()
        .map(|e| match &e.event {
            Event::NewConnection(c) => (
                e.time,
                c.connection_id.as_ref().unwrap().as_str().to_owned(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [(40, "c8"), (60, "c6"), (70, "c9"), (80, "c7")].map(|(t, c)| (t, c.to_owned()))
    );
    assert_eq!(monitor.decisions(2).len(), 2);
    assert_eq!(monitor.decisions(2)[1].time, 80);
    assert!(monitor.decisions(0).is_empty());
    assert!(clpe_core::monitor::Monitor::new(0).decisions(10).is_empty());
}

#[test]
fn threads_log_apart_and_the_log_merges_them_by_time() {
    let monitor = clpe_core::monitor::Monitor::new(100);
    let r = response(json!({"decision": "allow", "reason": "ok"}));
    std::thread::scope(|s| {
        for thread in 0..2u64 {
            let (monitor, r) = (&monitor, &r);
            s.spawn(move || {
                for i in 0..10u64 {
                    let t = i * 2 + thread;
                    record(monitor, &conn("a", &format!("t{thread}-{i}")), r, t);
                }
            });
        }
    });
    let log = monitor.decisions(100);
    assert_eq!(log.len() as u64, 20 - monitor.log_dropped());
    assert!(
        log.windows(2)
            .all(|w| (w[0].time, w[0].seq) <= (w[1].time, w[1].seq))
    );
    let metrics = engine(vec![]).metrics();
    assert!(metrics.contains("clpe_decision_log_entries 0"));
}
