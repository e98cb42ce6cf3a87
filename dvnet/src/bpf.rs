//! The eBPF object built from `dvnet-ebpf` and embedded in the binary, and how it is loaded:
//! once per network, maps sized for that network before the kernel sees them.

use aya::{Ebpf, EbpfLoader};
use dvnet_common::maps;

/// The eBPF object built by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dvnet"));

/// How big a network's maps must be.
#[derive(Clone, Copy, Debug)]
pub struct MapSizes {
    /// Links (node interfaces) in the network: entries of `DV_LINK_STATS`.
    pub links: u32,
    /// Interfaces the programs run on: entries of `DV_IFACES`.
    pub ifaces: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "loading dvnet's eBPF programs failed: {source}\n\
         hint: dvnet needs root (CAP_BPF, CAP_NET_ADMIN) and a kernel with BPF, BTF and TC \
         classifiers; `--datapath kernel` runs without eBPF forwarding"
    )]
    Load {
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("eBPF program {name} is missing from the object (was dvnet built with its programs?)")]
    MissingProgram { name: String },
    #[error("eBPF program {name}: {source}")]
    Program {
        name: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: String,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

/// Parses the object and creates its maps, sized by `sizes`; programs are not yet loaded
/// into the kernel (see [`load_program`]).
///
/// # Errors
/// When the kernel refuses a map (no root, no BPF).
pub fn open(sizes: MapSizes) -> Result<Ebpf, BpfError> {
    EbpfLoader::new()
        .map_max_entries(maps::LINK_STATS, sizes.links.max(1))
        .map_max_entries(maps::IFACES, sizes.ifaces.max(1))
        .load(OBJECT)
        .map_err(|e| BpfError::Load {
            source: Box::new(e),
        })
}

/// Verifies and loads the classifier `name` into the kernel.
///
/// # Errors
/// When the program is missing or the verifier rejects it (the error carries its log).
pub fn load_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut aya::programs::SchedClassifier, BpfError> {
    let program: &mut aya::programs::SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| BpfError::MissingProgram {
            name: name.to_owned(),
        })?
        .try_into()
        .map_err(|e| BpfError::Program {
            name: name.to_owned(),
            source: Box::new(e),
        })?;
    program.load().map_err(|e| BpfError::Program {
        name: name.to_owned(),
        source: Box::new(e),
    })?;
    Ok(program)
}
