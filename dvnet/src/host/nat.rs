//! Outbound access and published ports: the one place dvnet changes the host's network.
//!
//! The host gets its end of the uplink (an address on `outbound_access.cidr`) and routes to
//! the network's subnets through the border routers. NAT and published ports live in an
//! nftables table of dvnet's own, `ip dvnet_<id>`, so `down` removes them by deleting that
//! table and the host's ruleset is exactly what it was. Two more changes, recorded and undone
//! exactly by `down`: IPv4 forwarding, turned on only if it was off (and restored, device by
//! device, once no network needs it), and — only when the host's iptables FORWARD policy
//! drops — two ACCEPT rules for the uplink, tagged `dvnet:<id>`.
//!
//! All of it happens in the namespace dvnet runs in (the host's, or a test's fake host).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::plan::{Plan, UplinkPlan};

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error(
        "outbound access needs nftables (the `nft` command), for NAT in a table of dvnet's own\n\
         hint: `./setup.sh` installs it (Debian package nftables)"
    )]
    NoNft,
    #[error(
        "the uplink {cidr} clashes with the host's route to {route}\n\
         hint: choose another `outbound_access.cidr`, outside every prefix the host already routes"
    )]
    Clash { cidr: Ipv4Net, route: String },
    #[error(
        "subnet {subnet:?} ({cidr}) clashes with the host's route to {route}: with outbound \
         access on, the host would route that part of its own network into the lab\n\
         hint: give the subnet a prefix outside every prefix the host already routes"
    )]
    SubnetClash {
        subnet: String,
        cidr: Ipv4Net,
        route: String,
    },
    #[error(
        "the host already has an interface {name}, the name of this network's uplink; dvnet \
         did not make it and will not touch it\n\
         hint: rename the network, or remove that interface if it is a leftover"
    )]
    InterfaceTaken { name: String },
    #[error(
        "the host already has an nftables table `ip {table}`, the one this network's NAT would \
         use; dvnet will not touch a table it did not record making\n\
         hint: `nft delete table ip {table}` if it is a leftover, or rename the network"
    )]
    TableTaken { table: String },
    #[error("{what} is already published {by}; pick another host port")]
    PortTaken { what: String, by: String },
    #[error("{op}: {detail}")]
    Host { op: String, detail: String },
}

/// What `up` changed on the host beyond its own objects, so `down` can undo it exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostChanges {
    /// The host namespace (inode of its nsfs file) these changes were made in.
    pub netns: u64,
    /// Forwarding settings before dvnet turned IPv4 forwarding on (`all`, `default`, each
    /// device); `None` when it was on already.
    pub forwarding_before: Option<BTreeMap<String, String>>,
    /// Whether ACCEPT rules were inserted into iptables' FORWARD chain.
    pub iptables_forward: bool,
    /// The host's end of the uplink, recorded before it is created (it did not exist).
    #[serde(default)]
    pub uplink: Option<String>,
    /// The nftables table, recorded before it is loaded (it did not exist).
    #[serde(default)]
    pub nft_table: Option<String>,
}

/// The nftables table of a network.
#[must_use]
pub fn table_name(id: &str) -> String {
    format!("dvnet_{}", id.replace('-', "_"))
}

/// The nftables ruleset of a network's uplink: masquerade what leaves the host from the
/// network's subnets (not back into the uplink), DNAT published ports on the host's own
/// addresses.
#[must_use]
pub fn ruleset(id: &str, uplink: &UplinkPlan) -> String {
    let table = table_name(id);
    let sources = uplink
        .nat_sources
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut r = String::new();
    let _ = writeln!(r, "table ip {table} {{");
    let _ = writeln!(
        r,
        "  comment \"dvnet network {id}: outbound access; `dvnet down {id}` removes it\""
    );
    r.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    let _ = writeln!(
        r,
        "    ip saddr {{ {sources} }} oifname != \"{}\" masquerade",
        uplink.host_ifname
    );
    r.push_str("  }\n");
    if !uplink.published.is_empty() {
        for (chain, hook, priority) in [
            ("prerouting", "prerouting", "dstnat"),
            ("output", "output", "-100"),
        ] {
            let _ = writeln!(
                r,
                "  chain {chain} {{\n    type nat hook {hook} priority {priority}; policy accept;"
            );
            for p in &uplink.published {
                let _ = writeln!(
                    r,
                    "    fib daddr type local {} dport {} dnat to {}:{}",
                    p.proto, p.host_port, p.address, p.node_port
                );
            }
            r.push_str("  }\n");
        }
    }
    r.push_str("}\n");
    r
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().map_err(|e| format!("running {program}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("writing to {program}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Checks, before anything is created, that the uplink can be made: nftables is there, no
/// host route overlaps the uplink, no published port is taken.
///
/// # Errors
/// The first problem found.
pub fn preflight(
    plan: &Plan,
    host_routes: &[Ipv4Net],
    others: &[Plan],
    edit: bool,
) -> Result<(), OutboundError> {
    let Some(uplink) = &plan.uplink else {
        return Ok(());
    };
    if run("nft", &["--version"], None).is_err() {
        return Err(OutboundError::NoNft);
    }
    let overlap = |cidr: Ipv4Net| {
        host_routes
            .iter()
            .find(|r| {
                r.prefix_len() > 0 && (r.contains(&cidr.network()) || cidr.contains(&r.network()))
            })
            .map(ToString::to_string)
    };
    let cidr = plan.subnets[uplink.subnet].cidr;
    if let Some(route) = overlap(cidr) {
        return Err(OutboundError::Clash { cidr, route });
    }
    // the host gets a route to every subnet: none may take part of what it reaches already
    for (i, subnet) in plan.subnets.iter().enumerate() {
        if i != uplink.subnet
            && let Some(route) = overlap(subnet.cidr)
        {
            return Err(OutboundError::SubnetClash {
                subnet: subnet.name.clone(),
                cidr: subnet.cidr,
                route,
            });
        }
    }
    let table = table_name(&plan.id);
    if !edit && run("nft", &["list", "table", "ip", &table], None).is_ok() {
        return Err(OutboundError::TableTaken { table });
    }
    for p in &uplink.published {
        let what = format!("host port {}/{}", p.host_port, p.proto);
        for other in others {
            if let Some(o) = other.uplink.as_ref().and_then(|u| {
                u.published
                    .iter()
                    .find(|q| q.host_port == p.host_port && q.proto == p.proto)
            }) {
                return Err(OutboundError::PortTaken {
                    what,
                    by: format!("by network {} for {}", other.id, o.node),
                });
            }
        }
        if listening(p.host_port, &p.proto) {
            return Err(OutboundError::PortTaken {
                what,
                by: "on the host: a program listens on it".into(),
            });
        }
    }
    Ok(())
}

/// Whether a socket of this namespace listens on `port` (TCP) or is bound to it (UDP).
fn listening(port: u16, proto: &str) -> bool {
    let files: &[&str] = if proto == "udp" {
        &["/proc/net/udp", "/proc/net/udp6"]
    } else {
        &["/proc/net/tcp", "/proc/net/tcp6"]
    };
    let hex = format!(":{port:04X}");
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .any(|text| {
            text.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                // local address, and for TCP the LISTEN state (0A)
                cols.get(1).is_some_and(|a| a.ends_with(&hex))
                    && (proto == "udp" || cols.get(3) == Some(&"0A"))
            })
        })
}

const FORWARDING: &str = "/proc/sys/net/ipv4/conf";

/// The forwarding settings to restore later, if IPv4 forwarding is off now (it will be
/// turned on).
#[must_use]
pub fn forwarding_snapshot() -> Option<BTreeMap<String, String>> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .is_ok_and(|v| v.trim() == "0")
        .then(forwarding_settings)
}

/// Every `net.ipv4.conf.*.forwarding` of this namespace.
fn forwarding_settings() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(FORWARDING) {
        for e in dir.flatten() {
            if let Ok(v) = std::fs::read_to_string(e.path().join("forwarding")) {
                out.insert(
                    e.file_name().to_string_lossy().into_owned(),
                    v.trim().to_owned(),
                );
            }
        }
    }
    out
}

/// Makes the host side: forwarding on (when `changes` holds a snapshot taken while it was
/// off), the nftables table, FORWARD accepts if needed. (The uplink interface, its address
/// and routes are made by the caller over netlink.)
///
/// # Errors
/// When a command fails; `changes` says what was done.
pub fn apply(plan: &Plan, changes: &mut HostChanges) -> Result<(), OutboundError> {
    let Some(uplink) = &plan.uplink else {
        return Ok(());
    };
    let host = |op: &str| {
        let op = op.to_owned();
        move |detail: String| OutboundError::Host { op, detail }
    };
    if changes.forwarding_before.is_some() {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| host("turning IPv4 forwarding on")(e.to_string()))?;
    }
    debug_assert_eq!(
        changes.nft_table.as_deref(),
        Some(table_name(&plan.id).as_str()),
        "the table is recorded before it is made"
    );
    run("nft", &["-f", "-"], Some(&ruleset(&plan.id, uplink)))
        .map_err(host("loading the NAT table"))?;
    let policy_drop = run("iptables", &["-S", "FORWARD"], None)
        .is_ok_and(|s| s.lines().any(|l| l.trim() == "-P FORWARD DROP"));
    if policy_drop {
        for dir in ["-i", "-o"] {
            let tag = format!("dvnet:{}", plan.id);
            run(
                "iptables",
                &[
                    "-I",
                    "FORWARD",
                    dir,
                    &uplink.host_ifname,
                    "-m",
                    "comment",
                    "--comment",
                    &tag,
                    "-j",
                    "ACCEPT",
                ],
                None,
            )
            .map_err(host("letting the uplink through iptables' FORWARD chain"))?;
            changes.iptables_forward = true;
        }
    }
    Ok(())
}

/// Replaces the network's NAT table with the one its plan asks for now (sources, published
/// ports), in one nftables transaction: no moment without NAT.
///
/// # Errors
/// When nftables refuses.
pub fn reload(plan: &Plan) -> Result<(), OutboundError> {
    let Some(uplink) = &plan.uplink else {
        return Ok(());
    };
    let table = table_name(&plan.id);
    let text = format!(
        "table ip {table}\ndelete table ip {table}\n{}",
        ruleset(&plan.id, uplink)
    );
    run("nft", &["-f", "-"], Some(&text))
        .map(|_| ())
        .map_err(|detail| OutboundError::Host {
            op: "reloading the NAT table".into(),
            detail,
        })
}

/// Undoes what [`apply`] recorded doing for network `id` (`changes`): its nftables table, its
/// iptables rules, and forwarding when `restore_forwarding` (no other network of this host
/// needs it). Nothing that was not recorded is touched.
pub fn remove(id: &str, changes: Option<&HostChanges>, restore_forwarding: bool) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(table) = changes.and_then(|c| c.nft_table.as_deref())
        && run("nft", &["list", "table", "ip", table], None).is_ok()
        && let Err(e) = run("nft", &["delete", "table", "ip", table], None)
    {
        errors.push(e);
    }
    // rules tagged with this network, whatever the record says (it may be gone)
    let tag = format!("dvnet:{id}");
    if let Ok(rules) = run("iptables", &["-S", "FORWARD"], None) {
        for rule in rules
            .lines()
            .filter(|l| l.contains(&format!("\"{tag}\"")) || l.contains(&format!(" {tag} ")))
        {
            let Some(spec) = rule.strip_prefix("-A FORWARD ") else {
                continue;
            };
            let mut delete = vec!["-D".to_owned(), "FORWARD".to_owned()];
            delete.extend(shell_words(spec));
            let delete: Vec<&str> = delete.iter().map(String::as_str).collect();
            if let Err(e) = run("iptables", &delete, None) {
                errors.push(e);
            }
        }
    }
    if restore_forwarding && let Some(before) = changes.and_then(|c| c.forwarding_before.as_ref()) {
        // `ip_forward` first: it resets every device; then each device as it was
        if let Err(e) = std::fs::write(
            "/proc/sys/net/ipv4/ip_forward",
            before.get("all").map_or("0", String::as_str),
        ) {
            errors.push(format!("restoring IPv4 forwarding: {e}"));
        }
        for (dev, value) in before {
            let path = format!("{FORWARDING}/{dev}/forwarding");
            if std::path::Path::new(&path).exists()
                && std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != value)
                && let Err(e) = std::fs::write(&path, value)
            {
                errors.push(format!("restoring {path}: {e}"));
            }
        }
    }
    errors
}

/// Splits an `iptables -S` rule into arguments (quotes kept together).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FabricPort, PublishPlan};

    #[test]
    fn the_ruleset_masquerades_the_subnets_and_forwards_published_ports() {
        let uplink = UplinkPlan {
            subnet: 3,
            host_address: "192.168.240.1".parse().unwrap(),
            host_ifname: "dv-lab".into(),
            fabric_port: FabricPort {
                ifname: "uplink.host".into(),
                ifindex: 30,
                mac: [6, 0, 0, 0, 0, 1],
            },
            host_routes: vec![],
            nat_sources: vec![
                "10.0.0.0/23".parse().unwrap(),
                "10.0.2.0/24".parse().unwrap(),
            ],
            published: vec![PublishPlan {
                host_port: 8080,
                proto: "tcp".into(),
                node: "A-1".into(),
                address: "10.0.0.2".parse().unwrap(),
                node_port: 80,
            }],
        };
        let r = ruleset("my-lab", &uplink);
        assert!(r.starts_with("table ip dvnet_my_lab {"), "{r}");
        assert!(
            r.contains("ip saddr { 10.0.0.0/23, 10.0.2.0/24 } oifname != \"dv-lab\" masquerade"),
            "{r}"
        );
        assert!(
            r.contains("type nat hook prerouting priority dstnat;"),
            "{r}"
        );
        assert!(
            r.contains("fib daddr type local tcp dport 8080 dnat to 10.0.0.2:80"),
            "{r}"
        );
    }

    #[test]
    fn iptables_rules_split_like_a_shell() {
        assert_eq!(
            shell_words(r#"-i dv-lab -m comment --comment "dvnet:lab" -j ACCEPT"#),
            [
                "-i",
                "dv-lab",
                "-m",
                "comment",
                "--comment",
                "dvnet:lab",
                "-j",
                "ACCEPT"
            ]
        );
    }
}
