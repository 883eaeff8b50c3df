//! Kernel mechanisms an aya program may need beside aya itself, and nothing of port25's policy:
//!
//! - [`libxdp`]: joining and leaving libxdp's multi-program XDP dispatcher by its own protocol
//!   (xdp-tools, lib/libxdp/protocol.org), so that a program runs beside xdp-loader's and
//!   xdp-filter's;
//! - [`bpf_cmd`]: the `bpf(2)` commands aya 0.14 does not wrap (pins as raw fds, link targets,
//!   link detach and update, freplace links, a program's BTF);
//! - [`occupant`]: which XDP program an interface runs, and swapping it by netlink as libxdp does.
//!
//! Errors are [`Error`]: what went wrong in terms of these mechanisms; the caller says what it
//! means for its own configuration.

pub mod bpf_cmd;
pub mod libxdp;
pub mod occupant;

use std::path::{Path, PathBuf};

use aya::programs::XdpMode;

pub use self::occupant::Occupant;

/// What went wrong, with the kernel's or aya's cause in the message (so a cause is shown once,
/// it is not also a `source()`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program that is not libxdp's dispatcher holds the interface.
    #[error("the interface runs {0}")]
    Occupied(Occupant),
    /// libxdp keeps its pins on a BPF filesystem, and this path is none.
    #[error("{} is not a BPF filesystem: libxdp keeps its dispatchers' pins there (`mount -t bpf bpf {}`)", .0.display(), .0.display())]
    NotBpffs(PathBuf),
    /// A system call failed: `what` says which and on what.
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    /// aya could not load, open or attach a program.
    #[error("{what}: {cause}")]
    Program {
        what: String,
        cause: Box<aya::programs::ProgramError>,
    },
    /// aya could not open or read a map.
    #[error("{what}: {cause}")]
    Map {
        what: String,
        cause: Box<aya::maps::MapError>,
    },
    /// The running dispatcher is not one this crate speaks to (another layout, version or mode).
    #[error("the dispatcher (program {program_id}) {why}")]
    Unsupported { program_id: u32, why: String },
    /// A program that was just there is not loaded any more.
    #[error("program {program_id} is gone")]
    Gone { program_id: u32 },
    /// The interface's dispatcher runs in one mode and another was asked for: one interface has
    /// one mode.
    #[error("its dispatcher runs in {} mode and {} mode was asked for: one interface has one mode", mode_name(*.running), mode_name(*.wanted))]
    ModeMismatch { running: XdpMode, wanted: XdpMode },
    /// The kernel refused a dispatcher in this mode on the interface.
    #[error("the kernel refused the dispatcher in {} mode: {cause}", mode_name(*.mode))]
    ModeRefused {
        mode: XdpMode,
        cause: std::io::Error,
    },
    /// Every slot of the dispatcher is taken.
    #[error("its dispatcher is full ({slots} programs already)")]
    Full { slots: usize },
    /// No `xdp-dispatcher.o` in any of the directories libxdp looks in.
    #[error("libxdp's xdp-dispatcher.o is in none of {}: install libxdp (Debian: `apt install libxdp1`) or name its directory in LIBXDP_OBJECT_PATH", paths(.looked))]
    NoDispatcherObject { looked: Vec<PathBuf> },
    /// The host's dispatcher object is not one this crate can load.
    #[error("{} {why}", .path.display())]
    DispatcherObject { path: PathBuf, why: String },
    /// The kernel refused the joining program as an extension of the dispatcher.
    #[error("the kernel refused the component as an extension program: {0}")]
    ExtensionRefused(Box<aya::programs::ProgramError>),
    /// Another tool changed the interface under each attempt.
    #[error(
        "the interface changed under each of {attempts} attempts (another tool is loading programs there)"
    )]
    Raced { attempts: usize },
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |cause| Error::Io { what, cause }
    }

    fn program(what: impl Into<String>) -> impl FnOnce(aya::programs::ProgramError) -> Error {
        let what = what.into();
        move |cause| Error::Program {
            what,
            cause: Box::new(cause),
        }
    }

    fn map(what: impl Into<String>) -> impl FnOnce(aya::maps::MapError) -> Error {
        let what = what.into();
        move |cause| Error::Map {
            what,
            cause: Box::new(cause),
        }
    }

    /// Whether the kernel refused an extension program as such, before verifying it (EPERM: some
    /// kernels do; libxdp's own check fails the same way and xdp-loader falls back to one program
    /// without a dispatcher).
    pub fn is_extension_not_permitted(&self) -> bool {
        matches!(
            self,
            Error::ExtensionRefused(err) if matches!(
                err.as_ref(),
                aya::programs::ProgramError::LoadError { io_error, .. }
                    if io_error.raw_os_error() == Some(libc::EPERM)
            )
        )
    }
}

/// How the kernel's netlink answers and libxdp's pins spell a mode.
pub fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Driver => "native",
        XdpMode::Skb => "skb",
        XdpMode::Hardware => "offload",
        XdpMode::Default => "default",
    }
}

fn paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` is on a BPF filesystem (where pins can live).
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == BPF_FS_MAGIC
    }
}
