//! The bench's own XDP programs (port25-bench-ebpf, built by bench/build.rs): `floor_pass` and
//! `floor_drop`, the bare floor every filter is compared with, `floor_flood`, the least a filter
//! can do under the flood, `flood_tx`, the SYN generator, and `flood_relay`, which stands in for
//! it where the kernel refuses live frames.

use anyhow::{Context, Result};
use aya::{Ebpf, programs::Xdp};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/port25-bench"));

/// The bench object, loaded with its maps (`floor_flood`'s drops, the generators' template and
/// relay); its programs are loaded by [`xdp`].
pub(crate) fn object() -> Result<Ebpf> {
    Ebpf::load(OBJECT).context("loading the bench's XDP object (port25-bench-ebpf)")
}

/// The XDP program `name` of `object`, loaded into the kernel.
pub(crate) fn xdp<'a>(object: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let program: &mut Xdp = object
        .program_mut(name)
        .with_context(|| format!("no program {name} in the bench's object"))?
        .try_into()?;
    program.load().with_context(|| format!("loading {name}"))?;
    Ok(program)
}
