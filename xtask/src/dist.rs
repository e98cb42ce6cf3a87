//! `cargo xtask dist [--deb]`: what a package ships beside the binary, generated from the
//! CLI's own definition (so they never drift from it) into `target/dist/`:
//!
//! - `man/dvnet.1` and a page per command (`dvnet-up.1`, ...), by clap_mangen;
//! - `completions/dvnet.bash`, `_dvnet` (zsh), `dvnet.fish`, by clap_complete (the same
//!   scripts `dvnet completions SHELL` prints);
//! - `dvnet-plugin.service`, the Docker driver's systemd unit (what `dvnet plugin install`
//!   writes, for `/usr/bin/dvnet`).
//!
//! With `--deb`, cargo-deb (installed first when missing) packs them with the release binary
//! into `target/debian/dvnet_<version>_<arch>.deb` (`[package.metadata.deb]` in
//! dvnet/Cargo.toml says where each goes), and checks it unpacked into a fresh directory
//! tree ([`check_deb`]). The unit is shipped, not enabled.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::CommandFactory as _;

/// Where everything goes: under `target/release/`, where cargo-deb looks for what a build
/// made.
fn dist_dir() -> PathBuf {
    target_dir().join("release/dist")
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .join("target")
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Man pages, completions and the unit into `target/release/dist/`; the files written.
///
/// # Errors
/// When a file cannot be written.
pub fn generate() -> anyhow::Result<Vec<PathBuf>> {
    let dir = dist_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let mut written = Vec::new();
    let cmd = dvnet::cli::Cli::command();
    // the command and each subcommand a page (hidden helpers left out)
    let mut pages = vec![(String::from("dvnet"), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("dvnet-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .date(env!("CARGO_PKG_VERSION"))
            .render(&mut out)
            .context("rendering a man page")?;
        let path = dir.join("man").join(format!("{name}.1"));
        write(&path, &out)?;
        written.push(path);
    }
    for (shell, file) in [
        (clap_complete::Shell::Bash, "dvnet.bash"),
        (clap_complete::Shell::Zsh, "_dvnet"),
        (clap_complete::Shell::Fish, "dvnet.fish"),
    ] {
        let mut out = Vec::new();
        dvnet::cli::completions(shell, &mut out);
        let path = dir.join("completions").join(file);
        write(&path, &out)?;
        written.push(path);
    }
    let unit = dvnet::plugin::unit_text(
        Path::new("/usr/bin/dvnet"),
        Path::new(dvnet::plugin::SOCKET),
    );
    let path = dir.join("dvnet-plugin.service");
    write(&path, unit.as_bytes())?;
    written.push(path);
    Ok(written)
}

/// `cargo xtask dist [--deb]`.
///
/// # Errors
/// When generating, building or packing fails.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let deb = match args {
        [] => false,
        [a] if a == "--deb" => true,
        _ => bail!("usage: cargo xtask dist [--deb]"),
    };
    for path in generate()? {
        eprintln!("xtask: wrote {}", path.display());
    }
    if !deb {
        return Ok(());
    }
    let has_deb = super::cargo()
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_deb {
        // no xz: nothing to build beyond Rust
        super::run(
            "cargo install cargo-deb",
            super::cargo().args(["install", "--locked", "--no-default-features", "cargo-deb"]),
        )?;
    }
    // built here: cargo-deb would build every member of the workspace (the eBPF crate is
    // built for its own target by dvnet's build script only)
    super::run(
        "cargo build --release -p dvnet",
        super::cargo().args(["build", "--release", "-p", "dvnet", "--bin", "dvnet"]),
    )?;
    super::run(
        "cargo deb -p dvnet --no-build",
        super::cargo().args(["deb", "-p", "dvnet", "--no-build", "--deb-revision", ""]),
    )?;
    check_deb()
}

/// Unpacks the .deb into a fresh directory tree and checks what a user would: the binary
/// runs and names its commit, every man page is there and renders, the completions load,
/// the unit runs the packaged binary.
///
/// # Errors
/// What is missing or wrong.
pub fn check_deb() -> anyhow::Result<()> {
    let root = target_dir();
    let deb = std::fs::read_dir(root.join("debian"))
        .context("target/debian (cargo xtask dist --deb first)")?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("no .deb in target/debian")?;
    let tree = root.join("dist-check");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    let run = |what: &str, cmd: &mut std::process::Command| -> anyhow::Result<String> {
        let out = cmd.output().with_context(|| format!("running {what}"))?;
        if !out.status.success() {
            bail!(
                "{what}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let info = run(
        "dpkg-deb -I",
        std::process::Command::new("dpkg-deb").arg("-I").arg(&deb),
    )?;
    for want in ["Package: dvnet", "Depends:", "iproute2"] {
        if !info.contains(want) {
            bail!("{}: its control lacks {want:?}:\n{info}", deb.display());
        }
    }
    run(
        "dpkg-deb -x",
        std::process::Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&tree),
    )?;
    let version = run(
        "dvnet --version",
        std::process::Command::new(tree.join("usr/bin/dvnet")).arg("--version"),
    )?;
    let commit = run(
        "git rev-parse",
        std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]),
    )?;
    let expected = format!("dvnet {} ({})", env!("CARGO_PKG_VERSION"), commit.trim());
    if version.trim() != expected {
        bail!("dvnet --version says {version:?}, {expected:?} expected");
    }
    let man = tree.join("usr/share/man/man1");
    for page in ["dvnet.1", "dvnet-up.1", "dvnet-capture.1", "dvnet-impair.1"] {
        // cargo-deb compresses man pages
        let gz = man.join(format!("{page}.gz"));
        let path = if gz.exists() { gz } else { man.join(page) };
        let text = run(
            "man -l",
            std::process::Command::new("man")
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "100")
                .arg("-l")
                .arg(&path),
        )?;
        if !text.contains("dvnet") || text.len() < 200 {
            bail!("{} renders as {text:?}", path.display());
        }
    }
    let bash = tree.join("usr/share/bash-completion/completions/dvnet");
    let complete = run(
        "bash completion",
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("source {}; complete -p dvnet", bash.display())),
    )?;
    if !complete.contains("dvnet") {
        bail!("bash does not complete dvnet: {complete}");
    }
    let zsh = std::fs::read_to_string(tree.join("usr/share/zsh/vendor-completions/_dvnet"))?;
    if !zsh.starts_with("#compdef dvnet") {
        bail!("the zsh completion does not start with #compdef dvnet");
    }
    let fish =
        std::fs::read_to_string(tree.join("usr/share/fish/vendor_completions.d/dvnet.fish"))?;
    if !fish.contains("complete -c dvnet") {
        bail!("the fish completion completes no dvnet");
    }
    let unit = std::fs::read_to_string(tree.join("lib/systemd/system/dvnet-plugin.service"))?;
    if !unit.contains("ExecStart=/usr/bin/dvnet plugin --socket") {
        bail!("the unit does not run the packaged binary:\n{unit}");
    }
    std::fs::remove_dir_all(&tree)?;
    eprintln!(
        "xtask: {}: {}; man pages, bash/zsh/fish completions and the plugin's unit in place",
        deb.display(),
        version.trim()
    );
    Ok(())
}
