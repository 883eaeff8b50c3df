//! The CrowdSec bouncer's and reporter's metrics, exported while `[crowdsec]` is on: decisions
//! held by origin and family, polls and alerts by result, and when the LAPI last answered (the
//! alert rule `Port25CrowdsecLapiUnreachable` watches it).

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::crowdsec::SharedStatus;

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
    reason: String,
}

/// A counter family by result: name, help, and the success and failure counts.
type ResultFamily = (&'static str, &'static str, [(&'static str, u64); 2]);

pub(super) struct CrowdsecCollector {
    pub status: SharedStatus,
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
        let mut decisions = encoder.encode_descriptor(
            "port25_crowdsec_decisions",
            "CrowdSec ban decisions held in the deny list, by origin and address family",
            None,
            MetricType::Gauge,
        )?;
        for count in &status.decisions {
            let labels = DecisionLabels {
                origin: count.origin.clone(),
                family: count.family.clone(),
            };
            let value = i64::try_from(count.count).unwrap_or(i64::MAX);
            ConstGauge::new(value).encode(decisions.encode_family(&labels)?)?;
        }
        let counters: [ResultFamily; 2] = [
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
                "Alerts pushed to the CrowdSec Local API (prefixes the rate limiter kept dropping), by result",
                [
                    ("success", status.alerts_ok),
                    ("failure", status.alerts_failed),
                ],
            ),
        ];
        for (name, help, rows) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (result, value) in rows {
                ConstCounter::new(value).encode(family.encode_family(&ResultLabels { result })?)?;
            }
        }
        let mut skipped = encoder.encode_descriptor(
            "port25_crowdsec_decisions_skipped",
            "Decisions of the stream not enforced: another type (captcha…), scope or origin, or a value that is no address",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in &status.skipped {
            let labels = SkipLabels {
                reason: reason.clone(),
            };
            ConstCounter::new(*value).encode(skipped.encode_family(&labels)?)?;
        }
        // No sample until the LAPI first answers: a made-up time would be a lie.
        let last_success = encoder.encode_descriptor(
            "port25_crowdsec_last_success_timestamp_seconds",
            "When the CrowdSec Local API last answered a poll (Unix time; no sample before the first answer)",
            None,
            MetricType::Gauge,
        )?;
        if let Some(at) = status.last_success {
            ConstGauge::new(i64::try_from(at).unwrap_or(i64::MAX)).encode(last_success)?;
        }
        let failing = encoder.encode_descriptor(
            "port25_crowdsec_failed_polls_in_a_row",
            "Polls of the CrowdSec Local API that failed since it last answered (0: it answers)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(status.failures_in_a_row)).encode(failing)?;
        Ok(())
    }
}
