//! A lab placed on several machines, driven from one of them (or from anywhere that reaches
//! them): `dvnet up FILE` without `--machine` runs every machine's share at once — this
//! machine's by running dvnet here, the others' over OpenSSH (`"ssh"` on the machine) —
//! gathers what each said, and takes every share down again if one fails. `down`, `stats`
//! and `ls` fan out the same way, and `exec` runs on the node's machine. No daemon: each
//! machine runs the same binary, given the file's text on its standard input.
//!
//! The remote dvnet is this binary's path on the other machine (install it at the same
//! path everywhere); `$DVNET_SSH` replaces `ssh` (with options, split at whitespace: say
//! `ssh -i key -o UserKnownHostsFile=...`). ssh always runs with `BatchMode=yes`: a machine
//! that would ask for a password fails at once, saying so.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

use super::CliError;
use crate::plan::{Datapath, Runtime};
use crate::topology::Topology;

/// One machine's share, and how to reach it.
struct Share<'a> {
    machine: &'a crate::topology::Machine,
    /// Its share's id.
    id: String,
    /// Whether it is this machine (one of its addresses is here): run directly.
    here: bool,
}

/// The shares of `topo`'s machines; every one that is not this machine needs `"ssh"`.
fn shares(topo: &Topology) -> Result<Vec<Share<'_>>, CliError> {
    let local = crate::host::local_addresses();
    let shares: Vec<Share<'_>> = (0..topo.machines.len())
        .map(|m| share(topo, m, &local))
        .collect();
    let unreachable: Vec<&Share<'_>> = shares
        .iter()
        .filter(|s| !s.here && s.machine.ssh.is_none())
        .collect();
    if let Some(first) = unreachable.first() {
        let names: Vec<String> = unreachable
            .iter()
            .map(|s| format!("{:?}", s.machine.name))
            .collect();
        return Err(CliError::Machines(format!(
            "machine(s) {} are not this one and have no \"ssh\" to reach them by: give each an \
             \"ssh\" destination (such as \"root@{}\"), or run the command with --machine NAME \
             on every machine",
            names.join(", "),
            first.machine.address
        )));
    }
    Ok(shares)
}

/// Machine `m`'s share; `local`: this machine's addresses.
fn share<'a>(topo: &'a Topology, m: usize, local: &[Ipv4Addr]) -> Share<'a> {
    let machine = &topo.machines[m];
    Share {
        machine,
        id: topo.machine_id(m),
        here: local.contains(&machine.address),
    }
}

/// `word` quoted for a POSIX shell (ssh hands the remote shell one line).
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// dvnet with `args` on `share`'s machine.
fn command(share: &Share<'_>, args: &[String]) -> Result<Command, CliError> {
    command_for(share, args, false)
}

/// [`command`], with a terminal on the remote side when `tty`.
fn command_for(share: &Share<'_>, args: &[String], tty: bool) -> Result<Command, CliError> {
    let exe = std::env::current_exe().map_err(|source| CliError::Io {
        what: "finding dvnet's own path".into(),
        source,
    })?;
    if share.here {
        let mut c = Command::new(exe);
        c.args(args);
        return Ok(c);
    }
    let ssh = std::env::var("DVNET_SSH").unwrap_or_else(|_| "ssh".into());
    let mut words = ssh.split_whitespace();
    let mut c = Command::new(words.next().unwrap_or("ssh"));
    c.args(words).args(["-o", "BatchMode=yes"]);
    if tty {
        c.arg("-t");
    }
    let destination = share.machine.ssh.as_deref().expect("checked by `shares`");
    let line: Vec<String> = std::iter::once(exe.display().to_string())
        .chain(args.iter().cloned())
        .map(|w| quoted(&w))
        .collect();
    c.arg(destination).arg(line.join(" "));
    Ok(c)
}

/// Runs dvnet on every share at once, `args` given the share, `input` on standard input.
fn run_all(
    shares: &[Share<'_>],
    args: impl Fn(&Share<'_>) -> Vec<String>,
    input: Option<&str>,
) -> Result<Vec<Output>, CliError> {
    let commands = shares
        .iter()
        .map(|s| command(s, &args(s)))
        .collect::<Result<Vec<_>, _>>()?;
    std::thread::scope(|scope| {
        let running: Vec<_> = commands
            .into_iter()
            .zip(shares)
            .map(|(mut c, share)| {
                scope.spawn(move || {
                    c.stdin(if input.is_some() {
                        Stdio::piped()
                    } else {
                        Stdio::null()
                    })
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                    let mut child = c.spawn().map_err(|source| CliError::Io {
                        what: format!("running dvnet for machine {:?}", share.machine.name),
                        source,
                    })?;
                    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
                        // a child that fails early stops reading: its output says why
                        let _ = stdin.write_all(text.as_bytes());
                    }
                    child.wait_with_output().map_err(|source| CliError::Io {
                        what: format!("waiting for dvnet on machine {:?}", share.machine.name),
                        source,
                    })
                })
            })
            .collect();
        running
            .into_iter()
            .map(|h| h.join().expect("a fan-out thread does not panic"))
            .collect()
    })
}

/// What a machine's dvnet said on failure, for an error: its standard error, indented.
fn said(share: &Share<'_>, out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    let err = err.trim();
    let how = if share.here {
        "here".to_owned()
    } else {
        format!("over ssh to {}", share.machine.ssh.as_deref().unwrap_or(""))
    };
    format!(
        "machine {:?} ({how}, {}): {}",
        share.machine.name,
        out.status,
        if err.is_empty() {
            "(nothing said)"
        } else {
            err
        }
    )
    .replace('\n', "\n    ")
}

/// `dvnet up FILE` of a lab placed on several machines: every share at once; if one fails,
/// the others are taken down again.
pub fn up(
    topo: &Topology,
    text: &str,
    datapath: Datapath,
    runtime: Runtime,
) -> Result<(), CliError> {
    let shares = shares(topo)?;
    let (datapath, runtime) = (value(&datapath), value(&runtime));
    let outputs = run_all(
        &shares,
        |s| {
            [
                "up",
                "-",
                "--machine",
                &s.machine.name,
                "--datapath",
                &datapath,
                "--runtime",
                &runtime,
            ]
            .map(str::to_owned)
            .to_vec()
        },
        Some(text),
    )?;
    let failed: Vec<String> = shares
        .iter()
        .zip(&outputs)
        .filter(|(_, o)| !o.status.success())
        .map(|(s, o)| said(s, o))
        .collect();
    if failed.is_empty() {
        for (share, out) in shares.iter().zip(&outputs) {
            let said = String::from_utf8_lossy(&out.stdout);
            let first = said.lines().next().unwrap_or_default();
            println!("{}: {first}", share.machine.name);
        }
        return Ok(());
    }
    // the shares that came up go down again (a failed one rolled itself back)
    let built: Vec<Share<'_>> = shares
        .into_iter()
        .zip(&outputs)
        .filter(|(_, o)| o.status.success())
        .map(|(s, _)| s)
        .collect();
    let downs = run_all(&built, |s| vec!["down".into(), s.id.clone()], None)?;
    let mut problems: Vec<String> = built
        .iter()
        .zip(&downs)
        .filter(|(_, o)| !o.status.success())
        .map(|(s, o)| said(s, o))
        .collect();
    let rolled: Vec<&str> = built.iter().map(|s| s.machine.name.as_str()).collect();
    problems.insert(
        0,
        if rolled.is_empty() {
            "nothing came up anywhere".to_owned()
        } else {
            format!("taken down again on {}", rolled.join(", "))
        },
    );
    Err(CliError::Machines(format!(
        "the lab did not come up on every machine:\n  {}\n({})",
        failed.join("\n  "),
        problems.join("; ")
    )))
}

/// How the command line spells `v`.
fn value(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .expect("no value is skipped")
}

/// `dvnet down FILE` of a lab placed on several machines: every share at once.
pub fn down(topo: &Topology) -> Result<(), CliError> {
    let shares = shares(topo)?;
    let outputs = run_all(&shares, |s| vec!["down".into(), s.id.clone()], None)?;
    let mut failed = Vec::new();
    for (share, out) in shares.iter().zip(&outputs) {
        if out.status.success() {
            print!(
                "{}: {}",
                share.machine.name,
                String::from_utf8_lossy(&out.stdout)
            );
        } else {
            failed.push(said(share, out));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Machines(format!(
            "down failed on some machines:\n  {}",
            failed.join("\n  ")
        )))
    }
}

/// `dvnet stats FILE` of a lab placed on several machines: every machine's counters, in one
/// table (or one JSON document: `{"machines": {"m1": <its stats>, ...}}`).
pub fn stats(topo: &Topology, json: bool) -> Result<(), CliError> {
    let shares = shares(topo)?;
    let machines = gather(&shares, "stats", |s| {
        vec!["stats".into(), s.id.clone(), "--json".into()]
    })?;
    if json {
        print_json(&machines)?;
    } else {
        print!("{}", crate::render::machines_stats(&topo.name, &machines));
    }
    Ok(())
}

/// What `dvnet ARGS --json` says on every share, by machine; an error naming every machine
/// where `what` failed.
fn gather(
    shares: &[Share<'_>],
    what: &str,
    args: impl Fn(&Share<'_>) -> Vec<String>,
) -> Result<serde_json::Map<String, serde_json::Value>, CliError> {
    let outputs = run_all(shares, args, None)?;
    let mut machines = serde_json::Map::new();
    let mut failed = Vec::new();
    for (share, out) in shares.iter().zip(&outputs) {
        match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            Ok(v) if out.status.success() => {
                machines.insert(share.machine.name.clone(), v);
            }
            _ => failed.push(said(share, out)),
        }
    }
    if failed.is_empty() {
        Ok(machines)
    } else {
        Err(CliError::Machines(format!(
            "{what} failed on some machines:\n  {}",
            failed.join("\n  ")
        )))
    }
}

/// `{"machines": {...}}` on standard output.
fn print_json(machines: &serde_json::Map<String, serde_json::Value>) -> Result<(), CliError> {
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "machines": machines }))?
    );
    Ok(())
}

/// `dvnet ls FILE` of a lab placed on several machines: the networks of every machine, in
/// one table (or `{"machines": {"m1": [...], ...}}`).
pub fn ls(topo: &Topology, json: bool) -> Result<(), CliError> {
    let shares = shares(topo)?;
    let machines = gather(&shares, "ls", |_| vec!["ls".into(), "--json".into()])?;
    if json {
        return print_json(&machines);
    }
    let mut t = crate::render::table(["machine", "network", "name", "status", "nodes", "links"]);
    for (machine, rows) in &machines {
        for r in rows.as_array().map_or(&[][..], Vec::as_slice) {
            let s = |k: &str| match &r[k] {
                serde_json::Value::String(v) => v.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            t.add_row([
                machine.clone(),
                s("id"),
                s("name"),
                s("status"),
                s("nodes"),
                s("links"),
            ]);
        }
    }
    println!("{t}");
    Ok(())
}

/// `dvnet exec FILE NODE -- CMD` of a lab placed on several machines: on the node's machine,
/// over SSH unless it is this one (with a terminal when a shell is wanted, or this one has
/// one). Replaces this process: the exit code is the command's.
pub fn exec(topo: &Topology, node: &str, command: &[String]) -> Result<(), CliError> {
    use std::io::IsTerminal as _;
    use std::os::unix::process::CommandExt as _;
    let Some(m) = topo
        .nodes()
        .find(|&n| topo.node_name(n) == node)
        .map(|n| topo.node_machine(n))
    else {
        let names: Vec<&str> = topo.nodes().map(|n| topo.node_name(n)).collect();
        return Err(CliError::Usage(format!(
            "the lab has {}",
            crate::topology::no_such_node(node, &names)
        )));
    };
    let share = share(topo, m, &crate::host::local_addresses());
    if !share.here && share.machine.ssh.is_none() {
        return Err(CliError::Machines(format!(
            "{node} runs on machine {:?}, which is not this one and has no \"ssh\": run `dvnet \
             exec {} {node}` there",
            share.machine.name, share.id
        )));
    }
    let mut args = vec![
        "exec".to_owned(),
        share.id.clone(),
        node.to_owned(),
        "--".to_owned(),
    ];
    args.extend(command.iter().cloned());
    let mut c = command_for(
        &share,
        &args,
        command.is_empty() || std::io::stdin().is_terminal(),
    )?;
    Err(CliError::Io {
        what: format!("running dvnet exec for machine {:?}", share.machine.name),
        source: c.exec(),
    })
}
