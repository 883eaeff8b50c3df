use std::net::Ipv4Addr;

use ipnet::Ipv6Net;

use super::*;

fn nets(text: &[&str]) -> Vec<Ipv4Net> {
    let mut nets: Vec<Ipv4Net> = text.iter().map(|t| t.parse().expect("valid")).collect();
    nets.sort_unstable();
    nets
}

/// An allow list of 300 and a deny list of 100 prefixes that `entry` makes from a xorshift
/// generator seeded with `seed`: sorted, each once.
fn drawn_lists<N: Ord>(
    seed: u64,
    mut entry: impl FnMut(&mut dyn FnMut() -> u64) -> N,
) -> (Vec<N>, Vec<N>) {
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut draw = |count: usize| {
        let mut list: Vec<N> = (0..count).map(|_| entry(&mut next)).collect();
        list.sort_unstable();
        list.dedup();
        list
    };
    let allow = draw(300);
    let deny = draw(100);
    (allow, deny)
}

/// Lists drawn from three /8s so that entries nest often: every length from /8 to /32.
fn random_lists(seed: u64) -> (Vec<Ipv4Net>, Vec<Ipv4Net>) {
    drawn_lists(seed, |next| {
        let r = next();
        let addr = Ipv4Addr::from(((10 + (r % 3)) as u32) << 24 | ((r >> 8) as u32 & 0x00ff_ffff));
        let len = match r >> 40 & 3 {
            0 => 8 + (r >> 42) as u8 % 9,
            _ => 16 + (r >> 44) as u8 % 17,
        };
        Ipv4Net::new(addr, len).expect("len <= 32").trunc()
    })
}

#[test]
fn merged_bits_are_those_of_every_covering_entry() {
    for seed in 1..20 {
        let (allow, deny) = random_lists(seed);
        let merged = merged(&allow, &deny);
        let mut all: Vec<Ipv4Net> = allow.iter().chain(&deny).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(merged.iter().map(|(n, _)| *n).collect::<Vec<_>>(), all);
        for (net, bits) in &merged {
            let expected = allow
                .iter()
                .filter(|a| a.contains(net))
                .map(|_| listed::ALLOW)
                .chain(
                    deny.iter()
                        .filter(|d| d.contains(net))
                        .map(|_| listed::DENY),
                )
                .fold(0, |b, x| b | x);
            assert_eq!(*bits, expected, "{net} (seed {seed})");
            assert_eq!(covering_bits(net, &allow, &deny), expected, "{net} alone");
        }
    }
}

#[test]
fn an_allow_inside_a_deny_carries_both_and_the_deny_stays_deny() {
    let allow = nets(&["198.18.1.0/24", "198.18.1.128/25"]);
    let deny = nets(&["198.18.0.0/16", "198.18.1.192/26"]);
    let bits: Vec<(String, u32)> = merged(&allow, &deny)
        .into_iter()
        .map(|(n, b)| (n.to_string(), b))
        .collect();
    let both = listed::ALLOW | listed::DENY;
    assert_eq!(
        bits,
        [
            ("198.18.0.0/16".to_owned(), listed::DENY),
            ("198.18.1.0/24".to_owned(), both),
            ("198.18.1.128/25".to_owned(), both),
            ("198.18.1.192/26".to_owned(), both),
        ]
    );
}

#[test]
fn inside_finds_the_entries_a_change_can_touch() {
    let allow = nets(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "11.0.0.0/8"]);
    let deny = nets(&["10.1.2.3/32", "10.2.0.0/16"]);
    let found = inside(&"10.1.0.0/16".parse().expect("valid"), &allow, &deny);
    assert_eq!(found, nets(&["10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32"]));
    let found = inside(&"10.0.0.0/7".parse().expect("valid"), &allow, &deny);
    assert_eq!(found.len(), 6);
}

#[test]
fn the_prefilter_matches_the_nibble_of_each_slash16_worked_out_alone() {
    for seed in 1..8 {
        let (allow, deny) = random_lists(seed);
        let words = prefilter_words(&merged(&allow, &deny));
        assert_eq!(words.len(), prefilter::WORDS as usize);
        let nibbles: Vec<u64> = (0..1usize << 16)
            .map(|top| prefilter_nibble(top, &allow, &deny))
            .collect();
        assert_eq!(words, pack(&nibbles), "seed {seed}");
        // The lists touch 10/8-12/8 only, and some /16s there are answered without the trie.
        let (word, shift) = prefilter::place(200 << 8);
        assert_eq!(
            words[word as usize] >> shift & 0xf,
            0,
            "200.0/16 is in no list"
        );
        assert!(
            nibbles
                .iter()
                .any(|&n| n != 0 && n & prefilter::DEEPER == 0),
            "seed {seed}"
        );
    }
}

#[test]
fn a_slash16_with_a_longer_entry_asks_the_trie_and_one_covered_from_above_does_not() {
    let allow = nets(&["198.18.1.0/24", "203.0.0.0/8"]);
    let deny = nets(&[]);
    let words = prefilter_words(&merged(&allow, &deny));
    let nibble = |a: u32, b: u32| {
        let (word, shift) = prefilter::place(a << 8 | b);
        words[word as usize] >> shift & 0xf
    };
    assert_eq!(nibble(198, 18), prefilter::DEEPER);
    assert_eq!(nibble(198, 19), 0);
    assert_eq!(nibble(203, 113), u64::from(listed::ALLOW));
}

#[test]
fn blocks_match_each_slash16_worked_out_alone_and_answer_like_the_lists() {
    for seed in 1..6 {
        let (allow, deny) = random_lists(seed);
        let merged = merged(&allow, &deny);
        let words = prefilter_words(&merged);
        let blocks = blocks(&merged, &words);
        let deeper: Vec<u32> = (0..1u32 << 16)
            .filter(|&top| nibble_at(&words, top as usize) & prefilter::DEEPER != 0)
            .collect();
        let tops: Vec<u32> = blocks.iter().map(|(top, _)| *top).collect();
        assert_eq!(
            tops, deeper,
            "a block for each DEEPER /16 and no other (seed {seed})"
        );
        let mut answered = 0;
        for (top, block) in &blocks {
            let nibble = nibble_at(&words, *top as usize);
            assert_eq!(
                (nibble, Some(*block)),
                nibble_and_block(*top as usize, &allow, &deny),
                "/16 {top}"
            );
            for third in 0..256u32 {
                let nibble = nibble_at(block, third as usize);
                if nibble & prefilter::DEEPER != 0 {
                    continue;
                }
                let slash24 =
                    Ipv4Net::new(Ipv4Addr::from(top << 16 | third << 8), 24).expect("/24");
                let expected = u64::from(covering_bits(&slash24, &allow, &deny));
                assert_eq!(
                    nibble & prefilter::LISTED,
                    expected,
                    "{slash24} (seed {seed})"
                );
                answered += 1;
            }
        }
        assert!(answered > 0, "the blocks answer some /24s (seed {seed})");
    }
}

/// IPv6 lists drawn from two /32s so that entries nest often: every length from /16 to /128,
/// three in four /48 or longer.
fn random_lists_v6(seed: u64) -> (Vec<Ipv6Net>, Vec<Ipv6Net>) {
    drawn_lists(seed, |next| {
        let r = next();
        // Few distinct /48s (64 per /32), so some hold several entries.
        let high = 0x2001_0db8_0000_0000_u64 | (r & 1) << 32 | (r >> 1 & 0x3f) << 16;
        let addr = std::net::Ipv6Addr::from(u128::from(high) << 64 | u128::from(next()));
        let len = match r >> 8 & 3 {
            0 => 16 + (r >> 10) as u8 % 32,
            1 => 48,
            _ => 49 + (r >> 12) as u8 % 80,
        };
        Ipv6Net::new(addr, len).expect("len <= 128").trunc()
    })
}

/// What the kernel answers for `addr` (maps::lists_of): where the /48's bit is set, the longest
/// entry of /48 or longer covering it, if any; else, where the /32's bit is, the longest of /32
/// to /47; else the longest shorter than /32.
fn answer_v6(addr: std::net::Ipv6Addr, words: &[u64], merged: &[(Ipv6Net, u32)]) -> u32 {
    let set = |level| {
        let (word, mask) = prefilter_v6::place(&addr.octets(), level);
        words[word as usize] & mask != 0
    };
    let longest = |lengths: std::ops::Range<u8>| {
        merged
            .iter()
            .filter(|(net, _)| lengths.contains(&net.prefix_len()) && net.contains(&addr))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|&(_, bits)| bits)
    };
    set(0)
        .then(|| longest(48..129))
        .flatten()
        .or_else(|| set(1).then(|| longest(32..48)).flatten())
        .or_else(|| longest(0..32))
        .unwrap_or(0)
}

#[test]
fn the_ipv6_prefilter_answers_like_the_trie() {
    for seed in 1..8 {
        let (allow, deny) = random_lists_v6(seed);
        let merged = merged(&allow, &deny);
        let words = prefilter_v6_words(merged.iter().map(|(net, _)| net));
        assert_eq!(words.len(), prefilter_v6::WORDS as usize);
        let mut paths = [0; 3];
        let mut state = seed;
        for i in 0..3000u32 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // A third of the probes inside a listed entry (any length), a third anywhere in the
            // lists' /32s, a third in any /32 of 2001::/16.
            let addr = if i % 3 == 0 {
                let (net, _) = merged[(state >> 33) as usize % merged.len()];
                let host = u128::from(state) | u128::from(state.rotate_left(17)) << 64;
                let mask = u128::MAX
                    .checked_shr(u32::from(net.prefix_len()))
                    .unwrap_or(0);
                std::net::Ipv6Addr::from(u128::from(net.network()) | host & mask)
            } else if i % 3 == 1 {
                let high =
                    0x2001_0db8_0000_0000_u64 | (state & 1) << 32 | (state >> 1 & 0x3f) << 16;
                std::net::Ipv6Addr::from(u128::from(high) << 64 | u128::from(state >> 7))
            } else {
                let high = 0x2001_0000_0000_0000_u64 | (state >> 16) & 0xffff_ffff_ffff;
                std::net::Ipv6Addr::from(u128::from(high) << 64 | u128::from(state >> 7))
            };
            let full = merged
                .iter()
                .filter(|(net, _)| net.contains(&addr))
                .max_by_key(|(net, _)| net.prefix_len())
                .map_or(0, |&(_, bits)| bits);
            assert_eq!(
                answer_v6(addr, &words, &merged),
                full,
                "{addr} (seed {seed})"
            );
            let path = (0..2)
                .position(|level| {
                    let (word, mask) = prefilter_v6::place(&addr.octets(), level);
                    words[word as usize] & mask != 0
                })
                .unwrap_or(2);
            paths[path] += 1;
        }
        assert!(
            paths.iter().all(|&n| n > 0),
            "every path taken (seed {seed}): {paths:?}"
        );
    }
}

#[test]
fn an_ipv6_entry_sets_the_bit_of_its_slash48_or_slash32_and_a_shorter_one_none() {
    let bit = |net: &str| prefilter_v6_bit(&net.parse().expect("valid"));
    assert_eq!(bit("2001:db8:1::/48"), bit("2001:db8:1:ffff::7/128"));
    assert_ne!(bit("2001:db8:1::/48"), bit("2001:db8:2::/48"));
    assert_eq!(bit("2001:db8::/47"), bit("2001:db8::/32"));
    assert_ne!(bit("2001:db8::/47"), bit("2001:db8::/48"));
    assert_eq!(bit("2001:db8::/31"), None);
    let nets: Vec<Ipv6Net> = [
        "2001:db8::/32",
        "2001:db8:1:5::/64",
        "2001:db8:1::/56",
        "2000::/3",
    ]
    .iter()
    .map(|t| t.parse().expect("valid"))
    .collect();
    let words = prefilter_v6_words(&nets);
    assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 2);
}
