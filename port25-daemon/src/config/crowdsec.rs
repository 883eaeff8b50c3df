//! `[crowdsec]`: port25d as a bouncer of a CrowdSec Local API (its ban decisions become a deny
//! list of their own) and, with watcher credentials, a reporter of the sources its rate limiter
//! keeps dropping. The key and password files are read here, so that a missing or unreadable one
//! is a config error with its line. docs/ARCHITECTURE.md, § CrowdSec.

use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use super::duration;
use super::source::Source;
use super::{ConfigError, RateLimit};
use crate::model::Policy;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCrowdsec {
    lapi_url: Option<Spanned<String>>,
    bouncer_key_file: Option<Spanned<String>>,
    update_frequency: Option<Spanned<i64>>,
    lapi_timeout: Option<Spanned<i64>>,
    decision_types: Option<Vec<Spanned<String>>>,
    scopes: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    origins: Vec<Spanned<String>>,
    machine_id: Option<Spanned<String>>,
    machine_password_file: Option<Spanned<String>>,
    report_after: Option<Spanned<i64>>,
    report_window: Option<Spanned<i64>>,
    report_ban: Option<Spanned<String>>,
    min_ipv4_prefix: Option<Spanned<i64>>,
    min_ipv6_prefix: Option<Spanned<i64>>,
    max_answer_mb: Option<Spanned<i64>>,
    max_decisions: Option<Spanned<i64>>,
}

/// A credential read from a file: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// The decision scopes a prefix list can enforce.
pub const SCOPES: [&str; 2] = ["ip", "range"];

/// The validated `[crowdsec]` table; `None` in [`super::Config`] when `lapi_url` is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crowdsec {
    /// Without a trailing slash, e.g. `http://127.0.0.1:8080`.
    pub lapi_url: String,
    pub bouncer_key: Secret,
    /// Seconds between polls.
    pub update_frequency: u32,
    /// Seconds one request to the LAPI may take, answer included.
    pub lapi_timeout: u32,
    /// Lower case; decisions of other types are skipped (and counted).
    pub decision_types: Vec<String>,
    /// Lower case, each one of [`SCOPES`].
    pub scopes: Vec<String>,
    /// Lower case; empty: every origin.
    pub origins: Vec<String>,
    /// What the fleet may impose on this gateway (docs/ARCHITECTURE.md, § CrowdSec, trust rules).
    pub bounds: Bounds,
    pub reporter: Option<Reporter>,
}

/// The bounds on what a LAPI may make port25d hold: decisions on prefixes shorter than these are
/// refused (a /0 never passes: the least is 1), an answer longer than `max_answer_bytes` is
/// refused unread, and past `max_decisions` held, new ones are skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub min_ipv4_prefix: u8,
    pub min_ipv6_prefix: u8,
    pub max_answer_bytes: u64,
    pub max_decisions: usize,
}

impl Bounds {
    pub const DEFAULT_MIN_IPV4_PREFIX: u8 = 16;
    pub const DEFAULT_MIN_IPV6_PREFIX: u8 = 32;
    pub const DEFAULT_MAX_ANSWER_MB: u32 = 32;
    pub const DEFAULT_MAX_DECISIONS: u32 = 200_000;

    /// Whether a decision on `net` is narrow enough to take.
    pub fn allows(&self, net: &ipnet::IpNet) -> bool {
        let least = match net {
            ipnet::IpNet::V4(_) => self.min_ipv4_prefix,
            ipnet::IpNet::V6(_) => self.min_ipv6_prefix,
        };
        net.prefix_len() >= least.max(1)
    }
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            min_ipv4_prefix: Self::DEFAULT_MIN_IPV4_PREFIX,
            min_ipv6_prefix: Self::DEFAULT_MIN_IPV6_PREFIX,
            max_answer_bytes: u64::from(Self::DEFAULT_MAX_ANSWER_MB) << 20,
            max_decisions: Self::DEFAULT_MAX_DECISIONS as usize,
        }
    }
}

/// Watcher credentials and when to push an alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reporter {
    pub machine_id: String,
    pub password: Secret,
    /// Handshakes one prefix completed within `report_window` seconds, while its own bucket
    /// refused some of its SYNs, that make an alert: evidence a spoofer cannot forge.
    pub report_after: u32,
    pub report_window: u32,
    /// The ban the alert asks for, as written (a Go duration: "4h").
    pub report_ban: String,
}

impl Source<'_> {
    pub(super) fn crowdsec(
        &self,
        raw: &RawCrowdsec,
        ratelimit: &RateLimit,
        policy: Policy,
    ) -> Result<Option<Crowdsec>, ConfigError> {
        let url = raw
            .lapi_url
            .as_ref()
            .map(|u| (u.get_ref().trim(), u.span()));
        let Some((url, url_span)) = url.filter(|(u, _)| !u.is_empty()) else {
            return Ok(None);
        };
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if parsed.is_none() {
            return Err(self.error_at(
                url_span,
                format!(
                    "crowdsec.lapi_url = {url:?} is not an http:// or https:// URL; write the Local API's address, e.g. \"http://127.0.0.1:8080\""
                ),
            ));
        }
        let bouncer_key = self.secret(
            raw.bouncer_key_file.as_ref(),
            "crowdsec.bouncer_key_file",
            "the key `cscli bouncers add port25d-$(hostname)` printed",
        )?;
        let lower = |values: &[Spanned<String>]| -> Vec<String> {
            values
                .iter()
                .map(|v| v.get_ref().trim().to_ascii_lowercase())
                .collect()
        };
        let scopes = match &raw.scopes {
            None => SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            Some(scopes) => {
                for scope in scopes {
                    let name = scope.get_ref().trim().to_ascii_lowercase();
                    if !SCOPES.contains(&name.as_str()) {
                        return Err(self.error_at(
                            scope.span(),
                            format!(
                                "crowdsec.scopes: {:?} cannot become a list of addresses; use \"ip\" and \"range\"",
                                scope.get_ref()
                            ),
                        ));
                    }
                }
                lower(scopes)
            }
        };
        let decision_types = match &raw.decision_types {
            None => vec!["ban".to_owned()],
            Some(types) => lower(types),
        };
        Ok(Some(Crowdsec {
            lapi_url: url.trim_end_matches('/').to_owned(),
            bouncer_key,
            update_frequency: self.ranged(
                &raw.update_frequency,
                "crowdsec.update_frequency",
                10,
                1..=3600,
            )?,
            lapi_timeout: self.ranged(&raw.lapi_timeout, "crowdsec.lapi_timeout", 30, 1..=300)?,
            decision_types,
            scopes,
            origins: lower(&raw.origins),
            bounds: self.bounds(raw)?,
            reporter: self.reporter(raw, ratelimit, policy)?,
        }))
    }

    fn bounds(&self, raw: &RawCrowdsec) -> Result<Bounds, ConfigError> {
        let mb = self.ranged(
            &raw.max_answer_mb,
            "crowdsec.max_answer_mb",
            Bounds::DEFAULT_MAX_ANSWER_MB,
            1..=1024,
        )?;
        Ok(Bounds {
            min_ipv4_prefix: self.ranged(
                &raw.min_ipv4_prefix,
                "crowdsec.min_ipv4_prefix",
                u32::from(Bounds::DEFAULT_MIN_IPV4_PREFIX),
                1..=32,
            )? as u8,
            min_ipv6_prefix: self.ranged(
                &raw.min_ipv6_prefix,
                "crowdsec.min_ipv6_prefix",
                u32::from(Bounds::DEFAULT_MIN_IPV6_PREFIX),
                1..=128,
            )? as u8,
            max_answer_bytes: u64::from(mb) << 20,
            max_decisions: self.ranged(
                &raw.max_decisions,
                "crowdsec.max_decisions",
                Bounds::DEFAULT_MAX_DECISIONS,
                1..=2_000_000,
            )? as usize,
        })
    }

    fn reporter(
        &self,
        raw: &RawCrowdsec,
        ratelimit: &RateLimit,
        policy: Policy,
    ) -> Result<Option<Reporter>, ConfigError> {
        let machine_id = raw.machine_id.as_ref().filter(|m| !m.get_ref().is_empty());
        let password_file = raw
            .machine_password_file
            .as_ref()
            .filter(|p| !p.get_ref().is_empty());
        let machine_id_span = machine_id.map_or(0..0, Spanned::span);
        let machine_id = match (machine_id, password_file) {
            (None, None) => return Ok(None),
            (Some(id), _) => id.get_ref().trim().to_owned(),
            (None, Some(file)) => {
                return Err(self.error_at(
                    file.span(),
                    "crowdsec.machine_password_file is set but machine_id is not; give the machine name `cscli machines add` registered",
                ));
            }
        };
        let password = self.secret(
            raw.machine_password_file.as_ref(),
            "crowdsec.machine_password_file",
            "the password given to `cscli machines add`",
        )?;
        let report_ban = raw
            .report_ban
            .as_ref()
            .map_or_else(|| "4h".to_owned(), |b| b.get_ref().trim().to_owned());
        match duration::parse_secs(&report_ban) {
            Ok(secs) if secs > 0 => {}
            Ok(_) => {
                return Err(self.error_at(
                    raw.report_ban.as_ref().map_or(0..0, Spanned::span),
                    format!("crowdsec.report_ban = {report_ban:?} must be longer than 0s"),
                ));
            }
            Err(reason) => {
                return Err(self.error_at(
                    raw.report_ban.as_ref().map_or(0..0, Spanned::span),
                    format!("crowdsec.report_ban: {reason}"),
                ));
            }
        }
        // Under ratelimit, handshakes are seen by the SYN-ACK watcher, which runs while
        // verification is on (policy synproxy's cookies prove them by themselves).
        if policy == Policy::Ratelimit && ratelimit.verified_ttl == 0 {
            return Err(self.error_at(
                machine_id_span,
                "crowdsec.machine_id: the reporter acts only on completed handshakes, which \
                 policy \"ratelimit\" watches while ratelimit.verified_ttl is above 0; set \
                 verified_ttl (e.g. 600) or leave machine_id empty",
            ));
        }
        let report_window =
            self.ranged(&raw.report_window, "crowdsec.report_window", 60, 1..=86_400)?;
        // A prefix's completed handshakes cannot outrun its own bucket: a threshold beyond what
        // the bucket admits in a window would never report anything.
        let most = ratelimit.admitted_within(report_window);
        let report_after = self.ranged(
            &raw.report_after,
            "crowdsec.report_after",
            1000.min(most),
            1..=100_000_000,
        )?;
        if report_after > most {
            return Err(self.error_at(
                raw.report_after.as_ref().map_or(0..0, Spanned::span),
                format!(
                    "crowdsec.report_after = {report_after} can never be reached: one prefix's \
                     bucket (ratelimit.syn_rate = {}, syn_burst = {}) admits at most {most} new \
                     connections in report_window = {report_window} s, and only completed ones \
                     count; use at most {most}",
                    ratelimit.syn_rate, ratelimit.syn_burst
                ),
            ));
        }
        Ok(Some(Reporter {
            machine_id,
            password,
            report_after,
            report_window,
            report_ban,
        }))
    }

    /// The first line of a credential file (relative paths from the config's directory).
    fn secret(
        &self,
        file: Option<&Spanned<String>>,
        key: &str,
        what: &str,
    ) -> Result<Secret, ConfigError> {
        let Some(file) = file.filter(|f| !f.get_ref().trim().is_empty()) else {
            return Err(self.error(format!(
                "{key} is empty: with crowdsec.lapi_url set, write {what} into a file readable by root only and name it here"
            )));
        };
        let path = self.resolve(file.get_ref().trim());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.error_at(
                file.span(),
                format!("{key}: cannot read {}: {e}", path.display()),
            )
        })?;
        let value = text.lines().next().unwrap_or("").trim();
        if value.is_empty() {
            return Err(self.error_at(
                file.span(),
                format!("{key}: {} is empty; write {what} into it", path.display()),
            ));
        }
        Ok(Secret(value.to_owned()))
    }
}
