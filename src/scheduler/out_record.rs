//! A record to produce, in one allocation: its value, key and header values share one
//! buffer, and the header list is inline.
//!
//! The engine builds two or three records per task and the publisher thread drops them
//! once librdkafka has copied them; with each key and header value a `String` of its own
//! that was five to seven allocations a record, each freed across threads.

use std::sync::Arc;

/// Headers held inline; more (none of the records built today has more) go to a `Vec`.
const INLINE_HEADERS: usize = 8;

/// An explicit partition and record timestamp (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub partition: i32,
    pub timestamp: Option<i64>,
}

/// A header's value: a fixed string, or a range of the record's buffer.
#[derive(Debug, Clone, Copy)]
enum Value {
    Fixed(&'static str),
    Bytes { start: u32, end: u32 },
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: Arc<str>,
    /// Where and when it goes when that is chosen (a task forwarded to an overflow
    /// queue keeps its partition's order and its record time); else by key, now.
    pub place: Option<Place>,
    /// The value, then the key, then each copied header value.
    bytes: Vec<u8>,
    value_end: u32,
    key_end: u32,
    inline: [(&'static str, Value); INLINE_HEADERS],
    inline_len: u8,
    more: Vec<(&'static str, Value)>,
}

impl OutRecord {
    /// A record of `value` keyed by `key` (the task id, so a task's records share a
    /// partition and compaction keeps its last). `room` is what the headers will copy, so
    /// the buffer grows once.
    pub fn new(topic: Arc<str>, mut value: Vec<u8>, key: &str, room: usize) -> Self {
        let value_end = offset(value.len());
        value.reserve(key.len().saturating_add(room));
        value.extend_from_slice(key.as_bytes());
        let key_end = offset(value.len());
        Self {
            topic,
            place: None,
            bytes: value,
            value_end,
            key_end,
            inline: [("", Value::Fixed("")); INLINE_HEADERS],
            inline_len: 0,
            more: Vec::new(),
        }
    }

    /// Sends the record to this partition, at this time.
    pub fn placed(mut self, place: Place) -> Self {
        self.place = Some(place);
        self
    }

    /// Adds a header whose value is fixed (not copied).
    pub fn fixed(&mut self, name: &'static str, value: &'static str) -> &mut Self {
        self.push(name, Value::Fixed(value))
    }

    /// Adds a header, copying its value into the record's buffer.
    pub fn header(&mut self, name: &'static str, value: &str) -> &mut Self {
        let start = offset(self.bytes.len());
        self.bytes.extend_from_slice(value.as_bytes());
        let end = offset(self.bytes.len());
        self.push(name, Value::Bytes { start, end })
    }

    /// Adds a header whose value is the key (not copied again).
    pub fn key_header(&mut self, name: &'static str) -> &mut Self {
        let (start, end) = (self.value_end, self.key_end);
        self.push(name, Value::Bytes { start, end })
    }

    /// Adds a header when there is a value.
    pub fn header_opt(&mut self, name: &'static str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.header(name, v),
            None => self,
        }
    }

    fn push(&mut self, name: &'static str, value: Value) -> &mut Self {
        match self.inline.get_mut(usize::from(self.inline_len)) {
            Some(slot) => {
                *slot = (name, value);
                self.inline_len = self.inline_len.saturating_add(1);
            }
            None => self.more.push((name, value)),
        }
        self
    }

    pub fn value(&self) -> &[u8] {
        self.slice(0, self.value_end)
    }

    pub fn key(&self) -> &[u8] {
        self.slice(self.value_end, self.key_end)
    }

    /// Header names and values, in the order added.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &[u8])> + '_ {
        let inline = self
            .inline
            .get(..usize::from(self.inline_len))
            .unwrap_or(&[]);
        inline.iter().chain(&self.more).map(|(name, v)| {
            let bytes = match *v {
                Value::Fixed(s) => s.as_bytes(),
                Value::Bytes { start, end } => self.slice(start, end),
            };
            (*name, bytes)
        })
    }

    /// The value of header `name` (the first), as text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    pub fn header_count(&self) -> usize {
        usize::from(self.inline_len).saturating_add(self.more.len())
    }

    fn slice(&self, start: u32, end: u32) -> &[u8] {
        let (start, end) = (start as usize, end as usize);
        self.bytes.get(start..end).unwrap_or(&[])
    }
}

/// A buffer position; records are far below 4 GiB (Kafka's own limit is 2 GiB), and a
/// position past it reads as empty rather than wrapping.
fn offset(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_key_and_headers_read_back_as_built_in_order() {
        let mut r = OutRecord::new("t".into(), b"value".to_vec(), "task-1", 16);
        r.fixed("ct", "avro")
            .key_header("id")
            .header("tenant", "acme")
            .header_opt("function", None)
            .header_opt("trace", Some("00-ab"));
        assert_eq!(r.value(), b"value");
        assert_eq!(r.key(), b"task-1");
        let headers: Vec<_> = r.headers().collect();
        assert_eq!(
            headers,
            [
                ("ct", &b"avro"[..]),
                ("id", b"task-1"),
                ("tenant", b"acme"),
                ("trace", b"00-ab")
            ]
        );
        assert_eq!(r.header_str("tenant"), Some("acme"));
        assert_eq!(r.header_count(), 4);
    }

    #[test]
    fn headers_past_the_inline_ones_are_kept() {
        let mut r = OutRecord::new("t".into(), Vec::new(), "", 0);
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        for (i, n) in names.iter().enumerate() {
            r.header(n, &i.to_string());
        }
        assert_eq!(r.header_count(), names.len());
        let got: Vec<_> = r.headers().map(|(n, v)| (n, v.to_vec())).collect();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(got[i], (*n, i.to_string().into_bytes()));
        }
        assert_eq!(r.value(), b"");
        assert_eq!(r.key(), b"");
    }

    #[test]
    fn an_empty_value_and_key_stay_apart_from_header_bytes() {
        let mut r = OutRecord::new("t".into(), Vec::new(), "k", 0);
        r.header("x", "yz");
        assert_eq!(r.value(), b"");
        assert_eq!(r.key(), b"k");
        assert_eq!(r.header_str("x"), Some("yz"));
    }
}
