//! The shapes every collector here writes through prometheus-client's encoder: a family of
//! gauges or counters from `(labels, value)` samples, and a lone gauge or counter.

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

type Written = Result<(), std::fmt::Error>;

/// A family of `kind`, one sample per `(labels, metric)`; no sample at all is a valid family.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Written {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge family, one sample per `(labels, value)`.
pub(super) fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> Written {
    let samples = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
    family(encoder, name, help, MetricType::Gauge, samples)
}

/// A counter family, one sample per `(labels, total)`.
pub(super) fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> Written {
    let samples = samples.into_iter().map(|(l, t)| (l, ConstCounter::new(t)));
    family(encoder, name, help, MetricType::Counter, samples)
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
