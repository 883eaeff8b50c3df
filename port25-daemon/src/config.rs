//! The configuration of `port25d`: loading the TOML file, validating it into the effective
//! policy ([`Config`]), and explaining every mistake with the file, the line and what to do
//! (like `nginx -t`).
//!
//! Parsing happens in two steps: serde reads the text into `Raw*` structs that keep the byte
//! span of every value that needs more checks than its type gives (ranges, CIDRs, paths), then
//! [`Config::parse`] checks those values and turns a failing span into a line number.

mod cidr;
#[cfg(test)]
mod tests;

use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::model::{ListKind, Mode, OnExit, Policy, XdpModeSetting};

pub use cidr::{CidrSet, parse_cidr};

pub const DEFAULT_PATH: &str = "/etc/port25/port25.toml";
pub const EMBEDDED_DEFAULT: &str = include_str!("../../packaging/port25.toml");
/// What [`Config::source`] and errors call the embedded default.
const EMBEDDED_ORIGIN: &str = "<embedded default>";

/// Token bucket settings for policy `ratelimit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub syn_rate: u32,
    pub syn_burst: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub global_syn_rate: u32,
    pub global_syn_burst: u32,
    pub tracked_sources: u32,
    /// Seconds a source prefix stays verified after one of its clients completes a handshake
    /// (proving its address is not spoofed): verified prefixes skip the global bucket. 0: off.
    pub verified_ttl: u32,
}

/// The effective, validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file path, or `<embedded default>`.
    pub source: String,
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpModeSetting,
    /// Sorted, deduplicated, never empty, never 0.
    pub ports: Vec<u16>,
    pub mode: Mode,
    pub policy: Policy,
    pub allow: CidrSet,
    pub deny: CidrSet,
    pub ratelimit: RateLimit,
    pub metrics_listen: SocketAddr,
    pub on_exit: OnExit,
    /// Directories whose files are list files (blocklist feeds): watched for changes.
    pub watched_dirs: Vec<PathBuf>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    interfaces: Vec<Spanned<String>>,
    xdp_mode: Option<XdpModeSetting>,
    ports: Option<Spanned<Vec<Spanned<i64>>>>,
    mode: Option<Mode>,
    policy: Option<Policy>,
    on_exit: Option<OnExit>,
    #[serde(default, deserialize_with = "table")]
    allow: RawList,
    #[serde(default, deserialize_with = "table")]
    deny: RawList,
    #[serde(default, deserialize_with = "table")]
    ratelimit: RawRateLimit,
    #[serde(default, deserialize_with = "table")]
    metrics: RawMetrics,
}

/// Reads a struct from a TOML table only. Serde's derived structs also accept an array, filling
/// the fields in order, so `ratelimit = [5, 10]` would quietly mean syn_rate 5, syn_burst 10.
fn table<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct TableOnly<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for TableOnly<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(TableOnly(std::marker::PhantomData))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList {
    #[serde(default)]
    cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    files: Vec<Spanned<String>>,
    #[serde(default)]
    dirs: Vec<Spanned<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    syn_rate: Option<Spanned<i64>>,
    syn_burst: Option<Spanned<i64>>,
    ipv4_prefix: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
    global_syn_rate: Option<Spanned<i64>>,
    global_syn_burst: Option<Spanned<i64>>,
    tracked_sources: Option<Spanned<i64>>,
    verified_ttl: Option<Spanned<i64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

/// The text being parsed and where it came from, to turn byte spans into `file:line` errors.
struct Source<'a> {
    text: &'a str,
    origin: &'a Path,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn error_at(&self, span: Range<usize>, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(self.origin, Some(self.line_of(span.start)), reason)
    }

    /// A TOML syntax error (the text is not TOML at all), with the column to find it quickly.
    fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        let Some(span) = e.span() else {
            return ConfigError::new(
                self.origin,
                None,
                format!("TOML syntax error: {}", e.message().trim()),
            );
        };
        // Bytes, not str slicing: a span off a char boundary must not panic.
        let end = span.start.min(self.text.len());
        let line_start = self.text.as_bytes()[..end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column = self
            .text
            .get(line_start..span.start)
            .map_or(1, |s| s.chars().count() + 1);
        self.error_at(
            span,
            format!(
                "TOML syntax error at column {column}: {}",
                e.message().trim()
            ),
        )
    }

    /// A valid TOML document that does not fit the schema: unknown key, wrong type, bad value.
    fn schema_error(&self, mut e: toml::de::Error) -> ConfigError {
        let line = e.span().map(|span| self.line_of(span.start));
        // Without the input, the error's Display is the message plus "in `table.key`" when it
        // knows the key: exactly the part worth keeping, since the line is reported separately.
        e.set_input(None);
        let mut reason = e.to_string().trim().replace('\n', " ");
        // Name the key first, as the other errors do: "ports: invalid type: ...".
        if let Some((message, key)) = reason.rsplit_once(" in `")
            && let Some(key) = key.strip_suffix('`')
        {
            reason = format!("{key}: {message}");
        }
        // serde speaks Rust; operators write TOML.
        reason = reason
            .replace("unknown field", "unknown key")
            .replace("unknown variant", "unknown value")
            .replace("expected i64", "expected an integer")
            .replace("type: sequence", "type: array")
            .replace("expected a sequence", "expected a list [...]")
            .replace("expected a map", "expected a table");
        if reason.contains("unknown key") {
            reason.push_str("; check the spelling (every key is documented in the default config)");
        }
        ConfigError::new(self.origin, line, reason)
    }

    /// An integer setting with its default and allowed range.
    fn ranged(
        &self,
        value: &Option<Spanned<i64>>,
        key: &str,
        default: u32,
        range: RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let (min, max) = range.into_inner();
        u32::try_from(*value.get_ref())
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| {
                self.error_at(
                    value.span(),
                    format!(
                        "{key} = {} is out of range; use a value from {min} to {max}",
                        value.get_ref()
                    ),
                )
            })
    }

    fn ports(&self, raw: Option<Spanned<Vec<Spanned<i64>>>>) -> Result<Vec<u16>, ConfigError> {
        let Some(raw) = raw else { return Ok(vec![25]) };
        if raw.get_ref().is_empty() {
            return Err(self.error_at(
                raw.span(),
                "ports is empty; list at least one protected TCP port, e.g. ports = [25]",
            ));
        }
        let mut ports = Vec::with_capacity(raw.get_ref().len());
        for port in raw.get_ref() {
            let p = u16::try_from(*port.get_ref())
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| {
                    self.error_at(
                        port.span(),
                        format!("port must be 1-65535 (got {})", port.get_ref()),
                    )
                })?;
            ports.push(p);
        }
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }

    fn interfaces(&self, raw: &[Spanned<String>]) -> Result<Vec<String>, ConfigError> {
        let mut names: Vec<String> = Vec::with_capacity(raw.len());
        for name in raw {
            if let Err(why) = check_interface_name(name.get_ref()) {
                return Err(self.error_at(
                    name.span(),
                    format!("invalid interface name {:?}: {why}", name.get_ref()),
                ));
            }
            // Listing an interface twice would attach twice; once is what was meant.
            if !names.contains(name.get_ref()) {
                names.push(name.get_ref().clone());
            }
        }
        Ok(names)
    }

    /// One of `[allow]` / `[deny]`: the inline CIDRs plus every list file.
    fn list(&self, table: ListKind, raw: &RawList) -> Result<CidrSet, ConfigError> {
        let mut nets: Vec<IpNet> = Vec::new();
        for entry in &raw.cidrs {
            let net = cidr::parse_cidr(entry.get_ref()).map_err(|reason| {
                self.error_at(entry.span(), format!("{table}.cidrs: {reason}"))
            })?;
            nets.push(net);
        }
        for file in &raw.files {
            if file.get_ref().trim().is_empty() {
                return Err(self.error_at(file.span(), format!("{table}.files: empty path")));
            }
            let path = self.resolve(file.get_ref());
            let text = std::fs::read_to_string(&path).map_err(|e| {
                self.error_at(
                    file.span(),
                    format!(
                        "{table}.files: cannot read list file {}: {e}",
                        path.display()
                    ),
                )
            })?;
            // An error inside a list file points into that file, where the fix is.
            let listed = cidr::parse_list(&text)
                .map_err(|(line, reason)| ConfigError::new(&path, Some(line), reason))?;
            nets.extend(listed);
        }
        for dir in &raw.dirs {
            let path = self.resolve(dir.get_ref());
            let files = list_dir_files(&path).map_err(|e| {
                self.error_at(
                    dir.span(),
                    format!(
                        "{table}.dirs: cannot read directory {}: {e}",
                        path.display()
                    ),
                )
            })?;
            for file in files {
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    ConfigError::new(&file, None, format!("cannot read list file: {e}"))
                })?;
                let listed = cidr::parse_list(&text)
                    .map_err(|(line, reason)| ConfigError::new(&file, Some(line), reason))?;
                nets.extend(listed);
            }
        }
        Ok(CidrSet::new(nets))
    }

    fn dirs(&self, raw: &[&RawList]) -> Vec<PathBuf> {
        raw.iter()
            .flat_map(|list| list.dirs.iter())
            .map(|dir| self.resolve(dir.get_ref()))
            .collect()
    }

    /// List file paths are relative to the config file, so a config and its lists can be moved
    /// (or tested) together wherever the daemon is started from.
    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        match self.origin.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    fn metrics_listen(&self, raw: &Option<Spanned<String>>) -> Result<SocketAddr, ConfigError> {
        let Some(raw) = raw else {
            return Ok(SocketAddr::from(([127, 0, 0, 1], 9725)));
        };
        raw.get_ref().trim().parse().map_err(|_| {
            self.error_at(
                raw.span(),
                format!(
                    "metrics.listen = {:?} is not a socket address; write IP:PORT, e.g. \"127.0.0.1:9725\" or \"[::1]:9725\" (host names are not resolved)",
                    raw.get_ref()
                ),
            )
        })
    }
}

/// The list files of a watched directory: regular files, in name order, leaving out hidden files
/// and editor or package-manager leftovers (`x~`, `x.dpkg-old`, `x.swp`...).
pub fn list_dir_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = name.starts_with('.')
            || name.ends_with('~')
            || name.contains(".dpkg-")
            || name.ends_with(".swp")
            || name.ends_with(".tmp");
        if !leftover && entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// What a watched directory looks like now: file names, sizes and modification times. A change
/// means a reload.
pub fn watched_fingerprint(dirs: &[PathBuf]) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut seen = Vec::new();
    for dir in dirs {
        for file in list_dir_files(dir).unwrap_or_default() {
            let meta = std::fs::metadata(&file).ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            seen.push((file, len, modified));
        }
    }
    seen
}

/// The kernel's rules for interface names (`dev_valid_name`), so a typo is reported at its line
/// instead of as a missing interface at start-up.
fn check_interface_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    // IFNAMSIZ is 16 including the terminating NUL.
    if name.len() > 15 {
        return Err("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("not a valid name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err("contains '/', ':', a NUL or whitespace");
    }
    Ok(())
}

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

    /// Parses text; `origin` names it in errors and anchors relative list-file paths.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let src = Source { text, origin };
        // Syntax first, on its own: its errors need different words than schema errors, and
        // toml's error type does not say which kind it is. Config files are small.
        text.parse::<toml::Table>()
            .map_err(|e| src.syntax_error(&e))?;
        let raw: RawConfig = toml::from_str(text).map_err(|e| src.schema_error(e))?;
        let r = &raw.ratelimit;
        let ratelimit = RateLimit {
            syn_rate: src.ranged(&r.syn_rate, "ratelimit.syn_rate", 20, 1..=1_000_000)?,
            syn_burst: src.ranged(&r.syn_burst, "ratelimit.syn_burst", 40, 1..=1_000_000)?,
            ipv4_prefix: src.ranged(&r.ipv4_prefix, "ratelimit.ipv4_prefix", 32, 1..=32)? as u8,
            ipv6_prefix: src.ranged(&r.ipv6_prefix, "ratelimit.ipv6_prefix", 64, 1..=128)? as u8,
            global_syn_rate: src.ranged(
                &r.global_syn_rate,
                "ratelimit.global_syn_rate",
                2000,
                1..=10_000_000,
            )?,
            global_syn_burst: src.ranged(
                &r.global_syn_burst,
                "ratelimit.global_syn_burst",
                4000,
                1..=10_000_000,
            )?,
            tracked_sources: src.ranged(
                &r.tracked_sources,
                "ratelimit.tracked_sources",
                65536,
                1024..=16_777_216,
            )?,
            verified_ttl: src.ranged(&r.verified_ttl, "ratelimit.verified_ttl", 600, 0..=86_400)?,
        };
        Ok(Config {
            source: origin.display().to_string(),
            interfaces: src.interfaces(&raw.interfaces)?,
            xdp_mode: raw.xdp_mode.unwrap_or(XdpModeSetting::Auto),
            ports: src.ports(raw.ports)?,
            mode: raw.mode.unwrap_or(Mode::Enforce),
            policy: raw.policy.unwrap_or(Policy::Ratelimit),
            allow: src.list(ListKind::Allow, &raw.allow)?,
            deny: src.list(ListKind::Deny, &raw.deny)?,
            ratelimit,
            metrics_listen: src.metrics_listen(&raw.metrics.listen)?,
            on_exit: raw.on_exit.unwrap_or(OnExit::Detach),
            watched_dirs: src.dirs(&[&raw.allow, &raw.deny]),
        })
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
        for name in &self.interfaces {
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
                        "interface {name:?} does not exist on this host (`ip link` lists the interfaces); fix `interfaces` in the config or the --iface option"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The human summary printed by `port25d check-config`.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn join<T: fmt::Display>(items: &[T]) -> String {
            items
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
        let interfaces = if self.interfaces.is_empty() {
            "(none: nothing will be attached)".to_string()
        } else {
            join(&self.interfaces)
        };
        let mode = match self.mode {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor (count would-be drops, drop nothing)",
        };
        let policy = match self.policy {
            Policy::Drop => "drop (only allowlisted sources may connect)",
            Policy::Ratelimit => "ratelimit (new connections from other sources are rate limited)",
        };
        writeln!(f, "{:<18}{}", "config", self.source)?;
        writeln!(f, "{:<18}{interfaces}", "interfaces")?;
        writeln!(f, "{:<18}{}", "xdp mode", self.xdp_mode)?;
        writeln!(f, "{:<18}{}", "ports", join(&self.ports))?;
        writeln!(f, "{:<18}{mode}", "mode")?;
        writeln!(f, "{:<18}{policy}", "policy")?;
        write_list(f, ListKind::Allow, &self.allow)?;
        write_list(f, ListKind::Deny, &self.deny)?;
        let r = &self.ratelimit;
        let unused = if self.policy == Policy::Drop {
            "  (unused with policy drop)"
        } else {
            ""
        };
        writeln!(f, "ratelimit{unused}")?;
        writeln!(
            f,
            "  {:<16}{} SYN/s, burst {}",
            "per source", r.syn_rate, r.syn_burst
        )?;
        writeln!(
            f,
            "  {:<16}IPv4 /{}, IPv6 /{}",
            "source prefix", r.ipv4_prefix, r.ipv6_prefix
        )?;
        writeln!(
            f,
            "  {:<16}{} SYN/s, burst {}",
            "global", r.global_syn_rate, r.global_syn_burst
        )?;
        writeln!(f, "  {:<16}{}", "tracked sources", r.tracked_sources)?;
        if r.verified_ttl == 0 {
            writeln!(f, "  {:<16}off", "verified")?;
        } else {
            writeln!(
                f,
                "  {:<16}{} s after a completed handshake (skips the global cap)",
                "verified", r.verified_ttl
            )?;
        }
        writeln!(f, "{:<18}http://{}/metrics", "metrics", self.metrics_listen)?;
        if !self.watched_dirs.is_empty() {
            let dirs: Vec<String> = self
                .watched_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            writeln!(
                f,
                "{:<18}{} (reloaded when their files change)",
                "watched dirs",
                dirs.join(", ")
            )?;
        }
        let on_exit = match self.on_exit {
            OnExit::Detach => "detach (SIGTERM removes the filter)",
            OnExit::Keep => "keep (the filter stays after SIGTERM; `port25d detach` removes it)",
        };
        write!(f, "{:<18}{on_exit}", "on exit")
    }
}

/// Lists at most this many entries of each list; the rest are counted.
const DISPLAY_LIST_CAP: usize = 20;

fn write_list(f: &mut fmt::Formatter<'_>, name: ListKind, set: &CidrSet) -> fmt::Result {
    let noun = if set.len() == 1 { "entry" } else { "entries" };
    writeln!(
        f,
        "{name:<18}{} {noun} ({} IPv4, {} IPv6)",
        set.len(),
        set.v4.len(),
        set.v6.len()
    )?;
    for net in set.iter().take(DISPLAY_LIST_CAP) {
        writeln!(f, "  {net}")?;
    }
    if set.len() > DISPLAY_LIST_CAP {
        writeln!(f, "  … and {} more", set.len() - DISPLAY_LIST_CAP)?;
    }
    Ok(())
}
