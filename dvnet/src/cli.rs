//! The command line: parses arguments and dispatches to the library.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::generate::{self, GenSpec, Shape};
use crate::plan::{Datapath, Plan, PlanOptions};
use crate::render;
use crate::topology::Topology;

/// Emulated IP networks on one Linux machine: real namespaces, real veths, eBPF routers.
#[derive(Debug, Parser)]
#[command(name = "dvnet", version, about, propagate_version = true)]
pub struct Cli {
    /// More logs (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a topology file and report every problem at once.
    Validate {
        /// The topology file.
        file: PathBuf,
    },
    /// Show what `up` would build (addresses, interfaces, routes, firewall), without root.
    Plan {
        file: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value_t)]
        datapath: Datapath,
    },
    /// Write a generated topology (for tests and benchmarks).
    Gen {
        #[arg(value_enum)]
        shape: Shape,
        /// Total nodes: routers + hosts.
        nodes: usize,
        /// Hosts on each router's LAN (0: routers only).
        #[arg(long, default_value_t = 1)]
        hosts_per_lan: usize,
        /// Children per router, for trees.
        #[arg(long, default_value_t = 2)]
        fanout: usize,
        /// The network's name (default: gen-SHAPE-N).
        #[arg(long)]
        name: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// What `main` should exit with when a command fails.
pub const EXIT_INVALID_INPUT: u8 = 2;

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command fails with; a [`crate::topology::TopologyError`] means bad input.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Validate { file } => {
            let topo = Topology::from_file(&file)?;
            let plan = Plan::build(&topo, PlanOptions::default())?;
            println!("{}: valid", file.display());
            println!("{}", render::summary(&plan));
            for w in &plan.warnings {
                println!("warning: {w}");
            }
        }
        Command::Plan {
            file,
            json,
            datapath,
        } => {
            let topo = Topology::from_file(&file)?;
            let plan = Plan::build(&topo, PlanOptions { datapath })?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &plan)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", render::plan(&plan))?;
            }
        }
        Command::Gen {
            shape,
            nodes,
            hosts_per_lan,
            fanout,
            name,
            output,
        } => {
            let value = generate::generate(&GenSpec {
                shape,
                nodes,
                hosts_per_lan,
                fanout,
                name,
            })?;
            let text = serde_json::to_string_pretty(&value)? + "\n";
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
        }
    }
    Ok(())
}
