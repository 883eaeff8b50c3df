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
cidrs = ["203.0.0.0/8", "198.18.1.0/24", "198.18.1.128/25", "10.1.0.0/16", "2001:db8:1::/48"]
[deny]
cidrs = ["203.0.113.0/24", "198.18.0.0/16", "10.0.0.0/8", "2001:db8::/32", "2001:db8:1:5::/64"]
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
