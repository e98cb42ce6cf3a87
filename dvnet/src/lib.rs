//! dvnet builds emulated IP networks on one Linux machine.
//!
//! Data flows one way:
//! - [`bpf`]: the embedded eBPF object and how a network loads it.
pub mod bpf;
