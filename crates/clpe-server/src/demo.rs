//! The demo policy set `clpe serve --demo` applies to an empty store, so a newcomer's
//! first command gives a daemon that answers something worth reading.

/// Two remote peers serving `reviews`, imported here; `productpage` may reach it, and
/// everything else is denied by default.
pub const DOCUMENTS: &str = r#"
kind: Peer
metadata: {name: peer-east, labels: {region: east}}
---
kind: Peer
metadata: {name: peer-west, labels: {region: west}}
---
kind: Import
metadata: {name: reviews, namespace: default}
spec:
  sources:
    - {peer: peer-east, exportName: reviews, exportNamespace: default}
    - {peer: peer-west, exportName: reviews, exportNamespace: default}
---
kind: AccessPolicy
metadata: {name: allow-productpage-to-reviews, namespace: default}
spec:
  action: allow
  from: [{workloadSelector: {matchLabels: {client.clusterlink.net/service: productpage}}}]
  to: [{workloadSelector: {matchLabels: {export.clusterlink.net/name: reviews}}}]
"#;

/// An event the demo set allows.
pub const EVENT: &str = r#"{"type":"NewConnection","direction":"egress","src_service":"productpage","dst_service":"reviews"}"#;

/// The command a newcomer can paste to ask the daemon at `http` for a decision.
pub fn example(http: std::net::SocketAddr) -> String {
    format!(
        "curl -s -X POST http://{http}/v1/decide -H 'content-type: application/json' -d '{EVENT}'"
    )
}

/// What `clpe serve --demo` prints under its `listening` line.
pub fn welcome(http: std::net::SocketAddr, token: &std::path::Path) -> String {
    [
        "demo: peers peer-east and peer-west serve Import default/reviews; productpage may reach it, nothing else may.".to_owned(),
        "ask for a decision (add ?explain=true for the trace of every agent):".to_owned(),
        format!("  {}", example(http)),
        format!("program it: clpe get accesspolicy, clpe apply -f FILE (the operator token is {})", token.display()),
    ]
    .join("\n")
}
