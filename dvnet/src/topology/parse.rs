//! JSON text → raw document (stub: replaced by the real parser).
pub struct Document(pub serde_json::Value);

pub fn parse(text: &str, origin: &str) -> Result<Document, super::TopologyError> {
    serde_json::from_str(text)
        .map(Document)
        .map_err(|e| super::TopologyError::Syntax {
            origin: origin.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
}
