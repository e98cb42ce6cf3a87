//! `cargo xtask bench datapath`: both datapaths side by side in one run, with a bare veth
//! pair as the reference.
//!
//! - Forwarding: one TCP stream (iperf3) and 64-byte UDP packets (udpgen, see
//!   [`super::udpgen`]: one flow) through chains of 1, 4 and 16 routers (host — r1 — … — rk —
//!   host, every link point-to-point), eBPF and kernel, beside a bare veth pair between two
//!   namespaces. UDP counts packets *received*: the destination link's rx in `dvnet stats`
//!   (the veth's own rx counter for the bare pair).
//! - Firewall: one router with 0, 1, 1,000 and 10,000 drop rules on distinct /32s of
//!   100.64.0.0/10 that never match: a TCP stream, and the rate of new flows (udpgen cycling
//!   through 2 × 64,512 (source port, destination port) pairs: more than the eBPF connection
//!   map's 65,536 entries, so every packet misses it and pays the rule lookup; the share is
//!   checked from the map's insert counter).
//! - `up` of a generated chain of 1,000 nodes with the eBPF datapath: the total, the hooks
//!   (node interfaces + fabric ports), and the "programs" phase (attaching them).
//! - The generators themselves on the bare veth pair: udpgen, `iperf3 -u -l 64 -b 0`,
//!   `hping3 --udp --flood`, so it is clear what limits the UDP figures.
//!
//! Everything runs in namespaces of the benchmark's own (`dvb<pid>-*`, dvnet's under a fake
//! host), traffic goes only between them, and every process started is killed by its pid.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use dvnet::generate::{GenSpec, Shape, generate};
use dvnet::plan::{Datapath, PlanOptions};
use serde::Serialize;
use serde_json::{Value, json};

use super::harness::{Background, OnDrop, Scratch, check, in_ns, timed, up_report};
use super::idle::{self, IdleSettings, Waiter};
use super::stats::{Summary, secs, sig3};
use super::udpgen;

/// iperf3's port in the destination namespaces (each namespace has its own).
const IPERF_PORT: &str = "5201";
/// The UDP sink's first port.
const SINK_PORT: u16 = 9;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Measurements per figure (median, min, max).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds per throughput or packet-rate measurement [default: 5; 2 with --quick].
    #[arg(long)]
    seconds: Option<f64>,
    /// Chain lengths (routers between the two hosts).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16])]
    hops: Vec<usize>,
    /// Rule counts for the firewall figures.
    #[arg(long, value_delimiter = ',', default_values_t = [0, 1, 1000, 10000])]
    rules: Vec<usize>,
    /// Nodes of the generated chain whose `up` is timed (0: leave it out).
    #[arg(long, default_value_t = 1000)]
    up_nodes: usize,
    /// Where to write the results [default: bench-results/datapath.json, tables beside it
    /// in datapath.md].
    #[arg(long)]
    json: Option<PathBuf>,
    /// One run of 2 s per figure, 2 s idle timeout (a smoke test).
    #[arg(long, conflicts_with = "runs")]
    quick: bool,
    /// Seconds to wait for an idle machine before measuring anyway (and saying so).
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// The chains dual-stack, and the forwarding figures (TCP, round trips, 64-byte UDP)
    /// measured over IPv6 [results: bench-results/datapath-ipv6.json].
    #[arg(long)]
    ipv6: bool,
}

/// What to measure, resolved from the options (the suite builds its own).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub runs: usize,
    pub seconds: f64,
    pub hops: Vec<usize>,
    pub rules: Vec<usize>,
    pub up_nodes: usize,
    /// Flows of the new-flow test.
    pub flows: u32,
    /// Whether to measure the generators alone on the bare pair (udpgen, iperf3, hping3).
    pub generators: bool,
    /// The forwarding figures over IPv6 (dual-stack chains).
    #[serde(default)]
    pub ipv6: bool,
}

impl Settings {
    fn from_args(args: &Args) -> Settings {
        Settings {
            runs: if args.quick { 1 } else { args.runs },
            seconds: args.seconds.unwrap_or(if args.quick { 2.0 } else { 5.0 }),
            hops: args.hops.clone(),
            rules: args.rules.clone(),
            up_nodes: args.up_nodes,
            flows: 2 * udpgen::SPORTS,
            generators: true,
            ipv6: args.ipv6,
        }
    }
}

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub started_unix: u64,
    pub machine: super::Machine,
    pub settings: Settings,
    pub idle: IdleSettings,
    pub generator: &'static str,
    pub series: Vec<Series>,
    pub up: Option<UpSeries>,
    /// Waits that gave up, tools left out, anything that makes a number less trustworthy.
    pub notes: Vec<String>,
}

/// One figure over the runs.
#[derive(Debug, Serialize)]
pub struct Series {
    /// `tcp`, `udp`, `fw_tcp`, `fw_newflows` or `generator`.
    pub test: &'static str,
    /// `ebpf`, `kernel`, `veth`; for `generator`: `udpgen`, `iperf3`, `hping3`.
    pub path: &'static str,
    pub routers: usize,
    /// Firewall rules on the (first) router.
    pub rules: usize,
    /// `Gbit/s` or `kpps`.
    pub unit: &'static str,
    pub samples: Vec<f64>,
    pub summary: Option<Summary>,
    /// eBPF new-flow runs: connection-map inserts per received packet (1: every packet was
    /// the first of its flow).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inserts_per_packet: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// `up` of a large chain with the eBPF datapath.
#[derive(Debug, Serialize)]
pub struct UpSeries {
    pub nodes: usize,
    pub node_hooks: usize,
    pub fabric_hooks: usize,
    pub hooks: usize,
    /// Seconds: wall time of `dvnet up`, its "programs" phase, `dvnet down`.
    pub up: Option<Summary>,
    pub programs: Option<Summary>,
    pub down: Option<Summary>,
    pub runs: Vec<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("bench datapath creates namespaces: run it as root");
    }
    let settings = Settings::from_args(args);
    if settings.runs == 0 || settings.seconds <= 0.0 {
        bail!("need at least one run of more than 0 s");
    }
    let (scratch, mut wait, machine) =
        super::harness::start(IdleSettings::standard(args.idle_timeout, args.quick))?;
    let outcome = measure(&scratch, &mut wait, &settings, machine);
    let leftovers = scratch.cleanup();
    let mut report = outcome?;
    report.notes.append(&mut wait.notes);
    report
        .notes
        .extend(leftovers.iter().map(|l| format!("cleanup: {l}")));
    println!("{}", tables(&report, false));
    for n in &report.notes {
        println!("note: {n}");
    }
    let default = if args.ipv6 {
        "datapath-ipv6.json"
    } else {
        "datapath.json"
    };
    let path = super::results_path(args.json.as_deref(), default);
    super::write_json(&path, &report)?;
    let md = path.with_extension("md");
    std::fs::write(&md, tables(&report, true))
        .with_context(|| format!("writing {}", md.display()))?;
    eprintln!("xtask: results in {} and {}", path.display(), md.display());
    super::harness::verdict(&leftovers, &failures(&report))
}

/// Failed measurements of dvnet's paths (the generators' own comparison does not count).
pub fn failures(report: &Report) -> Vec<String> {
    let mut failed: Vec<String> = report
        .series
        .iter()
        .filter(|s| s.test != "generator")
        .flat_map(|s| {
            s.errors.iter().map(move |e| {
                format!(
                    "{} {} ({} routers, {} rules): {e}",
                    s.test, s.path, s.routers, s.rules
                )
            })
        })
        .collect();
    if let Some(up) = &report.up {
        failed.extend(
            up.errors
                .iter()
                .map(|e| format!("up {} nodes: {e}", up.nodes)),
        );
    }
    failed
}

/// A network of the benchmark: a chain between hosts `a` and `b`.
struct Net {
    id: String,
    file: PathBuf,
    datapath: Datapath,
    src_ns: String,
    dst_ns: String,
    /// `b`'s address the forwarding figures go to (IPv6 with `--ipv6`).
    dst_ip: IpAddr,
    /// `b`'s IPv4 address (the firewall figures' generator is IPv4).
    dst_ip4: Ipv4Addr,
}

/// Where the received packets are counted.
enum Counter<'a> {
    /// `dvnet stats`: the destination host's link.
    Dvnet(&'a str),
    /// A plain interface's rx counter (`ip -s link`).
    Link { ns: &'a str, dev: &'a str },
}

/// A chain of `routers` routers between host `a` (subnet `sa`) and host `b` (subnet `sb`);
/// the first router carries `rules` drop rules on distinct /32s of 100.64.0.0/10.
pub(super) fn chain(name: &str, routers: usize, rules: usize) -> Value {
    chain_of(name, routers, rules, false)
}

/// [`chain`], with `ipv6` dual-stack: `sa` and `sb` get IPv6 prefixes (the transit subnets
/// carry IPv6 through link-local next hops).
pub(super) fn chain_of(name: &str, routers: usize, rules: usize, ipv6: bool) -> Value {
    let mut subnets = serde_json::Map::new();
    subnets.insert(
        "sa".into(),
        json!({"cidr": "10.0.0.0/30", "hosts": {"a": {}}}),
    );
    subnets.insert(
        "sb".into(),
        json!({"cidr": "10.0.1.0/30", "hosts": {"b": {}}}),
    );
    for i in 1..routers {
        subnets.insert(
            format!("t{i}"),
            json!({"cidr": format!("10.1.{}.{}/30", i / 64, (i % 64) * 4), "hosts": {}}),
        );
    }
    let mut list = serde_json::Map::new();
    for i in 1..=routers {
        let left = if i == 1 {
            "sa".to_owned()
        } else {
            format!("t{}", i - 1)
        };
        let right = if i == routers {
            "sb".to_owned()
        } else {
            format!("t{i}")
        };
        let mut r = json!({"subnets": [left, right]});
        if i == 1 && rules > 0 {
            let drop: Vec<Value> = (0..rules)
                .map(|n| {
                    let n = u32::try_from(n).expect("fewer than 2^22 rules");
                    let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + n);
                    json!([format!("{a}/32"), "any"])
                })
                .collect();
            r["fw_rules"] = json!({"policy": "ACCEPT", "drop": drop});
        }
        list.insert(format!("r{i}"), r);
    }
    if ipv6 {
        subnets["sa"]["cidr6"] = json!("fd00:a::/64");
        subnets["sb"]["cidr6"] = json!("fd00:b::/64");
    }
    json!({"name": name, "automatic_routing": true, "subnets": subnets, "routers": list})
}

struct Bench<'a> {
    scratch: &'a Scratch,
    wait: &'a mut Waiter,
    settings: &'a Settings,
    /// This binary: `bench udpgen|udpsink` run inside the namespaces.
    xtask: PathBuf,
    series: Vec<Series>,
    notes: Vec<String>,
}

/// TCP (Gbit/s) and 64-byte UDP over one flow (kpps received by host `b`, as `dvnet stats
/// <counted>` counts it) from `src_ns` to `dst` in `dst_ns`, `seconds` each: the figures of
/// this benchmark, for a network another benchmark built.
pub(super) fn tcp_and_udp(
    scratch: &Scratch,
    wait: &mut Waiter,
    seconds: f64,
    (src_ns, dst_ns, dst): (&str, &str, Ipv4Addr),
    counted: &str,
) -> anyhow::Result<(f64, f64)> {
    let settings = Settings {
        runs: 1,
        seconds,
        hops: Vec::new(),
        rules: Vec::new(),
        up_nodes: 0,
        flows: 1,
        generators: false,
        ipv6: false,
    };
    let mut bench = Bench {
        scratch,
        wait,
        settings: &settings,
        xtask: std::env::current_exe().context("locating xtask")?,
        series: Vec::new(),
        notes: Vec::new(),
    };
    let tcp = bench.tcp(src_ns, dst_ns, dst.into())?;
    let (udp, _) = bench.udp(src_ns, dst_ns, dst.into(), &Counter::Dvnet(counted), 1)?;
    Ok((tcp, udp))
}

/// Brings everything up, measures every figure `settings.runs` times (the paths take turns
/// within each run), tears it all down again.
pub fn measure(
    scratch: &Scratch,
    wait: &mut Waiter,
    settings: &Settings,
    machine: super::Machine,
) -> anyhow::Result<Report> {
    let mut bench = Bench {
        scratch,
        wait,
        settings,
        xtask: std::env::current_exe().context("locating xtask")?,
        series: Vec::new(),
        notes: Vec::new(),
    };
    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    // the networks, all up for the whole benchmark (idle ones cost nothing)
    let mut nets: BTreeMap<(&'static str, usize, usize), Net> = BTreeMap::new();
    let guard = OnDrop(Some(|| {
        for id in scratch.networks.borrow().iter() {
            let _ = scratch.dvnet().args(["down", id]).output();
        }
    }));
    for &k in &settings.hops {
        for (tag, dp) in [("e", Datapath::Ebpf), ("k", Datapath::Kernel)] {
            let net = bench.network(&format!("{tag}{k}"), dp, k, 0)?;
            nets.insert((dp_name(dp), k, 0), net);
        }
    }
    for &r in &settings.rules {
        for (tag, dp) in [("fe", Datapath::Ebpf), ("fk", Datapath::Kernel)] {
            // one router without rules is the forwarding figure's network already
            if let Entry::Vacant(slot) = nets.entry((dp_name(dp), 1, r)) {
                slot.insert(bench.network(&format!("{tag}{r}"), dp, 1, r)?);
            }
        }
    }
    let (va, vb) = bench.veth_pair()?;
    if settings.ipv6 {
        bench.notes.push(
            "IPv6: the chains are dual-stack and TCP, round trips and 64-byte UDP go to b's IPv6 \
             address (udpgen on a raw IPv6 socket, UDP checksums by the kernel); the bare veth \
             pair and the firewall figures stay IPv4"
                .into(),
        );
    }
    let hping3 = settings.generators && on_path("hping3");
    if settings.generators && !hping3 {
        bench
            .notes
            .push("hping3 is not installed: its generator figure is left out".into());
    }
    let veth = Counter::Link { ns: &vb, dev: "v1" };
    let veth_ip4 = Ipv4Addr::new(10, 255, 0, 2);
    let veth_ip = IpAddr::V4(veth_ip4);

    for run in 1..=settings.runs {
        eprintln!("xtask: run {run}/{}", settings.runs);
        // the generators on the bare pair
        if settings.generators {
            let r = bench.udp(&va, &vb, veth_ip, &veth, 1).map(|x| x.0);
            bench.record("generator", "udpgen", 0, 0, "kpps", r, None);
            let r = bench.iperf3_udp(&va, &vb, veth_ip4, &veth);
            bench.record("generator", "iperf3", 0, 0, "kpps", r, None);
        }
        if hping3 {
            let r = bench.hping3(&va, &vb, veth_ip4, &veth);
            bench.record("generator", "hping3", 0, 0, "kpps", r, None);
        }
        // forwarding
        let r = bench.tcp(&va, &vb, veth_ip);
        bench.record("tcp", "veth", 0, 0, "Gbit/s", r, None);
        for &k in &settings.hops {
            for dp in [Datapath::Ebpf, Datapath::Kernel] {
                let n = &nets[&(dp_name(dp), k, 0)];
                let r = bench.tcp(&n.src_ns, &n.dst_ns, n.dst_ip);
                bench.record("tcp", dp_name(dp), k, 0, "Gbit/s", r, None);
            }
        }
        // round trips, one ping at a time
        let r = bench.rtt(&va, veth_ip);
        bench.record("rtt", "veth", 0, 0, "µs", r, None);
        for &k in &settings.hops {
            for dp in [Datapath::Ebpf, Datapath::Kernel] {
                let n = &nets[&(dp_name(dp), k, 0)];
                let r = bench.rtt(&n.src_ns, n.dst_ip);
                bench.record("rtt", dp_name(dp), k, 0, "µs", r, None);
            }
        }
        let r = bench.udp(&va, &vb, veth_ip, &veth, 1).map(|x| x.0);
        bench.record("udp", "veth", 0, 0, "kpps", r, None);
        for &k in &settings.hops {
            for dp in [Datapath::Ebpf, Datapath::Kernel] {
                let n = &nets[&(dp_name(dp), k, 0)];
                let r = bench
                    .udp(&n.src_ns, &n.dst_ns, n.dst_ip, &Counter::Dvnet(&n.id), 1)
                    .map(|x| x.0);
                bench.record("udp", dp_name(dp), k, 0, "kpps", r, None);
            }
        }
        // the firewall
        for &rules in &settings.rules {
            for dp in [Datapath::Ebpf, Datapath::Kernel] {
                let n = &nets[&(dp_name(dp), 1, rules)];
                let r = bench.tcp(&n.src_ns, &n.dst_ns, n.dst_ip4.into());
                bench.record("fw_tcp", dp_name(dp), 1, rules, "Gbit/s", r, None);
            }
            for dp in [Datapath::Ebpf, Datapath::Kernel] {
                let n = &nets[&(dp_name(dp), 1, rules)];
                let r = bench.udp(
                    &n.src_ns,
                    &n.dst_ns,
                    n.dst_ip4.into(),
                    &Counter::Dvnet(&n.id),
                    settings.flows,
                );
                let (r, per_packet) = match r {
                    Ok((kpps, per_packet)) => (Ok(kpps), per_packet),
                    Err(e) => (Err(e), None),
                };
                let per_packet = per_packet.filter(|_| dp == Datapath::Ebpf && rules > 0);
                bench.record("fw_newflows", dp_name(dp), 1, rules, "kpps", r, per_packet);
            }
        }
    }
    // down before the `up` figure, so that it starts from the same machine every time
    for net in nets.values() {
        let out = scratch.dvnet().args(["down", &net.id]).output()?;
        check(&format!("dvnet down {}", net.id), &out)?;
    }
    scratch.networks.borrow_mut().clear();
    guard.disarm();
    for ns in [&va, &vb] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    let up = if settings.up_nodes > 0 {
        Some(bench.up_series()?)
    } else {
        None
    };
    for s in &mut bench.series {
        s.summary = Summary::of(&s.samples);
    }
    Ok(Report {
        bench: "datapath",
        started_unix,
        machine,
        settings: settings.clone(),
        idle: bench.wait.settings,
        generator: "udpgen (xtask bench udpgen): IPv4/UDP built in userspace, 64 bytes of \
                    payload, sent 64 at a time with sendmmsg on a raw socket",
        series: bench.series,
        up,
        notes: bench.notes,
    })
}

fn dp_name(dp: Datapath) -> &'static str {
    match dp {
        Datapath::Ebpf => "ebpf",
        Datapath::Kernel => "kernel",
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).exists()))
}

/// `dvnet stats --json` of `id`: the rx packets of host `b`'s link and the connection map's
/// inserts.
fn dvnet_counters(scratch: &Scratch, id: &str) -> anyhow::Result<(u64, u64)> {
    let out = scratch.dvnet().args(["stats", id, "--json"]).output()?;
    check("dvnet stats", &out)?;
    let v: Value = serde_json::from_slice(&out.stdout).context("dvnet stats --json")?;
    let rx = v["links"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["node"] == "b"))
        .and_then(|l| l["rx"]["packets"].as_u64())
        .context("dvnet stats: no rx packets for host b")?;
    let inserts = v["conntrack"]["inserted"].as_u64().unwrap_or(0);
    Ok((rx, inserts))
}

pub(super) fn link_rx(ns: &str, dev: &str) -> anyhow::Result<u64> {
    let out = Command::new("ip")
        .args(["-n", ns, "-s", "-j", "link", "show", dev])
        .output()?;
    check("ip -s link", &out)?;
    let v: Value = serde_json::from_slice(&out.stdout).context("ip -s -j link")?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("ip -s -j link: no rx packets")
}

impl Bench<'_> {
    #[expect(
        clippy::too_many_arguments,
        reason = "the figure's key spelled out at each call reads best"
    )]
    fn record(
        &mut self,
        test: &'static str,
        path: &'static str,
        routers: usize,
        rules: usize,
        unit: &'static str,
        result: anyhow::Result<f64>,
        per_packet: Option<f64>,
    ) {
        let pos = self.series.iter().position(|s| {
            s.test == test && s.path == path && s.routers == routers && s.rules == rules
        });
        let i = pos.unwrap_or_else(|| {
            self.series.push(Series {
                test,
                path,
                routers,
                rules,
                unit,
                samples: Vec::new(),
                summary: None,
                inserts_per_packet: Vec::new(),
                errors: Vec::new(),
            });
            self.series.len() - 1
        });
        let s = &mut self.series[i];
        match result {
            Ok(x) => {
                eprintln!(
                    "xtask:   {test:<11} {path:<6} {routers:>2} routers {rules:>5} rules: {} {unit}",
                    sig3(x)
                );
                s.samples.push(x);
            }
            Err(e) => {
                eprintln!("xtask:   {test} {path} {routers} routers {rules} rules: FAILED: {e:#}");
                s.errors.push(format!("{e:#}"));
            }
        }
        if let Some(p) = per_packet {
            s.inserts_per_packet.push(p);
        }
    }

    /// Writes the chain, brings it up, checks that `a` reaches `b`.
    fn network(
        &mut self,
        tag: &str,
        datapath: Datapath,
        routers: usize,
        rules: usize,
    ) -> anyhow::Result<Net> {
        let name = format!("{}-{tag}", self.scratch.prefix);
        let (file, plan) = self.scratch.network_file(
            &format!("{tag}.json"),
            &chain_of(&name, routers, rules, self.settings.ipv6),
            PlanOptions {
                datapath,
                ..PlanOptions::default()
            },
        )?;
        let node = |name: &str| {
            plan.nodes
                .iter()
                .find(|n| n.name == name)
                .with_context(|| format!("no node {name} in the plan"))
        };
        let (a, b) = (node("a")?, node("b")?);
        let b_link = plan.links_of(b).next().context("b has no link")?;
        let dst_ip4 = b_link.address.expect("the bench lab is IPv4");
        let dst_ip = match b_link.address6 {
            Some(v6) if self.settings.ipv6 => IpAddr::V6(v6),
            _ => IpAddr::V4(dst_ip4),
        };
        let net = Net {
            id: plan.id.clone(),
            file,
            datapath,
            src_ns: a.netns.clone(),
            dst_ns: b.netns.clone(),
            dst_ip,
            dst_ip4,
        };
        self.scratch.networks.borrow_mut().push(net.id.clone());
        let out = self
            .scratch
            .dvnet()
            .arg("up")
            .arg(&net.file)
            .args(["--datapath", dp_name(net.datapath)])
            .output()?;
        check(&format!("dvnet up {}", net.id), &out)?;
        ping(&net.src_ns, net.dst_ip).with_context(|| format!("{}: a does not reach b", net.id))?;
        eprintln!(
            "xtask: up: {} ({routers} routers, {rules} rules, {})",
            net.id,
            dp_name(datapath)
        );
        Ok(net)
    }

    /// Two namespaces joined by a bare veth pair (`v0` 10.255.0.1 — `v1` 10.255.0.2), IPv6
    /// off as in dvnet's nodes.
    fn veth_pair(&mut self) -> anyhow::Result<(String, String)> {
        let va = format!("{}-va", self.scratch.prefix);
        let vb = format!("{}-vb", self.scratch.prefix);
        let ip = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("ip").args(args).output()?;
            check(&format!("ip {}", args.join(" ")), &out)
        };
        ip(&["netns", "add", &va])?;
        ip(&["netns", "add", &vb])?;
        ip(&[
            "-n", &va, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", &vb,
        ])?;
        for (ns, dev, addr) in [(&va, "v0", "10.255.0.1/30"), (&vb, "v1", "10.255.0.2/30")] {
            for key in ["all", "default"] {
                let out = in_ns(ns, "sysctl")
                    .args(["-qw", &format!("net.ipv6.conf.{key}.disable_ipv6=1")])
                    .output()?;
                check("sysctl disable_ipv6", &out)?;
            }
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        ping(&va, Ipv4Addr::new(10, 255, 0, 2)).context("the bare veth pair does not work")?;
        Ok((va, vb))
    }

    /// One TCP stream for `seconds`, Gbit/s as the receiver counts it.
    fn tcp(&mut self, src_ns: &str, dst_ns: &str, dst: IpAddr) -> anyhow::Result<f64> {
        self.wait.settle("tcp")?;
        let server = iperf3_server(dst_ns)?;
        let secs = format!("{}", self.settings.seconds);
        let v = iperf3_client(src_ns, &["-c", &dst.to_string(), "-t", &secs])?;
        drop(server.interrupt(Duration::from_secs(1)));
        let bps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("iperf3: no end.sum_received.bits_per_second")?;
        Ok(bps / 1e9)
    }

    /// The mean round-trip time of 200 pings 5 ms apart, µs (`ping -q` summary).
    fn rtt(&mut self, src_ns: &str, dst: IpAddr) -> anyhow::Result<f64> {
        self.wait.settle("rtt")?;
        let out = in_ns(src_ns, "ping")
            .args([
                "-q",
                "-n",
                "-c",
                "200",
                "-i",
                "0.005",
                "-W",
                "1",
                &dst.to_string(),
            ])
            .output()?;
        check("ping", &out)?;
        parse_rtt_avg(&String::from_utf8_lossy(&out.stdout))
            .map(|ms| ms * 1e3)
            .context("ping printed no rtt summary")
    }

    /// udpgen from `src_ns` to a sink in `dst_ns` over `flows` flows; kpps received, and the
    /// connection-map inserts per received packet (dvnet networks).
    fn udp(
        &mut self,
        src_ns: &str,
        dst_ns: &str,
        dst: IpAddr,
        counter: &Counter<'_>,
        flows: u32,
    ) -> anyhow::Result<(f64, Option<f64>)> {
        let _sink = self.sink(dst_ns, flows)?;
        self.wait.settle("udp")?;
        let read = |c: &Counter<'_>| -> anyhow::Result<(u64, u64)> {
            match c {
                Counter::Dvnet(id) => dvnet_counters(self.scratch, id),
                Counter::Link { ns, dev } => Ok((link_rx(ns, dev)?, 0)),
            }
        };
        let (rx0, ct0) = read(counter)?;
        let out = in_ns(src_ns, &self.xtask)
            .args(["bench", "udpgen", "--dst", &dst.to_string()])
            .args(["--dport", &SINK_PORT.to_string()])
            .args(["--flows", &flows.to_string()])
            .args(["--seconds", &self.settings.seconds.to_string()])
            .output()?;
        check("udpgen", &out)?;
        // packets still in flight through a long chain
        std::thread::sleep(Duration::from_millis(50));
        let (rx1, ct1) = read(counter)?;
        let v: Value = serde_json::from_slice(&out.stdout).context("udpgen output")?;
        let seconds = v["seconds"].as_f64().context("udpgen: no seconds")?;
        let received = rx1.saturating_sub(rx0);
        if received == 0 {
            bail!("nothing arrived ({} sent)", v["sent"]);
        }
        #[expect(clippy::cast_precision_loss, reason = "packet counts, far below 2^52")]
        let (received, inserts) = (received as f64, ct1.saturating_sub(ct0) as f64);
        let per_packet = matches!(counter, Counter::Dvnet(_)).then_some(inserts / received);
        Ok((received / seconds / 1e3, per_packet))
    }

    /// A sink bound to the ports `flows` flows use, ready.
    fn sink(&self, dst_ns: &str, flows: u32) -> anyhow::Result<Background> {
        let mut sink = Background::spawn(
            "udpsink",
            in_ns(dst_ns, &self.xtask)
                .args(["bench", "udpsink", "--port", &SINK_PORT.to_string()])
                .args(["--ports", &udpgen::ports_used(flows).to_string()])
                .stdout(Stdio::piped()),
        )?;
        let line = sink.first_line()?;
        if line != "ready" {
            bail!("udpsink said {line:?}");
        }
        Ok(sink)
    }

    /// `iperf3 -u -l 64 -b 0` on the bare pair: kpps received.
    fn iperf3_udp(
        &mut self,
        src_ns: &str,
        dst_ns: &str,
        dst: Ipv4Addr,
        counter: &Counter<'_>,
    ) -> anyhow::Result<f64> {
        let Counter::Link { ns, dev } = counter else {
            bail!("iperf3 -u is measured on the bare pair only");
        };
        self.wait.settle("iperf3 -u")?;
        let server = iperf3_server(dst_ns)?;
        let rx0 = link_rx(ns, dev)?;
        let secs = format!("{}", self.settings.seconds);
        let v = iperf3_client(
            src_ns,
            &[
                "-c",
                &dst.to_string(),
                "-u",
                "-l",
                "64",
                "-b",
                "0",
                "-t",
                &secs,
            ],
        )?;
        let rx1 = link_rx(ns, dev)?;
        drop(server.interrupt(Duration::from_secs(1)));
        let seconds = v["end"]["sum"]["seconds"]
            .as_f64()
            .context("iperf3: no end.sum.seconds")?;
        #[expect(clippy::cast_precision_loss, reason = "packet counts")]
        Ok(rx1.saturating_sub(rx0) as f64 / seconds / 1e3)
    }

    /// `hping3 --udp -s 1024 -p 9 -d 64 --flood` on the bare pair: kpps received.
    fn hping3(
        &mut self,
        src_ns: &str,
        dst_ns: &str,
        dst: Ipv4Addr,
        counter: &Counter<'_>,
    ) -> anyhow::Result<f64> {
        let Counter::Link { ns, dev } = counter else {
            bail!("hping3 is measured on the bare pair only");
        };
        let _sink = self.sink(dst_ns, 1)?;
        self.wait.settle("hping3")?;
        let rx0 = link_rx(ns, dev)?;
        let start = Instant::now();
        let h = Background::spawn(
            "hping3",
            in_ns(src_ns, "hping3")
                .args(["--udp", "-s", "1024", "-p", &SINK_PORT.to_string()])
                .args(["-d", "64", "--flood", &dst.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        std::thread::sleep(Duration::from_secs_f64(self.settings.seconds));
        drop(h.interrupt(Duration::from_secs(1)));
        let seconds = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(50));
        let rx1 = link_rx(ns, dev)?;
        #[expect(clippy::cast_precision_loss, reason = "packet counts")]
        Ok(rx1.saturating_sub(rx0) as f64 / seconds / 1e3)
    }

    /// `up` (and `down`) of a generated chain with the eBPF datapath, `runs` times.
    fn up_series(&mut self) -> anyhow::Result<UpSeries> {
        let nodes = self.settings.up_nodes;
        let name = format!("{}-u{nodes}", self.scratch.prefix);
        let value = generate(&GenSpec {
            shape: Shape::Chain,
            nodes,
            hosts_per_lan: 1,
            fanout: 2,
            name: Some(name),
        })?;
        let (file, plan) =
            self.scratch
                .network_file(&format!("u{nodes}.json"), &value, PlanOptions::default())?;
        // the hooks, as `dvnet plan --json` counts them: every link, plus its fabric port
        let node_hooks = plan.links.len();
        let fabric_hooks = plan
            .links
            .iter()
            .filter(|l| l.fabric_port.is_some())
            .count();
        let id = plan.id.clone();
        self.scratch.networks.borrow_mut().push(id.clone());
        let mut series = UpSeries {
            nodes,
            node_hooks,
            fabric_hooks,
            hooks: node_hooks + fabric_hooks,
            up: None,
            programs: None,
            down: None,
            runs: Vec::new(),
            errors: Vec::new(),
        };
        let (mut ups, mut programs, mut downs) = (Vec::new(), Vec::new(), Vec::new());
        for run in 1..=self.settings.runs {
            match self.up_once(&file, &id) {
                Ok((up, phases, down)) => {
                    let p = phases.get("programs").and_then(Value::as_f64);
                    eprintln!(
                        "xtask: up {nodes} nodes, run {run}: {} s (programs {} s), down {} s",
                        secs(up),
                        p.map_or_else(|| "?".into(), secs),
                        secs(down)
                    );
                    ups.push(up);
                    downs.push(down);
                    programs.extend(p);
                    series
                        .runs
                        .push(json!({"up": up, "down": down, "phases": phases}));
                }
                Err(e) => {
                    eprintln!("xtask: up {nodes} nodes, run {run}: FAILED: {e:#}");
                    series.errors.push(format!("{e:#}"));
                }
            }
            idle::check_interrupted()?;
        }
        series.up = Summary::of(&ups);
        series.programs = Summary::of(&programs);
        series.down = Summary::of(&downs);
        Ok(series)
    }

    fn up_once(
        &mut self,
        file: &Path,
        id: &str,
    ) -> anyhow::Result<(f64, serde_json::Map<String, Value>, f64)> {
        self.wait.settle("dvnet up")?;
        let scratch = self.scratch;
        let guard = OnDrop(Some(|| {
            let _ = scratch.dvnet().args(["down", id]).output();
        }));
        let (took, out) = timed(scratch.dvnet().arg("up").arg(file).arg("--json"))?;
        check("dvnet up", &out)?;
        let (phases, _) = up_report(&out.stdout);
        let settled = idle::check_interrupted().and_then(|()| self.wait.settle("dvnet down"));
        let (down, out) = timed(scratch.dvnet().args(["down", id]))?;
        guard.disarm();
        settled?;
        check("dvnet down", &out)?;
        Ok((took.as_secs_f64(), phases, down.as_secs_f64()))
    }
}

/// The average of `rtt min/avg/max/mdev = 0.031/0.045/0.101/0.009 ms`, in ms.
pub(super) fn parse_rtt_avg(text: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.starts_with("rtt ") || l.starts_with("round-trip"))?;
    let values = line.split_once(" = ")?.1;
    values.split('/').nth(1)?.trim().parse().ok()
}

/// `ping -c 1` until one answers (three tries).
pub(super) fn ping(ns: &str, dst: impl Into<IpAddr>) -> anyhow::Result<()> {
    let dst: IpAddr = dst.into();
    let mut last = None;
    for _ in 0..3 {
        let out = in_ns(ns, "ping")
            .args(["-c", "1", "-W", "2", &dst.to_string()])
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        last = Some(out);
    }
    check("ping", &last.expect("three tries"))
}

/// An iperf3 server in `ns` for one test (`-1`), stopped when dropped.
pub(super) fn iperf3_server(ns: &str) -> anyhow::Result<Background> {
    Background::spawn(
        "iperf3 -s",
        in_ns(ns, "iperf3")
            .args(["-s", "-1", "-p", IPERF_PORT])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

/// Runs an iperf3 client (`-J`) in `ns`, retrying while the server is still starting.
pub(super) fn iperf3_client(ns: &str, args: &[&str]) -> anyhow::Result<Value> {
    let start = Instant::now();
    loop {
        let out = in_ns(ns, "iperf3")
            .args(["-p", IPERF_PORT, "-J"])
            .args(args)
            .output()?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.success() && v["error"].is_null() {
            return Ok(v);
        }
        let error = v["error"].as_str().map_or_else(
            || String::from_utf8_lossy(&out.stderr).into_owned(),
            str::to_owned,
        );
        if start.elapsed() > Duration::from_secs(5) || !error.contains("connect") {
            bail!("iperf3 client: {}", error.trim());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The tables: for a terminal, or Markdown (`markdown`) for the README.
pub fn tables(report: &Report, markdown: bool) -> String {
    use comfy_table::Table;
    use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
    let new_table = || {
        let mut t = Table::new();
        t.load_style(if markdown {
            ASCII_MARKDOWN
        } else {
            UTF8_FULL_CONDENSED
        });
        t
    };
    let find = |test: &str, path: &str, routers: usize, rules: usize| {
        report
            .series
            .iter()
            .find(|s| s.test == test && s.path == path && s.routers == routers && s.rules == rules)
    };
    let cell = |s: Option<&Series>| match s {
        Some(s) => match &s.summary {
            Some(x) => x.cell_with(sig3),
            None if !s.errors.is_empty() => "failed".to_owned(),
            None => "–".to_owned(),
        },
        None => String::new(),
    };
    let median = |s: Option<&Series>| s.and_then(|s| s.summary.map(|x| x.median));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => String::new(),
    };
    let st = &report.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "datapath: {} run(s), {} s per figure; {}",
        st.runs,
        st.seconds,
        report.machine.line()
    );

    // forwarding
    let mut t = new_table();
    let mut header = vec!["median (min–max)".to_owned(), "bare veth pair".to_owned()];
    header.extend(
        st.hops
            .iter()
            .map(|k| format!("{k} router{}", if *k == 1 { "" } else { "s" })),
    );
    t.set_header(header);
    for (test, unit, label) in [
        ("tcp", "Gbit/s", "TCP, one stream"),
        ("udp", "kpps", "64-byte UDP received"),
        ("rtt", "µs", "ping round trip"),
    ] {
        let mut row = vec![format!("{label}, bare veth ({unit})")];
        row.push(cell(find(test, "veth", 0, 0)));
        row.extend(st.hops.iter().map(|_| String::new()));
        t.add_row(row);
        for (path, name) in [("ebpf", "eBPF"), ("kernel", "kernel")] {
            let mut row = vec![format!("{label}, {name} ({unit})"), String::new()];
            row.extend(st.hops.iter().map(|&k| cell(find(test, path, k, 0))));
            t.add_row(row);
        }
        let mut row = vec![format!("{label}: eBPF ÷ kernel"), String::new()];
        row.extend(st.hops.iter().map(|&k| {
            ratio(
                median(find(test, "ebpf", k, 0)),
                median(find(test, "kernel", k, 0)),
            )
        }));
        t.add_row(row);
        let veth = median(find(test, "veth", 0, 0));
        let mut row = vec![format!("{label}: eBPF ÷ bare veth"), String::new()];
        row.extend(
            st.hops
                .iter()
                .map(|&k| ratio(median(find(test, "ebpf", k, 0)), veth)),
        );
        t.add_row(row);
    }
    let _ = writeln!(
        out,
        "\nForwarding: chains of routers, every link point-to-point (TCP: iperf3, one stream; \
         UDP: udpgen, one flow, packets per second received at the far host; RTT: ping, 200 round trips 5 ms apart)\n\n{t}"
    );

    // firewall
    if !st.rules.is_empty() {
        let mut t = new_table();
        let mut header = vec!["one router, rules that never match".to_owned()];
        header.extend(st.rules.iter().map(|&r| match r {
            1 => "1 rule".to_owned(),
            r => format!("{} rules", thousands(r)),
        }));
        let (first, last) = (st.rules[0], st.rules[st.rules.len() - 1]);
        header.push(format!("{} ÷ {}", thousands(last), thousands(first)));
        t.set_header(header);
        for (test, unit, label) in [
            ("fw_tcp", "Gbit/s", "TCP, one stream"),
            ("fw_newflows", "kpps", "new UDP flows"),
        ] {
            for (path, name) in [("ebpf", "eBPF"), ("kernel", "iptables")] {
                let mut row = vec![format!("{label}, {name} ({unit})")];
                row.extend(st.rules.iter().map(|&r| cell(find(test, path, 1, r))));
                row.push(ratio(
                    median(find(test, path, 1, last)),
                    median(find(test, path, 1, first)),
                ));
                t.add_row(row);
            }
        }
        let _ = writeln!(
            out,
            "\nFirewall: drop rules on distinct /32s of 100.64.0.0/10; new flows: udpgen cycling \
             through {} (source port, destination port) pairs, packets per second received\n\n{t}",
            thousands(st.flows as usize)
        );
        let per_packet: Vec<String> = st
            .rules
            .iter()
            .filter_map(|&r| {
                let s = find("fw_newflows", "ebpf", 1, r)?;
                let x = Summary::of(&s.inserts_per_packet)?;
                Some(format!("{r} rules {:.2}", x.median))
            })
            .collect();
        if !per_packet.is_empty() {
            let _ = writeln!(
                out,
                "\neBPF connection-map inserts per received packet (1.00: every packet was the \
                 first of its flow): {}",
                per_packet.join(", ")
            );
        }
    }

    // up
    if let Some(up) = &report.up {
        let mut t = new_table();
        t.set_header(vec![
            format!("dvnet up, gen chain {}, eBPF", thousands(up.nodes)),
            "seconds: median (min–max)".to_owned(),
        ]);
        let c = |x: &Option<Summary>| {
            x.map_or_else(
                || {
                    if up.errors.is_empty() {
                        "–".into()
                    } else {
                        "failed".into()
                    }
                },
                |x| x.cell(),
            )
        };
        t.add_row(vec!["up (total)".to_owned(), c(&up.up)]);
        t.add_row(vec![
            format!(
                "attaching {} hooks ({} node interfaces + {} fabric ports): the \"programs\" phase",
                thousands(up.hooks),
                thousands(up.node_hooks),
                thousands(up.fabric_hooks)
            ),
            c(&up.programs),
        ]);
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        if let Some(p) = up.programs
            && up.hooks > 0
        {
            t.add_row(vec![
                "per hook".to_owned(),
                format!("{:.3} ms", p.median * 1e3 / up.hooks as f64),
            ]);
        }
        t.add_row(vec!["down".to_owned(), c(&up.down)]);
        let _ = writeln!(out, "\n{t}");
    }

    // generators
    let gens: Vec<String> = ["udpgen", "iperf3", "hping3"]
        .iter()
        .filter_map(|g| {
            let s = find("generator", g, 0, 0)?;
            Some(format!("{g} {} kpps", cell(Some(s))))
        })
        .collect();
    if !gens.is_empty() {
        let _ = writeln!(
            out,
            "\nGenerators alone on the bare veth pair (64-byte UDP payloads, received): {}",
            gens.join(", ")
        );
    }

    // targets
    let mut targets = Vec::new();
    if let Some(&k) = st.hops.iter().max() {
        let r = ratio(
            median(find("tcp", "ebpf", k, 0)),
            median(find("tcp", "kernel", k, 0)),
        );
        if !r.is_empty() {
            targets.push(format!(
                "eBPF ≥ 1.2× kernel at {k} routers (TCP): {r}{}",
                verdict(
                    median(find("tcp", "ebpf", k, 0))
                        .zip(median(find("tcp", "kernel", k, 0)))
                        .map(|(a, b)| a >= 1.2 * b)
                )
            ));
        }
    }
    if let (Some(&first), Some(&last)) = (st.rules.first(), st.rules.last()) {
        for (test, what) in [("fw_tcp", "TCP"), ("fw_newflows", "new flows")] {
            let a = median(find(test, "ebpf", 1, last));
            let b = median(find(test, "ebpf", 1, first));
            if let (Some(a), Some(b)) = (a, b) {
                targets.push(format!(
                    "eBPF {} rules within 10 % of {} ({what}): {:+.0} %{}",
                    thousands(last),
                    thousands(first),
                    (a / b - 1.0) * 100.0,
                    verdict(Some(a >= 0.9 * b))
                ));
            }
        }
    }
    if !targets.is_empty() {
        let _ = writeln!(out, "\nTargets: {}", targets.join("; "));
    }
    out
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => " (met)",
        Some(false) => " (missed)",
        None => "",
    }
}

/// 10000 → "10,000".
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvnet::plan::Plan;
    use dvnet::topology::Topology;

    #[test]
    fn chains_are_point_to_point_and_valid() {
        for (k, rules) in [(1, 0), (4, 0), (16, 0), (1, 1000)] {
            let text = chain("dvb1-x", k, rules).to_string();
            let plan = Plan::build(
                &Topology::from_json(&text, "chain").unwrap(),
                PlanOptions::default(),
            )
            .unwrap();
            assert_eq!(plan.nodes.len(), k + 2);
            assert!(plan.links.iter().all(|l| l.fabric_port.is_none()));
            let fw = plan.nodes.iter().find(|n| n.name == "r1").unwrap();
            assert_eq!(
                fw.firewall.as_ref().map_or(0, |f| f.rules.len()),
                rules,
                "{k} routers"
            );
        }
    }

    #[test]
    fn rtt_summary_lines() {
        let text = "--- 10.0.1.2 ping statistics ---\n200 packets transmitted, 200 received\n\
                    rtt min/avg/max/mdev = 0.031/0.045/0.101/0.009 ms\n";
        assert_eq!(parse_rtt_avg(text), Some(0.045));
        assert_eq!(parse_rtt_avg("100% packet loss\n"), None);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(129_024), "129,024");
    }
}
