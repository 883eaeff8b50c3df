//! Runtime list changes asked while no daemon answers (a restart, a crash, a stop): kept in the
//! state directory's `queued/`, one file a request, and carried out by the daemon when it starts
//! and at each look while it runs, so that fail2ban's ban is never lost. A TTL counts from when
//! the change was asked.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::{clock::now_unix, proto::Request};

/// The queue, under the state directory.
const QUEUE_DIR: &str = "queued";
/// A queued request is a line of JSON; anything longer was not written by port25d.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// A request as queued: when it was asked, and what.
#[derive(Debug, Serialize, Deserialize)]
struct Queued {
    asked: u64,
    request: Request,
}

/// Keeps `request` (an add or a del) for the daemon: written whole beside the queue, then renamed
/// in, so that the daemon never reads half a request. Returns the file.
pub(crate) fn enqueue(state_dir: &Path, request: &Request) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        matches!(request, Request::Add { .. } | Request::Del { .. }),
        "only runtime list changes can wait for port25d"
    );
    let dir = state_dir.join(QUEUE_DIR);
    std::fs::create_dir_all(&dir).with_context(|| {
        format!(
            "making {} (is {} port25d's --state-dir?)",
            dir.display(),
            state_dir.display()
        )
    })?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = format!("{stamp:020}-{}.json", std::process::id());
    let text = serde_json::to_string(&Queued {
        asked: now_unix(),
        request: request.clone(),
    })?;
    let partial = state_dir.join(format!(".{name}"));
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    let path = dir.join(name);
    std::fs::rename(&partial, &path).with_context(|| format!("moving it to {}", path.display()))?;
    Ok(path)
}

/// A queued request as taken: its file's name and owner (who asked, for the policy's history),
/// and the request as it stands now (a TTL shortened by the wait; `None` when it ran out
/// meanwhile), or why it cannot be read.
pub(crate) struct Taken {
    pub name: String,
    pub owner: Option<u32>,
    pub request: Result<Option<Request>, String>,
}

/// Takes the queued requests, oldest first, each file removed as it is read.
pub(crate) fn take(state_dir: &Path) -> Vec<Taken> {
    let Ok(entries) = std::fs::read_dir(state_dir.join(QUEUE_DIR)) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let owner = std::fs::symlink_metadata(&path)
                .ok()
                .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta));
            let request = read(&path);
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!("removing the queued request {}: {err}", path.display());
            }
            Taken {
                name,
                owner,
                request,
            }
        })
        .collect()
}

fn read(path: &Path) -> Result<Option<Request>, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return Err("not a request port25d wrote".to_owned());
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let queued: Queued = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let waited = now_unix().saturating_sub(queued.asked);
    Ok(match queued.request {
        Request::Add {
            list,
            cidr,
            ttl_secs: Some(ttl),
        } => (ttl > waited).then(|| Request::Add {
            list,
            cidr,
            ttl_secs: Some(ttl - waited),
        }),
        request @ (Request::Add { .. } | Request::Del { .. }) => Some(request),
        _ => return Err("not a runtime list change".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ListKind;

    #[test]
    fn queued_changes_come_back_in_order_once() {
        let dir = std::env::temp_dir().join(format!("port25-queue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let add = Request::Add {
            list: ListKind::Deny,
            cidr: "198.18.5.66".into(),
            ttl_secs: Some(600),
        };
        let del = Request::Del {
            list: ListKind::Deny,
            cidr: "198.18.5.67".into(),
        };
        enqueue(&dir, &add).unwrap();
        enqueue(&dir, &del).unwrap();
        assert!(enqueue(&dir, &Request::Status).is_err());
        std::fs::write(dir.join(QUEUE_DIR).join("zz.json"), "{broken").unwrap();
        let taken = take(&dir);
        assert_eq!(taken.len(), 3);
        assert!(matches!(
            &taken[0].request,
            Ok(Some(Request::Add { ttl_secs: Some(ttl), .. })) if *ttl <= 600 && *ttl > 590
        ));
        assert!(matches!(&taken[1].request, Ok(Some(Request::Del { .. }))));
        assert!(taken[2].request.is_err());
        // Who asked: the files' owner, this test's uid.
        // SAFETY: geteuid has no preconditions.
        assert_eq!(taken[0].owner, Some(unsafe { libc::geteuid() }));
        assert!(take(&dir).is_empty(), "taken twice");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
