//! Builds `dvnet-ebpf` for the BPF target with aya-build and embeds the object (after
//! aya-template). The toolchain is the pinned one (rust-toolchain.toml): its LLVM major
//! must match bpf-linker's. `-Z build-std=core` on a stable toolchain needs RUSTC_BOOTSTRAP.
use std::env;

fn main() -> anyhow::Result<()> {
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
