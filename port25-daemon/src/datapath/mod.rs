//! The kernel side as the daemon sees it: load the embedded programs, attach them, and keep their
//! maps in step with the policy.
//!
//! Everything lives on the BPF filesystem (see [`crate::pins`]), so the filter outlives the daemon:
//! a killed daemon leaves the last policy enforcing, and the next start adopts the maps (counters
//! keep counting) and swaps its program into the pinned links. Policy updates are generational
//! (`policy.rs`); attaching and releasing is in `links/`.
#![allow(
    unreachable_pub,
    reason = "public to the tests and the bench through `testing`"
)]

mod counters;
mod egress;
mod links;
mod lists;
mod policy;
mod settings;
mod shadow;
mod sources;
#[cfg(feature = "testing")]
mod test_run;

use std::{collections::BTreeMap, sync::Arc};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, LpmTrie, Map, MapData, ProgramArray},
    programs::{Extension, ProgramError, SchedClassifier, Xdp},
};
use port25_common::{
    BlockKey, COMPONENT_PROGRAM_NAME, Counter, PROGRAM_NAME, Reason, SYNACK_WATCHER_PROGRAM_NAME,
    SYNPROXY_PROGRAM_NAME, V4Key, V6Key, Verdict, maps,
};

pub use self::counters::Counters;
pub use self::egress::{EgressCounters, EgressCounts};
use self::links::HeldLink;
pub use self::links::{
    Attachment, LIBXDP_RUN_PRIO, LostHook, ifname, in_dispatchers, leave_dispatchers,
    pinned_link_ids, wait_links_gone,
};
pub(crate) use self::settings::settings_of;
pub use self::shadow::{DifferingRow, Effect, Modes, ShadowTables, side_label};
pub use self::sources::{
    BucketState, Buckets, SourceTables, TrackedSource, monotonic_ns, tokens, top,
};
use self::sources::{SourceMap, VerifiedMap};
use crate::{
    model::{OnExit, XdpMode},
    pins::PinDir,
};
pub use bpf_plumbing::Occupant;
#[cfg(feature = "testing")]
pub use bpf_plumbing::libxdp::{DispatcherConfig, SlotConfig};

/// The programs built by build.rs from port25-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/port25"));

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the XDP program into the kernel failed (is this root, on a kernel with BTF?)")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the kernel refused the XDP program")]
    Program(#[source] Box<ProgramError>),
    #[error(
        "the XDP object has no map or program {0}: the daemon and its embedded program do not match"
    )]
    MissingMap(&'static str),
    #[error("BPF map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("BPF filesystem")]
    Pin(#[source] anyhow::Error),
    #[error("cannot tell how many CPUs the per-CPU counters have")]
    Cpus(#[source] std::io::Error),
    #[error("cannot open cgroup {} for the egress guard", path.display())]
    Cgroup {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the kernel refused to attach the egress guard to cgroup {}; if another program holds its \
         connect hooks in exclusive mode (`bpftool cgroup show {}` lists them), detach it or set \
         egress.cgroup to another cgroup",
        path.display(),
        path.display()
    )]
    CgroupAttach {
        path: std::path::PathBuf,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("no interface named {0:?} here; `ip link` lists the interfaces")]
    UnknownInterface(String),
    #[error(
        "{iface}: cannot switch XDP mode: port25's own {old_mode} link pinned at {} could not be \
         detached ({source}); run `port25d detach` first, or keep xdp_mode = \"{old_mode}\"",
        path.display()
    )]
    ModeSwitch {
        iface: String,
        old_mode: XdpMode,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{iface}: the kernel refused XDP in {mode} mode ({source}); {hint}")]
    Attach {
        iface: String,
        mode: XdpMode,
        hint: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("{iface}: another XDP program holds the interface: {occupant}. {}", occupied_hint(iface, port25d.as_deref()))]
    Occupied {
        iface: String,
        occupant: Occupant,
        /// The other port25d whose filter it is, when it is one.
        port25d: Option<Box<crate::pins::Owner>>,
    },
    #[error("{iface}: cannot join libxdp's dispatcher (xdp_coexist = \"libxdp\"): {reason}{hint}")]
    Dispatcher {
        iface: String,
        reason: bpf_plumbing::Error,
        /// What to change in port25's config, when the reason says.
        hint: String,
    },
}

/// What to do about an interface another program holds: another port25d is named (one
/// interface has one port25d), anything else is not replaced.
fn occupied_hint(iface: &str, port25d: Option<&crate::pins::Owner>) -> String {
    match port25d {
        Some(owner) => format!(
            "It is the filter of {owner}, with pins of its own: one interface has one port25d. \
             Stop that one (`port25d detach{}`), or leave {iface} out of `interfaces`",
            owner
                .control_socket
                .as_ref()
                .map(|s| format!(" --control-socket {}", s.display()))
                .unwrap_or_default()
        ),
        None => format!(
            "port25 does not replace it. Unload it (`xdp-loader status {iface}` lists libxdp's \
             programs, `xdp-loader unload {iface} --all` removes them; `ip link set dev {iface} \
             xdp off` removes one attached with ip), leave {iface} out of `interfaces`, or, for a \
             libxdp dispatcher, set xdp_coexist = \"libxdp\" to run beside its programs"
        ),
    }
}

impl Error {
    fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
        move |source| Error::Map {
            map,
            source: Box::new(source),
        }
    }

    fn program(source: ProgramError) -> Error {
        Error::Program(Box::new(source))
    }
}

/// A /16's block of /24 nibbles, as `BLOCKS_V4` holds it.
type Block = [u64; port25_common::prefilter::BLOCK_WORDS];

/// Summed-over-CPUs counts, keyed by (ifindex, verdict, reason).
pub type Totals = BTreeMap<(u32, Verdict, Reason), Counter>;

pub struct Datapath {
    ebpf: Ebpf,
    pins: PinDir,
    counters: Arc<Counters>,
    sources: Arc<SourceTables>,
    /// The live policy generation (the value in `ACTIVE`).
    generation: u32,
    /// The list entries of the live generation, when known (not after adopting maps that a killed
    /// daemon left: then the first update sweeps by generation instead).
    live: Option<policy::LiveLists>,
    attachments: Vec<Attachment>,
    links: Vec<HeldLink>,
    /// The egress guard's connect hooks, when attached.
    hooks: Option<egress::Hooks>,
    /// Whether the maps were a previous daemon's (a killed one's filter was taken over).
    adopted: bool,
    /// A shadow policy judged beside the live one, when loaded.
    shadow: Option<shadow::Shadow>,
    shadow_tables: Arc<ShadowTables>,
}

impl Datapath {
    /// Loads the programs into the kernel (not attached yet) with maps private to this datapath,
    /// removed when it goes: for tests, the bench and one-off use. Kernel-side logging is off.
    #[cfg(feature = "testing")]
    pub fn load_private(tracked_sources: u32) -> Result<Self, Error> {
        let pins = PinDir::ephemeral().map_err(Error::Pin)?;
        Self::load(tracked_sources, 0, pins)
    }

    /// Loads the programs with their maps pinned in `pins`, adopting maps an earlier daemon of this
    /// layout left there: the daemon's way. `log_level` is the most verbose level the kernel side
    /// should emit (aya-log numbering: 0 off … 5 trace); quieter levels are filtered in the kernel,
    /// so debug logging costs nothing when off. `tracked_sources` sizes the rate limiter's tables,
    /// fixed per load.
    pub fn load(tracked_sources: u32, log_level: u8, pins: PinDir) -> Result<Self, Error> {
        raise_memlock_limit();
        for foreign in pins.foreign_map_dirs() {
            tracing::warn!(
                "{} holds maps of another port25 map layout (from an older or newer port25d); they \
                 are not adopted: this daemon starts with fresh maps (counters restart at zero) and \
                 removes them once it has taken over the interfaces",
                foreign.display()
            );
        }
        let adopted = pins.map(maps::ACTIVE).exists();
        if adopted {
            for name in [maps::SOURCES, maps::VERIFIED] {
                resize_if_needed(&pins, name, tracked_sources);
            }
            tracing::info!(
                "adopting the maps pinned in {} (policy, counters, buckets)",
                pins.maps().display()
            );
        }
        let loaded = Self::load_pinned(&pins, tracked_sources, log_level);
        if loaded.is_err() && !adopted {
            // The maps aya pinned for this start belong to no filter.
            for problem in PinDir::existing(&pins.maps()).remove_all() {
                tracing::warn!("{problem}");
            }
        }
        let mut datapath = loaded?(pins, adopted);
        datapath.generation = datapath
            .array::<u32>(maps::ACTIVE)?
            .get(&0, 0)
            .map_err(Error::map(maps::ACTIVE))?;
        if !adopted {
            datapath.live = Some(policy::LiveLists::default());
        }
        Ok(datapath)
    }

    /// Loads the object with its maps pinned in `pins` (adopting those there): the datapath,
    /// once given its pin directory and whether its maps were adopted.
    fn load_pinned(
        pins: &PinDir,
        tracked_sources: u32,
        log_level: u8,
    ) -> Result<impl FnOnce(PinDir, bool) -> Self + use<>, Error> {
        let maps_dir = pins.maps();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .map_max_entries(maps::SOURCES, tracked_sources)
            .map_max_entries(maps::VERIFIED, tracked_sources)
            .load(OBJECT)
            .map_err(|e| Error::Load(Box::new(e)))?;
        xdp_mut(&mut ebpf)?.load().map_err(Error::program)?;
        load_synproxy(&mut ebpf)?;
        synack_watcher_mut(&mut ebpf)?
            .load()
            .map_err(Error::program)?;
        let counters = Counters::take(&mut ebpf)?;
        let sources = take_map(&mut ebpf, maps::SOURCES)?;
        let sources = SourceMap::try_from(sources).map_err(Error::map(maps::SOURCES))?;
        let verified = take_map(&mut ebpf, maps::VERIFIED)?;
        let verified = VerifiedMap::try_from(verified).map_err(Error::map(maps::VERIFIED))?;
        let global = take_map(&mut ebpf, maps::GLOBAL)?;
        let global = Array::try_from(global).map_err(Error::map(maps::GLOBAL))?;
        let shadow_tables =
            ShadowTables::open_pinned(pins).map_err(Error::map(maps::SHADOW_COUNTERS))?;
        // Second descriptors of the shadow's buckets: the datapath empties them through its own.
        let pinned = |name: &'static str| {
            MapData::from_pin(pins.map(name))
                .and_then(Map::from_map_data)
                .map_err(Error::map(name))
        };
        let shadow = SourceMap::try_from(pinned(maps::SHADOW_BUCKETS)?)
            .map_err(Error::map(maps::SHADOW_BUCKETS))?;
        let shadow_global = Array::try_from(pinned(maps::SHADOW_GLOBAL)?)
            .map_err(Error::map(maps::SHADOW_GLOBAL))?;
        Ok(move |pins, adopted| Self {
            ebpf,
            pins,
            counters: Arc::new(counters),
            sources: Arc::new(SourceTables {
                sources,
                verified,
                global,
                shadow,
                shadow_global,
            }),
            generation: 0,
            live: None,
            attachments: Vec::new(),
            links: Vec::new(),
            hooks: None,
            adopted,
            shadow: None,
            shadow_tables: Arc::new(shadow_tables),
        })
    }

    /// The aya object, for the log forwarder.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    pub fn shadow_tables(&self) -> Arc<ShadowTables> {
        Arc::clone(&self.shadow_tables)
    }

    pub fn source_tables(&self) -> Arc<SourceTables> {
        Arc::clone(&self.sources)
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Whether the maps were a previous daemon's, adopted at load.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Removes the map directories of other layout versions (after taking over the interfaces,
    /// their programs are no longer attached anywhere).
    pub fn remove_foreign_maps(&self) {
        for dir in self.pins.foreign_map_dirs() {
            let problems = PinDir::existing(&dir).remove_all();
            if problems.is_empty() {
                tracing::info!("removed the maps of another layout in {}", dir.display());
            }
            for problem in problems {
                tracing::warn!("{problem}");
            }
        }
    }

    /// Ends the datapath: with [`OnExit::Detach`] the programs are detached and every pin goes;
    /// with [`OnExit::Keep`] they stay, enforcing, for the next start to adopt.
    pub fn release(mut self, on_exit: OnExit) {
        match on_exit {
            OnExit::Keep => {
                // The filter goes on enforcing the live policy; a shadow goes with the daemon
                // (§ Shadow policy: a restart drops it).
                if let Err(err) = self.drop_shadow() {
                    tracing::warn!("removing the shadow policy: {err:#}");
                }
                for attachment in &self.attachments {
                    tracing::info!(
                        "left the filter attached to {} (on_exit = keep); `port25d detach` removes it",
                        attachment.iface
                    );
                }
                if let Some(hooks) = &self.hooks {
                    tracing::info!(
                        "left the egress guard attached to cgroup {} (on_exit = keep); `port25d \
                         detach` removes it",
                        crate::config::cgroup_display(&hooks.cgroup)
                    );
                }
            }
            OnExit::Detach => {
                self.detach_everything();
                for problem in self.pins.remove_all() {
                    tracing::warn!("{problem}");
                }
            }
        }
    }

    /// Undoes a start that failed: the kernel is left as this daemon found it. Maps it made go
    /// with what it attached; a previous daemon's filter it was taking over (adopted maps) stays
    /// attached and enforcing, and maps of another layout stay for the next start.
    pub fn abandon(mut self) {
        if self.adopted {
            tracing::warn!(
                "the filter pinned in {} (a previous daemon's) stays attached and enforcing",
                self.pins.root().display()
            );
            return;
        }
        self.detach_everything();
        for problem in self.pins.remove_own() {
            tracing::warn!("{problem}");
        }
    }

    /// Detaches every program this datapath attached: dispatchers left, links and hooks released.
    fn detach_everything(&mut self) {
        let ids = links::pinned_link_ids(&self.pins);
        self.leave_dispatchers_attached();
        for link in self.links.drain(..) {
            link.release();
        }
        if let Some(hooks) = self.release_hooks() {
            tracing::info!(
                "egress guard detached from cgroup {}",
                crate::config::cgroup_display(&hooks.cgroup)
            );
            hooks.release();
        }
        if !links::wait_links_gone(&ids, std::time::Duration::from_secs(2)) {
            tracing::warn!("a link is still held by another process (`bpftool link` shows which)");
        }
        for attachment in &self.attachments {
            if attachment.watches_synacks && !attachment.synack_watcher_pinned {
                links::remove_tc_filter(&attachment.iface);
            }
            tracing::info!("detached from {}", attachment.iface);
        }
    }

    /// Gives the interface's packets a counter bucket of their own when one is free (cheaper per
    /// packet than the spill hash); counting works either way, so a failure only warns. Returns
    /// whether the interface counts in its bucket.
    pub fn count_in_bucket(&mut self, ifindex: u32, iface: &str) -> bool {
        match counters::claim_bucket(&self.pins, ifindex) {
            Ok(true) => true,
            Ok(false) => {
                tracing::info!(
                    "{iface}: its counter bucket belongs to another interface; it counts in {}",
                    maps::COUNTERS_SPILL
                );
                false
            }
            Err(err) => {
                tracing::warn!(
                    "{iface}: cannot claim a counter bucket ({err:#}); it counts in {}",
                    maps::COUNTERS_SPILL
                );
                false
            }
        }
    }

    /// Counts summed over CPUs.
    pub fn totals(&self) -> Result<Totals, Error> {
        self.counters.read()
    }

    fn array<V: aya::Pod>(&mut self, name: &'static str) -> Result<Array<&mut MapData, V>, Error> {
        let map = self.ebpf.map_mut(name).ok_or(Error::MissingMap(name))?;
        Array::try_from(map).map_err(Error::map(name))
    }

    fn blocks_v4(&mut self) -> Result<aya::maps::HashMap<&mut MapData, BlockKey, Block>, Error> {
        let name = maps::BLOCKS_V4;
        let map = self.ebpf.map_mut(name).ok_or(Error::MissingMap(name))?;
        aya::maps::HashMap::try_from(map).map_err(Error::map(name))
    }

    fn trie_v4(&mut self, name: &'static str) -> Result<LpmTrie<&mut MapData, V4Key, u32>, Error> {
        let map = self.ebpf.map_mut(name).ok_or(Error::MissingMap(name))?;
        LpmTrie::try_from(map).map_err(Error::map(name))
    }

    fn trie_v6(&mut self, name: &'static str) -> Result<LpmTrie<&mut MapData, V6Key, u32>, Error> {
        let map = self.ebpf.map_mut(name).ok_or(Error::MissingMap(name))?;
        LpmTrie::try_from(map).map_err(Error::map(name))
    }
}

/// The rate limiter's tables are sized at creation; a pinned one of another size is dropped so the
/// new load makes one of the configured size (bucket state restarts, nothing else is lost).
fn resize_if_needed(pins: &PinDir, name: &str, wanted: u32) {
    let path = pins.map(name);
    let Ok(size) = MapData::from_pin(&path)
        .and_then(|m| m.info())
        .map(|i| i.max_entries())
    else {
        return;
    };
    if size != wanted {
        tracing::info!(
            "ratelimit.tracked_sources changed ({size} -> {wanted}): starting a new source table"
        );
        if let Err(err) = std::fs::remove_file(&path) {
            tracing::warn!("removing {}: {err}", path.display());
        }
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, Error> {
    ebpf.take_map(name).ok_or(Error::MissingMap(name))
}

fn synack_watcher_mut(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    ebpf.program_mut(SYNACK_WATCHER_PROGRAM_NAME)
        .ok_or(Error::MissingMap(SYNACK_WATCHER_PROGRAM_NAME))?
        .try_into()
        .map_err(Error::program)
}

/// The filter as an extension program, for a libxdp dispatcher's slot.
fn component_mut(ebpf: &mut Ebpf) -> Result<&mut Extension, Error> {
    ebpf.program_mut(COMPONENT_PROGRAM_NAME)
        .ok_or(Error::MissingMap(COMPONENT_PROGRAM_NAME))?
        .try_into()
        .map_err(Error::program)
}

/// Loads the program that answers SYNs with a cookie (policy synproxy) and puts it in the slot the
/// filter tail-calls (docs/ARCHITECTURE.md, § SYN cookies). Loaded under every policy: the slot
/// is pinned, so a reload to synproxy needs no new program.
fn load_synproxy(ebpf: &mut Ebpf) -> Result<(), Error> {
    let program: &mut Xdp = ebpf
        .program_mut(SYNPROXY_PROGRAM_NAME)
        .ok_or(Error::MissingMap(SYNPROXY_PROGRAM_NAME))?
        .try_into()
        .map_err(Error::program)?;
    program.load().map_err(Error::program)?;
    let fd = program
        .fd()
        .map_err(Error::program)?
        .try_clone()
        .map_err(|e| Error::program(ProgramError::from(e)))?;
    let map = ebpf
        .map_mut(maps::SYNPROXY_PROGRAM)
        .ok_or(Error::MissingMap(maps::SYNPROXY_PROGRAM))?;
    let mut slot = ProgramArray::try_from(map).map_err(Error::map(maps::SYNPROXY_PROGRAM))?;
    slot.set(0, &fd, 0)
        .map_err(Error::map(maps::SYNPROXY_PROGRAM))
}

fn xdp_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(Error::MissingMap(PROGRAM_NAME))?
        .try_into()
        .map_err(Error::program)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so old kernels load too.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct; failure only matters on old kernels.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if ret != 0 {
        tracing::debug!("setrlimit(RLIMIT_MEMLOCK) failed; fine on kernels >= 5.11");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every port25d ships: the XDP filter (also as a libxdp dispatcher's component), the TC
    /// SYN-ACK watcher and the egress guard's two connect hooks, and nothing else (the bench's
    /// floors and SYN generator live in port25-bench-ebpf).
    #[test]
    fn the_embedded_object_holds_only_the_production_programs() {
        let object = aya_obj::Object::parse(OBJECT).expect("the embedded object parses");
        let mut programs: Vec<&str> = object.programs.keys().map(String::as_str).collect();
        programs.sort_unstable();
        let mut production = vec![
            PROGRAM_NAME,
            SYNACK_WATCHER_PROGRAM_NAME,
            port25_common::COMPONENT_PROGRAM_NAME,
            port25_common::SYNPROXY_PROGRAM_NAME,
            port25_common::egress::CONNECT4_PROGRAM,
            port25_common::egress::CONNECT6_PROGRAM,
        ];
        production.sort_unstable();
        assert_eq!(programs, production);
    }
}
