//! `[egress]`: the outbound guard's policy. Smart hosts given by name are resolved here, users by
//! name looked up in /etc/passwd and allowed cgroups found on the cgroup2 mount, so that a name
//! that does not resolve or a cgroup that does not exist is a config error with its line, before
//! anything touches the kernel. docs/ARCHITECTURE.md, § Egress.

use std::net::{IpAddr, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use port25_common::egress::{MAX_CGROUPS, MAX_FORWARD, MAX_PORTS, MAX_USERS};
use serde::Deserialize;
use toml::Spanned;

use super::source::Source;
use super::{CidrSet, ConfigError, cidr};
use crate::model::EgressMode;
use crate::users;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEgress {
    mode: Option<EgressMode>,
    ports: Option<Spanned<Vec<Spanned<i64>>>>,
    #[serde(default)]
    smart_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    allow_users: Vec<Spanned<UserRef>>,
    #[serde(default)]
    allow_cgroups: Vec<Spanned<String>>,
    cgroup: Option<Spanned<String>>,
    #[serde(default)]
    forward_interfaces: Vec<Spanned<String>>,
    refresh: Option<Spanned<i64>>,
}

/// A user by name or by uid.
#[derive(Deserialize)]
#[serde(untagged)]
enum UserRef {
    Uid(i64),
    Name(String),
}

/// A cgroup whose processes (and those below it) may connect anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedCgroup {
    /// As written, relative to the cgroup2 root.
    pub path: String,
    /// The inode number of its directory: what the kernel calls its id.
    pub id: u64,
    /// Its depth below the cgroup2 root (the root is 0).
    pub level: u32,
}

/// A smart host given by name, with the addresses it resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmartHostName {
    pub name: String,
    pub addrs: Vec<IpAddr>,
}

/// The validated `[egress]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    pub mode: EgressMode,
    /// Sorted, deduplicated, at most [`MAX_PORTS`].
    pub ports: Vec<u16>,
    /// Every smart host as prefixes: CIDRs and addresses as written, names as resolved.
    pub smart_hosts: CidrSet,
    /// The smart hosts written as CIDRs or addresses.
    pub smart_host_cidrs: Vec<IpNet>,
    pub smart_host_names: Vec<SmartHostName>,
    pub allow_users: Vec<u32>,
    pub allow_cgroups: Vec<AllowedCgroup>,
    /// Where the hooks attach: a cgroup v2 directory (by default the root).
    pub cgroup: PathBuf,
    /// Interfaces (a router's LAN side) where XDP drops forwarded SYNs to these ports unless to
    /// a smart host.
    pub forward_interfaces: Vec<String>,
    /// Seconds between resolving smart-host names again.
    pub refresh: u32,
}

impl Egress {
    /// No guard.
    pub fn off() -> Self {
        Self {
            mode: EgressMode::Off,
            ports: vec![25],
            smart_hosts: CidrSet::default(),
            smart_host_cidrs: Vec::new(),
            smart_host_names: Vec::new(),
            allow_users: Vec::new(),
            allow_cgroups: Vec::new(),
            cgroup: PathBuf::new(),
            forward_interfaces: Vec::new(),
            refresh: 300,
        }
    }

    /// Resolves the smart hosts' names again: `Some` with the new addresses when one changed. A
    /// name that no longer resolves keeps its last addresses, with a warning.
    pub fn refreshed(&self) -> Option<Egress> {
        let mut next = self.clone();
        for host in &mut next.smart_host_names {
            match resolve(&host.name) {
                Ok(addrs) => host.addrs = addrs,
                Err(reason) => tracing::warn!(
                    "egress.smart_hosts: {reason}; keeping its last addresses {:?}",
                    host.addrs
                ),
            }
        }
        if next.smart_host_names == self.smart_host_names {
            return None;
        }
        next.smart_hosts = smart_host_set(&next.smart_host_cidrs, &next.smart_host_names);
        Some(next)
    }
}

/// Every smart host as a prefix: those written as such, and the addresses of those named.
fn smart_host_set(cidrs: &[IpNet], names: &[SmartHostName]) -> CidrSet {
    let named = names
        .iter()
        .flat_map(|host| host.addrs.iter().copied().map(IpNet::from));
    CidrSet::new(cidrs.iter().copied().chain(named))
}

impl Source<'_> {
    pub(super) fn egress(&self, raw: &RawEgress) -> Result<Egress, ConfigError> {
        let mode = raw.mode.unwrap_or(EgressMode::Off);
        let ports = self.ports(raw.ports.as_ref(), "egress.ports")?;
        if ports.len() > MAX_PORTS {
            let span = raw.ports.as_ref().map_or(0..0, Spanned::span);
            return Err(self.error_at(
                span,
                format!(
                    "egress.ports holds {} ports; at most {MAX_PORTS}",
                    ports.len()
                ),
            ));
        }
        let refresh = self.ranged(&raw.refresh, "egress.refresh", 300, 5..=86_400)?;
        let mut egress = Egress {
            mode,
            ports,
            refresh,
            ..Egress::off()
        };
        if mode == EgressMode::Off {
            // Nothing of the host is looked up for a guard that is off.
            return Ok(egress);
        }
        egress.forward_interfaces = self.interfaces(&raw.forward_interfaces)?;
        if egress.forward_interfaces.len() > MAX_FORWARD {
            return Err(self.error_at(
                raw.forward_interfaces[MAX_FORWARD].span(),
                format!("egress.forward_interfaces: at most {MAX_FORWARD} interfaces"),
            ));
        }
        self.smart_hosts(&raw.smart_hosts, &mut egress)?;
        egress.allow_users = self.users(&raw.allow_users)?;
        let root = cgroup2_root().map_err(|reason| self.error(reason.to_string()))?;
        egress.allow_cgroups = self.allowed_cgroups(&root, &raw.allow_cgroups)?;
        egress.cgroup = match &raw.cgroup {
            None => root,
            Some(dir) if dir.get_ref().is_empty() => root,
            Some(dir) => self.attach_cgroup(&root, dir)?,
        };
        Ok(egress)
    }

    fn smart_hosts(&self, raw: &[Spanned<String>], egress: &mut Egress) -> Result<(), ConfigError> {
        for host in raw {
            let text = host.get_ref().trim();
            if let Ok(addr) = text.parse::<IpAddr>() {
                egress.smart_host_cidrs.push(IpNet::from(addr));
            } else if text.contains('/') {
                let net = cidr::parse_cidr(text)
                    .map_err(|e| self.error_at(host.span(), format!("egress.smart_hosts: {e}")))?;
                egress.smart_host_cidrs.push(net);
            } else {
                let addrs = resolve(text).map_err(|reason| {
                    self.error_at(host.span(), format!("egress.smart_hosts: {reason}"))
                })?;
                egress.smart_host_names.push(SmartHostName {
                    name: text.to_owned(),
                    addrs,
                });
            }
        }
        egress.smart_hosts = smart_host_set(&egress.smart_host_cidrs, &egress.smart_host_names);
        Ok(())
    }

    fn users(&self, raw: &[Spanned<UserRef>]) -> Result<Vec<u32>, ConfigError> {
        if raw.len() > MAX_USERS {
            return Err(self.error_at(
                raw[MAX_USERS].span(),
                format!("egress.allow_users: at most {MAX_USERS} users"),
            ));
        }
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let mut uids = Vec::new();
        for user in raw {
            let uid = match user.get_ref() {
                UserRef::Uid(uid) => u32::try_from(*uid).map_err(|_| {
                    self.error_at(user.span(), format!("egress.allow_users: {uid} is not a uid"))
                })?,
                UserRef::Name(name) => users::uid_of(&passwd, name).ok_or_else(|| {
                    self.error_at(
                        user.span(),
                        format!(
                            "egress.allow_users: no user {name:?} in /etc/passwd; give its uid or create the user first"
                        ),
                    )
                })?,
            };
            uids.push(uid);
        }
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    fn allowed_cgroups(
        &self,
        root: &Path,
        raw: &[Spanned<String>],
    ) -> Result<Vec<AllowedCgroup>, ConfigError> {
        if raw.len() > MAX_CGROUPS {
            return Err(self.error_at(
                raw[MAX_CGROUPS].span(),
                format!("egress.allow_cgroups: at most {MAX_CGROUPS} cgroups"),
            ));
        }
        raw.iter()
            .map(|dir| {
                let path = under_root(root, dir.get_ref());
                let relative = cgroup_name(root, &path);
                let relative = relative.trim_start_matches('/');
                let id = std::fs::metadata(&path)
                    .ok()
                    .filter(std::fs::Metadata::is_dir)
                    .map(|meta| meta.ino())
                    .ok_or_else(|| {
                        self.error_at(
                            dir.span(),
                            format!(
                                "egress.allow_cgroups: no cgroup {} (paths are relative to the cgroup2 root {}; `systemctl status UNIT` shows a unit's cgroup)",
                                path.display(),
                                root.display()
                            ),
                        )
                    })?;
                Ok(AllowedCgroup {
                    path: relative.to_owned(),
                    id,
                    level: Path::new(relative).components().count() as u32,
                })
            })
            .collect()
    }

    fn attach_cgroup(&self, root: &Path, dir: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        let path = under_root(root, dir.get_ref());
        if !path.is_dir() {
            return Err(self.error_at(
                dir.span(),
                format!(
                    "egress.cgroup = {:?} is not a cgroup v2 directory under {}; leave it empty for the whole host",
                    dir.get_ref(),
                    root.display()
                ),
            ));
        }
        Ok(path)
    }
}

/// The addresses a smart host's name resolves to (the system resolver: /etc/hosts, then DNS).
pub fn resolve(name: &str) -> Result<Vec<IpAddr>, Unresolved> {
    let mut addrs: Vec<IpAddr> = (name, 25)
        .to_socket_addrs()
        .map_err(|source| Unresolved::Failed {
            name: name.to_owned(),
            source,
        })?
        .map(|a| a.ip())
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(Unresolved::NoAddress(name.to_owned()));
    }
    Ok(addrs)
}

/// Why a smart host's name gives no address.
#[derive(Debug, thiserror::Error)]
pub enum Unresolved {
    #[error("{name:?} does not resolve: {source}; give its address or fix its DNS")]
    Failed {
        name: String,
        source: std::io::Error,
    },
    #[error("{0:?} resolves to no address")]
    NoAddress(String),
}

/// A cgroup the config names, as systemd does ("/system.slice/postfix.service", under the cgroup2
/// root) or by its full path ("/sys/fs/cgroup/system.slice/postfix.service"): its directory.
fn under_root(root: &Path, text: &str) -> PathBuf {
    let path = Path::new(text);
    if path.starts_with(root) {
        return path.to_path_buf();
    }
    root.join(text.trim_matches('/'))
}

/// How a cgroup is named to operators, one form everywhere (config summary, status, metrics,
/// the egress log): its path under the cgroup2 root `root`, as systemd names it
/// ("/system.slice/postfix.service"; "/" for the root).
pub fn cgroup_name(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(relative) => format!("/{}", relative.display()),
        Err(_) => path.display().to_string(),
    }
}

/// [`cgroup_name`] under the cgroup2 root of this host.
pub fn cgroup_display(path: &Path) -> String {
    cgroup2_root().map_or_else(
        |_| path.display().to_string(),
        |root| cgroup_name(&root, path),
    )
}

/// Where the cgroup2 hierarchy is mounted, from /proc/self/mounts (/sys/fs/cgroup on a pure v2
/// host, /sys/fs/cgroup/unified on a hybrid one).
pub fn cgroup2_root() -> Result<PathBuf, NoCgroup2> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(NoCgroup2::Mounts)?;
    mounts
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == "cgroup2").then(|| PathBuf::from(point))
        })
        .ok_or(NoCgroup2::NotMounted)
}

/// Why the cgroup2 hierarchy cannot be found.
#[derive(Debug, thiserror::Error)]
pub enum NoCgroup2 {
    #[error("cannot read /proc/self/mounts: {0}")]
    Mounts(std::io::Error),
    #[error(
        "no cgroup2 file system is mounted: the egress guard needs cgroup v2 (mount -t cgroup2 none /sys/fs/cgroup)"
    )]
    NotMounted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_is_named_one_way_and_found_either_way() {
        let root = Path::new("/sys/fs/cgroup");
        for text in [
            "/sys/fs/cgroup/system.slice/postfix.service",
            "/system.slice/postfix.service",
            "system.slice/postfix.service",
        ] {
            let path = under_root(root, text);
            assert_eq!(path, root.join("system.slice/postfix.service"), "{text}");
            assert_eq!(cgroup_name(root, &path), "/system.slice/postfix.service");
        }
        assert_eq!(cgroup_name(root, root), "/");
        assert_eq!(under_root(root, ""), root);
    }

    #[test]
    fn the_cgroup2_root_is_found() {
        let root = cgroup2_root().expect("cgroup2 mounted on the test machine");
        assert!(root.join("cgroup.procs").exists(), "{}", root.display());
    }
}
