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
        decision_types: vec!["ban".into()],
        scopes: vec!["ip".into(), "range".into()],
        origins: Vec::new(),
        reporter: None,
    }
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
    let mut list = CrowdsecList::load(None, NOW).unwrap();
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
    assert!(applied.prefixes_changed);
    assert_eq!(prefixes(&list), ["198.18.5.5/32", "2001:db8:5::/48"]);
    let first = list.held().next().unwrap();
    assert_eq!(first.expires, NOW + 3599, "59m59.57s left, rounded down");

    // `null` arrays: nothing changes.
    let applied = list.apply(&stream("1.4.6-empty"), false, &settings(), NOW);
    assert_eq!(applied, Applied::default());

    // One deleted (negative duration), one added from an alert.
    let applied = list.apply(&stream("1.4.6-delta"), false, &settings(), NOW);
    assert_eq!((applied.added, applied.removed), (1, 1));
    assert_eq!(prefixes(&list), ["198.18.7.7/32", "2001:db8:5::/48"]);
    // The LAPI repeats deletions: the second time is no change.
    let applied = list.apply(&stream("1.4.6-delta"), false, &settings(), NOW);
    assert_eq!((applied.added, applied.removed), (0, 0));
    assert!(!applied.prefixes_changed);
}

#[test]
fn current_lapi_shapes_and_what_is_skipped() {
    let (mut list, applied) = started_from("current-startup");
    assert_eq!(applied.added, 4);
    assert_eq!(
        applied.skipped,
        BTreeMap::from([(Skip::Scope, 1), (Skip::Value, 2)]),
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
    assert!(!list.expire(NOW + 3 * 3600));
    assert_eq!(list.len(), 3);
    assert!(prefixes(&list).contains(&"203.0.113.7/32".to_owned()));

    // The LAPI streams a deletion once no decision bans the value: every decision held on it
    // goes, whichever id the deletion names. A deletion of a decision never held is fine.
    let (mut list, _) = started_from("current-startup");
    let applied = list.apply(&stream("current-delta"), false, &settings(), NOW);
    assert_eq!((applied.added, applied.removed), (0, 2));
    assert!(applied.prefixes_changed);
    assert_eq!(prefixes(&list), ["198.51.100.0/24", "2001:db8:77::15/128"]);
}

#[test]
fn origins_and_types_filter_and_a_full_pull_replaces_everything() {
    let mut only_local = settings();
    only_local.origins = vec!["crowdsec".into(), "cscli".into()];
    only_local.decision_types = vec!["ban".into(), "captcha".into()];
    let mut list = CrowdsecList::load(None, NOW).unwrap();
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
    let mut list = CrowdsecList::load(Some(&dir), NOW).unwrap();
    list.apply(&stream("1.4.6-startup"), true, &settings(), NOW);
    list.save().unwrap();
    let again = CrowdsecList::load(Some(&dir), NOW + 60).unwrap();
    assert_eq!(prefixes(&again), ["198.18.5.5/32", "2001:db8:5::/48"]);
    // The one-hour ban is over an hour later.
    let later = CrowdsecList::load(Some(&dir), NOW + 3600).unwrap();
    assert_eq!(prefixes(&later), ["2001:db8:5::/48"]);
    std::fs::write(dir.join(FILE), "{").unwrap();
    let err = CrowdsecList::load(Some(&dir), NOW).err().unwrap();
    assert!(format!("{err:#}").contains("move it away"), "{err:#}");
    std::fs::remove_dir_all(&dir).unwrap();
}
