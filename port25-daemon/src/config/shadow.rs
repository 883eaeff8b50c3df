//! `[shadow]`: a candidate config judged beside the live one, for configuration management
//! (docs/ARCHITECTURE.md, § Shadow policy).

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::source::Source;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShadow {
    config: Option<Spanned<String>>,
}

impl Source<'_> {
    /// The candidate's path (relative to this config's directory); `None` for none (or "").
    pub(super) fn shadow(&self, raw: &RawShadow) -> Result<Option<PathBuf>, ConfigError> {
        let Some(raw) = &raw.config else {
            return Ok(None);
        };
        if raw.get_ref().trim().is_empty() {
            return Ok(None);
        }
        let path = self.resolve(raw.get_ref());
        if path == self.origin {
            return Err(self.error_at(
                raw.span(),
                "shadow.config names this very file: give the candidate's file, or \"\" for no \
                 shadow policy",
            ));
        }
        Ok(Some(path))
    }
}
