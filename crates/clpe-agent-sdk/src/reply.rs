//! What the guest answers (ABI v1): a verdict and the changes it makes to the shared state.
//!
//! Layout, in order:
//!
//! ```text
//! u8 verdict (0 continue, 1 allow, 2 deny, 3 fail) · opt str reason · opt str matched_by
//! list remove · opt str target · list prefer · map annotations
//! ```
//!
//! The host applies the changes in that order (remove, target, prefer, annotations),
//! then the verdict; a reply that names a target that is not a candidate, or that breaks
//! a limit, is a failure of the agent and changes nothing.

use std::borrow::Cow;

use crate::wire::{Map, Reader, StrList, WireError, Writer};

/// The agent's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to say: the chain goes on.
    Continue = 0,
    /// Allow (later agents may still deny).
    Allow = 1,
    /// Deny: the chain ends, with `reason`.
    Deny = 2,
    /// The agent could not decide: its subscription's `failureMode` applies.
    Fail = 3,
}

/// A reply under construction, guest side.
///
/// Its strings are borrowed where they can be (from the input, or `'static`) and owned
/// where they must be (`format!`), so a typical reply allocates next to nothing.
///
/// ```
/// use clpe_agent_sdk::Reply;
/// let r = Reply::deny("outside business hours").matched_by("/business-hours").annotate("hour", "22");
/// # let _ = r;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    pub verdict: Verdict,
    pub reason: Option<Text<'a>>,
    pub matched_by: Option<Text<'a>>,
    pub remove: Vec<Text<'a>>,
    pub target: Option<Text<'a>>,
    pub prefer: Vec<Text<'a>>,
    pub annotations: Vec<(Text<'a>, Text<'a>)>,
}

/// A string of a reply: borrowed or owned.
pub type Text<'a> = Cow<'a, str>;

impl<'a> Reply<'a> {
    fn new(verdict: Verdict, reason: Option<Text<'a>>) -> Reply<'a> {
        Reply {
            verdict,
            reason,
            matched_by: None,
            remove: Vec::new(),
            target: None,
            prefer: Vec::new(),
            annotations: Vec::new(),
        }
    }

    /// Nothing to say: the chain goes on (changes to the state still apply).
    pub fn cont() -> Reply<'a> {
        Reply::new(Verdict::Continue, None)
    }

    /// Allows; later agents may still deny.
    pub fn allow() -> Reply<'a> {
        Reply::new(Verdict::Allow, None)
    }

    /// Denies with a reason (one human sentence): the chain ends.
    pub fn deny(reason: impl Into<Text<'a>>) -> Reply<'a> {
        Reply::new(Verdict::Deny, Some(reason.into()))
    }

    /// The agent cannot decide (bad input, broken invariant): the subscription's
    /// `failureMode` decides, and the monitor counts a failure.
    pub fn fail(message: impl Into<Text<'a>>) -> Reply<'a> {
        Reply::new(Verdict::Fail, Some(message.into()))
    }

    /// Names the policy that decided (`matched_by` of the response), e.g. `/my-agent`.
    pub fn matched_by(mut self, policy: impl Into<Text<'a>>) -> Reply<'a> {
        self.matched_by = Some(policy.into());
        self
    }

    /// Removes a peer from the candidates, the fallbacks and the target (the next
    /// fallback then becomes the target). Unknown peers are ignored.
    pub fn remove_peer(mut self, peer: impl Into<Text<'a>>) -> Reply<'a> {
        self.remove.push(peer.into());
        self
    }

    /// Makes a candidate the target; the previous order of preference, without it,
    /// becomes the fallbacks. Naming a peer that is not a candidate is a failure.
    pub fn set_target(mut self, peer: impl Into<Text<'a>>) -> Reply<'a> {
        self.target = Some(peer.into());
        self
    }

    /// Puts these peers first among the fallbacks, in the order given (unknown ones are
    /// ignored; unreachable peers stay after reachable ones). With no target chosen yet,
    /// chooses: the first listed candidate (a reachable one if any) becomes the target.
    pub fn prefer<S: Into<Text<'a>>>(mut self, peers: impl IntoIterator<Item = S>) -> Reply<'a> {
        self.prefer.extend(peers.into_iter().map(Into::into));
        self
    }

    /// Adds an annotation to the response (a later one with the same key wins).
    pub fn annotate(mut self, key: impl Into<Text<'a>>, value: impl Into<Text<'a>>) -> Reply<'a> {
        self.annotations.push((key.into(), value.into()));
        self
    }

    /// Encodes the reply into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        let mut w = Writer::new(out);
        w.u8(self.verdict as u8);
        w.opt_str(self.reason.as_deref());
        w.opt_str(self.matched_by.as_deref());
        w.list(|l| self.remove.iter().for_each(|p| l.item(p)));
        w.opt_str(self.target.as_deref());
        w.list(|l| self.prefer.iter().for_each(|p| l.item(p)));
        w.map(|m| self.annotations.iter().for_each(|(k, v)| m.entry(k, v)));
    }
}

/// A decoded reply, host side, borrowed from the guest's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyView<'a> {
    pub verdict: Verdict,
    pub reason: Option<&'a str>,
    pub matched_by: Option<&'a str>,
    pub remove: StrList<'a>,
    pub target: Option<&'a str>,
    pub prefer: StrList<'a>,
    pub annotations: Map<'a>,
}

impl<'a> ReplyView<'a> {
    /// Decodes and validates a whole reply (no trailing bytes).
    pub fn decode(bytes: &'a [u8]) -> Result<ReplyView<'a>, WireError> {
        let mut r = Reader::new(bytes);
        let verdict = match r.u8()? {
            0 => Verdict::Continue,
            1 => Verdict::Allow,
            2 => Verdict::Deny,
            3 => Verdict::Fail,
            _ => {
                return Err(WireError {
                    at: 0,
                    what: "unknown verdict",
                });
            }
        };
        let view = ReplyView {
            verdict,
            reason: r.opt_str()?,
            matched_by: r.opt_str()?,
            remove: r.str_list()?,
            target: r.opt_str()?,
            prefer: r.str_list()?,
            annotations: r.map()?,
        };
        r.finish()?;
        Ok(view)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        let reply = Reply::deny("no")
            .matched_by("/x")
            .remove_peer("a")
            .set_target("b")
            .prefer(["c", "d"])
            .annotate("k", "v");
        let mut buf = Vec::new();
        reply.encode(&mut buf);
        let view = ReplyView::decode(&buf).unwrap();
        assert_eq!(view.verdict, Verdict::Deny);
        assert_eq!(view.reason, Some("no"));
        assert_eq!(view.matched_by, Some("/x"));
        assert_eq!(view.remove.iter().collect::<Vec<_>>(), ["a"]);
        assert_eq!(view.target, Some("b"));
        assert_eq!(view.prefer.iter().collect::<Vec<_>>(), ["c", "d"]);
        assert_eq!(view.annotations.get("k"), Some("v"));
    }

    #[test]
    fn garbage_is_refused_never_panics() {
        let mut buf = Vec::new();
        Reply::cont().annotate("k", "v").encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(ReplyView::decode(&buf[..cut]).is_err());
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(
            ReplyView::decode(&longer).unwrap_err().what,
            "trailing bytes after the message"
        );
        assert_eq!(ReplyView::decode(&[9]).unwrap_err().what, "unknown verdict");
        // Every byte string of length up to 3, and some noise, decodes or fails cleanly.
        for a in 0..=255u8 {
            for b in [0u8, 1, 2, 255] {
                let _ = ReplyView::decode(&[a, b, b]);
            }
        }
    }
}
