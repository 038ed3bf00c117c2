//! The gRPC decision API of the real daemon: `clpe.v1.Decisions/Decide` and
//! `DecideStream` answer as `POST /v1/decide` does.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use clpe_server::grpc::DecisionsClient;
use clpe_server::grpc::proto;
use common::Daemon;
use serde_json::json;

fn egress(src_service: &str) -> proto::DecideRequest {
    proto::DecideRequest {
        event: Some(proto::Event {
            kind: Some(proto::event::Kind::NewConnection(proto::NewConnection {
                direction: proto::Direction::Egress as i32,
                dst_service: "reviews".into(),
                src_service: Some(src_service.into()),
                ..Default::default()
            })),
        }),
        explain: false,
        dry_run: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_decides_like_http() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), &["--demo"]);
    let mut client = DecisionsClient::connect(d.grpc.clone()).await.unwrap();

    let allowed = client
        .decide(egress("productpage"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allowed.decision, proto::Decision::Allow as i32);
    assert_eq!(
        allowed.matched_by.as_deref(),
        Some("default/allow-productpage-to-reviews")
    );
    assert_eq!(allowed.decided_by.as_deref(), Some("acl"));
    let target = allowed.target_peer.clone().unwrap();
    assert!(target.starts_with("peer-"), "{allowed:?}");
    assert_eq!(allowed.fallback_peers.len(), 1);
    assert!(allowed.trace.is_empty());

    let mut explained = egress("someone-else");
    explained.explain = true;
    let denied = client.decide(explained).await.unwrap().into_inner();
    assert_eq!(denied.decision, proto::Decision::Deny as i32);
    assert_eq!(denied.matched_by.as_deref(), Some("<default deny>"));
    assert_eq!(denied.trace.first().map(|t| t.agent.as_str()), Some("acl"));

    // The same event over HTTP gets the same answer.
    let http = json!({"type": "NewConnection", "direction": "egress", "src_service": "someone-else", "dst_service": "reviews"});
    let (_, body) = d.decide(&http);
    assert_eq!(body["matched_by"], "<default deny>");
    assert_eq!(body["reason"], denied.reason);

    let status = client
        .decide(proto::DecideRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("event"), "{status:?}");
    let mut no_direction = egress("productpage");
    if let Some(proto::Event {
        kind: Some(proto::event::Kind::NewConnection(c)),
    }) = no_direction.event.as_mut()
    {
        c.direction = proto::Direction::Unspecified as i32;
    }
    let status = client.decide(no_direction).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("new_connection.direction"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_one_result_per_event_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), &["--demo"]);
    let mut client = DecisionsClient::connect(d.grpc.clone()).await.unwrap();
    let requests = vec![
        egress("productpage"),
        proto::DecideRequest::default(),
        egress("other"),
        egress("productpage"),
    ];
    let mut results = client
        .decide_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(result) = results.message().await.unwrap() {
        seen.push(match result.result.unwrap() {
            proto::decide_result::Result::Response(r) => {
                format!("{:?}", proto::Decision::try_from(r.decision).unwrap())
            }
            proto::decide_result::Result::Error(e) => format!("error {}", e.field),
        });
    }
    assert_eq!(seen, ["Allow", "error event", "Deny", "Allow"]);
    // Round-robin moved on between the two allowed decisions of the stream.
    let (_, log) = d.get("/v1/decisions");
    let targets: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["response"]["target_peer"].as_str())
        .collect();
    assert_eq!(targets.len(), 2);
    assert_ne!(targets[0], targets[1]);
}
