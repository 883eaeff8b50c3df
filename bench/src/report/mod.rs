//! The report: markdown tables (the SVG bar charts are in `svg.rs`).

mod sections;

use std::fmt::Write as _;

use anyhow::{Result, bail};

use crate::{
    flood::{Mail, Receiver},
    kernel::{self, XDP_DROP},
    markdown::Section,
    results::{Results, flood_cpu},
};

fn action(a: u32) -> &'static str {
    match a {
        XDP_DROP => "drop",
        kernel::XDP_PASS => "pass",
        kernel::XDP_TX => "answered (XDP_TX)",
        _ => "other",
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".to_string()
    }
}

/// The headline figures, quoted by the report's top and the README.
pub(crate) struct Headline {
    pub vs_floor: f64,
    pub vs_xdp_filter: Option<f64>,
    pub iptables_cpu: f64,
    pub nftables_cpu: f64,
    pub xdp_filter_cpu: f64,
    /// Receiver CPU per million flood packets above the floor receiver's (f): what each filter
    /// itself adds, port25's first, then xdp-filter's, iptables' and nftables'.
    pub own_cpu: [f64; 4],
}

pub(crate) fn headline(r: &Results) -> Result<Headline> {
    let Some(dropped) = r.per_packet.row(kernel::ROW_DROPPED) else {
        bail!("no row {}", kernel::ROW_DROPPED);
    };
    let cpu = |receiver| flood_cpu(&r.flood, receiver);
    let port25 = cpu(Receiver::Port25);
    Ok(Headline {
        vs_floor: dropped.port25_ns / r.per_packet.floor_drop_ns,
        vs_xdp_filter: dropped
            .xdp_filter
            .as_ref()
            .ok()
            .map(|(xf, _)| dropped.port25_ns / xf.median),
        iptables_cpu: cpu(Receiver::Iptables) / port25,
        nftables_cpu: cpu(Receiver::Nftables) / port25,
        xdp_filter_cpu: cpu(Receiver::XdpFilter) / port25,
        own_cpu: [
            Receiver::Port25,
            Receiver::XdpFilter,
            Receiver::Iptables,
            Receiver::Nftables,
        ]
        .map(|receiver| cpu(receiver) - cpu(Receiver::Floor)),
    })
}

/// A figure that was measured: a number above zero (not NaN, not missing).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// Fails when a row the issue asks for is missing or not a number: smoke mode's check.
pub(crate) fn check_complete(r: &Results) -> Result<()> {
    let mut missing = Vec::new();
    if r.per_packet.rows.len() < 10 || r.per_packet.rows.iter().any(|row| !positive(row.port25_ns))
    {
        missing.push("per-packet rows");
    }
    if !(positive(r.per_packet.floor_pass_ns) && positive(r.per_packet.floor_drop_ns)) {
        missing.push("floor");
    }
    if r.per_packet
        .rows
        .iter()
        .filter(|row| row.xdp_filter.is_ok())
        .count()
        < 8
    {
        missing.push("xdp-filter per-packet figures");
    }
    if r.scale.len() < 2
        || r.scale
            .iter()
            .any(|s| !(positive(s.v4_dropped_ns) && s.kernel_bytes > 0))
    {
        missing.push("list scale rows");
    }
    if r.flood.rows.len() != Receiver::ALL.len()
        || r.flood.rows.iter().any(|f| {
            !(positive(f.offered_pps) && positive(f.received_pps) && positive(f.cpu_ms_per_million))
                || (f.receiver != Receiver::Nothing && f.dropped_pps.is_none_or(|d| !positive(d)))
                || f.mail.sent == 0
                || f.mail_own.sent == 0
        })
    {
        missing.push("flood rows");
    }
    if r.daemon.len() != 2
        || r.daemon
            .iter()
            .any(|d| d.rss_kib == 0 || !positive(d.scrape_ms_p50))
    {
        missing.push("daemon rows");
    }
    if r.egress.len() != 3 || r.egress.iter().any(|row| !positive(row.per_second)) {
        missing.push("egress guard rows");
    }
    if !missing.is_empty() {
        bail!("the report is missing: {}", missing.join(", "));
    }
    Ok(())
}

fn mail_cells(m: &Mail) -> [String; 3] {
    let delivered = format!("{}/{}", m.delivered, m.sent);
    if m.delivered == 0 {
        [delivered, "-".into(), "-".into()]
    } else {
        [
            delivered,
            format!("{:.1}", m.p50_ms),
            format!("{:.1}", m.p99_ms),
        ]
    }
}

pub(crate) fn markdown(r: &Results, h: &Headline) -> String {
    let m = &r.machine;
    let pp = &r.per_packet;
    let mut s = String::new();
    let _ = writeln!(s, "# port25 benchmark report\n");
    let _ = writeln!(
        s,
        "One run of `cargo xtask bench{}` on one machine: {} cores ({}), {:.0} GiB RAM, Linux {}, {}. \
         The whole run took {:.0} s. **The figures are from this one run on this one machine: read \
         the ratios, not the absolute numbers**; another machine (or a NIC instead of veth) moves \
         the absolutes a lot and the ratios less.\n",
        if r.smoke { " --smoke" } else { "" },
        m.cores,
        m.cpu,
        m.memory_gib,
        m.kernel,
        m.date,
        r.wall_seconds
    );
    let _ = writeln!(s, "## Headline\n");
    let _ = writeln!(
        s,
        "- port25 vs the floor (a bare XDP_DROP program), dropping a SYN to port 25 from a source not \
         allowlisted: **{:.2}x** ({:.1} ns vs {:.1} ns per packet).",
        h.vs_floor,
        pp.row(kernel::ROW_DROPPED)
            .map_or(f64::NAN, |row| row.port25_ns),
        pp.floor_drop_ns
    );
    match h.vs_xdp_filter {
        Some(v) => {
            let _ = writeln!(
                s,
                "- port25 vs xdp-filter on the same packet (xdp-filter with its closest rule): port25 \
                 takes **{v:.2}x** xdp-filter's time per packet; under the flood, xdp-filter's receiver CPU per \
                 million packets is **{:.2}x** port25's.",
                h.xdp_filter_cpu
            );
        }
        None => {
            let _ = writeln!(s, "- port25 vs xdp-filter: not measured (see the table).");
        }
    }
    let _ = writeln!(
        s,
        "- Under a SYN flood, iptables (raw table + ipset) spends **{:.2}x** and nftables (a set, \
         prerouting at raw priority) **{:.2}x** port25's receiver CPU per million packets.",
        h.iptables_cpu, h.nftables_cpu
    );
    let [own, xf, ipt, nft] = h.own_cpu;
    let (floor, flood) = (Receiver::Floor.tag(), Section::Flood);
    let _ = writeln!(
        s,
        "- What each filter adds to the receive path under the flood (its receiver CPU less the \
         floor receiver's, {floor} in {flood}): port25 {own:.0} ms per million packets, xdp-filter \
         {xf:.0} (**{:.2}x** port25's), iptables {ipt:.0} (**{:.2}x**), nftables {nft:.0} \
         (**{:.2}x**).",
        xf / own,
        ipt / own,
        nft / own
    );
    let adds = |receiver| flood_cpu(&r.flood, receiver) - flood_cpu(&r.flood, Receiver::Floor);
    let (ratelimit, synproxy) = (adds(Receiver::Ratelimit), adds(Receiver::Synproxy));
    let _ = writeln!(
        s,
        "- An open MX under the same flood (what each adds over the floor receiver): port25 \
         `ratelimit` {ratelimit:.0} ms per million packets, iptables hashlimit {:.0} (**{}** \
         port25's), an nftables per-source limit {:.0} (**{}**); port25 `synproxy` {synproxy:.0}, \
         netfilter SYNPROXY {:.0} (**{}**).\n",
        adds(Receiver::Hashlimit),
        ratio(adds(Receiver::Hashlimit), ratelimit),
        adds(Receiver::NftMeter),
        ratio(adds(Receiver::NftMeter), ratelimit),
        adds(Receiver::NetfilterSynproxy),
        ratio(adds(Receiver::NetfilterSynproxy), synproxy),
    );

    s.push_str(&crate::targets::section(r));

    sections::per_packet(&mut s, r);
    sections::list_scale(&mut s, r);
    sections::flood(&mut s, r);
    sections::mail(&mut s, r);
    sections::daemon(&mut s, r);
    sections::egress_guard(&mut s, r);
    s
}
