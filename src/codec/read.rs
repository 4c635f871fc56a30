//! A direct Avro binary reader for the record the scheduler reads for every task: the
//! task. `apache-avro`'s serde path resolves each field by name and builds the values as
//! it goes; this reads the same schema (`schemas/task.avsc`, the only one whose
//! fingerprint is accepted) straight off the bytes. The tests hold it to `apache-avro`'s
//! result, value for value and error for error, on valid and arbitrary input.
//!
//! Every length is checked against the bytes left before anything is allocated, so a
//! hostile length cannot make it reserve more than the record's own size.

use std::collections::BTreeMap;

use super::task::Task;

/// Why bytes are not a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ReadError {
    /// The bytes end inside a value.
    Truncated,
    /// A variable-length integer longer than a `long`.
    LongOverflow,
    /// A negative length or count.
    NegativeLength(i64),
    /// A union branch the schema does not have.
    UnionBranch(i64),
    /// A string that is not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Truncated => write!(f, "the record ends inside a value"),
            ReadError::LongOverflow => write!(f, "a variable-length integer overflows a long"),
            ReadError::NegativeLength(n) => write!(f, "negative length {n}"),
            ReadError::UnionBranch(i) => write!(f, "union branch {i} out of range"),
            ReadError::NotUtf8 => write!(f, "a string is not UTF-8"),
        }
    }
}

/// Reads values off the front of a byte slice.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn long(&mut self) -> Result<i64, ReadError> {
        let mut z: u64 = 0;
        // At most ten bytes; bits past the 64th are dropped, as `apache-avro` does.
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.rest.split_first().ok_or(ReadError::Truncated)?;
            self.rest = rest;
            z |= u64::from(b & 0x7f).wrapping_shl(shift);
            if b & 0x80 == 0 {
                // Zig-zag: the sign is the lowest bit.
                return Ok(((z >> 1) as i64) ^ (z & 1).wrapping_neg() as i64);
            }
        }
        Err(ReadError::LongOverflow)
    }

    /// A length or count: not negative, and (for byte lengths) not past the end.
    fn len(&mut self) -> Result<usize, ReadError> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| ReadError::NegativeLength(n))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ReadError> {
        let n = self.len()?;
        let (b, rest) = self.rest.split_at_checked(n).ok_or(ReadError::Truncated)?;
        self.rest = rest;
        Ok(b)
    }

    fn str(&mut self) -> Result<&'a str, ReadError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| ReadError::NotUtf8)
    }

    /// A `["null", T]` union.
    fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, ReadError>,
    ) -> Result<Option<T>, ReadError> {
        match self.long()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(ReadError::UnionBranch(other)),
        }
    }

    /// A map of strings: blocks of a count and its entries, ended by a count of zero; a
    /// negative count is followed by the block's size in bytes.
    fn string_map(&mut self) -> Result<BTreeMap<String, String>, ReadError> {
        let mut map = BTreeMap::new();
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(map);
            }
            if count < 0 {
                // The block's size in bytes, for skipping it; read and not needed.
                self.long()?;
            }
            for _ in 0..count.unsigned_abs() {
                let k = self.str()?;
                let v = self.str()?;
                map.insert(k.to_string(), v.to_string());
            }
        }
    }
}

/// Reads an Avro-encoded task datum (after any single-object header) and what follows it.
pub(super) fn task(datum: &[u8]) -> Result<(Task, &[u8]), ReadError> {
    let mut r = Reader { rest: datum };
    let task = Task {
        id: r.str()?.to_string(),
        tenant: r.optional(|r| r.str().map(str::to_string))?,
        function: r.str()?.to_string(),
        payload: r.bytes()?.to_vec(),
        headers: r.string_map()?,
        submitted_at: r.optional(Reader::long)?,
        not_before: r.optional(Reader::long)?,
    };
    Ok((task, r.rest))
}
