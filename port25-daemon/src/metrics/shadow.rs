//! The shadow policy's metrics (docs/ARCHITECTURE.md, § Shadow policy): whether one is loaded,
//! the new connection attempts it judged by (live reason, its reason, effect), and the source
//! prefixes it would newly drop most, read from the kernel at scrape time.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet},
};

use super::{
    TOP_K,
    families::{family, gauge},
};
use crate::{
    datapath::{Effect, Modes, ShadowTables, side_label},
    shared::Shared,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PairLabels {
    live: &'static str,
    candidate: &'static str,
    effect: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopLabels {
    rank: String,
    source: String,
    effect: &'static str,
}

pub(super) struct ShadowCollector {
    pub tables: Arc<ShadowTables>,
    /// The two sides' modes while a shadow is loaded; `None`: none is.
    pub loaded: Shared<Option<Modes>>,
}

impl std::fmt::Debug for ShadowCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShadowCollector")
    }
}

impl Collector for ShadowCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let loaded = *self.loaded.lock();
        gauge(
            &mut encoder,
            "port25_shadow_loaded",
            "1 while a shadow policy is judged beside the live one (port25d shadow load), else 0",
            i64::from(loaded.is_some()),
        )?;
        let (pairs, mut sources) = match loaded {
            Some(_) => (self.tables.pairs(), self.tables.sources()),
            None => (Vec::new(), Vec::new()),
        };
        let modes = loaded.unwrap_or(Modes {
            live_monitor: false,
            candidate_monitor: false,
        });
        family(
            &mut encoder,
            "port25_shadow_syns",
            "New connection attempts the shadow policy judged since it was loaded, by the live \
             reason, the shadow's reason (not_judged: a port that side does not protect) and the \
             effect promoting it would have (newly_dropped, newly_passed, same)",
            pairs.into_iter().map(|(live, candidate, total)| {
                let labels = PairLabels {
                    live: side_label(live),
                    candidate: side_label(candidate),
                    effect: Effect::of(live, candidate, modes).label(),
                };
                (labels, total)
            }),
        )?;
        sources.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.source.cmp(&b.source)));
        let mut top = Vec::new();
        for effect in [Effect::NewlyDropped, Effect::NewlyPassed] {
            let rows = sources
                .iter()
                .filter(|row| Effect::of(row.live, row.candidate, modes) == effect)
                .take(TOP_K);
            for (rank, row) in rows.enumerate() {
                let labels = TopLabels {
                    rank: (rank + 1).to_string(),
                    source: row.source.to_string(),
                    effect: effect.label(),
                };
                top.push((labels, i64::try_from(row.packets).unwrap_or(i64::MAX)));
            }
        }
        family(
            &mut encoder,
            "port25_shadow_top_source",
            "New connection attempts of the source prefixes the shadow policy would newly drop (or \
             newly pass) most (top 10 of each; a sample the kernel keeps of at most 4,096 \
             prefixes)",
            top,
        )
    }
}
