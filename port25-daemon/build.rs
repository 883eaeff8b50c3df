//! Builds port25-ebpf for the BPF target and leaves its object in OUT_DIR, where
//! `include_bytes_aligned!` embeds it, so that `port25d` is one self-contained file. (port25-bench
//! has a build.rs of its own for port25-bench-ebpf.)
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root_dir = format!("{}/../port25-ebpf", std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf = Package {
        name: "port25-ebpf",
        root_dir: &root_dir,
        ..Default::default()
    };
    // The stable toolchain builds core for the BPF target once RUSTC_BOOTSTRAP allows -Z build-std,
    // so the project needs no nightly (see xtask setup).
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf([ebpf], Toolchain::Custom("stable"))
}
