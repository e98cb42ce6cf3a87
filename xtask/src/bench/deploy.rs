//! `cargo xtask bench deploy`: how long `dvnet up` and `dvnet down` take, beside the floor
//! (one `ip -batch` creating exactly the same namespaces, bridges and veths, nothing else) and
//! Mininet (`LinearTopo(N/2)` with Linux bridges: the same node count).
//!
//! Everything runs inside a *fake host* (a namespace of the benchmark's own), so the real
//! host's links, firewall and sysctls stay untouched. Before each measurement the machine
//! must be idle (see [`super::idle`]); after each teardown the time until idle is reported
//! as "reclaimed". Tools take turns within each run, so slow drift in background load spreads
//! over all of them.
//!
//! Everything the benchmark creates carries the prefix `dvb<pid>`: the fake host
//! `dvb<pid>-host`, dvnet networks `dvb<pid>-d<N>` (namespaces `dv-dvb<pid>-d<N>…`, records in
//! /run/dvnet), floor namespaces `dvb<pid>-f<N>…`, files in /tmp/dvb<pid>/. Guards undo each
//! run when it fails, and a final sweep removes whatever still carries the prefix; the shells
//! Mininet starts are killed by the pids its script writes, never by name.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use dvnet::generate::{GenSpec, Shape, generate};
use dvnet::plan::{NodeKind, Plan, PlanOptions, Segment};
use dvnet::topology::Topology;
use serde::Serialize;

use super::harness::{
    OnDrop, Scratch, check, in_ns, kill_mininet_shells, timed, timed_rss, up_report,
};
use super::idle::{self, IdleSettings, Waiter};
use super::stats::{Summary, secs};

/// Debian's Python: the one the `mininet` package installs into.
const PYTHON: &str = "/usr/bin/python3";
/// Relative to the workspace root.
const MININET_SCRIPT: &str = "xtask/bench/mininet_deploy.py";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Network sizes in nodes (routers + hosts).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 500, 1000])]
    sizes: Vec<usize>,
    /// Measurements per tool and size.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Shape of the generated networks (`dvnet gen`).
    #[arg(long, value_enum, default_value_t = Shape::Chain)]
    shape: Shape,
    /// Hosts on each router's LAN (`dvnet gen --hosts-per-lan`): 1 makes every subnet a
    /// point-to-point veth pair; 2 or more puts LANs on bridges.
    #[arg(long, default_value_t = 1)]
    hosts_per_lan: usize,
    /// Where to write the results [default: bench-results/deploy.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// For CI: sizes 50,100, one run, 2 s idle timeout (a smoke test: on a busy machine each
    /// wait gives up quickly); Mininet only where installed.
    #[arg(long, conflicts_with_all = ["sizes", "runs"])]
    quick: bool,
    /// Leave Mininet out even where it is installed.
    #[arg(long)]
    no_mininet: bool,
    /// Seconds to wait for an idle machine before measuring anyway (and saying so).
    #[arg(long)]
    idle_timeout: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    started_unix: u64,
    machine: super::Machine,
    shape: String,
    hosts_per_lan: usize,
    runs: usize,
    idle: IdleSettings,
    mininet: MininetInfo,
    sizes: Vec<SizeReport>,
    /// Waits that gave up, failures, anything that makes a number less trustworthy.
    notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct MininetInfo {
    available: bool,
    version: Option<String>,
    /// Why it was left out.
    skipped: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct SizeReport {
    pub(super) nodes: usize,
    /// What dvnet (and the floor) builds.
    pub(super) namespaces: usize,
    pub(super) veth_pairs: usize,
    pub(super) bridges: usize,
    /// Mininet's `LinearTopo(k)`: k hosts (namespaces) and k bridges in the fake host.
    pub(super) mininet_k: usize,
    /// Median, min, max per metric (seconds, or MiB for `*_mib`); `None` without a
    /// successful run.
    pub(super) summary: BTreeMap<&'static str, Option<Summary>>,
    pub(super) runs: Vec<RunRecord>,
}

/// One measurement of one tool.
#[derive(Debug, Default, Serialize)]
pub(super) struct RunRecord {
    pub(super) tool: &'static str,
    run: usize,
    /// Wall time of bringing the network up, seconds.
    up: Option<f64>,
    /// Wall time of tearing it down.
    down: Option<f64>,
    /// From the start of teardown until the machine is idle again.
    reclaimed: Option<f64>,
    /// From the start of `up` until every sampled pair of hosts answers a ping.
    reachable: Option<f64>,
    /// Memory the running network holds (the kernel's, and for Mininet its node shells):
    /// MemTotal − MemAvailable while it is up, minus the same before, MiB.
    kernel_mib: Option<f64>,
    /// The tool's own peak resident memory (dvnet: the `up` process), MiB.
    rss_mib: Option<f64>,
    /// Tool-specific: dvnet's own "in X s", Mininet's build/start split.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
}

/// The rows of the table, in order: (key, label).
pub(super) const METRICS: [(&str, &str); 16] = [
    ("dvnet_up", "dvnet up (s)"),
    ("dvnet_reachable", "dvnet all reachable (s)"),
    ("dvnet_down", "dvnet down (s)"),
    ("dvnet_reclaimed", "dvnet reclaimed (s)"),
    ("dvnet_kernel_mib", "dvnet memory held while up (MiB)"),
    ("dvnet_rss_mib", "dvnet process peak RSS (MiB)"),
    ("ipbatch_up", "ip-batch up (s)"),
    ("ipbatch_down", "ip-batch down (s)"),
    ("ipbatch_reclaimed", "ip-batch reclaimed (s)"),
    ("ipbatch_kernel_mib", "ip-batch memory held while up (MiB)"),
    ("mininet_up", "mininet up (s)"),
    ("mininet_reachable", "mininet all reachable (s)"),
    ("mininet_down", "mininet down (s)"),
    ("mininet_reclaimed", "mininet reclaimed (s)"),
    ("mininet_kernel_mib", "mininet memory held while up (MiB)"),
    ("mininet_rss_mib", "mininet python peak RSS (MiB)"),
];

/// Host pairs pinged for "all reachable" (the first and last host always among them).
pub(super) const REACH_SAMPLES: usize = 16;

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("bench deploy creates namespaces: run it as root");
    }
    let (sizes, runs) = if args.quick {
        (vec![50, 100], 1)
    } else {
        (args.sizes.clone(), args.runs)
    };
    if runs == 0 || sizes.is_empty() || sizes.iter().any(|&n| n < 2) {
        bail!("need at least one run and sizes of at least 2 nodes");
    }
    let mininet = if args.no_mininet {
        MininetInfo {
            available: false,
            version: None,
            skipped: Some("--no-mininet".into()),
        }
    } else {
        mininet_info()
    };
    if let Some(why) = &mininet.skipped {
        eprintln!("xtask: Mininet left out: {why}");
    }

    let idle_settings = IdleSettings::standard(args.idle_timeout, args.quick);
    let (scratch, mut wait, machine) = super::harness::start(idle_settings)?;
    let mut bench = Bench {
        scratch: &scratch,
        wait: &mut wait,
    };
    let opts = Options {
        shape: args.shape,
        hosts_per_lan: args.hosts_per_lan,
        runs,
        mininet: mininet.available,
    };
    let mut report = Report {
        bench: "deploy",
        started_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine,
        shape: format!("{:?}", args.shape).to_lowercase(),
        hosts_per_lan: args.hosts_per_lan,
        runs,
        idle: idle_settings,
        mininet: mininet.clone(),
        sizes: Vec::new(),
        notes: Vec::new(),
    };

    let outcome = (|| -> anyhow::Result<()> {
        for &nodes in &sizes {
            let size = bench.size(nodes, &opts)?;
            report.sizes.push(size);
        }
        Ok(())
    })();
    report.notes.append(&mut bench.wait.notes);
    // the sweep runs whatever happened above
    let leftovers = scratch.cleanup();
    report
        .notes
        .extend(leftovers.iter().map(|l| format!("cleanup: {l}")));

    if !report.sizes.is_empty() {
        println!("{}", table(&report));
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    let path = super::results_path(args.json.as_deref(), "deploy.json");
    super::write_json(&path, &report)?;
    eprintln!("xtask: results in {}", path.display());
    outcome?;
    let failed: Vec<String> = report
        .sizes
        .iter()
        .flat_map(|s| &s.runs)
        .filter(|r| r.tool != "mininet")
        .filter_map(|r| {
            r.error
                .as_ref()
                .map(|e| format!("{} run {}: {e}", r.tool, r.run))
        })
        .collect();
    super::harness::verdict(&leftovers, &failed)
}

/// Mininet's version, where it can run here.
pub(super) fn mininet_version() -> Option<String> {
    mininet_info().version
}

fn mininet_info() -> MininetInfo {
    let missing = |why: &str| MininetInfo {
        available: false,
        version: None,
        skipped: Some(why.to_owned()),
    };
    if !Path::new(PYTHON).exists() {
        return missing("no /usr/bin/python3");
    }
    let version = Command::new(PYTHON)
        .args(["-c", "import mininet.net; print(mininet.net.VERSION)"])
        .output();
    let version = match version {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => return missing("not installed (`./setup.sh --bench` installs it)"),
    };
    let brctl = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("brctl").exists()));
    if !brctl {
        return missing("brctl is missing (`./setup.sh --bench` installs bridge-utils)");
    }
    MininetInfo {
        available: true,
        version: Some(version),
        skipped: None,
    }
}

/// The floor for one network: one `ip -batch` of `netns add` lines, `ip -n FABRIC -batch`
/// runs of bridges and veths (each veth created with both ends in place and, as dvnet makes
/// them, one queue pair per end: `ip`'s default of one per CPU makes a pair twice as slow on
/// two CPUs), and the matching `netns del` batch. No addresses, routes or sysctls.
/// Veths per `ip -batch` of the floor: up to two namespaces open each.
const LINKS_PER_BATCH: usize = 3000;

struct Floor {
    namespaces: Vec<String>,
    fabric: String,
    add_ns: PathBuf,
    /// `ip` keeps every namespace it opens for a `netns` argument open until it exits, so the
    /// links go in batches that stay below the descriptor limit, one `ip` each.
    links: Vec<PathBuf>,
    del: PathBuf,
    veth_pairs: usize,
    bridges: usize,
}

impl Floor {
    /// The floor of `plan`, its namespaces renamed `dv-X` → `X` (so `dvnet ls` never mistakes
    /// them for a network), batch files written to `dir`.
    fn new(plan: &Plan, dir: &Path, tag: &str) -> anyhow::Result<Floor> {
        use std::fmt::Write as _;
        let ns = |name: &str| name.strip_prefix("dv-").unwrap_or(name).to_owned();
        let fabric = ns(&plan.fabric_netns);
        let nodes: Vec<String> = plan.nodes.iter().map(|n| ns(&n.netns)).collect();
        let mut add_ns = String::new();
        for n in std::iter::once(&fabric).chain(&nodes) {
            let _ = writeln!(add_ns, "netns add {n}");
        }
        let mut links = String::new();
        let mut batches: Vec<String> = Vec::new();
        let (mut veth_pairs, mut bridges) = (0, 0);
        for s in &plan.subnets {
            if let Segment::Bridge { name, .. } = &s.segment {
                let _ = writeln!(links, "link add {name} type bridge\nlink set {name} up");
                bridges += 1;
            }
        }
        for s in &plan.subnets {
            let members: Vec<_> = s.links.iter().map(|&l| &plan.links[l as usize]).collect();
            match &s.segment {
                Segment::Empty => {}
                Segment::PointToPoint => {
                    let (a, b) = (members[0], members[1]);
                    let _ = writeln!(
                        links,
                        "link add {} netns {} numtxqueues 1 numrxqueues 1 type veth peer name {} netns {} numtxqueues 1 numrxqueues 1",
                        a.ifname, nodes[a.node], b.ifname, nodes[b.node]
                    );
                    veth_pairs += 1;
                    if veth_pairs % LINKS_PER_BATCH == 0 {
                        batches.push(std::mem::take(&mut links));
                    }
                }
                Segment::Bridge { name, .. } => {
                    for l in members {
                        let port = l
                            .fabric_port
                            .as_ref()
                            .context("bridged link without port")?;
                        let _ = writeln!(
                            links,
                            "link add {} numtxqueues 1 numrxqueues 1 type veth peer name {} netns {} numtxqueues 1 numrxqueues 1\nlink set {} master {name} up",
                            port.ifname, l.ifname, nodes[l.node], port.ifname
                        );
                        veth_pairs += 1;
                        if veth_pairs % LINKS_PER_BATCH == 0 {
                            batches.push(std::mem::take(&mut links));
                        }
                    }
                }
            }
        }
        // like `dvnet down`: nodes first, then the fabric
        let mut del = String::new();
        for n in nodes.iter().chain(std::iter::once(&fabric)) {
            let _ = writeln!(del, "netns del {n}");
        }
        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let p = dir.join(format!("{tag}-{name}.batch"));
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            Ok(p)
        };
        let mut namespaces = vec![fabric.clone()];
        namespaces.extend(nodes);
        if !links.is_empty() {
            batches.push(links);
        }
        let links = batches
            .iter()
            .enumerate()
            .map(|(i, text)| write(&format!("links-{i}"), text))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Floor {
            add_ns: write("netns-add", &add_ns)?,
            links,
            del: write("netns-del", &del)?,
            namespaces,
            fabric,
            veth_pairs,
            bridges,
        })
    }
}

/// Host-wide sysctls Mininet's `fixLimits()` would raise, read from the real host: the
/// Mininet run fails if any changes.
const MININET_TRIPWIRE: [&str; 9] = [
    "fs/file-max",
    "kernel/pty/max",
    "net/core/wmem_max",
    "net/core/rmem_max",
    "net/core/netdev_max_backlog",
    "net/ipv4/tcp_rmem",
    "net/ipv4/tcp_wmem",
    "net/ipv4/neigh/default/gc_thresh3",
    "net/ipv4/route/max_size",
];

fn tripwire() -> Vec<(&'static str, String)> {
    MININET_TRIPWIRE
        .iter()
        .map(|k| {
            let v = std::fs::read_to_string(format!("/proc/sys/{k}")).unwrap_or_default();
            (*k, v.trim().to_owned())
        })
        .collect()
}

/// What one size of one shape measures.
pub(super) struct Options {
    pub(super) shape: Shape,
    pub(super) hosts_per_lan: usize,
    pub(super) runs: usize,
    /// Whether Mininet takes part (only a chain is the same network as its `LinearTopo`).
    pub(super) mininet: bool,
}

pub(super) struct Bench<'a> {
    pub(super) scratch: &'a Scratch,
    pub(super) wait: &'a mut Waiter,
}

impl Bench<'_> {
    pub(super) fn size(&mut self, nodes: usize, opts: &Options) -> anyhow::Result<SizeReport> {
        let prefix = &self.scratch.prefix;
        let runs = opts.runs;
        let shape = format!("{:?}", opts.shape).to_lowercase();
        let tag = format!("{}{nodes}", &shape[..1]);
        let spec = |name: String| GenSpec {
            shape: opts.shape,
            nodes,
            hosts_per_lan: opts.hosts_per_lan,
            fanout: 2,
            name: Some(name),
        };
        // dvnet's network, as `dvnet gen` writes it
        let value = generate(&spec(format!("{prefix}-d{tag}")))?;
        let (file, plan) =
            self.scratch
                .network_file(&format!("d{tag}.json"), &value, PlanOptions::default())?;
        self.scratch.networks.borrow_mut().push(plan.id.clone());
        // the floor: the same network under another name
        let value = generate(&spec(format!("{prefix}-f{tag}")))?;
        let floor_plan = Plan::build(
            &Topology::from_json(&serde_json::to_string(&value)?, "floor")?,
            PlanOptions::default(),
        )?;
        let floor = Floor::new(&floor_plan, &self.scratch.dir, &format!("f{tag}"))?;
        let pairs = reach_pairs(&plan, REACH_SAMPLES);
        if floor.namespaces.iter().any(|n| !self.scratch.owns(n)) {
            bail!("floor namespaces do not carry the prefix {prefix}");
        }
        let k = (nodes / 2).max(1);
        let mut size = SizeReport {
            nodes,
            namespaces: floor.namespaces.len(),
            veth_pairs: floor.veth_pairs,
            bridges: floor.bridges,
            mininet_k: k,
            summary: BTreeMap::new(),
            runs: Vec::new(),
        };
        eprintln!(
            "xtask: {shape} of {nodes} nodes: {} namespaces, {} veth pairs, {} bridges{}",
            size.namespaces,
            size.veth_pairs,
            size.bridges,
            if opts.mininet {
                format!("; Mininet LinearTopo({k})")
            } else {
                String::new()
            }
        );

        for run in 1..=runs {
            let mut rec = RunRecord {
                tool: "dvnet",
                run,
                ..RunRecord::default()
            };
            if let Err(e) = self.dvnet_run(&file, &plan.id, &pairs, &mut rec) {
                rec.error = Some(format!("{e:#}"));
            }
            idle::check_interrupted()?;
            progress(nodes, run, runs, &rec);
            size.runs.push(rec);

            let mut rec = RunRecord {
                tool: "ipbatch",
                run,
                ..RunRecord::default()
            };
            if let Err(e) = self.floor_run(&floor, &mut rec) {
                rec.error = Some(format!("{e:#}"));
            }
            idle::check_interrupted()?;
            progress(nodes, run, runs, &rec);
            size.runs.push(rec);

            if opts.mininet {
                let mut rec = RunRecord {
                    tool: "mininet",
                    run,
                    ..RunRecord::default()
                };
                if let Err(e) = self.mininet_run(k, &mut rec) {
                    rec.error = Some(format!("{e:#}"));
                }
                idle::check_interrupted()?;
                progress(nodes, run, runs, &rec);
                size.runs.push(rec);
            }
        }
        for (key, _) in METRICS {
            let (tool, metric) = key.split_once('_').expect("tool_metric");
            let samples: Vec<f64> = size
                .runs
                .iter()
                .filter(|r| r.tool == tool && r.error.is_none())
                .filter_map(|r| match metric {
                    "up" => r.up,
                    "down" => r.down,
                    "reachable" => r.reachable,
                    "kernel_mib" => r.kernel_mib,
                    "rss_mib" => r.rss_mib,
                    _ => r.reclaimed,
                })
                .collect();
            size.summary.insert(key, Summary::of(&samples));
        }
        Ok(size)
    }

    fn dvnet_run(
        &mut self,
        file: &Path,
        id: &str,
        pairs: &[(String, Ipv4Addr)],
        rec: &mut RunRecord,
    ) -> anyhow::Result<()> {
        self.wait.settle("dvnet up")?;
        let scratch = self.scratch;
        let guard = OnDrop(Some(|| {
            let _ = scratch.dvnet().args(["down", id]).output();
        }));
        let mem_before = mem_used_mib()?;
        let start = Instant::now();
        // `up --json` reports its phases: read, not scraped from logs
        let (took, out, rss) = timed_rss(scratch.dvnet().arg("up").arg(file).arg("--json"))?;
        check("dvnet up", &out)?;
        rec.up = Some(took.as_secs_f64());
        rec.rss_mib = rss;
        all_reachable(pairs, Duration::from_secs(30))?;
        rec.reachable = Some(start.elapsed().as_secs_f64());
        rec.kernel_mib = Some(mem_used_mib()? - mem_before);
        let (phases, reported) = up_report(&out.stdout);
        rec.detail = Some(serde_json::json!({
            "up_reported": reported,
            "phases": phases,
        }));

        let interrupted = idle::check_interrupted();
        let settled = interrupted.and_then(|()| self.wait.settle("dvnet down"));
        let start = Instant::now();
        let out = scratch.dvnet().args(["down", id]).output()?;
        rec.down = Some(start.elapsed().as_secs_f64());
        guard.disarm();
        settled?;
        check("dvnet down", &out)?;
        rec.reclaimed = self.wait.reclaimed("dvnet down", start)?;
        Ok(())
    }

    fn floor_run(&mut self, floor: &Floor, rec: &mut RunRecord) -> anyhow::Result<()> {
        self.wait.settle("ip-batch up")?;
        let scratch = self.scratch;
        let guard = OnDrop(Some(|| {
            let _ = scratch
                .in_host("ip")
                .args(["-force", "-batch"])
                .arg(&floor.del)
                .output();
        }));
        let mem_before = mem_used_mib()?;
        let (namespaces, out) = timed(scratch.in_host("ip").arg("-batch").arg(&floor.add_ns))?;
        check("ip -batch (netns add)", &out)?;
        let mut links = Duration::ZERO;
        for batch in &floor.links {
            let (took, out) = timed(
                scratch
                    .in_host("ip")
                    .args(["-n", &floor.fabric, "-batch"])
                    .arg(batch),
            )?;
            check("ip -n FABRIC -batch (links)", &out)?;
            links += took;
        }
        rec.up = Some((namespaces + links).as_secs_f64());
        rec.kernel_mib = Some(mem_used_mib()? - mem_before);
        rec.detail = Some(serde_json::json!({
            "phases": {"namespaces": namespaces.as_secs_f64(), "links": links.as_secs_f64()},
        }));

        let interrupted = idle::check_interrupted();
        let settled = interrupted.and_then(|()| self.wait.settle("ip-batch down"));
        let start = Instant::now();
        let out = scratch
            .in_host("ip")
            .arg("-batch")
            .arg(&floor.del)
            .output()?;
        rec.down = Some(start.elapsed().as_secs_f64());
        check("ip -batch (netns del)", &out)?;
        guard.disarm();
        settled?;
        rec.reclaimed = self.wait.reclaimed("ip-batch down", start)?;
        Ok(())
    }

    fn mininet_run(&mut self, k: usize, rec: &mut RunRecord) -> anyhow::Result<()> {
        self.wait.settle("mininet")?;
        let pidfile = self
            .scratch
            .dir
            .join(format!("mininet-k{k}-run{}.pids", rec.run));
        let script = super::workspace_root().join(MININET_SCRIPT);
        let before = tripwire();
        let (wall, out) = {
            let _guard = OnDrop(Some(|| {
                kill_mininet_shells(&pidfile);
            }));
            timed(
                self.scratch
                    .in_host(PYTHON)
                    .arg(&script)
                    .arg(k.to_string())
                    .arg(&pidfile)
                    .arg(REACH_SAMPLES.to_string())
                    .arg(REACH_SPAN.to_string()),
            )?
        };
        let exited = Instant::now();
        let after = tripwire();
        if before != after {
            let changed: Vec<String> = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| b != a)
                .map(|((k, b), (_, a))| format!("{k}: {b} → {a}"))
                .collect();
            self.wait.notes.push(format!(
                "MININET CHANGED HOST SYSCTLS: {}",
                changed.join(", ")
            ));
            bail!("mininet changed host sysctls: {}", changed.join(", "));
        }
        check("mininet_deploy.py", &out)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let result: serde_json::Value = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .context("mininet_deploy.py printed no JSON")
            .and_then(|l| serde_json::from_str(l).context("mininet_deploy.py output"))?;
        let up = result["up"].as_f64().context("no \"up\" in the output")?;
        let down = result["down"]
            .as_f64()
            .context("no \"down\" in the output")?;
        rec.up = Some(up);
        rec.down = Some(down);
        rec.reachable = result["reachable"].as_f64();
        rec.kernel_mib = result["kernel_mib"].as_f64();
        rec.rss_mib = result["rss_mib"].as_f64();
        rec.detail = Some(serde_json::json!({
            "build": result["build"],
            "start": result["start"],
            "script_wall": wall.as_secs_f64(),
        }));
        // the script exits right after net.stop(): count the teardown from its start
        rec.reclaimed = self
            .wait
            .reclaimed("mininet down", exited)?
            .map(|after_exit| down + after_exit);
        Ok(())
    }
}

/// Hosts at most this far apart in file order are paired. In a chain, hosts k apart have
/// k + 1 routers between them, and with Linux's default TTL of 64 (the echo reply's too) a
/// ping crosses at most 63: a chain of 250 nodes is already wider than IPv4 reaches.
pub(super) const REACH_SPAN: usize = 60;

/// `samples` pairs of hosts (namespace of the source, address of the destination), spread
/// over the network; the first host and the one [`REACH_SPAN`] hosts further (or the last)
/// are always one of them.
fn reach_pairs(plan: &Plan, samples: usize) -> Vec<(String, Ipv4Addr)> {
    let hosts: Vec<_> = plan
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Host)
        .filter_map(|n| Some((n, plan.links_of(n).next()?.address?)))
        .collect();
    index_pairs(hosts.len(), samples)
        .into_iter()
        .map(|(a, b)| (hosts[a].0.netns.clone(), hosts[b].1))
        .collect()
}

/// The pairs of host indexes: sources spread evenly over `n` hosts, each towards the host
/// half the network away, or [`REACH_SPAN`] away where that is nearer (forward, or back
/// near the end).
fn index_pairs(n: usize, samples: usize) -> Vec<(usize, usize)> {
    if n < 2 {
        return Vec::new();
    }
    let span = (n / 2).clamp(1, REACH_SPAN);
    let m = samples.clamp(1, n);
    let mut pairs = vec![(0, (n - 1).min(REACH_SPAN))];
    for i in 1..m {
        let a = i * n / m;
        pairs.push((a, if a + span < n { a + span } else { a - span }));
    }
    pairs.sort_unstable();
    pairs.dedup();
    pairs.retain(|(a, b)| a != b);
    pairs
}

/// Pings every pair at once, again and again, until each has answered once.
fn all_reachable(pairs: &[(String, Ipv4Addr)], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let spawn = |(ns, dst): &(String, Ipv4Addr)| {
        in_ns(ns, "ping")
            .args([
                "-c",
                "1",
                "-W",
                "1",
                "-t",
                "255",
                "-n",
                "-q",
                &dst.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ping")
    };
    let mut pending: Vec<(usize, std::process::Child)> = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        pending.push((i, spawn(p)?));
    }
    while !pending.is_empty() {
        std::thread::sleep(Duration::from_millis(2));
        let mut still = Vec::new();
        for (i, mut child) in pending {
            match child.try_wait()? {
                None => still.push((i, child)),
                Some(st) if st.success() => {}
                Some(_) if Instant::now() < deadline => still.push((i, spawn(&pairs[i])?)),
                Some(_) => {
                    for (_, mut c) in still {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    bail!(
                        "{} does not reach {} within {} s",
                        pairs[i].0,
                        pairs[i].1,
                        timeout.as_secs()
                    );
                }
            }
        }
        pending = still;
    }
    Ok(())
}

/// MemTotal − MemAvailable, MiB.
fn mem_used_mib() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let field = |name: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .with_context(|| format!("/proc/meminfo has no {name}"))
    };
    Ok((field("MemTotal:")? - field("MemAvailable:")?) / 1024.0)
}

fn progress(nodes: usize, run: usize, runs: usize, rec: &RunRecord) {
    let s = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), secs);
    match &rec.error {
        Some(e) => eprintln!(
            "xtask: [{nodes} nodes, run {run}/{runs}] {}: FAILED: {e}",
            rec.tool
        ),
        None => eprintln!(
            "xtask: [{nodes} nodes, run {run}/{runs}] {:<8} up {} s, down {} s, reclaimed {} s",
            rec.tool,
            s(rec.up),
            s(rec.down),
            s(rec.reclaimed)
        ),
    }
}

fn table(report: &Report) -> String {
    use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    let mut header = vec!["seconds: median (min–max)".to_owned()];
    header.extend(report.sizes.iter().map(|s| format!("{} nodes", s.nodes)));
    t.set_header(header);
    for (key, label) in METRICS {
        if key.starts_with("mininet") && !report.mininet.available {
            continue;
        }
        let mut row = vec![label.to_owned()];
        let tool = key.split('_').next().expect("tool_metric");
        row.extend(report.sizes.iter().map(|s| {
            if let Some(x) = s.summary.get(key).copied().flatten() {
                x.cell()
            } else if s.runs.iter().any(|r| r.tool == tool && r.error.is_some()) {
                "failed".to_owned()
            } else {
                // only "reclaimed" can be missing without a failure
                "never idle".to_owned()
            }
        }));
        t.add_row(row);
    }
    let mut out = format!(
        "deploy: {} networks, {} host(s) per LAN, {} run(s); {}\n{t}",
        report.shape,
        report.hosts_per_lan,
        report.runs,
        report.machine.line()
    );
    for s in &report.sizes {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "\n{} nodes: {} namespaces, {} veth pairs, {} bridges",
            s.nodes, s.namespaces, s.veth_pairs, s.bridges
        );
        if report.mininet.available {
            let _ = write!(
                out,
                "; Mininet LinearTopo({}): {} host namespaces, {} bridges, {} veth pairs",
                s.mininet_k,
                s.mininet_k,
                s.mininet_k,
                2 * s.mininet_k - 1
            );
        }
    }
    out.push_str("\nWhere `up` goes (medians, seconds):");
    for s in &report.sizes {
        out.push_str(&breakdown(s));
    }
    if let Some(why) = &report.mininet.skipped {
        use std::fmt::Write as _;
        let _ = write!(out, "\nMininet: not measured ({why})");
    }
    out
}

/// One line: the phases of each tool's `up`, medians over the successful runs.
fn breakdown(size: &SizeReport) -> String {
    let median = |tool: &str, f: &dyn Fn(&RunRecord) -> Option<f64>| {
        let samples: Vec<f64> = size
            .runs
            .iter()
            .filter(|r| r.tool == tool && r.error.is_none())
            .filter_map(f)
            .collect();
        Summary::of(&samples).map(|x| secs(x.median))
    };
    let detail = |r: &RunRecord, path: &[&str]| {
        let mut v = r.detail.as_ref()?;
        for p in path {
            v = v.get(p)?;
        }
        v.as_f64()
    };
    let mut parts = Vec::new();
    let dvnet_phases = ["namespaces", "bridges", "links", "addresses+routes"];
    let mut dvnet: Vec<String> = dvnet_phases
        .iter()
        .filter_map(|p| median("dvnet", &|r| detail(r, &["phases", p])).map(|m| format!("{p} {m}")))
        .collect();
    if let Some(m) = median("dvnet", &|r| {
        let phases: f64 = dvnet_phases
            .iter()
            .map(|p| detail(r, &["phases", p]).unwrap_or(0.0))
            .sum();
        r.up.map(|up| up - phases)
    }) {
        dvnet.push(format!("rest (process, parse, plan, record) {m}"));
    }
    parts.push(format!("dvnet: {}", dvnet.join(", ")));
    let floor: Vec<String> = ["namespaces", "links"]
        .iter()
        .filter_map(|p| {
            median("ipbatch", &|r| detail(r, &["phases", p])).map(|m| format!("{p} {m}"))
        })
        .collect();
    parts.push(format!("ip-batch: {}", floor.join(", ")));
    let mininet: Vec<String> = ["build", "start"]
        .iter()
        .filter_map(|p| median("mininet", &|r| detail(r, &[p])).map(|m| format!("{p} {m}")))
        .collect();
    if !mininet.is_empty() {
        parts.push(format!("Mininet: {}", mininet.join(", ")));
    }
    format!("\n  {} nodes: {}", size.nodes, parts.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_stay_within_the_span_and_include_the_first_host() {
        for n in [2, 3, 12, 125, 250, 1000] {
            let pairs = index_pairs(n, REACH_SAMPLES);
            assert!(!pairs.is_empty(), "{n} hosts");
            assert_eq!(pairs[0], (0, (n - 1).min(REACH_SPAN)), "{n} hosts");
            for &(a, b) in &pairs {
                assert!(a != b && a < n && b < n, "{n} hosts: {a}, {b}");
                let d = a.abs_diff(b);
                assert!(
                    d.min(n - d) <= REACH_SPAN,
                    "{n} hosts: {a} and {b} too far apart"
                );
            }
        }
        assert_eq!(index_pairs(1, REACH_SAMPLES), vec![]);
        assert!(index_pairs(1000, REACH_SAMPLES).len() >= REACH_SAMPLES - 1);
    }
}
