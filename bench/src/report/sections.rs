//! The report's numbered sections, one function each: its heading, what it measured and how,
//! and its table.

use std::fmt::Write as _;

use super::{action, mail_cells, ratio};
use crate::{
    egress,
    flood::{Flood, Generator, Receiver, Sender},
};
use crate::{
    markdown::{Section, table},
    results::{Results, flood_row},
};

/// Section 1: what one packet costs in the kernel, port25 beside the floors and xdp-filter.
pub(super) fn per_packet(s: &mut String, r: &Results) {
    let pp = &r.per_packet;
    Section::PerPacket.heading(s);
    let _ = writeln!(
        s,
        "BPF_PROG_TEST_RUN, {} runs per round, {} rounds: each cell is the median (min-max) of \
         the kernel's own average per run (the test-run loop's overhead included, which is why the \
         floor is measured the same way). The rounds are interleaved: each round measures the \
         floors and every port25 row in turn; then, for each xdp-filter load, each round the \
         XDP_DROP floor (its figure in the xdp-filter column) and that load's rows, so a change in \
         the machine's speed moves a figure and its floor alike. \"ranges overlap\": the two \
         figures' min-max ranges overlap, so this run cannot tell them apart. Ratio: to the floor \
         of the same action (XDP_PASS {:.1} ns, XDP_DROP {:.1} ns; xdp-filter's to the floor of its \
         own rounds). The row \"/16 in no list\" is a source like most of a random-source flood's: \
         no list has an entry in its /16, and port25's /16 prefilter answers without the trie. \
         port25 with policy `drop` (one /24 and /48 allowlisted, a /26 and /48 denylisted); the \
         rate-limited rows with policy `ratelimit` and buckets of one token (the global one spent \
         too); the ACK rows with policy `synproxy`. The rows of a source never seen run behind the \
         bench's `fresh_syn`, which writes the SYN afresh at every run (a test run hands each run \
         the frame the last one left, and an answer rewrites it) from a random source in a /16, \
         checksums updated, then tail-calls port25's filter: compare them with its own row \
         \"floor: fresh SYN written\", `fresh_syn` with no program to call; under `synproxy` \
         buckets and SYN-ACK budget are larger than the runs, so every SYN is answered (XDP_TX, \
         against the XDP_PASS floor). The IPv6 ones run behind `fresh_syn6`, which puts its 16 \
         random bits in the source's /64 part: each SYN from a new /64, the default bucket prefix. \
         The rows \"SYN answered and its ACK with a valid cookie, run after run\" run behind \
         `fresh_handshake` (`fresh_handshake6`), on a `synproxy` datapath of their own: one run \
         a fresh SYN, answered, the next the ACK its client would send back (addresses and ports \
         swapped, the cookie acknowledged), so the row is the mean of the two and the ACK alone \
         costs about twice the row less the answered SYN's{}. The rows \"a shadow loaded\" run on \
         the `drop` (or `ratelimit`) datapath with a shadow policy loaded (`port25d shadow load`): \
         a candidate that agrees on the packet, or one that would admit what `drop` drops (an \
         open MX with a blocklist, buckets larger than the runs), whose differing SYN also notes \
         its source at every run; each pairs with the same row without a shadow (Targets). \
         xdp-filter (xdp-tools) \
         with its closest rule, loaded on a veth and run with `bpftool prog run`: the source \
         denylist rows use `xdp-filter load -p allow` + `xdp-filter ip 198.18.2.66 -m src`; the \
         allowlist rows `xdp-filter load -p deny` + `xdp-filter ip 198.18.1.10 -m src` (it has no \
         \"port 25 and not these sources\", so that setup closes every port, not only 25; no \
         prefixes, no rate limiting).\n",
        pp.repeat,
        pp.rounds,
        pp.floor_pass_ns,
        pp.floor_drop_ns,
        valid_ack_estimate(pp)
    );
    let mut rows: Vec<Vec<String>> = pp
        .rows
        .iter()
        .map(|row| {
            let floor = pp.floor_for(row.expected);
            let (xf_ns, xf_ratio, vs) = match &row.xdp_filter {
                Ok((xf, a)) => (
                    format!("{} ({})", xf.cell(), action(*a)),
                    ratio(xf.median, pp.xdp_filter_floor.map_or(floor, |f| f.median)),
                    if row.port25.overlaps(xf) {
                        format!("{} (ranges overlap)", ratio(row.port25_ns, xf.median))
                    } else {
                        ratio(row.port25_ns, xf.median)
                    },
                ),
                Err(why) => (format!("n/a: {why}"), "n/a".into(), "n/a".into()),
            };
            let port25 = [row.port25.cell(), ratio(row.port25_ns, floor)];
            [row.path.to_owned(), action(row.expected).to_owned()]
                .into_iter()
                .chain(port25)
                .chain([xf_ns, xf_ratio, vs])
                .collect()
        })
        .collect();
    let xf_floor = pp.xdp_filter_floor.map(|f| f.cell()).unwrap_or_default();
    for (name, verdict, spread, xf) in [
        ("floor: bare XDP_PASS", "pass", pp.floor_pass, ""),
        (
            "floor: bare XDP_DROP",
            "drop",
            pp.floor_drop,
            xf_floor.as_str(),
        ),
    ] {
        let cells = [name, verdict, &spread.cell(), "1.00x", xf, "", ""];
        rows.push(cells.map(str::to_owned).to_vec());
    }
    table(
        s,
        "path | action | port25 ns | port25 / floor | xdp-filter ns | xdp-filter / floor | port25 / xdp-filter",
        "llrrrrr",
        rows,
    );
}

/// Section 2: the same cost as the lists grow, with their load time and kernel memory.
pub(super) fn list_scale(s: &mut String, r: &Results) {
    let pp = &r.per_packet;
    Section::ListScale.heading(s);
    let _ = writeln!(
        s,
        "The same cost with N allowlisted prefixes per family (N IPv4 /16-/32 and N IPv6 /48-/64, one in 64 of those /32-/47, \
         spread over the address space), policy `drop`; every size is loaded first, then each \
         round measures every size's four frames in turn; each cell is the median (min-max) of \
         the rounds. Load = wall time of writing both lists into the kernel as one policy generation; \
         memory = the kernel memory of the list maps (`LISTS_V4`, `LISTS_V6`, `PREFILTER_V4`, \
         `BLOCKS_V4`, `PREFILTER_V6`, `LISTS_V6_32_TO_47`, `LISTS_V6_UNDER_32`: `bpftool map show` memlock, the kernel's own accounting). Delta = wall time \
         of writing {} deny entries into the live generation in place, as a CrowdSec poll of \
         that many decisions does (adding them, and removing them, each round; each checked to \
         take effect), against load, what the same poll cost when every poll was a generation \
         swap.\n",
        crate::kernel::DELTA
    );
    let rows = r.scale.iter().map(|row| {
        vec![
            row.entries.to_string(),
            row.spreads[0].cell(),
            row.spreads[1].cell(),
            row.spreads[2].cell(),
            row.spreads[3].cell(),
            ratio(row.v4_dropped_ns, pp.floor_drop_ns),
            format!("{:.2}", row.load_seconds),
            format!(
                "{:.2} ({:.2}-{:.2})",
                row.delta_ms.median, row.delta_ms.min, row.delta_ms.max
            ),
            format!("{:.1}", row.kernel_bytes as f64 / 1024.0),
        ]
    });
    table(
        s,
        "prefixes per family | IPv4 allowed ns | IPv4 dropped ns | IPv6 allowed ns | IPv6 dropped ns | dropped v4 / floor | load s | delta ms | kernel memory KiB",
        "rrrrrrrrr",
        rows,
    );
}

/// Section 3: receiver CPU under a SYN flood, port25 beside iptables, nftables and xdp-filter.
pub(super) fn flood(s: &mut String, r: &Results) {
    Section::Flood.heading(s);
    let f = &r.flood;
    let seconds = f.rows.first().map_or(0.0, |row| row.seconds);
    let rounds = f.rows.first().map_or(0, |row| row.rounds);
    let _ = writeln!(
        s,
        "Two namespaces joined by a veth pair (and a third, the mail client's, on a veth of its own: \
         {}). {} Window: {seconds:.1} s per \
         receiver and round, after 0.5 s of warm-up; {rounds} rounds, each measuring every receiver \
         in turn; each row is the receiver's median round, and its CPU cell the median (min-max) \
         over the rounds. The generator is pinned to the first core; the receiver's \
         veth runs its NAPI threaded, in a kernel thread pinned to the last core, which does the \
         whole receive path (veth, XDP, netfilter, TCP and its replies): **receiver CPU** is that \
         thread's run time (`/proc/PID/schedstat`, exact) per million packets received, and \
         \"receiver core\" its share of its core. **Caveat:** {} So the rates are not \
         capacities: compare **CPU per million packets received**. Offered: frames the generator sent; \
         received: frames the receiving veth took off its ring; dropped: the filter's own \
         counter (iptables/nft rule counter, `xdp-filter status`, port25's metrics). This is a \
         {} core machine: the generator has one core, the receiver one. \
         (b) is iptables-legacy (`-t raw -A PREROUTING -p tcp --dport 25 -m set ! --match-set \
         allow src -j DROP`); Debian's default iptables-nft would be nftables with an x_tables \
         match. (c) `tcp dport 25 ip saddr != @allow4 counter drop` in a prerouting chain at raw \
         priority. (d) xdp-filter `-p deny` with the clients as the only allowed sources. (e) \
         port25d, policy `drop`, the clients allowlisted, native XDP. (f) the floor: the bench's \
         `floor_flood`, native XDP, which drops IPv4 TCP from 198.19.0.0/16 and counts it, and \
         does nothing else: what every receiver pays before its filter does anything (veth, the \
         NAPI thread, XDP itself), so a filter's own cost per million packets is its CPU less \
         this row's. (g) and (h) are port25d for an open MX, no source verified yet: (g) policy \
         `ratelimit` with its default caps (the flood beyond the global cap of 2,000 SYN/s \
         dropped, the rest passed to the stack, which answers it), (h) policy `synproxy` with a \
         SYN-ACK budget above the flood, so that every SYN is answered from XDP with a cookie \
         (checksums verified, a SYN-ACK written, XDP_TX; the generator's veth has no receive \
         queue, so veth drops the SYN-ACKs where a NIC would send them); their dropped column \
         counts drops and answers. (i)-(k) are what an operator would run instead, with port25's \
         default limits: (i) iptables-legacy hashlimit in the raw table (`--syn`, 20/s and a \
         burst of 40 per source address, 65,536 tracked, then 2,000/s and a burst of 4,000 for \
         all, each `--hashlimit-above ... -j DROP`), (j) nftables, prerouting at raw priority: \
         `add @src4 {{ ip saddr limit rate over 20/second burst 40 packets }} drop` on a dynamic \
         set of 65,536 with a 60 s timeout, then `limit rate over 2000/second burst 4000 \
         packets drop`, (k) netfilter SYNPROXY alone (the SYN untracked in raw, `-j SYNPROXY \
         --sack-perm --timestamp --wscale 7 --mss 1460` on INVALID,UNTRACKED in INPUT, INVALID \
         dropped); their dropped column counts the DROP and SYNPROXY rules' packets.{}\n",
        Section::Mail,
        generator_text(&f.sender),
        overflow_text(f),
        r.machine.cores,
        match (
            flood_row(f, Receiver::Synproxy),
            flood_row(f, Receiver::Ratelimit),
        ) {
            (Some(synproxy), Some(ratelimit)) => format!(
                " Per million flood packets, synproxy's receiver spends {} ratelimit's \
                 ({:.0} vs {:.0} ms).",
                ratio(synproxy.cpu_ms_per_million, ratelimit.cpu_ms_per_million),
                synproxy.cpu_ms_per_million,
                ratelimit.cpu_ms_per_million
            ),
            _ => String::new(),
        }
    );
    let port25 = flood_row(f, Receiver::Port25);
    let rows = f.rows.iter().map(|row| {
        let dropped = row
            .dropped_pps
            .map_or("- (nothing drops)".to_string(), |d| format!("{d:.0}"));
        let dropped_ratio = match (row.dropped_pps, port25.and_then(|p| p.dropped_pps)) {
            (Some(a), Some(b)) => ratio(a, b),
            _ => "n/a".into(),
        };
        let cpu_ratio = port25.map_or("n/a".into(), |p| {
            ratio(row.cpu_ms_per_million, p.cpu_ms_per_million)
        });
        vec![
            row.receiver.label().to_owned(),
            format!("{:.0}", row.offered_pps),
            format!("{:.0}", row.received_pps),
            dropped,
            dropped_ratio,
            row.cpu.cell(),
            cpu_ratio,
            format!("{:.2}", row.receiver_cores),
        ]
    });
    table(
        s,
        "receiver | offered pps | received pps | dropped pps | dropped / port25's | receiver CPU ms per million | CPU / port25's | receiver core",
        "lrrrrrrr",
        rows,
    );
    let _ = writeln!(s, "![receiver CPU per million packets](flood.svg)\n");
}

/// What sent section 3's flood, and why when it was not the usual generator.
fn generator_text(sender: &Sender) -> String {
    match sender.generator {
        Generator::LiveFrames => format!(
            "The generator is the bench's own `flood_tx` XDP program run with \
             BPF_F_TEST_XDP_LIVE_FRAMES (batch {}) on the sending veth: SYNs to port 25 with \
             valid checksums from random sources in 198.19.0.0/16, each written afresh from its \
             template (live frames come back to the run as the receiver left them), sent with \
             XDP_TX (faster here than trafgen or hping3: no socket, no skb on the sending side; \
             overflowed frames are `xdp_xmit_errors` on the sending veth).",
            sender.live_batch
        ),
        Generator::PacketSocket => format!(
            "The generator is an AF_PACKET socket, **not** the usual `flood_tx` with live \
             frames{}: the same SYNs to port 25 with valid checksums, one from every source in \
             198.19.0.0/16 in random order, built once and sent round and round with \
             `sendmmsg`, {} frames a call, on a veth pair of the generator's own, whose far end \
             runs the bench's `flood_relay` (native XDP, a redirect to the sending veth). So the \
             receiver gets what live frames give it, XDP frames in its veth's ring, not a \
             socket's skbs; but they come in another rhythm, and its figures compare with each \
             other, not with a live-frames run's.",
            sender
                .live_frames_refused
                .as_ref()
                .map_or(String::new(), |why| format!(
                    ", which this kernel refused ({why})"
                )),
            crate::flood::SOCKET_BATCH
        ),
    }
}

/// How many receivers lost frames at veth's ring, and how many saturated their core.
fn overflow_text(f: &Flood) -> String {
    let overflowed = f
        .rows
        .iter()
        .filter(|row| row.received_pps < 0.99 * row.offered_pps)
        .count();
    let saturated = f
        .rows
        .iter()
        .filter(|row| row.receiver_cores > 0.95)
        .count();
    format!(
        "veth's 256-frame ring overflowed (received more than 1% below offered) with {overflowed} \
         of {} receivers, and {saturated} saturated their core: what reaches a receiver depends \
         on the sender's rhythm and on when veth wakes its NAPI thread, not only on its speed.",
        f.rows.len()
    )
}

/// Section 4: mail from allowlisted clients while the flood goes on.
pub(super) fn mail(s: &mut String, r: &Results) {
    let f = &r.flood;
    Section::Mail.heading(s);
    let _ = writeln!(
        s,
        "Right after each window, with the flood still on, {} messages one after another from each \
         of two allowlisted clients, each a whole SMTP transaction (connect, EHLO, MAIL, RCPT, \
         DATA, QUIT; 10 s timeouts) to smtp-sink: 198.18.0.10 over the flood's veth, whose ring \
         the flood overflows ({}), so that a lost segment costs it a TCP retransmission; \
         and 198.18.1.10 over a veth of its own (gw1), as a NIC with several queues would give \
         it, so that what remains is the receiver's load, not the ring. No XDP program is on \
         gw1; netfilter's rules and sets, the namespace's own, see it too and allow it. Delivered \
         = in smtp-sink's dump, over every round; median = the rounds' median; p99 = the worst \
         round's (of a batch this small, nearly its slowest message). Latency = the whole \
         transaction, ms.\n",
        f.idle_mail.sent,
        Section::Flood
    );
    let reference = std::iter::once(("no flood (reference)", &f.idle_mail, &f.idle_mail_own));
    let rows = reference
        .chain(
            f.rows
                .iter()
                .map(|row| (row.receiver.label(), &row.mail, &row.mail_own)),
        )
        .map(|(receiver, shared, own)| {
            std::iter::once(receiver.to_owned())
                .chain(mail_cells(shared))
                .chain(mail_cells(own))
                .collect()
        });
    table(
        s,
        "receiver | flood's veth: delivered | median ms | p99 ms | own veth: delivered | median ms | p99 ms",
        "lrrrrrr",
        rows,
    );
}

/// Section 5: port25d's memory, start-up with a million prefixes, and scrape time.
pub(super) fn daemon(s: &mut String, r: &Results) {
    Section::Daemon.heading(s);
    let _ = writeln!(
        s,
        "port25d (policy `drop`, attached to a veth) idle and with an allow list file of a million \
         prefixes (half IPv4, half IPv6), started afresh in each of {} rounds (both sizes each \
         round). RSS: VmRSS 2 s after the list was loaded; ready: from start until \
         `port25_list_entries` showed every entry; both the median round's (min-max over the \
         rounds). Scrape: one HTTP GET of /metrics over loopback, {} scrapes in the median round.\n",
        r.daemon.first().map_or(0, |d| d.rounds),
        r.scrapes
    );
    let rows = r.daemon.iter().map(|d| {
        vec![
            d.entries.to_string(),
            format!(
                "{:.1} ({:.1}-{:.1})",
                d.rss_kib as f64 / 1024.0,
                d.rss.min / 1024.0,
                d.rss.max / 1024.0
            ),
            format!(
                "{:.1} ({:.1}-{:.1})",
                d.ready_seconds, d.ready.min, d.ready.max
            ),
            format!("{:.2}", d.scrape_ms_p50),
            format!("{:.2}", d.scrape_ms_p99),
            d.scrape_bytes.to_string(),
        ]
    });
    table(
        s,
        "allow entries | RSS MiB | ready s | scrape median ms | scrape p99 ms | scrape bytes",
        "rrrrrr",
        rows,
    );
}

/// Section 6: what the cgroup connect hooks cost a process.
pub(super) fn egress_guard(s: &mut String, r: &Results) {
    let pp = &r.per_packet;
    Section::Egress.heading(s);
    let _ = writeln!(
        s,
        "What the cgroup connect hooks cost a process: {} TCP connects per round to 127.0.0.1:25 \
         in the bench's own network namespace, where nothing listens (the SYN goes out, the \
         kernel's reset comes back: ECONNREFUSED; no accept queue in the way), median (min-max) \
         of {} rounds, from the bench process outside the guarded cgroup (no hook runs: the baseline) \
         and inside it (the connect4 hook allows the smart host 127.0.0.1); and connects to \
         127.0.0.2:25, which the hook refuses with EPERM (no packet leaves; one event a second \
         reaches the ring buffer, the rest are counted).\n",
        r.connects, pp.rounds
    );
    let off = r
        .egress
        .iter()
        .find(|row| row.path == egress::ROW_OFF)
        .map_or(f64::NAN, |row| row.per_second);
    let rows = r.egress.iter().map(|row| {
        vec![
            row.path.to_owned(),
            row.spread.cell(),
            ratio(row.per_second, off),
        ]
    });
    table(s, "path | connects/s | vs no hook", "lrr", rows);
    let _ = writeln!(s, "![ns per packet](per-packet.svg)");
}

/// The valid-cookie ACK's own cost, from the alternating row and the answered-SYN row of the same
/// run (section 1's text).
fn valid_ack_estimate(pp: &crate::kernel::PerPacket) -> String {
    match (
        pp.row(crate::kernel::ROW_HANDSHAKE),
        pp.row(crate::kernel::ROW_FRESH_SYNPROXY),
    ) {
        (Some(both), Some(syn)) => format!(
            " (here about {:.0} ns: 2 x {:.0} - {:.0})",
            2.0 * both.port25_ns - syn.port25_ns,
            both.port25_ns,
            syn.port25_ns
        ),
        _ => String::new(),
    }
}
