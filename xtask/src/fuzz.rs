//! `cargo xtask fuzz [--seconds N]`: cargo fuzz on the parser, validator and planner
//! (`fuzz/fuzz_targets/topology.rs`), with a corpus of every topology file in the repository
//! (fixtures, the invalid corpus, the examples). It installs what it needs on first use — a
//! pinned nightly toolchain (cargo fuzz builds with sanitizers) and cargo-fuzz — and builds
//! the library without its eBPF programs (`DVNET_NO_EBPF`: the fuzzer needs none, and the
//! programs must be built by the pinned stable toolchain). A crash fails the run and its input
//! is copied to dvnet/tests/fixtures/fuzz/, where a unit test replays it from then on.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The nightly cargo fuzz builds with (pinned: a new nightly must not break CI).
const NIGHTLY: &str = "nightly-2026-10-29";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Every `.json` under `dir`, recursively.
fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let seconds: u64 = match args {
        [] => 120,
        [flag, n] if flag == "--seconds" => n.parse().context("--seconds N")?,
        _ => bail!("usage: cargo xtask fuzz [--seconds N]"),
    };
    let root = root();
    let has_nightly = std::process::Command::new("rustup")
        .args(["run", NIGHTLY, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nightly {
        super::run(
            &format!("rustup toolchain install {NIGHTLY}"),
            std::process::Command::new("rustup").args([
                "toolchain",
                "install",
                NIGHTLY,
                "--profile",
                "minimal",
            ]),
        )?;
    }
    let has_fuzz = super::cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        super::run(
            "cargo install cargo-fuzz",
            super::cargo().args(["install", "--locked", "cargo-fuzz"]),
        )?;
    }
    // the corpus: every topology of the repository
    let corpus = root.join("target/fuzz-corpus/topology");
    let _ = std::fs::remove_dir_all(&corpus);
    std::fs::create_dir_all(&corpus)?;
    let mut files = Vec::new();
    for dir in ["dvnet/tests/fixtures", "examples"] {
        json_files(&root.join(dir), &mut files);
    }
    for (i, f) in files.iter().enumerate() {
        std::fs::copy(f, corpus.join(format!("seed-{i}.json")))
            .with_context(|| format!("copying {}", f.display()))?;
    }
    let artifacts = root.join("target/fuzz-artifacts/");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts)?;
    eprintln!(
        "xtask: fuzzing parse + validate + plan for {seconds} s from {} seed files",
        files.len()
    );
    let out = std::process::Command::new("rustup")
        .current_dir(root.join("fuzz"))
        .env("DVNET_NO_EBPF", "1")
        .args(["run", NIGHTLY, "cargo", "fuzz", "run", "topology"])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-max_len=16384")
        .arg(format!("-artifact_prefix={}", artifacts.display()))
        .arg("-print_final_stats=1")
        .output()
        .context("running cargo fuzz")?;
    let said = String::from_utf8_lossy(&out.stderr);
    // libFuzzer's last words: executions, speed, coverage
    for line in said.lines().filter(|l| {
        l.starts_with('#') && l.contains("DONE")
            || l.starts_with("stat::number_of_executed_units")
            || l.starts_with("stat::average_exec_per_sec")
            || l.starts_with("stat::new_units_added")
    }) {
        eprintln!("xtask: fuzz: {line}");
    }
    if out.status.success() {
        return Ok(());
    }
    // a crash: keep its input as a fixture
    let kept = root.join("dvnet/tests/fixtures/fuzz");
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&artifacts) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let to = kept.join(format!("{name}.json"));
            std::fs::copy(e.path(), &to)?;
            found.push(to.display().to_string());
        }
    }
    let tail: Vec<&str> = said.lines().rev().take(40).collect();
    bail!(
        "the fuzzer failed ({}); inputs kept: {}\n{}",
        out.status,
        if found.is_empty() {
            "none".to_owned()
        } else {
            found.join(", ")
        },
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}
