//! The report: markdown tables and two hand-written SVG bar charts.

use std::fmt::Write as _;

use anyhow::{Result, bail};

use crate::{
    daemon::DaemonRow,
    egress::{self, EgressRow},
    flood::{Flood, FloodRow, Mail, Receiver},
    kernel::{self, PerPacket, ScaleRow, XDP_DROP},
    sys::Machine,
};

pub(crate) struct Results {
    pub machine: Machine,
    pub smoke: bool,
    pub wall_seconds: f64,
    pub per_packet: PerPacket,
    pub scale: Vec<ScaleRow>,
    pub flood: Flood,
    pub daemon: Vec<DaemonRow>,
    /// How many scrapes section 5 timed.
    pub scrapes: usize,
    pub egress: Vec<EgressRow>,
    /// Connects per round of section 6.
    pub connects: u32,
}

fn action(a: u32) -> &'static str {
    match a {
        XDP_DROP => "drop",
        kernel::XDP_PASS => "pass",
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
}

fn flood_row(flood: &Flood, receiver: Receiver) -> Option<&FloodRow> {
    flood.rows.iter().find(|r| r.receiver == receiver)
}

pub(crate) fn headline(r: &Results) -> Result<Headline> {
    let Some(dropped) = r.per_packet.row(kernel::ROW_DROPPED) else {
        bail!("no row {}", kernel::ROW_DROPPED);
    };
    let cpu = |receiver| {
        flood_row(&r.flood, receiver).map_or(f64::NAN, |row: &FloodRow| row.cpu_ms_per_million)
    };
    let port25 = cpu(Receiver::Port25);
    Ok(Headline {
        vs_floor: dropped.port25_ns / r.per_packet.floor_drop_ns,
        vs_xdp_filter: dropped
            .xdp_filter
            .as_ref()
            .ok()
            .map(|(ns, _)| dropped.port25_ns / ns),
        iptables_cpu: cpu(Receiver::Iptables) / port25,
        nftables_cpu: cpu(Receiver::Nftables) / port25,
        xdp_filter_cpu: cpu(Receiver::XdpFilter) / port25,
    })
}

/// A figure that was measured: a number above zero (not NaN, not missing).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// Fails when a row the issue asks for is missing or not a number: smoke mode's check.
pub(crate) fn check_complete(r: &Results) -> Result<()> {
    let mut missing = Vec::new();
    if r.per_packet.rows.len() < 9 || r.per_packet.rows.iter().any(|row| !positive(row.port25_ns)) {
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

fn mail_cells(m: &Mail) -> String {
    if m.delivered == 0 {
        format!("{}/{} | - | -", m.delivered, m.sent)
    } else {
        format!(
            "{}/{} | {:.1} | {:.1}",
            m.delivered, m.sent, m.p50_ms, m.p99_ms
        )
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
         prerouting at raw priority) **{:.2}x** port25's receiver CPU per million packets.\n",
        h.iptables_cpu, h.nftables_cpu
    );

    let _ = writeln!(s, "## 1. Per-packet cost in the kernel\n");
    let _ = writeln!(
        s,
        "BPF_PROG_TEST_RUN, {} runs per round, median of {} rounds; the kernel's own average per \
         run (the test-run loop's overhead included, which is why the floor is measured the same \
         way). Ratio: to the floor of the same action (XDP_PASS {:.1} ns, XDP_DROP {:.1} ns). \
         port25 with policy `drop` (one /24 and /48 allowlisted, a /26 and /48 denylisted); the \
         rate-limited row with policy `ratelimit` and buckets of one token. xdp-filter (xdp-tools) \
         with its closest rule, loaded on a veth and run with `bpftool prog run`: the source \
         denylist rows use `xdp-filter load -p allow` + `xdp-filter ip 198.18.2.66 -m src`; the \
         allowlist rows `xdp-filter load -p deny` + `xdp-filter ip 198.18.1.10 -m src` (it has no \
         \"port 25 and not these sources\", so that setup closes every port, not only 25; no \
         prefixes, no rate limiting).\n",
        pp.repeat, pp.rounds, pp.floor_pass_ns, pp.floor_drop_ns
    );
    let _ = writeln!(
        s,
        "| path | action | port25 ns | port25 / floor | xdp-filter ns | xdp-filter / floor | port25 / xdp-filter |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for row in &pp.rows {
        let floor = pp.floor_for(row.expected);
        let (xf_ns, xf_ratio, vs) = match &row.xdp_filter {
            Ok((ns, a)) => (
                format!("{ns:.1} ({})", action(*a)),
                ratio(*ns, floor),
                ratio(row.port25_ns, *ns),
            ),
            Err(why) => (format!("n/a: {why}"), "n/a".into(), "n/a".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {} | {} | {} | {} |",
            row.path,
            action(row.expected),
            row.port25_ns,
            ratio(row.port25_ns, floor),
            xf_ns,
            xf_ratio,
            vs
        );
    }
    let _ = writeln!(
        s,
        "| floor: bare XDP_PASS | pass | {:.1} | 1.00x | | | |\n| floor: bare XDP_DROP | drop | {:.1} | 1.00x | | | |\n",
        pp.floor_pass_ns, pp.floor_drop_ns
    );

    let _ = writeln!(s, "## 2. List scale\n");
    let _ = writeln!(
        s,
        "The same cost with N allowlisted prefixes per family (N IPv4 /16-/32 and N IPv6 /48-/64, \
         spread over the address space), policy `drop`; load = wall time of writing both lists \
         into the kernel as one policy generation; memory = the four list maps' kernel memory \
         (`bpftool map show` memlock, the kernel's own accounting).\n"
    );
    let _ = writeln!(
        s,
        "| prefixes per family | IPv4 allowed ns | IPv4 dropped ns | IPv6 allowed ns | IPv6 dropped ns | dropped v4 / floor | load s | kernel memory KiB |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &r.scale {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.2} | {:.1} |",
            row.entries,
            row.v4_allowed_ns,
            row.v4_dropped_ns,
            row.v6_allowed_ns,
            row.v6_dropped_ns,
            ratio(row.v4_dropped_ns, pp.floor_drop_ns),
            row.load_seconds,
            row.kernel_bytes as f64 / 1024.0
        );
    }
    s.push('\n');

    let _ = writeln!(s, "## 3. SYN flood at the receiver\n");
    let f = &r.flood;
    let seconds = f.rows.first().map_or(0.0, |row| row.seconds);
    let _ = writeln!(
        s,
        "Two namespaces joined by a veth pair. The generator is the bench's own `flood_tx` XDP program \
         run with BPF_F_TEST_XDP_LIVE_FRAMES (batch {}) on the sending veth: SYNs to port 25 with \
         valid checksums from random sources in 198.19.0.0/16, sent with XDP_TX (faster here than \
         trafgen or hping3: no socket, no skb on the sending side). Window: {seconds:.1} s per \
         receiver, after 0.5 s of warm-up. The generator is pinned to the first core; the receiver's \
         veth runs its NAPI threaded, in a kernel thread pinned to the last core, which does the \
         whole receive path (veth, XDP, netfilter, TCP and its replies): **receiver CPU** is that \
         thread's run time (`/proc/PID/schedstat`, exact) per million packets received, and \
         \"receiver core\" its share of its core. **Caveat:** no receiver saturated its core, \
         yet veth's 256-frame ring overflowed in every scenario (offered minus received: \
         `xdp_xmit_errors` on the sending veth), and by different amounts per receiver; the \
         NAPI thread is woken in bursts on this VM, and the run does not tell why. So the rates \
         are not capacities: compare **CPU per million packets received**. Offered: frames the generator sent; \
         received: frames the receiving veth took off its ring; dropped: the filter's own \
         counter (iptables/nft rule counter, `xdp-filter status`, port25's metrics). This is a \
         {} core machine: the generator has one core, the receiver one. \
         (b) is iptables-legacy (`-t raw -A PREROUTING -p tcp --dport 25 -m set ! --match-set \
         allow src -j DROP`); Debian's default iptables-nft would be nftables with an x_tables \
         match. (c) `tcp dport 25 ip saddr != @allow4 counter drop` in a prerouting chain at raw \
         priority. (d) xdp-filter `-p deny` with the client as the only allowed source. (e) \
         port25d, policy `drop`, the client allowlisted, native XDP.\n",
        f.batch_size, r.machine.cores
    );
    let port25 = flood_row(f, Receiver::Port25);
    let _ = writeln!(
        s,
        "| receiver | offered pps | received pps | dropped pps | dropped / port25's | receiver CPU ms per million | CPU / port25's | receiver core |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &f.rows {
        let dropped = row
            .dropped_pps
            .map_or("- (nothing drops)".to_string(), |d| format!("{d:.0}"));
        let dropped_ratio = match (row.dropped_pps, port25.and_then(|p| p.dropped_pps)) {
            (Some(a), Some(b)) => ratio(a, b),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {} | {} | {:.1} | {} | {:.2} |",
            row.receiver.label(),
            row.offered_pps,
            row.received_pps,
            dropped,
            dropped_ratio,
            row.cpu_ms_per_million,
            port25.map_or("n/a".into(), |p| ratio(
                row.cpu_ms_per_million,
                p.cpu_ms_per_million
            )),
            row.receiver_cores
        );
    }
    s.push('\n');
    let _ = writeln!(s, "![receiver CPU per million packets](flood.svg)\n");

    let _ = writeln!(s, "## 4. Mail during the flood\n");
    let _ = writeln!(
        s,
        "Right after each window, with the flood still on: {} messages, one after another, from \
         the allowlisted client 198.18.0.10 over the same veth, each a whole SMTP transaction \
         (connect, EHLO, MAIL, RCPT, DATA, QUIT; 10 s timeouts) to smtp-sink. Delivered = in \
         smtp-sink's dump. Latency = the whole transaction, ms. The client's packets share \
         veth's ring with the flood, which overflows (section 3): a lost segment costs a TCP \
         retransmission, so a single slow message (the p99 of a small batch is nearly its \
         maximum) may be the ring's doing rather than the filter's; the run does not tell them \
         apart.\n",
        f.idle_mail.sent
    );
    let _ = writeln!(s, "| receiver | delivered | median ms | p99 ms |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(s, "| no flood (reference) | {} |", mail_cells(&f.idle_mail));
    for row in &f.rows {
        let _ = writeln!(
            s,
            "| {} | {} |",
            row.receiver.label(),
            mail_cells(&row.mail)
        );
    }
    s.push('\n');

    let _ = writeln!(s, "## 5. The daemon\n");
    let _ = writeln!(
        s,
        "port25d (policy `drop`, attached to a veth) idle and with an allow list file of a million \
         prefixes (half IPv4, half IPv6). RSS: VmRSS 2 s after the list was loaded; ready: from \
         start until `port25_list_entries` showed every entry; scrape: one HTTP GET of /metrics \
         over loopback, {} scrapes.\n",
        r.scrapes
    );
    let _ = writeln!(
        s,
        "| allow entries | RSS MiB | ready s | scrape median ms | scrape p99 ms | scrape bytes |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|");
    for d in &r.daemon {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.1} | {:.2} | {:.2} | {} |",
            d.entries,
            d.rss_kib as f64 / 1024.0,
            d.ready_seconds,
            d.scrape_ms_p50,
            d.scrape_ms_p99,
            d.scrape_bytes
        );
    }
    s.push('\n');

    let _ = writeln!(s, "## 6. The egress guard\n");
    let _ = writeln!(
        s,
        "What the cgroup connect hooks cost a process: {} TCP connects per round to 127.0.0.1:25 \
         in the bench's own network namespace, where nothing listens (the SYN goes out, the \
         kernel's reset comes back: ECONNREFUSED; no accept queue in the way), median of {} \
         rounds, from the bench process outside the guarded cgroup (no hook runs: the baseline) \
         and inside it (the connect4 hook allows the smart host 127.0.0.1); and connects to \
         127.0.0.2:25, which the hook refuses with EPERM (no packet leaves; one event a second \
         reaches the ring buffer, the rest are counted).\n",
        r.connects, pp.rounds
    );
    let _ = writeln!(s, "| path | connects/s | vs no hook |");
    let _ = writeln!(s, "|---|---:|---:|");
    let off = r
        .egress
        .iter()
        .find(|row| row.path == egress::ROW_OFF)
        .map_or(f64::NAN, |row| row.per_second);
    for row in &r.egress {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {} |",
            row.path,
            row.per_second,
            ratio(row.per_second, off)
        );
    }
    s.push('\n');
    let _ = writeln!(s, "![ns per packet](per-packet.svg)");
    s
}

/// A horizontal bar chart: one bar per (label, value, colour).
fn bar_chart(title: &str, unit: &str, bars: &[(String, f64, &str)]) -> String {
    let row_h = 22.0;
    let label_w = 330.0;
    let chart_w = 420.0;
    let top = 40.0;
    let height = top + row_h * bars.len() as f64 + 30.0;
    let width = label_w + chart_w + 90.0;
    let max = bars
        .iter()
        .map(|(_, v, _)| *v)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    for (i, (label, value, colour)) in bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        let w = if value.is_finite() {
            value / max * chart_w
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            label_w - 6.0,
            y + 15.0,
            esc(label)
        );
        let _ = writeln!(
            s,
            "<rect x=\"{label_w}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" fill=\"{colour}\"/>",
            y + 3.0,
            row_h - 6.0
        );
        let shown = if value.is_finite() {
            format!("{value:.1} {unit}")
        } else {
            "n/a".into()
        };
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\">{shown}</text>",
            label_w + w + 4.0,
            y + 15.0
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

const PORT25: &str = "#2b6cb0";
const OTHER: &str = "#a0aec0";
const FLOOR: &str = "#48bb78";

pub(crate) fn per_packet_svg(pp: &PerPacket) -> String {
    let mut bars = vec![
        ("floor: bare XDP_PASS".to_string(), pp.floor_pass_ns, FLOOR),
        ("floor: bare XDP_DROP".to_string(), pp.floor_drop_ns, FLOOR),
    ];
    for row in &pp.rows {
        bars.push((format!("port25: {}", row.path), row.port25_ns, PORT25));
        if let Ok((ns, _)) = &row.xdp_filter {
            bars.push((format!("xdp-filter: {}", row.path), *ns, OTHER));
        }
    }
    bar_chart(
        "Per-packet cost in the kernel (BPF_PROG_TEST_RUN, median)",
        "ns",
        &bars,
    )
}

pub(crate) fn flood_svg(flood: &Flood) -> String {
    let bars: Vec<_> = flood
        .rows
        .iter()
        .map(|row| {
            let colour = if row.receiver == Receiver::Port25 {
                PORT25
            } else {
                OTHER
            };
            (
                row.receiver.label().to_string(),
                row.cpu_ms_per_million,
                colour,
            )
        })
        .collect();
    bar_chart(
        "SYN flood: receiver CPU per million packets received (its NAPI thread)",
        "ms",
        &bars,
    )
}
