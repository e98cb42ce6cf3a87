//! Raw document → [`Topology`] (stub: replaced by the real validator).
use super::{Topology, TopologyError, parse::Document};

/// The kernel-object form of a name: lowercase ASCII letters, digits and `-`.
#[must_use]
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

pub fn validate(_doc: &Document, origin: &str) -> Result<Topology, TopologyError> {
    Err(TopologyError::Invalid {
        origin: origin.to_owned(),
        diagnostics: vec![],
    })
}
