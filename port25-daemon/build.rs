//! Builds the package's eBPF crate for the BPF target and leaves its object in OUT_DIR, where
//! `include_bytes_aligned!` embeds it. port25-daemon embeds port25-ebpf, so `port25d` is one
//! self-contained file; port25-bench (whose Cargo.toml points its `build` here) embeds
//! port25-bench-ebpf, the floors and the SYN generator kept out of `port25d`.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let package = std::env::var("CARGO_PKG_NAME")?;
    let name = match package.as_str() {
        "port25-daemon" => "port25-ebpf",
        "port25-bench" => "port25-bench-ebpf",
        other => anyhow::bail!("no eBPF crate is known for package {other}"),
    };
    let root_dir = format!("{}/../{name}", std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf = Package {
        name,
        root_dir: &root_dir,
        ..Default::default()
    };
    // The stable toolchain builds core for the BPF target once RUSTC_BOOTSTRAP allows -Z build-std,
    // so the project needs no nightly (see xtask setup).
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf([ebpf], Toolchain::Custom("stable"))
}
