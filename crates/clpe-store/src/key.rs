//! The byte encoding of a [`DocKey`] used as a storage key.
//!
//! Byte-wise order of encodings is the order of `(kind, namespace, name)`, so a backend
//! with plain byte keys (redb here, a distributed store later) lists documents in key
//! order. A length prefix would not sort that way (`"b"` would come before `"aa"`), so
//! each part is escaped and terminated instead: a `0x00` byte is written `00 FF`, and a
//! part ends with `00 01`. The terminator sorts below every escaped or plain byte that
//! could follow at the same position, so a part sorts before any longer part it
//! prefixes, and no two keys share an encoding.

use crate::DocKey;

const ESCAPE: u8 = 0x00;
const ESCAPED_NUL: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// The storage key of `key`.
pub(crate) fn encode(key: &DocKey) -> Vec<u8> {
    let parts = [&key.kind, &key.namespace, &key.name];
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 2).sum());
    for part in parts {
        for &byte in part.as_bytes() {
            out.push(byte);
            if byte == ESCAPE {
                out.push(ESCAPED_NUL);
            }
        }
        out.extend_from_slice(&[ESCAPE, TERMINATOR]);
    }
    out
}

/// The key that `encode` turned into `bytes`, or why `bytes` is not such an encoding.
pub(crate) fn decode(bytes: &[u8]) -> Result<DocKey, String> {
    let mut iter = bytes.iter().copied();
    let kind = decode_part(&mut iter, "kind")?;
    let namespace = decode_part(&mut iter, "namespace")?;
    let name = decode_part(&mut iter, "name")?;
    if iter.next().is_some() {
        return Err("trailing bytes after the name".to_owned());
    }
    Ok(DocKey {
        kind,
        namespace,
        name,
    })
}

fn decode_part(iter: &mut impl Iterator<Item = u8>, part: &str) -> Result<String, String> {
    let mut raw = Vec::new();
    loop {
        match iter.next() {
            None => return Err(format!("the {part} is not terminated")),
            Some(ESCAPE) => match iter.next() {
                Some(ESCAPED_NUL) => raw.push(ESCAPE),
                Some(TERMINATOR) => break,
                Some(other) => return Err(format!("bad escape `00 {other:02x}` in the {part}")),
                None => return Err(format!("the {part} ends inside an escape")),
            },
            Some(byte) => raw.push(byte),
        }
    }
    String::from_utf8(raw).map_err(|_| format!("the {part} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn part() -> impl Strategy<Value = String> {
        // Small alphabets make prefixes, NULs and equal parts common.
        prop_oneof!["[ab\u{0}\u{1}\u{ff}]{0,4}", any::<String>(),]
    }

    fn doc_key() -> impl Strategy<Value = DocKey> {
        (part(), part(), part()).prop_map(|(k, ns, n)| DocKey::new(k, ns, n))
    }

    proptest! {
        #[test]
        fn round_trips(key in doc_key()) {
            prop_assert_eq!(decode(&encode(&key)), Ok(key));
        }

        #[test]
        fn byte_order_is_key_order(a in doc_key(), b in doc_key()) {
            prop_assert_eq!(encode(&a).cmp(&encode(&b)), a.cmp(&b));
        }
    }

    #[test]
    fn order_is_not_by_length() {
        let short = DocKey::new("b", "", "x");
        let long = DocKey::new("aa", "", "x");
        assert!(encode(&long) < encode(&short));
    }

    #[test]
    fn parts_cannot_be_confused() {
        let a = DocKey::new("a\u{0}", "b", "c");
        let b = DocKey::new("a", "\u{0}b", "c");
        assert_ne!(encode(&a), encode(&b));
    }

    #[test]
    fn rejects_malformed_bytes() {
        for bad in [
            &b""[..],
            b"kind",
            b"k\x00\x01ns\x00\x01",
            b"k\x00\x01ns\x00\x01n\x00\x01extra",
            b"k\x00\x02\x00\x01\x00\x01",
            b"k\x00",
            b"\xff\xfe\x00\x01\x00\x01\x00\x01",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} decoded");
        }
    }
}
