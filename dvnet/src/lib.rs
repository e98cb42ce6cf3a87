//! dvnet builds emulated IP networks on one Linux machine.
//!
//! Data flows one way:
//! - [`topology`]: file → validated [`topology::Topology`] (every error at once, with its path).
//! - [`plan`]: topology → [`plan::Plan`], pure: addresses, names, routes, firewall entries.
//! - [`bpf`]: the embedded eBPF object and how a network loads it.
//!
//! Around them: [`generate`] writes generated topologies, [`render`] draws tables, [`cli`]
//! is the command line.
pub mod bpf;
pub mod cli;
pub mod deploy;
pub mod exec;
pub mod generate;
pub mod inspect;
pub mod netlink;
pub mod netns;
pub mod plan;
pub mod render;
pub mod state;
pub mod topology;
