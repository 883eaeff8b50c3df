//! Joining a libxdp dispatcher (`xdp_coexist = "libxdp"`): port25's filter as one component of
//! the multi-program dispatcher that xdp-loader and xdp-filter build, by libxdp's own protocol
//! (xdp-tools, lib/libxdp/protocol.org), so that either side adds and removes its programs
//! without removing the other's. docs/ARCHITECTURE.md, § Beside other XDP programs.
//!
//! Every change builds a new dispatcher holding the new set of components (the ones already
//! there re-attached from their pins), pins it where libxdp expects it, and swaps it in for the
//! old one with one netlink replace: the interface is never without a filter. All of it under
//! the flock on libxdp's bpffs directory, which xdp-loader takes too.

mod dispatcher;

use std::{
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use aya::programs::{Extension, ProgramFd, ProgramInfo};
use port25_common::COMPONENT_PROGRAM_NAME;

pub use self::dispatcher::{DispatcherConfig, SlotConfig};
use super::{
    bpf_cmd,
    occupant::{Occupant, loaded_program, swap_xdp, xdp_occupant},
};
use crate::model::{XdpMode, XdpModeSetting};

/// port25's run priority: ahead of libxdp's default (50) and of xdp-filter's, so that a flood on
/// port 25 is dropped before anything else spends time on it.
pub const RUN_PRIO: u32 = 10;
/// The verdict after which the next component runs: port25 passes what it does not drop on.
const XDP_PASS: u32 = 2;
/// How often a swap that raced with another tool's is started over.
const ATTEMPTS: usize = 5;

/// Why port25 cannot be where it was asked to be in a dispatcher.
#[derive(Debug)]
pub enum Refusal {
    /// A program that is not libxdp's dispatcher holds the interface.
    Occupied(Occupant),
    /// The rest: what went wrong, for the operator (shown with `{:#}`: each step and its cause).
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Refusal {
    fn from(reason: anyhow::Error) -> Self {
        Refusal::Failed(reason)
    }
}

/// Whether a program (by its kernel name, cut at 15 bytes) is port25's component.
fn is_port25(name: &str) -> bool {
    !name.is_empty()
        && COMPONENT_PROGRAM_NAME
            .as_bytes()
            .starts_with(name.as_bytes())
}

/// libxdp's directory on the BPF filesystem: `$LIBXDP_BPFFS/xdp`, by default /sys/fs/bpf/xdp.
fn state_dir() -> PathBuf {
    std::env::var_os("LIBXDP_BPFFS")
        .map_or_else(|| PathBuf::from("/sys/fs/bpf"), PathBuf::from)
        .join("xdp")
}

/// The flock on libxdp's directory: while held, no libxdp user changes the pins.
struct Lock {
    dir: PathBuf,
    _file: File,
}

impl Lock {
    fn take() -> anyhow::Result<Self> {
        let dir = state_dir();
        let bpffs = dir.parent().unwrap_or(Path::new("/"));
        if !crate::pins::is_bpffs(bpffs) {
            bail!(
                "{} is not a BPF filesystem: libxdp keeps its dispatchers' pins there (`mount -t \
                 bpf bpf {}`)",
                bpffs.display(),
                bpffs.display()
            );
        }
        if let Err(err) = std::fs::create_dir(&dir)
            && err.kind() != std::io::ErrorKind::AlreadyExists
        {
            bail!("making {}: {err}", dir.display());
        }
        let file = File::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
        // SAFETY: flock on an fd this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let err = std::io::Error::last_os_error();
            bail!("locking {}: {err}", dir.display());
        }
        Ok(Self { dir, _file: file })
    }

    /// Where the components of dispatcher `program_id` on `ifindex` are pinned.
    fn dispatcher_dir(&self, ifindex: u32, program_id: u32) -> PathBuf {
        self.dir.join(format!("dispatch-{ifindex}-{program_id}"))
    }
}

/// A program in a dispatcher's slot, as its pin gives it.
struct Component {
    name: String,
    id: u32,
    fd: ProgramFd,
    slot: SlotConfig,
}

/// The dispatcher an interface runs, with its components.
struct Running {
    fd: ProgramFd,
    mode: XdpMode,
    dir: PathBuf,
    components: Vec<Component>,
}

/// What the interface runs: nothing, or a dispatcher; another program is a refusal.
fn running(lock: &Lock, ifindex: u32) -> Result<Option<Running>, Refusal> {
    let occupant = xdp_occupant(ifindex).context("asking the kernel")?;
    let Some(occupant) = occupant else {
        return Ok(None);
    };
    if !occupant.is_libxdp_dispatcher() {
        return Err(Refusal::Occupied(occupant));
    }
    let mode = XdpMode::named(occupant.mode).ok_or_else(|| {
        anyhow!(
            "its dispatcher runs in {} mode; port25 joins one in native or skb mode",
            occupant.mode
        )
    })?;
    let info = loaded_program(occupant.program_id)
        .ok_or_else(|| anyhow!("program {} is gone", occupant.program_id))?;
    let config = DispatcherConfig::of_running(&info)
        .with_context(|| format!("the dispatcher (program {})", occupant.program_id))?;
    let dir = lock.dispatcher_dir(ifindex, occupant.program_id);
    let mut components = Vec::new();
    for (i, slot) in config.slots().into_iter().enumerate() {
        let pin = dir.join(format!("prog{i}-prog"));
        let info = ProgramInfo::from_pin(&pin).with_context(|| {
            format!(
                "{} (the dispatcher's components are not pinned where libxdp pins them)",
                pin.display()
            )
        })?;
        components.push(Component {
            name: info.name_as_str().unwrap_or_default().to_owned(),
            id: info.id(),
            fd: info.fd().with_context(|| pin.display().to_string())?,
            slot,
        });
    }
    Ok(Some(Running {
        fd: info.fd().context("the dispatcher")?,
        mode,
        dir,
        components,
    }))
}

/// How port25 went in.
#[derive(Debug)]
pub struct Joined {
    pub mode: XdpMode,
    /// Whether a port25 component was there already (a previous daemon's) and was replaced.
    pub replaced: bool,
    /// The other components, by name, in run order.
    pub beside: Vec<String>,
}

/// Puts `ours` into the dispatcher on `ifindex` (making one if the interface runs none), in
/// place of any port25 component already there. `ours` is loaded against the new dispatcher
/// the first time.
pub fn join(ifindex: u32, wanted: XdpModeSetting, ours: &mut Extension) -> Result<Joined, Refusal> {
    retry(|| {
        let lock = Lock::take()?;
        let running = running(&lock, ifindex)?;
        let mode = match (&running, wanted) {
            (Some(running), XdpModeSetting::Auto) => running.mode,
            (Some(running), wanted) if running.mode.fits(wanted) => running.mode,
            (Some(running), wanted) => {
                return Err(Attempt::Final(Refusal::Failed(anyhow!(
                    "its dispatcher runs in {} mode and xdp_mode = \"{wanted}\": one interface has \
                     one mode; set xdp_mode = \"{}\" or \"auto\"",
                    running.mode,
                    running.mode
                ))));
            }
            (None, XdpModeSetting::Skb) => XdpMode::Skb,
            (None, _) => XdpMode::Native,
        };
        let others: Vec<&Component> = running
            .as_ref()
            .map(|r| {
                r.components
                    .iter()
                    .filter(|c| !is_port25(&c.name))
                    .collect()
            })
            .unwrap_or_default();
        let replaced = running
            .as_ref()
            .is_some_and(|r| r.components.iter().any(|c| is_port25(&c.name)));
        let mut plan: Vec<Planned> = others.iter().map(|c| Planned::Theirs(c)).collect();
        plan.push(Planned::Ours(ours));
        sort(&mut plan);
        let beside = plan
            .iter()
            .filter_map(|p| match p {
                Planned::Theirs(c) => Some(c.name.clone()),
                Planned::Ours(_) => None,
            })
            .collect();
        let swapped = swap(&lock, ifindex, running.as_ref(), plan, mode);
        match (swapped, running.is_none(), wanted) {
            // `auto` on an interface without native XDP: skb, as in exclusive mode.
            (Err(Attempt::ModeRefused(err)), true, XdpModeSetting::Auto) => {
                tracing::warn!("{err:#}; falling back to skb (generic) XDP");
                let plan = vec![Planned::Ours(ours)];
                swap(&lock, ifindex, None, plan, XdpMode::Skb)?;
                Ok(Joined {
                    mode: XdpMode::Skb,
                    replaced,
                    beside,
                })
            }
            (swapped, ..) => swapped.map(|()| Joined {
                mode,
                replaced,
                beside,
            }),
        }
    })
}

/// Takes every port25 component out of the dispatcher on `ifindex`; the dispatcher goes with
/// the last component. Nothing to do is fine.
pub fn leave(ifindex: u32) -> Result<(), Refusal> {
    retry(|| {
        let lock = Lock::take()?;
        let Some(running) = running(&lock, ifindex)? else {
            return Ok(());
        };
        if !running.components.iter().any(|c| is_port25(&c.name)) {
            return Ok(());
        }
        let plan: Vec<Planned> = running
            .components
            .iter()
            .filter(|c| !is_port25(&c.name))
            .map(Planned::Theirs)
            .collect();
        swap(&lock, ifindex, Some(&running), plan, running.mode)
    })
}

/// Whether the dispatcher on `ifindex` runs program `ours` (libxdp may have rebuilt it without
/// port25: `xdp-loader unload --all`). A failed look answers yes: no alarm without a reason.
pub fn holds(ifindex: u32, ours: u32) -> bool {
    let Ok(lock) = Lock::take() else {
        return true;
    };
    match running(&lock, ifindex) {
        Ok(Some(running)) => running.components.iter().any(|c| c.id == ours),
        Ok(None) | Err(Refusal::Occupied(_)) => false,
        Err(Refusal::Failed(_)) => true,
    }
}

/// The interfaces (indexes) whose dispatcher pins hold a port25 component: what `port25d
/// detach` takes out when no daemon runs.
pub fn interfaces_with_port25() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(state_dir()) else {
        return Vec::new();
    };
    let mut found: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let ifindex = name
                .strip_prefix("dispatch-")?
                .split('-')
                .next()?
                .parse()
                .ok()?;
            let ours = std::fs::read_dir(entry.path())
                .ok()?
                .filter_map(Result::ok)
                .filter(|pin| pin.file_name().to_string_lossy().ends_with("-prog"))
                .filter_map(|pin| ProgramInfo::from_pin(pin.path()).ok())
                .any(|info| is_port25(info.name_as_str().unwrap_or_default()));
            ours.then_some(ifindex)
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// A component of the dispatcher to build.
enum Planned<'a> {
    Theirs(&'a Component),
    Ours(&'a mut Extension),
}

impl Planned<'_> {
    fn slot(&self) -> SlotConfig {
        match self {
            Planned::Theirs(c) => c.slot,
            Planned::Ours(_) => SlotConfig {
                run_prio: RUN_PRIO,
                chain_call_actions: 1 << XDP_PASS,
                program_flags: 0,
            },
        }
    }

    fn name(&self) -> &str {
        match self {
            Planned::Theirs(c) => &c.name,
            Planned::Ours(_) => COMPONENT_PROGRAM_NAME,
        }
    }
}

/// libxdp's run order: by run priority, then by name.
fn sort(plan: &mut [Planned<'_>]) {
    plan.sort_by(|a, b| (a.slot().run_prio, a.name()).cmp(&(b.slot().run_prio, b.name())));
}

/// An attempt that failed: for good, because the kernel refused the dispatcher in that mode (on
/// the interface: `auto` tries skb then), or because another tool changed the interface
/// meanwhile.
enum Attempt {
    Final(Refusal),
    ModeRefused(anyhow::Error),
    Raced,
}

impl From<Refusal> for Attempt {
    fn from(refusal: Refusal) -> Self {
        Attempt::Final(refusal)
    }
}

impl From<anyhow::Error> for Attempt {
    fn from(reason: anyhow::Error) -> Self {
        Attempt::Final(Refusal::Failed(reason))
    }
}

/// Runs `attempt` again while it raced with another tool's change, as libxdp does.
fn retry<T>(mut attempt: impl FnMut() -> Result<T, Attempt>) -> Result<T, Refusal> {
    for _ in 1..ATTEMPTS {
        match attempt() {
            Ok(done) => return Ok(done),
            Err(Attempt::Final(refusal)) => return Err(refusal),
            Err(Attempt::ModeRefused(reason)) => return Err(Refusal::Failed(reason)),
            Err(Attempt::Raced) => continue,
        }
    }
    attempt().map_err(|attempt| match attempt {
        Attempt::Final(refusal) => refusal,
        Attempt::ModeRefused(reason) => Refusal::Failed(reason),
        Attempt::Raced => Refusal::Failed(anyhow!(
            "the interface changed under each of {ATTEMPTS} attempts (another tool is loading \
             programs there)"
        )),
    })
}

/// Builds the dispatcher for `plan`, pins it, and puts it on the interface in place of
/// `running` (or takes `running` away when `plan` is empty); then unpins the old one.
fn swap(
    lock: &Lock,
    ifindex: u32,
    running: Option<&Running>,
    plan: Vec<Planned<'_>>,
    mode: XdpMode,
) -> Result<(), Attempt> {
    if plan.len() > dispatcher::SLOTS {
        return Err(anyhow!(
            "its dispatcher is full ({} programs already)",
            dispatcher::SLOTS
        )
        .into());
    }
    let old = running.map(|r| r.fd.as_fd());
    if plan.is_empty() {
        swap_xdp(ifindex, mode, None, old).map_err(raced_or(mode))?;
    } else {
        let slots: Vec<SlotConfig> = plan.iter().map(Planned::slot).collect();
        let new = dispatcher::Loaded::load(&DispatcherConfig::new(&slots))?;
        let info = new.info()?;
        let dir = lock.dispatcher_dir(ifindex, info.id());
        let attached = attach_components(&new, &info, &dir, plan).and_then(|()| {
            swap_xdp(ifindex, mode, Some(new.fd()?.as_fd()), old).map_err(raced_or(mode))
        });
        if let Err(err) = attached {
            remove_dir(&dir);
            return Err(err);
        }
    }
    if let Some(running) = running {
        remove_dir(&running.dir);
    }
    Ok(())
}

/// Attaches each planned component to its slot of `new` and pins program and link in `dir`
/// (`progN-prog`, `progN-link`), before the dispatcher goes on the interface: a crash between
/// the two leaves nothing running unpinned.
fn attach_components(
    new: &dispatcher::Loaded,
    info: &ProgramInfo,
    dir: &Path,
    plan: Vec<Planned<'_>>,
) -> Result<(), Attempt> {
    std::fs::create_dir(dir).with_context(|| format!("making {}", dir.display()))?;
    let target = new.fd()?;
    for (i, planned) in plan.into_iter().enumerate() {
        let slot = format!("prog{i}");
        let program: BorrowedFd<'_> = match planned {
            Planned::Theirs(component) => component.fd.as_fd(),
            Planned::Ours(ours) => {
                if ours.fd().is_err() {
                    let target = target.try_clone().context("the new dispatcher's fd")?;
                    ours.load(target, &slot).map_err(refused_extension)?;
                }
                ours.fd().context("port25's component")?.as_fd()
            }
        };
        let btf_id = dispatcher::slot_btf_id(info, &slot)?;
        let link = bpf_cmd::link_create_freplace(program, target.as_fd(), btf_id)
            .with_context(|| format!("attaching a component to {slot} of the new dispatcher"))?;
        for (suffix, object) in [("link", link.as_fd()), ("prog", program)] {
            let path = dir.join(format!("{slot}-{suffix}"));
            bpf_cmd::obj_pin(object, &path)
                .with_context(|| format!("pinning {}", path.display()))?;
        }
    }
    Ok(())
}

/// Why the kernel refused port25's component, and what to do about it.
fn refused_extension(err: aya::programs::ProgramError) -> anyhow::Error {
    let not_permitted = matches!(
        &err,
        aya::programs::ProgramError::LoadError { io_error, .. }
            if io_error.raw_os_error() == Some(libc::EPERM)
    );
    let hint = if not_permitted {
        ". This kernel refuses extension programs as such (before verifying them; libxdp's own \
         check fails the same way and xdp-loader falls back to one program without a \
         dispatcher): run port25 alone on the interface with xdp_coexist = \"exclusive\""
    } else {
        ""
    };
    anyhow!("the kernel refused port25's component as an extension program: {err:#}{hint}")
}

/// A replace that found another program than the expected one raced with another tool (the
/// kernel says EEXIST or EBUSY): start over; anything else is final.
fn raced_or(mode: XdpMode) -> impl Fn(std::io::Error) -> Attempt {
    move |err| match err.raw_os_error() {
        Some(libc::EEXIST | libc::EBUSY) => Attempt::Raced,
        _ => Attempt::ModeRefused(anyhow!(
            "the kernel refused the dispatcher in {mode} mode: {err}"
        )),
    }
}

/// Unpins a dispatcher's components (its links go, and with them the dispatcher once no
/// interface runs it).
fn remove_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Err(err) = std::fs::remove_dir(dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {err}", dir.display());
    }
}
