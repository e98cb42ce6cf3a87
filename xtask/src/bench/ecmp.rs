//! `cargo xtask bench ecmp`: equal-cost multipath on a leaf-spine Clos (4 spines, 2 leaves
//! of one host each), beside the same fabric routed over one path, in one run: 8 parallel
//! TCP streams (iperf3 -P 8) from `h1-1` to `h2-1`, Gbit/s, and how many spines carried
//! them (each spine's link from `l1`, packets received), on both datapaths.
//!
//! On a machine with few cores the streams share the same CPUs whichever path they take:
//! the figure shows what spreading costs or gains there, not a fabric's capacity.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use dvnet::plan::{Datapath, Plan, PlanOptions};
use serde::Serialize;

use super::datapath::{iperf3_client, iperf3_server, link_rx, ping};
use super::harness::{Scratch, check, timed};
use super::idle::Waiter;
use super::stats::{Summary, sig3};

const SPINES: usize = 4;
const STREAMS: &str = "8";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    repeat: super::harness::Repeat,
    /// Where to write the results [default: bench-results/ecmp.json].
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One fabric: a datapath, with or without ECMP.
#[derive(Debug, Default, Serialize)]
pub struct Figure {
    /// Gbit/s received, per run.
    pub gbits: Vec<f64>,
    pub summary: Option<Summary>,
    /// Spines that carried at least 5 % of the packets, per run.
    pub spines_used: Vec<usize>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub seconds: f64,
    /// By `<datapath> <one path|ecmp>`.
    pub figures: BTreeMap<String, Figure>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    super::harness::run_repeated(
        "ecmp",
        &args.repeat,
        args.json.as_deref(),
        measure,
        table,
        |r: &Report| &r.errors,
    )
}

/// A fabric that is up.
struct Fabric {
    id: String,
    h1_ns: String,
    h2_ns: String,
    h2: std::net::Ipv4Addr,
    /// Each spine's namespace and its interface toward `l1`.
    spines: Vec<(String, String)>,
}

fn up(scratch: &Scratch, datapath: Datapath, ecmp: bool) -> anyhow::Result<Fabric> {
    let tag = format!(
        "{}-{}",
        if datapath == Datapath::Ebpf { "e" } else { "k" },
        if ecmp { "m" } else { "s" }
    );
    let name = format!("{}-{tag}", scratch.prefix);
    let doc = dvnet::generate::clos(SPINES, 2, 1, Some(name), ecmp)?;
    let options = PlanOptions {
        datapath,
        ..PlanOptions::default()
    };
    let (file, plan) = scratch.network_file(&format!("{tag}.json"), &doc, options)?;
    scratch.networks.borrow_mut().push(plan.id.clone());
    let f = file.to_str().context("a UTF-8 path")?;
    let dp = if datapath == Datapath::Ebpf {
        "ebpf"
    } else {
        "kernel"
    };
    let (_, out) = timed(scratch.dvnet().args(["up", f, "--datapath", dp]))?;
    check("dvnet up", &out)?;
    let host = |name: &str| -> anyhow::Result<(String, std::net::Ipv4Addr)> {
        let node = plan.node(name).with_context(|| format!("no {name}"))?;
        let link = plan.links_of(node).next().context("a link")?;
        Ok((node.netns.clone(), link.address.context("an IPv4 address")?))
    };
    let (h1_ns, _) = host("h1-1")?;
    let (h2_ns, h2) = host("h2-1")?;
    let spines = (1..=SPINES)
        .map(|i| spine_port(&plan, i))
        .collect::<anyhow::Result<Vec<_>>>()?;
    ping(&h1_ns, h2).context("h1-1 does not reach h2-1")?;
    Ok(Fabric {
        id: plan.id.clone(),
        h1_ns,
        h2_ns,
        h2,
        spines,
    })
}

/// Spine `i`'s namespace and its interface on the link to `l1`.
fn spine_port(plan: &Plan, i: usize) -> anyhow::Result<(String, String)> {
    let node = plan
        .node(&format!("s{i}"))
        .with_context(|| format!("no spine s{i}"))?;
    let subnet = format!("s{i}-l1");
    let link = plan
        .links_of(node)
        .find(|l| plan.subnets[l.subnet].name == subnet)
        .with_context(|| format!("s{i} has no link on {subnet}"))?;
    Ok((node.netns.clone(), link.ifname.clone()))
}

/// 8 TCP streams h1-1 → h2-1: Gbit/s received, and the spines that carried them.
fn streams(f: &Fabric, wait: &mut Waiter, seconds: f64) -> anyhow::Result<(f64, usize)> {
    let before = f
        .spines
        .iter()
        .map(|(ns, dev)| link_rx(ns, dev))
        .collect::<anyhow::Result<Vec<u64>>>()?;
    wait.settle("tcp")?;
    let server = iperf3_server(&f.h2_ns)?;
    let v = iperf3_client(
        &f.h1_ns,
        &[
            "-c",
            &f.h2.to_string(),
            "-P",
            STREAMS,
            "-t",
            &seconds.to_string(),
        ],
    )?;
    drop(server.interrupt(Duration::from_secs(1)));
    let gbits = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .context("iperf3: no end.sum_received.bits_per_second")?;
    let after = f
        .spines
        .iter()
        .map(|(ns, dev)| link_rx(ns, dev))
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let carried: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: u64 = carried.iter().sum();
    let used = carried.iter().filter(|&&n| n * 20 >= total).count();
    Ok((gbits, used))
}

fn measure(
    scratch: &Scratch,
    wait: &mut Waiter,
    runs: usize,
    seconds: f64,
) -> anyhow::Result<Report> {
    let mut report = Report {
        seconds,
        ..Report::default()
    };
    let mut fabrics = Vec::new();
    for datapath in [Datapath::Ebpf, Datapath::Kernel] {
        for ecmp in [false, true] {
            let key = format!(
                "{} {}",
                if datapath == Datapath::Ebpf {
                    "ebpf"
                } else {
                    "kernel"
                },
                if ecmp { "ecmp" } else { "one path" }
            );
            fabrics.push((key, up(scratch, datapath, ecmp)?));
        }
    }
    for run in 1..=runs {
        eprintln!("xtask: run {run}/{runs}");
        for (key, f) in &fabrics {
            match streams(f, wait, seconds) {
                Ok((gbits, used)) => {
                    eprintln!(
                        "xtask:   {key:<16} {} Gbit/s over {used} spine(s)",
                        sig3(gbits)
                    );
                    let fig = report.figures.entry(key.clone()).or_default();
                    fig.gbits.push(gbits);
                    fig.spines_used.push(used);
                }
                Err(e) => {
                    eprintln!("xtask:   {key} FAILED: {e:#}");
                    report.errors.push(format!("run {run}, {key}: {e:#}"));
                }
            }
        }
    }
    for (_, f) in &fabrics {
        let (_, out) = timed(scratch.dvnet().args(["down", &f.id]))?;
        check("dvnet down", &out)?;
    }
    for fig in report.figures.values_mut() {
        fig.summary = Summary::of(&fig.gbits);
    }
    Ok(report)
}

/// The results as a Markdown table.
#[must_use]
pub fn table(report: &Report) -> String {
    let runs = report
        .figures
        .values()
        .map(|fig| fig.gbits.len())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "| {runs} runs of {} s: 8 TCP streams leaf to leaf over {SPINES} spines | Gbit/s, median (min–max) | of one path | spines carrying ≥ 5 % |\n|---|---|---|---|\n",
        report.seconds
    );
    for dp in ["ebpf", "kernel"] {
        let one_path = report.figures.get(&format!("{dp} one path"));
        for mode in ["one path", "ecmp"] {
            let Some(fig) = report.figures.get(&format!("{dp} {mode}")) else {
                continue;
            };
            let ratio = match (fig.summary, one_path.and_then(|o| o.summary)) {
                (Some(this), Some(base)) if base.median > 0.0 => {
                    format!("{:.0} %", 100.0 * this.median / base.median)
                }
                _ => "–".to_owned(),
            };
            let used: Vec<String> = fig.spines_used.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "| {dp}, {mode} | {} | {ratio} | {} |",
                fig.summary
                    .map_or_else(|| "–".to_owned(), |s| s.cell_with(|x| format!("{x:.2}"))),
                used.join(", ")
            );
        }
    }
    out
}
