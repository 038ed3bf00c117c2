//! The shared state of a chain as the guest sees it: the core's [`Context`] read through
//! the SDK's [`InputSource`], so the input is encoded straight from it, copying nothing
//! twice.

use clpe_agent_sdk::{CandidateWriter, Decision, EventType, InputSource, ListWriter, MapWriter};
use clpe_core::attrs::Attrs;
use clpe_core::context::{Context, Scope};
use clpe_core::event::{Direction, Event};

pub(crate) struct Source<'c, 's> {
    pub agent: &'c str,
    pub cx: &'c Context<'s>,
}

/// The effective pairs of an attribute map: the first value of each key (see
/// [`Attrs`]'s invariant), in the order pushed.
fn effective(attrs: &Attrs<'_>, out: &mut MapWriter<'_, '_>) {
    for (i, p) in attrs.pairs().enumerate() {
        if !attrs.pairs().take(i).any(|earlier| earlier.key == p.key) {
            out.entry(p.key, p.value);
        }
    }
}

impl InputSource for Source<'_, '_> {
    fn agent(&self) -> &str {
        self.agent
    }

    fn now_nanos(&self) -> u64 {
        self.cx.now.as_nanos()
    }

    fn event_type(&self) -> EventType {
        match self.cx.event {
            Event::NewConnection(_) => EventType::NewConnection,
            Event::ExposeService(_) => EventType::ExposeService,
            Event::ServiceListRequest(_) => EventType::ServiceListRequest,
            Event::ConnectionClosed(_) => EventType::ConnectionClosed,
        }
    }

    fn event_fields(&self, out: &mut MapWriter<'_, '_>) {
        let mut opt = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                out.entry(k, v);
            }
        };
        match self.cx.event {
            Event::NewConnection(e) => {
                opt(
                    "direction",
                    Some(if e.direction == Direction::Egress {
                        "egress"
                    } else {
                        "ingress"
                    }),
                );
                opt("dst_service", Some(e.dst_service.as_str()));
                opt(
                    "dst_namespace",
                    e.dst_namespace.as_ref().map(|n| n.as_str()),
                );
                opt("src_service", e.src_service.as_ref().map(|s| s.as_str()));
                opt("src_peer", e.src_peer.as_ref().map(|p| p.as_str()));
                opt(
                    "connection_id",
                    e.connection_id.as_ref().map(|c| c.as_str()),
                );
            }
            Event::ExposeService(e) => {
                opt("service", Some(e.service.as_str()));
                opt("namespace", e.namespace.as_ref().map(|n| n.as_str()));
            }
            Event::ServiceListRequest(e) => opt("src_peer", Some(e.src_peer.as_str())),
            Event::ConnectionClosed(e) => {
                opt("connection_id", Some(e.connection_id.as_str()));
                opt("bytes_sent", e.bytes_sent.map(|n| n.to_string()).as_deref());
                opt(
                    "bytes_received",
                    e.bytes_received.map(|n| n.to_string()).as_deref(),
                );
            }
        }
    }

    fn event_src_attributes(&self, out: &mut MapWriter<'_, '_>) {
        if let Event::NewConnection(e) = self.cx.event {
            for (k, v) in &e.src_attributes {
                out.entry(k, v);
            }
        }
    }

    fn src(&self, out: &mut MapWriter<'_, '_>) {
        effective(&self.cx.src, out);
    }

    fn dst(&self, out: &mut MapWriter<'_, '_>) {
        let dst = match self.cx.scope {
            Scope::Expose { export, .. } => Some(self.cx.dst_local(export)),
            _ => self.cx.dst_current(),
        };
        if let Some(dst) = dst {
            effective(&dst, out);
        }
    }

    fn candidates(&self, out: &mut CandidateWriter<'_, '_>) {
        for c in &self.cx.candidates {
            out.candidate(
                c.name().as_str(),
                c.peer.reachable,
                c.peer.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            );
        }
    }

    fn target(&self) -> Option<&str> {
        self.cx.target.as_ref().map(|t| t.name().as_str())
    }

    fn fallbacks(&self, out: &mut ListWriter<'_, '_>) {
        for c in &self.cx.fallbacks {
            out.item(c.name().as_str());
        }
    }

    fn decision(&self) -> Option<Decision> {
        self.cx.decision.map(|d| match d {
            clpe_core::Decision::Allow => Decision::Allow,
            clpe_core::Decision::Deny => Decision::Deny,
        })
    }

    fn rate_limit(&self) -> Option<u64> {
        self.cx.rate_limit
    }

    fn annotations(&self, out: &mut MapWriter<'_, '_>) {
        for (k, v) in self.cx.annotations.iter().flatten() {
            out.entry(k, v);
        }
    }
}
