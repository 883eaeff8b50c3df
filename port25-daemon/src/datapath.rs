//! The kernel side as the daemon sees it: load the embedded XDP object, attach it, and keep its maps
//! in step with the policy.
//!
//! Policy updates are generational: a new generation's settings, ports and list entries are written
//! beside the live ones, then one write to `ACTIVE` switches every CPU over, and only then is the old
//! generation removed. A packet reads `ACTIVE` once, so it sees the old policy or the new, never a mix.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, LpmTrie, MapData, PerCpuHashMap, lpm_trie::Key},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions, Xdp, XdpMode, tc,
    },
};
use ipnet::{Ipv4Net, Ipv6Net};
use port25_common::{
    Counter, CounterKey, EGRESS_PROGRAM_NAME, GENERATION_BITS, PORT_WORDS, PROGRAM_NAME, Reason,
    SLOTS, Settings, V4Key, V6Key, Verdict, maps, policy,
};

use crate::{
    config::{CidrSet, Config, Mode, PolicyKind, XdpModeSetting},
    pins,
    sources::SourceMap,
};

/// The XDP object built by build.rs from port25-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/port25"));

/// How long packets already in flight may keep reading the generation being retired. XDP programs
/// run to completion in microseconds; this leaves a wide margin before their entries are removed.
const RETIRE_GRACE: Duration = Duration::from_millis(20);

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
    #[error("no interface named {0:?} here; `ip link` lists the interfaces")]
    UnknownInterface(String),
    #[error("{iface}: the kernel refused XDP in {mode} mode ({source}); {hint}")]
    Attach {
        iface: String,
        mode: &'static str,
        hint: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
}

/// Where the program is attached, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    /// "native" or "skb".
    pub mode: &'static str,
    /// Whether the TC egress program watches the gateway's SYN-ACKs here (handshake verification).
    pub watches_egress: bool,
}

/// The counters map, shared with the metrics collector, which reads it at scrape time.
pub type CounterMap = PerCpuHashMap<MapData, CounterKey, Counter>;

/// Summed-over-CPUs counts, keyed by (ifindex, verdict, reason).
pub type Totals = BTreeMap<(u32, Verdict, Reason), Counter>;

pub struct Datapath {
    ebpf: Ebpf,
    counters: Arc<CounterMap>,
    sources: Arc<SourceMap>,
    /// Pinned paths to remove when the datapath goes.
    pins: Vec<PathBuf>,
    generation: u32,
    /// The lists written for the live generation, needed to remove them when it retires.
    live_lists: Option<(CidrSet, CidrSet)>,
    attachments: Vec<Attachment>,
}

impl Datapath {
    /// Loads the embedded program into the kernel (not attached yet), sized for `config` (the
    /// number of tracked rate-limit sources is fixed until the next start). `log_level` is the most
    /// verbose level the kernel side should emit (aya-log numbering: 0 off … 5 trace); quieter
    /// levels are filtered in the kernel, so debug logging costs nothing when off.
    pub fn load(config: &Config, log_level: u8) -> Result<Self, Error> {
        Self::load_pinned(config, log_level, None)
    }

    /// Like [`Datapath::load`], and pins the rate limiter's source table under `pin_dir` for
    /// `port25d top` (a stale pin of an earlier run is replaced; the pin goes when this does).
    pub fn load_pinned(
        config: &Config,
        log_level: u8,
        pin_dir: Option<&Path>,
    ) -> Result<Self, Error> {
        raise_memlock_limit();
        let mut ebpf = EbpfLoader::new()
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .map_max_entries(maps::SOURCES, config.ratelimit.tracked_sources)
            .load(OBJECT)
            .map_err(|e| Error::Load(Box::new(e)))?;
        let program = xdp_mut(&mut ebpf)?;
        program.load().map_err(|e| Error::Program(Box::new(e)))?;
        egress_mut(&mut ebpf)?
            .load()
            .map_err(|e| Error::Program(Box::new(e)))?;
        let counters = ebpf
            .take_map(maps::COUNTERS)
            .ok_or(Error::MissingMap(maps::COUNTERS))?;
        let counters = CounterMap::try_from(counters).map_err(|source| Error::Map {
            map: maps::COUNTERS,
            source: Box::new(source),
        })?;
        let sources = ebpf
            .take_map(maps::SOURCES)
            .ok_or(Error::MissingMap(maps::SOURCES))?;
        let mut pins = Vec::new();
        if let Some(dir) = pin_dir {
            let path = pins::sources_path(dir);
            pins::prepare(dir).map_err(Error::Pin)?;
            if path.exists() {
                tracing::warn!("replacing stale pin {}", path.display());
                std::fs::remove_file(&path).map_err(|e| Error::Pin(e.into()))?;
            }
            sources
                .pin(&path)
                .map_err(|e| Error::Pin(anyhow::anyhow!("pinning {}: {e}", path.display())))?;
            pins.push(path);
        }
        let sources = SourceMap::try_from(sources).map_err(|source| Error::Map {
            map: maps::SOURCES,
            source: Box::new(source),
        })?;
        Ok(Self {
            ebpf,
            counters: Arc::new(counters),
            sources: Arc::new(sources),
            pins,
            generation: 0,
            live_lists: None,
            attachments: Vec::new(),
        })
    }

    /// The aya object, for the log forwarder.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn counter_map(&self) -> Arc<CounterMap> {
        Arc::clone(&self.counters)
    }

    pub fn source_map(&self) -> Arc<SourceMap> {
        Arc::clone(&self.sources)
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Attaches to `iface`. `auto` tries native (driver) XDP and falls back to generic (skb) XDP.
    pub fn attach(&mut self, iface: &str, mode: XdpModeSetting) -> Result<&Attachment, Error> {
        let ifindex = ifindex(iface).ok_or_else(|| Error::UnknownInterface(iface.to_owned()))?;
        let program = xdp_mut(&mut self.ebpf)?;
        let mode_used = match mode {
            XdpModeSetting::Native => attach_mode(program, iface, ifindex, XdpMode::Driver)?,
            XdpModeSetting::Skb => attach_mode(program, iface, ifindex, XdpMode::Skb)?,
            XdpModeSetting::Auto => match attach_mode(program, iface, ifindex, XdpMode::Driver) {
                Ok(mode) => mode,
                Err(err) => {
                    tracing::warn!("{err:#}; falling back to skb (generic) XDP");
                    attach_mode(program, iface, ifindex, XdpMode::Skb)?
                }
            },
        };
        let watches_egress = match self.attach_egress(iface) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(
                    "{iface}: cannot watch egress SYN-ACKs ({err:#}); handshake verification is off \
                     there, so every new connection from it counts against the global cap"
                );
                false
            }
        };
        self.attachments.push(Attachment {
            iface: iface.to_owned(),
            ifindex,
            mode: mode_used,
            watches_egress,
        });
        Ok(&self.attachments[self.attachments.len() - 1])
    }

    /// Attaches the egress watcher (TCX on kernels >= 6.6, else a clsact qdisc filter).
    fn attach_egress(&mut self, iface: &str) -> Result<(), Error> {
        // Older kernels need the clsact qdisc; it may exist already, which is fine.
        let _ = tc::qdisc_add_clsact(iface);
        egress_mut(&mut self.ebpf)?
            .attach(iface, TcAttachType::Egress)
            .map_err(|e| Error::Program(Box::new(e)))?;
        Ok(())
    }

    /// Makes `config`'s policy live, atomically. On error the previous policy stays live and
    /// whatever was written for the new generation is removed again.
    pub fn apply(&mut self, config: &Config) -> Result<(), Error> {
        let next = self.generation.wrapping_add(1).max(1);
        if let Err(err) = self.write_generation(next, config) {
            // Leave no half-built generation behind (it is invisible, but it takes capacity).
            self.remove_lists(next, &config.allow, &config.deny);
            return Err(err);
        }
        self.array_u32(maps::ACTIVE)?
            .set(0, next, 0)
            .map_err(|source| Error::Map {
                map: maps::ACTIVE,
                source: Box::new(source),
            })?;
        let retired = self.generation;
        self.generation = next;
        if let Some((allow, deny)) = self
            .live_lists
            .replace((config.allow.clone(), config.deny.clone()))
        {
            std::thread::sleep(RETIRE_GRACE);
            self.remove_lists(retired, &allow, &deny);
        }
        Ok(())
    }

    fn write_generation(&mut self, generation: u32, config: &Config) -> Result<(), Error> {
        let slot = generation % SLOTS;
        let limits = &config.ratelimit;
        let (syn_interval_ns, syn_tolerance_ns) = Settings::gcra(limits.syn_rate, limits.syn_burst);
        let (global_interval_ns, global_tolerance_ns) =
            Settings::gcra(limits.global_syn_rate, limits.global_syn_burst);
        let settings = Settings {
            monitor: u32::from(config.mode == Mode::Monitor),
            policy: match config.policy {
                PolicyKind::Drop => policy::DROP,
                PolicyKind::Ratelimit => policy::RATELIMIT,
            },
            ipv4_prefix: u32::from(limits.ipv4_prefix),
            ipv6_prefix: u32::from(limits.ipv6_prefix),
            syn_interval_ns,
            syn_tolerance_ns,
            global_interval_ns,
            global_tolerance_ns,
            verified_ttl_ns: u64::from(limits.verified_ttl) * 1_000_000_000,
        };
        let mut settings_map: Array<_, Settings> = self.array(maps::SETTINGS)?;
        settings_map
            .set(slot, settings, 0)
            .map_err(|source| Error::Map {
                map: maps::SETTINGS,
                source: Box::new(source),
            })?;

        let mut words = vec![0u32; PORT_WORDS as usize];
        for &port in &config.ports {
            words[usize::from(port / 32)] |= 1 << (port % 32);
        }
        let mut ports = self.array_u32(maps::PORTS)?;
        for (i, word) in (0u32..).zip(words) {
            ports
                .set(slot * PORT_WORDS + i, word, 0)
                .map_err(|source| Error::Map {
                    map: maps::PORTS,
                    source: Box::new(source),
                })?;
        }

        for (name, set) in [
            (maps::ALLOW_V4, &config.allow),
            (maps::DENY_V4, &config.deny),
        ] {
            let mut trie = self.trie_v4(name)?;
            for net in &set.v4 {
                trie.insert(&v4_key(generation, net), 1, 0)
                    .map_err(|source| Error::Map {
                        map: name,
                        source: Box::new(source),
                    })?;
            }
        }
        for (name, set) in [
            (maps::ALLOW_V6, &config.allow),
            (maps::DENY_V6, &config.deny),
        ] {
            let mut trie = self.trie_v6(name)?;
            for net in &set.v6 {
                trie.insert(&v6_key(generation, net), 1, 0)
                    .map_err(|source| Error::Map {
                        map: name,
                        source: Box::new(source),
                    })?;
            }
        }
        Ok(())
    }

    /// Best effort: an entry that is already gone is fine.
    fn remove_lists(&mut self, generation: u32, allow: &CidrSet, deny: &CidrSet) {
        for (name, set) in [(maps::ALLOW_V4, allow), (maps::DENY_V4, deny)] {
            if let Ok(mut trie) = self.trie_v4(name) {
                for net in &set.v4 {
                    let _ = trie.remove(&v4_key(generation, net));
                }
            }
        }
        for (name, set) in [(maps::ALLOW_V6, allow), (maps::DENY_V6, deny)] {
            if let Ok(mut trie) = self.trie_v6(name) {
                for net in &set.v6 {
                    let _ = trie.remove(&v6_key(generation, net));
                }
            }
        }
    }

    /// Runs the loaded program on one frame through BPF_PROG_TEST_RUN; returns the XDP action.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, Error> {
        self.test_run_repeat(frame, 1)
    }

    /// Runs the program `repeat` times on the frame, on the calling thread's CPU; returns the last
    /// XDP action.
    pub fn test_run_repeat(&self, frame: &[u8], repeat: u32) -> Result<u32, Error> {
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(Error::MissingMap(PROGRAM_NAME))?
            .try_into()
            .map_err(|e| Error::Program(Box::new(e)))?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|e| Error::Program(Box::new(e)))?;
        Ok(result.return_value)
    }

    /// Runs the egress (TC) program on one outgoing frame; returns the TC action.
    pub fn test_run_egress(&self, frame: &[u8]) -> Result<u32, Error> {
        let program: &SchedClassifier = self
            .ebpf
            .program(EGRESS_PROGRAM_NAME)
            .ok_or(Error::MissingMap(EGRESS_PROGRAM_NAME))?
            .try_into()
            .map_err(|e| Error::Program(Box::new(e)))?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .map_err(|e| Error::Program(Box::new(e)))?;
        Ok(result.return_value)
    }

    /// Counts summed over CPUs.
    pub fn totals(&self) -> Result<Totals, Error> {
        read_totals(&self.counters)
    }

    fn array<V: aya::Pod>(&mut self, name: &'static str) -> Result<Array<&mut MapData, V>, Error> {
        let map = self.ebpf.map_mut(name).ok_or(Error::MissingMap(name))?;
        Array::try_from(map).map_err(|source| Error::Map {
            map: name,
            source: Box::new(source),
        })
    }

    fn array_u32(&mut self, name: &'static str) -> Result<Array<&mut MapData, u32>, Error> {
        self.array(name)
    }

    fn trie_v4(&mut self, name: &'static str) -> Result<LpmTrie<&mut MapData, V4Key, u32>, Error> {
        let map = self.ebpf.map_mut(name).ok_or(Error::MissingMap(name))?;
        LpmTrie::try_from(map).map_err(|source| Error::Map {
            map: name,
            source: Box::new(source),
        })
    }

    fn trie_v6(&mut self, name: &'static str) -> Result<LpmTrie<&mut MapData, V6Key, u32>, Error> {
        let map = self.ebpf.map_mut(name).ok_or(Error::MissingMap(name))?;
        LpmTrie::try_from(map).map_err(|source| Error::Map {
            map: name,
            source: Box::new(source),
        })
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        for path in &self.pins {
            if let Err(err) = std::fs::remove_file(path) {
                tracing::warn!("removing pin {}: {err}", path.display());
            }
        }
    }
}

/// Reads the counters map and sums each entry over CPUs.
pub fn read_totals(counters: &CounterMap) -> Result<Totals, Error> {
    let mut totals = Totals::new();
    for entry in counters.iter() {
        let (key, per_cpu) = entry.map_err(|source| Error::Map {
            map: maps::COUNTERS,
            source: Box::new(source),
        })?;
        let Some((verdict, reason)) = port25_common::slot_meaning(key.slot) else {
            continue;
        };
        let sum = per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        });
        totals.insert((key.ifindex, verdict, reason), sum);
    }
    Ok(totals)
}

fn egress_mut(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    ebpf.program_mut(EGRESS_PROGRAM_NAME)
        .ok_or(Error::MissingMap(EGRESS_PROGRAM_NAME))?
        .try_into()
        .map_err(|e| Error::Program(Box::new(e)))
}

fn xdp_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(Error::MissingMap(PROGRAM_NAME))?
        .try_into()
        .map_err(|e| Error::Program(Box::new(e)))
}

fn attach_mode(
    program: &mut Xdp,
    iface: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<&'static str, Error> {
    let (name, hint) = match mode {
        XdpMode::Skb => (
            "skb",
            "generic XDP should work on any interface: check that no other XDP program is attached (`ip link show`)",
        ),
        _ => (
            "native",
            "the driver may lack XDP support: try --xdp-mode skb (or auto, which falls back to it)",
        ),
    };
    program
        .attach_to_if_index(ifindex, mode)
        .map_err(|source| Error::Attach {
            iface: iface.to_owned(),
            mode: name,
            hint,
            source: Box::new(source),
        })?;
    Ok(name)
}

fn v4_key(generation: u32, net: &Ipv4Net) -> Key<V4Key> {
    let addr: Ipv4Addr = net.network();
    Key::new(
        GENERATION_BITS + u32::from(net.prefix_len()),
        V4Key {
            generation,
            addr: addr.octets(),
        },
    )
}

fn v6_key(generation: u32, net: &Ipv6Net) -> Key<V6Key> {
    let addr: Ipv6Addr = net.network();
    Key::new(
        GENERATION_BITS + u32::from(net.prefix_len()),
        V6Key {
            generation,
            addr: addr.octets(),
        },
    )
}

/// The interface index of `name` in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The name of interface `index`, if it exists.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes, as if_indextoname requires.
    let ptr = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
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
