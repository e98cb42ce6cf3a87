//! dvnet builds emulated IP networks on one Linux machine.
//!
//! Data flows one way:
//! - [`topology`]: file → validated [`topology::Topology`] (every error at once, with its path).
//! - [`bpf`]: the embedded eBPF object and how a network loads it.
pub mod bpf;
pub mod topology;
