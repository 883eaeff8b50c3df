//! libxdp's dispatcher program, version 2: the host's own object file (Debian's libxdp1 ships it),
//! its configuration (what xdp-tools' lib/libxdp/protocol.org calls `struct
//! xdp_dispatcher_config`), loading it for a set of components, and reading back the
//! configuration of the one an interface runs.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    maps::{Array, Map, MapData},
    programs::{ProgramFd, ProgramInfo, Xdp},
};
use aya_obj::btf::BtfKind;

use super::super::bpf_cmd;

/// The dispatcher's slots (`prog0` … `prog9`).
pub(crate) const SLOTS: usize = 10;
const MAGIC: u8 = 236;
const VERSION: u8 = 2;
/// The stubs' return value: always a chain-call action, so that an empty slot passes on.
const STUB_RETVAL: u32 = 31;
/// The program's name, in the object and in the kernel.
pub(crate) const PROGRAM: &str = "xdp_dispatcher";
const OBJECT_FILE: &str = "xdp-dispatcher.o";

/// `struct xdp_dispatcher_config` of dispatcher version 2, as it sits in the program's `.rodata`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatcherConfig {
    magic: u8,
    dispatcher_version: u8,
    num_progs_enabled: u8,
    is_xdp_frags: u8,
    chain_call_actions: [u32; SLOTS],
    run_prios: [u32; SLOTS],
    program_flags: [u32; SLOTS],
}

// SAFETY: plain integers, no padding (4 bytes then 30 u32s), any bit pattern valid.
unsafe impl aya::Pod for DispatcherConfig {}

/// What the dispatcher keeps of one component: when it runs and which of its verdicts go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotConfig {
    pub run_prio: u32,
    /// Bit n set: verdict n (XDP_PASS = 2, …) goes on to the next component.
    pub chain_call_actions: u32,
    pub program_flags: u32,
}

impl DispatcherConfig {
    /// The configuration for `slots`, in run order (at most [`SLOTS`]).
    pub fn new(slots: &[SlotConfig]) -> Self {
        let mut config = Self {
            magic: MAGIC,
            dispatcher_version: VERSION,
            num_progs_enabled: u8::try_from(slots.len().min(SLOTS)).unwrap_or(0),
            ..Self::default()
        };
        for (i, slot) in slots.iter().take(SLOTS).enumerate() {
            config.chain_call_actions[i] = slot.chain_call_actions | 1 << STUB_RETVAL;
            config.run_prios[i] = slot.run_prio;
            config.program_flags[i] = slot.program_flags;
        }
        config
    }

    /// The components' configurations, slot by slot.
    pub fn slots(&self) -> Vec<SlotConfig> {
        (0..usize::from(self.num_progs_enabled).min(SLOTS))
            .map(|i| SlotConfig {
                run_prio: self.run_prios[i],
                chain_call_actions: self.chain_call_actions[i] & !(1 << STUB_RETVAL),
                program_flags: self.program_flags[i],
            })
            .collect()
    }

    /// Reads the configuration of the running dispatcher `program` from its one map (the frozen
    /// `.rodata`); refuses any other layout or version than 2, which libxdp's protocol asks
    /// every implementation to do.
    pub fn of_running(program: &ProgramInfo) -> anyhow::Result<Self> {
        let ids = program
            .map_ids()
            .context("reading its maps")?
            .unwrap_or_default();
        let [id] = ids[..] else {
            bail!("it has {} maps, a dispatcher has one", ids.len());
        };
        let map = MapData::from_id(id).with_context(|| format!("opening its map {id}"))?;
        let array = Array::<MapData, Self>::try_from(Map::Array(map)).map_err(|e| {
            anyhow!(
                "its configuration is not that of dispatcher version {VERSION} ({e}); port25 \
                 joins only version {VERSION}"
            )
        })?;
        let config = array.get(&0, 0).context("reading its configuration")?;
        if config.magic != MAGIC || config.dispatcher_version != VERSION {
            bail!(
                "it is dispatcher version {} (magic {}); port25 joins only version {VERSION}",
                config.dispatcher_version,
                config.magic
            );
        }
        Ok(config)
    }
}

/// Where libxdp looks for its BPF objects: `LIBXDP_OBJECT_PATH`, then its install directories.
fn object_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LIBXDP_OBJECT_PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    let multiarch = format!("/usr/lib/{}-linux-gnu/bpf", std::env::consts::ARCH);
    dirs.extend([multiarch.as_str(), "/usr/lib/bpf", "/usr/local/lib/bpf"].map(PathBuf::from));
    dirs
}

/// The host's `xdp-dispatcher.o`: the one xdp-loader uses, so that both speak one version.
pub fn object_file() -> anyhow::Result<PathBuf> {
    let dirs = object_dirs();
    dirs.iter()
        .map(|dir| dir.join(OBJECT_FILE))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            anyhow!(
                "libxdp's {OBJECT_FILE} is in none of {}: install libxdp (Debian: `apt install \
                 libxdp1`) or name its directory in LIBXDP_OBJECT_PATH",
                looked.join(", ")
            )
        })
}

/// A dispatcher loaded for `config`, not attached anywhere yet.
pub struct Loaded {
    ebpf: Ebpf,
}

impl Loaded {
    pub fn load(config: &DispatcherConfig) -> anyhow::Result<Self> {
        let path = object_file()?;
        let object = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut ebpf = EbpfLoader::new()
            .override_global("conf", config, true)
            .load(&object)
            .map_err(|e| {
                anyhow!(
                    "{} is not a dispatcher of version {VERSION} port25 can load ({e})",
                    path.display()
                )
            })?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| anyhow!("{} has no program {PROGRAM}", path.display()))?
            .try_into()
            .with_context(|| format!("{PROGRAM} in {}", path.display()))?;
        program
            .load()
            .with_context(|| format!("the kernel refused {}", path.display()))?;
        Ok(Self { ebpf })
    }

    fn program(&self) -> anyhow::Result<&Xdp> {
        self.ebpf
            .program(PROGRAM)
            .ok_or_else(|| anyhow!("no program {PROGRAM}"))?
            .try_into()
            .context(PROGRAM)
    }

    pub fn fd(&self) -> anyhow::Result<&ProgramFd> {
        self.program()?.fd().context(PROGRAM)
    }

    pub fn info(&self) -> anyhow::Result<ProgramInfo> {
        self.program()?.info().context(PROGRAM)
    }
}

/// The BTF id of the stub function `slot` ("prog3") of the loaded dispatcher `program`: where an
/// extension program attaches.
pub fn slot_btf_id(program: &ProgramInfo, slot: &str) -> anyhow::Result<u32> {
    let btf_id = program.btf_id().context("the dispatcher has no BTF")?;
    let data = bpf_cmd::btf_data(btf_id).context("reading its BTF")?;
    let btf = Btf::parse(&data, Endianness::default()).context("its BTF")?;
    btf.id_by_type_name_kind(slot, BtfKind::Func)
        .with_context(|| format!("its BTF has no function {slot}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_has_libxdp_s_layout_and_reads_back_what_was_written() {
        // libxdp 1.3's struct: 4 bytes, then three arrays of 10 u32s.
        assert_eq!(size_of::<DispatcherConfig>(), 124);
        let slots = [
            SlotConfig {
                run_prio: 10,
                chain_call_actions: 1 << 2,
                program_flags: 0,
            },
            SlotConfig {
                run_prio: 50,
                chain_call_actions: (1 << 2) | (1 << 1),
                program_flags: 1 << 5,
            },
        ];
        let config = DispatcherConfig::new(&slots);
        assert_eq!((config.magic, config.dispatcher_version), (236, 2));
        assert_eq!(config.num_progs_enabled, 2);
        // The stubs' return value always chains on, so an empty slot passes.
        assert_eq!(config.chain_call_actions[0], (1 << 2) | (1 << 31));
        assert_eq!(config.slots(), slots);
        assert!(DispatcherConfig::new(&[]).slots().is_empty());
    }
}
