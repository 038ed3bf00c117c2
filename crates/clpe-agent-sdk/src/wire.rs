//! The primitives of the ABI v1 encoding: little-endian integers and length-prefixed
//! UTF-8 strings, with maps and lists as a `u32` count followed by their items.
//!
//! Decoding checks a section's layout and bounds once and keeps the section's bytes;
//! [`Map`] and [`StrList`] then read those bytes in place without allocating, checking
//! UTF-8 only for the strings read (a lookup compares bytes). A reply is decoded with
//! [`Reader::map`] and [`Reader::str_list`], which check every string at once.

use std::fmt;

/// Why bytes are not a valid ABI v1 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    /// Offset of the byte where decoding stopped.
    pub at: usize,
    pub what: &'static str,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

impl std::error::Error for WireError {}

/// Appends primitives to a buffer.
#[derive(Debug)]
pub struct Writer<'w> {
    pub(crate) buf: &'w mut Vec<u8>,
}

impl<'w> Writer<'w> {
    #[inline]
    pub fn new(buf: &'w mut Vec<u8>) -> Self {
        Writer { buf }
    }

    #[inline]
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    #[inline]
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A string: its length as `u32`, then its bytes. Longer than `u32::MAX` is cut
    /// (at a character boundary), which no valid message comes near.
    #[inline]
    pub fn str(&mut self, s: &str) {
        let mut end = s.len().min(u32::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let s = s.get(..end).unwrap_or("");
        self.u32(end as u32);
        self.buf.extend_from_slice(s.as_bytes());
    }

    #[inline]
    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }

    #[inline]
    pub fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }

    /// Reserves a `u32` count, returning where to patch it.
    #[inline]
    pub(crate) fn count_slot(&mut self) -> usize {
        let at = self.buf.len();
        self.u32(0);
        at
    }

    #[inline]
    pub(crate) fn patch_count(&mut self, at: usize, count: u32) {
        if let Some(slot) = self.buf.get_mut(at..at + 4) {
            slot.copy_from_slice(&count.to_le_bytes());
        }
    }
}

/// Reads primitives from a message, tracking the offset for error messages.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    fn err(&self, what: &'static str) -> WireError {
        WireError { at: self.pos, what }
    }

    #[inline]
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.err(what))?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(|| self.err(what))?;
        self.pos = end;
        Ok(bytes)
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8, WireError> {
        let b = self.take(1, "truncated reading a byte")?;
        b.first()
            .copied()
            .ok_or_else(|| self.err("truncated reading a byte"))
    }

    #[inline]
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4, "truncated reading a u32")?;
        let arr: [u8; 4] = b
            .try_into()
            .map_err(|_| self.err("truncated reading a u32"))?;
        Ok(u32::from_le_bytes(arr))
    }

    #[inline]
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8, "truncated reading a u64")?;
        let arr: [u8; 8] = b
            .try_into()
            .map_err(|_| self.err("truncated reading a u64"))?;
        Ok(u64::from_le_bytes(arr))
    }

    #[inline]
    pub fn str(&mut self) -> Result<&'a str, WireError> {
        let at = self.pos + 4;
        let bytes = self.raw_str()?;
        std::str::from_utf8(bytes).map_err(|_| WireError {
            at,
            what: "a string is not valid UTF-8",
        })
    }

    /// A string's bytes, not checked for UTF-8: for sections validated already, where
    /// only the bytes are compared.
    #[inline]
    pub fn raw_str(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.u32()? as usize;
        self.take(len, "a string runs past the end")
    }

    /// Skips a list of strings, checking its bounds but not its UTF-8.
    pub(crate) fn skip_list(&mut self) -> Result<StrList<'a>, WireError> {
        let start = self.pos;
        for _ in 0..self.u32()? {
            self.raw_str()?;
        }
        Ok(StrList {
            raw: self.since(start),
        })
    }

    /// Skips a map, checking its bounds but not its UTF-8 (strings are checked when
    /// read).
    pub(crate) fn skip_map(&mut self) -> Result<Map<'a>, WireError> {
        let start = self.pos;
        for _ in 0..self.u32()? {
            self.raw_str()?;
            self.raw_str()?;
        }
        Ok(Map {
            raw: self.since(start),
        })
    }

    #[inline]
    pub fn flag(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError {
                at: self.pos - 1,
                what: "a presence flag is neither 0 nor 1",
            }),
        }
    }

    #[inline]
    pub fn opt_str(&mut self) -> Result<Option<&'a str>, WireError> {
        if self.flag()? {
            self.str().map(Some)
        } else {
            Ok(None)
        }
    }

    #[inline]
    pub fn opt_u64(&mut self) -> Result<Option<u64>, WireError> {
        if self.flag()? {
            self.u64().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Validates a map section and returns it.
    #[inline]
    pub fn map(&mut self) -> Result<Map<'a>, WireError> {
        let start = self.pos;
        let count = self.u32()?;
        for _ in 0..count {
            self.str()?;
            self.str()?;
        }
        Ok(Map {
            raw: self.buf.get(start..self.pos).unwrap_or(&[]),
        })
    }

    /// Validates a list-of-strings section and returns it.
    pub fn str_list(&mut self) -> Result<StrList<'a>, WireError> {
        let start = self.pos;
        let count = self.u32()?;
        for _ in 0..count {
            self.str()?;
        }
        Ok(StrList {
            raw: self.buf.get(start..self.pos).unwrap_or(&[]),
        })
    }

    /// The bytes from `start` to the current position.
    #[inline]
    pub(crate) fn since(&self, start: usize) -> &'a [u8] {
        self.buf.get(start..self.pos).unwrap_or(&[])
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.err("trailing bytes after the message"))
        }
    }
}

/// A string map (`u32` count, then key, value, key, value...), in the order
/// written. Keys are unique when the host wrote it; a reply may repeat them (last wins).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Map<'a> {
    raw: &'a [u8],
}

impl<'a> Map<'a> {
    pub fn len(&self) -> usize {
        Reader::new(self.raw).u32().unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> MapIter<'a> {
        let mut r = Reader::new(self.raw);
        let left = r.u32().unwrap_or(0);
        MapIter { r, left }
    }

    /// The value of `key`, if present. Compares bytes: only the value found is
    /// converted.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&'a str> {
        let mut r = Reader::new(self.raw);
        for _ in 0..r.u32().ok()? {
            let k = r.raw_str().ok()?;
            let v = r.raw_str().ok()?;
            if k == key.as_bytes() {
                return std::str::from_utf8(v).ok();
            }
        }
        None
    }
}

pub struct MapIter<'a> {
    r: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for MapIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // The section's bounds were checked when decoded: these reads cannot fail. A pair
        // that is not UTF-8 (only a broken host writes one) is skipped.
        while self.left > 0 {
            self.left -= 1;
            let k = self.r.raw_str().ok()?;
            let v = self.r.raw_str().ok()?;
            if let (Ok(k), Ok(v)) = (std::str::from_utf8(k), std::str::from_utf8(v)) {
                return Some((k, v));
            }
        }
        None
    }
}

/// A list of strings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrList<'a> {
    raw: &'a [u8],
}

impl<'a> StrList<'a> {
    pub fn len(&self) -> usize {
        Reader::new(self.raw).u32().unwrap_or(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> StrListIter<'a> {
        let mut r = Reader::new(self.raw);
        let left = r.u32().unwrap_or(0);
        StrListIter { r, left }
    }

    pub fn contains(&self, s: &str) -> bool {
        let mut r = Reader::new(self.raw);
        let count = r.u32().unwrap_or(0);
        (0..count)
            .map_while(|_| r.raw_str().ok())
            .any(|x| x == s.as_bytes())
    }
}

pub struct StrListIter<'a> {
    r: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for StrListIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        while self.left > 0 {
            self.left -= 1;
            if let Ok(s) = std::str::from_utf8(self.r.raw_str().ok()?) {
                return Some(s);
            }
        }
        None
    }
}

/// Writes a map: entries are counted as they are pushed.
pub struct MapWriter<'w, 'b> {
    w: &'w mut Writer<'b>,
    count: u32,
}

impl MapWriter<'_, '_> {
    #[inline]
    pub fn entry(&mut self, key: &str, value: &str) {
        self.w.str(key);
        self.w.str(value);
        self.count += 1;
    }
}

/// Writes a list of strings.
pub struct ListWriter<'w, 'b> {
    w: &'w mut Writer<'b>,
    count: u32,
}

impl ListWriter<'_, '_> {
    #[inline]
    pub fn item(&mut self, s: &str) {
        self.w.str(s);
        self.count += 1;
    }
}

impl<'b> Writer<'b> {
    /// Writes a map whose entries `fill` pushes.
    #[inline]
    pub fn map(&mut self, fill: impl FnOnce(&mut MapWriter<'_, 'b>)) {
        let at = self.count_slot();
        let mut m = MapWriter { w: self, count: 0 };
        fill(&mut m);
        let count = m.count;
        self.patch_count(at, count);
    }

    /// Writes a list whose items `fill` pushes.
    #[inline]
    pub fn list(&mut self, fill: impl FnOnce(&mut ListWriter<'_, 'b>)) {
        let at = self.count_slot();
        let mut l = ListWriter { w: self, count: 0 };
        fill(&mut l);
        let count = l.count;
        self.patch_count(at, count);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_lists_round_trip() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.map(|m| {
            m.entry("a", "1");
            m.entry("ünï", "cödé");
        });
        w.list(|l| l.item("x"));
        w.opt_str(None);
        w.opt_u64(Some(7));
        let mut r = Reader::new(&buf);
        let m = r.map().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("ünï"), Some("cödé"));
        assert_eq!(m.get("b"), None);
        assert_eq!(r.str_list().unwrap().iter().collect::<Vec<_>>(), vec!["x"]);
        assert_eq!(r.opt_str().unwrap(), None);
        assert_eq!(r.opt_u64().unwrap(), Some(7));
        r.finish().unwrap();
    }

    #[test]
    fn truncation_and_bad_utf8_are_errors() {
        let mut buf = Vec::new();
        Writer::new(&mut buf).str("hello");
        for cut in 0..buf.len() {
            assert!(Reader::new(&buf[..cut]).str().is_err(), "cut at {cut}");
        }
        buf[4] = 0xff;
        assert_eq!(
            Reader::new(&buf).str().unwrap_err().what,
            "a string is not valid UTF-8"
        );
        // A count far larger than the message.
        let huge = u32::MAX.to_le_bytes();
        assert!(Reader::new(&huge).map().is_err());
        assert!(Reader::new(&huge).str_list().is_err());
    }
}
