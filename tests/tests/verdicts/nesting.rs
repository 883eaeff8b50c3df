//! Entries inside one another, answered by the /16 prefilter or by the merged trie, and runtime
//! changes that must re-mark the entries inside the one that changed (docs/ARCHITECTURE.md,
//! § Lists).

use super::*;
use port25_testkit::frames::TCP_SYN;

/// Nested entries of both lists, and /16s with and without entries longer than /16.
const NESTED: &str = r#"
policy = "drop"
ports = [25]
[allow]
cidrs = ["203.0.0.0/8", "198.18.1.0/24", "198.18.1.128/25", "10.1.0.0/16", "2001:db8:1::/48",
         "2001:db9:2::/48", "2001:db8:2::/48", "2001:dba::/40", "2001:dba:7::/48"]
[deny]
cidrs = ["203.0.113.0/24", "198.18.0.0/16", "10.0.0.0/8", "2001:db8::/32", "2001:db8:1:5::/64",
         "2001:e00::/26"]
"#;

fn syn(source: &str) -> Vec<u8> {
    tcp(source, 25).flags(TCP_SYN).build()
}

#[test]
fn nested_entries_of_both_lists() {
    let datapath = load(NESTED);
    #[rustfmt::skip]
    let rows = vec![
        passes("/8 allow, a /16 with nothing longer inside: the prefilter alone", syn("203.7.7.7"), Allowlisted),
        drops("deny /24 inside the allow /8: its /16's block", syn("203.0.113.9"), Denylisted),
        passes("the allow /8 beside the deny /24, same block", syn("203.0.114.9"), Allowlisted),
        drops("allow /24 inside a deny /16: the deny covers it", syn("198.18.1.10"), Denylisted),
        drops("allow /25 inside that allow /24 and the deny /16: the trie", syn("198.18.1.200"), Denylisted),
        drops("deny /16 alone, a /24 its block answers", syn("198.18.200.1"), Denylisted),
        drops("allow /16 inside a deny /8", syn("10.1.2.3"), Denylisted),
        drops("deny /8, a /16 the prefilter answers", syn("10.200.0.1"), Denylisted),
        drops("a /16 in no list: the prefilter alone", syn("198.19.100.1"), NotAllowlisted),
        drops("IPv6 allow /48 inside a deny /32", syn("2001:db8:1::10"), Denylisted),
        drops("IPv6 deny /64 inside that", syn("2001:db8:1:5::1"), Denylisted),
        drops("IPv6 in no list", syn("2001:db9::1"), NotAllowlisted),
        passes("IPv6 allow /48 with nothing inside: its prefilter entry alone", syn("2001:db9:2::9"), Allowlisted),
        drops("IPv6 allow /48 alone inside the deny /32: the deny covers it", syn("2001:db8:2::9"), Denylisted),
        drops("IPv6 under the deny /32, a /48 with no entry: the trie of shorter entries", syn("2001:db8:77::1"), Denylisted),
        passes("IPv6 under an allow /40, a /48 with no entry", syn("2001:dba:3::1"), Allowlisted),
        passes("IPv6 allow /48 inside that /40", syn("2001:dba:7::1"), Allowlisted),
        drops("IPv6 under a deny /26, a /32 with no entry: the trie of entries shorter than /32", syn("2001:e01::1"), Denylisted),
    ];
    check(&datapath, &rows);
}

#[test]
fn runtime_entries_re_mark_the_entries_inside_them() {
    let mut datapath = load(POLICY);
    let before = [
        passes("allowlisted /24", syn(ALLOWED4), Allowlisted),
        drops("other", syn(OTHER4), NotAllowlisted),
        drops("a /16 in no list", syn("198.19.100.1"), NotAllowlisted),
        passes("allowlisted /48", syn(ALLOWED6), Allowlisted),
    ];
    check(&datapath, &before);

    let runtime = [
        (ListKind::Deny, "198.18.0.0/16"),
        (ListKind::Deny, "2001:db8::/32"),
        (ListKind::Allow, "198.0.0.0/8"),
    ]
    .map(|(list, net)| (list, net.parse().expect("valid")));
    for (list, net) in runtime {
        datapath.insert_live(list, net).expect("runtime entry in");
    }
    #[rustfmt::skip]
    check(&datapath, &[
        drops("the allowlisted /24 under a runtime deny /16", syn(ALLOWED4), Denylisted),
        drops("other, under the deny /16", syn(OTHER4), Denylisted),
        passes("under the runtime allow /8 only", syn("198.19.100.1"), Allowlisted),
        drops("the allowlisted /48 under a runtime deny /32", syn(ALLOWED6), Denylisted),
    ]);

    // The config's own entries stay; the runtime ones go, and everything is as before.
    for (list, net) in runtime {
        datapath.remove_live(list, net).expect("runtime entry out");
    }
    check(&datapath, &before);

    // A runtime /32 inside an allowlisted /24: that /24 now asks the trie, the rest of it stays
    // allowlisted; gone again, the /24 is answered by its block as before.
    let banned = "198.18.1.77/32".parse().expect("valid");
    datapath
        .insert_live(ListKind::Deny, banned)
        .expect("ban in");
    #[rustfmt::skip]
    check(&datapath, &[
        drops("a runtime /32 ban inside the allowlisted /24", syn("198.18.1.77"), Denylisted),
        passes("its neighbour in the /24", syn(ALLOWED4), Allowlisted),
    ]);
    datapath
        .remove_live(ListKind::Deny, banned)
        .expect("ban out");
    check(
        &datapath,
        &[passes("the ban lifted", syn("198.18.1.77"), Allowlisted)],
    );

    // The same in IPv6: a runtime /128 inside the allowlisted /48 sends that /48 to the trie;
    // gone again, its prefilter entry answers alone as before.
    let banned6 = "2001:db8:1::77/128".parse().expect("valid");
    datapath
        .insert_live(ListKind::Deny, banned6)
        .expect("ban in");
    #[rustfmt::skip]
    check(&datapath, &[
        drops("a runtime /128 ban inside the allowlisted /48", syn("2001:db8:1::77"), Denylisted),
        passes("its neighbour in the /48", syn(ALLOWED6), Allowlisted),
    ]);
    datapath
        .remove_live(ListKind::Deny, banned6)
        .expect("ban out");
    check(
        &datapath,
        &[passes("the ban lifted", syn("2001:db8:1::77"), Allowlisted)],
    );
    // A runtime /128 ban alone in its /48, then a /40 allow around it.
    let lone = "2001:db8:9::5/128".parse().expect("valid");
    let around = "2001:db8::/40".parse().expect("valid");
    datapath.insert_live(ListKind::Deny, lone).expect("ban in");
    datapath
        .insert_live(ListKind::Allow, around)
        .expect("allow in");
    #[rustfmt::skip]
    check(&datapath, &[
        drops("a runtime /128 ban alone in its /48", syn("2001:db8:9::5"), Denylisted),
        passes("its neighbour, under the runtime allow /40", syn("2001:db8:9::6"), Allowlisted),
        passes("a /48 with no entry under that /40", syn("2001:db8:44::1"), Allowlisted),
    ]);
    datapath.remove_live(ListKind::Deny, lone).expect("ban out");
    datapath
        .remove_live(ListKind::Allow, around)
        .expect("allow out");
    #[rustfmt::skip]
    check(&datapath, &[
        drops("the ban and the /40 gone", syn("2001:db8:9::5"), NotAllowlisted),
        drops("the /40 gone", syn("2001:db8:44::1"), NotAllowlisted),
    ]);
    check(&datapath, &before);

    // A runtime entry equal to a config entry of the other list, then gone again.
    let allowed24 = "198.18.1.0/24".parse().expect("valid");
    datapath
        .insert_live(ListKind::Deny, allowed24)
        .expect("deny = allow");
    check(
        &datapath,
        &[drops("in both lists", syn(ALLOWED4), Denylisted)],
    );
    datapath
        .remove_live(ListKind::Deny, allowed24)
        .expect("out");
    check(&datapath, &before);
}

/// A source outside 2001:db8::/32 and one inside (not of its allowlisted or listed /48s)
/// whose /48s share a `PREFILTER_V6` bit: searched, as a real list's /48s would collide.
fn sources_sharing_a_bit() -> (String, String) {
    use port25_common::prefilter_v6::place;
    let addr =
        |second: u16, third: u16| std::net::Ipv6Addr::new(0x2001, second, third, 0, 0, 0, 0, 1);
    let bits: std::collections::HashMap<_, u16> = (3..=u16::MAX)
        .map(|third| (place(&addr(0xdb8, third).octets(), 0), third))
        .collect();
    (0xdb9..=0xdbf)
        .flat_map(|second| (0..=u16::MAX).map(move |third| (second, third)))
        .find_map(|(second, third)| {
            let twin = bits.get(&place(&addr(second, third).octets(), 0))?;
            Some((
                addr(second, third).to_string(),
                addr(0xdb8, *twin).to_string(),
            ))
        })
        .expect("65,533 /48s' bits against 458,752 /48s: some share one")
}

/// The IPv6 prefilter's bits are per hash of a /48 and never cleared in place: a set bit that
/// another /48 shares, or that a removed entry left, only sends the source to the whole trie,
/// with the same verdict.
#[test]
fn an_ipv6_prefilter_bit_shared_or_left_set_keeps_the_verdicts() {
    let mut datapath = load(NESTED);
    let (banned, neighbour) = sources_sharing_a_bit();
    let ban: ipnet::IpNet = format!("{banned}/128").parse().expect("valid");
    #[rustfmt::skip]
    let shared = |verdict_of_ban: Row| vec![
        verdict_of_ban,
        drops("the /48 sharing its bit, under the deny /32: the whole trie", syn(&neighbour), Denylisted),
        drops("IPv6 allow /48 inside the deny /32", syn("2001:db8:1::10"), Denylisted),
        passes("IPv6 allow /48 with nothing inside", syn("2001:db9:2::9"), Allowlisted),
    ];
    datapath.insert_live(ListKind::Deny, ban).expect("ban in");
    check(
        &datapath,
        &shared(drops("the runtime ban", syn(&banned), Denylisted)),
    );
    // Removed: its bit stays set (another /48 may share it), the verdicts are as before it.
    datapath.remove_live(ListKind::Deny, ban).expect("ban out");
    check(
        &datapath,
        &shared(drops("the ban lifted", syn(&banned), NotAllowlisted)),
    );
    // A reload writes the bits afresh: the same verdicts.
    reload(&mut datapath, NESTED);
    check(
        &datapath,
        &shared(drops("after a reload", syn(&banned), NotAllowlisted)),
    );
}
