//! The texts a response carries: its reason, the policy that matched, the agent that
//! decided.
//!
//! A decision copies a policy's texts into its response. Shared texts (`Arc<str>`) made
//! that copy two atomic additions on lines of memory no other part of the decision
//! touches, among thousands of policies mostly not in cache; an atomic addition waits for
//! its line, and everything after it waits too. A [`Text`] of up to [`INLINE`] bytes is
//! kept in place instead: copying it reads the bytes beside the policy's other fields, and
//! writes nothing shared. Longer texts are shared as before.
//!
//! A text the engine makes for a policy or an agent also carries an *origin*: a number no
//! other text made in the process has. The monitor counts by origin (no hashing of the
//! text, no reference to keep), and by the text itself for texts without one.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest text kept inline: with its length, its kind and its origin, a text takes
/// 72 bytes. Enough for the sentences the engine makes for short policy names, and for
/// every fixed one (the default deny's is 49 bytes).
pub const INLINE: usize = 52;

#[derive(Clone)]
enum Repr {
    Inline(ArrayString<INLINE>),
    Shared(Arc<str>),
}

/// A text, kept inline when short (see the module's documentation). Equality, order and
/// hashing are the text's: the origin is not part of them.
#[derive(Clone)]
pub struct Text {
    repr: Repr,
    /// 0: none.
    origin: u64,
}

impl Default for Text {
    /// The empty text, without an origin.
    fn default() -> Text {
        Text {
            repr: Repr::Inline(ArrayString::new()),
            origin: 0,
        }
    }
}

/// The next origin handed out; 0 is never one.
static ORIGINS: AtomicU64 = AtomicU64::new(1);

impl Text {
    /// A text without an origin.
    pub fn new(s: &str) -> Text {
        let repr = match ArrayString::from(s) {
            Ok(inline) => Repr::Inline(inline),
            Err(_) => Repr::Shared(Arc::from(s)),
        };
        Text { repr, origin: 0 }
    }

    /// A text with an origin of its own: for names the engine keeps (a policy's, an
    /// agent's) and counts decisions by.
    pub fn named(s: &str) -> Text {
        Text {
            origin: ORIGINS.fetch_add(1, Ordering::Relaxed),
            ..Text::new(s)
        }
    }

    /// `a` then `b`, without an origin: made in place when short enough.
    pub fn joined(a: &str, b: &str) -> Text {
        let mut inline = ArrayString::new();
        let repr = match inline.try_push_str(a).and_then(|()| inline.try_push_str(b)) {
            Ok(()) => Repr::Inline(inline),
            Err(_) => Repr::Shared(Arc::from([a, b].concat())),
        };
        Text { repr, origin: 0 }
    }

    pub fn as_str(&self) -> &str {
        match &self.repr {
            Repr::Inline(s) => s.as_str(),
            Repr::Shared(s) => s,
        }
    }

    /// The text's origin, if it has one: equal origins are equal texts.
    pub fn origin(&self) -> Option<u64> {
        (self.origin != 0).then_some(self.origin)
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Text) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text::new(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::new(&s)
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        t.as_str().to_owned()
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        String::deserialize(d).map(Text::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_takes_72_bytes() {
        assert_eq!(std::mem::size_of::<Text>(), 72);
    }

    #[test]
    fn short_texts_are_inline_and_long_ones_shared_with_the_same_content() {
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 300] {
            let s: String = "é".repeat(len / 2) + &"x".repeat(len % 2);
            for t in [Text::new(&s), Text::from(s.clone()), Text::named(&s)] {
                assert_eq!(t.as_str(), s);
                assert_eq!(
                    matches!(t.repr, Repr::Inline(_)),
                    s.len() <= INLINE,
                    "{len}"
                );
                assert_eq!(String::from(t.clone()), s);
            }
        }
    }

    #[test]
    fn origins_are_unique_and_not_part_of_equality() {
        let (a, b, plain) = (Text::named("p"), Text::named("p"), Text::new("p"));
        assert!(a.origin().is_some() && b.origin().is_some());
        assert_ne!(a.origin(), b.origin());
        assert_eq!(plain.origin(), None);
        assert_eq!(a.clone().origin(), a.origin());
        assert!(a == b && a == plain && plain == "p");
        use std::hash::BuildHasher;
        let hash = |t: &Text| rustc_hash::FxBuildHasher.hash_one(t);
        assert_eq!(hash(&a), hash(&plain));
        assert_eq!(hash(&a), rustc_hash::FxBuildHasher.hash_one("p"));
    }

    #[test]
    fn a_text_is_a_json_string() {
        let long = "y".repeat(INLINE + 10);
        for s in ["", "allowed by AccessPolicy default/x", long.as_str()] {
            let json = serde_json::to_string(&Text::named(s)).ok();
            assert_eq!(json, serde_json::to_string(s).ok());
            let back: Option<Text> = json.and_then(|j| serde_json::from_str(&j).ok());
            assert_eq!(back.as_deref(), Some(s));
        }
        assert!(serde_json::from_str::<Text>("3").is_err());
    }
}
