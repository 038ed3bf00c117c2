//! Events in, responses out (SPEC §2): the serde types every surface shares.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::EventError;
use crate::names::{ConnectionId, Namespace, PeerName, ServiceName};
use crate::text::Text;

/// The four event types of SPEC §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventType {
    NewConnection,
    ExposeService,
    ServiceListRequest,
    ConnectionClosed,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::NewConnection,
        EventType::ExposeService,
        EventType::ServiceListRequest,
        EventType::ConnectionClosed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::NewConnection => "NewConnection",
            EventType::ExposeService => "ExposeService",
            EventType::ServiceListRequest => "ServiceListRequest",
            EventType::ConnectionClosed => "ConnectionClosed",
        }
    }

    /// `new-connection`: how default subscription names spell the event.
    pub fn kebab(self) -> &'static str {
        match self {
            EventType::NewConnection => "new-connection",
            EventType::ExposeService => "expose-service",
            EventType::ServiceListRequest => "service-list-request",
            EventType::ConnectionClosed => "connection-closed",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Egress,
    Ingress,
}

/// An event from a hookpoint. Unknown fields are an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Event {
    NewConnection(NewConnection),
    ExposeService(ExposeService),
    ServiceListRequest(ServiceListRequest),
    ConnectionClosed(ConnectionClosed),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConnection {
    pub direction: Direction,
    pub dst_service: ServiceName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_namespace: Option<Namespace>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_service: Option<ServiceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_peer: Option<PeerName>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub src_attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<ConnectionId>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposeService {
    pub service: ServiceName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Namespace>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceListRequest {
    pub src_peer: PeerName,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionClosed {
    pub connection_id: ConnectionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<u64>,
}

const MAX_FIELD: usize = 1024;

impl Event {
    pub fn event_type(&self) -> EventType {
        match self {
            Event::NewConnection(_) => EventType::NewConnection,
            Event::ExposeService(_) => EventType::ExposeService,
            Event::ServiceListRequest(_) => EventType::ServiceListRequest,
            Event::ConnectionClosed(_) => EventType::ConnectionClosed,
        }
    }

    /// Parses one JSON event, with the field named in the error.
    pub fn from_json(text: &str) -> Result<Event, EventError> {
        let event: Event = serde_json::from_str(text).map_err(|e| EventError {
            field: String::new(),
            message: e.to_string(),
        })?;
        event.check()?;
        Ok(event)
    }

    /// The event manager's checks: what serde's shape cannot say.
    pub fn check(&self) -> Result<(), EventError> {
        let bad = |field: &str, message: &str| {
            Err(EventError {
                field: field.to_owned(),
                message: message.to_owned(),
            })
        };
        let name = |field: &str, value: &str| {
            if value.is_empty() {
                return bad(field, "must not be empty");
            }
            if value.len() > MAX_FIELD {
                return bad(field, "is longer than 1024 characters");
            }
            Ok(())
        };
        match self {
            Event::NewConnection(e) => {
                name("dst_service", e.dst_service.as_str())?;
                if let Some(ns) = &e.dst_namespace {
                    name("dst_namespace", ns.as_str())?;
                }
                if let Some(s) = &e.src_service {
                    name("src_service", s.as_str())?;
                }
                if let Some(p) = &e.src_peer {
                    name("src_peer", p.as_str())?;
                }
                if let Some(c) = &e.connection_id {
                    name("connection_id", c.as_str())?;
                }
                if e.direction == Direction::Ingress && e.src_peer.is_none() {
                    return bad("src_peer", "is required on ingress");
                }
                if e.src_attributes.len() > 64 {
                    return bad("src_attributes", "has more than 64 entries");
                }
                for (k, v) in &e.src_attributes {
                    if k.is_empty() || k.len() > MAX_FIELD || v.len() > MAX_FIELD {
                        return bad(
                            "src_attributes",
                            "keys must be 1 to 1024 characters, values at most 1024",
                        );
                    }
                }
                Ok(())
            }
            Event::ExposeService(e) => {
                name("service", e.service.as_str())?;
                match &e.namespace {
                    Some(ns) => name("namespace", ns.as_str()),
                    None => Ok(()),
                }
            }
            Event::ServiceListRequest(e) => name("src_peer", e.src_peer.as_str()),
            Event::ConnectionClosed(e) => name("connection_id", e.connection_id.as_str()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub bits_per_second: u64,
}

/// A dry-run policy that would have denied (SPEC §3.1, §3.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WouldDeny {
    pub agent: Text,
    pub policy: Text,
}

/// The engine's answer. Absent fields are left out of the JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub decision: Decision,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_peer: Option<PeerName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_peers: Option<Vec<PeerName>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_peers: Option<Vec<PeerName>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<ConnectionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Text>,
    pub reason: Text,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would_deny: Vec<WouldDeny>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Vec<TraceEntry>>,
}

impl Response {
    /// A decision and its reason, with nothing else.
    pub fn new(decision: Decision, reason: Text) -> Response {
        Response {
            decision,
            target_peer: None,
            fallback_peers: None,
            target_peers: None,
            services: None,
            rate_limit: None,
            connection_id: None,
            matched_by: None,
            decided_by: None,
            reason,
            would_deny: Vec::new(),
            annotations: BTreeMap::new(),
            trace: None,
        }
    }
}

/// The shared state as one agent saw it or left it, for the trace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateView {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<PeerName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PeerName>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<PeerName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// One agent run: what it saw, what it did, which policies matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEntry {
    pub agent: Text,
    pub subscription: Arc<str>,
    pub priority: u32,
    /// `continue`, `allow`, `deny`, `failed` (closed: counted as deny), `skipped` (failed, open).
    pub outcome: String,
    pub saw: StateView,
    pub left: StateView,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<Text>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would_deny: Vec<Text>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}
