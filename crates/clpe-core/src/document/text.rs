//! A document's canonical JSON, kept compact.
//!
//! Every applied document is kept as canonical JSON (what `get` and the store return,
//! and how an unchanged re-apply is recognised). Most of those bytes are the same few
//! field names and well-known keys, document after document. JSON text never holds a
//! raw control character other than whitespace, so those byte values stand for the
//! common phrases below: a policy's text shrinks to about a third, with no allocation
//! beyond the result and a decode that is a single pass.

use std::sync::Arc;

/// The phrases, longest first where one starts another. Codes are the bytes `0x01..`
/// that are neither tab, line feed nor carriage return.
const PHRASES: [&str; 28] = [
    "{\"apiVersion\":\"clusterlink.net/v1alpha1\",\"kind\":\"",
    "\",\"metadata\":{\"name\":\"",
    "\",\"namespace\":\"",
    "\"},\"spec\":",
    "{\"workloadSelector\": {\"matchLabels\": {\"",
    "{\"workloadSelector\":{\"matchLabels\":{\"",
    "{\"workloadSelector\": {}}",
    "{\"workloadSelector\":{}}",
    "client.clusterlink.net/service",
    "export.clusterlink.net/name",
    "peer.clusterlink.net/labels.",
    "peer.clusterlink.net/name",
    "export.clusterlink.net/",
    "{\"action\": \"allow\", \"from\": [",
    "{\"action\": \"deny\", \"from\": [",
    "{\"action\":\"allow\",\"from\":[",
    "{\"action\":\"deny\",\"from\":[",
    "}}}], \"to\": [",
    "}}}],\"to\":[",
    "}}}]}}",
    "AccessPolicy",
    "\"matchExpressions\":",
    "\"operator\":\"",
    "\"values\":[",
    "\"key\":\"",
    "default",
    "\", \"",
    "\": \"",
];

/// The code byte of phrase `i`.
const fn code(i: usize) -> u8 {
    let mut c = i as u8 + 1;
    if c >= 0x09 {
        c += 2; // skip tab and line feed
    }
    if c >= 0x0d {
        c += 1; // skip carriage return
    }
    c
}

/// The phrase a byte stands for, if it is a code.
fn phrase_of(b: u8) -> Option<&'static str> {
    let i = match b {
        0x01..=0x08 => b - 1,
        0x0b..=0x0c => b - 3,
        0x0e..=0x1f => b - 4,
        _ => return None,
    };
    PHRASES.get(i as usize).copied()
}

/// Canonical JSON, encoded.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Canonical(Arc<[u8]>);

impl Canonical {
    pub fn new(text: &str) -> Canonical {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len() / 2);
        let mut i = 0;
        while let Some(rest) = bytes.get(i..) {
            let Some(&b) = rest.first() else { break };
            let found = if matches!(
                b,
                b'{' | b'"' | b'}' | b'a' | b'c' | b'd' | b'e' | b'p' | b'A'
            ) {
                PHRASES.iter().position(|p| rest.starts_with(p.as_bytes()))
            } else {
                None
            };
            match found {
                Some(p) => {
                    out.push(code(p));
                    i += PHRASES.get(p).map_or(1, |p| p.len());
                }
                None => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        Canonical(out.into())
    }

    /// The JSON text.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(self.0.len() * 3);
        let mut plain = 0;
        for (i, &b) in self.0.iter().enumerate() {
            if let Some(p) = phrase_of(b) {
                out.push_str(&String::from_utf8_lossy(
                    self.0.get(plain..i).unwrap_or_default(),
                ));
                out.push_str(p);
                plain = i + 1;
            }
        }
        out.push_str(&String::from_utf8_lossy(
            self.0.get(plain..).unwrap_or_default(),
        ));
        out
    }

    /// Bytes held (encoded).
    pub fn encoded_len(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for Canonical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

impl std::fmt::Display for Canonical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

impl From<&str> for Canonical {
    fn from(text: &str) -> Canonical {
        Canonical::new(text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn codes_skip_whitespace_and_are_distinct() {
        let codes: Vec<u8> = (0..PHRASES.len()).map(code).collect();
        for (i, c) in codes.iter().enumerate() {
            assert!(*c < 0x20 && *c != 0 && ![b'\t', b'\n', b'\r'].contains(c));
            assert_eq!(phrase_of(*c), Some(PHRASES[i]));
        }
        let mut sorted = codes.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len());
    }

    #[test]
    fn a_policy_shrinks_and_comes_back() {
        let text = r#"{"apiVersion":"clusterlink.net/v1alpha1","kind":"AccessPolicy","metadata":{"name":"rule-000001","namespace":"default"},"spec":{"action": "allow", "from": [{"workloadSelector": {"matchLabels": {"client.clusterlink.net/service": "svc-1503"}}}], "to": [{"workloadSelector": {"matchLabels": {"export.clusterlink.net/name": "svc-2106"}}}]}}"#;
        let c = Canonical::new(text);
        assert_eq!(c.text(), text);
        assert!(
            c.encoded_len() * 3 < text.len(),
            "{} of {}",
            c.encoded_len(),
            text.len()
        );
    }

    proptest! {
        /// Any JSON text (and any text without raw control characters but whitespace)
        /// decodes to itself; equal texts encode equally, different ones differently.
        #[test]
        fn round_trips(parts in prop::collection::vec(prop::sample::select(PHRASES.to_vec()), 0..8), filler in "[ -~\t\n\r]{0,20}", other in "[ -~]{0,40}") {
            let text = format!("{filler}{}{filler}", parts.join(&filler));
            let c = Canonical::new(&text);
            prop_assert_eq!(c.text(), text.clone());
            prop_assert_eq!(Canonical::new(&other) == c, other == text);
        }
    }
}
