//! The daemon's side of the CrowdSec bouncer and reporter: starting the task to match the config,
//! taking each poll into the CrowdSec list with one generation swap, expiring decisions locally,
//! and handing the reporter's prefixes to the task. docs/ARCHITECTURE.md, § CrowdSec.

use std::collections::BTreeMap;
use std::time::Instant;

use ipnet::IpNet;
use tracing::{error, info, warn};

use super::Daemon;
use crate::{
    clock::now_unix,
    crowdsec::Standing,
    crowdsec::{
        Bouncer, Poll,
        decisions::{Delta, MAX_PIECES, Skip},
    },
    history::{Actor, Change},
    model::ListKind,
    proto::CrowdsecEntry,
};

/// Enforced prefixes a change may add or remove in place; more take one generation swap, which
/// rewrites every list entry but costs the same whatever changed.
pub(super) const DELTA_IN_PLACE: usize = 1000;

/// Prefixes of each side of a CrowdSec delta the policy's history names; the rest are counted.
const CROWDSEC_SAMPLE: usize = 5;

/// How often the reporter looks at the rate limiter's table (every other tick of the run loop's
/// one-second timer: a tick that comes a little early still counts).
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(1900);

impl Daemon {
    /// Starts, restarts (new settings) or stops the bouncer to match the config.
    pub(super) fn sync_bouncer(&mut self) -> anyhow::Result<()> {
        let wanted = self.config.crowdsec.clone();
        if self.bouncer.as_ref().map(|b| &b.settings) == wanted.as_ref() {
            return Ok(());
        }
        self.bouncer = None;
        match wanted {
            Some(settings) => {
                info!(
                    "CrowdSec bouncer of {} every {} s{}",
                    settings.lapi_url,
                    settings.update_frequency,
                    settings
                        .reporter
                        .as_ref()
                        .map_or_else(String::new, |r| format!(", reporting as {}", r.machine_id))
                );
                self.bouncer = Some(Bouncer::spawn(settings, self.crowdsec_status.clone())?);
            }
            None => {
                // Its metrics go with it.
                *self.crowdsec_status.lock() = Standing::default();
                info!("CrowdSec bouncer off");
            }
        }
        Ok(())
    }

    /// Takes one poll's decisions into the CrowdSec list and the kernel, then saves them.
    pub(super) fn on_poll(&mut self, poll: Poll) {
        let Some(settings) = self.config.crowdsec.clone() else {
            return;
        };
        let started = Instant::now();
        let applied = self
            .crowdsec
            .apply(&poll.stream, poll.full, &settings, now_unix());
        {
            let mut status = self.crowdsec_status.lock();
            for (skip, n) in &applied.skipped {
                *status.skipped.entry(*skip).or_default() += n;
            }
        }
        if (applied.added + applied.removed > 0 || !applied.delta.is_empty())
            && let Err(err) = self.crowdsec.save()
        {
            error!("saving the CrowdSec decisions: {err:#}");
        }
        let how = self.crowdsec_changed(&applied.delta, "CrowdSec poll");
        self.record_crowdsec(
            &applied.delta,
            &settings.lapi_url,
            format!(
                "a poll{} ({} new decisions, {} gone)",
                if poll.full { ", a full pull" } else { "" },
                applied.added,
                applied.removed,
            ),
        );
        let skipped: u64 = applied.skipped.values().sum();
        if applied.added + applied.removed > 0 || skipped > 0 {
            info!(
                "CrowdSec{}: {} decisions added, {} removed, {skipped} skipped{}; {} held on {} prefixes ({}, {} ms)",
                if poll.full { " (full pull)" } else { "" },
                applied.added,
                applied.removed,
                describe_skips(&applied.skipped),
                self.crowdsec.len(),
                self.crowdsec.enforced_len(),
                how,
                started.elapsed().as_millis()
            );
        }
        self.publish();
    }

    /// Once a second: decisions past their expiry go (the LAPI may be down and never say so),
    /// a swap that failed is tried again, and the reporter looks at the rate limiter's table.
    pub(super) fn crowdsec_tick(&mut self) {
        if self.config.crowdsec.is_none() {
            return;
        }
        let delta = self.crowdsec.expire(now_unix());
        if !delta.is_empty()
            && let Err(err) = self.crowdsec.save()
        {
            error!("saving the CrowdSec decisions: {err:#}");
        }
        if !delta.is_empty() || self.crowdsec_dirty {
            self.crowdsec_changed(&delta, "CrowdSec decisions expired");
            let lapi = self
                .config
                .crowdsec
                .as_ref()
                .map(|c| c.lapi_url.clone())
                .unwrap_or_default();
            self.record_crowdsec(&delta, &lapi, "decisions expired".to_owned());
            self.publish();
        }
        self.report();
    }

    /// After the enforced CrowdSec prefixes changed by `delta`: the kernel follows, in place for
    /// a small delta (each entry as a runtime one is, § Lists), with one generation swap for a
    /// large one or after a failure; new allowlist overrides are logged. Says which it did.
    pub(super) fn crowdsec_changed(&mut self, delta: &Delta, why: &str) -> &'static str {
        self.log_new_overrides();
        if delta.is_empty() && !self.crowdsec_dirty {
            return "no kernel change";
        }
        self.sync_shadow();
        if !self.crowdsec_dirty && delta.len() <= DELTA_IN_PLACE {
            match tokio::task::block_in_place(|| self.write_delta(delta)) {
                Ok(()) => return "in place",
                Err(err) => error!(
                    "{why}: writing {} CrowdSec prefix changes in place failed, swapping the whole lists instead: {err:#}",
                    delta.len()
                ),
            }
        }
        self.crowdsec_dirty = true;
        if self.swap_crowdsec(why) {
            "one generation swap"
        } else {
            "the swap failed: retried every second"
        }
    }

    /// Records a change of what CrowdSec's decisions enforce in the policy's history: the counts,
    /// and a sample of the prefixes.
    fn record_crowdsec(&mut self, delta: &Delta, lapi: &str, what: String) {
        if delta.is_empty() {
            return;
        }
        let sample = |sign: char, nets: &[IpNet]| {
            let mut lines: Vec<String> = nets
                .iter()
                .take(CROWDSEC_SAMPLE)
                .map(|net| format!("{sign}{net}"))
                .collect();
            if nets.len() > CROWDSEC_SAMPLE {
                lines.push(format!("{sign}{} more", nets.len() - CROWDSEC_SAMPLE));
            }
            lines
        };
        let mut details = sample('+', &delta.added);
        details.extend(sample('-', &delta.removed));
        let summary = format!(
            "{what}: {} prefixes banned, {} lifted",
            delta.added.len(),
            delta.removed.len()
        );
        let by = Actor::Crowdsec {
            lapi: lapi.to_owned(),
        };
        self.history
            .record(Change::new("crowdsec", by, summary, details));
    }

    /// Adds before it removes: a decision replaced by a wider one never lets its prefix through.
    fn write_delta(&mut self, delta: &Delta) -> Result<(), crate::datapath::Error> {
        for net in &delta.added {
            self.datapath.insert_live(ListKind::Deny, *net)?;
        }
        let runtime_deny = self.runtime.set(ListKind::Deny);
        for net in &delta.removed {
            if !self.config.deny.contains_net(net) && !runtime_deny.contains_net(net) {
                self.datapath.remove_live(ListKind::Deny, *net)?;
            }
        }
        Ok(())
    }

    /// Logs each decision prefix the allowlist overrides once, when it starts to.
    fn log_new_overrides(&mut self) {
        let now: BTreeMap<IpNet, Vec<IpNet>> = self
            .crowdsec
            .overridden()
            .map(|o| (o.cidr, o.enforced))
            .collect();
        for (cidr, enforced) in &now {
            if self.overrides_logged.contains(cidr) {
                continue;
            }
            if enforced.is_empty() {
                warn!(
                    "CrowdSec decision on {cidr} not enforced: the configured allowlist covers \
                     it, or would cut it into more than {MAX_PIECES} prefixes"
                );
            } else {
                warn!(
                    "CrowdSec decision on {cidr} enforced less the allowlisted addresses inside it, as {} prefixes",
                    enforced.len()
                );
            }
        }
        self.overrides_logged = now.into_keys().collect();
    }

    fn report(&mut self) {
        let Some(bouncer) = &self.bouncer else { return };
        let Some(settings) = &bouncer.settings.reporter else {
            return;
        };
        if self.last_report_look.elapsed() < REPORT_EVERY {
            return;
        }
        self.last_report_look = Instant::now();
        let runtime_allow = self.runtime.set(ListKind::Allow);
        let allowed =
            |prefix: &IpNet| self.config.allow.overlaps(prefix) || runtime_allow.overlaps(prefix);
        let tracked = self.datapath.source_tables().read_all();
        let reports = self
            .reporter
            .observe(now_unix(), &tracked, allowed, settings);
        bouncer.report(reports, &self.crowdsec_status);
    }

    /// One generation swap with the lists as they now are; on failure the old lists stay in
    /// force and the next tick tries again. Whether it took.
    fn swap_crowdsec(&mut self, why: &str) -> bool {
        let (allow, deny) = self.effective_lists(&self.config);
        let result =
            tokio::task::block_in_place(|| self.datapath.apply_policy(&self.config, allow, deny));
        match result {
            Ok(()) => {
                self.crowdsec_dirty = false;
                true
            }
            Err(err) => {
                error!(
                    "{why}: writing the CrowdSec decisions into the kernel failed, the previous lists stay and the next second tries again: {err:#}"
                );
                false
            }
        }
    }

    /// The CrowdSec part of `deny list`.
    pub(super) fn crowdsec_entries(&self) -> Vec<CrowdsecEntry> {
        if self.config.crowdsec.is_none() {
            return Vec::new();
        }
        self.crowdsec
            .held()
            .map(|held| CrowdsecEntry {
                id: held.id,
                cidr: held.cidr,
                origin: held.origin.clone(),
                scenario: held.scenario.clone(),
                expires: held.expires,
            })
            .collect()
    }

    /// Publishes the held decisions' counts for `status` and the metrics.
    pub(super) fn publish_crowdsec(&self) {
        let mut status = self.crowdsec_status.lock();
        if self.config.crowdsec.is_none() {
            status.decisions.clear();
            status.prefixes = 0;
            status.overridden.clear();
            return;
        }
        status.decisions = self.crowdsec.counts();
        status.prefixes = self.crowdsec.enforced_len();
        status.overridden = self.crowdsec.overridden().map(|o| o.cidr).collect();
    }
}

/// "2 by value, 1 by too_wide" after a poll's counts, or nothing.
fn describe_skips(skipped: &BTreeMap<Skip, u64>) -> String {
    let parts: Vec<String> = skipped
        .iter()
        .map(|(skip, n)| format!("{n} by {}", skip.label()))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}
