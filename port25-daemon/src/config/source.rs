//! The text being validated and where it came from: a failing value's byte span becomes
//! `file:line` and a reason with the fix; the rules every section shares (integer ranges, paths
//! relative to the config).

use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::ConfigError;

/// The text being parsed and where it came from, to turn byte spans into `file:line` errors.
pub(super) struct Source<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a Path,
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
        if let Some((unknown, near)) = did_you_mean(&reason) {
            reason = reason.replacen(
                &format!("`{unknown}`"),
                &format!("`{unknown}` (did you mean `{near}`?)"),
                1,
            );
        }
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

    /// List file paths are relative to the config file, so a config and its lists can be moved
    /// (or tested) together wherever the daemon is started from.
    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        match self.origin.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}
/// In "unknown key `denny`, expected one of `allow`, `deny`, …" (or an unknown value): the word
/// and the expected one it is a typo of, when one is within two edits of it.
fn did_you_mean(reason: &str) -> Option<(&str, &str)> {
    let (_, rest) = reason.split_once("unknown ")?;
    let unknown = rest.split('`').nth(1)?;
    let (_, expected) = rest.split_once("expected one of ")?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|word| (strsim::damerau_levenshtein(unknown, word), word))
        .filter(|&(distance, word)| distance <= 2 && distance < word.len())
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, word)| (unknown, word))
}
