//! The topology: a validated network description, in file order.
//!
//! A file is read in two steps (raw → validated): [`parse`] turns JSON text into the raw
//! document, keeping every key in file order with its JSON path, and [`validate`] turns that
//! into a [`Topology`] or the complete list of what is wrong with it. Nothing here touches
//! the host.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

mod error;
pub mod impair;
mod parse;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{Diagnostic, TopologyError};
pub use impair::Impair;
pub use validate::{network_id, no_such_node, sanitize};

/// The name of the uplink subnet: reserved when outbound access is on (the plan adds the
/// uplink as one more subnet).
pub const UPLINK: &str = "uplink";

/// A network described by a topology file, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// The name as written (may hold spaces).
    pub name: String,
    /// A short id derived from the name (see [`network_id`]): used in every kernel object the
    /// network owns.
    pub id: String,
    /// How routes are made: computed by dvnet (`automatic_routing`), by OSPF in FRR, or by
    /// nobody (connected routes only).
    pub routing: Routing,
    pub update_hosts: bool,
    /// Every equal-cost next hop of the shortest paths is used (`"ecmp": true`), a flow's
    /// packets staying on one; else ties go to one path.
    pub ecmp: bool,
    pub outbound: Option<Outbound>,
    /// The machines the lab is placed on (`"machines"`), in file order; empty when the file
    /// lists none (the whole lab on the machine that runs `up`).
    pub machines: Vec<Machine>,
    /// The UDP port of the VXLAN joining segments across machines (`"vxlan_port"`); derived
    /// from the network id when not given ([`Topology::vxlan_port`]).
    pub vxlan_port: Option<u16>,
    /// In file order.
    pub subnets: Vec<Subnet>,
    /// In file order.
    pub routers: Vec<Router>,
    /// In file order: subnets in file order, each subnet's hosts in file order.
    pub hosts: Vec<Host>,
}

/// `outbound_access` when enabled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outbound {
    /// The uplink segment joining the host to the border routers.
    pub cidr: Ipv4Net,
    /// Its IPv6 prefix (`outbound_access.cidr6`): nodes reach out over IPv6 too, the host
    /// masquerading them (NAT66) as it does IPv4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<Ipv6Net>,
    /// The border routers (indices into [`Topology::routers`], file order); every router
    /// when the file names none.
    pub routers: Vec<usize>,
}

/// A published port (the `publish` extension): `host_port` on the host reaches `node_port`
/// on the node, from anywhere that reaches the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Publish {
    pub host_port: u16,
    pub node_port: u16,
    /// TCP or UDP.
    pub proto: Proto,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subnet {
    pub name: String,
    /// Normalized to its network address (`10.0.0.7/24` reads as `10.0.0.0/24`, as the
    /// original dvnet did); `None` on an IPv6-only subnet (`"cidr6"` alone).
    pub cidr: Option<Ipv4Net>,
    /// Its IPv6 prefix (`"cidr6"`), normalized the same way: the subnet is dual-stack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<Ipv6Net>,
    /// Impairments of every packet entering the segment (`"impair"`).
    pub impair: Impair,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Host {
    pub name: String,
    /// Index into [`Topology::subnets`].
    pub subnet: usize,
    /// An explicit address (the `ip` extension); validated to lie inside the subnet and not
    /// be its network or broadcast address.
    pub ip: Option<Ipv4Addr>,
    /// An explicit IPv6 address (`"ip6"`), inside the subnet's `cidr6` and not its network
    /// address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub image: Option<String>,
    /// Ports of this node published on the host.
    pub publish: Vec<Publish>,
    /// Impairments of the host's link, both directions (`"impair"`).
    pub impair: Impair,
    /// Where it runs: a position in [`Topology::machines`] (0 when the file lists none).
    pub machine: usize,
}

/// A machine of a lab placed on several (`"machines": {"m1": {"address": ...}}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Machine {
    pub name: String,
    /// Where the other machines reach it: the underlay address its VXLAN speaks from.
    pub address: Ipv4Addr,
    /// How `up` on another machine reaches it over OpenSSH (`user@host`), if it may.
    pub ssh: Option<String>,
    /// The MTU of its underlay (1500 unless given).
    pub mtu: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Router {
    pub name: String,
    /// Indices into [`Topology::subnets`], in the order the file lists them; no repeats.
    pub subnets: Vec<usize>,
    /// Explicit addresses, parallel to `subnets` (the `ip` extension: an object mapping
    /// subnet names to addresses).
    pub ips: Vec<Option<Ipv4Addr>>,
    /// Explicit IPv6 addresses, parallel to `subnets` (`"ip6"`: an object mapping subnet
    /// names to addresses).
    pub ips6: Vec<Option<Ipv6Addr>>,
    pub image: Option<String>,
    pub firewall: Firewall,
    /// A user's own FRR configuration for this router (absolute path): FRR runs in it with
    /// this file instead of a generated one.
    pub frr_config: Option<std::path::PathBuf>,
    /// Ports of this router published on the host.
    pub publish: Vec<Publish>,
    /// Impairments of the router's link on each subnet, parallel to `subnets`, both
    /// directions (`"impair": {"A": {...}}`).
    pub impair: Vec<Impair>,
    /// Where it runs: a position in [`Topology::machines`] (0 when the file lists none).
    pub machine: usize,
}

/// Where routes come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// dvnet computes every route (`"automatic_routing": true`, or `"routing": "static"`).
    Static,
    /// Routers run FRR with OSPF, configured by dvnet (`"routing": "ospf"`).
    Ospf,
    /// Connected routes only: a routing daemon the user runs fills the rest (the original
    /// default).
    #[default]
    None,
}

/// `fw_rules` of a router. A matching `drop` rule wins over a matching `accept` rule, which
/// wins over the policy. Stateful: replies to an accepted flow pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Firewall {
    pub policy: Policy,
    pub accept: Vec<FwRule>,
    pub drop: Vec<FwRule>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Policy {
    #[default]
    Accept,
    Drop,
}

/// One firewall entry: traffic from `src` to `dst`, optionally of one protocol and to one
/// destination port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FwRule {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub proto: Option<Proto>,
    /// Only with `proto` TCP or UDP.
    pub dport: Option<u16>,
    /// Where the rule stands in the file (`routers."R-1".fw_rules.drop[0]`), to name it in
    /// `dvnet stats` and errors.
    pub origin: String,
}

/// What a firewall entry matches on one side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Endpoint {
    /// Anything (`"*"`, `"any"`, or a side left out).
    Any,
    /// A subnet's CIDR (index into [`Topology::subnets`]).
    Subnet(usize),
    /// A host's address (index into [`Topology::hosts`]).
    Host(usize),
    /// Every address of a router (index into [`Topology::routers`]).
    Router(usize),
    /// A literal prefix.
    Cidr(Ipv4Net),
    /// A literal IPv6 prefix.
    Cidr6(Ipv6Net),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Icmp,
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number.
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Proto::Icmp => 1,
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

/// A reference to a node, routers and hosts alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", content = "index", rename_all = "lowercase")]
pub enum NodeRef {
    Router(usize),
    Host(usize),
}

/// The largest topology file dvnet reads (a 10,000-node lab is a few MB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads a topology file's text, refusing what is not a regular file (a FIFO would block, a
/// device like `/dev/zero` never ends) and files over [`MAX_FILE_BYTES`]; a UTF-8 byte-order
/// mark is dropped.
///
/// # Errors
/// The file cannot be opened, is not a regular file, is too large or is not UTF-8.
pub fn read_text(path: &std::path::Path) -> Result<String, TopologyError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let origin = path.display().to_string();
    let read_err = |source| TopologyError::Read {
        path: origin.clone(),
        source,
    };
    // O_NONBLOCK: opening a FIFO with no writer must not hang before the type is checked.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file; give a topology file (JSON)",
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} bytes is more than the {} MiB a topology file may hold",
                meta.len(),
                MAX_FILE_BYTES >> 20
            ),
        )));
    }
    read_from(file, &origin)
}

/// A topology's text from `reader` (a file, standard input), named `origin` in messages: at
/// most [`MAX_FILE_BYTES`], UTF-8, a leading byte-order mark dropped.
///
/// # Errors
/// Reading fails, or the text is too large or not UTF-8.
pub fn read_from(reader: impl std::io::Read, origin: &str) -> Result<String, TopologyError> {
    use std::io::Read as _;
    let read_err = |source| TopologyError::Read {
        path: origin.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    // `take`: a file may grow while it is read
    reader
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "more than the {} MiB a topology file may hold",
                MAX_FILE_BYTES >> 20
            ),
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        ))
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

impl Topology {
    /// Reads and validates a topology file's text. `origin` names the file in messages.
    ///
    /// # Errors
    /// Malformed JSON (with line and column), or every validation error found, each with its
    /// JSON path.
    pub fn from_json(text: &str, origin: &str) -> Result<Topology, TopologyError> {
        let doc = parse::parse(text, origin)?;
        validate::validate(&doc, origin)
    }

    /// Reads and validates a topology file.
    ///
    /// # Errors
    /// The file cannot be read, or [`Topology::from_json`] fails.
    pub fn from_file(path: &std::path::Path) -> Result<Topology, TopologyError> {
        let origin = path.display().to_string();
        let text = read_text(path)?;
        Self::from_json(&text, &origin)
    }

    /// Whether any subnet has an IPv6 prefix: then every node has IPv6 (link-local addresses
    /// on every link, global ones on the subnets with `cidr6`), else it stays off in them.
    #[must_use]
    pub fn ipv6(&self) -> bool {
        self.subnets.iter().any(|s| s.cidr6.is_some())
    }

    /// The name of a node.
    #[must_use]
    pub fn node_name(&self, node: NodeRef) -> &str {
        match node {
            NodeRef::Router(i) => &self.routers[i].name,
            NodeRef::Host(i) => &self.hosts[i].name,
        }
    }

    /// The image of a node, if it runs as a container.
    #[must_use]
    pub fn node_image(&self, node: NodeRef) -> Option<&str> {
        match node {
            NodeRef::Router(i) => self.routers[i].image.as_deref(),
            NodeRef::Host(i) => self.hosts[i].image.as_deref(),
        }
    }

    /// Every node: routers first, then hosts, each in file order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeRef> + '_ {
        (0..self.routers.len())
            .map(NodeRef::Router)
            .chain((0..self.hosts.len()).map(NodeRef::Host))
    }

    /// The machine a node runs on (a position in [`Topology::machines`]).
    #[must_use]
    pub fn node_machine(&self, node: NodeRef) -> usize {
        match node {
            NodeRef::Router(i) => self.routers[i].machine,
            NodeRef::Host(i) => self.hosts[i].machine,
        }
    }

    /// The position of the machine called `name`.
    #[must_use]
    pub fn machine(&self, name: &str) -> Option<usize> {
        self.machines.iter().position(|m| m.name == name)
    }

    /// The id under which machine `m` keeps its share of the lab (namespaces, record, pins):
    /// [`machine_network_id`] of the network's id and the machine's name.
    #[must_use]
    pub fn machine_id(&self, m: usize) -> String {
        machine_network_id(&self.id, &self.machines[m].name)
            .expect("validation checks machine names")
    }

    /// The UDP port of the lab's VXLAN: the file's `vxlan_port`, else one of 1,000 ports from
    /// 14789 (containerlab's default) up, by a hash of the network id, so that the labs of a
    /// machine rarely share one.
    #[must_use]
    pub fn vxlan_port(&self) -> u16 {
        self.vxlan_port.unwrap_or_else(|| {
            14_789
                + u16::try_from(crate::plan::naming::fnv1a(self.id.as_bytes()) % 1000)
                    .expect("below 1000")
        })
    }
}

/// The longest machine name once made an id: room for it beside the network's id.
pub const MACHINE_ID_MAX: usize = 12;

/// The id of one machine's share of network `id`: the network id (shortened to leave room)
/// and the machine's, joined by `-`, so that two machines simulated on one host keep apart
/// and the share is still a network id. `None` when the machine's name gives no id or a
/// longer one than [`MACHINE_ID_MAX`].
#[must_use]
pub fn machine_network_id(id: &str, machine: &str) -> Option<String> {
    let m = network_id(machine).filter(|m| m.len() <= MACHINE_ID_MAX)?;
    let room = validate::ID_MAX - 1 - m.len();
    let head = id[..id.len().min(room)].trim_end_matches('-');
    Some(format!("{head}-{m}"))
}
