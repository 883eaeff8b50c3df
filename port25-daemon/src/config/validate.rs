//! From the raw config to the validated [`Config`]: each value checked against its rule, and a
//! failing value's byte span turned into `file:line` and a reason with the fix.

use std::io;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::Spanned;

use super::raw::{RawConfig, RawList};
use super::{CidrSet, Config, ConfigError, RateLimit, cidr};
use crate::model::{ListKind, Mode, OnExit, Policy, XdpCoexist, XdpModeSetting};

impl Config {
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
        let policy = raw.policy.unwrap_or(Policy::Ratelimit);
        let xdp_coexist = raw.xdp_coexist.unwrap_or_default();
        if policy == Policy::Synproxy && xdp_coexist == XdpCoexist::Libxdp {
            return Err(src.error(
                "policy = \"synproxy\" needs xdp_coexist = \"exclusive\": the SYN cookies are \
                 answered by a second XDP program that port25 calls from its own, which a libxdp \
                 dispatcher's component cannot do; set xdp_coexist = \"exclusive\" or another \
                 policy",
            ));
        }
        Ok(Config {
            source: origin.display().to_string(),
            interfaces: src.interfaces(&raw.interfaces)?,
            xdp_mode: raw.xdp_mode.unwrap_or(XdpModeSetting::Auto),
            xdp_coexist,
            ports: src.ports(raw.ports.as_ref(), "ports")?,
            mode: raw.mode.unwrap_or(Mode::Enforce),
            policy,
            allow: src.list(ListKind::Allow, &raw.allow)?,
            deny: src.list(ListKind::Deny, &raw.deny)?,
            ratelimit,
            synproxy: src.synproxy(&raw.synproxy)?,
            metrics_listen: src.metrics_listen(&raw.metrics.listen)?,
            on_exit: raw.on_exit.unwrap_or(OnExit::Detach),
            reattach: raw.reattach.unwrap_or(true),
            watched_dirs: src.dirs(&[&raw.allow, &raw.deny]),
            egress: src.egress(&raw.egress)?,
            crowdsec: src.crowdsec(&raw.crowdsec)?,
        })
    }
}

/// The text being parsed and where it came from, to turn byte spans into `file:line` errors.
pub(super) struct Source<'a> {
    text: &'a str,
    origin: &'a Path,
}

impl Source<'_> {
    pub(super) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub(super) fn error_at(&self, span: Range<usize>, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(self.origin, Some(self.line_of(span.start)), reason)
    }

    /// An error about the file as a whole, or about the host it is checked on: no line.
    pub(super) fn error(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(self.origin, None, reason)
    }

    /// A TOML syntax error (the text is not TOML at all), with the column to find it quickly.
    pub(super) fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
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
    pub(super) fn schema_error(&self, mut e: toml::de::Error) -> ConfigError {
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
    pub(super) fn ranged(
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

    pub(super) fn ports(
        &self,
        raw: Option<&Spanned<Vec<Spanned<i64>>>>,
        key: &str,
    ) -> Result<Vec<u16>, ConfigError> {
        let Some(raw) = raw else { return Ok(vec![25]) };
        if raw.get_ref().is_empty() {
            return Err(self.error_at(
                raw.span(),
                format!("{key} is empty; list at least one TCP port, e.g. {key} = [25]"),
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

    pub(super) fn interfaces(&self, raw: &[Spanned<String>]) -> Result<Vec<String>, ConfigError> {
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
    pub(super) fn list(&self, table: ListKind, raw: &RawList) -> Result<CidrSet, ConfigError> {
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
            let listed = cidr::parse_list(&text).map_err(|(line, reason)| {
                ConfigError::new(&path, Some(line), reason.to_string())
            })?;
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
                let listed = cidr::parse_list(&text).map_err(|(line, reason)| {
                    ConfigError::new(&file, Some(line), reason.to_string())
                })?;
                nets.extend(listed);
            }
        }
        Ok(CidrSet::new(nets))
    }

    pub(super) fn dirs(&self, raw: &[&RawList]) -> Vec<PathBuf> {
        raw.iter()
            .flat_map(|list| list.dirs.iter())
            .map(|dir| self.resolve(dir.get_ref()))
            .collect()
    }

    /// List file paths are relative to the config file, so a config and its lists can be moved
    /// (or tested) together wherever the daemon is started from.
    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        match self.origin.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    pub(super) fn metrics_listen(
        &self,
        raw: &Option<Spanned<String>>,
    ) -> Result<SocketAddr, ConfigError> {
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
