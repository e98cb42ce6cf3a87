//! Naming a network on the command line: by its id, its topology file, or its name — never
//! by a path to anything else.

use super::CliError;
use crate::plan::{Plan, PlanOptions};
use crate::state::State;
use crate::topology::Topology;

/// The id of the network a command-line argument names: a network id (`test-net-0`), a
/// topology file, or the network's name as its file writes it (`"Test Net 0"`). Nothing
/// else: an argument is never used as a path to anything but a topology file to read.
/// With `machine`, the id of that machine's share of a lab placed on several
/// ([`crate::topology::machine_network_id`]).
pub fn network_id(arg: &str, machine: Option<&str>) -> Result<String, CliError> {
    use crate::plan::naming::is_network_id;
    let path = std::path::Path::new(arg);
    let is_file = std::fs::metadata(path).is_ok_and(|m| m.is_file());
    if is_network_id(arg) && !is_file {
        return share_id(arg.to_owned(), machine);
    }
    if is_file {
        // Only the name is needed: a file that has become invalid since `up` still works.
        let text = crate::topology::read_text(path)?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            CliError::Usage(format!(
                "{arg} is not JSON ({e}); give the network's id instead"
            ))
        })?;
        let name = field(&value, "name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "{arg} has no \"name\"; give the network's id instead"
                ))
            })?;
        let id = crate::topology::network_id(name)
            .ok_or_else(|| CliError::Usage(format!("{arg}: the name {name:?} has no usable id")))?;
        let machines = machines_of(&value);
        let id = match (machine, machines.as_slice()) {
            (None, [one]) => share_id(id, Some(one))?,
            (None, [_, _, ..]) => {
                let names: Vec<String> = machines.iter().map(|m| format!("{m:?}")).collect();
                return Err(CliError::Usage(format!(
                    "{arg} places the lab on machines {}; say whose share with --machine NAME",
                    names.join(", ")
                )));
            }
            _ => share_id(id, machine)?,
        };
        same_network(&id, name)?;
        return Ok(id);
    }
    if std::fs::symlink_metadata(path).is_ok() || arg.contains('/') {
        return Err(CliError::Usage(format!(
            "{arg:?} is neither a network id nor a topology file; give the network's id \
             (`dvnet ls` lists them) or its topology file"
        )));
    }
    let id = crate::topology::network_id(arg).ok_or_else(|| {
        CliError::Usage(format!(
            "{arg:?} is neither a network nor a topology file; `dvnet ls` lists the networks"
        ))
    })?;
    let id = share_id(id, machine)?;
    same_network(&id, arg)?;
    Ok(id)
}

/// A top-level field of a topology file, its key in any case (as the format reads them).
fn field<'v>(value: &'v serde_json::Value, key: &str) -> Option<&'v serde_json::Value> {
    value
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// The names of the machines a topology file places its lab on (none without `"machines"`).
fn machines_of(value: &serde_json::Value) -> Vec<&String> {
    field(value, "machines")
        .and_then(serde_json::Value::as_object)
        .map(|m| m.keys().collect())
        .unwrap_or_default()
}

/// The topology of a lab placed on several machines that `arg` (a file) describes, when no
/// `--machine` picks one share: the command then runs on every machine. Only such a file is
/// validated whole; any other is read no further than its `"machines"`.
pub fn placed(arg: &str, machine: Option<&str>) -> Option<Topology> {
    let path = std::path::Path::new(arg);
    if machine.is_some() || !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let text = crate::topology::read_text(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    if machines_of(&value).len() < 2 {
        return None;
    }
    Topology::from_json(&text, arg)
        .ok()
        .filter(|t| t.machines.len() > 1)
}

/// `id`, or with `machine` the id of that machine's share.
fn share_id(id: String, machine: Option<&str>) -> Result<String, CliError> {
    let Some(machine) = machine else {
        return Ok(id);
    };
    crate::topology::machine_network_id(&id, machine).ok_or_else(|| {
        CliError::Usage(format!(
            "--machine {machine:?} is not a machine name (at most {} letters, digits and \"-\")",
            crate::topology::MACHINE_ID_MAX
        ))
    })
}

/// The record of the running network a topology file describes, and the file planned as an
/// edit of it (same datapath and runtime, identities kept).
pub fn edit_of(file: &std::path::Path) -> Result<(State, Plan), CliError> {
    let topo = Topology::from_file(file)?;
    let record = match State::load(&topo.id) {
        Ok(record) => record,
        Err(crate::state::StateError::NotFound { id }) => {
            return Err(CliError::Usage(format!(
                "network {id} is not up; `dvnet up {}` builds it",
                file.display()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    same_network(&topo.id, &topo.name)?;
    let options = PlanOptions {
        datapath: record.plan.datapath,
        runtime: record.plan.runtime,
    };
    let plan = Plan::build_from(&topo, options, Some(&record.plan))?;
    Ok((record, plan))
}

/// The eBPF map writes between two plans of one network.
pub fn map_changes(
    old: &Plan,
    new: &Plan,
) -> Result<crate::datapath::entries::EntriesDiff, CliError> {
    use crate::datapath::entries;
    let changes = crate::plan::diff::diff(Some(old), Some(new));
    let (before, after) = crate::apply::touched_entries(old, new, &changes)?;
    Ok(entries::diff(old, &before, new, &after))
}

/// Refuses a name that gives the id of a network with another name (`"lab x"` and `"LAB_X"`
/// both give `lab-x`): acting on one must never touch the other.
fn same_network(id: &str, name: &str) -> Result<(), CliError> {
    if let Ok(record) = State::load(id)
        && record.plan.name != name
    {
        return Err(CliError::Usage(format!(
            "network {id} is named {:?}, not {name:?} (the two names give the same id); name \
             it by its id, `{id}`, if that is the network you mean",
            record.plan.name
        )));
    }
    Ok(())
}

/// The record of the network a topology file names, read ahead (no lock; see
/// [`crate::state::Stamp`]), or nothing.
pub fn preload(file: &std::path::Path) -> Option<(State, crate::state::Stamp)> {
    /// The name alone: the rest of the file is skipped, not built (keys of any case are
    /// accepted by the format; the common spellings are enough here).
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(alias = "Name", alias = "NAME")]
        name: String,
    }
    let text = crate::topology::read_text(file).ok()?;
    let named: Named = serde_json::from_str(&text).ok()?;
    let id = crate::topology::network_id(&named.name)?;
    State::load_stamped(&id).ok()
}
