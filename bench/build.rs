//! Builds the bench's own XDP programs (port25-bench-ebpf: bare floors, the SYN generator) for the
//! BPF target and leaves them in OUT_DIR, where the bench embeds them. They are kept out of the
//! object port25d embeds.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let ebpf = Package {
        name: "port25-bench-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../port25-bench-ebpf"),
        ..Default::default()
    };
    // As in port25-daemon's build.rs: stable builds core for the BPF target with RUSTC_BOOTSTRAP.
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf([ebpf], Toolchain::Custom("stable"))
}
