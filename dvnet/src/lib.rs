//! dvnet builds emulated IP networks on one Linux machine.
//!
//! Data flows one way:
//! - [`topology`]: file → validated [`topology::Topology`] (every error at once, with its path).
//! - [`plan`]: topology → [`plan::Plan`], pure: addresses, names, routes, firewall entries.
//! - [`datapath`]: map entries from a plan, the embedded eBPF object, loading and pinning.
//!
//! Around them: [`generate`] writes generated topologies, [`render`] draws tables, [`cli`]
//! is the command line.
pub mod cli;
pub mod datapath;
pub mod deploy;
pub mod docker;
pub mod exec;
pub mod frr;
pub mod generate;
pub mod inspect;
pub mod lock;
pub mod netlink;
pub mod netns;
pub mod outbound;
pub mod plan;
pub mod render;
pub mod state;
pub mod stats;
pub mod topology;
