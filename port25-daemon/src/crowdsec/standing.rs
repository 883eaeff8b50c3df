//! Where the bouncer and the reporter stand, live: the task writes its polls and alerts, the run
//! loop what the list holds, the metrics read it at each scrape, and `status` gets its wire form
//! ([`CrowdsecStatus`]) when it asks.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::decisions::Skip;
use crate::proto::{CrowdsecCount, CrowdsecStatus};

/// The live state; `lapi_url` empty while the bouncer is off.
#[derive(Clone, Debug, Default)]
pub(crate) struct Standing {
    pub lapi_url: String,
    /// Unix seconds of the last poll, whatever its result, and of the last that succeeded.
    pub last_poll: Option<u64>,
    pub last_success: Option<u64>,
    /// Why the last poll failed, while it fails; whether the answer was refused (as opposed to
    /// none coming).
    pub last_error: Option<String>,
    pub last_answer_refused: bool,
    pub failures_in_a_row: u32,
    pub polls_ok: u64,
    pub polls_failed: u64,
    /// Decisions held, by origin and family ("ipv4", "ipv6").
    pub decisions: BTreeMap<(String, &'static str), usize>,
    /// Prefixes they enforce.
    pub prefixes: usize,
    /// Decisions of the stream not taken, and deletions of nothing held, by why.
    pub skipped: BTreeMap<Skip, u64>,
    /// Held decisions' prefixes the configured allowlist overrides (wholly or in part).
    pub overridden: Vec<IpNet>,
    /// The watcher name alerts are pushed as; `None`: no reporter.
    pub reporter: Option<String>,
    pub alerts_ok: u64,
    pub alerts_failed: u64,
}

/// Shared by the task, the run loop, `status` and the metrics.
pub(crate) type SharedStanding = crate::shared::Shared<Standing>;

impl Standing {
    /// What every skip reason counted, those never seen at 0: the metric's every sample.
    pub(crate) fn skips(&self) -> impl Iterator<Item = (Skip, u64)> + '_ {
        Skip::ALL
            .into_iter()
            .map(|skip| (skip, self.skipped.get(&skip).copied().unwrap_or(0)))
    }

    /// The wire form `status` shows.
    pub(crate) fn to_status(&self) -> CrowdsecStatus {
        CrowdsecStatus {
            lapi_url: self.lapi_url.clone(),
            last_poll: self.last_poll,
            last_success: self.last_success,
            last_error: self.last_error.clone(),
            last_answer_refused: self.last_answer_refused,
            failures_in_a_row: self.failures_in_a_row,
            polls_ok: self.polls_ok,
            polls_failed: self.polls_failed,
            decisions: self
                .decisions
                .iter()
                .map(|((origin, family), count)| CrowdsecCount {
                    origin: origin.clone(),
                    family: (*family).to_owned(),
                    count: *count,
                })
                .collect(),
            prefixes: self.prefixes,
            skipped: self
                .skips()
                .map(|(skip, n)| (skip.label().to_owned(), n))
                .collect(),
            overridden: self
                .overridden
                .iter()
                .take(CrowdsecStatus::OVERRIDDEN_SHOWN)
                .copied()
                .collect(),
            overridden_count: self.overridden.len(),
            reporter: self.reporter.clone(),
            alerts_ok: self.alerts_ok,
            alerts_failed: self.alerts_failed,
        }
    }
}
