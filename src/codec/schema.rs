//! Avro schemas, their CRC-64-AVRO fingerprints, and the single-object framing
//! (`C3 01`, the 8-byte fingerprint, then the binary datum) every record shares.

use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;

use super::CodecError;

/// Avro schema of a task (`schemas/task.avsc`).
pub const TASK_SCHEMA: &str = include_str!("../../schemas/task.avsc");
/// Avro schema of an outcome event (`schemas/outcome.avsc`).
pub const OUTCOME_SCHEMA: &str = include_str!("../../schemas/outcome.avsc");
/// Avro schema of a status event (`schemas/status.avsc`).
pub const STATUS_SCHEMA: &str = include_str!("../../schemas/status.avsc");
/// Avro schema of a task in a delay topic (`schemas/delayed.avsc`).
pub const DELAYED_SCHEMA: &str = include_str!("../../schemas/delayed.avsc");

pub(super) const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// Avro schema of a captured-output record (`schemas/tasklog.avsc`).
pub const TASK_LOG_SCHEMA: &str = include_str!("../../schemas/tasklog.avsc");
/// Avro schema of a stop request (`schemas/control.avsc`).
pub const STOP_REQUEST_SCHEMA: &str = include_str!("../../schemas/control.avsc");

/// A schema Tidewater reads and writes, with its fingerprint, and its datum writer and
/// reader, resolved once on first use (resolving a schema per record was a measurable
/// share of the per-task cost).
pub(super) struct Known {
    pub(super) schema: Schema,
    pub(super) fp: [u8; 8],
    writer: OnceLock<Result<GenericDatumWriter<'static>, String>>,
    reader: OnceLock<Result<GenericDatumReader<'static>, String>>,
}

impl Known {
    fn parse(text: &str) -> Result<Self, String> {
        let schema = Schema::parse_str(text).map_err(|e| e.to_string())?;
        Ok(Self {
            fp: fingerprint(&schema),
            schema,
            writer: OnceLock::new(),
            reader: OnceLock::new(),
        })
    }

    fn writer(
        &'static self,
        what: &'static str,
    ) -> Result<&'static GenericDatumWriter<'static>, CodecError> {
        self.writer
            .get_or_init(|| {
                GenericDatumWriter::builder(&self.schema)
                    .human_readable(false)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|detail| CodecError::Avro {
                what,
                detail: detail.clone(),
            })
    }

    fn reader(
        &'static self,
        what: &'static str,
    ) -> Result<&'static GenericDatumReader<'static>, CodecError> {
        self.reader
            .get_or_init(|| {
                GenericDatumReader::builder(&self.schema)
                    .human_readable(false)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|detail| CodecError::Avro {
                what,
                detail: detail.clone(),
            })
    }
}

/// Every schema of `schemas/`, parsed once.
pub(super) struct Schemas {
    pub(super) task: Known,
    pub(super) outcome: Known,
    pub(super) status: Known,
    pub(super) delayed: Known,
    pub(super) task_log: Known,
    pub(super) stop: Known,
}

/// The schema's Parsing Canonical Form as the Avro specification defines it.
///
/// apache-avro keeps a logical type's base as `{"type":"long"}` where the specification
/// (and the Java implementation) reduce it to `"long"`; the fingerprint must match what
/// other languages compute, so primitives are reduced here.
pub fn canonical_form(schema: &Schema) -> String {
    let mut canon = schema.canonical_form();
    for p in [
        "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    ] {
        canon = canon.replace(&format!("{{\"type\":\"{p}\"}}"), &format!("\"{p}\""));
    }
    canon
}

/// CRC-64-AVRO (Rabin) fingerprint of the canonical form, little-endian, as written in
/// the single-object encoding header.
pub fn fingerprint(schema: &Schema) -> [u8; 8] {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    let mut table = [0u64; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut fp = i as u64;
        for _ in 0..8 {
            fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
        }
        *slot = fp;
    }
    let mut fp = EMPTY;
    for b in canonical_form(schema).bytes() {
        // The low byte of the state, as the specification's `& 0xff`.
        let slot = usize::from((fp ^ u64::from(b)) as u8);
        fp = (fp >> 8) ^ table.get(slot).copied().unwrap_or_default();
    }
    fp.to_le_bytes()
}

pub(super) fn schemas() -> Result<&'static Schemas, CodecError> {
    static SCHEMAS: OnceLock<Result<Schemas, String>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| {
            Ok(Schemas {
                task: Known::parse(TASK_SCHEMA)?,
                outcome: Known::parse(OUTCOME_SCHEMA)?,
                status: Known::parse(STATUS_SCHEMA)?,
                delayed: Known::parse(DELAYED_SCHEMA)?,
                task_log: Known::parse(TASK_LOG_SCHEMA)?,
                stop: Known::parse(STOP_REQUEST_SCHEMA)?,
            })
        })
        .as_ref()
        .map_err(|e| CodecError::Avro {
            what: "schema",
            detail: e.clone(),
        })
}

fn avro_err(what: &'static str) -> impl Fn(apache_avro::Error) -> CodecError {
    move |e| CodecError::Avro {
        what,
        detail: e.to_string(),
    }
}

pub(super) fn encode<T: Serialize>(
    what: &'static str,
    known: &'static Known,
    value: &T,
) -> Result<Vec<u8>, CodecError> {
    let writer = known.writer(what)?;
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
    out.extend_from_slice(&known.fp);
    writer.write_ser(&mut out, value).map_err(avro_err(what))?;
    Ok(out)
}

/// A record written by `write` (one of [`super::binary`]'s writers) behind the
/// single-object header of `known`.
pub(super) fn framed(known: &Known, size_hint: usize, write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(size_hint.saturating_add(10));
    out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
    out.extend_from_slice(&known.fp);
    write(&mut out);
    out
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    known: &'static Known,
    bytes: &[u8],
) -> Result<T, CodecError> {
    let mut body = datum(known, bytes)?;
    let reader = known.reader(what)?;
    let value: T = reader.read_deser(&mut body).map_err(avro_err(what))?;
    all_read(what, body)?;
    Ok(value)
}

/// The Avro datum of `bytes`: after the single-object header when there is one (which
/// must carry the schema's fingerprint), else all of it.
pub(super) fn datum<'a>(known: &Known, bytes: &'a [u8]) -> Result<&'a [u8], CodecError> {
    if bytes.is_empty() {
        return Err(CodecError::Empty);
    }
    if let Some((magic, rest)) = bytes.split_first_chunk::<2>() {
        if let (true, Some((found, datum))) =
            (*magic == SINGLE_OBJECT_MAGIC, rest.split_first_chunk::<8>())
        {
            if *found != known.fp {
                return Err(CodecError::UnknownFingerprint(hex(found)));
            }
            return Ok(datum);
        }
    }
    Ok(bytes)
}

/// Nothing may follow the record.
pub(super) fn all_read(what: &'static str, rest: &[u8]) -> Result<(), CodecError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(CodecError::Avro {
            what,
            detail: format!("{} trailing bytes after the record", rest.len()),
        })
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
