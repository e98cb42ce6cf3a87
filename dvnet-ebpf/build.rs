//! Rebuild when bpf-linker changes (after aya-template): the linker is part of the toolchain
//! that produces the object, but cargo cannot see it.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `./setup.sh`"),
    }
}
