//! Protobuf messages to and from the engine's domain types, at the edge: the conversion
//! is where a malformed message gets the path of the field at fault.

use clpe_core::event::{
    ConnectionClosed, Direction, ExposeService, NewConnection, RateLimit, ServiceListRequest,
    StateView, TraceEntry, WouldDeny,
};
use clpe_core::{
    ConnectionId, Decision, Event, EventError, Namespace, PeerName, Response, ServiceName,
};

use super::proto;

fn missing(field: &str) -> EventError {
    EventError {
        field: field.to_owned(),
        message: "is missing".to_owned(),
    }
}

impl TryFrom<proto::Event> for Event {
    type Error = EventError;

    fn try_from(event: proto::Event) -> Result<Event, EventError> {
        use proto::event::Kind;
        Ok(match event.kind.ok_or_else(|| missing("event.kind"))? {
            Kind::NewConnection(e) => Event::NewConnection(NewConnection::try_from(e)?),
            Kind::ExposeService(e) => Event::ExposeService(ExposeService {
                service: ServiceName::from(e.service.as_str()),
                namespace: e.namespace.as_deref().map(Namespace::from),
            }),
            Kind::ServiceListRequest(e) => Event::ServiceListRequest(ServiceListRequest {
                src_peer: PeerName::from(e.src_peer.as_str()),
            }),
            Kind::ConnectionClosed(e) => Event::ConnectionClosed(ConnectionClosed {
                connection_id: ConnectionId::new(e.connection_id),
                bytes_sent: e.bytes_sent,
                bytes_received: e.bytes_received,
            }),
        })
    }
}

impl TryFrom<proto::NewConnection> for NewConnection {
    type Error = EventError;

    fn try_from(e: proto::NewConnection) -> Result<NewConnection, EventError> {
        let direction = match proto::Direction::try_from(e.direction) {
            Ok(proto::Direction::Egress) => Direction::Egress,
            Ok(proto::Direction::Ingress) => Direction::Ingress,
            Ok(proto::Direction::Unspecified) => {
                return Err(EventError {
                    field: "new_connection.direction".to_owned(),
                    message: "must be DIRECTION_EGRESS or DIRECTION_INGRESS".to_owned(),
                });
            }
            Err(_) => {
                return Err(EventError {
                    field: "new_connection.direction".to_owned(),
                    message: format!("unknown direction {}", e.direction),
                });
            }
        };
        Ok(NewConnection {
            direction,
            dst_service: ServiceName::from(e.dst_service.as_str()),
            dst_namespace: e.dst_namespace.as_deref().map(Namespace::from),
            src_service: e.src_service.as_deref().map(ServiceName::from),
            src_peer: e.src_peer.as_deref().map(PeerName::from),
            src_attributes: e.src_attributes,
            connection_id: e.connection_id.map(ConnectionId::new),
        })
    }
}

fn decision(d: Decision) -> i32 {
    match d {
        Decision::Allow => proto::Decision::Allow as i32,
        Decision::Deny => proto::Decision::Deny as i32,
    }
}

fn names(v: Option<Vec<PeerName>>) -> Vec<String> {
    v.unwrap_or_default()
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect()
}

fn rate(r: RateLimit) -> proto::RateLimit {
    proto::RateLimit {
        bits_per_second: r.bits_per_second,
    }
}

fn view(v: StateView) -> proto::StateView {
    proto::StateView {
        candidates: names(Some(v.candidates)),
        target: v.target.map(|t| t.as_str().to_owned()),
        fallbacks: names(Some(v.fallbacks)),
        decision: v
            .decision
            .map_or(proto::Decision::Unspecified as i32, decision),
        rate_limit: v.rate_limit.map(rate),
    }
}

impl From<TraceEntry> for proto::TraceEntry {
    fn from(t: TraceEntry) -> proto::TraceEntry {
        proto::TraceEntry {
            agent: t.agent.to_string(),
            subscription: t.subscription.to_string(),
            priority: t.priority,
            outcome: t.outcome,
            saw: Some(view(t.saw)),
            left: Some(view(t.left)),
            matched: t.matched.iter().map(|m| m.to_string()).collect(),
            would_deny: t.would_deny.iter().map(|m| m.to_string()).collect(),
            detail: t.detail,
        }
    }
}

impl From<WouldDeny> for proto::WouldDeny {
    fn from(w: WouldDeny) -> proto::WouldDeny {
        proto::WouldDeny {
            agent: w.agent.to_string(),
            policy: w.policy.to_string(),
        }
    }
}

impl From<Response> for proto::Response {
    fn from(r: Response) -> proto::Response {
        proto::Response {
            decision: decision(r.decision),
            target_peer: r.target_peer.map(|p| p.as_str().to_owned()),
            fallback_peers: names(r.fallback_peers),
            target_peers: names(r.target_peers),
            services: r.services.unwrap_or_default(),
            rate_limit: r.rate_limit.map(rate),
            connection_id: r.connection_id.map(|c| c.to_string()),
            matched_by: r.matched_by.map(|m| m.to_string()),
            decided_by: r.decided_by.map(|m| m.to_string()),
            reason: r.reason.to_string(),
            would_deny: r.would_deny.into_iter().map(Into::into).collect(),
            annotations: r.annotations,
            trace: r
                .trace
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_converts_with_every_field() {
        let message = proto::Event {
            kind: Some(proto::event::Kind::NewConnection(proto::NewConnection {
                direction: proto::Direction::Ingress as i32,
                dst_service: "echo".into(),
                dst_namespace: Some("ns1".into()),
                src_service: Some("a".into()),
                src_peer: Some("P0".into()),
                src_attributes: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
                connection_id: Some("c1".into()),
            })),
        };
        let event = Event::try_from(message).unwrap();
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "NewConnection", "direction": "ingress", "dst_service": "echo",
                "dst_namespace": "ns1", "src_service": "a", "src_peer": "P0",
                "src_attributes": {"k": "v"}, "connection_id": "c1"})
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = Event::try_from(proto::Event { kind: None }).unwrap_err();
        assert_eq!(err.field, "event.kind");
        let message = proto::Event {
            kind: Some(proto::event::Kind::NewConnection(proto::NewConnection {
                dst_service: "echo".into(),
                ..Default::default()
            })),
        };
        assert_eq!(
            Event::try_from(message).unwrap_err().field,
            "new_connection.direction"
        );
    }
}
