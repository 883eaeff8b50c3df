//! One pin directory, one daemon: the running port25d holds an exclusive flock on its pin
//! directory for as long as it lives, so that a second one on the same pins is refused (adopting
//! is for a dead owner only: SIGKILL, a crash) and `detach` does not pull the pins from under a
//! live one. The kernel drops the lock with the process, however it ends. Who holds it is read
//! back from /proc/locks, and the control socket it listens on from its open sockets.

use std::{
    fs::File,
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

/// The flock on a pin directory, held by the daemon that owns it.
#[derive(Debug)]
pub struct Claim {
    _dir: File,
}

/// The live process that owns a pin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Its command name (`port25d`), when /proc shows it.
    pub command: Option<String>,
    /// The control socket it listens on, when it can be told.
    pub control_socket: Option<PathBuf>,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pid {}",
            self.command.as_deref().unwrap_or("a process"),
            self.pid
        )?;
        match &self.control_socket {
            Some(socket) => write!(f, " (control socket {})", socket.display()),
            None => f.write_str(" (its control socket could not be told)"),
        }
    }
}

/// Why a pin directory cannot be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "the pins in {} belong to {owner}: one pin directory has one daemon. Stop it first \
         (`systemctl stop port25d`, or `port25d detach{}`), or give this one a --pin-dir of its own",
        dir.display(),
        owner.control_socket.as_ref().map(|s| format!(" --control-socket {}", s.display())).unwrap_or_default()
    )]
    Owned { dir: PathBuf, owner: Owner },
    #[error("the pins in {} belong to another process, which /proc/locks does not name", .0.display())]
    OwnedByUnknown(PathBuf),
    #[error("locking the pin directory {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Takes the pin directory `dir` for this process, or says who has it.
pub(super) fn claim(dir: &Path) -> Result<Claim, ClaimError> {
    let io = |source| ClaimError::Io {
        dir: dir.to_owned(),
        source,
    };
    let file = open_dir(dir).map_err(io)?;
    // SAFETY: flock on an fd this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Claim { _dir: file });
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(io(err));
    }
    match owner(dir) {
        Some(owner) => Err(ClaimError::Owned {
            dir: dir.to_owned(),
            owner,
        }),
        None => Err(ClaimError::OwnedByUnknown(dir.to_owned())),
    }
}

/// The live process that owns pin directory `dir`, if any.
pub(super) fn owner(dir: &Path) -> Option<Owner> {
    let meta = std::fs::metadata(dir).ok()?;
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = lock_holder(&locks, &id)?;
    Some(Owner {
        pid,
        command: std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|comm| comm.trim().to_owned()),
        control_socket: listening_socket(pid),
    })
}

/// The other live port25d that holds a link to program `program_id` (the XDP filter another
/// daemon attached, with other pins), if one does: read from its fds' /proc fdinfo.
pub fn running_program(program_id: u32) -> Option<Owner> {
    let wanted = format!("prog_id:\t{program_id}");
    let own = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "port25d")
        })
        .find(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fdinfo")).is_ok_and(|fds| {
                fds.filter_map(Result::ok).any(|fd| {
                    std::fs::read_to_string(fd.path())
                        .is_ok_and(|info| info.lines().any(|line| line == wanted))
                })
            })
        })
        .map(|pid| Owner {
            pid,
            command: Some("port25d".to_owned()),
            control_socket: listening_socket(pid),
        })
}

fn open_dir(dir: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
}

/// The pid holding a flock on the file `id` ("MAJ:MIN:INODE", major and minor in hex, as
/// /proc/locks writes them): `N: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE 0 EOF`.
fn lock_holder(locks: &str, id: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A blocked waiter's line starts `N: -> FLOCK`.
        if fields.get(1) != Some(&"FLOCK") || fields.get(5) != Some(&id) {
            return None;
        }
        fields.get(4)?.parse().ok()
    })
}

/// The path of a Unix socket process `pid` listens on: its fds that are sockets, looked up in
/// its network namespace's /proc/net/unix (flag `__SO_ACCEPTCON`, 0x10000: listening).
fn listening_socket(pid: u32) -> Option<PathBuf> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).ok()?;
    listening_path(&table, &inodes)
}

/// `Num RefCount Protocol Flags Type St Inode Path`: the path of a listening socket among
/// `inodes`.
fn listening_path(table: &str, inodes: &[String]) -> Option<PathBuf> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
        let (inode, path) = (fields.get(6)?, fields.get(7)?);
        let listening = flags & 0x10000 != 0;
        (listening && inodes.iter().any(|i| i == inode) && path.starts_with('/'))
            .then(|| PathBuf::from(path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_holder_and_its_socket_are_read_from_proc() {
        let locks = "1: FLOCK  ADVISORY  WRITE 4263 00:28:755765 0 EOF\n\
                     1: -> FLOCK  ADVISORY  WRITE 4300 00:28:755765 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 2962 00:28:755766 0 EOF\n";
        assert_eq!(lock_holder(locks, "00:28:755765"), Some(4263));
        assert_eq!(lock_holder(locks, "00:28:755766"), None);
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                    0000000000000000: 00000002 00000000 00010000 0001 01 31337 /run/port25/control.sock\n\
                    0000000000000000: 00000003 00000000 00000000 0001 03 31338 /run/port25/control.sock\n\
                    0000000000000000: 00000002 00000000 00010000 0001 01 999 @/abstract\n";
        let ours = ["31337".to_owned(), "31338".to_owned()];
        assert_eq!(
            listening_path(unix, &ours),
            Some(PathBuf::from("/run/port25/control.sock"))
        );
        assert_eq!(listening_path(unix, &["999".to_owned()]), None);
    }

    #[test]
    fn a_second_claim_names_the_first_owner() {
        let dir = std::env::temp_dir().join(format!("port25-claim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = claim(&dir).unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too.
        match claim(&dir) {
            Err(ClaimError::Owned { owner, .. }) => assert_eq!(owner.pid, std::process::id()),
            other => panic!("claimed twice: {other:?}"),
        }
        drop(first);
        assert!(claim(&dir).is_ok());
        std::fs::remove_dir(&dir).unwrap();
    }
}
