//! Reads a partition's log segments as the broker wrote them (record batch format v2,
//! the only one Kafka 4 writes) to see its transaction markers: which producer ended
//! each transaction on the partition, and how. What no client API shows.

use std::path::Path;

/// A control batch: a transaction ended on this partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Offset of the marker.
    pub offset: i64,
    /// The producer whose transaction it ends.
    pub producer_id: i64,
    /// Commit (else abort).
    pub commit: bool,
}

/// Bytes of a batch header before its records.
const HEADER: usize = 61;
/// `attributes` bits: transactional, control.
const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

fn be_i64(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_i16(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// A zigzag varint at `*at`, moving past it.
fn varint(b: &[u8], at: &mut usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

/// The control record's type (0 abort, 1 commit): its key is `version: i16, type: i16`.
fn control_type(record: &[u8]) -> Option<i16> {
    let mut at = 0;
    varint(record, &mut at)?; // length
    at += 1; // attributes
    varint(record, &mut at)?; // timestamp delta
    varint(record, &mut at)?; // offset delta
    let key_len = varint(record, &mut at)?;
    if key_len < 4 {
        return None;
    }
    be_i16(record, at + 2)
}

/// The markers in one segment file's bytes, in order; a batch cut off at the end (still
/// being written) is left out.
pub fn markers_in(log: &[u8]) -> Vec<Marker> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(base), Some(len)) = (be_i64(log, at), be_i32(log, at + 8)) {
        let Ok(len) = usize::try_from(len) else { break };
        let end = at + 12 + len;
        let Some(batch) = log.get(at..end) else { break };
        let attributes = be_i16(batch, 21).unwrap_or(0);
        if attributes & CONTROL != 0 && attributes & TRANSACTIONAL != 0 {
            if let (Some(producer_id), Some(kind)) = (
                be_i64(batch, 43),
                batch.get(HEADER..).and_then(control_type),
            ) {
                out.push(Marker {
                    offset: base,
                    producer_id,
                    commit: kind == 1,
                });
            }
        }
        at = end;
    }
    out
}

/// The markers of the partition whose folder is `dir` (`<data>/<topic>-<partition>`),
/// in offset order.
pub fn markers(dir: &Path) -> Vec<Marker> {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    // Segment files are named by their base offset, zero-padded: names sort by offset.
    logs.sort();
    logs.iter()
        .flat_map(|p| markers_in(&std::fs::read(p).unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control batch as Kafka writes it: one record, key `0, kind`.
    fn control_batch(offset: i64, producer_id: i64, kind: i16) -> Vec<u8> {
        let mut record = vec![0u8]; // attributes
        record.extend([0, 0]); // timestamp delta 0, offset delta 0 (zigzag)
        record.push(8); // key length 4 (zigzag)
        record.extend(0i16.to_be_bytes());
        record.extend(kind.to_be_bytes());
        record.extend([12, 0, 0, 0, 0, 0]); // value length 6, its bytes
        record.push(0); // no headers
        let mut rec = vec![(record.len() as u8) << 1];
        rec.extend(record);
        let mut b = Vec::new();
        b.extend(offset.to_be_bytes());
        b.extend(((HEADER - 12 + rec.len()) as i32).to_be_bytes());
        b.extend(0i32.to_be_bytes()); // leader epoch
        b.push(2); // magic
        b.extend(0u32.to_be_bytes()); // crc (not checked here)
        b.extend((TRANSACTIONAL | CONTROL).to_be_bytes());
        b.extend(0i32.to_be_bytes()); // last offset delta
        b.extend([0u8; 16]); // timestamps
        b.extend(producer_id.to_be_bytes());
        b.extend(0i16.to_be_bytes()); // epoch
        b.extend((-1i32).to_be_bytes()); // base sequence
        b.extend(1i32.to_be_bytes()); // records
        b.extend(rec);
        b
    }

    #[test]
    fn markers_are_read_in_order_and_a_cut_off_batch_is_left_out() {
        let mut log = control_batch(5, 1000, 1);
        log.extend(control_batch(9, 1001, 0));
        let whole = log.len();
        log.extend(control_batch(12, 1000, 1));
        log.truncate(whole + 20);
        assert_eq!(
            markers_in(&log),
            vec![
                Marker {
                    offset: 5,
                    producer_id: 1000,
                    commit: true
                },
                Marker {
                    offset: 9,
                    producer_id: 1001,
                    commit: false
                },
            ]
        );
    }
}
