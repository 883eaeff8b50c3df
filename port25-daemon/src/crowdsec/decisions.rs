//! The CrowdSec list: the ban decisions port25d holds, by decision id, each with its prefix and
//! expiry. A prefix is in the kernel's deny list while at least one held decision names it: one of
//! two decisions on an address expiring keeps it banned. The list is saved in the state
//! directory after every change, so that a restart while the LAPI is down keeps the bans.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::lapi::{Decision, Stream};
use crate::config::duration;
use crate::config::{Bounds, CidrSet, Crowdsec};
use crate::state_file::{self, write_atomically};

/// The file in the state directory.
const FILE: &str = "crowdsec-decisions.json";
/// Characters of a decision's origin and scenario kept (the LAPI's own are short): a hostile
/// answer's long strings would otherwise multiply by the decisions held.
const HELD_TEXT: usize = 64;

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

/// Why a decision of the stream was not taken, or a deletion matched nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Skip {
    /// A type other than `decision_types` (captcha, throttle…).
    Type,
    /// A scope a prefix list cannot hold (country, AS…) or not in `scopes`.
    Scope,
    /// An origin not in `origins`.
    Origin,
    /// A value that is not an address or a range (a prefix length past the family's included).
    Value,
    /// A remaining time that is no Go duration, past Go's range, or already over.
    Duration,
    /// A range wider than `min_ipv4_prefix` / `min_ipv6_prefix` allow (`/0` always is).
    TooWide,
    /// `max_decisions` are held already.
    Limit,
    /// A deletion of a decision not held, on a value none held names.
    UnknownDeletion,
}

impl Skip {
    pub(crate) const ALL: [Skip; 8] = [
        Skip::Type,
        Skip::Scope,
        Skip::Origin,
        Skip::Value,
        Skip::Duration,
        Skip::TooWide,
        Skip::Limit,
        Skip::UnknownDeletion,
    ];

    pub(crate) const fn label(self) -> &'static str {
        match self {
            Skip::Type => "type",
            Skip::Scope => "scope",
            Skip::Origin => "origin",
            Skip::Value => "value",
            Skip::Duration => "duration",
            Skip::TooWide => "too_wide",
            Skip::Limit => "limit",
            Skip::UnknownDeletion => "unknown_deletion",
        }
    }
}

/// Prefixes that entered and left the enforced set: what the kernel's deny list must follow.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    pub added: Vec<IpNet>,
    pub removed: Vec<IpNet>,
}

impl Delta {
    pub(crate) fn len(&self) -> usize {
        self.added.len() + self.removed.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn extend(&mut self, other: Delta) {
        self.added.extend(other.added);
        self.removed.extend(other.removed);
    }
}

/// What one poll changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Decisions taken and let go.
    pub added: usize,
    pub removed: usize,
    /// The enforced prefixes that changed (then the kernel's lists must).
    pub delta: Delta,
    pub skipped: BTreeMap<Skip, u64>,
}

/// A held decision's prefix that the configured allowlist overrides, wholly or in part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Overridden {
    pub cidr: IpNet,
    /// What of it is enforced: empty when the allowlist covers it all.
    pub enforced: Vec<IpNet>,
}

/// The held decisions, what they enforce, and where they are kept.
///
/// What a decision's prefix enforces is the prefix less what the configured allowlist holds
/// (docs/ARCHITECTURE.md, § CrowdSec, trust rules): an automatic decision never drops a source the
/// operator allowlisted. `pieces` keeps that for the prefixes it differs on, `enforced` counts
/// how many named prefixes enforce each piece, so that a poll changes only what it touches.
pub(crate) struct CrowdsecList {
    path: Option<PathBuf>,
    by_id: BTreeMap<i64, Held>,
    /// How many held decisions name each prefix.
    named: BTreeMap<IpNet, u32>,
    /// Named prefixes that do not enforce themselves whole: overridden by the allowlist, or
    /// too wide for the bounds (nothing enforced).
    pieces: BTreeMap<IpNet, Vec<IpNet>>,
    /// Each enforced prefix, with how many named prefixes enforce it.
    enforced: BTreeMap<IpNet, u32>,
    /// What the enforced prefixes were worked out against.
    allow: CidrSet,
    bounds: Bounds,
}

impl CrowdsecList {
    /// Loads the decisions kept in `state_dir`, dropping those that expired meanwhile; what they
    /// enforce is worked out against `allow` and `bounds` (a file from an older port25d may hold
    /// a decision the bounds refuse now: it is kept but enforces nothing).
    pub(crate) fn load(
        state_dir: Option<&Path>,
        now: u64,
        allow: &CidrSet,
        bounds: Bounds,
    ) -> anyhow::Result<Self> {
        let path = state_dir.map(|dir| dir.join(FILE));
        let mut list = Self {
            path: path.clone(),
            by_id: BTreeMap::new(),
            named: BTreeMap::new(),
            pieces: BTreeMap::new(),
            enforced: BTreeMap::new(),
            allow: allow.clone(),
            bounds,
        };
        let Some(path) = path else { return Ok(list) };
        let state: StateFile = state_file::read(
            &path,
            "CrowdSec decision file",
            "(the next poll of the LAPI fetches every decision again)",
        )?
        .unwrap_or_default();
        for held in state.decisions.into_iter().filter(|h| h.expires > now) {
            list.hold(held);
        }
        Ok(list)
    }

    /// Applies one poll: with `full` (startup=true) the stream is the whole truth and replaces
    /// what is held; otherwise deletions go first, then additions. A deletion of a decision not
    /// held is fine (the LAPI repeats them) and counted.
    pub(crate) fn apply(
        &mut self,
        stream: &Stream,
        full: bool,
        settings: &Crowdsec,
        now: u64,
    ) -> Applied {
        let mut applied = Applied::default();
        let mut delta = Delta::default();
        // A full pull lets go of everything and takes back what it streams: what it added and
        // removed is only known against what was held (a delta counts as it goes).
        let before_ids: Option<BTreeSet<i64>> = full.then(|| self.by_id.keys().copied().collect());
        if full {
            let ids: Vec<i64> = self.by_id.keys().copied().collect();
            for id in ids {
                delta.extend(self.release(id));
            }
        } else {
            // The LAPI streams one decision per value, the longest, and a deletion only once no
            // decision bans the value any more (seen on 1.4.6: deleting one of two decisions on an
            // address streams nothing; deleting the last streams that one's id, which may not be
            // the one held). So a deletion lets go of every decision held on its value.
            for decision in &stream.deleted {
                let gone = self.by_id.get(&decision.id).map(|held| held.cidr);
                let Some(cidr) = gone.or_else(|| value_of(decision).ok()) else {
                    *applied.skipped.entry(Skip::UnknownDeletion).or_default() += 1;
                    continue;
                };
                let ids: Vec<i64> = self
                    .by_id
                    .values()
                    .filter(|held| held.cidr == cidr)
                    .map(|held| held.id)
                    .collect();
                if ids.is_empty() {
                    *applied.skipped.entry(Skip::UnknownDeletion).or_default() += 1;
                }
                applied.removed += ids.len();
                for id in ids {
                    delta.extend(self.release(id));
                }
            }
        }
        for decision in &stream.new {
            let accepted = accept(decision, settings, now).and_then(|held| {
                let room = self.by_id.len() < settings.bounds.max_decisions
                    || self.by_id.contains_key(&held.id);
                if room { Ok(held) } else { Err(Skip::Limit) }
            });
            match accepted {
                Ok(held) => {
                    if self.by_id.contains_key(&held.id) {
                        delta.extend(self.release(held.id));
                    } else {
                        applied.added += 1;
                    }
                    delta.extend(self.hold(held));
                }
                Err(skip) => *applied.skipped.entry(skip).or_default() += 1,
            }
        }
        if let Some(before_ids) = before_ids {
            applied.added = self
                .by_id
                .keys()
                .filter(|id| !before_ids.contains(id))
                .count();
            applied.removed = before_ids
                .iter()
                .filter(|id| !self.by_id.contains_key(id))
                .count();
        }
        applied.delta = net_delta(delta);
        applied
    }

    /// Lets go of the decisions whose time has come; what the enforced prefixes lost.
    pub(crate) fn expire(&mut self, now: u64) -> Delta {
        let due: Vec<i64> = self
            .by_id
            .values()
            .filter(|held| held.expires <= now)
            .map(|held| held.id)
            .collect();
        let mut delta = Delta::default();
        for id in due {
            delta.extend(self.release(id));
        }
        net_delta(delta)
    }

    /// Works out what every held decision enforces against a new allowlist or new bounds (a
    /// reload); what changed.
    pub(crate) fn rebase(&mut self, allow: &CidrSet, bounds: Bounds) -> Delta {
        if *allow == self.allow && bounds == self.bounds {
            return Delta::default();
        }
        let removed: Vec<IpNet> = self.enforced.keys().copied().collect();
        self.allow = allow.clone();
        self.bounds = bounds;
        self.pieces.clear();
        self.enforced.clear();
        let named: Vec<IpNet> = self.named.keys().copied().collect();
        let added = named
            .into_iter()
            .flat_map(|cidr| self.enforce(cidr))
            .collect();
        // Everything left and came back: what did both is no change.
        net_delta(Delta { added, removed })
    }

    /// Takes a decision in; the prefixes it newly enforces.
    fn hold(&mut self, held: Held) -> Delta {
        let cidr = held.cidr;
        self.by_id.insert(held.id, held);
        let count = self.named.entry(cidr).or_default();
        *count += 1;
        if *count > 1 {
            return Delta::default();
        }
        Delta {
            added: self.enforce(cidr),
            removed: Vec::new(),
        }
    }

    /// Lets a decision go; the prefixes no decision enforces any more.
    fn release(&mut self, id: i64) -> Delta {
        let Some(held) = self.by_id.remove(&id) else {
            return Delta::default();
        };
        let Some(count) = self.named.get_mut(&held.cidr) else {
            return Delta::default();
        };
        *count -= 1;
        if *count > 0 {
            return Delta::default();
        }
        self.named.remove(&held.cidr);
        let pieces = self
            .pieces
            .remove(&held.cidr)
            .unwrap_or_else(|| vec![held.cidr]);
        let mut removed = Vec::new();
        for piece in pieces {
            if let Some(n) = self.enforced.get_mut(&piece) {
                *n -= 1;
                if *n == 0 {
                    self.enforced.remove(&piece);
                    removed.push(piece);
                }
            }
        }
        Delta {
            added: Vec::new(),
            removed,
        }
    }

    /// Counts what a newly named prefix enforces; returns the pieces no other prefix enforced.
    fn enforce(&mut self, cidr: IpNet) -> Vec<IpNet> {
        let pieces = if self.bounds.allows(&cidr) {
            less_allowed(cidr, &self.allow)
        } else {
            Vec::new()
        };
        if pieces != [cidr] {
            self.pieces.insert(cidr, pieces.clone());
        }
        let mut added = Vec::new();
        for piece in pieces {
            let n = self.enforced.entry(piece).or_default();
            *n += 1;
            if *n == 1 {
                added.push(piece);
            }
        }
        added
    }

    /// The enforced prefixes: the held decisions' less what the allowlist holds.
    pub(crate) fn prefixes(&self) -> CidrSet {
        CidrSet::new(self.enforced.keys().copied())
    }

    /// What the held decisions would enforce against another allowlist (a shadow policy's),
    /// what they enforce now left as it is.
    pub(crate) fn prefixes_under(&self, allow: &CidrSet) -> CidrSet {
        if *allow == self.allow {
            return self.prefixes();
        }
        CidrSet::new(
            self.named
                .keys()
                .filter(|cidr| self.bounds.allows(cidr))
                .flat_map(|cidr| less_allowed(*cidr, allow)),
        )
    }

    /// How many prefixes are enforced.
    pub(crate) fn enforced_len(&self) -> usize {
        self.enforced.len()
    }

    /// Whether `net` itself is one of the enforced prefixes.
    pub(crate) fn enforces(&self, net: &IpNet) -> bool {
        self.enforced.contains_key(net)
    }

    /// The held decisions' prefixes the allowlist overrides, wholly or in part.
    pub(crate) fn overridden(&self) -> impl Iterator<Item = Overridden> + '_ {
        self.pieces
            .iter()
            .filter(|(cidr, _)| self.bounds.allows(cidr))
            .map(|(cidr, enforced)| Overridden {
                cidr: *cidr,
                enforced: enforced.clone(),
            })
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

/// A delta's prefixes that both left and came back within it (a decision replaced) are no change.
fn net_delta(delta: Delta) -> Delta {
    let added: BTreeSet<IpNet> = delta.added.iter().copied().collect();
    let removed: BTreeSet<IpNet> = delta.removed.iter().copied().collect();
    Delta {
        added: added.difference(&removed).copied().collect(),
        removed: removed.difference(&added).copied().collect(),
    }
}

/// The most prefixes one decision may be cut into around allowlisted entries; past it, it
/// enforces nothing (a bound on what a LAPI that knows the allowlist can make port25d hold).
pub(crate) const MAX_PIECES: usize = 4096;

/// `cidr` less every address `allow` holds, as the fewest prefixes: halves are looked at only
/// where an allowed entry lies inside, so the pieces are at most (allowed entries inside) x
/// (prefix lengths). Nothing past [`MAX_PIECES`].
pub(crate) fn less_allowed(cidr: IpNet, allow: &CidrSet) -> Vec<IpNet> {
    let mut pieces = Vec::new();
    let mut todo = vec![cidr];
    while let Some(net) = todo.pop() {
        if pieces.len() + todo.len() > MAX_PIECES {
            return Vec::new();
        }
        if allow.covers(&net) {
            continue;
        }
        if !allow.has_inside(&net) {
            pieces.push(net);
        } else if let Ok(halves) = net.subnets(net.prefix_len() + 1) {
            // Pushed in reverse so that pieces come out in address order.
            let halves: Vec<IpNet> = halves.collect();
            todo.extend(halves.into_iter().rev());
        }
    }
    pieces
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
    let cidr = value_of(decision)?;
    if !settings.bounds.allows(&cidr) {
        return Err(Skip::TooWide);
    }
    let left = duration::parse_secs(&decision.duration).map_err(|_| Skip::Duration)?;
    if left == 0 {
        return Err(Skip::Duration);
    }
    Ok(Held {
        id: decision.id,
        cidr,
        origin: crate::text::cut(&decision.origin, HELD_TEXT),
        scenario: crate::text::cut(&decision.scenario, HELD_TEXT),
        expires: now.saturating_add(left),
    })
}

/// The prefix a decision of scope `Ip` or `Range` names.
fn value_of(decision: &Decision) -> Result<IpNet, Skip> {
    let value = decision.value.trim();
    match decision.scope.to_ascii_lowercase().as_str() {
        "ip" => value
            .parse::<std::net::IpAddr>()
            .map(IpNet::from)
            .map_err(|_| Skip::Value),
        "range" => value
            .parse::<IpNet>()
            .map(|net| net.trunc())
            .map_err(|_| Skip::Value),
        _ => Err(Skip::Scope),
    }
}

#[cfg(test)]
mod tests;
