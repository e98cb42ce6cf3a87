//! `cargo xtask bench plan`: the pure front of `dvnet up`, in-process, on a large generated
//! topology: parsing and validation ([`Topology::from_json`]), planning ([`Plan::build`]) and
//! writing the plan as JSON (what `up` records in /run/dvnet and `dvnet plan --json` prints).
//! Beside them, as the baseline of the same run, `serde_json` reading the same text into a
//! `Value`: the cost of just reading the file.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use dvnet::generate::{GenSpec, Shape, generate};
use dvnet::plan::{Plan, PlanOptions};
use dvnet::topology::Topology;
use serde::Serialize;

use super::stats::Summary;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Nodes (routers + hosts) of the generated topology.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Its shape.
    #[arg(long, value_enum, default_value_t = Shape::Tree)]
    shape: Shape,
    /// Hosts on each router's LAN.
    #[arg(long, default_value_t = 1)]
    hosts_per_lan: usize,
    /// Repetitions (median, min, max).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Where to write the results [default: bench-results/plan.json].
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    machine: super::Machine,
    shape: String,
    nodes: usize,
    hosts_per_lan: usize,
    runs: usize,
    file_bytes: usize,
    routers: usize,
    hosts: usize,
    subnets: usize,
    links: usize,
    routes: usize,
    plan_json_bytes: usize,
    /// Seconds per step.
    steps: Vec<Step>,
    /// Peak resident memory of the whole benchmark process, MiB.
    peak_rss_mib: f64,
}

#[derive(Debug, Serialize)]
struct Step {
    name: &'static str,
    /// Wall time.
    seconds: Option<Summary>,
    /// CPU time of the benchmark thread: less sensitive to other load on the machine.
    cpu_seconds: Option<Summary>,
}

/// Wall and CPU time of one step.
struct Timer {
    wall: Instant,
    cpu: f64,
}

impl Timer {
    fn start() -> Timer {
        Timer {
            cpu: thread_cpu(),
            wall: Instant::now(),
        }
    }

    /// Records (wall, cpu) seconds since `start` into `into`.
    fn stop(self, into: &mut Samples) {
        into.wall.push(self.wall.elapsed().as_secs_f64());
        into.cpu.push(thread_cpu() - self.cpu);
    }
}

#[derive(Default)]
struct Samples {
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

impl Samples {
    fn step(&self, name: &'static str) -> Step {
        Step {
            name,
            seconds: Summary::of(&self.wall),
            cpu_seconds: Summary::of(&self.cpu),
        }
    }
}

/// User + system time of this thread, seconds.
fn thread_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_THREAD).map_or(f64::NAN, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            #[expect(clippy::cast_precision_loss, reason = "seconds of CPU time")]
            let s = tv.tv_sec() as f64;
            #[expect(clippy::cast_precision_loss, reason = "microseconds")]
            let us = tv.tv_usec() as f64;
            s + us * 1e-6
        };
        t(u.user_time()) + t(u.system_time())
    })
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let runs = args.runs.max(1);
    let value = generate(&GenSpec {
        shape: args.shape,
        nodes: args.nodes,
        hosts_per_lan: args.hosts_per_lan,
        fanout: 2,
        name: None,
    })?;
    // exactly what `dvnet gen` writes
    let text = serde_json::to_string_pretty(&value)? + "\n";
    let origin = format!("gen {:?} {}", args.shape, args.nodes).to_lowercase();
    drop(value);

    let mut read = Samples::default();
    let mut parse = Samples::default();
    let mut planning = Samples::default();
    let mut total = Samples::default();
    let mut record = Samples::default();
    let mut last = None;
    for i in 1..=runs {
        let t = Timer::start();
        let v: serde_json::Value = serde_json::from_str(black_box(&text))?;
        t.stop(&mut read);
        drop(black_box(v));

        let t = Timer::start();
        let topo = Topology::from_json(black_box(&text), &origin)?;
        t.stop(&mut parse);

        let t = Timer::start();
        let plan = Plan::build(black_box(&topo), PlanOptions::default())?;
        t.stop(&mut planning);
        total.wall.push(parse.wall[i - 1] + planning.wall[i - 1]);
        total.cpu.push(parse.cpu[i - 1] + planning.cpu[i - 1]);

        let t = Timer::start();
        let json = serde_json::to_string(black_box(&plan))?;
        t.stop(&mut record);
        eprintln!(
            "xtask: run {i}/{runs}: parse+validate {:.1} ms, plan {:.1} ms",
            parse.wall[i - 1] * 1e3,
            planning.wall[i - 1] * 1e3
        );
        last = Some((topo, plan, json.len()));
    }
    let (topo, plan, plan_json_bytes) = last.context("no run")?;

    let steps = vec![
        read.step("serde_json → Value (baseline: reading the file)"),
        parse.step("Topology::from_json (parse + validate)"),
        planning.step("Plan::build (addresses, names, routes)"),
        total.step("parse + validate + plan"),
        record.step("plan → JSON (the state record)"),
    ];
    let report = Report {
        bench: "plan",
        machine: super::Machine::describe(),
        shape: format!("{:?}", args.shape).to_lowercase(),
        nodes: args.nodes,
        hosts_per_lan: args.hosts_per_lan,
        runs,
        file_bytes: text.len(),
        routers: topo.routers.len(),
        hosts: topo.hosts.len(),
        subnets: topo.subnets.len(),
        links: plan.links.len(),
        routes: plan.nodes.iter().map(|n| n.routes.len()).sum(),
        plan_json_bytes,
        steps,
        peak_rss_mib: peak_rss_mib(),
    };
    println!("{}", table(&report));
    let path = super::results_path(args.json.as_deref(), "plan.json");
    super::write_json(&path, &report)?;
    eprintln!("xtask: results in {}", path.display());
    Ok(())
}

fn peak_rss_mib() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(f64::NAN, |u| {
        // KiB on Linux
        #[expect(clippy::cast_precision_loss, reason = "a memory size in KiB")]
        let kib = u.max_rss() as f64;
        (kib / 1024.0).round()
    })
}

fn table(r: &Report) -> String {
    use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header([
        "step",
        "wall ms: median (min–max)",
        "CPU ms: median (min–max)",
    ]);
    let cell = |x: Option<Summary>| x.map_or_else(|| "-".to_owned(), |x| x.cell_ms());
    for s in &r.steps {
        t.add_row([s.name.to_owned(), cell(s.seconds), cell(s.cpu_seconds)]);
    }
    format!(
        "plan: {} {} nodes ({} routers, {} hosts, {} subnets, {} links), {} run(s); {}\n\
         file {:.1} MB; {} routes; plan JSON {:.1} MB; peak RSS {} MiB\n{t}",
        r.shape,
        r.nodes,
        r.routers,
        r.hosts,
        r.subnets,
        r.links,
        r.runs,
        r.machine.line(),
        mb(r.file_bytes),
        r.routes,
        mb(r.plan_json_bytes),
        r.peak_rss_mib,
        t = t
    )
}

fn mb(bytes: usize) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a file size")]
    let b = bytes as f64;
    b / 1e6
}
