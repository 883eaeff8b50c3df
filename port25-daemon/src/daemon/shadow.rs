//! A shadow policy: a candidate config judged beside the live one on live traffic, counted and
//! never enforced, then promoted (a reload to it) or dropped. docs/ARCHITECTURE.md, § Shadow
//! policy.

use std::path::PathBuf;

use tracing::{error, warn};

use super::{Daemon, changes, lists::candidate_lists, requests::error, watch::watched_fingerprint};
use crate::{
    clock::now_unix,
    config::{CidrSet, Config},
    datapath::{DifferingRow, Effect, Modes, monotonic_ns, side_label},
    history::{Actor, Change},
    model::{ListKind, Mode},
    proto::{Response, ShadowPair, ShadowSource, ShadowStatus},
};

/// Source prefixes of each side `shadow status` lists.
const TOP: usize = 10;

/// The candidate the shadow holds: its config as loaded (a promote applies exactly it), the file,
/// and since when it is judged.
pub(super) struct Candidate {
    pub config: Config,
    pub path: PathBuf,
    pub since: u64,
    /// Loaded because `[shadow] config` names it (a reload drops it with the key).
    pub configured: bool,
}

impl Daemon {
    pub(super) fn shadow_load(&mut self, path: &str, by: Actor) -> Response {
        let path = PathBuf::from(path);
        match self.read_candidate(&path) {
            Ok(config) => self.load_candidate(path, config, false, by),
            Err(err) => error(format!(
                "{err}; the shadow policy is unchanged{}",
                self.still_judged()
            )),
        }
    }

    /// The candidate as a promote would apply it: the file, with what the command line
    /// overrides applied as to the live config.
    fn read_candidate(&self, path: &std::path::Path) -> Result<Config, crate::config::ConfigError> {
        let mut config = Config::load(Some(path))?;
        config.apply(&self.options.overrides);
        Ok(config)
    }

    /// The shadow `[shadow] config` names: loaded at start, and again at a reload when its file
    /// changed (a reload that leaves it as it is keeps its counts); gone when the key is. A
    /// candidate that does not load is logged, and the shadow stays as it was.
    pub(super) fn sync_configured_shadow(&mut self, by: &Actor) {
        let Some(path) = self.config.shadow.clone() else {
            if self.shadow.as_ref().is_some_and(|c| c.configured) {
                let _ = self.shadow_drop(by.clone());
            }
            return;
        };
        let config = match self.read_candidate(&path) {
            Ok(config) => config,
            Err(err) => {
                error!(
                    "[shadow] config: {err}; the shadow policy is unchanged{}",
                    self.still_judged()
                );
                return;
            }
        };
        if self
            .shadow
            .as_ref()
            .is_some_and(|c| c.path == path && c.config == config)
        {
            return;
        }
        if let Response::Error { message } = self.load_candidate(path, config, true, by.clone()) {
            error!("[shadow] config: {message}");
        }
    }

    fn load_candidate(
        &mut self,
        path: PathBuf,
        config: Config,
        configured: bool,
        by: Actor,
    ) -> Response {
        let mut notes = config.warnings();
        notes.extend(changes::needs_restart(&self.in_effect, &config));
        let (allow, deny) = candidate_lists(&config, &self.runtime, &self.crowdsec);
        let (allow_len, deny_len) = (allow.len(), deny.len());
        let loaded =
            tokio::task::block_in_place(|| self.datapath.load_shadow(&config, allow, deny));
        if let Err(err) = loaded {
            return error(format!(
                "writing the shadow policy into the kernel: {err:#}; the shadow policy is \
                 unchanged{}",
                self.still_judged()
            ));
        }
        let generation = self.datapath.shadow_generation().unwrap_or(0);
        let mut message = format!(
            "loaded {} as the shadow policy (generation {generation}): policy {}, mode {}, ports \
             {:?}, {allow_len} allow and {deny_len} deny entries; it judges every new connection \
             attempt and enforces nothing (`port25d shadow status` shows what it would change)",
            path.display(),
            config.policy,
            config.mode,
            config.ports,
        );
        for note in &notes {
            message.push_str(&format!("; note: {note}"));
        }
        let described = changes::describe(&self.config, &config);
        self.shadow = Some(Candidate {
            config,
            path,
            since: now_unix(),
            configured,
        });
        self.history
            .record(Change::new("shadow load", by, message.clone(), described));
        self.publish_shadow();
        Response::Ok { message }
    }

    pub(super) fn shadow_drop(&mut self, by: Actor) -> Response {
        let Some(candidate) = self.shadow.take() else {
            return error("no shadow policy is loaded: nothing to drop");
        };
        if let Err(err) = tokio::task::block_in_place(|| self.datapath.drop_shadow()) {
            warn!("removing the shadow policy's maps: {err:#}");
        }
        let message = format!(
            "dropped the shadow policy {}; the live policy is as it was",
            candidate.path.display()
        );
        self.history
            .record(Change::new("shadow drop", by, message.clone(), Vec::new()));
        self.publish_shadow();
        Response::Ok { message }
    }

    /// Applies the candidate as a reload to it would, and reloads from its file from then on.
    pub(super) fn shadow_promote(&mut self, by: Actor) -> Response {
        let Some(candidate) = self.shadow.take() else {
            return error("no shadow policy is loaded: nothing to promote");
        };
        let seen = watched_fingerprint(&candidate.config.watched_dirs);
        let next = candidate.config.clone();
        let applied =
            tokio::task::block_in_place(|| self.apply_config(next, seen, &by, "shadow promote"));
        if let Err(err) = applied {
            let message = format!(
                "promoting {} failed, the live policy stays and so does the shadow: {err:#}",
                candidate.path.display()
            );
            self.shadow = Some(candidate);
            return error(message);
        }
        // The promoted config may name a shadow of its own, which the reload to it loaded.
        if self.shadow.is_none()
            && let Err(err) = tokio::task::block_in_place(|| self.datapath.drop_shadow())
        {
            warn!("removing the promoted shadow's maps: {err:#}");
        }
        let started_with = self.options.config.clone();
        self.options.config = Some(candidate.path.clone());
        let mut message = format!(
            "{} is the live policy (generation {}); reloads read it from now on",
            candidate.path.display(),
            self.datapath.generation()
        );
        let same_file = started_with.as_ref().is_some_and(|started| {
            std::fs::canonicalize(started).ok() == std::fs::canonicalize(&candidate.path).ok()
        });
        if !same_file {
            message.push_str(&format!(
                "; port25d was started with {}, which a restart reads again: copy {} over it (or \
                 point the unit at it) to keep this policy after a restart",
                started_with.map_or_else(
                    || "the default config".to_owned(),
                    |p| p.display().to_string()
                ),
                candidate.path.display()
            ));
            warn!("shadow promote: {message}");
        }
        self.publish_shadow();
        Response::Ok { message }
    }

    pub(super) fn shadow_status(&self) -> ShadowStatus {
        let mut status = ShadowStatus {
            config: None,
            since: None,
            generation: None,
            policy: None,
            mode: None,
            live_policy: self.config.policy,
            live_mode: self.config.mode,
            allow_entries: 0,
            deny_entries: 0,
            judged: 0,
            newly_dropped: 0,
            newly_passed: 0,
            pairs: Vec::new(),
            top_newly_dropped: Vec::new(),
            top_newly_passed: Vec::new(),
        };
        let Some(candidate) = &self.shadow else {
            return status;
        };
        let modes = Modes {
            live_monitor: self.config.mode == Mode::Monitor,
            candidate_monitor: candidate.config.mode == Mode::Monitor,
        };
        let tables = self.datapath.shadow_tables();
        for (live, shadow, packets) in tables.pairs() {
            status.judged += packets;
            let effect = Effect::of(live, shadow, modes);
            match effect {
                Effect::NewlyDropped => status.newly_dropped += packets,
                Effect::NewlyPassed => status.newly_passed += packets,
                Effect::Same => {}
            }
            status.pairs.push(ShadowPair {
                live: side_label(live).to_owned(),
                candidate: side_label(shadow).to_owned(),
                packets,
                effect: effect.label().to_owned(),
            });
        }
        status
            .pairs
            .sort_by_key(|pair| std::cmp::Reverse(pair.packets));
        let (now_mono, now) = (monotonic_ns(), now_unix());
        let mut rows = tables.sources();
        rows.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.source.cmp(&b.source)));
        let row = |r: &DifferingRow| ShadowSource {
            source: r.source,
            packets: r.packets,
            last_seen: now.saturating_sub(now_mono.saturating_sub(r.last_seen) / 1_000_000_000),
            live: side_label(r.live).to_owned(),
            candidate: side_label(r.candidate).to_owned(),
        };
        for r in &rows {
            let top = match Effect::of(r.live, r.candidate, modes) {
                Effect::NewlyDropped => &mut status.top_newly_dropped,
                Effect::NewlyPassed => &mut status.top_newly_passed,
                Effect::Same => continue,
            };
            if top.len() < TOP {
                top.push(row(r));
            }
        }
        let (allow, deny) = self
            .datapath
            .shadow_lists()
            .map_or((0, 0), |(a, d)| (a.len(), d.len()));
        status.config = Some(candidate.path.display().to_string());
        status.since = Some(candidate.since);
        status.generation = self.datapath.shadow_generation();
        status.policy = Some(candidate.config.policy);
        status.mode = Some(candidate.config.mode);
        status.allow_entries = allow;
        status.deny_entries = deny;
        status
    }

    /// After the runtime entries or CrowdSec's bans changed: the shadow's lists follow, entry by
    /// entry (the candidate's config lists, its allowlist against CrowdSec, the same runtime
    /// entries). A failure is logged; the shadow then judges by its earlier lists.
    pub(super) fn sync_shadow(&mut self) {
        let Some(candidate) = &self.shadow else {
            return;
        };
        let (allow, deny) = candidate_lists(&candidate.config, &self.runtime, &self.crowdsec);
        let Some((held_allow, held_deny)) = self.datapath.shadow_lists() else {
            return;
        };
        let mut changes: Vec<(ListKind, ipnet::IpNet, bool)> = Vec::new();
        for (list, now, held) in [
            (ListKind::Allow, &allow, held_allow),
            (ListKind::Deny, &deny, held_deny),
        ] {
            changes.extend(difference(now, held).map(|net| (list, net, true)));
            changes.extend(difference(held, now).map(|net| (list, net, false)));
        }
        if changes.is_empty() {
            return;
        }
        let written = tokio::task::block_in_place(|| {
            // Added before removed, as the live lists are (§ CrowdSec).
            changes.sort_by_key(|(_, _, present)| !present);
            changes.iter().try_for_each(|&(list, net, present)| {
                self.datapath.change_shadow(list, net, present)
            })
        });
        if let Err(err) = written {
            warn!("the shadow policy's lists did not follow a list change: {err:#}");
        }
    }

    /// Publishes whether a shadow is loaded, for the metrics.
    pub(super) fn publish_shadow(&self) {
        let loaded = self.shadow.as_ref().map(|candidate| Modes {
            live_monitor: self.config.mode == Mode::Monitor,
            candidate_monitor: candidate.config.mode == Mode::Monitor,
        });
        *self.metrics.shadow.lock() = loaded;
    }

    /// " (FILE goes on being judged)" or "", for a refusal's message: whether an earlier shadow
    /// goes on.
    fn still_judged(&self) -> String {
        match &self.shadow {
            Some(candidate) => format!(" ({} goes on being judged)", candidate.path.display()),
            None => String::new(),
        }
    }
}

/// The entries of `a` that `b` lacks (both sorted).
fn difference<'a>(a: &'a CidrSet, b: &'a CidrSet) -> impl Iterator<Item = ipnet::IpNet> + 'a {
    a.iter().filter(move |net| !b.contains_net(net))
}
