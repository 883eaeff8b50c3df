//! `[metrics]`: where the Prometheus endpoint listens.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::source::Source;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    listen: Option<Spanned<String>>,
}

impl Source<'_> {
    pub(super) fn metrics_listen(&self, raw: &RawMetrics) -> Result<SocketAddr, ConfigError> {
        let Some(raw) = &raw.listen else {
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
