//! The CrowdSec list on answers captured from real Local APIs (1.4.6, Debian 12's, from this
//! project's test LAPI; and the current shape: `[]` for empty arrays, lower-case scopes, `uuid`
//! and `until` fields, CAPI and blocklist origins).

use super::*;
use crate::config::Secret;

fn settings() -> Crowdsec {
    Crowdsec {
        lapi_url: "http://127.0.0.1:8080".into(),
        bouncer_key: Secret("k".into()),
        update_frequency: 10,
        lapi_timeout: 30,
        decision_types: vec!["ban".into()],
        scopes: vec!["ip".into(), "range".into()],
        origins: Vec::new(),
        bounds: Bounds::default(),
        reporter: None,
    }
}

/// An empty list with no allowlist and the default bounds, as a daemon without a state file.
fn empty() -> CrowdsecList {
    CrowdsecList::load(None, NOW, &CidrSet::default(), Bounds::default()).unwrap()
}

fn nets(text: &[&str]) -> Vec<IpNet> {
    text.iter().map(|t| t.parse().unwrap()).collect()
}

fn stream(name: &str) -> Stream {
    let text = match name {
        "1.4.6-startup" => include_str!("../fixtures/lapi-1.4.6-startup.json"),
        "1.4.6-empty" => include_str!("../fixtures/lapi-1.4.6-empty.json"),
        "1.4.6-delta" => include_str!("../fixtures/lapi-1.4.6-delta.json"),
        "current-startup" => include_str!("../fixtures/lapi-current-startup.json"),
        "current-delta" => include_str!("../fixtures/lapi-current-delta.json"),
        _ => panic!("no fixture {name}"),
    };
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn prefixes(list: &CrowdsecList) -> Vec<String> {
    list.prefixes().iter().map(|n| n.to_string()).collect()
}

const NOW: u64 = 1_800_000_000;

/// An empty list after the startup answer `fixture`, and what that answer changed.
fn started_from(fixture: &str) -> (CrowdsecList, Applied) {
    let mut list = empty();
    let applied = list.apply(&stream(fixture), true, &settings(), NOW);
    (list, applied)
}

#[test]
fn debian_12s_lapi_startup_then_deltas() {
    let (mut list, applied) = started_from("1.4.6-startup");
    assert_eq!(applied.added, 2);
    assert_eq!(
        applied.skipped,
        BTreeMap::from([(Skip::Type, 1)]),
        "the captcha"
    );
    assert_eq!(
        applied.delta.added,
        nets(&["198.18.5.5/32", "2001:db8:5::/48"])
    );
    assert_eq!(prefixes(&list), ["198.18.5.5/32", "2001:db8:5::/48"]);
    let first = list.held().next().unwrap();
    assert_eq!(first.expires, NOW + 3599, "59m59.57s left, rounded down");

    // `null` arrays: nothing changes.
    let applied = list.apply(&stream("1.4.6-empty"), false, &settings(), NOW);
    assert_eq!(applied, Applied::default());

    // One deleted (negative duration), one added from an alert.
    let applied = list.apply(&stream("1.4.6-delta"), false, &settings(), NOW);
    assert_eq!((applied.added, applied.removed), (1, 1));
    assert_eq!(
        applied.delta,
        Delta {
            added: nets(&["198.18.7.7/32"]),
            removed: nets(&["198.18.5.5/32"])
        }
    );
    assert_eq!(prefixes(&list), ["198.18.7.7/32", "2001:db8:5::/48"]);
    // The LAPI repeats deletions: the second time is no change, and the deletion is counted.
    let applied = list.apply(&stream("1.4.6-delta"), false, &settings(), NOW);
    assert_eq!((applied.added, applied.removed), (0, 0));
    assert!(applied.delta.is_empty());
    assert_eq!(applied.skipped.get(&Skip::UnknownDeletion), Some(&1));
}

#[test]
fn current_lapi_shapes_and_what_is_skipped() {
    let (mut list, applied) = started_from("current-startup");
    assert_eq!(applied.added, 4);
    assert_eq!(
        applied.skipped,
        BTreeMap::from([(Skip::Scope, 1), (Skip::Value, 1), (Skip::Duration, 1)]),
        "a country, an address that is none, a decision already over"
    );
    assert_eq!(
        prefixes(&list),
        ["198.51.100.0/24", "203.0.113.7/32", "2001:db8:77::15/128"]
    );
    let counts = list.counts();
    assert_eq!(counts.get(&("CAPI".to_owned(), "ipv4")), Some(&1));
    assert_eq!(counts.get(&("crowdsec".to_owned(), "ipv6")), Some(&1));

    // Two decisions on 203.0.113.7 (168 h from CAPI, 3 h from cscli): the shorter one expiring
    // locally keeps the address banned.
    assert!(list.expire(NOW + 3 * 3600).is_empty());
    assert_eq!(list.len(), 3);
    assert!(prefixes(&list).contains(&"203.0.113.7/32".to_owned()));

    // The LAPI streams a deletion once no decision bans the value: every decision held on it
    // goes, whichever id the deletion names. A deletion of a decision never held is fine.
    let (mut list, _) = started_from("current-startup");
    let applied = list.apply(&stream("current-delta"), false, &settings(), NOW);
    assert_eq!((applied.added, applied.removed), (0, 2));
    assert_eq!(applied.delta.removed, nets(&["203.0.113.7/32"]));
    assert_eq!(prefixes(&list), ["198.51.100.0/24", "2001:db8:77::15/128"]);
}

#[test]
fn origins_and_types_filter_and_a_full_pull_replaces_everything() {
    let mut only_local = settings();
    only_local.origins = vec!["crowdsec".into(), "cscli".into()];
    only_local.decision_types = vec!["ban".into(), "captcha".into()];
    let mut list = empty();
    let applied = list.apply(&stream("current-startup"), true, &only_local, NOW);
    assert_eq!(
        applied.skipped.get(&Skip::Origin),
        Some(&2),
        "CAPI and lists"
    );
    assert_eq!(prefixes(&list), ["203.0.113.7/32", "2001:db8:77::15/128"]);

    let applied = list.apply(&stream("1.4.6-startup"), true, &only_local, NOW);
    assert_eq!((applied.added, applied.removed), (3, 2));
    assert_eq!(
        prefixes(&list),
        ["198.18.5.5/32", "198.18.5.6/32", "2001:db8:5::/48"]
    );
}

#[test]
fn the_list_survives_a_restart_without_what_expired() {
    let dir = std::env::temp_dir().join(format!("port25-crowdsec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut list =
        CrowdsecList::load(Some(&dir), NOW, &CidrSet::default(), Bounds::default()).unwrap();
    list.apply(&stream("1.4.6-startup"), true, &settings(), NOW);
    list.save().unwrap();
    let again =
        CrowdsecList::load(Some(&dir), NOW + 60, &CidrSet::default(), Bounds::default()).unwrap();
    assert_eq!(prefixes(&again), ["198.18.5.5/32", "2001:db8:5::/48"]);
    // The one-hour ban is over an hour later.
    let later = CrowdsecList::load(
        Some(&dir),
        NOW + 3600,
        &CidrSet::default(),
        Bounds::default(),
    )
    .unwrap();
    assert_eq!(prefixes(&later), ["2001:db8:5::/48"]);
    std::fs::write(dir.join(FILE), "{").unwrap();
    let err = CrowdsecList::load(Some(&dir), NOW, &CidrSet::default(), Bounds::default())
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("move it away"), "{err:#}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A decision as a hostile or broken LAPI might stream it.
fn decision(id: i64, scope: &str, value: &str, duration: &str) -> Decision {
    Decision {
        id,
        origin: "lists".into(),
        kind: "ban".into(),
        scope: scope.into(),
        value: value.into(),
        duration: duration.into(),
        scenario: "test".into(),
    }
}

fn new_only(decisions: Vec<Decision>) -> Stream {
    Stream {
        new: decisions,
        deleted: Vec::new(),
    }
}

#[test]
fn what_a_lapi_may_not_impose_is_skipped_and_counted() {
    let mut list = empty();
    let applied = list.apply(
        &new_only(vec![
            decision(1, "range", "0.0.0.0/0", "4h"),
            decision(2, "range", "::/0", "4h"),
            decision(3, "range", "10.0.0.0/8", "4h"),
            decision(4, "range", "2001:db8::/16", "4h"),
            decision(5, "range", "198.18.0.0/33", "4h"),
            decision(6, "ip", "not an address", "4h"),
            decision(7, "ip", "198.18.0.7", "99999999999h"),
            decision(8, "ip", "198.18.0.8", "-3s"),
            decision(9, "ip", "198.18.0.9", "4 hours"),
            decision(10, "range", "198.18.0.0/16", "4h"),
            decision(11, "range", "2001:db8::/32", "4h"),
        ]),
        true,
        &settings(),
        NOW,
    );
    assert_eq!(
        applied.skipped,
        BTreeMap::from([(Skip::TooWide, 4), (Skip::Value, 2), (Skip::Duration, 3)])
    );
    assert_eq!(prefixes(&list), ["198.18.0.0/16", "2001:db8::/32"]);

    // Narrower bounds refuse the /16 too; /0 is refused at any setting.
    let mut strict = settings();
    strict.bounds.min_ipv4_prefix = 24;
    strict.bounds.min_ipv6_prefix = 1;
    let applied = list.apply(
        &new_only(vec![
            decision(12, "range", "198.19.0.0/16", "4h"),
            decision(13, "range", "::/0", "4h"),
            decision(14, "range", "8000::/1", "4h"),
        ]),
        false,
        &strict,
        NOW,
    );
    assert_eq!(applied.skipped, BTreeMap::from([(Skip::TooWide, 2)]));
}

#[test]
fn past_max_decisions_new_ones_are_skipped() {
    let mut bounded = settings();
    bounded.bounds.max_decisions = 3;
    let mut list = empty();
    let many: Vec<Decision> = (0..5)
        .map(|i| decision(i, "ip", &format!("198.18.1.{i}"), "1h"))
        .collect();
    let applied = list.apply(&new_only(many), true, &bounded, NOW);
    assert_eq!(applied.added, 3);
    assert_eq!(applied.skipped, BTreeMap::from([(Skip::Limit, 2)]));
    // A decision held already may be streamed again.
    let applied = list.apply(
        &new_only(vec![decision(0, "ip", "198.18.1.0", "2h")]),
        false,
        &bounded,
        NOW,
    );
    assert!(applied.skipped.is_empty());
    assert_eq!(list.len(), 3);
}

#[test]
fn the_allowlist_beats_a_decision_and_the_rest_of_its_range_is_enforced() {
    let allow = CidrSet::new(nets(&[
        "198.18.0.10/32",
        "198.18.4.0/24",
        "2001:db8:9::/48",
    ]));
    let mut list = CrowdsecList::load(None, NOW, &allow, Bounds::default()).unwrap();
    let applied = list.apply(
        &new_only(vec![
            decision(1, "range", "198.18.0.0/22", "4h"),
            decision(2, "ip", "198.18.4.7", "4h"),
            decision(3, "range", "2001:db8:8::/47", "4h"),
            decision(4, "ip", "198.18.9.9", "4h"),
        ]),
        true,
        &settings(),
        NOW,
    );
    assert_eq!(applied.added, 4, "every decision is held");
    let set = list.prefixes();
    let dropped = |addr: &str| {
        let addr: IpNet = addr.parse().unwrap();
        set.covers(&addr)
    };
    assert!(!dropped("198.18.0.10/32"), "the allowlisted peer");
    assert!(dropped("198.18.0.11/32") && dropped("198.18.0.9/32"));
    assert!(dropped("198.18.3.255/32") && dropped("198.18.1.0/32"));
    assert!(!dropped("198.18.4.7/32"), "wholly inside an allowed /24");
    assert!(dropped("2001:db8:8::1/128"));
    assert!(!dropped("2001:db8:9::1/128"));
    assert!(dropped("198.18.9.9/32"));
    // A /22 less one address: 10 prefixes (/32, /31, ..., /23).
    assert_eq!(set.v4.iter().filter(|n| n.prefix_len() < 32).count(), 9);
    let overridden: Vec<Overridden> = list.overridden().collect();
    assert_eq!(overridden.len(), 3);
    assert!(
        overridden
            .iter()
            .any(|o| o.cidr.to_string() == "198.18.4.7/32" && o.enforced.is_empty())
    );

    // The allowlisted peer leaves the allowlist at a reload: the whole /22 is enforced again.
    let delta = list.rebase(
        &CidrSet::new(nets(&["198.18.4.0/24", "2001:db8:9::/48"])),
        Bounds::default(),
    );
    assert_eq!(delta.added, nets(&["198.18.0.0/22"]));
    assert_eq!(delta.removed.len(), 10);
    assert_eq!(list.overridden().count(), 2);
}

#[test]
fn a_small_poll_changes_only_what_it_touches() {
    let mut list = empty();
    let many: Vec<Decision> = (0..1000)
        .map(|i| decision(i, "ip", &format!("198.18.{}.{}", i / 256, i % 256), "1h"))
        .collect();
    let applied = list.apply(&new_only(many), true, &settings(), NOW);
    assert_eq!(applied.delta.added.len(), 1000);
    // A full pull of the same decisions changes nothing in the kernel.
    let same: Vec<Decision> = (0..1000)
        .map(|i| decision(i, "ip", &format!("198.18.{}.{}", i / 256, i % 256), "1h"))
        .collect();
    assert!(
        list.apply(&new_only(same), true, &settings(), NOW)
            .delta
            .is_empty()
    );
    // Two decisions on one range, and a range over an address held: each prefix counts once.
    let applied = list.apply(
        &Stream {
            new: vec![
                decision(5000, "range", "198.18.0.0/24", "1h"),
                decision(5001, "ip", "198.18.0.1", "2h"),
            ],
            deleted: vec![decision(7, "ip", "198.18.0.7", "-1s")],
        },
        false,
        &settings(),
        NOW,
    );
    assert_eq!(
        applied.delta,
        Delta {
            added: nets(&["198.18.0.0/24"]),
            removed: nets(&["198.18.0.7/32"])
        }
    );
    // The /32s held inside the /24 stay enforced when it expires first.
    let delta = list.expire(NOW + 3600);
    assert!(delta.added.is_empty());
    assert_eq!(list.len(), 1, "the 2 h decision");
    assert_eq!(prefixes(&list), ["198.18.0.1/32"]);
}

#[test]
fn a_decision_cut_into_too_many_pieces_enforces_nothing() {
    // 300 allowlisted /128s spread over a /32: each costs up to 96 pieces.
    let allow = CidrSet::new((0..300u32).map(|i| {
        IpNet::from(std::net::IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001,
            0xdb8,
            (i * 211) as u16,
            0,
            0,
            0,
            0,
            1,
        )))
    }));
    let pieces = less_allowed("2001:db8::/32".parse().unwrap(), &allow);
    assert!(pieces.is_empty(), "{} pieces", pieces.len());
    // A few inside a /16 of IPv4 are cut as usual.
    let allow = CidrSet::new(nets(&["198.18.0.10/32", "198.18.200.0/24"]));
    let pieces = less_allowed("198.18.0.0/16".parse().unwrap(), &allow);
    // 16 around the /32; the /17 holding the /24 becomes 7.
    assert_eq!(pieces.len(), 16 - 1 + 7);
}
