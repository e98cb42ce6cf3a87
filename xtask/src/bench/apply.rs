//! `cargo xtask bench apply`: what an edit of a running network costs, beside what the
//! whole network costs, in one run. A generated network (default: a 1,000-node chain, one
//! host per router LAN) is brought up (`dvnet up --json`, timed by wall clock), then edited
//! with `dvnet apply --json`, each command timed whole (process, parsing, planning, record):
//!
//! 1. a host added to a router's LAN of one host: the LAN turns from a veth pair into a
//!    bridge (a node built, the two old ends rewired: a veth deleted, three made);
//! 2. a second host added to that LAN, a bridge by now (a node and one veth made);
//! 3. the original file again (both hosts removed, the LAN a veth pair again).
//!
//! Each run ends with `down`; medians of `--runs`. The target (DESIGN.md): one added host in
//! a 1,000-node lab costs at most 2 % of `up`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dvnet::generate::{GenSpec, Shape, generate};
use dvnet::plan::PlanOptions;
use serde::Serialize;
use serde_json::Value;

use super::harness::{Scratch, check, timed};
use super::idle::{IdleSettings, Waiter};
use super::stats::Summary;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes (routers + hosts) of the generated network.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Its shape.
    #[arg(long, value_enum, default_value_t = Shape::Chain)]
    shape: Shape,
    /// Repetitions (median, min, max).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// A small, fast run (100 nodes, 1 run) that checks the benchmark works.
    #[arg(long)]
    quick: bool,
    /// Seconds to wait for an idle machine before each measurement.
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Where to write the results [default: bench-results/apply.json].
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One run's figures, seconds (wall clock of the whole command).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub up: f64,
    /// A host on a one-host LAN (the LAN becomes a bridge).
    pub add_rewiring: f64,
    /// A host on a bridged LAN.
    pub add_host: f64,
    /// Both removed (the LAN a veth pair again).
    pub remove_hosts: f64,
    /// What `apply` reported of itself (phases, counts) for each edit.
    pub reports: Vec<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub shape: String,
    pub nodes: usize,
    pub runs: Vec<Run>,
    pub up: Option<Summary>,
    pub add_rewiring: Option<Summary>,
    pub add_host: Option<Summary>,
    pub remove_hosts: Option<Summary>,
    /// Medians of each edit / up, per cent.
    pub add_rewiring_pct: Option<f64>,
    pub add_host_pct: Option<f64>,
    pub errors: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("bench apply creates namespaces: run it as root");
    }
    let (nodes, runs) = if args.quick {
        (100, 1)
    } else {
        (args.nodes, args.runs)
    };
    let (scratch, mut wait, machine) =
        super::harness::start(IdleSettings::standard(args.idle_timeout, args.quick))?;
    let outcome = measure(&scratch, &mut wait, args.shape, nodes, runs);
    let leftovers = scratch.cleanup();
    let report = outcome?;
    super::harness::conclude(
        "apply",
        &table(&report),
        &wait,
        &machine,
        &report,
        args.json.as_deref(),
    )?;
    super::harness::verdict(&leftovers, &report.errors)
}

/// The topology with `hosts` more on the LAN of the router in the middle of the file.
fn with_hosts(topology: &Value, hosts: &[&str]) -> anyhow::Result<Value> {
    let mut edited = topology.clone();
    let subnets = edited["subnets"]
        .as_object_mut()
        .context("the topology has subnets")?;
    // a router's LAN (generated LANs have hosts; transit subnets have none)
    let lans: Vec<String> = subnets
        .iter()
        .filter(|(_, s)| s["hosts"].as_object().is_some_and(|h| !h.is_empty()))
        .map(|(name, _)| name.clone())
        .collect();
    let lan = lans
        .get(lans.len() / 2)
        .context("the topology has a LAN")?
        .clone();
    for host in hosts {
        subnets[&lan]["hosts"][*host] = serde_json::json!({});
    }
    Ok(edited)
}

/// `dvnet ARGS --json` in the fake host, timed; its JSON report.
fn dvnet_json(scratch: &Scratch, args: &[&str]) -> anyhow::Result<(f64, Value)> {
    let (took, out) = timed(scratch.dvnet().args(args).arg("--json"))?;
    check(&format!("dvnet {}", args.join(" ")), &out)?;
    let value: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("dvnet {} --json printed no JSON", args.join(" ")))?;
    Ok((took.as_secs_f64(), value))
}

pub fn measure(
    scratch: &Scratch,
    wait: &mut Waiter,
    shape: Shape,
    nodes: usize,
    runs: usize,
) -> anyhow::Result<Report> {
    let name = format!("{}-apply{nodes}", scratch.prefix);
    let topology = generate(&GenSpec {
        shape,
        nodes,
        hosts_per_lan: 1,
        fanout: 2,
        name: Some(name),
    })?;
    let one = serde_json::to_string_pretty(&with_hosts(&topology, &["bench-1"])?)? + "\n";
    let two =
        serde_json::to_string_pretty(&with_hosts(&topology, &["bench-1", "bench-2"])?)? + "\n";
    let (file, plan) = scratch.network_file(
        &format!("apply{nodes}.json"),
        &topology,
        PlanOptions::default(),
    )?;
    let original = std::fs::read_to_string(&file)?;
    let f = file.to_str().context("a UTF-8 path")?;
    scratch.networks.borrow_mut().push(plan.id.clone());
    let mut report = Report {
        shape: format!("{shape:?}").to_lowercase(),
        nodes,
        runs: Vec::new(),
        up: None,
        add_rewiring: None,
        add_host: None,
        remove_hosts: None,
        add_rewiring_pct: None,
        add_host_pct: None,
        errors: Vec::new(),
    };
    for run in 1..=runs {
        let r = (|| -> anyhow::Result<Run> {
            std::fs::write(&file, &original)?;
            wait.settle("dvnet up")?;
            let (up, _) = dvnet_json(scratch, &["up", f])?;
            let mut reports = Vec::new();
            let mut edit = |text: &str, what: &str, nodes: usize| -> anyhow::Result<f64> {
                std::fs::write(&file, text)?;
                wait.settle(what)?;
                let (took, report) = dvnet_json(scratch, &["apply", f])?;
                if report["changes"]["nodes"].as_array().map(Vec::len) != Some(nodes) {
                    bail!("{what}: the edit should change {nodes} node(s): {report}");
                }
                reports.push(report);
                Ok(took)
            };
            let add_rewiring = edit(&one, "dvnet apply (a host on a one-host LAN)", 1)?;
            let add_host = edit(&two, "dvnet apply (a host on a bridged LAN)", 1)?;
            let remove_hosts = edit(&original, "dvnet apply (both removed)", 2)?;
            Ok(Run {
                up,
                add_rewiring,
                add_host,
                remove_hosts,
                reports,
            })
        })();
        let down = scratch.dvnet().args(["down", &plan.id]).output()?;
        check("dvnet down", &down)?;
        std::thread::sleep(Duration::from_millis(200));
        match r {
            Ok(r) => {
                eprintln!(
                    "xtask: [{nodes} nodes, run {run}/{runs}] up {:.3} s; apply: a host on a \
                     one-host LAN {:.3} s ({:.1} %), on a bridged LAN {:.3} s ({:.1} %), both \
                     removed {:.3} s",
                    r.up,
                    r.add_rewiring,
                    100.0 * r.add_rewiring / r.up,
                    r.add_host,
                    100.0 * r.add_host / r.up,
                    r.remove_hosts
                );
                report.runs.push(r);
            }
            Err(e) => report.errors.push(format!("run {run}: {e:#}")),
        }
    }
    let of = |f: fn(&Run) -> f64| Summary::of(&report.runs.iter().map(f).collect::<Vec<_>>());
    report.up = of(|r| r.up);
    report.add_rewiring = of(|r| r.add_rewiring);
    report.add_host = of(|r| r.add_host);
    report.remove_hosts = of(|r| r.remove_hosts);
    let pct = |x: &Option<Summary>| match (x, &report.up) {
        (Some(a), Some(u)) if u.median > 0.0 => Some(100.0 * a.median / u.median),
        _ => None,
    };
    report.add_rewiring_pct = pct(&report.add_rewiring);
    report.add_host_pct = pct(&report.add_host);
    Ok(report)
}

/// The results as a Markdown table.
#[must_use]
pub fn table(r: &Report) -> String {
    let cell = |s: &Option<Summary>| s.as_ref().map_or_else(|| "–".into(), Summary::cell);
    let pct = |p: Option<f64>| p.map_or_else(|| "–".into(), |p| format!("{p:.1} %"));
    let mut t = format!(
        "| {} nodes ({}), {} runs | seconds: median (min–max) | of `up` |\n|---|---|---|\n",
        r.nodes,
        r.shape,
        r.runs.len()
    );
    let _ = writeln!(t, "| `dvnet up` (the baseline) | {} | 100 % |", cell(&r.up));
    let _ = writeln!(
        t,
        "| `dvnet apply`: a host on a bridged LAN | {} | {} |",
        cell(&r.add_host),
        pct(r.add_host_pct)
    );
    let _ = writeln!(
        t,
        "| `dvnet apply`: a host on a one-host LAN (it becomes a bridge) | {} | {} |",
        cell(&r.add_rewiring),
        pct(r.add_rewiring_pct)
    );
    let _ = writeln!(
        t,
        "| `dvnet apply`: both removed (a veth pair again) | {} | |",
        cell(&r.remove_hosts)
    );
    if let Some(p) = r.add_host_pct {
        let _ = writeln!(
            t,
            "\nTarget: one added host ≤ 2 % of `up`: {p:.1} % ({}).",
            if p <= 2.0 { "met" } else { "missed" }
        );
    }
    t
}
