//! Joining a libxdp dispatcher: a program as one component of the multi-program dispatcher that
//! xdp-loader and xdp-filter build, by libxdp's own protocol (xdp-tools,
//! lib/libxdp/protocol.org), so that either side adds and removes its programs without removing
//! the other's.
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

use aya::programs::{Extension, ProgramFd, ProgramInfo, XdpMode};

pub(crate) use self::dispatcher::PROGRAM as DISPATCHER_PROGRAM;
pub use self::dispatcher::{DispatcherConfig, SLOTS, SlotConfig};
use crate::{
    Error, bpf_cmd,
    occupant::{loaded_program, swap_xdp, xdp_occupant},
};

/// libxdp's run priority for a program that names none.
pub const DEFAULT_RUN_PRIO: u32 = 50;
/// The verdict after which the next component runs: a component passes what it does not drop on.
const XDP_PASS: u32 = 2;
/// How often a swap that raced with another tool's is started over.
const ATTEMPTS: usize = 5;

/// The program that joins: its name (how it is found in a dispatcher again) and its run
/// priority (lower runs first; libxdp orders equal priorities by name).
#[derive(Clone, Copy, Debug)]
pub struct Component<'a> {
    pub name: &'a str,
    pub run_prio: u32,
}

impl Component<'_> {
    /// Whether a program (by its kernel name, cut at 15 bytes) is this component.
    fn is(&self, kernel_name: &str) -> bool {
        !kernel_name.is_empty() && self.name.as_bytes().starts_with(kernel_name.as_bytes())
    }

    fn slot(&self) -> SlotConfig {
        SlotConfig {
            run_prio: self.run_prio,
            chain_call_actions: 1 << XDP_PASS,
            program_flags: 0,
        }
    }
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
    fn take() -> Result<Self, Error> {
        let dir = state_dir();
        let bpffs = dir.parent().unwrap_or(Path::new("/"));
        if !crate::is_bpffs(bpffs) {
            return Err(Error::NotBpffs(bpffs.to_owned()));
        }
        if let Err(err) = std::fs::create_dir(&dir)
            && err.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(Error::io(format!("making {}", dir.display()))(err));
        }
        let file = File::open(&dir).map_err(Error::io(format!("opening {}", dir.display())))?;
        // SAFETY: flock on an fd this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let err = std::io::Error::last_os_error();
            return Err(Error::io(format!("locking {}", dir.display()))(err));
        }
        Ok(Self { dir, _file: file })
    }

    /// Where the components of dispatcher `program_id` on `ifindex` are pinned.
    fn dispatcher_dir(&self, ifindex: u32, program_id: u32) -> PathBuf {
        self.dir.join(format!("dispatch-{ifindex}-{program_id}"))
    }
}

/// A program in a dispatcher's slot, as its pin gives it.
struct Pinned {
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
    components: Vec<Pinned>,
}

/// What the interface runs: nothing, or a dispatcher; another program is [`Error::Occupied`].
fn running(lock: &Lock, ifindex: u32) -> Result<Option<Running>, Error> {
    let occupant = xdp_occupant(ifindex).map_err(Error::io(format!(
        "asking the kernel which XDP program interface {ifindex} runs"
    )))?;
    let Some(occupant) = occupant else {
        return Ok(None);
    };
    if !occupant.is_libxdp_dispatcher() {
        return Err(Error::Occupied(occupant));
    }
    let program_id = occupant.program_id;
    let mode = occupant.xdp_mode().ok_or_else(|| Error::Unsupported {
        program_id,
        why: format!(
            "runs in {} mode; only one in native or skb mode is joined",
            occupant.mode
        ),
    })?;
    let info = loaded_program(program_id).ok_or(Error::Gone { program_id })?;
    let config = DispatcherConfig::of_running(&info)?;
    let dir = lock.dispatcher_dir(ifindex, program_id);
    let mut components = Vec::new();
    for (i, slot) in config.slots().into_iter().enumerate() {
        let pin = dir.join(format!("prog{i}-prog"));
        let not_pinned = format!(
            "{} (the dispatcher's components are not pinned where libxdp pins them)",
            pin.display()
        );
        let info = ProgramInfo::from_pin(&pin).map_err(Error::program(not_pinned.as_str()))?;
        components.push(Pinned {
            name: info.name_as_str().unwrap_or_default().to_owned(),
            id: info.id(),
            fd: info.fd().map_err(Error::program(not_pinned))?,
            slot,
        });
    }
    Ok(Some(Running {
        fd: info.fd().map_err(Error::program(format!(
            "opening the dispatcher (program {program_id})"
        )))?,
        mode,
        dir,
        components,
    }))
}

/// How the component went in.
#[derive(Debug)]
pub struct Joined {
    /// Native (`XdpMode::Driver`) or skb.
    pub mode: XdpMode,
    /// Whether the component was there already (a previous run's) and was replaced.
    pub replaced: bool,
    /// The other components, by name, in run order.
    pub beside: Vec<String>,
}

/// Puts `program`, which is `component`, into the dispatcher on `ifindex` (making one if the
/// interface runs none), in place of any copy of it already there. `program` is loaded against
/// the new dispatcher the first time. `wanted`: [`XdpMode::Default`] joins a running dispatcher
/// in its mode, and makes a new one native, or skb where the interface has no native XDP;
/// [`XdpMode::Hardware`] is refused (a dispatcher is not offloaded). [`Joined::mode`] is
/// [`XdpMode::Driver`] or [`XdpMode::Skb`].
pub fn join(
    ifindex: u32,
    wanted: XdpMode,
    component: Component<'_>,
    program: &mut Extension,
) -> Result<Joined, Error> {
    if wanted == XdpMode::Hardware {
        return Err(Error::ModeRefused {
            mode: wanted,
            cause: std::io::Error::from(std::io::ErrorKind::Unsupported),
        });
    }
    retry(|| {
        let lock = Lock::take()?;
        let running = running(&lock, ifindex)?;
        let mode = match (&running, wanted) {
            (Some(running), XdpMode::Default) => running.mode,
            (Some(running), wanted) if running.mode == wanted => running.mode,
            (Some(running), wanted) => {
                return Err(Attempt::Final(Error::ModeMismatch {
                    running: running.mode,
                    wanted,
                }));
            }
            (None, XdpMode::Default) => XdpMode::Driver,
            (None, wanted) => wanted,
        };
        let others: Vec<&Pinned> = running
            .as_ref()
            .map(|r| {
                r.components
                    .iter()
                    .filter(|c| !component.is(&c.name))
                    .collect()
            })
            .unwrap_or_default();
        let replaced = running
            .as_ref()
            .is_some_and(|r| r.components.iter().any(|c| component.is(&c.name)));
        let mut plan: Vec<Planned> = others.iter().map(|c| Planned::Theirs(c)).collect();
        plan.push(Planned::Ours(component, program));
        sort(&mut plan);
        let beside = plan
            .iter()
            .filter_map(|p| match p {
                Planned::Theirs(c) => Some(c.name.clone()),
                Planned::Ours(..) => None,
            })
            .collect();
        let swapped = swap(&lock, ifindex, running.as_ref(), plan, mode);
        match (swapped, running.is_none(), wanted) {
            // No wish, on an interface without native XDP: skb, as a single program would.
            (Err(Attempt::ModeRefused(err)), true, XdpMode::Default) => {
                tracing::warn!("{err}; falling back to skb (generic) XDP");
                let plan = vec![Planned::Ours(component, program)];
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

/// Takes every program called `name` out of the dispatcher on `ifindex`; the dispatcher goes
/// with the last component. Nothing to do is fine.
pub fn leave(ifindex: u32, name: &str) -> Result<(), Error> {
    let component = Component { name, run_prio: 0 };
    retry(|| {
        let lock = Lock::take()?;
        let Some(running) = running(&lock, ifindex)? else {
            return Ok(());
        };
        if !running.components.iter().any(|c| component.is(&c.name)) {
            return Ok(());
        }
        let plan: Vec<Planned> = running
            .components
            .iter()
            .filter(|c| !component.is(&c.name))
            .map(Planned::Theirs)
            .collect();
        swap(&lock, ifindex, Some(&running), plan, running.mode)
    })
}

/// Whether the dispatcher on `ifindex` runs program `program_id` (libxdp may have rebuilt it
/// without it: `xdp-loader unload --all`). A failed look answers yes: no alarm without a reason.
pub fn holds(ifindex: u32, program_id: u32) -> bool {
    let Ok(lock) = Lock::take() else {
        return true;
    };
    match running(&lock, ifindex) {
        Ok(Some(running)) => running.components.iter().any(|c| c.id == program_id),
        Ok(None) | Err(Error::Occupied(_)) => false,
        Err(_) => true,
    }
}

/// The interfaces (indexes) whose dispatcher pins hold a program called `name`: where it runs
/// when nothing else says so.
pub fn interfaces_holding(name: &str) -> Vec<u32> {
    let component = Component { name, run_prio: 0 };
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
            let held = std::fs::read_dir(entry.path())
                .ok()?
                .filter_map(Result::ok)
                .filter(|pin| pin.file_name().to_string_lossy().ends_with("-prog"))
                .filter_map(|pin| ProgramInfo::from_pin(pin.path()).ok())
                .any(|info| component.is(info.name_as_str().unwrap_or_default()));
            held.then_some(ifindex)
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// A component of the dispatcher to build.
enum Planned<'a> {
    Theirs(&'a Pinned),
    Ours(Component<'a>, &'a mut Extension),
}

impl Planned<'_> {
    fn slot(&self) -> SlotConfig {
        match self {
            Planned::Theirs(c) => c.slot,
            Planned::Ours(component, _) => component.slot(),
        }
    }

    fn name(&self) -> &str {
        match self {
            Planned::Theirs(c) => &c.name,
            Planned::Ours(component, _) => component.name,
        }
    }
}

/// libxdp's run order: by run priority, then by name.
fn sort(plan: &mut [Planned<'_>]) {
    plan.sort_by(|a, b| (a.slot().run_prio, a.name()).cmp(&(b.slot().run_prio, b.name())));
}

/// An attempt that failed: for good, because the kernel refused the dispatcher in that mode (on
/// the interface: no wish tries skb then), or because another tool changed the interface
/// meanwhile.
enum Attempt {
    Final(Error),
    ModeRefused(Error),
    Raced,
}

impl From<Error> for Attempt {
    fn from(error: Error) -> Self {
        Attempt::Final(error)
    }
}

/// Runs `attempt` again while it raced with another tool's change, as libxdp does.
fn retry<T>(mut attempt: impl FnMut() -> Result<T, Attempt>) -> Result<T, Error> {
    for _ in 1..ATTEMPTS {
        match attempt() {
            Ok(done) => return Ok(done),
            Err(Attempt::Final(error) | Attempt::ModeRefused(error)) => return Err(error),
            Err(Attempt::Raced) => continue,
        }
    }
    attempt().map_err(|attempt| match attempt {
        Attempt::Final(error) | Attempt::ModeRefused(error) => error,
        Attempt::Raced => Error::Raced { attempts: ATTEMPTS },
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
    if plan.len() > SLOTS {
        return Err(Error::Full { slots: SLOTS }.into());
    }
    let old = running.map(|r| r.fd.as_fd());
    if plan.is_empty() {
        swap_xdp(ifindex, mode, None, old).map_err(raced_or(mode))?;
    } else {
        let slots: Vec<SlotConfig> = plan.iter().map(Planned::slot).collect();
        let new = dispatcher::Loaded::load(&DispatcherConfig::new(&slots))?;
        let dir = lock.dispatcher_dir(ifindex, new.info().id());
        let attached = attach_components(&new, &dir, plan).and_then(|()| {
            swap_xdp(ifindex, mode, Some(new.fd().as_fd()), old).map_err(raced_or(mode))
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
    dir: &Path,
    plan: Vec<Planned<'_>>,
) -> Result<(), Attempt> {
    std::fs::create_dir(dir).map_err(Error::io(format!("making {}", dir.display())))?;
    let target = new.fd();
    for (i, planned) in plan.into_iter().enumerate() {
        let slot = format!("prog{i}");
        let program: BorrowedFd<'_> = match planned {
            Planned::Theirs(pinned) => pinned.fd.as_fd(),
            Planned::Ours(_, ours) => {
                if ours.fd().is_err() {
                    let target = target
                        .try_clone()
                        .map_err(Error::io("duplicating the new dispatcher's fd"))?;
                    ours.load(target, &slot)
                        .map_err(|e| Error::ExtensionRefused(Box::new(e)))?;
                }
                ours.fd()
                    .map_err(Error::program("the joining component's fd"))?
                    .as_fd()
            }
        };
        let btf_id = dispatcher::slot_btf_id(new.info(), &slot)?;
        let link =
            bpf_cmd::link_create_freplace(program, target.as_fd(), btf_id).map_err(Error::io(
                format!("attaching a component to {slot} of the new dispatcher"),
            ))?;
        for (suffix, object) in [("link", link.as_fd()), ("prog", program)] {
            let path = dir.join(format!("{slot}-{suffix}"));
            bpf_cmd::obj_pin(object, &path)
                .map_err(Error::io(format!("pinning {}", path.display())))?;
        }
    }
    Ok(())
}

/// A replace that found another program than the expected one raced with another tool (the
/// kernel says EEXIST or EBUSY): start over; anything else is final.
fn raced_or(mode: XdpMode) -> impl Fn(std::io::Error) -> Attempt {
    move |cause| match cause.raw_os_error() {
        Some(libc::EEXIST | libc::EBUSY) => Attempt::Raced,
        _ => Attempt::ModeRefused(Error::ModeRefused { mode, cause }),
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
