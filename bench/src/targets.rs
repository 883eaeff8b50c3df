//! The report's "Targets" section: each performance target with this run's figure, whether the
//! run meets it, and for a missed one what bounds it, from another figure of the same run.

use std::fmt::Write as _;

use crate::{
    flood::{Mail, Receiver},
    kernel::{self, PerPacket},
    markdown::{Section, table},
    results::{Results, flood_cpu, flood_row},
};

/// One target: what it asks, the figure, whether it is met, and the bound when it is not.
struct Target {
    asks: &'static str,
    measured: String,
    met: bool,
    bound: String,
}

fn ns(pp: &PerPacket, path: &str) -> f64 {
    pp.row(path).map_or(f64::NAN, |row| row.port25_ns)
}

fn xdp_filter_ns(pp: &PerPacket, path: &str) -> f64 {
    pp.row(path)
        .and_then(|row| row.xdp_filter.as_ref().ok())
        .map_or(f64::NAN, |(xf, _)| xf.median)
}

/// A shadow policy loaded costs at most 1.6x the same packet's time without it, on each path the
/// bench pairs where the candidate agrees; a SYN whose verdict it changes costs more (its own
/// bucket step and a noted source), shown beside (docs/ARCHITECTURE.md, § Shadow policy).
fn shadow_target(pp: &PerPacket) -> Target {
    let ratio = |(shadowed, alone): &(&str, &str)| ns(pp, shadowed) / ns(pp, alone);
    let [agrees, differs, agrees_limited] = kernel::SHADOW_PAIRS;
    let worst = ratio(&agrees).max(ratio(&agrees_limited));
    Target {
        asks: "per-packet cost with a shadow policy loaded <= 1.6x without",
        measured: format!(
            "{:.2}x (allowlisted), {:.2}x (rate-limited) where it agrees; {:.2}x for a SYN whose \
             verdict it changes",
            ratio(&agrees),
            ratio(&agrees_limited),
            ratio(&differs)
        ),
        met: worst <= 1.6,
        bound: format!(
            "a SYN whose verdict the candidate changes also takes the candidate's own bucket step \
             and notes its source (an LRU hash update): {:.0} ns over the same drop without a \
             shadow, row \"{}\"; a loaded shadow's traffic mostly agrees",
            ns(pp, differs.0) - ns(pp, differs.1),
            differs.0
        ),
    }
}

fn all_delivered(mail: &Mail) -> bool {
    mail.sent > 0 && mail.delivered == mail.sent
}

fn targets(r: &Results) -> Vec<Target> {
    let pp = &r.per_packet;
    let floor = pp.floor_drop_ns;
    let base = ns(pp, kernel::ROW_OTHER_PORT) / pp.floor_pass_ns;
    let base_bound = format!(
        "what every verdict reads before any list: a TCP segment to another port, parsed to its \
         ports and passed after the generation, settings and port-bitmap reads, costs {base:.2}x \
         the floor (row \"{}\")",
        kernel::ROW_OTHER_PORT
    );
    let unlisted = ns(pp, kernel::ROW_UNLISTED);
    let allowed = ns(pp, kernel::ROW_ALLOWED);
    let limited = ns(pp, kernel::ROW_RATELIMITED);
    let vs_xf = unlisted / xdp_filter_ns(pp, kernel::ROW_UNLISTED);
    let mut out = vec![
        Target {
            asks: "dropped SYN from a source in no list <= 2.0x the floor",
            measured: format!("{:.2}x ({unlisted:.0} ns)", unlisted / floor),
            met: unlisted / floor <= 2.0,
            bound: base_bound.clone(),
        },
        Target {
            asks: "the same packet <= 0.7x xdp-filter's time",
            measured: format!("{vs_xf:.2}x"),
            met: vs_xf <= 0.7,
            bound: String::new(),
        },
        Target {
            asks: "allowlisted pass <= 2.5x the floor",
            measured: format!("{:.2}x ({allowed:.0} ns)", allowed / pp.floor_pass_ns),
            met: allowed / pp.floor_pass_ns <= 2.5,
            bound: base_bound,
        },
        shadow_target(pp),
        Target {
            asks: "rate-limited drop <= 3x the floor",
            measured: format!("{:.2}x ({limited:.0} ns)", limited / floor),
            met: limited / floor <= 3.0,
            bound: format!(
                "the source's token bucket alone (an LRU hash lookup, a clock read, a \
                 compare-and-swap): the rate-limited row less the same source's drop without \
                 rate limiting is {:.0} ns, {:.2}x the floor by itself",
                limited - unlisted,
                (limited - unlisted) / floor
            ),
        },
    ];
    if let (Some(small), Some(large)) = (r.scale.first(), r.scale.last()) {
        let v4 = large.v4_dropped_ns / small.v4_dropped_ns;
        let v6 = large.v6_dropped_ns / small.v6_dropped_ns;
        out.push(Target {
            asks: "dropped-packet cost at the largest list <= 1.3x at the smallest, IPv4 and IPv6",
            measured: format!(
                "IPv4 {v4:.2}x, IPv6 {v6:.2}x ({} vs {} prefixes)",
                large.entries, small.entries
            ),
            met: v4 <= 1.3 && v6 <= 1.3,
            bound: "a source the prefilters answer (IPv4: its /16 or /24 nibble; IPv6: its /48 and \
                    /32 bits, then the trie of the entries shorter than /32) walks no deep trie; one \
                    under a /24, /48 or /32 that holds a longer entry walks the whole trie, whose \
                    depth grows with the list"
                .to_owned(),
        });
        out.push(Target {
            asks: "a CrowdSec poll of 10 decisions beside the largest list: under 50 ms",
            measured: format!(
                "{:.2} ms in place ({} prefixes per family), against {:.2} s for a generation swap",
                large.delta_ms.median, large.entries, large.load_seconds
            ),
            met: large.delta_ms.median < 50.0,
            bound: format!(
                "the same delta beside {} prefixes: {:.2} ms",
                small.entries, small.delta_ms.median
            ),
        });
    }
    let (port25, xf, floor_rx) = (
        flood_cpu(&r.flood, Receiver::Port25),
        flood_cpu(&r.flood, Receiver::XdpFilter),
        flood_cpu(&r.flood, Receiver::Floor),
    );
    let floor_bound = format!(
        "the receive path itself: the floor receiver (f), which only drops, spends {floor_rx:.0} \
         ms per million packets; over it port25 adds {:.0} and xdp-filter {:.0}",
        port25 - floor_rx,
        xf - floor_rx
    );
    out.push(Target {
        asks: "flood: receiver CPU per million <= 0.7x xdp-filter's",
        measured: format!("{:.2}x", port25 / xf),
        met: port25 / xf <= 0.7,
        bound: floor_bound,
    });
    for (receiver, name) in [
        (Receiver::Iptables, "iptables + ipset"),
        (Receiver::Nftables, "nftables"),
    ] {
        let other = flood_cpu(&r.flood, receiver);
        out.push(Target {
            asks: if receiver == Receiver::Iptables {
                "flood: >= 5x less receiver CPU than iptables + ipset"
            } else {
                "flood: >= 5x less receiver CPU than nftables"
            },
            measured: format!("{:.2}x", other / port25),
            met: other / port25 >= 5.0,
            bound: format!(
                "the receive path: even a receiver that costs only the floor's {floor_rx:.0} ms \
                 would be {:.2}x less than {name}; what each filter adds over it, {name} {:.0} \
                 and port25 {:.0}, differs {:.2}x",
                other / floor_rx,
                other - floor_rx,
                port25 - floor_rx,
                (other - floor_rx) / (port25 - floor_rx)
            ),
        });
    }
    out.extend(open_mx_targets(r));
    let short: Vec<String> = r
        .flood
        .rows
        .iter()
        .filter(|row| !(all_delivered(&row.mail) && all_delivered(&row.mail_own)))
        .map(|row| {
            format!(
                "{}: {}/{} and {}/{}",
                row.receiver.label(),
                row.mail.delivered,
                row.mail.sent,
                row.mail_own.delivered,
                row.mail_own.sent
            )
        })
        .collect();
    out.push(Target {
        asks: "mail during the flood: 100% delivered",
        measured: if short.is_empty() {
            "every message, every receiver, both paths".to_owned()
        } else {
            format!("some lost: {} ({})", short.join("; "), Section::Mail)
        },
        met: short.is_empty(),
        bound: String::new(),
    });
    if let (Some(p), Some(f)) = (
        flood_row(&r.flood, Receiver::Port25),
        flood_row(&r.flood, Receiver::Floor),
    ) {
        let (idle, idle_own) = (&r.flood.idle_mail, &r.flood.idle_mail_own);
        let shared = p.mail.p99_ms / idle.p99_ms;
        let own = p.mail_own.p99_ms / idle_own.p99_ms;
        out.push(Target {
            asks: "mail p99 during the flood within 2x of the no-flood reference",
            measured: format!(
                "{shared:.1}x on the flood's veth, {own:.1}x on its own ({:.1} and {:.1} ms)",
                p.mail.p99_ms, p.mail_own.p99_ms
            ),
            met: shared <= 2.0 && own <= 2.0,
            bound: format!(
                "the receiver's load on this machine: the floor receiver (f), which only \
                 drops the flood, gives {:.1}x and {:.1}x ({:.1} and {:.1} ms)",
                f.mail.p99_ms / idle.p99_ms,
                f.mail_own.p99_ms / idle_own.p99_ms,
                f.mail.p99_ms,
                f.mail_own.p99_ms
            ),
        });
    }
    if let Some(large) = r.daemon.iter().max_by_key(|d| d.entries) {
        let mib = large.rss_kib as f64 / 1024.0;
        out.push(Target {
            asks: "daemon: a million-entry load <= 2 s, RSS <= 40 MiB, scrape median <= 1 ms",
            measured: format!(
                "{:.1} s, {mib:.1} MiB, {:.2} ms ({} entries)",
                large.ready_seconds, large.scrape_ms_p50, large.entries
            ),
            met: large.ready_seconds <= 2.0 && mib <= 40.0 && large.scrape_ms_p50 <= 1.0,
            // The kernel's writes, which the start waits for: section 2 writes the same number of
            // entries per family straight into the maps.
            bound: r
                .scale
                .iter()
                .max_by_key(|row| row.entries)
                .map(|row| {
                    format!(
                        "writing the entries into the kernel: section 2 writes {} prefixes per \
                         family in {:.2} s ({:.2} µs an entry), which a start waits for",
                        row.entries,
                        row.load_seconds,
                        row.load_seconds * 1e6 / (2 * row.entries) as f64
                    )
                })
                .unwrap_or_default(),
        });
    }
    out
}

/// The open MX under the random-source flood: port25's `ratelimit` and `synproxy` against the
/// floor receiver and the netfilter receivers an operator would run instead, all of the same
/// rounds (what each adds over the floor, so that the receive path they share cancels out).
fn open_mx_targets(r: &Results) -> Vec<Target> {
    let cpu = |receiver| flood_cpu(&r.flood, receiver);
    let floor = cpu(Receiver::Floor);
    let adds = |receiver| cpu(receiver) - floor;
    let (ratelimit, synproxy) = (cpu(Receiver::Ratelimit), cpu(Receiver::Synproxy));
    let closed = cpu(Receiver::Port25);
    let nothing = cpu(Receiver::Nothing);
    let mut out = vec![
        Target {
            asks: "open MX flood: policy ratelimit's receiver CPU <= 1.5x the floor receiver's",
            measured: format!(
                "{:.2}x ({ratelimit:.0} vs {floor:.0} ms)",
                ratelimit / floor
            ),
            met: ratelimit / floor <= 1.5,
            bound: format!(
                "what every verdict does before a bucket: (e) policy drop, the same parse and \
                 list lookups, is {:.2}x the floor in the same rounds; the rate limiter adds {:.0} \
                 ms per million over it",
                closed / floor,
                ratelimit - closed
            ),
        },
        Target {
            asks: "open MX flood: policy synproxy's receiver CPU <= 2.5x the floor's and <= 0.33x \
                   the stack's own answer (a)",
            measured: format!(
                "{:.2}x the floor, {:.2}x (a) ({synproxy:.0} ms)",
                synproxy / floor,
                synproxy / nothing
            ),
            met: synproxy / floor <= 2.5 && synproxy / nothing <= 0.33,
            bound: format!(
                "the answer itself: over (g), the same program up to the bucket, the cookie, the \
                 SYN-ACK written with its checksums and XDP_TX add {:.0} ms per million",
                synproxy - ratelimit
            ),
        },
    ];
    for (peer, name) in [
        (Receiver::Hashlimit, "iptables hashlimit"),
        (Receiver::NftMeter, "an nftables per-source limit"),
    ] {
        let ratio = adds(Receiver::Ratelimit) / adds(peer);
        out.push(Target {
            asks: if peer == Receiver::Hashlimit {
                "open MX flood: what ratelimit adds over the floor <= 0.2x what iptables \
                 hashlimit adds"
            } else {
                "open MX flood: what ratelimit adds over the floor <= 0.2x what an nftables \
                 per-source limit adds"
            },
            measured: format!(
                "{ratio:.2}x ({:.0} vs {:.0} ms)",
                adds(Receiver::Ratelimit),
                adds(peer)
            ),
            met: ratio <= 0.2,
            bound: format!(
                "(e) policy drop adds {:.0} ms over the floor before any bucket: {:.2}x what {name} \
                 adds",
                adds(Receiver::Port25),
                adds(Receiver::Port25) / adds(peer)
            ),
        });
    }
    let ratio = adds(Receiver::Synproxy) / adds(Receiver::NetfilterSynproxy);
    out.push(Target {
        asks: "open MX flood: what synproxy adds over the floor <= 0.33x what netfilter SYNPROXY \
               adds",
        measured: format!(
            "{ratio:.2}x ({:.0} vs {:.0} ms)",
            adds(Receiver::Synproxy),
            adds(Receiver::NetfilterSynproxy)
        ),
        met: ratio <= 0.33,
        bound: format!(
            "(g), port25's program up to the answer, adds {:.0} ms; the answer adds {:.0} more",
            adds(Receiver::Ratelimit),
            synproxy - ratelimit
        ),
    });
    out
}

/// The section, in markdown.
pub(crate) fn section(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(
        s,
        "The performance targets, each with this run's figure (ratios of medians, from the sections \
         below) and, where the run misses it, what bounds it: another figure of the same run.\n"
    );
    let rows = targets(r).into_iter().map(|t| {
        vec![
            t.asks.to_owned(),
            t.measured,
            if t.met { "met" } else { "missed" }.to_owned(),
            if t.met { String::new() } else { t.bound },
        ]
    });
    table(
        &mut s,
        "target | this run | met | what bounds it",
        "lrll",
        rows,
    );
    s
}
