//! Newtypes for the names that cross module boundaries, and the engine's notion of time.
//!
//! Names are small strings kept inline (up to 23 bytes; longer ones are shared): copying
//! one into a response or a record touches no counter another thread also touches.

use smol_str::SmolStr;
use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(SmolStr);

        impl $name {
            pub fn new(s: impl AsRef<str>) -> Self {
                Self(SmolStr::new(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// Whether it is kept in place (up to 23 bytes) rather than shared.
            pub fn is_inline(&self) -> bool {
                !self.0.is_heap_allocated()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(SmolStr::new(s))
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The name of a ClusterLink gateway (a `Peer` document).
    PeerName
);
name_type!(
    /// The name of a service (an `Export`, an `Import`, a client).
    ServiceName
);
name_type!(
    /// A Kubernetes namespace.
    Namespace
);
name_type!(
    /// The name of a policy agent: a built-in one or a loaded `WasmAgent`.
    AgentName
);
name_type!(
    /// A connection's id: the caller's, or one the engine made (inline up to 23 bytes, as
    /// the engine's are below 2^44 connections with a million open: making one allocates
    /// nothing).
    ConnectionId
);

/// The order of an agent in an event's chain: 0 runs first.
pub type Priority = u32;

/// A point in time: nanoseconds since the Unix epoch. The engine never reads a clock;
/// callers pass `now` in, so tests run on a virtual clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub fn from_secs_f64(secs: f64) -> Time {
        Time((secs * 1e9) as u64)
    }
    pub fn as_nanos(self) -> u64 {
        self.0
    }
    pub fn plus_nanos(self, nanos: u64) -> Time {
        Time(self.0.saturating_add(nanos))
    }
}

/// Parses a duration like `1.5s`, `500ms`, `2m`, `1h`, `10us`, `3ns` into nanoseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit (use ns, us, ms, s, m or h)"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a number"))?;
    let scale = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ns, us, ms, s, m or h)"
            ));
        }
    };
    let nanos = value * scale;
    if !nanos.is_finite() || nanos < 0.0 || nanos > u64::MAX as f64 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(nanos as u64)
}

/// Whether two names are the same bytes. Names are short: two overlapping compares of a
/// fixed size each, where `==` on slices calls `memcmp` (a call and a dispatch on length,
/// several times per decision).
#[inline]
pub fn same(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// [`same`] on bytes.
#[inline]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    fn two<const N: usize>(a: &[u8], b: &[u8]) -> bool {
        a.first_chunk::<N>() == b.first_chunk::<N>() && a.last_chunk::<N>() == b.last_chunk::<N>()
    }
    a.len() == b.len()
        && match a.len() {
            0..4 => a.iter().zip(b).all(|(x, y)| x == y),
            4..8 => two::<4>(a, b),
            8..16 => two::<8>(a, b),
            16..=32 => two::<16>(a, b),
            _ => a == b,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_duration("2m"), Ok(120_000_000_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000_000_000));
        assert_eq!(parse_duration("7ns"), Ok(7));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }

    proptest::proptest! {
        /// `same` is `==`, at every length the chunks split on, and for strings that
        /// differ in one byte anywhere.
        #[test]
        fn same_is_equality(a in "[a-c]{0,40}", flip in 0usize..40, len in 0usize..40) {
            let b = a.clone();
            proptest::prop_assert!(same(&a, &b));
            let mut c = a.clone().into_bytes();
            if let Some(x) = c.get_mut(flip) {
                *x = b'z';
            }
            let c = String::from_utf8(c).unwrap_or_default();
            proptest::prop_assert_eq!(same(&a, &c), a == c);
            let d = a.get(..len.min(a.len())).unwrap_or_default();
            proptest::prop_assert_eq!(same(&a, d), a == d);
        }
    }
}
