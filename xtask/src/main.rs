//! Developer tasks: `cargo xtask test` runs every check CI runs; `cargo xtask bench` measures
//! dvnet against its performance targets (README.md, "Benchmarks").
use std::process::Command;

use anyhow::{Context as _, bail};

mod bench;
mod dist;
mod fuzz;

const USAGE: &str = "usage: cargo xtask test [-- <cargo test args>]
       cargo xtask bench suite [--quick] [--readme] ...
       cargo xtask bench deploy|datapath|containers|driver|plan|apply|impair|capture|ecmp|machines [--quick] ...
       cargo xtask dist [--deb]
       cargo xtask fuzz [--seconds N]";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench::main(&args[1..]),
        Some("dist") => dist::main(&args[1..]),
        Some("fuzz") => fuzz::main(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Format, lints, then every test. As root, tests that need root must run: skipping one is a
/// failure (`DVNET_REQUIRE_ROOT_TESTS=1`).
fn test(extra: &[String]) -> anyhow::Result<()> {
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "dvnet-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // Tier-3 tests run the `dvnet` binary itself, as a user would: build it first.
    run(
        "cargo build -p dvnet",
        cargo().args(["build", "-p", "dvnet", "--bins"]),
    )?;
    let mut t = cargo();
    t.args(["test", "--workspace", "--exclude", "dvnet-ebpf"]);
    t.args(extra);
    if is_root() {
        t.env("DVNET_REQUIRE_ROOT_TESTS", "1");
    } else {
        eprintln!("xtask: not root: tests that need root will print `skipping` and pass");
    }
    run("cargo test", &mut t)?;
    // the parser, validator and planner under cargo fuzz: a few minutes without a panic
    run(
        "cargo xtask fuzz --seconds 150",
        cargo().args([
            "run",
            "--quiet",
            "-p",
            "xtask",
            "--",
            "fuzz",
            "--seconds",
            "150",
        ]),
    )?;
    // the package: built with cargo-deb and checked unpacked (as a packager would)
    run(
        "cargo xtask dist --deb",
        cargo().args(["run", "--quiet", "-p", "xtask", "--", "dist", "--deb"]),
    )?;
    // `cargo install --path dvnet`, as README.md says, into a directory of its own
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace")?
        .join("target/install-check");
    let _ = std::fs::remove_dir_all(&root);
    run(
        "cargo install --path dvnet",
        cargo()
            .args(["install", "--locked", "--path", "dvnet", "--root"])
            .arg(&root),
    )?;
    let version = Command::new(root.join("bin/dvnet"))
        .arg("--version")
        .output()
        .context("running the installed dvnet")?;
    let said = String::from_utf8_lossy(&version.stdout);
    if !version.status.success() || !said.starts_with("dvnet ") {
        bail!("the installed dvnet --version said {said:?}");
    }
    eprintln!("xtask: cargo install --path dvnet: {}", said.trim());
    let _ = std::fs::remove_dir_all(&root);
    // the benchmarks, small, so that they cannot rot (they need root: namespaces)
    if is_root() {
        for bench in [
            "suite", "apply", "impair", "capture", "driver", "ecmp", "machines",
        ] {
            run(
                &format!("cargo xtask bench {bench} --quick"),
                cargo()
                    .args(["run", "--quiet", "--release", "-p", "xtask", "--", "bench"])
                    .args([bench, "--quick"]),
            )?;
        }
    }
    Ok(())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
