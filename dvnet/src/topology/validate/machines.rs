//! Placement on several machines: `"machines"`, a node's `"machine"`, `"vxlan_port"`.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::super::parse::Json;
use super::super::{MACHINE_ID_MAX, Machine, machine_network_id};
use super::{Fields, NameKind, Path, Validator, parse_address, suggest};

const MACHINE_FIELDS: &[&str] = &["address", "ssh", "mtu"];
/// The MTU of an underlay unless a machine gives its own.
pub const UNDERLAY_MTU: u16 = 1500;
/// The smallest underlay MTU: IPv6's minimum, so that a link keeps 1,230 bytes under VXLAN.
const UNDERLAY_MTU_MIN: u16 = 1280;

impl<'a> Validator<'a> {
    /// `machines`: an object of names to `{"address", "ssh", "mtu"}`.
    pub(super) fn machines(&mut self, value: &'a Json, path: &Path, network_id: Option<&str>) {
        let Some(entries) = self.object(
            value,
            path,
            "{\"m1\": {\"address\": \"192.0.2.1\"}, \"m2\": {\"address\": \"192.0.2.2\"}}",
        ) else {
            return;
        };
        if entries.is_empty() {
            self.error(
                path,
                "no machine is listed; list the machines the lab runs on, such as {\"m1\": \
                 {\"address\": \"192.0.2.1\"}}, or remove the field to run it all on one",
            );
        }
        let mut addresses: HashMap<Ipv4Addr, String> = HashMap::new();
        let mut ids: HashMap<String, String> = HashMap::new();
        for (name, value, path) in self.named(entries, path) {
            self.check_name(name, &path, NameKind::Machine);
            let index = self.machines.len();
            if let Err(message) = self.machine_names.insert(name, &path, index, "machine") {
                self.error(&path, message);
            } else {
                match machine_network_id(network_id.unwrap_or("x"), name) {
                    None => self.error(
                        &path,
                        format!(
                            "machine name {name:?} gives no id of at most {MACHINE_ID_MAX} \
                             letters, digits and \"-\" (it names the machine's namespaces and \
                             record); use a short name such as \"m1\""
                        ),
                    ),
                    Some(id) => {
                        if let Some(other) = ids.insert(id.clone(), name.to_owned()) {
                            self.error(
                                &path,
                                format!(
                                    "machines {other:?} and {name:?} both keep their share of \
                                     the lab as {id:?}; rename one of them"
                                ),
                            );
                        }
                    }
                }
            }
            let mut machine = Machine {
                name: name.to_owned(),
                address: Ipv4Addr::UNSPECIFIED,
                ssh: None,
                mtu: UNDERLAY_MTU,
            };
            if let Some(entries) = self.object(value, &path, "{\"address\": \"192.0.2.1\"}") {
                let f = self.fields(entries, &path, MACHINE_FIELDS);
                if let Some((value, path)) = self.require(
                    &f,
                    "address",
                    "where the other machines reach it, such as \"192.0.2.1\"",
                ) && let Some(address) = self.underlay_address(value, &path)
                {
                    if let Some(other) = addresses.insert(address, name.to_owned()) {
                        self.error(
                            &path,
                            format!(
                                "{address} is already the address of machine {other:?}; each \
                                 machine needs its own"
                            ),
                        );
                    }
                    machine.address = address;
                }
                if let Some((value, path)) = f.get("ssh") {
                    machine.ssh = self.ssh(value, &path);
                }
                if let Some((value, path)) = f.get("mtu") {
                    machine.mtu = self.underlay_mtu(value, &path).unwrap_or(UNDERLAY_MTU);
                }
            }
            self.machines.push(machine);
        }
    }

    /// A node's `machine` (the first machine when absent).
    pub(super) fn placement(&mut self, f: &Fields<'a>) -> usize {
        let Some((value, path)) = f.get("machine") else {
            return 0;
        };
        let Some(name) = self.string(value, &path) else {
            return 0;
        };
        if self.machines.is_empty() {
            self.error(
                &path,
                "no machines are listed: add \"machines\" at the top, such as {\"m1\": \
                 {\"address\": \"192.0.2.1\"}}, or remove this field",
            );
            return 0;
        }
        if let Some(m) = self.machine_names.get(name) {
            return m;
        }
        let hint = suggest(name, self.machine_names.names());
        let known: Vec<String> = self
            .machines
            .iter()
            .map(|m| format!("{:?}", m.name))
            .collect();
        self.error(
            &path,
            format!(
                "unknown machine {name:?}{hint}; the machines are {}",
                known.join(", ")
            ),
        );
        0
    }

    /// `vxlan_port`: only with machines.
    pub(super) fn vxlan_port(&mut self, f: &Fields<'a>) -> Option<u16> {
        let (value, path) = f.get("vxlan_port")?;
        let port = self.port(value, &path)?;
        if self.machines.is_empty() {
            self.error(
                &path,
                "a VXLAN port is for labs placed on several machines; list them in \"machines\", \
                 or remove this field",
            );
        }
        Some(port)
    }

    /// Rules that span sections: what a lab on several machines cannot have (yet).
    pub(super) fn check_placement(&mut self, outbound: Option<&Path>) {
        if self.machines.len() > 1
            && let Some(path) = outbound
        {
            self.error(
                path,
                "outbound access in a lab placed on several machines is not supported yet (its \
                 uplink lives on one machine); remove outbound_access, or place the lab on one \
                 machine",
            );
        }
    }

    fn underlay_address(&mut self, value: &Json, path: &Path) -> Option<Ipv4Addr> {
        let text = self.string(value, path)?;
        let address = match parse_address(text) {
            Ok(address) => address,
            Err(message) => {
                self.error(path, message);
                return None;
            }
        };
        let what = if address.is_unspecified() {
            "the unspecified address"
        } else if address.is_broadcast() {
            "the broadcast address"
        } else if address.is_multicast() {
            "a multicast address"
        } else if address.is_loopback() {
            "a loopback address, which other machines cannot reach"
        } else {
            return Some(address);
        };
        self.error(
            path,
            format!(
                "{address} is {what}; give the unicast address the other machines reach this \
                 one at, such as \"192.0.2.1\""
            ),
        );
        None
    }

    fn ssh(&mut self, value: &Json, path: &Path) -> Option<String> {
        let text = self.string(value, path)?;
        let why = if text.is_empty() {
            "is empty"
        } else if text.starts_with('-') {
            "starts with \"-\", which ssh would read as an option"
        } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            "holds whitespace or a control character"
        } else {
            return Some(text.to_owned());
        };
        self.error(
            path,
            format!("the ssh destination {why}; give one as for `ssh`, such as \"root@192.0.2.2\""),
        );
        None
    }

    fn underlay_mtu(&mut self, value: &Json, path: &Path) -> Option<u16> {
        let Json::Number(n) = value else {
            self.expected(path, "an MTU in bytes, such as 1500", value);
            return None;
        };
        let mtu = n
            .as_u64()
            .and_then(|m| u16::try_from(m).ok())
            .filter(|&m| m >= UNDERLAY_MTU_MIN);
        if mtu.is_none() {
            self.error(
                path,
                format!(
                    "expected the underlay's MTU, from {UNDERLAY_MTU_MIN} to 65535 bytes, found \
                     {n}"
                ),
            );
        }
        mtu
    }
}
