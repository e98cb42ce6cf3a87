//! Names of the kernel objects a network owns. Everything a network creates carries its id,
//! so `down` can find it after a crash and never touches anything else.
//!
//! | object | name | example |
//! |---|---|---|
//! | fabric namespace (the segments) | `dv-<id>` | `dv-test-net-0` |
//! | node namespace | `dv-<id>.<node>` | `dv-test-net-0.r-1` |
//! | container | `dv-<id>.<node>` | `dv-test-net-0.a-1` |
//! | interface in a node | `eth<node>-<subnet>` (original dvnet) or `eth<k>` | `ethr-1-a`, `eth1` |
//! | segment bridge (fabric) | `br-<subnet>` or `br<k>` | `br-a` |
//! | fabric port (fabric) | `<node>.<subnet>` or `p<link>` | `r-1.a` |
//! | VXLAN port of a segment spanning machines (fabric) | `vx-<subnet>` or `vx<k>` | `vx-c` |
//!
//! `<id>`, `<node>` and `<subnet>` are the sanitized forms (lowercase letters, digits and
//! `-`), so `.` separates them unambiguously. Linux limits interface names to 15 bytes; where
//! the readable form is longer, the short form is used: `eth<k>` is the node's k-th interface
//! (0-based, in the order of the router's `subnets`), `br<k>` the k-th subnet of the file,
//! `p<link>` the link's number. `dvnet inspect` shows every name.

use crate::topology::sanitize;

/// The longest interface name Linux accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Prefix of every namespace and container dvnet creates.
pub const PREFIX: &str = "dv-";

/// Whether `text` is a network id: what [`crate::topology::network_id`] makes of a name
/// (lowercase ASCII letters, digits and single `-` inside, at most 24 characters), and
/// therefore its own id. Only such ids ever become part of a path or an object's name.
#[must_use]
pub fn is_network_id(text: &str) -> bool {
    crate::topology::network_id(text).as_deref() == Some(text)
}

/// FNV-1a of `bytes`: a hash stable across builds and versions, for numbers derived from
/// names (VXLAN ports and VNIs, the indexes of joining containers).
#[must_use]
pub fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The namespace holding a network's segments.
#[must_use]
pub fn fabric_netns(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// The namespace (or container name) of a node.
#[must_use]
pub fn node_netns(id: &str, node: &str) -> String {
    format!("{PREFIX}{id}.{}", sanitize(node))
}

/// Whether `name` is a namespace of the network `id` (its fabric or one of its nodes).
#[must_use]
pub fn belongs_to(name: &str, id: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix(id))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The network id of a dvnet namespace name, if it is one.
#[must_use]
pub fn network_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PREFIX)?;
    let id = rest.split('.').next()?;
    (!id.is_empty()).then_some(id)
}

/// The interface of `node` on `subnet`, its `position`-th interface.
#[must_use]
pub fn node_ifname(node: &str, subnet: &str, position: usize) -> String {
    let name = format!("eth{}-{}", sanitize(node), sanitize(subnet));
    if name.len() <= IFNAME_MAX {
        name
    } else {
        format!("eth{position}")
    }
}

/// The VXLAN port of the `index`-th subnet's bridge (a lab on several machines).
#[must_use]
pub fn tunnel_ifname(subnet: &str, index: usize) -> String {
    let name = format!("vx-{}", sanitize(subnet));
    if name.len() <= IFNAME_MAX {
        name
    } else {
        format!("vx{index}")
    }
}

/// The bridge of the `index`-th subnet.
#[must_use]
pub fn bridge_ifname(subnet: &str, index: usize) -> String {
    let name = format!("br-{}", sanitize(subnet));
    if name.len() <= IFNAME_MAX {
        name
    } else {
        format!("br{index}")
    }
}

/// The fabric-side end of `node`'s link `link` on `subnet`.
#[must_use]
pub fn fabric_port_ifname(node: &str, subnet: &str, link: u32) -> String {
    let name = format!("{}.{}", sanitize(node), sanitize(subnet));
    if name.len() <= IFNAME_MAX {
        name
    } else {
        format!("p{link}")
    }
}

/// The host's end of a network's uplink (outbound access): `dv-<id>` when it fits, else the
/// id's first 8 characters and a hash of the rest.
#[must_use]
pub fn uplink_host_ifname(id: &str) -> String {
    let name = format!("{PREFIX}{id}");
    if name.len() <= IFNAME_MAX {
        return name;
    }
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{PREFIX}{}{:04x}", &id[..8], hash & 0xffff)
}

/// A deterministic, locally administered MAC for an interface holding `addr`: unique within
/// a network because addresses are. `fabric` picks the fabric-side end of a link.
#[must_use]
pub fn mac_for(addr: std::net::Ipv4Addr, fabric: bool) -> [u8; 6] {
    let [a, b, c, d] = addr.octets();
    [if fabric { 0x06 } else { 0x02 }, 0xd7, a, b, c, d]
}

/// The MAC of an interface without an IPv4 address (on an IPv6-only subnet): made from its
/// link's identity, unique within a network and kept across edits, in a range (`d6`) apart
/// from the addresses' (`d7`).
#[must_use]
pub fn mac_for_link(id: u32, fabric: bool) -> [u8; 6] {
    let [a, b, c, d] = id.to_be_bytes();
    [if fabric { 0x06 } else { 0x02 }, 0xd6, a, b, c, d]
}

/// The MAC of a link: from its IPv4 address, or without one from its identity.
#[must_use]
pub fn link_mac(addr: Option<std::net::Ipv4Addr>, id: u32, fabric: bool) -> [u8; 6] {
    addr.map_or_else(|| mac_for_link(id, fabric), |a| mac_for(a, fabric))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_interface_scheme_is_kept_when_it_fits() {
        assert_eq!(node_ifname("R-1", "A", 0), "ethr-1-a");
        assert_eq!(node_ifname("A-1", "A", 0), "etha-1-a");
        assert_eq!(node_ifname("router-number-7", "backbone", 2), "eth2");
        assert_eq!(node_ifname("r-1234", "abcde", 1), "ethr-1234-abcde");
        assert_eq!(node_ifname("r-12345", "abcdef", 1), "eth1");
    }

    #[test]
    fn namespaces_of_one_network_never_match_another() {
        assert!(belongs_to("dv-lab", "lab"));
        assert!(belongs_to("dv-lab.r-1", "lab"));
        assert!(!belongs_to("dv-lab-2", "lab"));
        assert!(!belongs_to("dv-lab-2.r-1", "lab"));
        assert!(!belongs_to("other", "lab"));
        assert_eq!(network_of("dv-lab-2.r-1"), Some("lab-2"));
        assert_eq!(network_of("dv-lab"), Some("lab"));
        assert_eq!(network_of("lab"), None);
    }

    #[test]
    fn only_ids_are_ids_never_paths() {
        for id in ["lab", "test-net-0", "a", "lab-2"] {
            assert!(is_network_id(id), "{id}");
        }
        for not in [
            "",
            ".",
            "..",
            "/",
            "/tmp/x",
            "../../tmp/x",
            "lab/..",
            "Lab",
            "lab x",
            "-lab",
            "lab-",
            "la--b",
            ".lock",
            "lab\n",
            "a-very-long-network-name-indeed",
        ] {
            assert!(!is_network_id(not), "{not:?}");
        }
    }

    #[test]
    fn short_forms_fit_linux_limits() {
        assert_eq!(bridge_ifname("A", 0), "br-a");
        assert_eq!(bridge_ifname("a-very-long-subnet", 12), "br12");
        assert_eq!(fabric_port_ifname("R-1", "A", 3), "r-1.a");
        assert_eq!(fabric_port_ifname("router-one", "backbone", 3), "p3");
    }
}
