//! Outbound access and published ports: the one place dvnet changes the host's network.
//!
//! The host gets its end of the uplink (an address on `outbound_access.cidr`, and on
//! `outbound_access.cidr6` if given) and routes to the network's subnets through the border
//! routers. NAT and published ports live in nftables tables of dvnet's own, `ip dvnet_<id>`
//! (and `ip6 dvnet_<id>` for IPv6: NAT66, the lab's prefixes masqueraded behind the host's
//! addresses as IPv4's are), so `down` removes them by deleting those tables and the host's
//! ruleset is exactly what it was. More changes, recorded and undone exactly by `down`:
//! forwarding of each family, turned on only if it was off (and restored, device by device,
//! once no network needs it); for IPv6, interfaces taking router advertisements
//! (`accept_ra` 1) raised to 2, so that turning forwarding on does not stop them (the kernel
//! ignores advertisements on a forwarding interface at 1); and — only when the host's
//! iptables (ip6tables) FORWARD policy drops — two ACCEPT rules for the uplink, tagged
//! `dvnet:<id>`.
//!
//! All of it happens in the namespace dvnet runs in (the host's, or a test's fake host).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::plan::{Plan, PublishPlan, UplinkPlan};

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
    Clash { cidr: IpNet, route: String },
    #[error(
        "subnet {subnet:?} ({cidr}) clashes with the host's route to {route}: with outbound \
         access on, the host would route that part of its own network into the lab\n\
         hint: give the subnet a prefix outside every prefix the host already routes"
    )]
    SubnetClash {
        subnet: String,
        cidr: IpNet,
        route: String,
    },
    #[error(
        "the host already has an interface {name}, the name of this network's uplink; dvnet \
         did not make it and will not touch it\n\
         hint: rename the network, or remove that interface if it is a leftover"
    )]
    InterfaceTaken { name: String },
    #[error(
        "the host already has an nftables table `{family} {table}`, the one this network's NAT \
         would use; dvnet will not touch a table it did not record making\n\
         hint: `nft delete table {family} {table}` if it is a leftover, or rename the network"
    )]
    TableTaken { family: &'static str, table: String },
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
    /// IPv6 forwarding settings before dvnet turned it on (outbound access over IPv6);
    /// `None` when it was on already, or not needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding6_before: Option<BTreeMap<String, String>>,
    /// Interfaces whose `accept_ra` dvnet raised from 1 to 2 as it turned IPv6 forwarding on
    /// (so they keep taking router advertisements), to be set back to 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accept_ra_raised: Vec<String>,
    /// Whether ACCEPT rules were inserted into ip6tables' FORWARD chain.
    #[serde(default)]
    pub ip6tables_forward: bool,
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
/// addresses — a table `ip`, and with IPv6 on the uplink a table `ip6` of the same name
/// (NAT66 of the IPv6 prefixes, ports published on the host's IPv6 addresses too).
#[must_use]
pub fn ruleset(id: &str, uplink: &UplinkPlan) -> String {
    let sources: Vec<String> = uplink.nat_sources.iter().map(ToString::to_string).collect();
    let targets: Vec<(&PublishPlan, String)> = uplink
        .published
        .iter()
        .filter_map(|p| Some((p, format!("{}:{}", p.address?, p.node_port))))
        .collect();
    let mut r = table(id, uplink, ("ip", "outbound access"), &sources, &targets);
    if uplink.host_address6.is_some() {
        let sources: Vec<String> = uplink
            .nat_sources6
            .iter()
            .map(ToString::to_string)
            .collect();
        let targets: Vec<(&PublishPlan, String)> = uplink
            .published
            .iter()
            .filter_map(|p| Some((p, format!("[{}]:{}", p.address6?, p.node_port))))
            .collect();
        let what = ("ip6", "outbound access over IPv6");
        r.push_str(&table(id, uplink, what, &sources, &targets));
    }
    r
}

/// One family's table of [`ruleset`]: `family` and what its comment says it is for, the
/// source prefixes to masquerade, the published ports and where each goes.
fn table(
    id: &str,
    uplink: &UplinkPlan,
    (family, what): (&str, &str),
    sources: &[String],
    targets: &[(&PublishPlan, String)],
) -> String {
    let table = table_name(id);
    let mut r = String::new();
    let _ = writeln!(r, "table {family} {table} {{");
    let _ = writeln!(
        r,
        "  comment \"dvnet network {id}: {what}; `dvnet down {id}` removes it\""
    );
    r.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    if !sources.is_empty() {
        let _ = writeln!(
            r,
            "    {family} saddr {{ {} }} oifname != \"{}\" masquerade",
            sources.join(", "),
            uplink.host_ifname
        );
    }
    r.push_str("  }\n");
    if !targets.is_empty() {
        for (chain, hook, priority) in [
            ("prerouting", "prerouting", "dstnat"),
            ("output", "output", "-100"),
        ] {
            let _ = writeln!(
                r,
                "  chain {chain} {{\n    type nat hook {hook} priority {priority}; policy accept;"
            );
            for (p, target) in targets {
                let _ = writeln!(
                    r,
                    "    fib daddr type local {} dport {} dnat to {target}",
                    p.proto, p.host_port
                );
            }
            r.push_str("  }\n");
        }
    }
    r.push_str("}\n");
    r
}

/// The nftables families of a network's tables: `ip`, and `ip6` when its uplink has IPv6.
fn families(uplink: &UplinkPlan) -> &'static [&'static str] {
    if uplink.host_address6.is_some() {
        &["ip", "ip6"]
    } else {
        &["ip"]
    }
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
    host_routes: &[IpNet],
    others: &[Plan],
    edit: bool,
) -> Result<(), OutboundError> {
    let Some(uplink) = &plan.uplink else {
        return Ok(());
    };
    if run("nft", &["--version"], None).is_err() {
        return Err(OutboundError::NoNft);
    }
    let overlap = |cidr: IpNet| {
        host_routes
            .iter()
            .find(|r| {
                r.prefix_len() > 0 && (r.contains(&cidr.network()) || cidr.contains(&r.network()))
            })
            .map(ToString::to_string)
    };
    // the prefixes of the families the uplink carries
    let prefixes = |s: &crate::plan::SubnetPlan| {
        s.cidr.map(IpNet::V4).into_iter().chain(
            s.cidr6
                .filter(|_| uplink.host_address6.is_some())
                .map(IpNet::V6),
        )
    };
    for cidr in prefixes(&plan.subnets[uplink.subnet]) {
        if let Some(route) = overlap(cidr) {
            return Err(OutboundError::Clash { cidr, route });
        }
    }
    // the host gets a route to every subnet: none may take part of what it reaches already
    for (i, subnet) in plan.subnets.iter().enumerate() {
        if i == uplink.subnet {
            continue;
        }
        for cidr in prefixes(subnet) {
            if let Some(route) = overlap(cidr) {
                return Err(OutboundError::SubnetClash {
                    subnet: subnet.name.clone(),
                    cidr,
                    route,
                });
            }
        }
    }
    let table = table_name(&plan.id);
    for &family in families(uplink) {
        if !edit && run("nft", &["list", "table", family, &table], None).is_ok() {
            return Err(OutboundError::TableTaken { family, table });
        }
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
const FORWARDING6: &str = "/proc/sys/net/ipv6/conf";

/// The forwarding settings to restore later, if IPv4 forwarding is off now (it will be
/// turned on).
#[must_use]
pub fn forwarding_snapshot() -> Option<BTreeMap<String, String>> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .is_ok_and(|v| v.trim() == "0")
        .then(|| settings(FORWARDING, "forwarding"))
}

/// The IPv6 forwarding settings to restore later, if the uplink carries IPv6 and IPv6
/// forwarding is off now (it will be turned on).
#[must_use]
pub fn forwarding6_snapshot(plan: &Plan) -> Option<BTreeMap<String, String>> {
    plan.uplink.as_ref()?.host_address6?;
    std::fs::read_to_string(format!("{FORWARDING6}/all/forwarding"))
        .is_ok_and(|v| v.trim() == "0")
        .then(|| settings(FORWARDING6, "forwarding"))
}

/// Every `<dir>/*/<key>` of this namespace, by device (`all` and `default` included).
fn settings(dir: &str, key: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(v) = std::fs::read_to_string(e.path().join(key)) {
                out.insert(
                    e.file_name().to_string_lossy().into_owned(),
                    v.trim().to_owned(),
                );
            }
        }
    }
    out
}

/// Turns IPv6 forwarding on, first raising `accept_ra` from 1 to 2 on the devices (and the
/// default for new ones) that have it, so they keep taking router advertisements: the kernel
/// ignores them at 1 on a forwarding interface, and a host configured by them would lose its
/// routes. The raised devices are recorded in `changes` as they are raised.
fn forwarding6_on(changes: &mut HostChanges) -> Result<(), String> {
    for (dev, value) in settings(FORWARDING6, "accept_ra") {
        if value == "1" && dev != "all" {
            let path = format!("{FORWARDING6}/{dev}/accept_ra");
            std::fs::write(&path, "2").map_err(|e| format!("raising {path} to 2: {e}"))?;
            changes.accept_ra_raised.push(dev);
        }
    }
    std::fs::write(format!("{FORWARDING6}/all/forwarding"), "1")
        .map_err(|e| format!("turning IPv6 forwarding on: {e}"))
}

/// Puts forwarding back as `before` says, in the family under `dir`: `all` first (writing it
/// resets every device), then each device that is still there.
fn restore_forwarding(dir: &str, before: &BTreeMap<String, String>, errors: &mut Vec<String>) {
    let all = if dir == FORWARDING {
        "/proc/sys/net/ipv4/ip_forward".to_owned()
    } else {
        format!("{dir}/all/forwarding")
    };
    if let Err(e) = std::fs::write(&all, before.get("all").map_or("0", String::as_str)) {
        errors.push(format!("restoring {all}: {e}"));
    }
    for (dev, value) in before {
        let path = format!("{dir}/{dev}/forwarding");
        if std::path::Path::new(&path).exists()
            && std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != value)
            && let Err(e) = std::fs::write(&path, value)
        {
            errors.push(format!("restoring {path}: {e}"));
        }
    }
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
    if changes.forwarding6_before.is_some() {
        forwarding6_on(changes).map_err(host("turning IPv6 forwarding on"))?;
    }
    debug_assert_eq!(
        changes.nft_table.as_deref(),
        Some(table_name(&plan.id).as_str()),
        "the table is recorded before it is made"
    );
    run("nft", &["-f", "-"], Some(&ruleset(&plan.id, uplink)))
        .map_err(host("loading the NAT table"))?;
    for program in ["iptables", "ip6tables"] {
        let ipv6 = program == "ip6tables";
        if ipv6 && uplink.host_address6.is_none() {
            continue;
        }
        let policy_drop = run(program, &["-S", "FORWARD"], None)
            .is_ok_and(|s| s.lines().any(|l| l.trim() == "-P FORWARD DROP"));
        if !policy_drop {
            continue;
        }
        for dir in ["-i", "-o"] {
            let tag = format!("dvnet:{}", plan.id);
            run(
                program,
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
            .map_err(host(&format!(
                "letting the uplink through {program}' FORWARD chain"
            )))?;
            if ipv6 {
                changes.ip6tables_forward = true;
            } else {
                changes.iptables_forward = true;
            }
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
    let mut text = String::new();
    for family in families(uplink) {
        // made if missing, so that deleting it never fails
        let _ = writeln!(
            text,
            "table {family} {table}\ndelete table {family} {table}"
        );
    }
    text.push_str(&ruleset(&plan.id, uplink));
    run("nft", &["-f", "-"], Some(&text))
        .map(|_| ())
        .map_err(|detail| OutboundError::Host {
            op: "reloading the NAT table".into(),
            detail,
        })
}

/// Undoes what [`apply`] recorded doing for network `id` (`changes`): its nftables tables,
/// its iptables and ip6tables rules, and each family's forwarding when `restore` says so for
/// it (IPv4, IPv6: no other network of this host needs it). Nothing that was not recorded is
/// touched.
pub fn remove(id: &str, changes: Option<&HostChanges>, restore: (bool, bool)) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(table) = changes.and_then(|c| c.nft_table.as_deref()) {
        for family in ["ip", "ip6"] {
            if run("nft", &["list", "table", family, table], None).is_ok()
                && let Err(e) = run("nft", &["delete", "table", family, table], None)
            {
                errors.push(e);
            }
        }
    }
    // rules tagged with this network, whatever the record says (it may be gone)
    let tag = format!("dvnet:{id}");
    for program in ["iptables", "ip6tables"] {
        let Ok(rules) = run(program, &["-S", "FORWARD"], None) else {
            continue;
        };
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
            if let Err(e) = run(program, &delete, None) {
                errors.push(e);
            }
        }
    }
    let Some(changes) = changes else {
        return errors;
    };
    if restore.0
        && let Some(before) = &changes.forwarding_before
    {
        restore_forwarding(FORWARDING, before, &mut errors);
    }
    if restore.1 {
        if let Some(before) = &changes.forwarding6_before {
            restore_forwarding(FORWARDING6, before, &mut errors);
        }
        // after forwarding: a device at 2 stays as it was raised, unless changed since
        for dev in &changes.accept_ra_raised {
            let path = format!("{FORWARDING6}/{dev}/accept_ra");
            if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "2")
                && let Err(e) = std::fs::write(&path, "1")
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

    /// An uplink of IPv4 alone: `sources` masqueraded, A-1's port 80 published on 8080.
    fn uplink(sources: &[&str]) -> UplinkPlan {
        UplinkPlan {
            subnet: 3,
            host_address: "192.168.240.1".parse().unwrap(),
            host_ifname: "dv-lab".into(),
            fabric_port: FabricPort {
                ifname: "uplink.host".into(),
                ifindex: 30,
                mac: [6, 0, 0, 0, 0, 1],
            },
            host_routes: vec![],
            nat_sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
            host_address6: None,
            host_routes6: vec![],
            nat_sources6: vec![],
            published: vec![PublishPlan {
                host_port: 8080,
                proto: "tcp".into(),
                node: "A-1".into(),
                address: Some("10.0.0.2".parse().unwrap()),
                address6: None,
                node_port: 80,
            }],
        }
    }

    #[test]
    fn the_ruleset_masquerades_the_subnets_and_forwards_published_ports() {
        let uplink = uplink(&["10.0.0.0/23", "10.0.2.0/24"]);
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
    fn with_ipv6_a_second_table_masquerades_the_ipv6_prefixes_and_forwards_ports_to_ipv6() {
        let mut uplink = uplink(&["10.0.0.0/24"]);
        let v4 = ruleset("lab", &uplink);
        assert!(!v4.contains("ip6"), "{v4}");
        assert_eq!(families(&uplink), ["ip"]);
        uplink.host_address6 = Some("fd00:ff::1".parse().unwrap());
        uplink.nat_sources6 = vec!["fd00:0:a::/64".parse().unwrap()];
        uplink.published[0].address6 = Some("fd00:0:a::2".parse().unwrap());
        let both = ruleset("lab", &uplink);
        assert!(both.starts_with(&v4), "{both}");
        let v6 = &both[v4.len()..];
        assert!(v6.starts_with("table ip6 dvnet_lab {"), "{v6}");
        assert!(
            v6.contains("ip6 saddr { fd00:0:a::/64 } oifname != \"dv-lab\" masquerade"),
            "{v6}"
        );
        assert!(
            v6.contains("fib daddr type local tcp dport 8080 dnat to [fd00:0:a::2]:80"),
            "{v6}"
        );
        assert_eq!(families(&uplink), ["ip", "ip6"]);
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
