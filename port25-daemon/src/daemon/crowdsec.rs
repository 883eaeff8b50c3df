//! The daemon's side of the CrowdSec bouncer and reporter: starting the task to match the config,
//! taking each poll into the CrowdSec list with one generation swap, expiring decisions locally,
//! and handing the reporter's prefixes to the task. docs/ARCHITECTURE.md, § CrowdSec.

use std::time::Instant;

use ipnet::IpNet;
use tracing::{error, info};

use super::Daemon;
use crate::{
    crowdsec::{Bouncer, Poll, decisions::Skip},
    model::ListKind,
    proto::{CrowdsecCount, CrowdsecEntry, CrowdsecStatus},
    runtime::now_unix,
};

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
                *self.crowdsec_status.lock() = CrowdsecStatus::default();
                info!("CrowdSec bouncer off");
            }
        }
        Ok(())
    }

    /// Takes one poll's decisions: one swap when the banned prefixes changed, then saved.
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
                *status.skipped.entry(skip.label().to_owned()).or_default() += n;
            }
        }
        if applied.prefixes_changed {
            self.crowdsec_dirty = true;
        }
        if (applied.added + applied.removed > 0 || self.crowdsec_dirty)
            && let Err(err) = self.crowdsec.save()
        {
            error!("saving the CrowdSec decisions: {err:#}");
        }
        if self.crowdsec_dirty {
            self.swap_crowdsec("CrowdSec poll");
        }
        if applied.added + applied.removed > 0 {
            let skipped: u64 = applied.skipped.values().sum();
            info!(
                "CrowdSec{}: {} decisions added, {} removed, {skipped} skipped; {} held on {} prefixes ({} ms)",
                if poll.full { " (full pull)" } else { "" },
                applied.added,
                applied.removed,
                self.crowdsec.len(),
                self.crowdsec.prefixes().len(),
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
        if self.crowdsec.expire(now_unix()) {
            if let Err(err) = self.crowdsec.save() {
                error!("saving the CrowdSec decisions: {err:#}");
            }
            self.crowdsec_dirty = true;
        }
        if self.crowdsec_dirty {
            self.swap_crowdsec("CrowdSec decisions expired");
            self.publish();
        }
        self.report();
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
    /// force and the next tick tries again.
    fn swap_crowdsec(&mut self, why: &str) {
        let (allow, deny) = self.effective_lists(&self.config);
        let result =
            tokio::task::block_in_place(|| self.datapath.apply_policy(&self.config, allow, deny));
        match result {
            Ok(()) => self.crowdsec_dirty = false,
            Err(err) => error!(
                "{why}: writing the CrowdSec decisions into the kernel failed, the previous lists stay and the next second tries again: {err:#}"
            ),
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
            return;
        }
        status.decisions = self
            .crowdsec
            .counts()
            .into_iter()
            .map(|((origin, family), count)| CrowdsecCount {
                origin,
                family: family.to_owned(),
                count,
            })
            .collect();
        status.prefixes = self.crowdsec.prefixes().len();
        for skip in Skip::ALL {
            status.skipped.entry(skip.label().to_owned()).or_default();
        }
    }
}
