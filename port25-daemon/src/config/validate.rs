//! From the raw config to the validated [`Config`]: the sections in order (each checked in its
//! own file), and the top-level keys (ports, interfaces).

use std::path::Path;

use toml::Spanned;

use super::raw::RawConfig;
use super::source::Source;
use super::{Config, ConfigError};
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
        let ratelimit = src.ratelimit(&raw.ratelimit)?;
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
            ratelimit: ratelimit.clone(),
            synproxy: src.synproxy(&raw.synproxy)?,
            metrics_listen: src.metrics_listen(&raw.metrics)?,
            on_exit: raw.on_exit.unwrap_or(OnExit::Detach),
            reattach: raw.reattach.unwrap_or(true),
            watched_dirs: src.dirs(&[&raw.allow, &raw.deny]),
            egress: src.egress(&raw.egress)?,
            crowdsec: src.crowdsec(&raw.crowdsec, &ratelimit, policy)?,
            shadow: src.shadow(&raw.shadow)?,
        })
    }
}

impl Source<'_> {
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
                        format!(
                            "{key}: {} is out of range; use a port from 1 to 65535",
                            port.get_ref()
                        ),
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
