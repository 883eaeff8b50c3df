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
/// `fresh_syn6`'s (`FRAME6_MIN`): an untagged IPv6 SYN without options or extension headers.
pub(crate) const TEMPLATE6_LEN: usize = 74;

/// Writes `frame` into `object`'s `FLOOD_TEMPLATE`, the SYN `flood_tx` and `fresh_syn` start
/// every run from.
pub(crate) fn set_template(object: &mut Ebpf, frame: &[u8]) -> Result<()> {
    write_template::<TEMPLATE_LEN>(object, "FLOOD_TEMPLATE", frame)
}

/// Writes `frame` into `object`'s `FRESH_TEMPLATE6`, the SYN `fresh_syn6` starts every run from.
pub(crate) fn set_template6(object: &mut Ebpf, frame: &[u8]) -> Result<()> {
    write_template::<TEMPLATE6_LEN>(object, "FRESH_TEMPLATE6", frame)
}

fn write_template<const LEN: usize>(object: &mut Ebpf, map: &str, frame: &[u8]) -> Result<()> {
    let template: [u8; LEN] = frame.try_into().with_context(|| {
        format!(
            "the template SYN for {map} is {} bytes, not {LEN}",
            frame.len()
        )
    })?;
    aya::maps::Array::<_, [u8; LEN]>::try_from(
        object
            .map_mut(map)
            .with_context(|| format!("no map {map} in the bench object"))?,
    )?
    .set(0, template, 0)
    .with_context(|| format!("writing the template SYN into {map}"))
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
