//! `prefer-label`: on egress, prefers the candidate peers whose label `key` equals
//! `value` (config `{key: region, value: eu}`). The first preferred peer in the current
//! order of preference becomes the target, the other preferred ones come first among the
//! fallbacks. With `narrow: true` the other peers are removed (a connection is then denied
//! when no peer has the label, as the `lb` denies with no candidate). Subscribed after
//! the `lb`, it overrides the balancer's pick; before it, it chooses in its place.

use clpe_agent_sdk::serde_json::Value;
use clpe_agent_sdk::{Agent, Input, Reply, export_agent};

struct PreferLabel {
    key: String,
    value: String,
    narrow: bool,
}

impl Agent for PreferLabel {
    fn new(config: Value) -> Result<Self, String> {
        let text = |k: &str| {
            config
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(format!("config `{k}` must be a string"))
        };
        let narrow = match config.get("narrow") {
            None => false,
            Some(v) => v.as_bool().ok_or("config `narrow` must be true or false")?,
        };
        Ok(PreferLabel {
            key: text("key")?,
            value: text("value")?,
            narrow,
        })
    }

    fn decide<'a>(&mut self, input: &Input<'a>) -> Reply<'a> {
        let matches = |peer: &str| {
            input
                .candidates
                .get(peer)
                .is_some_and(|c| c.labels.get(&self.key) == Some(self.value.as_str()))
        };
        let order = input.preference();
        let preferred: Vec<&str> = order.iter().copied().filter(|p| matches(p)).collect();
        let mut reply = Reply::cont();
        if self.narrow {
            for c in input.candidates.iter().filter(|c| !matches(c.name)) {
                reply = reply.remove_peer(c.name);
            }
        }
        let Some(first) = preferred.first() else {
            return reply.annotate("prefer-label", "no candidate matches");
        };
        if input.target.is_some_and(|t| t != *first) {
            reply = reply.set_target(*first);
        }
        reply
            .prefer(preferred.iter().copied())
            .annotate("prefer-label", *first)
    }
}

export_agent!(PreferLabel);
