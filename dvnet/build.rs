//! Builds `dvnet-ebpf` for the BPF target with aya-build and embeds the object (after
//! aya-template). The toolchain is the pinned one (rust-toolchain.toml): its LLVM major
//! must match bpf-linker's. `-Z build-std=core` on a stable toolchain needs RUSTC_BOOTSTRAP.
use std::env;

/// `git rev-parse --short=12 HEAD` of the repository, if it is one.
fn commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|c| !c.is_empty())
}

fn main() -> anyhow::Result<()> {
    // `dvnet --version` names the commit it was built from (a new commit rebuilds it)
    println!(
        "cargo:rustc-env=DVNET_COMMIT={}",
        commit().unwrap_or_else(|| "commit unknown".to_owned())
    );
    if let Ok(out) = std::process::Command::new("git")
        .args(["rev-parse", "--git-path", "HEAD"])
        .output()
    {
        let head = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !head.is_empty() {
            println!("cargo:rerun-if-changed={head}");
        }
    }
    if let Ok(out) = std::process::Command::new("git")
        .args(["rev-parse", "--symbolic-full-name", "HEAD"])
        .output()
    {
        let reference = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if let Ok(path) = std::process::Command::new("git")
            .args(["rev-parse", "--git-path", &reference])
            .output()
        {
            let path = String::from_utf8_lossy(&path.stdout).trim().to_owned();
            if !reference.is_empty() && !path.is_empty() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    // Tools that build the library with another toolchain (the fuzzer, on nightly) only need
    // its parsing and planning: the programs are not embedded, and loading them would fail.
    println!("cargo:rerun-if-env-changed=DVNET_NO_EBPF");
    if env::var_os("DVNET_NO_EBPF").is_some() {
        let out = std::path::PathBuf::from(env::var("OUT_DIR")?).join("dvnet");
        std::fs::write(&out, b"")?;
        return Ok(());
    }
    // the eBPF programs need bpf-linker: say so plainly rather than deep in aya-build's output
    if std::process::Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        anyhow::bail!(
            "bpf-linker is not on PATH: dvnet's eBPF programs cannot be built. Run ./setup.sh \
             (it builds bpf-linker against LLVM 22 and installs the pinned toolchain), then \
             open a new shell or `. ~/.cargo/env`"
        );
    }
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "1.98.0".to_owned());
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "dvnet-ebpf",
            root_dir: "../dvnet-ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
