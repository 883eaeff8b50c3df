//! Prometheus metrics. Datapath counters are read from the per-CPU map at scrape time and summed,
//! so a scrape reports exactly what the kernel counted, with no polling copy in between. The
//! egress guard's are in `egress.rs`.

mod crowdsec;
mod egress;
mod families;
mod shadow;
mod text_format;

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use port25_common::{Counter as KernelCounter, Reason, Verdict};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, info::Info},
    registry::Registry,
};

use self::families::{family, gauge, level};
use crate::{
    datapath::{self, Attachment, Counters, EgressCounters, SourceTables, ifname},
    egress_guard::SharedLog,
    model::{EgressMode, ListKind},
    shared::Shared,
};

/// How many of the most-dropped source prefixes the top-K gauge exports: bounded, whatever the
/// attacker sends.
pub(crate) const TOP_K: usize = 10;

/// What the daemon last made live, for the gauges.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub attachments: Vec<Attachment>,
    /// Interfaces the config names (the filter should be attached to each).
    pub interfaces_configured: usize,
    /// The egress guard's mode and, when its hooks are attached, where.
    pub egress_mode: EgressMode,
    pub egress_cgroup: Option<String>,
    pub allow_entries: usize,
    pub deny_entries: usize,
    /// Whether the pins outlive the daemon (the filter survives a crash).
    pub pins_persist: bool,
    /// Interfaces whose XDP link someone took away, with the mode it had: exported as 0.
    pub lost: Vec<(String, crate::model::XdpMode)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReloadLabels {
    pub result: &'static str,
}

/// A hook someone took away: `hook` as [`crate::model::Hook`] spells it, with the interface of
/// an XDP hook.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DetachedLabels {
    pub hook: &'static str,
    pub iface: String,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub reloads: Family<ReloadLabels, Counter>,
    pub detached: Family<DetachedLabels, Counter>,
    pub snapshot: Shared<Snapshot>,
    /// The shadow policy's sides' modes while one is loaded.
    pub shadow: Shared<Option<crate::datapath::Modes>>,
}

impl Metrics {
    pub(crate) fn new(
        counters: Arc<Counters>,
        sources: Arc<SourceTables>,
        egress: Arc<EgressCounters>,
        egress_log: SharedLog,
        crowdsec: crate::crowdsec::SharedStanding,
        shadow_tables: Arc<crate::datapath::ShadowTables>,
    ) -> Self {
        let mut registry = Registry::default();
        let snapshot = Shared::<Snapshot>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        for result in ["success", "failure"] {
            // Export both series from the start so rate() and alerts see a zero, not a gap.
            let _ = reloads.get_or_create(&ReloadLabels { result });
        }
        registry.register(
            "port25_config_reloads",
            "Configuration reloads (SIGHUP, or a watched list directory changed), by result",
            reloads.clone(),
        );
        let detached = Family::<DetachedLabels, Counter>::default();
        registry.register(
            "port25_detached",
            "Times a hook of port25 was found detached by someone else (bpftool link detach, an \
             interface re-created): hook xdp (by interface) or egress_guard",
            detached.clone(),
        );
        registry.register(
            "port25_build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(DatapathCollector {
            counters,
            sources,
            snapshot: snapshot.clone(),
        }));
        registry.register_collector(Box::new(egress::EgressCollector {
            counters: egress,
            log: egress_log,
            snapshot: snapshot.clone(),
        }));
        registry.register_collector(Box::new(crowdsec::CrowdsecCollector { status: crowdsec }));
        let shadow = Shared::<Option<crate::datapath::Modes>>::default();
        registry.register_collector(Box::new(shadow::ShadowCollector {
            tables: shadow_tables,
            loaded: shadow.clone(),
        }));
        Self {
            registry,
            reloads,
            detached,
            snapshot,
            shadow,
        }
    }

    /// The metrics in OpenMetrics text format.
    pub(crate) fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Serves `GET /metrics` until the task is dropped.
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<()> {
        let app = Router::new()
            .route("/metrics", get(scrape))
            .route("/", get(|| async { "port25d: metrics are at /metrics\n" }))
            .with_state(self);
        axum::serve(listener, app).await
    }
}

/// Binds the metrics address, with an error that says what to change.
pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|err| {
        anyhow::anyhow!(
            "cannot listen for metrics on {addr}: {err}; set [metrics] listen in the config \
             or pass --metrics-listen to use another address"
        )
    })
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics to a scraper whose Accept header asks for it (Prometheus does), the text format
/// 0.0.4 to any other (promtool, curl, many agents), as the Go and Python clients negotiate.
async fn scrape(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    match metrics.render() {
        Ok(body) if openmetrics => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Ok(body) => (
            [(header::CONTENT_TYPE, TEXT_0_0_4)],
            text_format::from_openmetrics(&body),
        )
            .into_response(),
        Err(_) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        )
            .into_response(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PacketLabels {
    iface: String,
    verdict: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttachLabels {
    iface: String,
    xdp_mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopSourceLabels {
    rank: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListLabels {
    list: &'static str,
}

struct DatapathCollector {
    counters: Arc<Counters>,
    sources: Arc<SourceTables>,
    snapshot: Shared<Snapshot>,
}

impl std::fmt::Debug for DatapathCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatapathCollector")
    }
}

/// A counter family read from the kernel's counters: name, help, which value.
type CounterFamily = (&'static str, &'static str, fn(&KernelCounter) -> u64);

/// (verdict, reason) pairs the datapath can produce: exported as zero until they happen.
fn possible_pairs() -> impl Iterator<Item = (Verdict, Reason)> {
    Verdict::ALL.into_iter().flat_map(|verdict| {
        Reason::ALL.into_iter().filter_map(move |reason| {
            let possible = match verdict {
                Verdict::Pass => !reason.drops(),
                Verdict::Drop | Verdict::WouldDrop => reason.drops(),
                // Only the synproxy program sends packets back, and only SYN-ACKs.
                Verdict::Answered => reason == Reason::SynCookie,
            };
            possible.then_some((verdict, reason))
        })
    })
}

impl Collector for DatapathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.snapshot.lock().clone();
        let totals = match self.counters.read() {
            Ok(totals) => totals,
            Err(err) => {
                tracing::warn!("reading the counters map failed: {err:#}");
                Default::default()
            }
        };
        let name_of = |ifindex: u32| {
            snapshot
                .attachments
                .iter()
                .find(|a| a.ifindex == ifindex)
                .map(|a| a.iface.clone())
                .or_else(|| ifname(ifindex))
                .unwrap_or_else(|| format!("ifindex{ifindex}"))
        };
        // Every attached interface gets every series; interfaces seen only in the map are added.
        let mut rows = std::collections::BTreeMap::new();
        for attachment in &snapshot.attachments {
            for (verdict, reason) in possible_pairs() {
                rows.insert((attachment.ifindex, verdict, reason), Default::default());
            }
        }
        rows.extend(totals);

        // Packets and bytes: the same rows, one counter family each.
        let families: [CounterFamily; 2] = [
            (
                "port25_packets",
                "TCP packets to protected ports judged by the XDP filter",
                |c| c.packets,
            ),
            (
                "port25_bytes",
                "Bytes of TCP packets to protected ports judged by the XDP filter",
                |c| c.bytes,
            ),
        ];
        for (name, help, value) in families {
            let samples = rows.iter().map(|((ifindex, verdict, reason), counter)| {
                let labels = PacketLabels {
                    iface: name_of(*ifindex),
                    verdict: verdict.label(),
                    reason: reason.label(),
                };
                (labels, value(counter))
            });
            family(&mut encoder, name, help, samples)?;
        }

        family(
            &mut encoder,
            "port25_list_entries",
            "CIDR entries in the live allow and deny lists",
            [
                (ListKind::Allow, snapshot.allow_entries),
                (ListKind::Deny, snapshot.deny_entries),
            ]
            .map(|(list, entries)| {
                let list = list.as_str();
                (ListLabels { list }, level(entries))
            }),
        )?;

        // The lost ones stay, at 0, until attached again.
        let attached = snapshot
            .attachments
            .iter()
            .map(|a| (&a.iface, a.mode, 1_i64));
        let lost = snapshot
            .lost
            .iter()
            .map(|(iface, mode)| (iface, *mode, 0_i64));
        family(
            &mut encoder,
            "port25_attached",
            "1 for each interface the XDP filter is attached to, with its XDP mode; 0 for one whose link someone took away",
            attached.chain(lost).map(|(iface, mode, value)| {
                let labels = AttachLabels {
                    iface: iface.clone(),
                    xdp_mode: mode.as_str(),
                };
                (labels, value)
            }),
        )?;

        gauge(
            &mut encoder,
            "port25_interfaces_configured",
            "Interfaces the config asks the XDP filter to protect (0: the egress guard only)",
            level(snapshot.interfaces_configured),
        )?;
        gauge(
            &mut encoder,
            "port25_pins_persistent",
            "1 when the pinned filter outlives the daemon (a crash leaves it enforcing), 0 when its \
             bpffs is private to the daemon's mount namespace",
            i64::from(snapshot.pins_persist),
        )?;

        let tracked = self.sources.read_all();
        gauge(
            &mut encoder,
            "port25_tracked_sources",
            "Source prefixes in the rate limiter's table (bounded by ratelimit.tracked_sources)",
            level(tracked.len()),
        )?;
        family(
            &mut encoder,
            "port25_top_source_dropped",
            "New connections refused by the rate limiter, for the source prefixes with the most (top 10)",
            datapath::top(tracked, TOP_K)
                .into_iter()
                .enumerate()
                .map(|(rank, source)| {
                    let labels = TopSourceLabels {
                        rank: (rank + 1).to_string(),
                        source: source.source.to_string(),
                    };
                    (labels, level(source.dropped))
                }),
        )
    }
}
