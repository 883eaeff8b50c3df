//! libxdp's dispatcher program, version 2: the host's own object file (Debian's libxdp1 ships it),
//! its configuration (what xdp-tools' lib/libxdp/protocol.org calls `struct
//! xdp_dispatcher_config`), loading it for a set of components, and reading back the
//! configuration of the one an interface runs.

use std::path::PathBuf;

use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    maps::{Array, Map, MapData},
    programs::{ProgramFd, ProgramInfo, Xdp},
};
use aya_obj::btf::BtfKind;

use crate::{Error, bpf_cmd};

/// The dispatcher's slots (`prog0` … `prog9`).
pub const SLOTS: usize = 10;
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
    pub fn of_running(program: &ProgramInfo) -> Result<Self, Error> {
        let program_id = program.id();
        let unsupported = |why: String| Error::Unsupported { program_id, why };
        let ids = program
            .map_ids()
            .map_err(Error::program(format!(
                "reading the maps of program {program_id}"
            )))?
            .unwrap_or_default();
        let [id] = ids[..] else {
            return Err(unsupported(format!(
                "has {} maps, a dispatcher has one",
                ids.len()
            )));
        };
        let map = MapData::from_id(id).map_err(Error::map(format!(
            "opening map {id} of the dispatcher (program {program_id})"
        )))?;
        let array = Array::<MapData, Self>::try_from(Map::Array(map)).map_err(|e| {
            unsupported(format!(
                "has not the configuration of dispatcher version {VERSION} ({e}); only version \
                 {VERSION} is joined"
            ))
        })?;
        let config = array.get(&0, 0).map_err(Error::map(format!(
            "reading the configuration of the dispatcher (program {program_id})"
        )))?;
        if config.magic != MAGIC || config.dispatcher_version != VERSION {
            return Err(unsupported(format!(
                "is dispatcher version {} (magic {}); only version {VERSION} is joined",
                config.dispatcher_version, config.magic
            )));
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
pub(super) fn object_file() -> Result<PathBuf, Error> {
    let looked = object_dirs();
    match looked
        .iter()
        .map(|dir| dir.join(OBJECT_FILE))
        .find(|path| path.is_file())
    {
        Some(path) => Ok(path),
        None => Err(Error::NoDispatcherObject { looked }),
    }
}

/// A dispatcher loaded for `config`, not attached anywhere yet.
pub(super) struct Loaded {
    fd: ProgramFd,
    info: ProgramInfo,
    /// Keeps the program loaded.
    _ebpf: Ebpf,
}

impl Loaded {
    pub(super) fn load(config: &DispatcherConfig) -> Result<Self, Error> {
        let path = object_file()?;
        let object =
            std::fs::read(&path).map_err(Error::io(format!("reading {}", path.display())))?;
        let not_a_dispatcher = |why: String| Error::DispatcherObject {
            path: path.clone(),
            why,
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("conf", config, true)
            .load(&object)
            .map_err(|e| {
                not_a_dispatcher(format!(
                    "is not a dispatcher of version {VERSION} that can be loaded ({e})"
                ))
            })?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| not_a_dispatcher(format!("has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e| not_a_dispatcher(format!("has {PROGRAM} as no XDP program ({e})")))?;
        let refused = || format!("the kernel refused {}", path.display());
        program.load().map_err(Error::program(refused()))?;
        let fd = program
            .fd()
            .map_err(Error::program(refused()))?
            .try_clone()
            .map_err(Error::io("duplicating the new dispatcher's fd"))?;
        let info = program.info().map_err(Error::program(refused()))?;
        Ok(Self {
            fd,
            info,
            _ebpf: ebpf,
        })
    }

    pub(super) fn fd(&self) -> &ProgramFd {
        &self.fd
    }

    pub(super) fn info(&self) -> &ProgramInfo {
        &self.info
    }
}

/// The BTF id of the stub function `slot` ("prog3") of the loaded dispatcher `program`: where an
/// extension program attaches.
pub(super) fn slot_btf_id(program: &ProgramInfo, slot: &str) -> Result<u32, Error> {
    let program_id = program.id();
    let unsupported = |why: String| Error::Unsupported { program_id, why };
    let btf_id = program
        .btf_id()
        .ok_or_else(|| unsupported("has no BTF".to_owned()))?;
    let data = bpf_cmd::btf_data(btf_id).map_err(Error::io(format!(
        "reading the BTF of the dispatcher (program {program_id})"
    )))?;
    let btf = Btf::parse(&data, Endianness::default())
        .map_err(|e| unsupported(format!("has BTF that does not parse ({e})")))?;
    btf.id_by_type_name_kind(slot, BtfKind::Func)
        .map_err(|_| unsupported(format!("has no function {slot} in its BTF")))
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
