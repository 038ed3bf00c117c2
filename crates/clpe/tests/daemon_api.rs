//! The operator and decision APIs of the real daemon over HTTP (SPEC §4): state that
//! survives restarts, the token, and every error status with its body.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Daemon, assert_error_body, send};
use serde_json::{Value, json};

const INVENTORY: &str = r#"
kind: Peer
metadata: {name: P0}
---
kind: Export
metadata: {name: echo, namespace: ns1}
---
kind: AccessPolicy
metadata: {name: allow-p0, namespace: ns1}
spec:
  action: allow
  from: [{workloadSelector: {matchLabels: {peer.clusterlink.net/name: P0}}}]
  to: [{workloadSelector: {}}]
"#;

fn ingress() -> Value {
    json!({"type": "NewConnection", "direction": "ingress", "src_peer": "P0", "dst_service": "echo", "dst_namespace": "ns1"})
}

fn revision(d: &Daemon) -> u64 {
    d.get("/readyz").1["revision"].as_u64().unwrap()
}

#[test]
fn apply_decide_delete_and_state_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    assert_eq!(d.decide(&ingress()).1["decision"], "deny");

    let (status, body) = d.apply(INVENTORY);
    assert_eq!(status, 200, "{body}");
    let results: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["created", "created", "created"]);
    let (status, body) = d.decide(&ingress());
    assert_eq!(status, 200);
    assert_eq!(body["decision"], "allow", "{body}");
    assert_eq!(body["matched_by"], "ns1/allow-p0");

    // A graceful restart keeps everything.
    assert!(d.terminate().success());
    let mut d = Daemon::start(dir.path());
    assert_eq!(d.decide(&ingress()).1["matched_by"], "ns1/allow-p0");
    assert_eq!(d.apply(INVENTORY).1["results"][0]["result"], "unchanged");

    // A delete, then a crash: the delete was acknowledged, so it holds.
    let (status, body) = d.delete("/v1/accesspolicy/ns1/allow-p0");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"][0],
        json!({"document": "AccessPolicy ns1/allow-p0", "result": "deleted"})
    );
    d.kill();
    let d = Daemon::start(dir.path());
    let (status, body) = d.decide(&ingress());
    assert_eq!(status, 200);
    assert_eq!(body["decision"], "deny");
    assert_eq!(body["matched_by"], "<default deny>");
    assert_eq!(d.get("/v1/AccessPolicy/ns1/allow-p0").0, 404);
    assert_eq!(d.get("/v1/peer/P0").0, 200);
}

#[test]
fn a_deleted_default_subscription_stays_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    assert_eq!(d.delete("/v1/subscription/new-connection-monitor").0, 200);
    d.kill();
    let d = Daemon::start(dir.path());
    assert_eq!(d.get("/v1/Subscription/new-connection-monitor").0, 404);
    assert_eq!(d.get("/v1/Subscription/new-connection-acl").0, 200);
}

#[test]
fn writes_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.data_dir.join("token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let before = revision(&d);

    let (status, body) = send(&d.url("/v1/apply"), "POST", Some(INVENTORY), None);
    assert_eq!(status, 401);
    assert_error_body(&body, "unauthorized");
    let (status, body) = send(
        &d.url("/v1/apply"),
        "POST",
        Some(INVENTORY),
        Some("not-the-token"),
    );
    assert_eq!(status, 403);
    assert_error_body(&body, "forbidden");
    let (status, _) = send(
        &d.url("/v1/subscription/new-connection-acl"),
        "DELETE",
        None,
        None,
    );
    assert_eq!(status, 401);
    let (status, _) = send(
        &d.url("/v1/subscription/new-connection-acl"),
        "DELETE",
        None,
        Some("x"),
    );
    assert_eq!(status, 403);
    let (status, _) = send(
        &d.url("/v1/delete"),
        "POST",
        Some(r#"[{"kind":"Peer","name":"P0"}]"#),
        None,
    );
    assert_eq!(status, 401);

    assert_eq!(revision(&d), before);
    assert_eq!(d.get("/v1/subscription/new-connection-acl").0, 200);
    // Reads and decisions need no token.
    assert_eq!(d.get("/v1/peer").0, 200);
    assert_eq!(d.decide(&ingress()).0, 200);
}

#[test]
fn malformed_bodies_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let before = revision(&d);
    for body in ["kind: [unclosed", "[1, 2", "{\"kind\": ", ""] {
        let (status, reply) = d.apply(body);
        assert_eq!(status, 400, "{body}: {reply}");
        assert_error_body(&reply, "malformed");
    }
    let (status, reply) = send(
        &d.url("/v1/delete"),
        "POST",
        Some("{not json"),
        Some(&d.token),
    );
    assert_eq!(status, 400);
    assert_error_body(&reply, "malformed");

    for event in [
        "not json",
        r#"{"type": "Nope"}"#,
        r#"{"type": "ServiceListRequest", "src_peer": "a", "extra": 1}"#,
    ] {
        let (status, reply) = send(&d.url("/v1/decide"), "POST", Some(event), None);
        assert_eq!(status, 400, "{event}: {reply}");
        assert_error_body(&reply, "malformed");
    }
    // One byte over the limit: the server reads all of it before it refuses, so it
    // closes nothing under the client's writes (a body far over the limit, left unread,
    // can reset the connection before the client reads the answer).
    let big = "a".repeat(clpe_server::http::MAX_DECIDE_BYTES + 1);
    let (status, reply) = send(&d.url("/v1/decide"), "POST", Some(&big), None);
    assert_eq!(status, 413);
    assert_error_body(&reply, "too_large");
    let (status, reply) = send(
        &d.url("/v1/decide?explain=perhaps"),
        "POST",
        Some(&ingress().to_string()),
        None,
    );
    assert_eq!(status, 400);
    assert_error_body(&reply, "malformed");
    assert_eq!(revision(&d), before);
}

#[test]
fn event_rule_errors_are_422_and_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let event = json!({"type": "NewConnection", "direction": "ingress", "dst_service": "echo"});
    let (status, reply) = d.decide(&event);
    assert_eq!(status, 422, "{reply}");
    assert_error_body(&reply, "invalid");
    assert_eq!(reply["field"], "src_peer");
}

#[test]
fn invalid_documents_are_422_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    assert_eq!(d.apply(INVENTORY).0, 200);
    let before = revision(&d);
    let batch = r#"
kind: Peer
metadata: {name: P9}
---
kind: AccessPolicy
metadata: {name: allow-p0, namespace: ns1}
spec: {action: maybe, from: [{workloadSelector: {}}], to: [{workloadSelector: {}}]}
"#;
    let (status, reply) = d.apply(batch);
    assert_eq!(status, 422, "{reply}");
    assert_error_body(&reply, "invalid");
    assert_eq!(reply["document"], "AccessPolicy ns1/allow-p0");
    assert_eq!(reply["field"], "spec.action");
    assert_eq!(revision(&d), before);
    assert_eq!(d.get("/v1/peer/P9").0, 404);
    assert_eq!(d.decide(&ingress()).1["decision"], "allow");
}

#[test]
fn conflicts_are_409() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let before = revision(&d);
    // Priority 0 of NewConnection is taken by the default `acl` subscription.
    let (status, reply) = d.apply("{kind: Subscription, metadata: {name: lb-first}, spec: {event: NewConnection, agent: monitor, priority: 0}}");
    assert_eq!(status, 409, "{reply}");
    assert_error_body(&reply, "conflict");
    assert_eq!(reply["field"], "spec.priority");
    assert_eq!(revision(&d), before);
    assert_eq!(d.get("/v1/subscription/lb-first").0, 404);
}

#[test]
fn unknown_documents_and_routes_are_404() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let before = revision(&d);
    let (status, reply) = d.delete("/v1/AccessPolicy/ns1/nope");
    assert_eq!(status, 404);
    assert_error_body(&reply, "not_found");
    assert_eq!(reply["document"], "AccessPolicy ns1/nope");
    let (status, reply) = send(
        &d.url("/v1/delete"),
        "POST",
        Some(
            r#"[{"kind":"Subscription","name":"new-connection-acl"},{"kind":"Peer","name":"nope"}]"#,
        ),
        Some(&d.token),
    );
    assert_eq!(status, 404, "{reply}");
    assert_eq!(
        d.get("/v1/subscription/new-connection-acl").0,
        200,
        "a refused batch delete deletes nothing"
    );
    for path in [
        "/v1/peer/nope",
        "/v1/widget",
        "/v1/export/ns/nope",
        "/v1/peer/ns/name",
        "/nope",
    ] {
        let (status, reply) = d.get(path);
        assert_eq!(status, 404, "{path}");
        assert_error_body(&reply, "not_found");
    }
    assert_eq!(revision(&d), before);
}

#[test]
fn kinds_match_without_case_and_lists_filter_by_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.apply("{kind: Export, metadata: {name: a, namespace: ns1}}\n---\n{kind: Export, metadata: {name: b, namespace: ns2}}\n---\n{kind: Export, metadata: {name: c}}");
    let names = |path: &str| -> Vec<String> {
        let (status, body) = d.get(path);
        assert_eq!(status, 200, "{path}");
        body.as_array()
            .unwrap()
            .iter()
            .map(|doc| doc["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("/v1/export"), ["c", "a", "b"]);
    assert_eq!(names("/v1/EXPORT?namespace=ns2"), ["b"]);
    let (status, doc) = d.get("/v1/Export/c");
    assert_eq!(status, 200);
    assert_eq!(
        doc,
        json!({"apiVersion": "clusterlink.net/v1alpha1", "kind": "Export", "metadata": {"name": "c", "namespace": "default"}})
    );
    assert_eq!(d.get("/v1/export/default/c").1, doc);
}

#[test]
fn decisions_metrics_health_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), &["--demo"]);
    let event = json!({"type": "NewConnection", "direction": "egress", "src_service": "productpage", "dst_service": "reviews"});
    let (status, reply) = send(
        &d.url("/v1/decide?explain=true"),
        "POST",
        Some(&event.to_string()),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(reply["decision"], "allow", "{reply}");
    assert!(reply["trace"].as_array().is_some_and(|t| !t.is_empty()));
    let (_, dry) = send(
        &d.url("/v1/decide?dryRun=true"),
        "POST",
        Some(&event.to_string()),
        None,
    );
    assert_eq!(dry["decision"], "allow");

    let (status, log) = d.get("/v1/decisions");
    assert_eq!(status, 200);
    assert_eq!(
        log.as_array().unwrap().len(),
        1,
        "a dry run is not logged: {log}"
    );
    assert_eq!(log[0]["response"]["decision"], "allow");
    let metrics = common::agent()
        .get(d.url("/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("clpe_events_total{event=\"NewConnection\"} 1"),
        "{metrics}"
    );
    assert_eq!(d.get("/healthz"), (200, json!({"status": "ok"})));
    assert_eq!(d.get("/readyz").1["status"], "ready");
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    assert_eq!(d.apply(INVENTORY).0, 200);
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(log.contains("SIGTERM") && log.contains("stopped"), "{log}");
}
