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

/// The SYN `flood_tx` and `fresh_syn` write afresh at every run (the bench object's
/// `FRAME_MIN`): an untagged IPv4 SYN without options, 54 bytes.
pub(crate) const TEMPLATE_LEN: usize = 54;

/// Writes `frame` into `object`'s `FLOOD_TEMPLATE`, the SYN `flood_tx` and `fresh_syn` start
/// every run from.
pub(crate) fn set_template(object: &mut Ebpf, frame: &[u8]) -> Result<()> {
    let template: [u8; TEMPLATE_LEN] = frame.try_into().with_context(|| {
        format!(
            "the template SYN is {} bytes, not {TEMPLATE_LEN}",
            frame.len()
        )
    })?;
    aya::maps::Array::<_, [u8; TEMPLATE_LEN]>::try_from(
        object
            .map_mut("FLOOD_TEMPLATE")
            .context("no map FLOOD_TEMPLATE in the bench object")?,
    )?
    .set(0, template, 0)
    .context("writing the template SYN into FLOOD_TEMPLATE")
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
