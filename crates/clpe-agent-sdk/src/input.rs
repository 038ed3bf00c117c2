//! What the host hands the guest for one decision (ABI v1), and its encoding.
//!
//! Layout, in order (see `docs/wasm-agents.md`):
//!
//! ```text
//! u32 abi_version · str agent · u64 now_nanos · u8 event_type
//! map event_fields · map event_src_attributes · map src · map dst
//! candidates (u32 count, then: str name · u8 reachable · map labels)
//! opt str target · list fallbacks · u8 decision (0 none, 1 allow, 2 deny)
//! opt u64 rate_limit · map annotations
//! ```

use crate::wire::{ListWriter, Map, MapWriter, Reader, StrList, WireError, Writer};

/// The version of the guest interface this crate speaks.
pub const ABI_VERSION: u32 = 1;

/// The four event types of SPEC §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    NewConnection = 0,
    ExposeService = 1,
    ServiceListRequest = 2,
    ConnectionClosed = 3,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::NewConnection => "NewConnection",
            EventType::ExposeService => "ExposeService",
            EventType::ServiceListRequest => "ServiceListRequest",
            EventType::ConnectionClosed => "ConnectionClosed",
        }
    }

    fn from_u8(b: u8) -> Option<EventType> {
        Some(match b {
            0 => EventType::NewConnection,
            1 => EventType::ExposeService,
            2 => EventType::ServiceListRequest,
            3 => EventType::ConnectionClosed,
            _ => return None,
        })
    }
}

/// The decision so far in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// The event, as SPEC §2 spells it: its scalar fields by name (numbers in decimal) and
/// its `src_attributes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub kind: EventType,
    /// `direction`, `dst_service`, `dst_namespace`, `src_service`, `src_peer`,
    /// `connection_id`, `service`, `namespace`, `bytes_sent`, `bytes_received`: those the
    /// event has.
    pub fields: Map<'a>,
    pub src_attributes: Map<'a>,
}

/// Fields whose JSON form is a number.
const NUMERIC_FIELDS: [&str; 2] = ["bytes_sent", "bytes_received"];

impl<'a> Event<'a> {
    pub fn get(&self, field: &str) -> Option<&'a str> {
        self.fields.get(field)
    }

    /// `egress` or `ingress` (NewConnection only).
    pub fn direction(&self) -> Option<&'a str> {
        self.get("direction")
    }

    /// The event as SPEC §2 JSON, rebuilt in the guest (the host does not pay for it).
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), self.kind.as_str().into());
        for (k, v) in self.fields.iter() {
            let value = match v.parse::<u64>() {
                Ok(n) if NUMERIC_FIELDS.contains(&k) => n.into(),
                _ => v.into(),
            };
            m.insert(k.into(), value);
        }
        if !self.src_attributes.is_empty() {
            let attrs = self
                .src_attributes
                .iter()
                .map(|(k, v)| (k.to_owned(), v.into()))
                .collect();
            m.insert("src_attributes".into(), serde_json::Value::Object(attrs));
        }
        serde_json::Value::Object(m)
    }
}

/// A possible target peer of an egress connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub reachable: bool,
    /// The peer's labels (`metadata.labels` of its Peer document), without prefix.
    pub labels: Map<'a>,
}

/// The candidates, in the Import's source order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Candidates<'a> {
    raw: &'a [u8],
}

impl<'a> Candidates<'a> {
    pub fn iter(&self) -> impl Iterator<Item = Candidate<'a>> + 'a {
        let mut r = Reader::new(self.raw);
        let count = r.u32().unwrap_or(0);
        // The section's bounds were checked when decoded: these reads cannot fail. A
        // candidate whose name is not UTF-8 (only a broken host writes one) is skipped.
        (0..count)
            .map_while(move |_| Some((r.raw_str().ok()?, r.flag().ok()?, r.skip_map().ok()?)))
            .filter_map(|(name, reachable, labels)| {
                Some(Candidate {
                    name: std::str::from_utf8(name).ok()?,
                    reachable,
                    labels,
                })
            })
    }

    pub fn len(&self) -> usize {
        Reader::new(self.raw).u32().unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The candidate named `name`. Compares bytes: only the one found is converted.
    pub fn get(&self, name: &str) -> Option<Candidate<'a>> {
        let mut r = Reader::new(self.raw);
        for _ in 0..r.u32().ok()? {
            let n = r.raw_str().ok()?;
            let reachable = r.flag().ok()?;
            let labels = r.skip_map().ok()?;
            if n == name.as_bytes() {
                return Some(Candidate {
                    name: std::str::from_utf8(n).ok()?,
                    reachable,
                    labels,
                });
            }
        }
        None
    }
}

/// Everything the guest sees of one decision. Borrowed from the input buffer: decoding
/// validates it once and allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Input<'a> {
    pub abi_version: u32,
    /// The agent's name (its WasmAgent document's `metadata.name`).
    pub agent: &'a str,
    /// The engine's clock: nanoseconds since the Unix epoch. The guest has no clock.
    pub now_nanos: u64,
    pub event: Event<'a>,
    /// The source side's attributes (SPEC §2's table), as selectors see them.
    pub src: Map<'a>,
    /// The destination side's attributes as the connection stands: the local export
    /// (ingress, ExposeService) or the chosen target (egress, once one is chosen).
    pub dst: Map<'a>,
    /// Egress: the peers still possible, in source order.
    pub candidates: Candidates<'a>,
    /// Egress: the chosen peer, if an agent (the `lb`) chose one already.
    pub target: Option<&'a str>,
    /// Egress: the peers to fail over to, in order of preference.
    pub fallbacks: StrList<'a>,
    pub decision: Option<Decision>,
    /// Bits per second attached so far by the rate limiter.
    pub rate_limit: Option<u64>,
    pub annotations: Map<'a>,
}

impl<'a> Input<'a> {
    /// Decodes an input, checking its layout and bounds. The strings of its maps and
    /// lists are checked for UTF-8 when read (the host writes only valid UTF-8; one that
    /// is not reads as absent), so a decision pays only for what it reads.
    pub fn decode(bytes: &'a [u8]) -> Result<Input<'a>, WireError> {
        let mut r = Reader::new(bytes);
        let abi_version = r.u32()?;
        if abi_version != ABI_VERSION {
            return Err(WireError {
                at: 0,
                what: "the input is not ABI version 1",
            });
        }
        let agent = r.str()?;
        let now_nanos = r.u64()?;
        let at = r.pos();
        let kind = EventType::from_u8(r.u8()?).ok_or(WireError {
            at,
            what: "unknown event type",
        })?;
        let event = Event {
            kind,
            fields: r.skip_map()?,
            src_attributes: r.skip_map()?,
        };
        let src = r.skip_map()?;
        let dst = r.skip_map()?;
        let start = r.pos();
        for _ in 0..r.u32()? {
            r.raw_str()?;
            r.flag()?;
            r.skip_map()?;
        }
        let candidates = Candidates {
            raw: r.since(start),
        };
        let target = r.opt_str()?;
        let fallbacks = r.skip_list()?;
        let at = r.pos();
        let decision = match r.u8()? {
            0 => None,
            1 => Some(Decision::Allow),
            2 => Some(Decision::Deny),
            _ => {
                return Err(WireError {
                    at,
                    what: "unknown decision",
                });
            }
        };
        let rate_limit = r.opt_u64()?;
        let annotations = r.skip_map()?;
        r.finish()?;
        Ok(Input {
            abi_version,
            agent,
            now_nanos,
            event,
            src,
            dst,
            candidates,
            target,
            fallbacks,
            decision,
            rate_limit,
            annotations,
        })
    }

    /// Egress: the peers in the current order of preference: the target and then the
    /// fallbacks once a target is chosen; before, the reachable candidates and then the
    /// unreachable ones, each in source order.
    pub fn preference(&self) -> Vec<&'a str> {
        let mut out: Vec<&'a str> = Vec::with_capacity(self.candidates.len());
        if let Some(t) = self.target {
            out.push(t);
            out.extend(self.fallbacks.iter());
        }
        for reachable in [true, false] {
            for c in self.candidates.iter().filter(|c| c.reachable == reachable) {
                if !out.contains(&c.name) {
                    out.push(c.name);
                }
            }
        }
        out
    }

    /// Seconds since the Unix epoch.
    pub fn now_secs(&self) -> u64 {
        self.now_nanos / 1_000_000_000
    }

    /// The hour of the day in UTC (0 to 23).
    pub fn utc_hour(&self) -> u8 {
        ((self.now_secs() / 3600) % 24) as u8
    }

    /// The minute of the day in UTC (0 to 1439).
    pub fn utc_minute_of_day(&self) -> u16 {
        ((self.now_secs() / 60) % 1440) as u16
    }

    /// The day of the week in UTC: 0 is Monday, 6 is Sunday (1970-01-01 was a Thursday).
    pub fn utc_weekday(&self) -> u8 {
        ((self.now_secs() / 86_400 + 3) % 7) as u8
    }
}

/// What the host provides to build an input, section by section; [`encode_input`] calls
/// these in the order of the layout, so a host cannot get the order wrong.
pub trait InputSource {
    fn agent(&self) -> &str;
    fn now_nanos(&self) -> u64;
    fn event_type(&self) -> EventType;
    fn event_fields(&self, out: &mut MapWriter<'_, '_>);
    fn event_src_attributes(&self, out: &mut MapWriter<'_, '_>);
    fn src(&self, out: &mut MapWriter<'_, '_>);
    fn dst(&self, out: &mut MapWriter<'_, '_>);
    fn candidates(&self, out: &mut CandidateWriter<'_, '_>);
    fn target(&self) -> Option<&str>;
    fn fallbacks(&self, out: &mut ListWriter<'_, '_>);
    fn decision(&self) -> Option<Decision>;
    fn rate_limit(&self) -> Option<u64>;
    fn annotations(&self, out: &mut MapWriter<'_, '_>);
}

/// Writes candidates: name, reachability and labels.
pub struct CandidateWriter<'w, 'b> {
    w: &'w mut Writer<'b>,
    count: u32,
}

impl CandidateWriter<'_, '_> {
    pub fn candidate<'l>(
        &mut self,
        name: &str,
        reachable: bool,
        labels: impl IntoIterator<Item = (&'l str, &'l str)>,
    ) {
        self.w.str(name);
        self.w.u8(u8::from(reachable));
        self.w.map(|m| {
            for (k, v) in labels {
                m.entry(k, v);
            }
        });
        self.count += 1;
    }
}

/// Encodes an input into `out` (cleared first).
pub fn encode_input(source: &impl InputSource, out: &mut Vec<u8>) {
    out.clear();
    let mut w = Writer::new(out);
    w.u32(ABI_VERSION);
    w.str(source.agent());
    w.u64(source.now_nanos());
    w.u8(source.event_type() as u8);
    w.map(|m| source.event_fields(m));
    w.map(|m| source.event_src_attributes(m));
    w.map(|m| source.src(m));
    w.map(|m| source.dst(m));
    let at = w.count_slot();
    let mut c = CandidateWriter {
        w: &mut w,
        count: 0,
    };
    source.candidates(&mut c);
    let count = c.count;
    w.patch_count(at, count);
    w.opt_str(source.target());
    w.list(|l| source.fallbacks(l));
    w.u8(match source.decision() {
        None => 0,
        Some(Decision::Allow) => 1,
        Some(Decision::Deny) => 2,
    });
    w.opt_u64(source.rate_limit());
    w.map(|m| source.annotations(m));
}
