//! Records rendered as JSON and text for people.

use super::records::Outcome;

/// An outcome as JSON, for people and for compensation tasks: `payload` and `result` as
/// text (binary data rendered lossily), everything else as in the Avro record.
pub fn outcome_json(o: &Outcome) -> serde_json::Value {
    let mut map = match serde_json::to_value(o) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    map.insert(
        "payload".into(),
        serde_json::Value::String(text(&o.payload)),
    );
    let result = o.result.as_deref().map_or(serde_json::Value::Null, |r| {
        serde_json::Value::String(text(r))
    });
    map.insert("result".into(), result);
    serde_json::Value::Object(map)
}

/// Renders bytes for people: the UTF-8 text, or a lossy rendering for binary data.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
