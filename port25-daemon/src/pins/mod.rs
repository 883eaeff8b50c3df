//! What the daemon keeps on the BPF filesystem so the filter outlives it: the maps (lists,
//! counters, buckets) and the links that attach the programs to interfaces.
//!
//! ```text
//! {pin dir}/maps-v{LAYOUT_VERSION}/{MAP}     one pin per map; a restart adopts them
//! {pin dir}/links/xdp-{mode}-{iface}         the XDP link ("native" or "skb")
//! {pin dir}/links/tc-synack-{iface}          the SYN-ACK watcher's TC link (handshake verification)
//! {pin dir}/links/cgroup-connect4, -connect6  the egress guard's cgroup links
//! ```
//! A killed daemon leaves all of it in place, so the kernel keeps enforcing the last policy; the
//! next start adopts the maps (counters keep counting) and swaps its freshly loaded program into the
//! pinned links atomically. Maps of another layout version are never adopted (see `Datapath`).
//! docs/ARCHITECTURE.md, § Pins.
#![allow(
    unreachable_pub,
    reason = "public to the tests and the bench through `testing`"
)]

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bpf_plumbing::is_bpffs;
use port25_common::LAYOUT_VERSION;

pub use self::owner::{Owner, running_program};
use crate::model::XdpMode;

mod owner;

/// Default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/port25";

const BPF_ROOT: &str = "/sys/fs/bpf";

/// A pin directory. Ephemeral ones (tests, one-off loads) are removed with everything in them
/// when dropped; persistent ones are removed only by [`PinDir::remove_all`] (`port25d detach`).
#[derive(Debug)]
pub struct PinDir {
    root: PathBuf,
    ephemeral: bool,
    /// Whether this process mounted the bpffs the pins are on.
    mounted_here: bool,
    /// The daemon's hold on its pin directory (persistent ones only).
    _claim: Option<owner::Claim>,
}

/// Whether pins outlive the daemon. A bpffs lives as long as some mount of it does; one that only
/// the daemon's own mount namespace has (`ip netns exec` gives the command a fresh /sys, and a
/// sandbox may give it private mounts) goes with the daemon, and with it every pin: the links are
/// released and the filter is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// The host has the bpffs too: a killed daemon leaves the filter enforcing.
    Host,
    /// Only mount namespaces that end with the daemon have it.
    DiesWithDaemon,
}

impl PinDir {
    /// The daemon's pin directory, made (and bpffs mounted at /sys/fs/bpf) if missing, and
    /// claimed for this process: refused while another live one holds it (see [`Owner`]).
    pub fn persistent(root: &Path) -> anyhow::Result<Self> {
        let mut dir = Self {
            root: root.to_path_buf(),
            ephemeral: false,
            mounted_here: false,
            _claim: None,
        };
        dir.prepare()?;
        dir._claim = Some(owner::claim(root)?);
        Ok(dir)
    }

    /// The live daemon that owns these pins, if any.
    pub fn owner(&self) -> Option<Owner> {
        owner::owner(&self.root)
    }

    /// A private directory under /sys/fs/bpf that goes when this value does: for loads that must
    /// not share state with anyone (tests), since aya pins every map of the object.
    #[cfg(feature = "testing")]
    pub fn ephemeral() -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "port25-ephemeral-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut dir = Self {
            root: Path::new(BPF_ROOT).join(name),
            ephemeral: true,
            mounted_here: false,
            _claim: None,
        };
        dir.remove_all();
        dir.prepare()?;
        Ok(dir)
    }

    /// Opens an existing pin directory without creating anything (for `top`, `status`, `detach`).
    pub fn existing(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            ephemeral: false,
            mounted_here: false,
            _claim: None,
        }
    }

    /// Whether these pins outlive this process. PID 1's mount table is the host's: the pins
    /// persist when it holds a mount of the same bpffs (same device number), whatever namespace
    /// this process is in (comparing /proc/self/ns/mnt with /proc/1/ns/mnt alone would not do: a
    /// sandbox's namespace differs from the host's while its mounts propagate there). Where PID 1
    /// cannot be seen (a sandbox such as systemd's ProtectProc=invisible), a bpffs this process
    /// did not mount was set up by its host, and one it mounted itself is private to it.
    pub fn persistence(&self) -> Persistence {
        use std::os::unix::fs::MetadataExt as _;
        let host = std::fs::metadata(&self.root).ok().and_then(|meta| {
            let dev = meta.dev();
            let wanted = format!("{}:{}", libc::major(dev), libc::minor(dev));
            let host_mounts = std::fs::read_to_string("/proc/1/mountinfo").ok()?;
            Some(
                host_mounts
                    .lines()
                    .any(|line| is_bpffs_mount(line, &wanted)),
            )
        });
        match host {
            Some(true) => Persistence::Host,
            Some(false) => Persistence::DiesWithDaemon,
            None if self.mounted_here => Persistence::DiesWithDaemon,
            None => Persistence::Host,
        }
    }

    /// Where this build's maps are pinned.
    pub fn maps(&self) -> PathBuf {
        self.root.join(format!("maps-v{LAYOUT_VERSION}"))
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn xdp_link(&self, mode: XdpMode, iface: &str) -> PathBuf {
        self.links().join(format!("xdp-{mode}-{iface}"))
    }

    pub fn synack_watcher_link(&self, iface: &str) -> PathBuf {
        self.links().join(format!("tc-synack-{iface}"))
    }

    /// Where a port25d before map layout 6 pinned the SYN-ACK watcher's link.
    pub fn legacy_synack_watcher_link(&self, iface: &str) -> PathBuf {
        self.links().join(format!("tc-egress-{iface}"))
    }

    /// The link of an egress guard's connect hook (`port25_connect4` pins as `cgroup-connect4`).
    pub fn cgroup_link(&self, program: &str) -> PathBuf {
        let hook = program.strip_prefix("port25_").unwrap_or(program);
        self.links().join(format!("cgroup-{hook}"))
    }

    /// The pinned XDP link of `iface`, whatever its mode: (mode, path).
    pub fn find_xdp_link(&self, iface: &str) -> Option<(XdpMode, PathBuf)> {
        XdpMode::ALL.iter().find_map(|&mode| {
            let path = self.xdp_link(mode, iface);
            path.exists().then_some((mode, path))
        })
    }

    /// What an XDP link's pin name says: `xdp-native-eth0` is eth0 in native mode (see
    /// [`PinDir::xdp_link`]); other links are not XDP.
    pub fn parse_xdp_link_name(name: &str) -> Option<(XdpMode, &str)> {
        let (mode, iface) = name.strip_prefix("xdp-")?.split_once('-')?;
        let mode = XdpMode::named(mode)?;
        (!iface.is_empty()).then_some((mode, iface))
    }

    /// Every pinned link: (file name, path).
    pub fn all_links(&self) -> Vec<(String, PathBuf)> {
        list_dir(&self.links())
    }

    /// Map directories of other layout versions, left by an older or newer port25d.
    pub fn foreign_map_dirs(&self) -> Vec<PathBuf> {
        let own = self.maps();
        list_dir(&self.root)
            .into_iter()
            .filter(|(name, path)| name.starts_with("maps-v") && *path != own)
            .map(|(_, path)| path)
            .collect()
    }

    /// The pin directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes this layout's maps, and the links directory and the pin directory if nothing
    /// else is left in them (a failed start's undoing: another layout's maps and links stay).
    pub fn remove_own(&self) -> Vec<String> {
        let mut problems = Vec::new();
        remove_tree(&self.maps(), &mut problems);
        let _ = std::fs::remove_dir(self.links());
        let _ = std::fs::remove_dir(&self.root);
        problems
    }

    /// Removes every pin and the directory itself. Links whose last reference was the pin are
    /// released, which detaches their program. Best effort: reports what it could not remove.
    pub fn remove_all(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (_, child) in list_dir(&self.root) {
            remove_tree(&child, &mut problems);
        }
        // EBUSY or EROFS (a read-only parent is checked first): a mount point, as the systemd
        // unit binds the pin directory into the service; it stays, empty.
        if let Err(err) = std::fs::remove_dir(&self.root)
            && !matches!(err.raw_os_error(), Some(libc::EBUSY | libc::EROFS))
            && err.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("removing {}: {err}", self.root.display()));
        }
        problems
    }

    fn prepare(&mut self) -> anyhow::Result<()> {
        let root = Path::new(BPF_ROOT);
        if self.root.starts_with(root) && !is_bpffs(root) {
            mount_bpffs(root)?;
            self.mounted_here = true;
        }
        for dir in [self.maps(), self.links()] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating pin directory {}", dir.display()))?;
        }
        if !is_bpffs(&self.root) {
            anyhow::bail!(
                "{} is not on a BPF filesystem; mount one (`mount -t bpf bpf /sys/fs/bpf`) or pass --pin-dir",
                self.root.display()
            );
        }
        Ok(())
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.ephemeral {
            for problem in self.remove_all() {
                tracing::warn!("{problem}");
            }
        }
    }
}

fn list_dir(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    found.sort();
    found
}

fn remove_tree(path: &Path, problems: &mut Vec<String>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        for (_, child) in list_dir(path) {
            remove_tree(&child, problems);
        }
        if let Err(err) = std::fs::remove_dir(path) {
            problems.push(format!("removing {}: {err}", path.display()));
        }
    } else if let Err(err) = std::fs::remove_file(path) {
        problems.push(format!("removing pin {}: {err}", path.display()));
    }
}

/// Whether a /proc/PID/mountinfo line is a bpf filesystem on device `dev` ("major:minor"): fields
/// `id parent major:minor root mountpoint options [optional...] - fstype source superoptions`.
fn is_bpffs_mount(line: &str, dev: &str) -> bool {
    let mut fields = line.split(' ');
    let device = fields.nth(2);
    let fstype = fields.skip_while(|field| *field != "-").nth(1);
    device == Some(dev) && fstype == Some("bpf")
}

fn mount_bpffs(root: &Path) -> anyhow::Result<()> {
    let c_root = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings; data may be NULL.
    let ret = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c_root.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mounting bpffs at {}", root.display()));
    }
    tracing::info!("mounted bpffs at {}", root.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let host = "42 23 0:39 / /sys/fs/bpf rw,relatime shared:7 - bpf bpf rw";
        assert!(is_bpffs_mount(host, "0:39"));
        assert!(!is_bpffs_mount(host, "0:40"));
        let tmpfs = "44 27 0:39 / /run rw,nosuid - tmpfs tmpfs rw,mode=755";
        assert!(!is_bpffs_mount(tmpfs, "0:39"));
        assert!(!is_bpffs_mount("garbage", "0:39"));
    }
}
