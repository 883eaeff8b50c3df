//! Builds port25-bench-ebpf (the floors and the SYN generator, kept out of `port25d`) for the BPF
//! target and leaves its object in OUT_DIR, where `include_bytes_aligned!` embeds it.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root_dir = format!(
        "{}/../port25-bench-ebpf",
        std::env::var("CARGO_MANIFEST_DIR")?
    );
    let ebpf = Package {
        name: "port25-bench-ebpf",
        root_dir: &root_dir,
        ..Default::default()
    };
    // As port25-daemon's build.rs: stable builds core for the BPF target under RUSTC_BOOTSTRAP.
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf([ebpf], Toolchain::Custom("stable"))
}
