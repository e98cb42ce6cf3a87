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

/// The id of a network named `name` (stub; the validator branch brings the real one).
#[must_use]
pub fn network_id(name: &str) -> Option<String> {
    let s = sanitize(name);
    let mut out = String::new();
    for part in s.split('-').filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(part);
    }
    out.truncate(24);
    let out = out.trim_end_matches('-').to_owned();
    (!out.is_empty()).then_some(out)
}
