//! `cargo xtask bench suite`: every figure in one run, the way a paper shows them.
//!
//! 1. Deploy: generated chains, trees, rings and grids of growing size; `dvnet up`, time
//!    until sampled pairs of hosts all answer, `down`, the time until the machine is idle
//!    again, memory (the kernel's, and dvnet's own peak); beside the `ip -batch` floor of each
//!    network and Mininet (chains only: its `LinearTopo` is the same network).
//! 2. Datapath ([`super::datapath`]): TCP, 64-byte UDP and round trips through chains of
//!    routers, eBPF vs kernel vs a bare veth pair; firewall scaling, eBPF vs iptables.
//! 3. Containers ([`super::containers`]): a network of container nodes vs `docker run`.
//!
//! Each figure is measured `--runs` times (median, min, max). Results go to `suite.json`,
//! plots to `*.svg` and the tables to `summary.md` in the output directory; `--readme`
//! puts the summary into README.md between its `bench-suite` markers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{Context as _, bail};
use dvnet::generate::Shape;
use serde::Serialize;

use super::deploy::{self, SizeReport};

use super::idle::IdleSettings;
use super::plots::{Line, XAxis, chart};
use super::stats::secs;
use super::{containers, datapath};
use plotters::prelude::SeriesLabelPosition;

const README_BEGIN: &str = "<!-- bench-suite:begin -->";
const README_END: &str = "<!-- bench-suite:end -->";

#[derive(Debug, clap::Args)]
#[expect(clippy::struct_excessive_bools, reason = "command-line switches")]
pub struct Args {
    /// Small sizes, one run, 1 s figures, 2 s idle waits: the whole suite in under two
    /// minutes, so that CI keeps it working (numbers to look at, not to quote).
    #[arg(long)]
    quick: bool,
    /// Data-center scale, deploy figures only: chain, tree and fat tree at 2,000, 5,000 and
    /// 10,000 nodes, one run each, beside the floor (results in docs/bench/big).
    #[arg(long, conflicts_with = "quick")]
    big: bool,
    /// Measurements per figure.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Network sizes in nodes.
    #[arg(long, value_delimiter = ',', default_values_t = [250, 500, 1000, 2000])]
    sizes: Vec<usize>,
    /// Shapes of the generated networks.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Shape::Chain, Shape::Tree, Shape::Ring, Shape::Grid])]
    shapes: Vec<Shape>,
    /// Largest chain Mininet builds (one run at 500 nodes takes over a minute, at 1,000 four;
    /// `bench deploy` measures those).
    #[arg(long, default_value_t = 250)]
    mininet_max: usize,
    /// Seconds per throughput or packet-rate figure.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Leave Mininet out even where it is installed.
    #[arg(long)]
    no_mininet: bool,
    /// Container nodes of the Docker figure (0 leaves it out).
    #[arg(long, default_value_t = 100)]
    containers: usize,
    /// Where results, plots and the summary go [default: docs/bench; bench-results/quick
    /// with --quick].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Put the summary into README.md between its bench-suite markers.
    #[arg(long)]
    readme: bool,
    /// Seconds to wait for an idle machine before measuring anyway (and saying so).
    #[arg(long)]
    idle_timeout: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    started_unix: u64,
    seconds: f64,
    machine: super::Machine,
    quick: bool,
    big: bool,
    runs: usize,
    mininet: Option<String>,
    deploy: Vec<ShapeReport>,
    datapath: Option<datapath::Report>,
    containers: Option<containers::Report>,
    notes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ShapeReport {
    shape: String,
    sizes: Vec<SizeReport>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("bench suite creates namespaces: run it as root");
    }
    let started = Instant::now();
    let runs = if args.quick || args.big { 1 } else { args.runs };
    let shapes = if args.big {
        vec![Shape::Chain, Shape::Tree, Shape::Fattree]
    } else {
        args.shapes.clone()
    };
    let sizes = if args.quick {
        vec![24, 60]
    } else if args.big {
        vec![2000, 5000, 10_000]
    } else {
        args.sizes.clone()
    };
    if runs == 0 || sizes.iter().any(|&n| n < 4) {
        bail!("need at least one run and sizes of at least 4 nodes");
    }
    let out_dir = args.out.clone().unwrap_or_else(|| {
        let root = super::workspace_root();
        if args.quick {
            root.join("bench-results").join("quick")
        } else if args.big {
            root.join("docs").join("bench").join("big")
        } else {
            root.join("docs").join("bench")
        }
    });
    let containers_n = match (args.containers, args.quick) {
        _ if args.big => 0,
        (0, _) => 0,
        (_, true) => 10,
        (n, false) => n,
    };
    let mut notes = Vec::new();
    let docker = if containers_n > 0 {
        match containers::docker_answers() {
            Ok(()) => true,
            Err(e) => {
                notes.push(format!("containers left out: {e:#}"));
                false
            }
        }
    } else {
        false
    };
    let mininet = if args.no_mininet || args.big {
        None
    } else {
        deploy::mininet_version()
    };
    if mininet.is_none() && !args.no_mininet && !args.big {
        notes.push("Mininet is not installed (./setup.sh --bench): left out".into());
    }
    let (scratch, mut wait, machine) =
        super::harness::start(IdleSettings::standard(args.idle_timeout, args.quick))?;

    let mut report = Report {
        bench: "suite",
        started_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        seconds: 0.0,
        machine: machine.clone(),
        quick: args.quick,
        big: args.big,
        runs,
        mininet: mininet.clone(),
        deploy: Vec::new(),
        datapath: None,
        containers: None,
        notes,
    };
    let outcome = (|| -> anyhow::Result<()> {
        let mut bench = deploy::Bench {
            scratch: &scratch,
            wait: &mut wait,
        };
        for &shape in &shapes {
            let mut sr = ShapeReport {
                shape: shape_name(shape),
                sizes: Vec::new(),
            };
            for &nodes in &sizes {
                let opts = deploy::Options {
                    shape,
                    hosts_per_lan: 1,
                    runs,
                    mininet: mininet.is_some()
                        && shape == Shape::Chain
                        && nodes <= if args.quick { 60 } else { args.mininet_max },
                };
                sr.sizes.push(bench.size(nodes, &opts)?);
            }
            report.deploy.push(sr);
        }
        let settings = datapath::Settings {
            runs,
            seconds: if args.quick { 1.0 } else { args.seconds },
            hops: if args.quick {
                vec![1, 4]
            } else {
                vec![1, 4, 16]
            },
            rules: if args.quick {
                vec![0, 1000]
            } else {
                vec![0, 1, 1000, 10_000]
            },
            up_nodes: 0,
            flows: 2 * super::udpgen::SPORTS,
            // what limits the UDP figures is `bench datapath`'s to show
            generators: false,
            ipv6: false,
        };
        if !args.big {
            report.datapath = Some(datapath::measure(
                &scratch,
                &mut wait,
                &settings,
                machine.clone(),
            )?);
        }
        if docker {
            report.containers = Some(containers::measure(
                &scratch,
                &mut wait,
                containers_n,
                runs,
            )?);
        }
        Ok(())
    })();
    let leftovers = scratch.cleanup();
    report.notes.append(&mut wait.notes);
    report
        .notes
        .extend(leftovers.iter().map(|l| format!("cleanup: {l}")));
    report.seconds = started.elapsed().as_secs_f64();

    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    super::write_json(&out_dir.join("suite.json"), &report)?;
    outcome?;
    plot(&report, &out_dir)?;
    let summary = summary(&report);
    std::fs::write(out_dir.join("summary.md"), &summary)
        .with_context(|| format!("writing {}", out_dir.join("summary.md").display()))?;
    println!("{summary}");
    if args.readme {
        let readme = super::workspace_root().join("README.md");
        let rel = out_dir
            .strip_prefix(super::workspace_root())
            .unwrap_or(&out_dir);
        update_readme(&readme, &summary_for(&report, &rel.display().to_string()))?;
        eprintln!("xtask: README.md updated");
    }
    eprintln!(
        "xtask: suite done in {} s; results, plots and summary in {}",
        secs(report.seconds),
        out_dir.display()
    );
    let mut failed: Vec<String> = report
        .deploy
        .iter()
        .flat_map(|s| s.sizes.iter().map(move |z| (s, z)))
        .flat_map(|(s, z)| {
            z.runs
                .iter()
                .filter(|r| r.tool != "mininet")
                .filter_map(move |r| {
                    r.error
                        .as_ref()
                        .map(|e| format!("{} {} nodes {}: {e}", s.shape, z.nodes, r.tool))
                })
        })
        .collect();
    if let Some(d) = &report.datapath {
        failed.extend(datapath::failures(d));
    }
    if let Some(c) = &report.containers {
        failed.extend(c.errors.iter().cloned());
    }
    super::harness::verdict(&leftovers, &failed)
}

fn shape_name(shape: Shape) -> String {
    format!("{shape:?}").to_lowercase()
}

/// The median of `key` at each size, as plot points.
fn deploy_points(sizes: &[SizeReport], key: &str) -> Vec<(f64, f64)> {
    sizes
        .iter()
        .filter_map(|s| {
            let m = s.summary.get(key).copied().flatten()?.median;
            #[expect(clippy::cast_precision_loss, reason = "node counts")]
            Some((s.nodes as f64, m))
        })
        .collect()
}

fn plot(report: &Report, dir: &Path) -> anyhow::Result<()> {
    // deploy: one line per shape for dvnet, the floor and Mininet on chains
    for (metric, what) in [
        ("up", "up"),
        ("down", "down"),
        ("reachable", "all reachable"),
    ] {
        let mut lines = Vec::new();
        for s in &report.deploy {
            lines.push(Line {
                name: format!("dvnet, {}", s.shape),
                points: deploy_points(&s.sizes, &format!("dvnet_{metric}")),
                dashed: false,
            });
        }
        if let Some(chain) = report.deploy.iter().find(|s| s.shape == "chain") {
            lines.push(Line {
                name: "ip -batch floor, chain".into(),
                points: deploy_points(&chain.sizes, &format!("ipbatch_{metric}")),
                dashed: true,
            });
            lines.push(Line {
                name: "Mininet, chain".into(),
                points: deploy_points(&chain.sizes, &format!("mininet_{metric}")),
                dashed: true,
            });
        }
        lines.retain(|l| !l.points.is_empty());
        if lines.is_empty() {
            continue;
        }
        chart(
            &dir.join(format!("deploy-{metric}.svg")),
            &format!(
                "Time until the network is {what} (median of {} runs)",
                report.runs
            ),
            "nodes",
            "seconds (log scale)",
            &XAxis::Linear,
            true,
            SeriesLabelPosition::LowerRight,
            &lines,
        )?;
    }
    let Some(dp) = &report.datapath else {
        return Ok(());
    };
    let median = |test: &str, path: &str, routers: usize, rules: usize| {
        dp.series
            .iter()
            .find(|s| s.test == test && s.path == path && s.routers == routers && s.rules == rules)
            .and_then(|s| s.summary.map(|x| x.median))
    };
    #[expect(clippy::cast_precision_loss, reason = "a handful of categories")]
    let category_line = |name: &str, values: Vec<Option<f64>>, dashed: bool| Line {
        name: name.to_owned(),
        points: values
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i as f64, v?)))
            .collect(),
        dashed,
    };
    let hops = &dp.settings.hops;
    let labels: Vec<String> = hops.iter().map(ToString::to_string).collect();
    for (test, unit, file, title, legend) in [
        (
            "tcp",
            "Gbit/s",
            "throughput-hops.svg",
            "TCP through a chain of routers",
            SeriesLabelPosition::LowerLeft,
        ),
        (
            "udp",
            "kpps",
            "pps-hops.svg",
            "64-byte UDP packets through a chain of routers",
            SeriesLabelPosition::LowerLeft,
        ),
        (
            "rtt",
            "µs",
            "rtt-hops.svg",
            "Round-trip time through a chain of routers",
            SeriesLabelPosition::UpperLeft,
        ),
    ] {
        let veth = median(test, "veth", 0, 0);
        let lines = vec![
            category_line(
                "eBPF datapath",
                hops.iter().map(|&k| median(test, "ebpf", k, 0)).collect(),
                false,
            ),
            category_line(
                "kernel datapath",
                hops.iter().map(|&k| median(test, "kernel", k, 0)).collect(),
                false,
            ),
            category_line(
                "bare veth pair (no router)",
                hops.iter().map(|_| veth).collect(),
                true,
            ),
        ];
        chart(
            &dir.join(file),
            title,
            "routers",
            unit,
            &XAxis::Categories(&labels),
            false,
            legend,
            &lines,
        )?;
    }
    let rules = &dp.settings.rules;
    let labels: Vec<String> = rules.iter().map(|&r| datapath::thousands(r)).collect();
    for (test, unit, file, title) in [
        (
            "fw_tcp",
            "Gbit/s",
            "throughput-rules.svg",
            "TCP through one router with N firewall rules",
        ),
        (
            "fw_newflows",
            "kpps",
            "newflows-rules.svg",
            "New UDP flows through one router with N rules",
        ),
    ] {
        let lines = vec![
            category_line(
                "eBPF datapath",
                rules.iter().map(|&r| median(test, "ebpf", 1, r)).collect(),
                false,
            ),
            category_line(
                "kernel datapath (iptables)",
                rules
                    .iter()
                    .map(|&r| median(test, "kernel", 1, r))
                    .collect(),
                false,
            ),
        ];
        chart(
            &dir.join(file),
            title,
            "firewall rules (none match)",
            unit,
            &XAxis::Categories(&labels),
            false,
            SeriesLabelPosition::LowerLeft,
            &lines,
        )?;
    }
    Ok(())
}

/// The summary with plots linked from the output directory itself.
fn summary(report: &Report) -> String {
    summary_for(report, ".")
}

/// The headline tables, and the plots linked relative to `plots` (a directory).
fn summary_for(report: &Report, plots: &str) -> String {
    let mut out = String::new();
    let when = report.started_unix;
    let _ = writeln!(
        out,
        "Measured by `cargo xtask bench suite{}` on {} ({} run(s) per figure, median with \
         min–max; whole suite {} s; started at unix time {when}).\n",
        if report.quick {
            " --quick"
        } else if report.big {
            " --big"
        } else {
            ""
        },
        report.machine.line(),
        report.runs,
        secs(report.seconds),
    );
    // deploy: dvnet per shape, then the chain's baselines
    if let Some(first) = report.deploy.first() {
        let _ = writeln!(out, "**Deploy** (seconds; memory in MiB)\n");
        let mut header = "| network | what |".to_owned();
        let mut rule = "|---|---|".to_owned();
        for s in &first.sizes {
            let _ = write!(header, " {} nodes |", datapath::thousands(s.nodes));
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for shape in &report.deploy {
            for (key, label) in deploy::METRICS {
                let tool = key.split('_').next().unwrap_or("");
                if shape.shape != "chain" && tool != "dvnet" {
                    continue;
                }
                let cells: Vec<String> = shape
                    .sizes
                    .iter()
                    .map(|z| {
                        z.summary
                            .get(key)
                            .copied()
                            .flatten()
                            .map_or_else(|| "–".to_owned(), |x| x.cell())
                    })
                    .collect();
                if cells.iter().all(|c| c == "–") {
                    continue;
                }
                let _ = writeln!(out, "| {} | {label} | {} |", shape.shape, cells.join(" | "));
            }
        }
        let chain_at = |nodes: usize, key: &str| {
            report
                .deploy
                .iter()
                .find(|s| s.shape == "chain")?
                .sizes
                .iter()
                .find(|z| z.nodes == nodes)?
                .summary
                .get(key)
                .copied()
                .flatten()
                .map(|x| x.median)
        };
        let targets: Vec<String> = [("dvnet_up", "up"), ("dvnet_down", "down")]
            .iter()
            .filter_map(|(key, what)| {
                let m = chain_at(1000, key)?;
                Some(format!(
                    "1,000-node chain {what} ≤ 2 s: {} s ({})",
                    secs(m),
                    if m <= 2.0 { "met" } else { "missed" }
                ))
            })
            .collect();
        if !targets.is_empty() {
            let _ = writeln!(out, "\nTargets: {}.", targets.join("; "));
        }
        if let Some(v) = &report.mininet {
            let _ = writeln!(
                out,
                "\nMininet {v}: `LinearTopo(N/2)` with Linux bridges and no controller (the same \
                 node count as the chain), measured up to the sizes shown."
            );
        }
        let _ = writeln!(
            out,
            "\n![deploy up]({plots}/deploy-up.svg)\n![deploy down]({plots}/deploy-down.svg)\n\
             ![reachable]({plots}/deploy-reachable.svg)\n"
        );
    }
    if let Some(dp) = &report.datapath {
        let _ = writeln!(out, "**Datapath**\n\n{}", datapath::tables(dp, true));
        let _ = writeln!(
            out,
            "![TCP vs hops]({plots}/throughput-hops.svg)\n![pps vs hops]({plots}/pps-hops.svg)\n\
             ![RTT vs hops]({plots}/rtt-hops.svg)\n![TCP vs rules]({plots}/throughput-rules.svg)\n\
             ![new flows vs rules]({plots}/newflows-rules.svg)\n"
        );
    }
    if let Some(c) = &report.containers {
        let _ = writeln!(out, "**Containers**\n\n{}\n", containers::table(c, true));
    }
    if !report.notes.is_empty() {
        let _ = writeln!(out, "Notes from the run:\n");
        for n in &report.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

/// Replaces what stands between the markers in `readme` with `text`.
fn update_readme(readme: &Path, text: &str) -> anyhow::Result<()> {
    let old =
        std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    let (Some(a), Some(b)) = (old.find(README_BEGIN), old.find(README_END)) else {
        bail!(
            "{} has no {README_BEGIN} … {README_END} section",
            readme.display()
        );
    };
    if b < a {
        bail!(
            "{}: the bench-suite markers are out of order",
            readme.display()
        );
    }
    let new = format!(
        "{}{README_BEGIN}\n{}\n{}",
        &old[..a],
        text.trim_end(),
        &old[b..]
    );
    std::fs::write(readme, new).with_context(|| format!("writing {}", readme.display()))
}
