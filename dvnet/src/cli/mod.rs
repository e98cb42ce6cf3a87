//! The command line: parses arguments and dispatches to the library.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::apply::{self, UpOptions};
use crate::generate::{self, GenSpec, Shape};
use crate::inspect;
use crate::plan::{Datapath, Plan, PlanOptions, Runtime};
use crate::render;
use crate::state::State;
use crate::topology::{Topology, TopologyError};

mod fanout;
mod network;
mod progress;

use network::{edit_of, map_changes, network_id, placed};
use progress::Bars;

/// Why a command failed: the library's own errors, and the command line's.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Inspect(#[from] crate::inspect::InspectError),
    #[error(transparent)]
    Stats(#[from] crate::stats::StatsError),
    #[error(transparent)]
    Entries(#[from] crate::datapath::entries::EntriesError),
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
    #[error(transparent)]
    Generate(#[from] crate::generate::GenError),
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
    #[error(transparent)]
    Delay(#[from] crate::delay::DelayError),
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    #[error(transparent)]
    Ui(#[from] crate::ui::UiError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A mistake on the command line, said plainly.
    #[error("{0}")]
    Usage(String),
    /// What went wrong on the machines of a lab placed on several.
    #[error("{0}")]
    Machines(String),
}

impl CliError {
    /// Whether the input (a topology file) was bad: `main` exits with
    /// [`EXIT_INVALID_INPUT`].
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, CliError::Topology(_))
    }
}

/// `dvnet link`'s state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkState {
    Down,
    Up,
}

/// `key=value` pairs (or `clear`) of `dvnet impair`.
fn impair_values(values: &[String]) -> Result<(crate::topology::Impair, bool), CliError> {
    if values.len() == 1 && values[0] == "clear" {
        return Ok((crate::topology::Impair::default(), true));
    }
    let mut set = crate::topology::Impair::default();
    for v in values {
        let Some((key, value)) = v.split_once('=') else {
            return Err(CliError::Usage(format!(
                "{v:?}: expected key=value such as delay=20ms or loss=1%, or `clear`"
            )));
        };
        set.set(key.trim(), value).map_err(CliError::Usage)?;
    }
    Ok((set, false))
}

/// What an edit changed, for people or as JSON.
fn print_change(applied: &apply::Applied, json: bool) -> Result<(), CliError> {
    if json {
        println!("{}", serde_json::to_string_pretty(applied)?);
        return Ok(());
    }
    print!("{}", applied.changes.render());
    if !applied.map_changes.is_empty() {
        println!("~ eBPF map entries: {}", applied.map_changes);
    }
    Ok(())
}

impl From<std::io::Error> for CliError {
    fn from(source: std::io::Error) -> Self {
        CliError::Io {
            what: "writing the output".into(),
            source,
        }
    }
}

/// The version `--version` prints: the crate's, and the commit it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DVNET_COMMIT"), ")");

/// Emulated IP networks on one Linux machine: real namespaces, real veths, eBPF routers.
#[derive(Debug, Parser)]
#[command(name = "dvnet", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// More logs (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// In a lab placed on several machines (`"machines"` in its file), the machine whose
    /// share to build, tear down or look at: the one this command runs on.
    #[arg(long, global = true, value_name = "NAME")]
    pub machine: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the network a topology file describes (needs root).
    Up {
        file: PathBuf,
        /// How routers forward and filter.
        #[arg(long, value_enum, default_value_t)]
        datapath: Datapath,
        /// Where nodes run: containers for nodes that name an image (auto), or namespaces only.
        #[arg(long, value_enum, default_value_t)]
        runtime: Runtime,
        /// Report the phases and what was built as JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Change a running network to match its edited topology file, touching only what
    /// changed (`dvnet diff FILE` shows what that is).
    Apply {
        /// The topology file, edited.
        file: PathBuf,
        /// Report the changes, phases and counts as JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// The lab as a picture: routers, segments, hosts and addresses, with firewalls,
    /// impairments and links taken down marked. Of a topology file, or of a running network
    /// (what is in force now).
    Graph {
        /// A topology file, or a running network's name or id.
        network: String,
        /// SVG (drawn by dvnet), DOT (for Graphviz) or Mermaid (for Markdown).
        #[arg(long, value_enum, default_value_t = crate::graph::Format::Svg)]
        format: crate::graph::Format,
        /// Write it to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// A live page of a running network: its picture with each link's packet and byte rates,
    /// drops by reason (a click on a link: its last drops, with the datapath's verdicts), rule
    /// hits and impairments. Read-only; until Ctrl-C.
    Ui {
        /// The network's name or id, or its topology file.
        network: String,
        /// Where to serve it (localhost by default: anyone who reaches it sees the network).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// The completion script of a shell (`source <(dvnet completions bash)`; zsh and fish
    /// too): commands, options and their values.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Capture what a node's links see, from the datapath itself, each packet with what was
    /// decided (forwarded where, delivered, dropped: why, and by which rule): a line each, or
    /// pcapng (`-w FILE`, `-w -` into `wireshark -k -i -` or `tshark -i -`). Until Ctrl-C,
    /// `-c N` packets, or the network going down.
    Capture {
        /// The network's name or id, or its topology file.
        network: String,
        /// `NODE` (all its links) or `NODE:SUBNET`; several at once.
        targets: Vec<String>,
        /// Every link of the network.
        #[arg(long, conflicts_with = "targets")]
        all: bool,
        /// Write pcapng to this file (`-` for standard output).
        #[arg(short = 'w', long = "write")]
        write: Option<PathBuf>,
        /// Stop after this many packets.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Only the packets the datapath dropped.
        #[arg(long)]
        drops_only: bool,
    },
    /// Impair a subnet (every packet entering it) or one member's link (`--node`), live:
    /// `delay=20ms jitter=2ms loss=1% corrupt=0.1% duplicate=0.1% rate=10mbit seed=7` (the
    /// values given replace those in force, the others are kept), or `clear`. In force until
    /// the next `dvnet apply FILE`, which puts the file's back.
    Impair {
        /// The network's name or id, or its topology file.
        network: String,
        /// The subnet.
        subnet: String,
        /// Only this member's link on the subnet (both directions).
        #[arg(long)]
        node: Option<String>,
        /// `key=value` pairs, or `clear`.
        #[arg(required = true, num_args = 1..)]
        values: Vec<String>,
        /// Report the changes as JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Take a member's link down, or up again: a real link failure (routing daemons see it;
    /// packets routed onto it are dropped and counted as `link-down`).
    Link {
        /// The network's name or id, or its topology file.
        network: String,
        node: String,
        subnet: String,
        #[arg(value_enum)]
        state: LinkState,
    },
    /// (started by dvnet, in a network's fabric namespace) Hold packets back: delay,
    /// jitter, rate.
    #[command(hide = true)]
    Delayline { network: String },
    /// Remove everything a network owns (idempotent; works after a crash too).
    Down {
        /// The network's name or id, or its topology file.
        network: String,
    },
    /// List the networks that are up.
    Ls {
        #[arg(long)]
        json: bool,
        /// The topology file of a lab placed on several machines: list the networks of each
        /// of its machines (over SSH), in one table.
        lab: Option<PathBuf>,
    },
    /// Show a running network: nodes, interfaces, addresses, routes.
    Inspect {
        network: String,
        #[arg(long)]
        json: bool,
    },
    /// Per-link counters (packets, bytes, drops by reason), rule hits, flows, from the BPF maps.
    Stats {
        network: String,
        #[arg(long)]
        json: bool,
        /// Refresh every interval, with rates per second.
        #[arg(long)]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Run a command inside a node (an interactive shell without one).
    Exec {
        network: String,
        node: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Show what `dvnet apply FILE` would change in the running network, touching nothing.
    Diff {
        /// The topology file, edited.
        file: PathBuf,
        /// Print the changes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve Docker's network driver protocol: `docker network create --driver dvnet`
    /// (needs root; `dvnet plugin install` runs it as a systemd service).
    Plugin {
        /// The socket dockerd finds the driver on.
        #[arg(long)]
        socket: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<PluginAction>,
    },
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
        #[arg(long, value_enum, default_value_t)]
        runtime: Runtime,
    },
    /// Write a generated topology (for tests and benchmarks).
    ///
    /// `gen chain|ring|star|tree|grid NODES`, `gen clos SPINES LEAVES HOSTS_PER_LEAF`,
    /// `gen fattree K`.
    Gen {
        #[arg(value_enum)]
        shape: Shape,
        /// NODES (routers + hosts); for `clos`, SPINES LEAVES HOSTS_PER_LEAF; for `fattree`,
        /// K (even: k pods, k³/4 hosts).
        #[arg(required = true, num_args = 1..=3)]
        sizes: Vec<usize>,
        /// Use every equal-cost path (default: yes for clos and fattree, no for the others).
        #[arg(long)]
        ecmp: Option<bool>,
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

#[derive(Debug, Subcommand)]
pub enum PluginAction {
    /// Install the plugin as a systemd service (`--uninstall` removes it).
    Install {
        #[arg(long)]
        uninstall: bool,
    },
}

/// What `main` should exit with when a command fails.
pub const EXIT_INVALID_INPUT: u8 = 2;

fn async_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    async_runtime_with(2)
}

fn async_runtime_with(workers: usize) -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            what: "starting the async runtime".into(),
            source,
        })
}

/// Runs a parsed command line.
///
/// # Errors
/// Whatever the command fails with; a [`crate::topology::TopologyError`] means bad input.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let machine = cli.machine.as_deref();
    match cli.command {
        Command::Up {
            file,
            datapath,
            runtime,
            json,
        } => {
            let (text, origin) = topology_text(&file)?;
            let topo = Topology::from_json(&text, &origin)?;
            if machine.is_none() && topo.machines.len() > 1 {
                return fanout::up(&topo, &text, datapath, runtime);
            }
            let plan = plan_for(&topo, PlanOptions { datapath, runtime }, machine)?;
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
            let options = UpOptions {
                source: (file.as_os_str() != "-").then(|| file.clone()),
                source_text: Some(text),
            };
            let bars = Bars::on_terminal();
            let report = async_runtime()?.block_on(apply::up(&plan, &options, &bars))?;
            bars.clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            println!(
                "network \"{}\" is up: {} nodes, {} links in {:.2} s",
                plan.name,
                plan.nodes.len(),
                report.counts.links_created,
                report.seconds
            );
            if let Some(node) = plan
                .nodes
                .iter()
                .find(|n| n.kind == crate::plan::NodeKind::Host)
            {
                println!(
                    "try: dvnet exec {} {} -- ping -c 3 <address>   (dvnet inspect {} lists them)",
                    plan.id, node.name, plan.id
                );
            }
        }
        Command::Apply { file, json } => {
            // the running network's record is read while the file is parsed
            let (parsed, preloaded) = std::thread::scope(|s| {
                let preloaded = s.spawn(|| network::preload(&file));
                let parsed = crate::topology::read_text(&file).and_then(|text| {
                    Topology::from_json(&text, &file.display().to_string()).map(|t| (t, text))
                });
                (parsed, preloaded.join().ok().flatten())
            });
            let (topo, text) = parsed?;
            let bars = Bars::on_terminal();
            let applied = async_runtime()?.block_on(apply::apply(
                topo,
                text,
                Some(file.clone()),
                preloaded,
                &bars,
            ))?;
            bars.clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&applied)?);
                return Ok(());
            }
            print!("{}", applied.changes.render());
            if !applied.map_changes.is_empty() {
                println!("~ eBPF map entries: {}", applied.map_changes);
            }
            if !applied.changes.is_empty() || !applied.map_changes.is_empty() {
                let c = &applied.report.counts;
                println!(
                    "network {}: applied in {:.2} s ({} nodes built, {} removed; {} links made, \
                     {} removed; {} map entries written)",
                    applied.report.network,
                    applied.report.seconds,
                    c.nodes_built,
                    c.nodes_removed,
                    c.links_created,
                    c.links_removed,
                    applied.report.map_entries
                );
            }
        }
        Command::Completions { shell } => {
            completions(shell, &mut std::io::stdout().lock());
        }
        Command::Ui { network, listen } => {
            let id = network_id(&network, machine)?;
            let plan = State::load(&id)?.plan;
            async_runtime_with(1)?.block_on(crate::ui::serve(plan, listen, |addr| {
                eprintln!("dvnet: the page of {id} is at http://{addr}/ (Ctrl-C to stop)");
            }))?;
        }
        Command::Graph {
            network,
            format,
            output,
        } => {
            let path = std::path::Path::new(&network);
            let plan = if std::fs::metadata(path).is_ok_and(|m| m.is_file())
                && State::load(&network_id(&network, machine)?).is_err()
            {
                Plan::build(&Topology::from_file(path)?, PlanOptions::default())?
            } else {
                State::load(&network_id(&network, machine)?)?.plan
            };
            let picture = crate::graph::render(&plan, format);
            match output {
                Some(p) => std::fs::write(&p, picture).map_err(|source| CliError::Io {
                    what: format!("writing {}", p.display()),
                    source,
                })?,
                None => print!("{picture}"),
            }
        }
        Command::Capture {
            network,
            targets,
            all,
            write,
            count,
            drops_only,
        } => {
            let id = network_id(&network, machine)?;
            let record = State::load(&id)?;
            let request = crate::capture::Request {
                targets,
                all,
                count,
                drops_only,
            };
            capture(&record.plan, &request, write.as_deref())?;
        }
        Command::Impair {
            network,
            subnet,
            node,
            values,
            json,
        } => {
            let id = network_id(&network, machine)?;
            let (set, clear) = impair_values(&values)?;
            let change = apply::Change::Impair {
                subnet,
                node,
                set,
                clear,
            };
            let applied =
                async_runtime()?.block_on(apply::apply_change(&id, change, &apply::Silent))?;
            print_change(&applied, json)?;
        }
        Command::Link {
            network,
            node,
            subnet,
            state,
        } => {
            let id = network_id(&network, machine)?;
            let change = apply::Change::Link {
                node,
                subnet,
                down: state == LinkState::Down,
            };
            let applied =
                async_runtime()?.block_on(apply::apply_change(&id, change, &apply::Silent))?;
            print_change(&applied, false)?;
        }
        Command::Delayline { network } => crate::delay::run(&network)?,
        Command::Down { network } => {
            if let Some(topo) = placed(&network, machine) {
                return fanout::down(&topo);
            }
            let id = network_id(&network, machine)?;
            let report = async_runtime()?.block_on(apply::down(&id, &apply::Silent))?;
            if report.found_anything() {
                print!(
                    "network {id} is down: removed {} namespaces",
                    report.namespaces
                );
                if report.containers > 0 {
                    print!(" and {} containers", report.containers);
                }
                if report.processes > 0 {
                    print!(
                        ", stopped {} processes still running in them",
                        report.processes
                    );
                }
                println!();
            } else {
                println!("network {id} is not up: nothing to remove");
            }
            if !report.errors.is_empty() {
                return Err(CliError::Usage(format!(
                    "some objects could not be removed:\n  {}",
                    report.errors.join("\n  ")
                )));
            }
        }
        Command::Ls { json, lab: None } => ls(json)?,
        Command::Ls {
            json,
            lab: Some(file),
        } => {
            let topo = Topology::from_file(&file)?;
            if topo.machines.len() < 2 {
                return Err(CliError::Usage(format!(
                    "{} places its lab on {} machine(s); `dvnet ls` alone lists this one's \
                     networks",
                    file.display(),
                    topo.machines.len()
                )));
            }
            fanout::ls(&topo, json)?;
        }
        Command::Inspect { network, json } => {
            let id = network_id(&network, machine)?;
            let record = State::load(&id)?;
            let live = async_runtime()?.block_on(inspect::live(&record.plan))?;
            if json {
                let out = serde_json::json!({"state": record, "nodes": live});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", render::inspect(&record, &live));
            }
        }
        Command::Stats {
            network,
            json,
            watch,
            interval,
        } => stats(&network, machine, json, watch, interval)?,
        Command::Exec {
            network,
            node,
            command,
        } => {
            if let Some(topo) = placed(&network, machine) {
                return fanout::exec(&topo, &node, &command);
            }
            let id = network_id(&network, machine)?;
            let record = State::load(&id)?;
            let Some(node) = record.plan.node(&node) else {
                let names: Vec<&str> = record.plan.nodes.iter().map(|n| n.name.as_str()).collect();
                return Err(CliError::Usage(format!(
                    "network {id} has {}",
                    crate::topology::no_such_node(&node, &names)
                )));
            };
            if node.container {
                match crate::exec::exec_in_container(&node.netns, &command)? {}
            }
            let frr_dir = crate::frr::dir(&id, node);
            match crate::exec::exec_in(&node.netns, Some(&frr_dir), &command)? {}
        }
        Command::Diff { file, json } => {
            let (record, plan) = edit_of(&file)?;
            let changes = crate::plan::diff::diff(Some(&record.plan), Some(&plan));
            let maps = map_changes(&record.plan, &plan)?;
            if json {
                let out = serde_json::json!({
                    "network": plan.id,
                    "changes": changes,
                    "map_entries": {
                        "interfaces": maps.ifaces.len(),
                        "routes": maps.routes.len(),
                        "firewall_classes": maps.classes.len(),
                        "firewall_rules": maps.rules.len(),
                    },
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", changes.render());
                if !maps.is_empty() {
                    println!("~ eBPF map entries: {}", maps.summary());
                }
            }
        }
        Command::Plugin { socket, action } => {
            let socket = crate::plugin::socket_or_default(socket);
            match action {
                Some(PluginAction::Install { uninstall }) => {
                    println!("{}", crate::plugin::install(uninstall, &socket)?);
                }
                None => {
                    if !nix::unistd::geteuid().is_root() {
                        return Err(CliError::Usage(
                            "dvnet plugin builds networks: run it as root".into(),
                        ));
                    }
                    async_runtime_with(4)?.block_on(crate::plugin::serve(&socket))?;
                }
            }
        }
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
            runtime,
        } => {
            let topo = Topology::from_file(&file)?;
            // the whole lab, or one machine's share
            let options = PlanOptions { datapath, runtime };
            let plan = match machine {
                None => Plan::build(&topo, options)?,
                Some(_) => plan_for(&topo, options, machine)?,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if json {
                serde_json::to_writer_pretty(&mut out, &plan)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", render::plan(&plan))?;
            }
        }
        Command::Gen {
            shape,
            sizes,
            ecmp,
            hosts_per_lan,
            fanout,
            name,
            output,
        } => {
            let wrong = |expected: &str| {
                generate::GenError::Invalid(format!(
                    "gen {} takes {expected}; got {} number(s)",
                    format!("{shape:?}").to_lowercase(),
                    sizes.len()
                ))
            };
            let mut value = match (shape, &sizes[..]) {
                (Shape::Clos, &[spines, leaves, hosts]) => {
                    generate::clos(spines, leaves, hosts, name, ecmp.unwrap_or(true))?
                }
                (Shape::Clos, _) => return Err(wrong("SPINES LEAVES HOSTS_PER_LEAF").into()),
                (Shape::Fattree, &[k]) => generate::fat_tree(k, name, ecmp.unwrap_or(true))?,
                (Shape::Fattree, _) => return Err(wrong("K").into()),
                (_, &[nodes]) => generate::generate(&GenSpec {
                    shape,
                    nodes,
                    hosts_per_lan,
                    fanout,
                    name,
                })?,
                _ => return Err(wrong("NODES").into()),
            };
            if let Some(on) = ecmp {
                value["ecmp"] = serde_json::Value::Bool(on);
            }
            let text = serde_json::to_string_pretty(&value)? + "\n";
            match output {
                Some(path) => std::fs::write(&path, text).map_err(|source| CliError::Io {
                    what: format!("writing {}", path.display()),
                    source,
                })?,
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
        }
    }
    Ok(())
}

/// The topology file's text, from a file or (`-`) standard input, and its name for messages.
fn topology_text(file: &std::path::Path) -> Result<(String, String), CliError> {
    if file.as_os_str() == "-" {
        let origin = "<standard input>";
        return Ok((
            crate::topology::read_from(std::io::stdin(), origin)?,
            origin.into(),
        ));
    }
    Ok((
        crate::topology::read_text(file)?,
        file.display().to_string(),
    ))
}

/// The plan of what this machine builds of `topo`: the whole lab, or with `machine` (needed
/// when the file places the lab on several machines) that machine's share.
fn plan_for(
    topo: &Topology,
    options: PlanOptions,
    machine: Option<&str>,
) -> Result<Plan, CliError> {
    let names = || {
        topo.machines
            .iter()
            .map(|m| format!("{:?}", m.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let m = match (machine, topo.machines.len()) {
        (None, 0) => return Ok(Plan::build(topo, options)?),
        (Some(_), 0) => {
            return Err(CliError::Usage(
                "--machine is for labs placed on several machines, and this file lists none \
                 (\"machines\")"
                    .into(),
            ));
        }
        (None, 1) => 0,
        (None, _) => {
            return Err(CliError::Usage(format!(
                "the file places the lab on machines {}; build each machine's share there \
                 with --machine NAME",
                names()
            )));
        }
        (Some(name), _) => topo.machine(name).ok_or_else(|| {
            CliError::Usage(format!(
                "--machine {name:?} is not a machine of the file; it lists {}",
                names()
            ))
        })?,
    };
    Ok(Plan::build_share(topo, options, m)?)
}

/// `dvnet stats`: once, or refreshed with rates (`--watch`).
fn stats(
    network: &str,
    machine: Option<&str>,
    json: bool,
    watch: bool,
    interval: f64,
) -> Result<(), CliError> {
    if let Some(topo) = placed(network, machine).filter(|_| !watch) {
        return fanout::stats(&topo, json);
    }
    let id = network_id(network, machine)?;
    let record = State::load(&id)?;
    let plan = &record.plan;
    if !watch {
        let snap = crate::stats::read(plan)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&snap)?);
        } else {
            print!("{}", render::stats(plan, &snap, None));
        }
        return Ok(());
    }
    let interval = std::time::Duration::from_secs_f64(interval.max(0.1));
    let mut previous = (crate::stats::read(plan)?, std::time::Instant::now());
    loop {
        std::thread::sleep(interval);
        let now = (crate::stats::read(plan)?, std::time::Instant::now());
        let secs = (now.1 - previous.1).as_secs_f64();
        if json {
            println!(
                "{}",
                serde_json::to_string(&serde_json::json!({"seconds": secs, "stats": now.0}))?
            );
        } else {
            print!(
                "\x1b[H\x1b[2J{}",
                render::stats(plan, &now.0, Some((&previous.0, secs)))
            );
        }
        previous = now;
    }
}

/// Writes `shell`'s completion script for dvnet to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory as _;
    clap_complete::generate(shell, &mut Cli::command(), "dvnet", out);
}

/// `dvnet capture`: into a file, standard output as pcapng, or lines; what it did on stderr.
fn capture(
    plan: &Plan,
    request: &crate::capture::Request,
    write: Option<&std::path::Path>,
) -> Result<(), CliError> {
    use crate::capture::{Sink, Stop};
    let sink = match &write {
        Some(p) if p.as_os_str() == "-" => Sink::Pcapng(Box::new(std::io::stdout().lock())),
        Some(p) => {
            let file = std::fs::File::create(p).map_err(|source| CliError::Io {
                what: format!("creating {}", p.display()),
                source,
            })?;
            Sink::Pcapng(Box::new(std::io::BufWriter::new(file)))
        }
        None => Sink::Text(Box::new(std::io::stdout().lock())),
    };
    let summary = crate::capture::capture(plan, request, sink, |interfaces| {
        let names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
        eprintln!(
            "dvnet: capturing {} of {}{} (Ctrl-C to stop)",
            names.join(", "),
            plan.id,
            write
                .as_ref()
                .filter(|p| p.as_os_str() != "-")
                .map_or_else(String::new, |p| format!(" into {}", p.display()))
        );
    })?;
    let why = match summary.stopped {
        Stop::Count | Stop::Signal => "",
        Stop::ReaderGone => " (the reader went away)",
        Stop::NetworkDown => " (the network went down)",
    };
    eprintln!(
        "dvnet: {} packet{} captured{why}{}",
        summary.captured,
        if summary.captured == 1 { "" } else { "s" },
        if summary.lost > 0 {
            format!("; {} lost: the capture could not keep up", summary.lost)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `dvnet ls`: recorded networks, plus namespaces left by a crashed `up` with no record.
fn ls(json: bool) -> Result<(), CliError> {
    let mut rows = Vec::new();
    for id in State::ids()? {
        match State::load(&id) {
            Ok(s) => rows.push(serde_json::json!({
                "id": id,
                "name": s.plan.name,
                "status": s.status,
                "nodes": s.plan.nodes.len(),
                "links": s.plan.links.len(),
                "datapath": s.plan.datapath,
                "source": s.source,
                "created": s.created,
            })),
            Err(e) => rows.push(
                serde_json::json!({"id": id, "status": "unreadable", "error": e.to_string()}),
            ),
        }
    }
    let recorded: std::collections::BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    // what dvnet's inventory finds of networks with no record: namespaces, containers
    let mut orphans: std::collections::BTreeSet<String> =
        apply::inventory::networks_with_namespaces()
            .into_iter()
            .filter(|id| !recorded.contains(id))
            .collect();
    // containers of a network with no record (a crash, or an `up` killed at the wrong time)
    let containers = async_runtime()?.block_on(async {
        match crate::runtime::docker::Containers::connect().await {
            Ok(docker) => docker.networks().await.unwrap_or_default(),
            Err(_) => std::collections::HashMap::new(),
        }
    });
    for id in containers.into_keys() {
        if !recorded.contains(&id) && crate::plan::naming::is_network_id(&id) {
            orphans.insert(id);
        }
    }
    for id in orphans {
        rows.push(
            serde_json::json!({"id": id, "status": "orphaned", "hint": format!("dvnet down {id}")}),
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no network is up");
        return Ok(());
    }
    let mut t = render::table([
        "network", "name", "status", "nodes", "links", "datapath", "file",
    ]);
    for r in &rows {
        let s = |k: &str| match &r[k] {
            serde_json::Value::String(v) => v.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        t.add_row([
            s("id"),
            s("name"),
            s("status"),
            s("nodes"),
            s("links"),
            s("datapath"),
            s("source"),
        ]);
    }
    println!("{t}");
    Ok(())
}
