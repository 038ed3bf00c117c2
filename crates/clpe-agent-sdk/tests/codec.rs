//! The ABI v1 codec, both ways, as host and guest use it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use clpe_agent_sdk::*;

struct Fake;

impl InputSource for Fake {
    fn agent(&self) -> &str {
        "geo"
    }
    fn now_nanos(&self) -> u64 {
        (26 * 3600 + 90) * 1_000_000_000
    }
    fn event_type(&self) -> EventType {
        EventType::NewConnection
    }
    fn event_fields(&self, out: &mut MapWriter<'_, '_>) {
        out.entry("direction", "egress");
        out.entry("dst_service", "echo");
    }
    fn event_src_attributes(&self, out: &mut MapWriter<'_, '_>) {
        out.entry("client.clusterlink.net/namespace", "ns1");
    }
    fn src(&self, out: &mut MapWriter<'_, '_>) {
        out.entry("peer.clusterlink.net/name", "local");
    }
    fn dst(&self, _out: &mut MapWriter<'_, '_>) {}
    fn candidates(&self, out: &mut CandidateWriter<'_, '_>) {
        out.candidate("A", true, [("region", "eu")]);
        out.candidate("B", false, []);
        out.candidate("C", true, [("region", "us"), ("tier", "gold")]);
    }
    fn target(&self) -> Option<&str> {
        None
    }
    fn fallbacks(&self, _out: &mut ListWriter<'_, '_>) {}
    fn decision(&self) -> Option<Decision> {
        Some(Decision::Allow)
    }
    fn rate_limit(&self) -> Option<u64> {
        Some(10_000_000)
    }
    fn annotations(&self, out: &mut MapWriter<'_, '_>) {
        out.entry("seen", "yes");
    }
}

#[test]
fn an_input_round_trips() {
    let mut buf = Vec::new();
    encode_input(&Fake, &mut buf);
    let input = Input::decode(&buf).unwrap();
    assert_eq!(input.abi_version, ABI_VERSION);
    assert_eq!(input.agent, "geo");
    assert_eq!(input.utc_hour(), 2);
    assert_eq!(input.utc_weekday(), 4, "1970-01-02 was a Friday");
    assert_eq!(input.event.kind, EventType::NewConnection);
    assert_eq!(input.event.direction(), Some("egress"));
    assert_eq!(
        input.event.to_json(),
        serde_json::json!({"type": "NewConnection", "direction": "egress", "dst_service": "echo",
            "src_attributes": {"client.clusterlink.net/namespace": "ns1"}})
    );
    assert_eq!(input.src.get("peer.clusterlink.net/name"), Some("local"));
    assert!(input.dst.is_empty());
    let names: Vec<&str> = input.candidates.iter().map(|c| c.name).collect();
    assert_eq!(names, ["A", "B", "C"]);
    assert_eq!(
        input.candidates.get("C").unwrap().labels.get("tier"),
        Some("gold")
    );
    assert!(!input.candidates.get("B").unwrap().reachable);
    assert_eq!(
        input.preference(),
        ["A", "C", "B"],
        "reachable first, then unreachable"
    );
    assert_eq!(input.target, None);
    assert_eq!(input.decision, Some(Decision::Allow));
    assert_eq!(input.rate_limit, Some(10_000_000));
    assert_eq!(input.annotations.get("seen"), Some("yes"));
}

#[test]
fn every_truncation_of_an_input_is_an_error() {
    let mut buf = Vec::new();
    encode_input(&Fake, &mut buf);
    for cut in 0..buf.len() {
        assert!(Input::decode(&buf[..cut]).is_err(), "cut at {cut}");
    }
}

struct Echo(String);

impl Agent for Echo {
    fn new(config: serde_json::Value) -> Result<Self, String> {
        config
            .get("say")
            .and_then(|v| v.as_str())
            .map(|s| Echo(s.to_owned()))
            .ok_or_else(|| "`say` is missing".into())
    }
    fn decide<'a>(&mut self, input: &Input<'a>) -> Reply<'a> {
        Reply::cont().annotate(input.agent, self.0.clone())
    }
}

#[test]
fn run_decodes_asks_and_encodes() {
    let mut input = Vec::new();
    encode_input(&Fake, &mut input);
    let mut out = Vec::new();
    let mut agent = Echo::new(serde_json::json!({"say": "hi"})).unwrap();
    guest::run(Some(&mut agent), &input, &mut out);
    let reply = ReplyView::decode(&out).unwrap();
    assert_eq!(reply.verdict, Verdict::Continue);
    assert_eq!(reply.annotations.get("geo"), Some("hi"));

    guest::run::<Echo>(None, &input, &mut out);
    assert_eq!(ReplyView::decode(&out).unwrap().verdict, Verdict::Fail);
    guest::run(Some(&mut agent), &input[..3], &mut out);
    let reply = ReplyView::decode(&out).unwrap();
    assert_eq!(reply.verdict, Verdict::Fail);
    assert!(reply.reason.unwrap().contains("cannot decode the input"));
}

#[test]
fn strings_are_checked_when_read_and_bad_ones_read_as_absent() {
    let mut buf = Vec::new();
    encode_input(&Fake, &mut buf);
    // Corrupt the label value `eu` of candidate A.
    let at = buf.windows(2).position(|w| w == b"eu").unwrap();
    buf[at] = 0xff;
    let input = Input::decode(&buf).unwrap();
    let a = input.candidates.get("A").unwrap();
    assert_eq!(a.labels.get("region"), None);
    assert_eq!(a.labels.iter().count(), 0);
    assert_eq!(
        input.candidates.get("C").unwrap().labels.get("region"),
        Some("us")
    );
    assert_eq!(input.candidates.iter().count(), 3);
}
