//! Builds the XDP program (port25-ebpf) for the BPF target and leaves it in OUT_DIR, where
//! `include_bytes_aligned!` embeds it: `port25d` is one self-contained file.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let ebpf = Package {
        name: "port25-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../port25-ebpf"),
        ..Default::default()
    };
    // The stable toolchain builds core for the BPF target once RUSTC_BOOTSTRAP allows -Z build-std,
    // so the project needs no nightly (see xtask setup).
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf([ebpf], Toolchain::Custom("stable"))
}
