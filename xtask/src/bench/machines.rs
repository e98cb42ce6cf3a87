//! `cargo xtask bench machines`: a lab placed on two machines beside the same lab on one, in
//! one run. Namespaces stand in for the machines, each with an underlay address on a bridge
//! they share; dvnet runs inside each (as `dvnet up FILE --machine mK` would on a real one).
//!
//! - TCP (iperf3) and 64-byte UDP (udpgen, one flow) from `a` to `b` through two routers,
//!   `a`, `r1` on m1 and `r2`, `b` on m2: the routers' transit link crosses the machines
//!   through VXLAN. Beside: the same chain on one machine. Both datapaths.
//! - `up` of an N-node chain (2,000 unless `--nodes`) split in halves across the machines,
//!   both shares at once (wall time), beside the same chain on one machine.
//!
//! Here both "machines" share this machine's CPUs: the figures show what the tunnel costs
//! (encapsulation, a bridge and the underlay on each side), not what two machines gain.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use dvnet::plan::{Datapath, PlanOptions};
use serde::Serialize;
use serde_json::{Value, json};

use super::datapath::{chain, ping, tcp_and_udp};
use super::harness::{Scratch, check, in_ns, timed};
use super::idle::Waiter;
use super::stats::{Summary, sig3};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    repeat: super::harness::Repeat,
    /// Nodes of the chain whose `up` is timed [default: 2000; 200 with --quick].
    #[arg(long)]
    nodes: Option<usize>,
    /// Where to write the results [default: bench-results/machines.json].
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One figure over the runs.
#[derive(Debug, Default, Serialize)]
pub struct Figure {
    pub unit: &'static str,
    pub samples: Vec<f64>,
    pub summary: Option<Summary>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub seconds: f64,
    pub nodes: usize,
    /// By `<test> <datapath|up> <one machine|two machines>`.
    pub figures: BTreeMap<String, Figure>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let nodes = args
        .nodes
        .unwrap_or(if args.repeat.quick { 200 } else { 2000 });
    super::harness::run_repeated(
        "machines",
        &args.repeat,
        args.json.as_deref(),
        |scratch, wait, runs, seconds| measure(scratch, wait, runs, seconds, nodes),
        table,
        |r: &Report| &r.errors,
    )
}

/// Two machines: `<prefix>-m1`, `<prefix>-m2` at 192.0.2.1 and .2 on a bridge in
/// `<prefix>-sw` (the scratch's cleanup removes them with everything else it owns).
fn machines(scratch: &Scratch) -> anyhow::Result<[String; 2]> {
    let ip = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("ip").args(args).output()?;
        check(&format!("ip {}", args.join(" ")), &out)
    };
    let sw = format!("{}-sw", scratch.prefix);
    ip(&["netns", "add", &sw])?;
    ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &sw, "link", "set", "br0", "up"])?;
    let names = [1, 2].map(|k| format!("{}-m{k}", scratch.prefix));
    for (k, m) in names.iter().enumerate() {
        let (near, far) = (format!("u{k}"), format!("p{k}"));
        ip(&["netns", "add", m])?;
        ip(&["-n", m, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", m, "link", "add", &near, "type", "veth", "peer", "name", &far, "netns", &sw,
        ])?;
        ip(&["-n", &sw, "link", "set", &far, "master", "br0", "up"])?;
        ip(&[
            "-n",
            m,
            "addr",
            "add",
            &format!("192.0.2.{}/24", k + 1),
            "dev",
            &near,
        ])?;
        ip(&["-n", m, "link", "set", &near, "up"])?;
    }
    Ok(names)
}

/// `doc` placed on machines m1 and m2: routers in the first half of the file's order and
/// their subnets' hosts on m1, the rest on m2 (a host goes where the first router of its
/// subnet goes), or as `place` says by name.
fn placed(mut doc: Value, place: impl Fn(&str, usize, usize) -> usize) -> Value {
    let routers: Vec<(String, Vec<String>)> = doc["routers"]
        .as_object()
        .map(|r| {
            r.iter()
                .map(|(name, v)| {
                    let subnets = v["subnets"]
                        .as_array()
                        .map(|s| {
                            s.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    (name.clone(), subnets)
                })
                .collect()
        })
        .unwrap_or_default();
    let count = routers.len();
    let mut subnet_machine: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (name, subnets)) in routers.iter().enumerate() {
        let m = place(name, i, count);
        doc["routers"][name]["machine"] = json!(format!("m{m}"));
        for s in subnets {
            subnet_machine.entry(s.clone()).or_insert(m);
        }
    }
    if let Some(subnets) = doc["subnets"].as_object_mut() {
        for (name, subnet) in subnets.iter_mut() {
            let m = subnet_machine.get(name).copied().unwrap_or(1);
            if let Some(hosts) = subnet["hosts"].as_object_mut() {
                for host in hosts.values_mut() {
                    host["machine"] = json!(format!("m{m}"));
                }
            }
        }
    }
    doc["machines"] = json!({"m1": {"address": "192.0.2.1"}, "m2": {"address": "192.0.2.2"}});
    doc
}

/// dvnet in machine namespace `ns`.
fn dvnet_in(scratch: &Scratch, ns: &str) -> Command {
    in_ns(ns, &scratch.dvnet)
}

/// Brings up a placed lab: both shares at once; the wall time.
fn up_placed(
    scratch: &Scratch,
    m: &[String; 2],
    file: &Path,
    args: &[&str],
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let children = [1, 2].map(|k| {
        dvnet_in(scratch, &m[k - 1])
            .arg("up")
            .arg(file)
            .args(["--machine", &format!("m{k}")])
            .args(args)
            .output()
    });
    let took = started.elapsed().as_secs_f64();
    for (k, out) in children.into_iter().enumerate() {
        check(&format!("dvnet up --machine m{}", k + 1), &out?)?;
    }
    Ok(took)
}

/// A 2-router chain, on one machine or across two: (the share or network counting `b`,
/// `a`'s namespace, `b`'s namespace, `b`'s address).
fn small_chain(
    scratch: &Scratch,
    m: &[String; 2],
    datapath: Datapath,
    split: bool,
) -> anyhow::Result<(String, String, String, Ipv4Addr)> {
    let dp = if datapath == Datapath::Ebpf {
        "ebpf"
    } else {
        "kernel"
    };
    let tag = format!("{}{}", &dp[..1], if split { "2" } else { "1" });
    let name = format!("{}-{tag}", scratch.prefix);
    let mut doc = chain(&name, 2, 0);
    if split {
        doc = placed(doc, |_, i, _| i + 1);
    }
    let text = serde_json::to_string_pretty(&doc)?;
    let file = scratch.dir.join(format!("{tag}.json"));
    std::fs::write(&file, &text)?;
    let topo = dvnet::topology::Topology::from_json(&text, "chain")?;
    let options = PlanOptions {
        datapath,
        ..PlanOptions::default()
    };
    let (counted, a, b, address) = if split {
        let one = dvnet::plan::Plan::build_share(&topo, options, 0)?;
        let two = dvnet::plan::Plan::build_share(&topo, options, 1)?;
        scratch
            .networks
            .borrow_mut()
            .extend([one.id.clone(), two.id.clone()]);
        up_placed(scratch, m, &file, &["--datapath", dp])?;
        let b = two.node("b").context("b on m2")?;
        let address = two
            .links_of(b)
            .next()
            .and_then(|l| l.address)
            .context("b's IPv4 address")?;
        let a = one.node("a").context("a on m1")?.netns.clone();
        (two.id.clone(), a, b.netns.clone(), address)
    } else {
        let plan = dvnet::plan::Plan::build(&topo, options)?;
        scratch.networks.borrow_mut().push(plan.id.clone());
        let (_, out) = timed(
            scratch
                .dvnet()
                .arg("up")
                .arg(&file)
                .args(["--datapath", dp]),
        )?;
        check("dvnet up", &out)?;
        let b = plan.node("b").context("b")?;
        let address = plan
            .links_of(b)
            .next()
            .and_then(|l| l.address)
            .context("b's IPv4 address")?;
        let a = plan.node("a").context("a")?.netns.clone();
        (plan.id.clone(), a, b.netns.clone(), address)
    };
    ping(&a, address).with_context(|| format!("{tag}: a does not reach b"))?;
    Ok((counted, a, b, address))
}

fn measure(
    scratch: &Scratch,
    wait: &mut Waiter,
    runs: usize,
    seconds: f64,
    nodes: usize,
) -> anyhow::Result<Report> {
    let mut report = Report {
        seconds,
        nodes,
        ..Report::default()
    };
    let m = machines(scratch)?;
    let mut chains = Vec::new();
    for datapath in [Datapath::Ebpf, Datapath::Kernel] {
        for split in [false, true] {
            chains.push((datapath, split, small_chain(scratch, &m, datapath, split)?));
        }
    }
    // the large chain, on one machine and split
    let name = format!("{}-big", scratch.prefix);
    let doc = dvnet::generate::generate(&dvnet::generate::GenSpec {
        shape: dvnet::generate::Shape::Chain,
        nodes,
        hosts_per_lan: 1,
        fanout: 2,
        name: Some(name.clone()),
    })?;
    let one_file = scratch.dir.join("big1.json");
    std::fs::write(&one_file, serde_json::to_string(&doc)?)?;
    let split_doc = placed(doc, |_, i, n| if i < n / 2 { 1 } else { 2 });
    let split_file = scratch.dir.join("big2.json");
    let split_text = serde_json::to_string(&split_doc)?;
    std::fs::write(&split_file, &split_text)?;
    let big = dvnet::topology::Topology::from_json(&split_text, "big")?;
    let big_id = big.id.clone();
    let big_shares = [big.machine_id(0), big.machine_id(1)];

    let record = |report: &mut Report, key: String, unit, r: anyhow::Result<f64>| match r {
        Ok(x) => {
            eprintln!("xtask:   {key:<32} {} {unit}", sig3(x));
            let fig = report.figures.entry(key).or_default();
            fig.unit = unit;
            fig.samples.push(x);
        }
        Err(e) => {
            eprintln!("xtask:   {key} FAILED: {e:#}");
            report.errors.push(format!("{key}: {e:#}"));
        }
    };
    for run in 1..=runs {
        eprintln!("xtask: run {run}/{runs}");
        for (datapath, split, (counted, a, b, address)) in &chains {
            let dp = if *datapath == Datapath::Ebpf {
                "ebpf"
            } else {
                "kernel"
            };
            let place = if *split {
                "two machines"
            } else {
                "one machine"
            };
            match tcp_and_udp(scratch, wait, seconds, (a, b, *address), counted) {
                Ok((tcp, udp)) => {
                    record(&mut report, format!("tcp {dp} {place}"), "Gbit/s", Ok(tcp));
                    record(&mut report, format!("udp {dp} {place}"), "kpps", Ok(udp));
                }
                Err(e) => record(&mut report, format!("tcp+udp {dp} {place}"), "", Err(e)),
            }
        }
        // up of the large chain: on one machine, then split (each taken down again)
        wait.settle("dvnet up")?;
        scratch.networks.borrow_mut().push(big_id.clone());
        let r = timed(scratch.dvnet().arg("up").arg(&one_file)).and_then(|(took, out)| {
            check("dvnet up (one machine)", &out)?;
            Ok(took.as_secs_f64())
        });
        record(&mut report, "up one machine".into(), "s", r);
        let (_, out) = timed(scratch.dvnet().args(["down", &big_id]))?;
        check("dvnet down", &out)?;
        wait.settle("dvnet up")?;
        scratch
            .networks
            .borrow_mut()
            .extend(big_shares.iter().cloned());
        let r = up_placed(scratch, &m, &split_file, &[]);
        record(&mut report, "up two machines".into(), "s", r);
        for (k, share) in big_shares.iter().enumerate() {
            let (_, out) = timed(dvnet_in(scratch, &m[k]).args(["down", share]))?;
            check("dvnet down", &out)?;
        }
        super::idle::check_interrupted()?;
    }
    for fig in report.figures.values_mut() {
        fig.summary = Summary::of(&fig.samples);
    }
    Ok(report)
}

/// The results as a Markdown table.
#[must_use]
pub fn table(report: &Report) -> String {
    let runs = report
        .figures
        .values()
        .map(|f| f.samples.len())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "| {runs} runs ({} s each; `up` of a {}-node chain) | one machine | two machines (VXLAN) | two / one |\n|---|---|---|---|\n",
        report.seconds, report.nodes
    );
    let cell = |f: Option<&Figure>| {
        f.and_then(|f| f.summary).map_or_else(
            || "–".to_owned(),
            |s| format!("{} {}", s.cell_with(sig3), f.map_or("", |f| f.unit)),
        )
    };
    for (label, key) in [
        ("TCP, eBPF routers", "tcp ebpf"),
        ("TCP, kernel routers", "tcp kernel"),
        ("64-byte UDP, eBPF routers", "udp ebpf"),
        ("64-byte UDP, kernel routers", "udp kernel"),
        ("`up`, both shares at once", "up"),
    ] {
        let one = report.figures.get(&format!("{key} one machine"));
        let two = report.figures.get(&format!("{key} two machines"));
        let ratio = match (one.and_then(|f| f.summary), two.and_then(|f| f.summary)) {
            (Some(o), Some(t)) if o.median > 0.0 => format!("{:.2}×", t.median / o.median),
            _ => "–".to_owned(),
        };
        let _ = writeln!(out, "| {label} | {} | {} | {ratio} |", cell(one), cell(two));
    }
    out
}
