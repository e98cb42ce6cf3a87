//! The kernel datapath's firewall: the router's `fw_rules` as an iptables ruleset loaded into
//! the router's own namespace (never the host's), with the same semantics as the eBPF
//! firewall: established flows and their replies first, then drop rules, then accept rules,
//! then the policy, on the FORWARD chain. In a network with IPv6 the same rules, in their
//! IPv6 form, go to ip6tables too (a DROP policy with no IPv6 ruleset would let IPv6 pass).

use std::fmt::Write as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

use crate::netns;
use crate::plan::{Action, FirewallPlan};
use crate::topology::Policy;

#[derive(Debug, thiserror::Error)]
pub enum KernelFirewallError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(
        "running iptables-restore in {ns}: {source} (is iptables installed? `./setup.sh` installs it)"
    )]
    Spawn {
        ns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} in {ns} refused the rules: {stderr}")]
    Refused {
        ns: String,
        program: String,
        stderr: String,
    },
}

/// The kernel datapath: kernel forwarding in the routers, firewalls as iptables rules in
/// each router's namespace.
pub struct Iptables;

impl super::Forwarding for Iptables {
    fn apply_firewalls<'a>(
        &'a self,
        routers: &'a [&'a crate::plan::NodePlan],
    ) -> futures::future::BoxFuture<'a, Result<bool, KernelFirewallError>> {
        use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
        let jobs: Vec<(String, FirewallPlan)> = routers
            .iter()
            .filter_map(|n| Some((n.netns.clone(), n.firewall.clone()?)))
            .collect();
        async move {
            let any = !jobs.is_empty();
            futures::stream::iter(jobs)
                .map(|(ns, fw)| tokio::task::spawn_blocking(move || apply(&ns, &fw)))
                .buffer_unordered(4)
                .map(|joined| joined.expect("iptables worker panicked"))
                .try_collect::<()>()
                .await?;
            Ok(any)
        }
        .boxed()
    }
}

/// The iptables-restore input for a router's firewall.
#[must_use]
pub fn ruleset(fw: &FirewallPlan) -> String {
    ruleset_of(fw, Family::V4)
}

/// The ip6tables-restore input for a router's firewall: the rules with IPv6 prefixes; ICMP
/// is ICMPv6.
#[must_use]
pub fn ruleset6(fw: &FirewallPlan) -> String {
    ruleset_of(fw, Family::V6)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

fn ruleset_of(fw: &FirewallPlan, family: Family) -> String {
    let policy = match fw.policy {
        Policy::Accept => "ACCEPT",
        Policy::Drop => "DROP",
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD {policy} [0:0]\n:OUTPUT ACCEPT [0:0]"
    );
    out.push_str("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
    let mut ordered: Vec<_> = fw
        .rules
        .iter()
        .filter(|r| r.action == Action::Drop)
        .collect();
    ordered.extend(fw.rules.iter().filter(|r| r.action == Action::Accept));
    for rule in ordered {
        let side = |flag: &str, nets: Vec<ipnet::IpNet>| {
            if nets.iter().any(|n| n.prefix_len() == 0) {
                String::new()
            } else {
                format!(
                    " {flag} {}",
                    nets.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
        };
        let (src, dst): (Vec<ipnet::IpNet>, Vec<ipnet::IpNet>) = match family {
            Family::V4 => (
                rule.src.iter().map(|&n| n.into()).collect(),
                rule.dst.iter().map(|&n| n.into()).collect(),
            ),
            Family::V6 => (
                rule.src6.iter().map(|&n| n.into()).collect(),
                rule.dst6.iter().map(|&n| n.into()).collect(),
            ),
        };
        // a rule with no prefixes in this family matches nothing in it
        if src.is_empty() || dst.is_empty() {
            continue;
        }
        out.push_str("-A FORWARD");
        out.push_str(&side("-s", src));
        out.push_str(&side("-d", dst));
        if let Some(p) = rule.proto {
            let name = match (family, p) {
                (Family::V6, 1) => "ipv6-icmp".to_owned(),
                _ => crate::plan::proto_name(p),
            };
            let _ = write!(out, " -p {name}");
            if let Some(port) = rule.dport {
                let _ = write!(out, " -m {name} --dport {port}");
            }
        }
        let comment = rule.origin.replace('\\', "\\\\").replace('"', "\\\"");
        let target = match rule.action {
            Action::Accept => "ACCEPT",
            Action::Drop => "DROP",
        };
        let _ = writeln!(out, " -m comment --comment \"{comment}\" -j {target}");
    }
    out.push_str("COMMIT\n");
    out
}

/// Loads `fw` into the namespace `ns` with `iptables-restore`, and in a network with IPv6
/// with `ip6tables-restore` too.
///
/// # Errors
/// When iptables is missing or refuses the rules.
pub fn apply(ns: &str, fw: &FirewallPlan) -> Result<(), KernelFirewallError> {
    restore(ns, "iptables-restore", &ruleset(fw))?;
    if fw.ipv6 {
        restore(ns, "ip6tables-restore", &ruleset6(fw))?;
    }
    Ok(())
}

/// Runs `program` (an iptables-restore) in namespace `ns` with `rules` on its input.
fn restore(ns: &str, program: &str, rules: &str) -> Result<(), KernelFirewallError> {
    let fd = netns::open(ns)?;
    let raw = fd.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setns is async-signal-safe; the descriptor stays open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(raw, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let spawn_err = |source| KernelFirewallError::Spawn {
        ns: ns.to_owned(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    drop(fd);
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, rules.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(KernelFirewallError::Refused {
            ns: ns.to_owned(),
            program: program.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::RulePlan;

    #[test]
    fn established_first_then_drops_then_accepts() {
        let fw = FirewallPlan {
            policy: Policy::Drop,
            rules: vec![
                RulePlan {
                    slot: 0,
                    action: Action::Accept,
                    src: vec!["10.0.0.0/24".parse().unwrap()],
                    dst: vec!["0.0.0.0/0".parse().unwrap()],
                    proto: Some(6),
                    dport: Some(22),
                    src6: Vec::new(),
                    dst6: Vec::new(),
                    origin: "routers.\"R\".fw_rules.accept[0]".into(),
                },
                RulePlan {
                    slot: 1,
                    action: Action::Drop,
                    src: vec![
                        "10.0.0.3/32".parse().unwrap(),
                        "10.0.0.4/32".parse().unwrap(),
                    ],
                    dst: vec!["10.0.1.0/24".parse().unwrap()],
                    proto: None,
                    dport: None,
                    src6: Vec::new(),
                    dst6: Vec::new(),
                    origin: "routers.\"R\".fw_rules.drop[0]".into(),
                },
            ],
            ipv6: false,
        };
        assert_eq!(
            ruleset(&fw),
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
             -A FORWARD -s 10.0.0.3/32,10.0.0.4/32 -d 10.0.1.0/24 -m comment --comment \"routers.\\\"R\\\".fw_rules.drop[0]\" -j DROP\n\
             -A FORWARD -s 10.0.0.0/24 -p tcp -m tcp --dport 22 -m comment --comment \"routers.\\\"R\\\".fw_rules.accept[0]\" -j ACCEPT\n\
             COMMIT\n"
        );
    }
}
