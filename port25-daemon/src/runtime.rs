//! Runtime list entries: what `port25d allow|deny add` (fail2ban, an operator) adds to
//! the live policy without editing the config, each with an optional expiry. They are kept in the
//! state directory, so a restart keeps them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    clock::now_unix,
    config::CidrSet,
    model::{ListKind, RuntimeEntry},
    state_file,
};

/// The file in the state directory.
const FILE: &str = "runtime-lists.json";

#[derive(Default, Serialize, Deserialize)]
struct StateFile {
    entries: Vec<RuntimeEntry>,
}

/// The runtime entries, and where they are kept.
pub(crate) struct RuntimeLists {
    path: Option<PathBuf>,
    entries: BTreeMap<(ListKind, IpNet), RuntimeEntry>,
}

impl RuntimeLists {
    /// Loads the entries kept in `state_dir` (none if the file does not exist yet), dropping
    /// those that expired while the daemon was down. `None`: kept in memory only.
    pub(crate) fn load(state_dir: Option<&Path>) -> anyhow::Result<Self> {
        let path = state_dir.map(|dir| dir.join(FILE));
        let mut lists = Self {
            path: path.clone(),
            entries: BTreeMap::new(),
        };
        let Some(path) = path else {
            return Ok(lists);
        };
        let state: StateFile = state_file::read(
            &path,
            "runtime list file",
            "to start without runtime entries",
        )?
        .unwrap_or_default();
        let now = now_unix();
        for entry in state.entries {
            if entry.expires.is_some_and(|at| at <= now) {
                tracing::info!(
                    "runtime {} entry {} expired while port25d was stopped",
                    entry.list.as_str(),
                    entry.cidr
                );
                continue;
            }
            lists.entries.insert((entry.list, entry.cidr), entry);
        }
        Ok(lists)
    }

    /// Adds or refreshes an entry; returns whether it is new.
    pub(crate) fn add(
        &mut self,
        list: ListKind,
        cidr: IpNet,
        ttl_secs: Option<u64>,
        added_by: Option<String>,
    ) -> anyhow::Result<Option<RuntimeEntry>> {
        let now = now_unix();
        let entry = RuntimeEntry {
            list,
            cidr,
            expires: ttl_secs.map(|ttl| now.saturating_add(ttl)),
            added: now,
            added_by,
        };
        let replaced = self.entries.insert((list, cidr), entry);
        self.save()?;
        Ok(replaced)
    }

    /// Removes an entry; returns whether it was there.
    pub(crate) fn remove(&mut self, list: ListKind, cidr: IpNet) -> anyhow::Result<bool> {
        let was = self.entries.remove(&(list, cidr)).is_some();
        if was {
            self.save()?;
        }
        Ok(was)
    }

    /// Removes and returns the entries whose time has come.
    pub(crate) fn expire(&mut self, now: u64) -> anyhow::Result<Vec<RuntimeEntry>> {
        let due: Vec<_> = self
            .entries
            .values()
            .filter(|e| e.expires.is_some_and(|at| at <= now))
            .cloned()
            .collect();
        for entry in &due {
            self.entries.remove(&(entry.list, entry.cidr));
        }
        if !due.is_empty() {
            self.save()?;
        }
        Ok(due)
    }

    pub(crate) fn entries(&self, list: ListKind) -> impl Iterator<Item = &RuntimeEntry> {
        self.entries.values().filter(move |e| e.list == list)
    }

    pub(crate) fn set(&self, list: ListKind) -> CidrSet {
        CidrSet::new(self.entries(list).map(|e| e.cidr))
    }

    pub(crate) fn len(&self, list: ListKind) -> usize {
        self.entries(list).count()
    }

    /// Writes the entries atomically.
    fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let state = StateFile {
            entries: self.entries.values().cloned().collect(),
        };
        let text = serde_json::to_string_pretty(&state)?;
        state_file::write_atomically(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("port25-runtime-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn entries_survive_a_reload_and_expired_ones_do_not() {
        let dir = dir("survive");
        let mut lists = RuntimeLists::load(Some(&dir)).unwrap();
        assert!(
            lists
                .add(
                    ListKind::Deny,
                    "198.18.0.66/32".parse().unwrap(),
                    None,
                    None
                )
                .unwrap()
                .is_none()
        );
        assert!(
            lists
                .add(
                    ListKind::Allow,
                    "2001:db8::/48".parse().unwrap(),
                    Some(3600),
                    Some("uid 0 (root) pid 1 on the control socket".to_owned())
                )
                .unwrap()
                .is_none()
        );
        // Added again: the entry it replaced comes back (it had no expiry).
        let replaced = lists
            .add(
                ListKind::Deny,
                "198.18.0.66/32".parse().unwrap(),
                Some(60),
                None,
            )
            .unwrap();
        assert_eq!(replaced.map(|old| old.expires), Some(None));
        let again = RuntimeLists::load(Some(&dir)).unwrap();
        assert_eq!(again.len(ListKind::Deny), 1);
        assert_eq!(again.len(ListKind::Allow), 1);
        let due = lists.expire(now_unix() + 61).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].cidr.to_string(), "198.18.0.66/32");
        let again = RuntimeLists::load(Some(&dir)).unwrap();
        assert_eq!(again.len(ListKind::Deny), 0);
        assert_eq!(again.len(ListKind::Allow), 1);
        // Who added it is kept with it.
        let by = again
            .entries(ListKind::Allow)
            .next()
            .unwrap()
            .added_by
            .clone();
        assert_eq!(
            by.as_deref(),
            Some("uid 0 (root) pid 1 on the control socket")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_foreign_state_file_is_an_error_that_says_what_to_do() {
        let dir = dir("foreign");
        std::fs::write(dir.join(FILE), "not json").unwrap();
        let err = RuntimeLists::load(Some(&dir)).err().unwrap();
        assert!(format!("{err:#}").contains("move it away"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
