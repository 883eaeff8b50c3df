//! Policy synproxy: a SYN answered in XDP with a SYN-ACK whose cookie the kernel's own check
//! accepts when the client's ACK brings it back; forged ACKs, bad checksums and a spent SYN-ACK
//! budget dropped; the lists still first; monitor mode answering nothing and counting what
//! enforce mode would do.

use etherparse::{NetSlice, SlicedPacket, TcpOptionElement, TransportSlice};
use port25_testkit::{
    frames::{FrameBuilder, checksum, pseudo_header},
    reference::XDP_TX,
};

use super::*;

const SYNPROXY: &str = r#"
policy = "synproxy"
ports = [25]
[allow]
cidrs = ["198.18.1.0/24"]
[deny]
cidrs = ["198.18.2.0/24"]
[ratelimit]
syn_rate = 1
syn_burst = 50
[synproxy]
mss4 = 1460
mss6 = 1440
wscale = 7
ipv6 = true
"#;

/// The client's timestamp in its SYN.
const CLIENT_TSVAL: u32 = 0x0102_0304;
/// A SYN's options as Linux sends them: MSS 1460, SACK permitted, timestamp, NOP, window scale 7.
fn linux_syn_options() -> Vec<u8> {
    let mut options = vec![2, 4, 0x05, 0xb4, 4, 2, 8, 10];
    options.extend_from_slice(&CLIENT_TSVAL.to_be_bytes());
    options.extend_from_slice(&[0, 0, 0, 0, 1, 3, 3, 7]);
    options
}

fn syn(src: &str, sport: u16) -> FrameBuilder {
    tcp(src, 25)
        .sport(sport)
        .seq_ack(1000, 0)
        .tcp_options(&linux_syn_options())
        .checksummed()
}

/// The client's ACK of a SYN-ACK with this sequence number (the cookie) and timestamp.
fn ack_of(src: &str, sport: u16, cookie: u32, tsecr: u32) -> FrameBuilder {
    let mut options = vec![1, 1, 8, 10];
    options.extend_from_slice(&(CLIENT_TSVAL + 1).to_be_bytes());
    options.extend_from_slice(&tsecr.to_be_bytes());
    tcp(src, 25)
        .sport(sport)
        .seq_ack(1001, cookie.wrapping_add(1))
        .flags(TCP_ACK)
        .tcp_options(&options)
        .checksummed()
}

/// What the SYN-ACK said that the ACK must echo.
struct SynAck {
    cookie: u32,
    tsval: u32,
}

/// Runs `syn` and checks the frame that goes back: addresses and ports swapped, the SYN
/// acknowledged, checksums right, the options the configuration asks for.
fn answered(datapath: &Datapath, syn: &[u8], mss: u16) -> SynAck {
    let (action, out) = datapath.test_run_output(syn).expect("BPF_PROG_TEST_RUN");
    assert_eq!(action, XDP_TX, "a SYN is answered from XDP");
    assert_eq!(out[..6], syn[6..12], "sent back to the client's MAC");
    assert_eq!(out[6..12], syn[..6], "from the gateway's MAC");
    let packet = SlicedPacket::from_ethernet(&out).expect("the SYN-ACK parses");
    let (ip_ok, swapped) = match (
        &packet.net,
        SlicedPacket::from_ethernet(syn)
            .expect("the SYN parses")
            .net,
    ) {
        (Some(NetSlice::Ipv4(answer)), Some(NetSlice::Ipv4(question))) => (
            checksum(&[answer.header().slice()]) == 0 && answer.header().dont_fragment(),
            answer.header().source() == question.header().destination()
                && answer.header().destination() == question.header().source(),
        ),
        (Some(NetSlice::Ipv6(answer)), Some(NetSlice::Ipv6(question))) => (
            answer.header().payload_length() == 40,
            answer.header().source() == question.header().destination()
                && answer.header().destination() == question.header().source(),
        ),
        other => panic!("not the SYN's family: {other:?}"),
    };
    assert!(ip_ok, "IP header of the SYN-ACK: {out:02x?}");
    assert!(swapped, "addresses swapped: {out:02x?}");
    let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
        panic!("no TCP in the SYN-ACK: {out:02x?}");
    };
    assert!(tcp.syn() && tcp.ack() && !tcp.rst() && !tcp.fin());
    assert_eq!((tcp.source_port(), tcp.destination_port()), (25, 40000));
    assert_eq!(tcp.acknowledgment_number(), 1001, "the SYN's sequence + 1");
    let segment_at = out.len() - tcp.slice().len();
    assert_eq!(
        checksum(&[&pseudo_header(&out), &out[segment_at..]]),
        0,
        "TCP checksum of the SYN-ACK"
    );
    let options: Vec<_> = tcp
        .options_iterator()
        .collect::<Result<_, _>>()
        .expect("options");
    let mut tsval = None;
    let (mut offered_mss, mut sack, mut wscale) = (None, false, None);
    for option in options {
        match option {
            TcpOptionElement::MaximumSegmentSize(value) => offered_mss = Some(value),
            TcpOptionElement::SelectiveAcknowledgementPermitted => sack = true,
            TcpOptionElement::WindowScale(value) => wscale = Some(value),
            TcpOptionElement::Timestamp(value, echo) => {
                assert_eq!(echo, CLIENT_TSVAL, "the client's timestamp echoed");
                tsval = Some(value);
            }
            _ => {}
        }
    }
    assert_eq!(offered_mss, Some(mss));
    assert!(sack, "SACK offered back");
    assert_eq!(wscale, Some(7), "the configured window scale");
    let tsval = tsval.expect("a timestamp: it carries the client's window scale and SACK");
    assert_eq!(
        tsval & 0x1f,
        7 | 1 << 4,
        "client's wscale 7 and SACK in the low bits"
    );
    SynAck {
        cookie: tcp.sequence_number(),
        tsval,
    }
}

/// One client's whole handshake through the program: SYN answered, the ACK's cookie valid, the
/// rest of the connection known.
fn handshake(datapath: &Datapath, client: &str, prefix: &str, mss: u16) {
    let syn = syn(client, 40000).build();
    let synack = answered(datapath, &syn, mss);
    check(
        datapath,
        &[
            passes(
                "the ACK with the cookie",
                ack_of(client, 40000, synack.cookie, synack.tsval),
                CookieValid,
            ),
            passes(
                "data of the verified connection",
                ack_of(client, 40000, synack.cookie, synack.tsval).flags(TCP_ACK | 0x08),
                Admitted,
            ),
            drops(
                "an ACK of another port with that cookie",
                ack_of(client, 40001, synack.cookie, synack.tsval),
                CookieInvalid,
            ),
        ],
    );
    // The valid cookie is a completed handshake of the client's prefix (/32, /64): once.
    assert_eq!(completed(datapath, prefix), 1, "{prefix}");
}

#[test]
fn syn_cookies_answer_and_verify_ipv4() {
    let datapath = load(SYNPROXY);
    handshake(&datapath, "198.18.3.3", "198.18.3.3/32", 1460);
}

#[test]
fn syn_cookies_answer_and_verify_ipv6() {
    let datapath = load(SYNPROXY);
    handshake(&datapath, "2001:db8:3::3", "2001:db8:3::/64", 1440);
}

#[test]
fn synproxy_drops_what_no_real_client_sends_and_lists_come_first() {
    let datapath = load(SYNPROXY);
    let mut bad_checksum = syn("198.18.3.4", 40000).build();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] ^= 0xff;
    let mut bad_checksum6 = syn("2001:db8:3::4", 40000).build();
    let last = bad_checksum6.len() - 1;
    bad_checksum6[last] ^= 0xff;
    check(
        &datapath,
        &[
            row(
                "a SYN is answered",
                syn("198.18.3.5", 40000).build(),
                XDP_TX,
                Some((Verdict::Answered, SynCookie)),
            ),
            drops(
                "a forged ACK",
                ack_of("198.18.3.6", 40000, 0x1234_5678, 1),
                CookieInvalid,
            ),
            drops(
                "a forged ACK over IPv6",
                ack_of("2001:db8:3::6", 40000, 0x1234_5678, 1),
                CookieInvalid,
            ),
            drops(
                "a RST of no known flow",
                tcp("198.18.3.6", 25).flags(0x04).checksummed(),
                CookieInvalid,
            ),
            drops("a SYN with a bad TCP checksum", bad_checksum, Malformed),
            drops("an IPv6 SYN with a bad checksum", bad_checksum6, Malformed),
            passes(
                "allowlisted: the stack answers",
                syn("198.18.1.5", 40000),
                Allowlisted,
            ),
            drops("denylisted", syn("198.18.2.5", 40000), Denylisted),
            passes(
                "an ACK from an allowlisted source needs no cookie",
                ack_of("198.18.1.5", 40000, 0x1234_5678, 1),
                Allowlisted,
            ),
            // Header layouts the program does not rewrite go to netfilter's SYNPROXY.
            passes(
                "a SYN with IPv4 options",
                tcp("198.18.3.7", 25).ipv4_options(4),
                Admitted,
            ),
            untouched("port 587 untouched", tcp("198.18.3.9", 587)),
        ],
    );
}

#[test]
fn a_syn_without_options_is_offered_the_mss_alone() {
    let datapath = load(SYNPROXY);
    let syn = tcp("198.18.3.10", 25)
        .seq_ack(1000, 0)
        .checksummed()
        .build();
    let (action, out) = datapath.test_run_output(&syn).expect("BPF_PROG_TEST_RUN");
    assert_eq!(action, XDP_TX);
    let packet = SlicedPacket::from_ethernet(&out).expect("the SYN-ACK parses");
    let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
        panic!("no TCP in the SYN-ACK: {out:02x?}");
    };
    let options: Vec<_> = tcp
        .options_iterator()
        .filter(|option| !matches!(option, Ok(TcpOptionElement::Noop)))
        .collect();
    assert_eq!(
        options,
        [Ok(TcpOptionElement::MaximumSegmentSize(1460))],
        "without a timestamp, window scale and SACK cannot survive the cookie"
    );
}

#[test]
fn the_synack_budget_caps_what_is_sent() {
    let datapath = load(&format!("{SYNPROXY}synack_rate = 1\nsynack_burst = 3\n"));
    let sent = (1..=5)
        .filter(|n| {
            let frame = syn(&format!("198.18.{}.1", 10 + n), 40000).build();
            datapath.test_run(&frame).expect("BPF_PROG_TEST_RUN") == XDP_TX
        })
        .count();
    assert_eq!(sent, 3, "the burst of 3, then nothing within the test");
    check(
        &datapath,
        &[drops(
            "over the budget",
            syn("198.18.20.1", 40000),
            SynackBudget,
        )],
    );
}

#[test]
fn a_source_that_keeps_sending_is_tracked_and_held_to_its_bucket() {
    // A new source's SYN inserts its prefix into the table one time in 16 (so that a spoofed
    // flood does not churn it): a source that keeps sending gets there within a few SYNs, and
    // from then on its bucket (burst 50, 1/s) answers it.
    let datapath = load(SYNPROXY);
    const SYNS: usize = 400;
    let answered = (0..SYNS)
        .filter(|n| {
            let frame = syn("198.18.30.1", 40000 + *n as u16).build();
            datapath.test_run(&frame).expect("BPF_PROG_TEST_RUN") == XDP_TX
        })
        .count();
    // Untracked for more than 200 SYNs: (15/16)^200, under 3 in a million.
    assert!(
        (50..=250).contains(&answered),
        "{answered} of {SYNS} SYNs answered: the burst of 50, plus those before it was tracked"
    );
    let tracked = datapath.source_tables().read_all();
    let row = tracked
        .iter()
        .find(|t| t.source.to_string() == "198.18.30.1/32")
        .expect("the source is tracked");
    assert!(row.dropped > 0, "its bucket refused the rest: {row:?}");
}

#[test]
fn ipv6_is_rate_limited_unless_synproxy_ipv6_is_on() {
    let datapath = load(&SYNPROXY.replace("ipv6 = true", "ipv6 = false"));
    check(
        &datapath,
        &[
            passes(
                "an IPv6 SYN is passed, as under ratelimit",
                syn("2001:db8:3::20", 40000),
                Admitted,
            ),
            row(
                "an IPv4 SYN is answered",
                syn("198.18.3.20", 40000).build(),
                XDP_TX,
                Some((Verdict::Answered, SynCookie)),
            ),
            passes(
                "an IPv6 ACK needs no cookie",
                ack_of("2001:db8:3::21", 40000, 0x1234_5678, 1),
                Admitted,
            ),
        ],
    );
}

#[test]
fn synproxy_in_monitor_mode_answers_nothing_and_counts_what_enforce_would_do() {
    let datapath = load(&format!(
        "mode = \"monitor\"\n{SYNPROXY}synack_rate = 1\nsynack_burst = 2\n"
    ));
    // Passed as it came: the stack answers it.
    let first = syn("198.18.3.11", 40000).build();
    let (action, out) = datapath.test_run_output(&first).expect("BPF_PROG_TEST_RUN");
    assert_eq!((action, &out), (XDP_PASS, &first), "a SYN passes untouched");
    let mut bad_checksum = syn("198.18.3.12", 40000).build();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] ^= 0xff;
    let would = |reason| Some((Verdict::WouldDrop, reason));
    check(
        &datapath,
        &[
            passes(
                "a SYN enforce mode would answer with a cookie",
                syn("198.18.3.16", 40000),
                SynCookie,
            ),
            row(
                "over the SYN-ACK budget (a burst of 2)",
                syn("198.18.3.14", 40000).build(),
                XDP_PASS,
                would(SynackBudget),
            ),
            row(
                "a SYN with a bad TCP checksum",
                bad_checksum,
                XDP_PASS,
                would(Malformed),
            ),
            row(
                "a forged ACK",
                ack_of("198.18.3.15", 40000, 0x1234_5678, 1).build(),
                XDP_PASS,
                would(CookieInvalid),
            ),
            row(
                "a RST of no known flow",
                tcp("198.18.3.15", 25).flags(0x04).checksummed().build(),
                XDP_PASS,
                would(CookieInvalid),
            ),
            row(
                "denylisted",
                syn("198.18.2.5", 40000).build(),
                XDP_PASS,
                would(Denylisted),
            ),
        ],
    );
    // The stack's SYN-ACK to 198.18.3.16's SYN, then the client's ACK of it: the handshake enforce
    // mode's cookie would have proven, and its connection known from then on.
    datapath
        .test_run_synack_watcher(&syn_ack("198.18.0.1", "198.18.3.16", 5_000))
        .expect("BPF_PROG_TEST_RUN");
    check(
        &datapath,
        &[
            row(
                "an ACK of a SYN-ACK the gateway did not send",
                final_ack("198.18.3.17", 5_001),
                XDP_PASS,
                would(CookieInvalid),
            ),
            passes(
                "the ACK that completes the stack's handshake",
                final_ack("198.18.3.16", 5_001),
                CookieValid,
            ),
            passes(
                "data of that connection",
                tcp("198.18.3.16", 25)
                    .flags(TCP_ACK | 0x08)
                    .seq_ack(1000, 5_001),
                Admitted,
            ),
        ],
    );
    assert_eq!(completed(&datapath, "198.18.3.16/32"), 1);
}
