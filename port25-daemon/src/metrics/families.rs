//! The shapes every collector here writes through prometheus-client's encoder: a family of
//! gauges or counters from `(labels, value)` samples, and a lone gauge or counter.

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, TypedMetric, counter::ConstCounter, gauge::ConstGauge},
};

type Written = Result<(), std::fmt::Error>;

/// What one sample of a family holds: a gauge's level (i64) or a counter's total (u64), the
/// values prometheus-client's `ConstGauge` and `ConstCounter` take; the family's type follows.
pub(super) trait Sample {
    type Metric: EncodeMetric + TypedMetric;
    fn metric(self) -> Self::Metric;
}

impl Sample for i64 {
    type Metric = ConstGauge;
    fn metric(self) -> ConstGauge {
        ConstGauge::new(self)
    }
}

impl Sample for u64 {
    type Metric = ConstCounter;
    fn metric(self) -> ConstCounter {
        ConstCounter::new(self)
    }
}

/// A family of gauges (i64 samples) or counters (u64 samples), one sample per `(labels, value)`;
/// no sample at all is a valid family.
pub(super) fn family<L: EncodeLabelSet, V: Sample>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> Written {
    let mut family = encoder.encode_descriptor(name, help, None, V::Metric::TYPE)?;
    for (labels, value) in samples {
        value.metric().encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge without labels.
pub(super) fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Written {
    gauge_if_known(encoder, name, help, Some(value))
}

/// A gauge without labels, described but without a sample while its value is unknown.
pub(super) fn gauge_if_known(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: Option<i64>,
) -> Written {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    match value {
        Some(value) => ConstGauge::new(value).encode(metric),
        None => Ok(()),
    }
}

/// A counter without labels.
pub(super) fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    total: u64,
) -> Written {
    ConstCounter::new(total).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

/// A count as a gauge's value, which the encoder takes as i64 (saturating; never reached).
pub(super) fn level(count: impl TryInto<i64>) -> i64 {
    count.try_into().unwrap_or(i64::MAX)
}
