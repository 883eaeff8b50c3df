//! The egress guard's metrics: connects to guarded ports by verdict and reason, read from the
//! kernel's per-CPU counters at scrape time; ring-buffer losses; and the processes refused most.

use port25_common::egress::{Reason, Verdict};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet},
};

use std::sync::Arc;

use super::{
    Snapshot, TOP_K,
    families::{counter, family, level},
};
use crate::{
    datapath::{EgressCounters, EgressCounts},
    egress_guard::SharedLog,
    model::EgressMode,
    shared::Shared,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectLabels {
    verdict: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttachedLabels {
    mode: &'static str,
    cgroup: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopDeniedLabels {
    rank: String,
    comm: String,
    cgroup: String,
}

pub(super) struct EgressCollector {
    pub counters: Arc<EgressCounters>,
    pub log: SharedLog,
    pub snapshot: Shared<Snapshot>,
}

impl std::fmt::Debug for EgressCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EgressCollector")
    }
}

/// A counter family of the egress guard: name, help, how to read it, which pairs it can count.
type EgressFamily = (
    &'static str,
    &'static str,
    fn(&EgressCounters) -> Result<EgressCounts, crate::datapath::Error>,
    fn(Verdict, Reason) -> bool,
);

/// Whether the hooks can reach `verdict` for `reason`: only processes not allowed are refused.
fn possible_connect(verdict: Verdict, reason: Reason) -> bool {
    (verdict == Verdict::Allow) == (reason != Reason::NotAllowed)
}

/// Forwarded SYNs have no process, so no allowed user or cgroup.
fn possible_forwarded(verdict: Verdict, reason: Reason) -> bool {
    possible_connect(verdict, reason)
        && !matches!(reason, Reason::AllowedUser | Reason::AllowedCgroup)
}

impl Collector for EgressCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (mode, cgroup) = {
            let snapshot = self.snapshot.lock();
            (snapshot.egress_mode, snapshot.egress_cgroup.clone())
        };
        let attached = (mode != EgressMode::Off).then(|| {
            let labels = AttachedLabels {
                mode: mode.as_str(),
                cgroup: cgroup.clone().unwrap_or_default(),
            };
            (labels, i64::from(cgroup.is_some()))
        });
        family(
            &mut encoder,
            "port25_egress_attached",
            "1 when the egress guard's connect hooks are attached (to the cgroup labelled), 0 when \
             its mode is on and they are not; no sample when the guard is off",
            attached,
        )?;
        let families: [EgressFamily; 2] = [
            (
                "port25_egress_connects",
                "Outbound TCP connects to guarded ports judged by the egress guard",
                EgressCounters::connects,
                possible_connect,
            ),
            (
                "port25_egress_forwarded",
                "Forwarded TCP SYNs to guarded ports judged by the egress guard's XDP side on \
                 forward_interfaces (no process is known there)",
                EgressCounters::forwarded,
                possible_forwarded,
            ),
        ];
        for (name, help, read, possible) in families {
            let counts = read(&self.counters).unwrap_or_else(|err| {
                tracing::warn!("reading the egress counters failed: {err:#}");
                Vec::new()
            });
            let samples = counts
                .into_iter()
                .filter(|&(verdict, reason, _)| possible(verdict, reason))
                .map(|(verdict, reason, total)| {
                    let labels = ConnectLabels {
                        verdict: verdict.label(),
                        reason: reason.label(),
                    };
                    (labels, total)
                });
            family(&mut encoder, name, help, samples)?;
        }
        counter(
            &mut encoder,
            "port25_egress_events_lost",
            "Egress events the kernel's ring buffer had no room for (the connects are still counted)",
            self.counters.lost().unwrap_or(0),
        )?;
        let top = self.log.lock().top_refused(TOP_K);
        family(
            &mut encoder,
            "port25_egress_top_denied",
            "Outbound connects refused (or would-be refused) since the daemon started, for the \
             processes with the most (top 10), by command name and cgroup",
            top.into_iter()
                .enumerate()
                .map(|(rank, (comm, cgroup, refused))| {
                    let labels = TopDeniedLabels {
                        rank: (rank + 1).to_string(),
                        comm,
                        cgroup,
                    };
                    (labels, level(refused))
                }),
        )
    }
}
