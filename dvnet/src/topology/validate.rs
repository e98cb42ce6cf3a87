//! Raw document → [`Topology`]: every rule of the topology file, with every error collected
//! under its JSON path (`routers."R-1".subnets[1]`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::parse::{Document, Json};
use super::{
    Diagnostic, Endpoint, Firewall, FwRule, Host, Impair, Machine, NodeRef, Outbound, Policy,
    Proto, Publish, Router, Routing, Subnet, Topology, TopologyError,
};

mod machines;

/// The longest network id.
pub(super) const ID_MAX: usize = 24;
/// The longest subnet prefix: a /30 holds two nodes; /31 and /32 are not supported.
const PREFIX_MAX: u8 = 30;
/// The longest IPv6 subnet prefix: a /126 holds three nodes besides its network address
/// (the subnet-router anycast address, never handed out); /127 and /128 are not supported.
const PREFIX6_MAX: u8 = 126;
/// The most members a subnet may have: one of three or more members is a Linux bridge with a
/// port per member, and a bridge holds 1023 ports (`BR_MAX_PORTS` is 1024, port 0 unused).
const BRIDGE_PORTS_MAX: usize = 1023;
/// The longest node or subnet name, in characters: a node's name becomes its hostname (at
/// most 64) and part of its namespace and container name, `dv-<id>.<node>`.
const NAME_MAX: usize = 63;
/// The longest network name, in characters.
const NETWORK_NAME_MAX: usize = 255;
/// The largest `frr_config` file.
const FRR_CONFIG_MAX: u64 = 1 << 20;

const TOP_FIELDS: &[&str] = &[
    "name",
    "automatic_routing",
    "routing",
    "update_hosts",
    "ecmp",
    "outbound_access",
    "machines",
    "vxlan_port",
    "subnets",
    "routers",
];
const OUTBOUND_FIELDS: &[&str] = &["enabled", "cidr", "cidr6", "routers"];
const SUBNET_FIELDS: &[&str] = &["cidr", "cidr6", "hosts", "impair"];
const HOST_FIELDS: &[&str] = &["image", "ip", "ip6", "publish", "impair", "machine"];
const ROUTER_FIELDS: &[&str] = &[
    "subnets",
    "image",
    "fw_rules",
    "ip",
    "ip6",
    "frr_config",
    "publish",
    "impair",
    "machine",
];
const FIREWALL_FIELDS: &[&str] = &["policy", "accept", "drop"];
const RULE_FIELDS: &[&str] = &["src", "dst", "proto", "dport"];

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

/// The short id of a network, used in every kernel object it owns: the [`sanitize`]d name
/// with runs of `-` collapsed, no `-` at either end, at most 24 characters. `None` when the
/// name holds no ASCII letter or digit.
#[must_use]
pub fn network_id(name: &str) -> Option<String> {
    let mut id = String::new();
    for c in sanitize(name).chars() {
        if c != '-' || !(id.is_empty() || id.ends_with('-')) {
            id.push(c);
        }
    }
    // `sanitize` yields ASCII only, so any byte index is a character boundary.
    id.truncate(ID_MAX);
    let id = id.trim_end_matches('-');
    (!id.is_empty()).then(|| id.to_owned())
}

/// Validates a raw document. `origin` names the file in messages.
pub fn validate(doc: &Document, origin: &str) -> Result<Topology, TopologyError> {
    let mut validator = Validator {
        base_dir: std::path::Path::new(origin)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
        ..Validator::default()
    };
    let topology = validator.document(&doc.entries);
    match topology {
        Some(topology) if validator.diagnostics.is_empty() => Ok(topology),
        _ => Err(TopologyError::Invalid {
            origin: origin.to_owned(),
            diagnostics: validator.diagnostics,
        }),
    }
}

/// A JSON path: top-level keys bare (`outbound_access.cidr`), names quoted
/// (`subnets."A"`), indices in brackets (`drop[0]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Path(String);

impl Path {
    /// A field of the format, or a key the user mistook for one (quoted unless it is a
    /// plain identifier).
    fn field(&self, field: &str) -> Path {
        if !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            self.join(field)
        } else {
            self.name(field)
        }
    }

    /// A name the user chose (a subnet, host or router).
    fn name(&self, name: &str) -> Path {
        self.join(&format!("{name:?}"))
    }

    fn index(&self, index: usize) -> Path {
        Path(format!("{}[{index}]", self.0))
    }

    fn join(&self, key: &str) -> Path {
        if self.0.is_empty() {
            Path(key.to_owned())
        } else {
            Path(format!("{}.{key}", self.0))
        }
    }

    fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fields of one object of the format, by their canonical (lowercase) names.
struct Fields<'a> {
    path: Path,
    found: Vec<(&'static str, &'a Json)>,
}

impl<'a> Fields<'a> {
    /// A field's value and path.
    fn get(&self, field: &str) -> Option<(&'a Json, Path)> {
        self.found
            .iter()
            .find(|(name, _)| *name == field)
            .map(|&(name, value)| (value, self.path.join(name)))
    }
}

/// Names of one kind (subnets, or nodes), unique as written and once sanitized.
struct Registry<'a, T> {
    /// What each name stands for, and where it is given.
    by_name: HashMap<&'a str, (T, Path)>,
    /// Each sanitized name, and the name and path it comes from.
    by_kernel_name: HashMap<String, (&'a str, Path)>,
}

impl<T> Default for Registry<'_, T> {
    fn default() -> Self {
        Registry {
            by_name: HashMap::new(),
            by_kernel_name: HashMap::new(),
        }
    }
}

impl<'a, T: Copy> Registry<'a, T> {
    /// Adds a name; the error says which earlier name it clashes with.
    fn insert(&mut self, name: &'a str, path: &Path, value: T, what: &str) -> Result<(), String> {
        if let Some((_, first)) = self.by_name.get(name) {
            return Err(format!(
                "{what} name {name:?} is already used at {first}; {what} names must be unique \
                 across the file, rename one of them"
            ));
        }
        let kernel = sanitize(name);
        if let Some((other, first)) = self.by_kernel_name.get(&kernel) {
            return Err(format!(
                "{what} names {name:?} and {other:?} (at {first}) both become {kernel:?} in \
                 kernel object names; rename one of them"
            ));
        }
        self.by_name.insert(name, (value, path.clone()));
        self.by_kernel_name.insert(kernel, (name, path.clone()));
        Ok(())
    }

    fn get(&self, name: &str) -> Option<T> {
        self.by_name.get(name).map(|&(value, _)| value)
    }

    fn names(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.by_name.keys().copied()
    }
}

/// `outbound_access` as read: its IPv4 prefix, its IPv6 prefix and where it stands, and the
/// border routers' names (resolved once the routers are known).
type OutboundDraft<'a> = (Ipv4Net, Option<(Ipv6Net, Path)>, Option<(&'a Json, Path)>);

/// A subnet while the file is being read: its prefix may be missing (invalid).
struct SubnetDraft<'a> {
    name: &'a str,
    path: Path,
    cidr: Option<Ipv4Net>,
    cidr6: Option<Ipv6Net>,
    /// Whether the file gives it an IPv4 prefix (valid or not): else it is IPv6-only.
    ipv4: bool,
    /// Hosts and routers that need an address on it.
    nodes: usize,
    impair: Impair,
}

/// Reads a document, collecting every error.
#[derive(Default)]
struct Validator<'a> {
    /// Where relative paths in the file (`frr_config`) start: the file's directory.
    base_dir: std::path::PathBuf,
    diagnostics: Vec<Diagnostic>,
    subnets: Vec<SubnetDraft<'a>>,
    subnet_names: Registry<'a, usize>,
    hosts: Vec<Host>,
    node_names: Registry<'a, NodeRef>,
    /// Explicit addresses, and where each is given.
    addresses: HashMap<Ipv4Addr, Path>,
    addresses6: HashMap<Ipv6Addr, Path>,
    /// Published host ports, by whom and where.
    published: HashMap<(u16, Proto), (String, Path)>,
    machines: Vec<Machine>,
    machine_names: Registry<'a, usize>,
}

impl<'a> Validator<'a> {
    fn error(&mut self, path: &Path, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// `None` only when an error has been recorded.
    fn document(&mut self, entries: &'a [(String, Json)]) -> Option<Topology> {
        let f = self.fields(entries, &Path::default(), TOP_FIELDS);
        let name = self
            .require(&f, "name", "the network's name, such as \"lab 1\"")
            .and_then(|(value, path)| Some((self.string(value, &path)?, path)));
        if let Some((name, path)) = &name {
            self.check_name(name, path, NameKind::Network);
        }
        let id = name
            .as_ref()
            .and_then(|(name, path)| self.network_id(name, path));
        let routing = self.routing(&f);
        let update_hosts = self.flag(&f, "update_hosts");
        let ecmp = self.flag(&f, "ecmp");
        if let Some((value, path)) = f.get("machines") {
            self.machines(value, &path, id.as_deref());
        }
        let vxlan_port = self.vxlan_port(&f);
        let outbound_path = f.get("outbound_access").map(|(_, path)| path);
        self.check_placement(outbound_path.as_ref());
        let outbound = f.get("outbound_access").and_then(|(value, path)| {
            let (cidr, cidr6, routers) = self.outbound(value, &path)?;
            Some((cidr, path.join("cidr"), cidr6, routers))
        });
        if let Some((value, path)) = self.require(
            &f,
            "subnets",
            "an object of subnets, such as {\"A\": {\"cidr\": \"10.0.0.0/24\"}}",
        ) {
            self.subnets(value, &path);
        }
        self.check_overlaps();
        let routers = f
            .get("routers")
            .map(|(value, path)| self.routers(value, &path));
        self.check_capacity();
        self.check_bridges();
        if let Some((cidr, path, cidr6, _)) = &outbound {
            self.check_outbound(*cidr, path);
            if let Some((cidr6, path6)) = cidr6 {
                self.check_outbound6(*cidr6, path6);
            }
        }
        if outbound.is_none()
            && let Some((_, path)) = self.published.values().next()
        {
            let path = path.clone();
            self.error(&path, "publishing a port needs outbound_access (the host reaches nodes through the uplink)");
        }
        // a host on an IPv6-only subnet is reached over IPv6 alone
        if let Some((_, _, None, _)) = &outbound {
            let unreachable: Vec<(String, Path)> = self
                .published
                .values()
                .filter(|(node, _)| {
                    self.hosts
                        .iter()
                        .any(|h| h.name == *node && !self.subnets[h.subnet].ipv4)
                })
                .cloned()
                .collect();
            for (node, path) in unreachable {
                self.error(
                    &path,
                    format!(
                        "{node:?} is on an IPv6-only subnet, so the host reaches it over IPv6 \
                         alone: give the uplink IPv6 (outbound_access.cidr6) to publish its ports"
                    ),
                );
            }
        }
        let routers = routers.unwrap_or_default();
        let outbound = outbound.map(|(cidr, _, cidr6, listed)| Outbound {
            cidr,
            cidr6: cidr6.map(|(net, _)| net),
            routers: self.border_routers(listed, &routers),
        });

        let subnets = self
            .subnets
            .iter()
            .map(|s| {
                Some(Subnet {
                    name: s.name.to_owned(),
                    cidr: if s.ipv4 { Some(s.cidr?) } else { None },
                    cidr6: s.cidr6,
                    impair: s.impair,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Topology {
            name: name?.0.to_owned(),
            id: id?,
            routing,
            update_hosts,
            ecmp,
            outbound,
            machines: std::mem::take(&mut self.machines),
            vxlan_port,
            subnets,
            routers,
            hosts: std::mem::take(&mut self.hosts),
        })
    }

    fn network_id(&mut self, name: &str, path: &Path) -> Option<String> {
        let id = network_id(name);
        if id.is_none() {
            self.error(
                path,
                format!(
                    "{name:?} holds no ASCII letter or digit, so no id can be derived from it \
                     for kernel objects; use a name such as \"lab 1\""
                ),
            );
        }
        id
    }

    /// `outbound_access`: the uplink prefixes when enabled.
    fn outbound(&mut self, value: &'a Json, path: &Path) -> Option<OutboundDraft<'a>> {
        let entries = self.object(
            value,
            path,
            "{\"enabled\": true, \"cidr\": \"192.168.240.0/24\"}",
        )?;
        let f = self.fields(entries, path, OUTBOUND_FIELDS);
        let enabled = self
            .require(
                &f,
                "enabled",
                "true to give nodes access to what the host reaches, else false",
            )
            .and_then(|(value, path)| self.boolean(value, &path));
        let cidr = f
            .get("cidr")
            .and_then(|(value, path)| self.prefix(value, &path));
        if enabled == Some(true) && f.get("cidr").is_none() {
            self.error(
                path,
                "missing field \"cidr\": outbound access needs a prefix for the uplink between \
                 the host and the routers, such as \"192.168.240.0/24\"",
            );
        }
        let cidr6 = f
            .get("cidr6")
            .and_then(|(value, path)| Some((self.prefix6(value, &path)?, path)));
        let routers = f.get("routers");
        if enabled == Some(true) {
            cidr.map(|c| (c, cidr6, routers))
        } else {
            None
        }
    }

    /// `outbound_access.routers`: names of routers, resolved once the routers are known.
    fn border_routers(
        &mut self,
        listed: Option<(&'a Json, Path)>,
        routers: &[Router],
    ) -> Vec<usize> {
        let Some((value, path)) = listed else {
            if routers.is_empty() {
                let at = Path::default().join("outbound_access");
                self.error(&at, "outbound access needs a router: the uplink joins the host to the network's routers");
            }
            return (0..routers.len()).collect();
        };
        let Json::Array(items) = value else {
            self.expected(&path, "an array of router names, such as [\"R-1\"]", value);
            return Vec::new();
        };
        let mut border = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let Some(name) = self.string(item, &item_path) else {
                continue;
            };
            match routers.iter().position(|r| r.name == name) {
                Some(r) if border.contains(&r) => {
                    self.error(&item_path, format!("router {name:?} is listed twice"));
                }
                Some(r) => border.push(r),
                None => {
                    let hint = suggest(name, routers.iter().map(|r| r.name.as_str()));
                    self.error(&item_path, format!("unknown router {name:?}{hint}"));
                }
            }
        }
        if items.is_empty() {
            self.error(
                &path,
                "no border router: name at least one, or remove the field for all of them",
            );
        }
        border
    }

    /// A node's `publish`: `["8080:80/tcp", "5353:53/udp", "2222:22"]` (TCP by default).
    fn publish(&mut self, f: &Fields<'a>, node: &str) -> Vec<Publish> {
        let Some((value, path)) = f.get("publish") else {
            return Vec::new();
        };
        let Json::Array(items) = value else {
            self.expected(&path, "an array such as [\"8080:80/tcp\"]", value);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let Some(text) = self.string(item, &item_path) else {
                continue;
            };
            match parse_publish(text) {
                Ok(p) => {
                    let key = (p.host_port, p.proto);
                    if let Some((other, other_path)) = self.published.get(&key) {
                        let message = format!(
                            "host port {}/{} is already published for {other:?} at {other_path}",
                            p.host_port,
                            proto_name(p.proto)
                        );
                        self.error(&item_path, message);
                    } else {
                        self.published.insert(key, (node.to_owned(), item_path.clone()));
                        out.push(p);
                    }
                }
                Err(why) => self.error(&item_path, format!("{text:?}: {why}; write HOST_PORT:NODE_PORT[/tcp|/udp], such as \"8080:80/tcp\"")),
            }
        }
        out
    }

    fn subnets(&mut self, value: &'a Json, path: &Path) {
        let Some(entries) = self.object(value, path, "{\"A\": {\"cidr\": \"10.0.0.0/24\"}}") else {
            return;
        };
        if entries.is_empty() {
            self.error(
                path,
                "no subnets; add at least one, such as \"A\": {\"cidr\": \"10.0.0.0/24\"}",
            );
        }
        for (name, value, path) in self.named(entries, path) {
            let index = self.subnets.len();
            self.check_name(name, &path, NameKind::Subnet);
            if let Err(message) = self.subnet_names.insert(name, &path, index, "subnet") {
                self.error(&path, message);
            }
            self.subnets.push(SubnetDraft {
                name,
                path: path.clone(),
                cidr: None,
                cidr6: None,
                ipv4: true,
                nodes: 0,
                impair: Impair::default(),
            });
            let Some(entries) = self.object(
                value,
                &path,
                "{\"cidr\": \"10.0.0.0/24\", \"hosts\": {\"A-1\": {}}}",
            ) else {
                continue;
            };
            let f = self.fields(entries, &path, SUBNET_FIELDS);
            // an IPv6-only subnet has "cidr6" alone
            let ipv6_only = f.get("cidr").is_none() && f.get("cidr6").is_some();
            self.subnets[index].ipv4 = !ipv6_only;
            if !ipv6_only {
                self.subnets[index].cidr = self
                    .require(
                        &f,
                        "cidr",
                        "the subnet's prefix, such as \"10.0.0.0/24\" (or \"cidr6\" alone for \
                         an IPv6-only subnet)",
                    )
                    .and_then(|(value, path)| self.prefix(value, &path));
            }
            self.subnets[index].cidr6 = f.get("cidr6").and_then(|(value, path)| {
                let net = self.prefix6(value, &path)?;
                if self.machines.len() > 1 {
                    self.error(
                        &path,
                        "IPv6 in a lab placed on several machines is not supported yet; remove \
                         \"cidr6\", or place the lab on one machine",
                    );
                    return None;
                }
                Some(net)
            });
            if let Some((value, path)) = f.get("impair") {
                self.subnets[index].impair = self.impair(value, &path);
            }
            let Some((value, path)) = f.get("hosts") else {
                continue;
            };
            let Some(hosts) = self.object(
                value,
                &path,
                "{\"A-1\": {}, \"A-2\": {\"image\": \"dvnet/host\"}}",
            ) else {
                continue;
            };
            for (name, value, path) in self.named(hosts, &path) {
                self.host(name, value, &path, index);
            }
        }
    }

    fn host(&mut self, name: &'a str, value: &'a Json, path: &Path, subnet: usize) {
        let index = self.hosts.len();
        self.check_name(name, path, NameKind::Node);
        if let Err(message) = self
            .node_names
            .insert(name, path, NodeRef::Host(index), "node")
        {
            self.error(path, message);
        }
        self.subnets[subnet].nodes += 1;
        let mut host = Host {
            name: name.to_owned(),
            subnet,
            ip: None,
            ip6: None,
            image: None,
            publish: Vec::new(),
            impair: Impair::default(),
            machine: 0,
        };
        if let Some(entries) = self.object(value, path, "{} or {\"image\": \"dvnet/host\"}") {
            let f = self.fields(entries, path, HOST_FIELDS);
            host.image = self.image(&f);
            host.machine = self.placement(&f);
            if let Some((value, path)) = f.get("impair") {
                host.impair = self.impair(value, &path);
            }
            host.publish = self.publish(&f, name);
            host.ip = f
                .get("ip")
                .and_then(|(value, path)| self.address(value, &path, subnet));
            host.ip6 = f
                .get("ip6")
                .and_then(|(value, path)| self.address6(value, &path, subnet));
        }
        self.hosts.push(host);
    }

    fn routers(&mut self, value: &'a Json, path: &Path) -> Vec<Router> {
        let Some(entries) = self.object(value, path, "{\"R-1\": {\"subnets\": [\"A\", \"B\"]}}")
        else {
            return Vec::new();
        };
        let named = self.named(entries, path);
        // Every node name first: firewall entries may name routers listed later.
        for (index, (name, _, path)) in named.iter().enumerate() {
            self.check_name(name, path, NameKind::Node);
            if let Err(message) = self
                .node_names
                .insert(name, path, NodeRef::Router(index), "node")
            {
                self.error(path, message);
            }
        }
        named
            .into_iter()
            .map(|(name, value, path)| self.router(name, value, &path))
            .collect()
    }

    fn router(&mut self, name: &str, value: &'a Json, path: &Path) -> Router {
        let mut router = Router {
            name: name.to_owned(),
            subnets: Vec::new(),
            ips: Vec::new(),
            ips6: Vec::new(),
            image: None,
            firewall: Firewall::default(),
            frr_config: None,
            publish: Vec::new(),
            impair: Vec::new(),
            machine: 0,
        };
        let Some(entries) = self.object(value, path, "{\"subnets\": [\"A\", \"B\"]}") else {
            return router;
        };
        let f = self.fields(entries, path, ROUTER_FIELDS);
        router.machine = self.placement(&f);
        // The names listed, known or not, and where.
        let mut listed: HashMap<&str, usize> = HashMap::new();
        let items = self
            .require(
                &f,
                "subnets",
                "the subnets it joins, such as [\"A\", \"B\"]",
            )
            .and_then(|(value, path)| Some((self.array(value, &path, "[\"A\", \"B\"]")?, path)));
        if let Some((items, path)) = items {
            if items.is_empty() {
                self.error(
                    &path,
                    "a router needs at least one subnet; list the subnets it joins, such as \
                     [\"A\", \"B\"]",
                );
            }
            for (i, item) in items.iter().enumerate() {
                let path = path.index(i);
                let Some(subnet_name) = self.string(item, &path) else {
                    continue;
                };
                if let Some(&first) = listed.get(subnet_name) {
                    self.error(
                        &path,
                        format!(
                            "subnet {subnet_name:?} is already listed at index {first}; a router \
                             joins a subnet once, remove one"
                        ),
                    );
                    continue;
                }
                listed.insert(subnet_name, i);
                match self.subnet_names.get(subnet_name) {
                    Some(subnet) => {
                        router.subnets.push(subnet);
                        self.subnets[subnet].nodes += 1;
                    }
                    None => self.unknown_subnet(subnet_name, &path),
                }
            }
        }
        router.ips = vec![None; router.subnets.len()];
        router.ips6 = vec![None; router.subnets.len()];
        if let Some((value, path)) = f.get("ip") {
            self.router_addresses(&mut router, &listed, value, &path, false);
        }
        if let Some((value, path)) = f.get("ip6") {
            self.router_addresses(&mut router, &listed, value, &path, true);
        }
        router.impair = vec![Impair::default(); router.subnets.len()];
        if let Some((value, path)) = f.get("impair") {
            self.router_impairments(&mut router, &listed, value, &path);
        }
        router.image = self.image(&f);
        router.publish = self.publish(&f, name);
        router.frr_config = f.get("frr_config").and_then(|(value, path)| {
            let text = self.string(value, &path)?;
            frr_config_file(&self.base_dir, text)
                .map_err(|message| self.error(&path, message))
                .ok()
        });
        router.firewall = f
            .get("fw_rules")
            .map(|(value, path)| self.firewall(value, &path))
            .unwrap_or_default();
        router
    }

    /// A router's `ip` (or with `six`, `ip6`): an object from subnet names to addresses.
    fn router_addresses(
        &mut self,
        router: &mut Router,
        listed: &HashMap<&str, usize>,
        value: &'a Json,
        path: &Path,
        six: bool,
    ) {
        let example = if six {
            "{\"A\": \"fd00:0:a::1\"}"
        } else {
            "{\"A\": \"10.0.0.1\"}"
        };
        let Some(entries) = self.object(value, path, example) else {
            return;
        };
        for (subnet_name, value, path) in self.named(entries, path) {
            match self.subnet_names.get(subnet_name) {
                Some(subnet) => {
                    if let Some(slot) = router.subnets.iter().position(|&s| s == subnet) {
                        if six {
                            router.ips6[slot] = self.address6(value, &path, subnet);
                        } else {
                            router.ips[slot] = self.address(value, &path, subnet);
                        }
                    } else {
                        self.error(
                            &path,
                            format!(
                                "router {:?} is not on subnet {subnet_name:?}; add {subnet_name:?} \
                                 to its \"subnets\" or remove this address",
                                router.name
                            ),
                        );
                    }
                }
                // Already reported in `subnets`.
                None if listed.contains_key(subnet_name) => {}
                None => self.unknown_subnet(subnet_name, &path),
            }
        }
    }

    /// A router's `impair`: an object from subnet names to impairments of its link there.
    fn router_impairments(
        &mut self,
        router: &mut Router,
        listed: &HashMap<&str, usize>,
        value: &'a Json,
        path: &Path,
    ) {
        let Some(entries) = self.object(value, path, "{\"A\": {\"loss\": \"5%\"}}") else {
            return;
        };
        for (subnet_name, value, path) in self.named(entries, path) {
            match self.subnet_names.get(subnet_name) {
                Some(subnet) => {
                    if let Some(slot) = router.subnets.iter().position(|&s| s == subnet) {
                        router.impair[slot] = self.impair(value, &path);
                    } else {
                        self.error(
                            &path,
                            format!(
                                "router {:?} is not on subnet {subnet_name:?}; add {subnet_name:?} \
                                 to its \"subnets\" or remove these impairments",
                                router.name
                            ),
                        );
                    }
                }
                // Already reported in `subnets`.
                None if listed.contains_key(subnet_name) => {}
                None => self.unknown_subnet(subnet_name, &path),
            }
        }
    }

    /// An `impair` object: `{"delay": "20ms", "loss": "1%", "rate": "10mbit", "seed": 7}`.
    fn impair(&mut self, value: &'a Json, path: &Path) -> Impair {
        let mut impair = Impair::default();
        let Some(entries) = self.object(
            value,
            path,
            "{\"delay\": \"20ms\", \"loss\": \"1%\", \"rate\": \"10mbit\"}",
        ) else {
            return impair;
        };
        let f = self.fields(entries, path, &crate::topology::impair::KEYS);
        for (key, value) in &f.found {
            let path = path.field(key);
            let text = match (*key, value) {
                ("seed", Json::Number(n)) => n.to_string(),
                (_, Json::String(text)) => text.clone(),
                ("seed", other) => {
                    self.expected(&path, "a whole number such as 7", other);
                    continue;
                }
                (_, Json::Number(n)) => {
                    let example = match *key {
                        "delay" | "jitter" => format!("\"{n}ms\""),
                        "rate" => format!("\"{n}mbit\""),
                        _ => format!("\"{n}%\""),
                    };
                    self.error(
                        &path,
                        format!(
                            "a bare number has no unit; write it as tc does, such as {example}"
                        ),
                    );
                    continue;
                }
                (_, other) => {
                    self.expected(
                        &path,
                        "a string such as \"20ms\", \"1%\" or \"10mbit\"",
                        other,
                    );
                    continue;
                }
            };
            if let Err(message) = impair.set(key, &text) {
                self.error(&path, message);
            }
        }
        if let Err(message) = impair.check() {
            self.error(path, message);
        }
        impair
    }

    fn unknown_subnet(&mut self, name: &str, path: &Path) {
        let mut hint = suggest(name, self.subnet_names.names());
        if hint.is_empty() && (1..=8).contains(&self.subnets.len()) {
            let names: Vec<String> = self
                .subnets
                .iter()
                .map(|s| format!("{:?}", s.name))
                .collect();
            hint = format!(" (the subnets are {})", names.join(", "));
        }
        self.error(path, format!("unknown subnet {name:?}{hint}"));
    }

    fn firewall(&mut self, value: &'a Json, path: &Path) -> Firewall {
        let Some(entries) = self.object(
            value,
            path,
            "{\"policy\": \"DROP\", \"accept\": [[\"A\", \"B\"]]}",
        ) else {
            return Firewall::default();
        };
        let f = self.fields(entries, path, FIREWALL_FIELDS);
        let policy = f.get("policy").and_then(|(value, path)| {
            let text = self.string(value, &path)?;
            if text.eq_ignore_ascii_case("accept") {
                Some(Policy::Accept)
            } else if text.eq_ignore_ascii_case("drop") {
                Some(Policy::Drop)
            } else {
                self.error(
                    &path,
                    format!("unknown policy {text:?}: expected \"ACCEPT\" or \"DROP\""),
                );
                None
            }
        });
        Firewall {
            policy: policy.unwrap_or_default(),
            accept: self.rules(f.get("accept")),
            drop: self.rules(f.get("drop")),
        }
    }

    /// An `accept` or `drop` list.
    fn rules(&mut self, field: Option<(&'a Json, Path)>) -> Vec<FwRule> {
        let Some((value, path)) = field else {
            return Vec::new();
        };
        let Some(items) = self.array(value, &path, "[[\"A\", \"B\"], \"C\"]") else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.rule(item, &path.index(i)))
            .collect()
    }

    /// One firewall entry: a name, `[src]`, `[src, dst]`, or `{src, dst, proto, dport}`.
    fn rule(&mut self, value: &'a Json, path: &Path) -> Option<FwRule> {
        let rule = |src, dst, proto, dport| FwRule {
            src,
            dst,
            proto,
            dport,
            origin: path.to_string(),
        };
        let rule = match value {
            Json::String(text) => Some(rule(self.endpoint(text, path)?, Endpoint::Any, None, None)),
            Json::Array(items) if (1..=2).contains(&items.len()) => {
                let src = self.side(&items[0], &path.index(0));
                let dst = match items.get(1) {
                    Some(item) => self.side(item, &path.index(1)),
                    None => Some(Endpoint::Any),
                };
                Some(rule(src?, dst?, None, None))
            }
            Json::Array(items) => {
                self.error(
                    path,
                    format!(
                        "expected [src] or [src, dst], found {} elements",
                        items.len()
                    ),
                );
                None
            }
            Json::Object(entries) => {
                let f = self.fields(entries, path, RULE_FIELDS);
                let mut side = |field| match f.get(field) {
                    Some((value, path)) => self.side(value, &path),
                    None => Some(Endpoint::Any),
                };
                let (src, dst) = (side("src"), side("dst"));
                let proto_field = f.get("proto");
                let proto = proto_field
                    .clone()
                    .and_then(|(value, path)| self.proto(value, &path));
                let dport = f.get("dport").and_then(|(value, path)| {
                    let port = self.port(value, &path)?;
                    let hint = match (&proto_field, proto) {
                        (_, Some(Proto::Tcp | Proto::Udp)) | (Some(_), None) => return Some(port),
                        (None, _) => "add \"proto\": \"tcp\" or \"udp\"",
                        (Some(_), Some(Proto::Icmp)) => "ICMP has no ports; use \"tcp\" or \"udp\"",
                    };
                    self.error(
                        &path,
                        format!("\"dport\" applies only to TCP and UDP: {hint}"),
                    );
                    None
                });
                Some(rule(src?, dst?, proto, dport))
            }
            other => {
                self.expected(
                    path,
                    "a name, a [src, dst] pair or an object \
                     {\"src\", \"dst\", \"proto\", \"dport\"}",
                    other,
                );
                None
            }
        }?;
        let ipv6 = self.subnets.iter().any(|s| s.cidr6.is_some());
        let message = match (&rule.src, &rule.dst) {
            (Endpoint::Cidr(_), Endpoint::Cidr6(_)) | (Endpoint::Cidr6(_), Endpoint::Cidr(_)) => {
                "one side is IPv4 and the other IPv6, so the entry would match nothing; write \
                 both sides in one family, or a name (a name stands for both)"
            }
            (Endpoint::Cidr6(_), _) | (_, Endpoint::Cidr6(_)) if !ipv6 => {
                "an IPv6 prefix, but no subnet has IPv6, so the entry would match nothing; give \
                 subnets a \"cidr6\" or write IPv4 prefixes"
            }
            _ => return Some(rule),
        };
        self.error(path, message);
        None
    }

    /// One side of a firewall entry.
    fn side(&mut self, value: &Json, path: &Path) -> Option<Endpoint> {
        match value {
            Json::String(text) => self.endpoint(text, path),
            other => {
                self.expected(
                    path,
                    "a subnet or node name, a CIDR, an address or \"*\"",
                    other,
                );
                None
            }
        }
    }

    fn endpoint(&mut self, text: &str, path: &Path) -> Option<Endpoint> {
        if text == "*" || text.eq_ignore_ascii_case("any") {
            return Some(Endpoint::Any);
        }
        match (self.subnet_names.get(text), self.node_names.get(text)) {
            (Some(subnet), None) => return Some(Endpoint::Subnet(subnet)),
            (None, Some(NodeRef::Host(host))) => return Some(Endpoint::Host(host)),
            (None, Some(NodeRef::Router(router))) => return Some(Endpoint::Router(router)),
            (Some(_), Some(_)) => {
                self.error(
                    path,
                    format!(
                        "{text:?} names both a subnet and a node; write the subnet's CIDR or the \
                         node's address instead"
                    ),
                );
                return None;
            }
            (None, None) => {}
        }
        if let Some(net) = parse_prefix6(text) {
            return Some(Endpoint::Cidr6(net));
        }
        let parsed = if text.contains('/') {
            parse_prefix(text)
        } else if let Ok(ip) = text.parse::<Ipv4Addr>() {
            Ok(Ipv4Net::from(ip))
        } else {
            let hint = suggest(
                text,
                self.subnet_names.names().chain(self.node_names.names()),
            );
            Err(format!(
                "unknown subnet or node {text:?}{hint}; an entry may also be a CIDR such as \
                 \"10.0.0.0/24\" or \"fd00:0:a::/64\", an address, or \"*\""
            ))
        };
        parsed
            .map(Endpoint::Cidr)
            .map_err(|message| self.error(path, message))
            .ok()
    }

    fn proto(&mut self, value: &Json, path: &Path) -> Option<Proto> {
        let text = self.string(value, path)?;
        match text.to_ascii_lowercase().as_str() {
            "icmp" => Some(Proto::Icmp),
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => {
                self.error(
                    path,
                    format!("unknown protocol {text:?}: expected \"icmp\", \"tcp\" or \"udp\""),
                );
                None
            }
        }
    }

    fn port(&mut self, value: &Json, path: &Path) -> Option<u16> {
        const EXPECTED: &str = "a port number from 1 to 65535";
        match value {
            Json::Number(n) => {
                let port = n
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|&p| p != 0);
                if port.is_none() {
                    self.error(path, format!("expected {EXPECTED}, found {n}"));
                }
                port
            }
            Json::String(text) if text.parse::<u16>().is_ok() => {
                self.error(
                    path,
                    format!(
                        "expected {EXPECTED}, found the string {text:?}; write it without quotes"
                    ),
                );
                None
            }
            other => {
                self.expected(path, EXPECTED, other);
                None
            }
        }
    }

    /// A subnet's (or the uplink's) prefix, normalized; at most [`PREFIX_MAX`] long.
    fn prefix(&mut self, value: &Json, path: &Path) -> Option<Ipv4Net> {
        let text = self.string(value, path)?;
        let message = match parse_prefix(text) {
            Ok(net) if let Some((range, what)) = special_range(net) => format!(
                "{net} overlaps {range}, {what}: nodes cannot use it as a subnet; use a private \
                 prefix such as 10.0.0.0/24 or 192.168.1.0/24"
            ),
            Ok(net) if net.prefix_len() <= PREFIX_MAX => return Some(net),
            Ok(net) => format!(
                "prefix /{} is too long: a subnet needs /{PREFIX_MAX} or shorter to hold nodes \
                 besides its network and broadcast addresses (/31 and /32 are not supported)",
                net.prefix_len()
            ),
            Err(message) => message,
        };
        self.error(path, message);
        None
    }

    /// An explicit address (`ip`) of a node on a subnet.
    fn address(&mut self, value: &Json, path: &Path, subnet: usize) -> Option<Ipv4Addr> {
        let text = self.string(value, path)?;
        let ip = match parse_address(text) {
            Ok(ip) => ip,
            Err(message) => {
                self.error(path, message);
                return None;
            }
        };
        let SubnetDraft {
            name, cidr, ipv4, ..
        } = self.subnets[subnet];
        if !ipv4 {
            self.error(
                path,
                format!(
                    "subnet {name:?} is IPv6-only (it has no \"cidr\"); give it an IPv4 prefix, \
                     or write this address as \"ip6\""
                ),
            );
            return None;
        }
        if let Some(net) = cidr {
            let what = if !net.contains(&ip) {
                "outside"
            } else if ip == net.network() {
                "the network address of"
            } else if ip == net.broadcast() {
                "the broadcast address of"
            } else {
                ""
            };
            if !what.is_empty() {
                let first = Ipv4Addr::from(u32::from(net.network()) + 1);
                let last = Ipv4Addr::from(u32::from(net.broadcast()) - 1);
                self.error(
                    path,
                    format!(
                        "{ip} is {what} subnet {name:?} ({net}); use an address from {first} to \
                         {last}"
                    ),
                );
                return None;
            }
        }
        if let Some(first) = self.addresses.get(&ip) {
            let message = format!(
                "{ip} is already the address at {first}; explicit addresses must be unique"
            );
            self.error(path, message);
            return None;
        }
        self.addresses.insert(ip, path.clone());
        Some(ip)
    }

    /// A subnet's IPv6 prefix (`cidr6`), normalized; at most [`PREFIX6_MAX`] long.
    fn prefix6(&mut self, value: &Json, path: &Path) -> Option<Ipv6Net> {
        let text = self.string(value, path)?;
        let message = match text.parse::<Ipv6Net>().map(|n| n.trunc()) {
            Ok(net) if let Some((range, what)) = special_range6(net) => format!(
                "{net} overlaps {range}, {what}: nodes cannot use it as a subnet; use a unique \
                 local prefix such as fd00:0:a::/64"
            ),
            Ok(net) if net.prefix_len() <= PREFIX6_MAX => return Some(net),
            Ok(net) => format!(
                "prefix /{} is too long: an IPv6 subnet needs /{PREFIX6_MAX} or shorter (/64 is \
                 usual; /127 and /128 are not supported)",
                net.prefix_len()
            ),
            Err(_) if text.parse::<Ipv6Addr>().is_ok() => {
                format!("{text:?} has no prefix length; write a CIDR such as \"{text}/64\"")
            }
            Err(_) if text.parse::<Ipv4Net>().is_ok() || text.parse::<Ipv4Addr>().is_ok() => {
                format!(
                    "{text:?} is IPv4: \"cidr6\" takes the subnet's IPv6 prefix, such as \
                     \"fd00:0:a::/64\" (the IPv4 one goes in \"cidr\")"
                )
            }
            Err(_) => {
                format!("invalid IPv6 CIDR {text:?}: expected a prefix such as \"fd00:0:a::/64\"")
            }
        };
        self.error(path, message);
        None
    }

    /// An explicit IPv6 address (`ip6`) of a node on a subnet.
    fn address6(&mut self, value: &Json, path: &Path, subnet: usize) -> Option<Ipv6Addr> {
        let text = self.string(value, path)?;
        let Ok(ip) = text.parse::<Ipv6Addr>() else {
            let message = if text.parse::<Ipv4Addr>().is_ok() {
                format!("{text:?} is IPv4: \"ip6\" takes an IPv6 address (\"ip\" the IPv4 one)")
            } else if let Some((addr, _)) = text.split_once('/')
                && addr.parse::<Ipv6Addr>().is_ok()
            {
                format!(
                    "{text:?} has a prefix length; write the address alone, \"{addr}\" (the \
                     subnet gives the prefix)"
                )
            } else {
                format!(
                    "invalid IPv6 address {text:?}: expected an address such as \
                     \"fd00:0:a::10\""
                )
            };
            self.error(path, message);
            return None;
        };
        let SubnetDraft {
            name, cidr6, cidr, ..
        } = self.subnets[subnet];
        match cidr6 {
            None if cidr.is_some() => {
                self.error(
                    path,
                    format!(
                        "subnet {name:?} has no IPv6 prefix; add \"cidr6\" to it (such as \
                         \"fd00:0:a::/64\") or remove this address"
                    ),
                );
                return None;
            }
            Some(net) if !net.contains(&ip) || ip == net.network() => {
                let what = if net.contains(&ip) {
                    "the network address (subnet-router anycast) of"
                } else {
                    "outside"
                };
                self.error(
                    path,
                    format!(
                        "{ip} is {what} subnet {name:?} ({net}); use an address such as {}",
                        Ipv6Addr::from(u128::from(net.network()) + 10)
                    ),
                );
                return None;
            }
            _ => {}
        }
        if let Some(first) = self.addresses6.get(&ip) {
            let message = format!(
                "{ip} is already the address at {first}; explicit addresses must be unique"
            );
            self.error(path, message);
            return None;
        }
        self.addresses6.insert(ip, path.clone());
        Some(ip)
    }

    /// Subnets must not share addresses, in either family.
    fn check_overlaps(&mut self) {
        let v4: Vec<(usize, IpNet)> = self
            .subnets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, IpNet::V4(s.cidr?))))
            .collect();
        let v6: Vec<(usize, IpNet)> = self
            .subnets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, IpNet::V6(s.cidr6?))))
            .collect();
        self.check_overlaps_in(v4, "cidr");
        self.check_overlaps_in(v6, "cidr6");
    }

    /// Sorted by address, a prefix overlaps another only if the widest one before it
    /// contains it. Reported at `field` of the subnet written later.
    fn check_overlaps_in(&mut self, mut sorted: Vec<(usize, IpNet)>, field: &str) {
        sorted.sort_by_key(|&(_, net)| (net.network(), net.prefix_len()));
        let mut widest: Option<(usize, IpNet)> = None;
        for (index, net) in sorted {
            match widest {
                Some((other, other_net)) if other_net.contains(&net.network()) => {
                    // Reported at the one written later.
                    let (first, first_net, later, later_net) = if other < index {
                        (other, other_net, index, net)
                    } else {
                        (index, net, other, other_net)
                    };
                    let message = format!(
                        "{later_net} overlaps subnet {:?} ({first_net}); subnets need disjoint \
                         prefixes",
                        self.subnets[first].name
                    );
                    let path = self.subnets[later].path.join(field);
                    self.error(&path, message);
                }
                _ => widest = Some((index, net)),
            }
        }
    }

    /// Every subnet has an address for each of its nodes.
    fn check_capacity(&mut self) {
        for index in 0..self.subnets.len() {
            let SubnetDraft {
                ref path,
                cidr,
                nodes,
                ..
            } = self.subnets[index];
            let needed = u64::try_from(nodes).unwrap_or(u64::MAX);
            let usable = cidr.map_or(u64::MAX, |net| (1_u64 << (32 - net.prefix_len())) - 2);
            if let Some(net) = cidr
                && needed > usable
            {
                let bits = needed
                    .saturating_add(2)
                    .next_power_of_two()
                    .trailing_zeros();
                let message = format!(
                    "subnet too small: {nodes} nodes need addresses but /{} has {usable}; use /{} \
                     or shorter",
                    net.prefix_len(),
                    32_u32.saturating_sub(bits)
                );
                let path = path.join("cidr");
                self.error(&path, message);
            }
            let Some(net6) = self.subnets[index].cidr6 else {
                continue;
            };
            // every address but the network's (no broadcast in IPv6); wider than 2^63 is
            // plenty
            let host_bits = 128 - u32::from(net6.prefix_len());
            let usable = 1_u64.checked_shl(host_bits).map_or(u64::MAX, |n| n - 1);
            if needed > usable {
                let bits = needed
                    .saturating_add(1)
                    .next_power_of_two()
                    .trailing_zeros();
                let message = format!(
                    "subnet too small: {nodes} nodes need IPv6 addresses but /{} has {usable}; \
                     use /{} or shorter (/64 is usual)",
                    net6.prefix_len(),
                    128_u32.saturating_sub(bits)
                );
                let path = self.subnets[index].path.join("cidr6");
                self.error(&path, message);
            }
        }
    }

    /// Every subnet fits on a Linux bridge. (The uplink, absent from the file, is not checked.)
    fn check_bridges(&mut self) {
        for index in 0..self.subnets.len() {
            let SubnetDraft {
                ref path, nodes, ..
            } = self.subnets[index];
            if nodes > BRIDGE_PORTS_MAX {
                let message = format!(
                    "{nodes} members (hosts and routers) on one subnet, more than the \
                     {BRIDGE_PORTS_MAX} ports a Linux bridge holds; split it into several subnets \
                     joined by a router"
                );
                let path = path.clone();
                self.error(&path, message);
            }
        }
    }

    /// A name's length and characters: nothing that breaks a kernel or file name, or that
    /// would start a new line in a file dvnet writes (`/etc/hosts`, FRR configurations).
    fn check_name(&mut self, name: &str, path: &Path, kind: NameKind) {
        let (max, what) = match kind {
            NameKind::Network => (NETWORK_NAME_MAX, "the network name"),
            NameKind::Subnet => (NAME_MAX, "subnet name"),
            NameKind::Node => (NAME_MAX, "node name"),
            NameKind::Machine => (NAME_MAX, "machine name"),
        };
        let refused = |c: char| c.is_control() || (kind == NameKind::Node && c.is_whitespace());
        if let Some(c) = name.chars().find(|&c| refused(c)) {
            let why = match kind {
                NameKind::Node => {
                    "a node's name becomes its hostname and a line of /etc/hosts, so it cannot \
                     hold whitespace or control characters; use letters, digits and \"-\", such \
                     as \"R-1\""
                }
                NameKind::Subnet | NameKind::Machine => {
                    "control characters are not allowed; remove it"
                }
                NameKind::Network => "control characters are not allowed (spaces are); remove it",
            };
            self.error(path, format!("{what} holds {}: {why}", describe(c)));
        }
        let length = name.chars().count();
        if length > max {
            let why = if kind == NameKind::Node {
                " (a node's name becomes its hostname and part of its namespace and container \
                 names)"
            } else {
                ""
            };
            self.error(
                path,
                format!("{what} is {length} characters long, more than {max}{why}; shorten it"),
            );
        }
    }

    /// The uplink shares no address with a subnet.
    fn check_outbound(&mut self, uplink: Ipv4Net, path: &Path) {
        if let Some(s) = self
            .subnets
            .iter()
            .find(|s| sanitize(s.name) == super::UPLINK)
        {
            let message = format!(
                "with outbound access on, the name {:?} is taken by the uplink; rename this subnet",
                s.name
            );
            let at = s.path.clone();
            self.error(&at, message);
        }
        self.check_uplink_overlaps(IpNet::V4(uplink), path);
    }

    /// The uplink's IPv6 prefix: in a lab with IPv6, sharing no address with a subnet.
    fn check_outbound6(&mut self, uplink: Ipv6Net, path: &Path) {
        if self.subnets.iter().all(|s| s.cidr6.is_none()) {
            self.error(
                path,
                "the uplink gets IPv6, but no subnet has a \"cidr6\": give subnets an IPv6 \
                 prefix, or remove outbound_access.cidr6",
            );
        }
        self.check_uplink_overlaps(IpNet::V6(uplink), path);
    }

    /// The uplink's prefix of one family overlaps no subnet's prefix of that family.
    fn check_uplink_overlaps(&mut self, uplink: IpNet, path: &Path) {
        let clashes: Vec<String> = self
            .subnets
            .iter()
            .filter_map(|s| {
                let net = match uplink {
                    IpNet::V4(_) => IpNet::V4(s.cidr?),
                    IpNet::V6(_) => IpNet::V6(s.cidr6?),
                };
                (net.contains(&uplink.network()) || uplink.contains(&net.network())).then(|| {
                    format!(
                        "{uplink} overlaps subnet {:?} ({net}); pick an uplink prefix outside \
                         every subnet",
                        s.name
                    )
                })
            })
            .collect();
        for message in clashes {
            self.error(path, message);
        }
    }

    /// The fields of an object of the format, matched case-insensitively against `known`.
    fn fields(
        &mut self,
        entries: &'a [(String, Json)],
        path: &Path,
        known: &[&'static str],
    ) -> Fields<'a> {
        let mut found: Vec<(&'static str, &'a Json)> = Vec::new();
        for (key, value) in entries {
            match known.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                Some(&field) if found.iter().any(|(f, _)| *f == field) => self.error(
                    &path.field(key),
                    format!("field {field:?} is given twice (case does not matter); remove one"),
                ),
                Some(&field) => found.push((field, value)),
                None => {
                    let mut hint = suggest(key, known.iter().copied());
                    if hint.is_empty() {
                        hint = format!(" (expected one of: {})", known.join(", "));
                    }
                    self.error(&path.field(key), format!("unknown field {key:?}{hint}"));
                }
            }
        }
        Fields {
            path: path.clone(),
            found,
        }
    }

    /// The entries of an object whose keys are names, without (and reporting) empty and
    /// repeated names.
    fn named(
        &mut self,
        entries: &'a [(String, Json)],
        path: &Path,
    ) -> Vec<(&'a str, &'a Json, Path)> {
        let mut named: Vec<(&'a str, &'a Json, Path)> = Vec::with_capacity(entries.len());
        let mut seen: HashSet<&str> = HashSet::with_capacity(entries.len());
        for (name, value) in entries {
            let path = path.name(name);
            if name.is_empty() {
                self.error(&path, "a name cannot be empty");
            } else if !seen.insert(name) {
                self.error(
                    &path,
                    format!(
                        "duplicate key {name:?}: it appears more than once here; remove or \
                         rename one"
                    ),
                );
            } else {
                named.push((name, value, path));
            }
        }
        named
    }

    fn require(&mut self, f: &Fields<'a>, field: &str, what: &str) -> Option<(&'a Json, Path)> {
        let found = f.get(field);
        if found.is_none() {
            let place = if f.path.is_root() { "top-level " } else { "" };
            self.error(&f.path, format!("missing {place}field {field:?}: {what}"));
        }
        found
    }

    /// `routing` and `automatic_routing`, which must agree when both are given.
    fn routing(&mut self, f: &Fields<'a>) -> Routing {
        let automatic = f
            .get("automatic_routing")
            .and_then(|(value, path)| Some((self.boolean(value, &path)?, path)));
        let Some((value, path)) = f.get("routing") else {
            return if automatic.is_some_and(|(on, _)| on) {
                Routing::Static
            } else {
                Routing::None
            };
        };
        let Some(text) = self.string(value, &path) else {
            return Routing::None;
        };
        let routing = match text.to_ascii_lowercase().as_str() {
            "static" => Routing::Static,
            "ospf" => Routing::Ospf,
            "none" => Routing::None,
            _ => {
                self.error(
                    &path,
                    format!("unknown routing {text:?}: expected \"static\", \"ospf\" or \"none\""),
                );
                return Routing::None;
            }
        };
        if let Some((on, auto_path)) = automatic
            && on != (routing == Routing::Static)
        {
            self.error(
                &auto_path,
                format!(
                    "automatic_routing {on} contradicts \"routing\": {text:?}; keep one of them \
                     (\"routing\": \"static\" is automatic_routing true)"
                ),
            );
        }
        routing
    }

    /// An optional `true`/`false` field, false when absent.
    fn flag(&mut self, f: &Fields<'a>, field: &str) -> bool {
        f.get(field)
            .and_then(|(value, path)| self.boolean(value, &path))
            .unwrap_or(false)
    }

    /// An optional `image` field.
    fn image(&mut self, f: &Fields<'a>) -> Option<String> {
        let (value, path) = f.get("image")?;
        let image = self.string(value, &path)?;
        if image.is_empty() {
            self.error(
                &path,
                "an image cannot be empty; name one, or remove the field to run the node in a \
                 namespace",
            );
            return None;
        }
        Some(image.to_owned())
    }

    /// An object; `example` shows one in the error.
    fn object<'v>(
        &mut self,
        value: &'v Json,
        path: &Path,
        example: &str,
    ) -> Option<&'v [(String, Json)]> {
        if let Json::Object(entries) = value {
            Some(entries)
        } else {
            self.expected(path, &format!("an object such as {example}"), value);
            None
        }
    }

    /// An array; `example` shows one in the error.
    fn array<'v>(&mut self, value: &'v Json, path: &Path, example: &str) -> Option<&'v [Json]> {
        if let Json::Array(items) = value {
            Some(items)
        } else {
            self.expected(path, &format!("an array such as {example}"), value);
            None
        }
    }

    fn string<'v>(&mut self, value: &'v Json, path: &Path) -> Option<&'v str> {
        if let Json::String(text) = value {
            Some(text)
        } else {
            self.expected(path, "a string", value);
            None
        }
    }

    fn boolean(&mut self, value: &Json, path: &Path) -> Option<bool> {
        match value {
            Json::Bool(b) => Some(*b),
            Json::String(text) if text == "true" || text == "false" => {
                self.error(
                    path,
                    format!(
                        "expected true or false, found the string {text:?}; write it without quotes"
                    ),
                );
                None
            }
            other => {
                self.expected(path, "true or false", other);
                None
            }
        }
    }

    fn expected(&mut self, path: &Path, what: &str, found: &Json) {
        self.error(path, format!("expected {what}, found {}", found.kind()));
    }
}

/// What a name names, for [`Validator::check_name`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum NameKind {
    Network,
    Subnet,
    Node,
    Machine,
}

/// A character refused in a name, for a message: `a newline (U+000A)`.
fn describe(c: char) -> String {
    let what = match c {
        '\n' => "a newline",
        '\r' => "a carriage return",
        '\t' => "a tab",
        ' ' => "a space",
        c if c.is_control() => "a control character",
        _ => "a whitespace character",
    };
    format!("{what} (U+{:04X})", u32::from(c))
}

/// A router's `frr_config`: `text`, relative to `base_dir` (the topology file's directory),
/// names a regular file of at most [`FRR_CONFIG_MAX`] bytes of UTF-8 text that lies under
/// `base_dir` once symlinks are resolved. dvnet reads it as root and copies it into a
/// root-owned directory, so a path such as `/etc/shadow`, `../x` or a symlink leading out
/// is refused. Returns the resolved (canonical) path. Messages never quote the contents.
///
/// This is the one place that decides which paths are allowed: a later option to read
/// configurations from elsewhere relaxes the two "outside" checks here.
fn frr_config_file(base_dir: &std::path::Path, text: &str) -> Result<std::path::PathBuf, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let base_dir = if base_dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        base_dir
    };
    let outside = || {
        format!(
            "{text:?} is outside the topology file's directory: dvnet reads FRR configurations \
             as root, so the file must be under the topology file's directory (subdirectories \
             are fine); move it there and give its path relative to the topology file"
        )
    };
    let base = base_dir.canonicalize().map_err(|e| {
        format!(
            "cannot resolve the topology file's directory {}: {e}",
            base_dir.display()
        )
    })?;
    // Refused before the file system is asked anything about it.
    if !lexically_under(&base, std::path::Path::new(text)) {
        return Err(outside());
    }
    let file = base_dir.join(text);
    let Ok(resolved) = file.canonicalize() else {
        return Err(format!(
            "no FRR configuration at {} (paths are relative to the topology file)",
            file.display()
        ));
    };
    // A symlink may lead out.
    if !resolved.starts_with(&base) {
        return Err(outside());
    }
    let not_regular = || format!("{text:?} is not a regular file; name an FRR configuration file");
    let cannot_read = |e: std::io::Error| format!("cannot read {text:?}: {e}");
    // Checked before opening (opening a device may do something), and again on what was
    // opened, without blocking (it may have been replaced by a FIFO meanwhile).
    if !std::fs::metadata(&resolved).map_err(cannot_read)?.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&resolved)
        .map_err(cannot_read)?;
    let meta = file.metadata().map_err(cannot_read)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let too_large = || {
        format!(
            "{text:?} is larger than the {} MiB an FRR configuration may hold",
            FRR_CONFIG_MAX >> 20
        )
    };
    if meta.len() > FRR_CONFIG_MAX {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(FRR_CONFIG_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > FRR_CONFIG_MAX {
        return Err(too_large());
    }
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(format!(
            "{text:?} is not UTF-8 text (invalid byte at offset {}); an FRR configuration is a \
             text file",
            e.valid_up_to()
        ));
    }
    Ok(resolved)
}

/// Whether `relative`, joined to the directory `base` and with `.` and `..` resolved without
/// following symlinks, stays under `base`. An absolute `relative` replaces `base`.
fn lexically_under(base: &std::path::Path, relative: &std::path::Path) -> bool {
    use std::path::Component;
    let mut path = std::path::PathBuf::new();
    for component in base.join(relative).components() {
        match component {
            Component::ParentDir => {
                path.pop();
            }
            Component::CurDir => {}
            other => path.push(other),
        }
    }
    path.starts_with(base)
}

/// An IPv4 prefix, normalized to its network address.
fn parse_prefix(text: &str) -> Result<Ipv4Net, String> {
    if let Ok(net) = text.parse::<Ipv4Net>() {
        Ok(net.trunc())
    } else if text.parse::<Ipv6Net>().is_ok() || text.parse::<Ipv6Addr>().is_ok() {
        Err(ipv6(text))
    } else if text.parse::<Ipv4Addr>().is_ok() {
        Err(format!(
            "{text:?} has no prefix length; write a CIDR such as \"{text}/24\""
        ))
    } else {
        Err(format!(
            "invalid CIDR {text:?}: expected an IPv4 prefix such as \"10.0.0.0/24\""
        ))
    }
}

/// The special range `net` overlaps, if any: addresses no segment of nodes can use.
fn special_range(net: Ipv4Net) -> Option<(Ipv4Net, &'static str)> {
    const SPECIAL: [(&str, &str); 4] = [
        ("0.0.0.0/8", "\"this network\" (RFC 1122)"),
        ("127.0.0.0/8", "the loopback range"),
        ("224.0.0.0/4", "the multicast range"),
        (
            "240.0.0.0/4",
            "the reserved range (and the broadcast address)",
        ),
    ];
    SPECIAL.iter().find_map(|&(range, what)| {
        let range: Ipv4Net = range.parse().expect("a valid prefix");
        (range.contains(&net.network()) || net.contains(&range.network())).then_some((range, what))
    })
}

/// An IPv4 address, alone.
fn parse_address(text: &str) -> Result<Ipv4Addr, String> {
    text.parse::<Ipv4Addr>().map_err(|_| {
        if text.parse::<Ipv6Addr>().is_ok() {
            ipv6(text)
        } else if let Some((addr, _)) = text.split_once('/')
            && addr.parse::<Ipv4Addr>().is_ok()
        {
            format!(
                "{text:?} has a prefix length; write the address alone, \"{addr}\" (the subnet \
                 gives the prefix)"
            )
        } else {
            format!("invalid IPv4 address {text:?}: expected an address such as \"10.0.0.10\"")
        }
    })
}

fn ipv6(text: &str) -> String {
    format!(
        "{text:?} is IPv6: IPv6 prefixes go in \"cidr6\" and addresses in \"ip6\", beside the \
         IPv4 ones"
    )
}

/// An IPv6 prefix or address (as a /128), normalized; `None` when `text` is neither.
fn parse_prefix6(text: &str) -> Option<Ipv6Net> {
    text.parse::<Ipv6Net>()
        .map(|n| n.trunc())
        .ok()
        .or_else(|| text.parse::<Ipv6Addr>().ok().map(Ipv6Net::from))
}

/// The special IPv6 range `net` overlaps, if any: addresses no segment of nodes can use.
fn special_range6(net: Ipv6Net) -> Option<(Ipv6Net, &'static str)> {
    const SPECIAL: [(&str, &str); 3] = [
        (
            "::/8",
            "the reserved range (unspecified, loopback, IPv4-mapped)",
        ),
        (
            "fe80::/10",
            "the link-local range (dvnet gives every link its own)",
        ),
        ("ff00::/8", "the multicast range"),
    ];
    SPECIAL.iter().find_map(|&(range, what)| {
        let range: Ipv6Net = range.parse().expect("a valid prefix");
        (range.contains(&net.network()) || net.contains(&range.network())).then_some((range, what))
    })
}

/// Names a message lists before it says how many more there are.
const NAMES_LISTED: usize = 20;

/// `no node "x" (did you mean "y"?); its nodes are a, b, …`: what `exec`, `capture` and the
/// like say of a node a network does not have. A large network's list stops after
/// [`NAMES_LISTED`] names and says how many more there are.
#[must_use]
pub fn no_such_node(node: &str, names: &[&str]) -> String {
    let listed = names[..names.len().min(NAMES_LISTED)].join(", ");
    let more = match names.len().saturating_sub(NAMES_LISTED) {
        0 => String::new(),
        more => format!(" and {more} more (`dvnet inspect` lists them)"),
    };
    format!(
        "no node {node:?}{}; its nodes are {listed}{more}",
        suggest(node, names.iter().copied())
    )
}

/// ` (did you mean "X"?)` when some candidates are close to `word`, else nothing. Close: a
/// third of the characters differ at most, and never all of them.
fn suggest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> String {
    let word_lower = word.to_lowercase();
    let length = word.chars().count();
    let limit = (length / 3).max(1);
    let mut best: Vec<(usize, &str)> = candidates
        .map(|c| (levenshtein(&word_lower, &c.to_lowercase()), c))
        .filter(|&(distance, _)| distance <= limit && distance < length)
        .collect();
    best.sort_unstable();
    best.dedup();
    let Some(&(closest, _)) = best.first() else {
        return String::new();
    };
    let names: Vec<String> = best
        .iter()
        .take_while(|(d, _)| *d == closest)
        .map(|(_, c)| format!("{c:?}"))
        .collect();
    match names.as_slice() {
        [one] => format!(" (did you mean {one}?)"),
        [first @ .., last] if names.len() <= 3 => {
            format!(" (did you mean {} or {last}?)", first.join(", "))
        }
        _ => String::new(),
    }
}

/// The edit distance between two strings, in characters.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `8080:80/tcp` → a published port.
fn parse_publish(text: &str) -> Result<Publish, &'static str> {
    let (ports, proto) = match text.split_once('/') {
        Some((ports, proto)) => (ports, proto),
        None => (text, "tcp"),
    };
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return Err("the protocol must be tcp or udp"),
    };
    let (host, node) = ports
        .split_once(':')
        .ok_or("expected two ports separated by ':'")?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or("ports are numbers from 1 to 65535")
    };
    Ok(Publish {
        host_port: port(host)?,
        node_port: port(node)?,
        proto,
    })
}

fn proto_name(p: Proto) -> &'static str {
    match p {
        Proto::Icmp => "icmp",
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

#[cfg(test)]
mod tests {
    use super::{levenshtein, no_such_node, suggest};

    #[test]
    fn levenshtein_counts_edits() {
        assert_eq!(levenshtein("cidrr", "cidr"), 1);
        assert_eq!(levenshtein("routres", "routers"), 2);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("école", "ecole"), 1);
    }

    #[test]
    fn suggestions_name_the_closest_candidates() {
        let subnets = ["A", "B", "servers"];
        assert_eq!(
            suggest("server", subnets.into_iter()),
            r#" (did you mean "servers"?)"#
        );
        assert_eq!(
            suggest("R-3", ["R-1", "R-2"].into_iter()),
            r#" (did you mean "R-1" or "R-2"?)"#
        );
        assert_eq!(suggest("a", subnets.into_iter()), r#" (did you mean "A"?)"#);
        assert_eq!(
            suggest("D", subnets.into_iter()),
            "",
            "a different name altogether"
        );
        assert_eq!(suggest("firewall", subnets.into_iter()), "");
        assert_eq!(
            suggest("ab-9", ["ab-1", "ab-2", "ab-3", "ab-4"].into_iter()),
            "",
            "too many"
        );
    }

    #[test]
    fn an_unknown_node_is_answered_with_the_closest_names_and_a_bounded_list() {
        assert_eq!(
            no_such_node("r9", &["r1", "h1"]),
            r#"no node "r9" (did you mean "r1"?); its nodes are r1, h1"#
        );
        let many: Vec<String> = (1..=1000).map(|i| format!("r{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let said = no_such_node("x", &many);
        assert!(
            said.ends_with("r19, r20 and 980 more (`dvnet inspect` lists them)"),
            "{said}"
        );
        assert!(!said.contains("r21"), "{said}");
    }
}
