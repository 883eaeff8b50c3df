//! Differential fuzz test: random and mutated frames through the loaded XDP program with
//! BPF_PROG_TEST_RUN, each compared with the independent reference decision in
//! `port25_testkit::reference` (etherparse, not the kernel code): the XDP action, and the one counter
//! (verdict, reason, packets, bytes) that must move, or that none moves.
//!
//! Deterministic for a seed: the default is fixed so CI is reproducible; `PORT25_FUZZ_SEED=N`
//! (decimal or 0x-hex) replays or explores another run, `PORT25_FUZZ_FRAMES=N` changes the count.
//! Run with `cargo test -p port25-tests --test fuzz -- --nocapture` (as root).
#![allow(clippy::unwrap_used, reason = "test code")]

mod corner_cases;
mod generator;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Instant,
};

use self::generator::{Gen, Origin};
use ipnet::IpNet;
use port25_common::{Reason, Verdict};
use port25_daemon::testing::{Config, Datapath};
use port25_testkit::{
    reference::{self, Parsed, RefPolicy, RefPolicyKind, XDP_DROP, XDP_PASS},
    require_root,
    rng::Rng,
};

const DEFAULT_SEED: u64 = 0x0025_2525_f00d_5eed;
const DEFAULT_FRAMES: usize = 250_000;
/// The issue asks for at least this many frames in a default run.
const MIN_FRAMES: usize = 100_000;
/// Stop (and fail) after this many mismatches: the first few tell the story.
const MAX_MISMATCHES: usize = 5;

/// Protocol numbers and ethertypes the generator uses (its own constants, not the reference's).
const TCP: u8 = 6;
const UDP: u8 = 17;
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const DEST_OPTS: u8 = 60;
const EXT_KINDS: [u8; 5] = [HOP_BY_HOP, ROUTING, FRAGMENT, AUTH, DEST_OPTS];
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_8021Q: u16 = 0x8100;
const ETH_8021AD: u16 = 0x88a8;

// ---- Policies ------------------------------------------------------------------------------------

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

/// One policy the program runs under for a share of the frames. All three are applied in turn to
/// the same loaded program, so the reloads between them are exercised too.
struct Phase {
    name: &'static str,
    percent: usize,
    policy: RefPolicy,
}

fn phases() -> Vec<Phase> {
    // Deny entries sit inside allow entries (deny wins whatever the prefix lengths), host routes
    // sit inside networks, and the networks' edges are where the generator aims.
    let allow = nets(&[
        "198.18.1.0/24",
        "198.18.2.0/24",
        "198.19.128.0/17",
        "198.18.9.9/32",
        "2001:db8:1::/48",
        "2001:db8:2::/48",
        "2001:db8:abcd:12::/64",
        "2001:db8::25/128",
    ]);
    let deny = nets(&[
        "198.18.2.64/26",
        "198.18.200.0/22",
        "198.18.1.99/32",
        "198.19.255.255/32",
        "2001:db8:2::/52",
        "2001:db8:dead::/48",
        "2001:db8:1::66/128",
    ]);
    vec![
        Phase {
            name: "enforce, policy drop",
            percent: 60,
            policy: RefPolicy {
                ports: vec![25, 2525],
                monitor: false,
                kind: RefPolicyKind::Drop,
                allow: allow.clone(),
                deny: deny.clone(),
            },
        },
        Phase {
            name: "monitor, policy drop",
            percent: 20,
            policy: RefPolicy {
                ports: vec![25, 465, 2525],
                monitor: true,
                kind: RefPolicyKind::Drop,
                allow,
                deny,
            },
        },
        Phase {
            // Ports at the edges of the kernel's port bitmap words, and other lists.
            name: "enforce, policy ratelimit (ample buckets)",
            percent: 20,
            policy: RefPolicy {
                ports: vec![1, 25, 31, 32, 587, 2525, 65535],
                monitor: false,
                kind: RefPolicyKind::RatelimitAmple,
                allow: nets(&["198.18.0.0/16", "2001:db8:1::/48", "2001:db8:2:3::7/128"]),
                deny: nets(&["198.18.2.64/26", "2001:db8:1:2::/64", "198.19.0.0/16"]),
            },
        },
    ]
}

// ---- Running frames through the kernel -----------------------------------------------------------

type Outcome = (u32, Option<(Verdict, Reason)>);
/// Counter deltas: (verdict, reason) -> (packets, bytes).
type Moved = BTreeMap<(Verdict, Reason), (u64, u64)>;

/// Counters summed over CPUs and interfaces.
fn counters(datapath: &Datapath) -> Moved {
    let mut sums = Moved::new();
    for ((_, verdict, reason), counter) in datapath.totals().unwrap() {
        let sum = sums.entry((verdict, reason)).or_default();
        sum.0 += counter.packets;
        sum.1 += counter.bytes;
    }
    sums
}

fn delta(before: &Moved, after: &Moved) -> Moved {
    after
        .iter()
        .filter_map(|(key, &(packets, bytes))| {
            let (p0, b0) = before.get(key).copied().unwrap_or_default();
            (packets != p0 || bytes != b0).then(|| (*key, (packets - p0, bytes - b0)))
        })
        .collect()
}

fn hex(frame: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in frame.chunks(16).enumerate() {
        let bytes: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(out, "    {:04x}  {}", i * 16, bytes.join(" "));
    }
    out
}

fn class(outcome: &Outcome) -> String {
    let action = match outcome.0 {
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        _ => "XDP_?",
    };
    match outcome.1 {
        Some((verdict, reason)) => format!("{action} {}/{}", verdict.label(), reason.label()),
        None => format!("{action} (not counted)"),
    }
}

#[derive(Default)]
struct Tally {
    frames: usize,
    by_origin: BTreeMap<Origin, usize>,
    by_class: BTreeMap<String, usize>,
    mismatches: Vec<String>,
}

#[test]
fn kernel_matches_reference_on_random_and_mutated_frames() {
    require_root();
    let env_number = |name: &str| -> Option<u64> {
        let text = std::env::var(name).ok()?;
        let text = text.trim().replace('_', "");
        let parsed = match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => text.parse(),
        };
        Some(parsed.unwrap_or_else(|_| panic!("{name}={text}: not a number")))
    };
    let seed = env_number("PORT25_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let frames = env_number("PORT25_FUZZ_FRAMES").map_or(DEFAULT_FRAMES, |n| n as usize);
    println!("fuzz: seed {seed:#x} (replay with PORT25_FUZZ_SEED={seed:#x}), {frames} frames");

    let phases = phases();
    let config_of = |policy: &RefPolicy| {
        let text = policy.to_toml();
        Config::parse(&text, Path::new("fuzz.toml"))
            .unwrap_or_else(|e| panic!("fuzz policy does not parse: {e}\n{text}"))
    };
    let mut datapath =
        Datapath::load_private(config_of(&phases[0].policy).ratelimit.tracked_sources)
            .expect("XDP program loads");
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    let started = Instant::now();

    'phases: for (p, phase) in phases.iter().enumerate() {
        let config = config_of(&phase.policy);
        datapath
            .apply_policy(&config, config.allow.clone(), config.deny.clone())
            .expect("policy applies");
        let quota = if p + 1 == phases.len() {
            frames - tally.frames
        } else {
            frames * phase.percent / 100
        };
        let phase_started = Instant::now();
        let mut done = 0;
        let mut last = counters(&datapath);
        while done < quota {
            let cases = Gen {
                rng: &mut rng,
                policy: &phase.policy,
            }
            .cases();
            for case in cases {
                let frame = &case.frame;
                let expected = reference::decide(frame, &phase.policy);
                // What the reference saw, for the generator's cross-check and for reports.
                let parsed = reference::parse(frame);
                let action = datapath.test_run(frame).unwrap_or_else(|e| {
                    panic!("BPF_PROG_TEST_RUN on a {}-byte frame: {e}", frame.len())
                });
                let now = counters(&datapath);
                let moved = delta(&last, &now);
                last = now;
                let want: Moved = expected
                    .1
                    .iter()
                    .map(|&key| (key, (1, frame.len() as u64)))
                    .collect();
                let index = tally.frames;
                tally.frames += 1;
                done += 1;
                *tally.by_origin.entry(case.origin).or_default() += 1;
                *tally.by_class.entry(class(&expected)).or_default() += 1;
                let generator_disagrees = case.intent.is_some_and(|intent| intent != parsed);
                if action != expected.0 || moved != want || generator_disagrees {
                    let what = if generator_disagrees {
                        "REFERENCE DISAGREES WITH THE GENERATOR"
                    } else {
                        "KERNEL DISAGREES WITH THE REFERENCE"
                    };
                    tally.mismatches.push(format!(
                        "{what}: frame #{index} ({:?}, phase \"{}\", seed {seed:#x}), {} bytes\n  \
                         built: {}\n  generator expects: {:?}\n  reference parses: {parsed:?}\n  \
                         reference: action {} counter {:?}\n  kernel:    action {action} counters moved {moved:?}\n{}",
                        case.origin,
                        phase.name,
                        frame.len(),
                        case.story,
                        case.intent,
                        expected.0,
                        want,
                        hex(frame),
                    ));
                    if tally.mismatches.len() >= MAX_MISMATCHES {
                        break 'phases;
                    }
                }
                if done >= quota {
                    break;
                }
            }
        }
        println!(
            "fuzz: phase \"{}\": {done} frames in {:.1?}",
            phase.name,
            phase_started.elapsed()
        );
    }

    let elapsed = started.elapsed();
    println!(
        "fuzz: {} frames tried in {elapsed:.1?}, {} mismatches",
        tally.frames,
        tally.mismatches.len()
    );
    for (origin, n) in &tally.by_origin {
        println!("  {n:>8}  {origin:?}");
    }
    println!("fuzz: reference verdicts:");
    for (class, n) in &tally.by_class {
        println!("  {n:>8}  {class}");
    }
    assert!(
        tally.mismatches.is_empty(),
        "{} mismatch(es) (stopped after {MAX_MISMATCHES}):\n\n{}",
        tally.mismatches.len(),
        tally.mismatches.join("\n")
    );
    if frames >= MIN_FRAMES {
        assert!(tally.frames >= MIN_FRAMES);
        // The generator must reach every verdict the phases can produce, or the run proves little.
        for (verdict, reason) in [
            (Verdict::Pass, Reason::Allowlisted),
            (Verdict::Drop, Reason::Denylisted),
            (Verdict::Drop, Reason::NotAllowlisted),
            (Verdict::Drop, Reason::Malformed),
            (Verdict::WouldDrop, Reason::Denylisted),
            (Verdict::WouldDrop, Reason::NotAllowlisted),
            (Verdict::WouldDrop, Reason::Malformed),
            (Verdict::Pass, Reason::Admitted),
        ] {
            let action = if verdict == Verdict::Drop {
                XDP_DROP
            } else {
                XDP_PASS
            };
            let n = tally
                .by_class
                .get(&class(&(action, Some((verdict, reason)))))
                .copied()
                .unwrap_or(0);
            assert!(
                n >= 100,
                "only {n} frames reached {}/{}",
                verdict.label(),
                reason.label()
            );
        }
    }
}
