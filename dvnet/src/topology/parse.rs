//! JSON text → raw document. Objects keep their keys in file order, duplicates included, so
//! that validation can report every key by its path.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Diagnostic, TopologyError};

/// A JSON value whose objects keep every key in file order, duplicates included.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// How messages name this kind of value: "found {kind}".
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Json::Object(entries))
    }
}

/// A topology file, raw: its top-level object's entries in file order.
pub struct Document {
    pub entries: Vec<(String, Json)>,
}

/// What a topology file looks like at its smallest, to show in messages.
const EXAMPLE: &str = r#"{"name": "lab", "subnets": {"A": {"cidr": "10.0.0.0/24"}}}"#;

/// Parses a topology file's text. `origin` names the file in messages.
pub fn parse(text: &str, origin: &str) -> Result<Document, TopologyError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(invalid(
            origin,
            format!("the file is empty; a topology is a JSON object such as {EXAMPLE}"),
        ));
    }
    match serde_json::from_str(text) {
        Ok(Json::Object(entries)) => Ok(Document { entries }),
        Ok(other) => Err(invalid(
            origin,
            format!(
                "expected a JSON object at the top level, found {}; a topology looks like \
                 {EXAMPLE}",
                other.kind()
            ),
        )),
        Err(e) => {
            let full = e.to_string();
            // serde_json appends the position, which the error shows on its own.
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            Err(TopologyError::Syntax {
                origin: origin.to_owned(),
                line: e.line(),
                column: e.column(),
                message: full.strip_suffix(&suffix).unwrap_or(&full).to_owned(),
            })
        }
    }
}

fn invalid(origin: &str, message: String) -> TopologyError {
    TopologyError::Invalid {
        origin: origin.to_owned(),
        diagnostics: vec![Diagnostic {
            path: String::new(),
            message,
        }],
    }
}
