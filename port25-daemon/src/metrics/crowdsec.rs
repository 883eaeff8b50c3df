//! The CrowdSec bouncer's and reporter's metrics, exported while `[crowdsec]` is on: decisions
//! held by origin and family, those the allowlist overrides, decisions skipped by reason, polls and
//! alerts by result, and when the LAPI last answered (the
//! alert rule `Port25CrowdsecLapiUnreachable` watches it).

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet},
};

use super::families::{family, gauge, gauge_if_known, level};
use crate::crowdsec::SharedStanding;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    origin: String,
    family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    reason: &'static str,
}

/// A counter family by result: name, help, and the success and failure counts.
type ResultFamily = (&'static str, &'static str, [(&'static str, u64); 2]);

pub(super) struct CrowdsecCollector {
    pub status: SharedStanding,
}

impl std::fmt::Debug for CrowdsecCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrowdsecCollector")
    }
}

impl Collector for CrowdsecCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.status.lock().clone();
        if status.lapi_url.is_empty() {
            return Ok(());
        }
        family(
            &mut encoder,
            "port25_crowdsec_decisions",
            "CrowdSec ban decisions held in the deny list, by origin and address family",
            status.decisions.iter().map(|((origin, family), count)| {
                let labels = DecisionLabels {
                    origin: origin.clone(),
                    family: (*family).to_owned(),
                };
                (labels, level(*count))
            }),
        )?;
        let by_result: [ResultFamily; 2] = [
            (
                "port25_crowdsec_polls",
                "Polls of the CrowdSec Local API's decision stream, by result",
                [
                    ("success", status.polls_ok),
                    ("failure", status.polls_failed),
                ],
            ),
            (
                "port25_crowdsec_alerts",
                "Alerts pushed to the CrowdSec Local API (prefixes that flooded with connections they completed), by result",
                [
                    ("success", status.alerts_ok),
                    ("failure", status.alerts_failed),
                ],
            ),
        ];
        for (name, help, rows) in by_result {
            let samples = rows.map(|(result, total)| (ResultLabels { result }, total));
            family(&mut encoder, name, help, samples)?;
        }
        family(
            &mut encoder,
            "port25_crowdsec_decisions_skipped",
            "Decisions of the stream not enforced, by reason: another type (captcha…), scope or origin; a value that is no address; a duration that is none, over or past Go's range; a range wider than min_ipv4_prefix/min_ipv6_prefix; max_decisions reached; and deletions of decisions not held",
            status.skips().map(|(skip, total)| {
                let labels = SkipLabels {
                    reason: skip.label(),
                };
                (labels, total)
            }),
        )?;
        gauge(
            &mut encoder,
            "port25_crowdsec_decisions_overridden",
            "Held CrowdSec decisions whose prefix the configured allowlist covers wholly or in part: allowlisted addresses inside them are not dropped",
            level(status.overridden.len()),
        )?;
        // No sample until the LAPI first answers: a made-up time would be a lie.
        gauge_if_known(
            &mut encoder,
            "port25_crowdsec_last_success_timestamp_seconds",
            "When the CrowdSec Local API last answered a poll (Unix time; no sample before the first answer)",
            status.last_success.map(level),
        )?;
        gauge(
            &mut encoder,
            "port25_crowdsec_failed_polls_in_a_row",
            "Polls of the CrowdSec Local API that failed since it last answered (0: it answers)",
            i64::from(status.failures_in_a_row),
        )
    }
}
