//! The files port25d keeps in its state directory (runtime list entries, CrowdSec decisions):
//! read with an error that names the file and the fix, written atomically.

use std::{io::Write as _, path::Path};

use anyhow::Context as _;
use serde::de::DeserializeOwned;

/// Reads a state file port25d wrote: `None` when there is none yet. One that is not what port25d
/// writes is an error naming it, what it should be (`what`) and what moving it away does (`away`).
pub(crate) fn read<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    away: &str,
) -> anyhow::Result<Option<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_str(&text).map(Some).with_context(|| {
        format!(
            "{} is not a {what} port25d wrote; move it away {away}",
            path.display()
        )
    })
}

/// Replaces a state file atomically (temporary file, fsync, rename): a crash leaves the old file
/// or the new one, never half of one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}
