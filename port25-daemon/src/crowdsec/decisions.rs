//! The CrowdSec list: the ban decisions port25d holds, by decision id, each with its prefix and
//! expiry. A prefix is in the kernel's deny list while at least one held decision names it: one of
//! two decisions on an address expiring keeps it banned. The list is saved in the state
//! directory after every change, so that a restart while the LAPI is down keeps the bans.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::duration;
use super::lapi::{Decision, Stream};
use crate::config::{CidrSet, Crowdsec};
use crate::state_file::{self, write_atomically};

/// The file in the state directory.
const FILE: &str = "crowdsec-decisions.json";

/// One decision port25d enforces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    pub id: i64,
    pub cidr: IpNet,
    pub origin: String,
    pub scenario: String,
    /// Unix seconds.
    pub expires: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct StateFile {
    decisions: Vec<Held>,
}

/// Why a decision of the stream was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Skip {
    /// A type other than `decision_types` (captcha, throttle…).
    Type,
    /// A scope a prefix list cannot hold (country, AS…) or not in `scopes`.
    Scope,
    /// An origin not in `origins`.
    Origin,
    /// A value that is not an address or a range, or a decision already over.
    Value,
}

impl Skip {
    pub(crate) const ALL: [Skip; 4] = [Skip::Type, Skip::Scope, Skip::Origin, Skip::Value];

    pub(crate) const fn label(self) -> &'static str {
        match self {
            Skip::Type => "type",
            Skip::Scope => "scope",
            Skip::Origin => "origin",
            Skip::Value => "value",
        }
    }
}

/// What one poll changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Decisions taken and let go.
    pub added: usize,
    pub removed: usize,
    /// Whether the set of banned prefixes changed (then the kernel's lists must).
    pub prefixes_changed: bool,
    pub skipped: BTreeMap<Skip, u64>,
}

/// The held decisions and where they are kept.
pub(crate) struct CrowdsecList {
    path: Option<PathBuf>,
    by_id: BTreeMap<i64, Held>,
}

impl CrowdsecList {
    /// Loads the decisions kept in `state_dir`, dropping those that expired meanwhile.
    pub(crate) fn load(state_dir: Option<&Path>, now: u64) -> anyhow::Result<Self> {
        let path = state_dir.map(|dir| dir.join(FILE));
        let mut list = Self {
            path: path.clone(),
            by_id: BTreeMap::new(),
        };
        let Some(path) = path else { return Ok(list) };
        let state: StateFile = state_file::read(
            &path,
            "CrowdSec decision file",
            "(the next poll of the LAPI fetches every decision again)",
        )?
        .unwrap_or_default();
        list.by_id = state
            .decisions
            .into_iter()
            .filter(|held| held.expires > now)
            .map(|held| (held.id, held))
            .collect();
        Ok(list)
    }

    /// Applies one poll: with `full` (startup=true) the stream is the whole truth and replaces
    /// what is held; otherwise deletions go first, then additions. A deletion of a decision not
    /// held is fine (the LAPI repeats them).
    pub(crate) fn apply(
        &mut self,
        stream: &Stream,
        full: bool,
        settings: &Crowdsec,
        now: u64,
    ) -> Applied {
        let before = self.prefixes_set();
        let before_ids: BTreeSet<i64> = self.by_id.keys().copied().collect();
        let mut applied = Applied::default();
        if full {
            self.by_id.clear();
        } else {
            // The LAPI streams one decision per value, the longest, and a deletion only once no
            // decision bans the value any more (seen on 1.4.6: deleting one of two decisions on an
            // address streams nothing; deleting the last streams that one's id, which may not be
            // the one held). So a deletion lets go of every decision held on its value.
            for decision in &stream.deleted {
                let gone = self.by_id.remove(&decision.id).map(|held| held.cidr);
                if let Some(cidr) = gone.or_else(|| value_of(decision)) {
                    self.by_id.retain(|_, held| held.cidr != cidr);
                }
            }
        }
        for decision in &stream.new {
            match accept(decision, settings, now) {
                Ok(held) => {
                    self.by_id.insert(held.id, held);
                }
                Err(skip) => *applied.skipped.entry(skip).or_default() += 1,
            }
        }
        applied.added = self
            .by_id
            .keys()
            .filter(|id| !before_ids.contains(id))
            .count();
        applied.removed = before_ids
            .iter()
            .filter(|id| !self.by_id.contains_key(id))
            .count();
        applied.prefixes_changed = self.prefixes_set() != before;
        applied
    }

    /// Lets go of the decisions whose time has come; whether a prefix left the list.
    pub(crate) fn expire(&mut self, now: u64) -> bool {
        let before = self.by_id.len();
        if self.by_id.values().all(|held| held.expires > now) {
            return false;
        }
        let old = self.prefixes_set();
        self.by_id.retain(|_, held| held.expires > now);
        before != self.by_id.len() && self.prefixes_set() != old
    }

    /// The banned prefixes.
    pub(crate) fn prefixes(&self) -> CidrSet {
        CidrSet::new(self.by_id.values().map(|held| held.cidr))
    }

    fn prefixes_set(&self) -> BTreeSet<IpNet> {
        self.by_id.values().map(|held| held.cidr).collect()
    }

    pub(crate) fn held(&self) -> impl Iterator<Item = &Held> {
        self.by_id.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Decisions held by origin and family ("ipv4", "ipv6"): the gauge and `status`.
    pub(crate) fn counts(&self) -> BTreeMap<(String, &'static str), usize> {
        let mut counts = BTreeMap::new();
        for held in self.by_id.values() {
            let family = match held.cidr {
                IpNet::V4(_) => "ipv4",
                IpNet::V6(_) => "ipv6",
            };
            *counts.entry((held.origin.clone(), family)).or_default() += 1;
        }
        counts
    }

    /// Writes the decisions atomically: a crash leaves the old file or the new one.
    pub(crate) fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let state = StateFile {
            decisions: self.by_id.values().cloned().collect(),
        };
        write_atomically(path, serde_json::to_string(&state)?.as_bytes())
    }
}

/// A decision of the stream as a held one, or why not.
fn accept(decision: &Decision, settings: &Crowdsec, now: u64) -> Result<Held, Skip> {
    let lower = |text: &str| text.to_ascii_lowercase();
    if !settings.decision_types.contains(&lower(&decision.kind)) {
        return Err(Skip::Type);
    }
    let scope = lower(&decision.scope);
    if !settings.scopes.contains(&scope) {
        return Err(Skip::Scope);
    }
    if !settings.origins.is_empty() && !settings.origins.contains(&lower(&decision.origin)) {
        return Err(Skip::Origin);
    }
    let cidr = value_of(decision).ok_or(Skip::Value)?;
    let left = duration::parse_secs(&decision.duration).map_err(|_| Skip::Value)?;
    if left == 0 {
        return Err(Skip::Value);
    }
    Ok(Held {
        id: decision.id,
        cidr,
        origin: decision.origin.clone(),
        scenario: decision.scenario.clone(),
        expires: now.saturating_add(left),
    })
}

/// The prefix a decision of scope `Ip` or `Range` names.
fn value_of(decision: &Decision) -> Option<IpNet> {
    let value = decision.value.trim();
    match decision.scope.to_ascii_lowercase().as_str() {
        "ip" => value.parse::<std::net::IpAddr>().map(IpNet::from).ok(),
        "range" => value.parse::<IpNet>().map(|net| net.trunc()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
