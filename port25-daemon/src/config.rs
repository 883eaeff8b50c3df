//! The configuration of `port25d`: loading the TOML file, validating it into the effective
//! policy ([`Config`]), and explaining every mistake with the file, the line and what to do
//! (like `nginx -t`).
//!
//! Parsing happens in two steps: serde reads the text into `Raw*` structs that keep the byte
//! span of every value that needs more checks than its type gives (ranges, CIDRs, paths), then
//! [`Config::parse`] checks those values and turns a failing span into a line number (`source.rs`).
//! Each section has its file: its raw table, its validated type and its rules (`lists.rs`,
//! `ratelimit.rs`, `synproxy.rs`, `metrics.rs`, `egress.rs`, `crowdsec.rs`). This room depends on
//! the model alone; `check-config`'s rendering lives with that command.
#![allow(
    unreachable_pub,
    reason = "public to the tests and the bench through `testing`"
)]

mod cidr;
mod crowdsec;
pub(crate) mod duration;
mod egress;
mod lists;
mod metrics;
mod ratelimit;
mod raw;
mod shadow;
mod source;
mod synproxy;
#[cfg(test)]
mod tests;
mod validate;

use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::model::{Mode, OnExit, Policy, XdpCoexist, XdpModeSetting};

pub use cidr::{CidrSet, parse_cidr};
#[cfg(test)]
pub use crowdsec::Secret;
pub use crowdsec::{Bounds, Crowdsec, Reporter};
pub use egress::{Egress, cgroup_display, cgroup_name, cgroup2_root};
pub use lists::list_dir_files;
pub use ratelimit::RateLimit;
pub use synproxy::Synproxy;

pub const DEFAULT_PATH: &str = "/etc/port25/port25.toml";
pub const EMBEDDED_DEFAULT: &str = include_str!("../../packaging/port25.toml");
/// What [`Config::source`] and errors call the embedded default.
const EMBEDDED_ORIGIN: &str = "<embedded default>";

/// The effective, validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file path, or `<embedded default>`.
    pub source: String,
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpModeSetting,
    /// Alone on the interface, or in libxdp's dispatcher beside other programs.
    pub xdp_coexist: XdpCoexist,
    /// Sorted, deduplicated, never empty, never 0.
    pub ports: Vec<u16>,
    pub mode: Mode,
    pub policy: Policy,
    pub allow: CidrSet,
    pub deny: CidrSet,
    pub ratelimit: RateLimit,
    /// The SYN cookies of policy synproxy (`[synproxy]`).
    pub synproxy: Synproxy,
    pub metrics_listen: SocketAddr,
    pub on_exit: OnExit,
    /// Attach again where someone took port25's link away, once the interface is free.
    pub reattach: bool,
    /// Directories whose files are list files (blocklist feeds): watched for changes.
    pub watched_dirs: Vec<PathBuf>,
    /// The outbound guard (`[egress]`).
    pub egress: Egress,
    /// The CrowdSec bouncer and reporter (`[crowdsec]`); `None`: off.
    pub crowdsec: Option<Crowdsec>,
    /// A candidate config judged as the shadow policy (`[shadow] config`); `None`: none.
    pub shadow: Option<PathBuf>,
}

/// Command-line overrides applied over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Non-empty replaces the file's list.
    pub interfaces: Vec<String>,
    pub xdp_mode: Option<XdpModeSetting>,
    /// Forces monitor mode; `false` keeps the file's mode.
    pub monitor: bool,
    pub metrics_listen: Option<SocketAddr>,
}

/// A configuration error: where it is and what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct ConfigError {
    pub location: Location,
    pub reason: String,
}

/// A file, and the 1-based line in it when the error has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

impl ConfigError {
    fn new(file: &Path, line: Option<usize>, reason: impl Into<String>) -> Self {
        ConfigError {
            location: Location {
                file: file.to_path_buf(),
                line,
            },
            reason: reason.into(),
        }
    }
}

// ---- The file as serde reads it ----------------------------------------------------------------
//
// Every struct denies unknown fields: a misspelt key silently ignored is a policy that is not
// the one the operator wrote. Integers are read as i64 so that a negative or huge value reaches
// the range check (and its helpful message) instead of a bare "expected u32".

impl Config {
    /// `Some(path)`: read and validate that file. `None`: [`DEFAULT_PATH`] if it exists, else
    /// [`EMBEDDED_DEFAULT`].
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let read_error = |path: &Path, e: io::Error| {
            ConfigError::new(path, None, format!("cannot read config file: {e}"))
        };
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| read_error(path, e))?;
                Config::parse(&text, path)
            }
            None => {
                let default = Path::new(DEFAULT_PATH);
                match std::fs::read_to_string(default) {
                    Ok(text) => Config::parse(&text, default),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        Config::parse(EMBEDDED_DEFAULT, Path::new(EMBEDDED_ORIGIN))
                    }
                    // It exists but cannot be read: falling back would silently ignore the
                    // operator's policy.
                    Err(e) => Err(read_error(default, e)),
                }
            }
        }
    }

    /// What is valid but likely a mistake, a sentence each: `check-config` prints them, the
    /// daemon logs them at start and reload.
    pub fn warnings(&self) -> Vec<String> {
        let mut said = Vec::new();
        for everything in ["0.0.0.0/0", "::/0"] {
            if let Ok(net) = everything.parse::<ipnet::IpNet>()
                && self.deny.contains_net(&net)
            {
                let family = if net.addr().is_ipv4() { "IPv4" } else { "IPv6" };
                said.push(format!(
                    "[deny] holds {net}: every {family} source is dropped on the protected ports, \
                     allowlisted ones too (deny beats allow)"
                ));
            }
        }
        said
    }

    pub fn apply(&mut self, o: &Overrides) {
        if !o.interfaces.is_empty() {
            self.interfaces.clear();
            for name in &o.interfaces {
                if !self.interfaces.contains(name) {
                    self.interfaces.push(name.clone());
                }
            }
        }
        if let Some(xdp_mode) = o.xdp_mode {
            self.xdp_mode = xdp_mode;
        }
        if o.monitor {
            self.mode = Mode::Monitor;
        }
        if let Some(listen) = o.metrics_listen {
            self.metrics_listen = listen;
        }
    }

    /// Every configured interface exists on this host. Separate from [`Config::parse`] because
    /// labs create their interfaces after writing the config.
    pub fn check_interfaces(&self) -> Result<(), ConfigError> {
        for name in self
            .interfaces
            .iter()
            .chain(&self.egress.forward_interfaces)
        {
            // A name with a NUL cannot exist; treat it like any other missing interface.
            let index = match CString::new(name.as_str()) {
                // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
                Ok(c) => unsafe { libc::if_nametoindex(c.as_ptr()) },
                Err(_) => 0,
            };
            if index == 0 {
                return Err(ConfigError::new(
                    Path::new(&self.source),
                    None,
                    format!(
                        "interface {name:?} does not exist on this host (`ip link` lists the interfaces); fix `interfaces` (or `egress.forward_interfaces`) in the config or the --iface option"
                    ),
                ));
            }
        }
        Ok(())
    }
}
