//! The allow and deny lists in the form the kernel reads them (docs/ARCHITECTURE.md, § Lists): one
//! trie per family whose every entry carries the `listed` bits of itself and of each shorter entry
//! covering it, so that the longest match alone gives the verdict; and the IPv4 prefilter, a
//! nibble per /16 and, under a /16 that holds longer entries, a block of a nibble per /24, which
//! answer without the trie wherever no longer entry lies; and the IPv6 prefilter, a bit per hash of
//! the /48s that hold entries of /48 or longer and of the /32s that hold entries of /32 to /47,
//! which sends every other source to a trie of shorter entries alone.

use std::net::Ipv4Addr;

use ipnet::{Ipv4Net, Ipv6Net};
use port25_common::{listed, prefilter, prefilter_v6};

use super::Block;

/// A CIDR prefix of either family, as the lists keep it: sorted by (network, length), host bits
/// clear, so that every entry inside another comes right after it.
pub(super) trait Prefix: Copy + Ord {
    fn covers(&self, other: &Self) -> bool;
    fn len(&self) -> u8;
    /// The prefix of `len` bits covering this one.
    fn widened(&self, len: u8) -> Self;
}

/// The same for both families: ipnet gives each the same methods.
macro_rules! prefix {
    ($net:ty) => {
        impl Prefix for $net {
            fn covers(&self, other: &Self) -> bool {
                self.contains(other)
            }
            fn len(&self) -> u8 {
                self.prefix_len()
            }
            fn widened(&self, len: u8) -> Self {
                <$net>::new(self.network(), len).map_or(*self, |net| net.trunc())
            }
        }
    };
}
prefix!(Ipv4Net);
prefix!(Ipv6Net);

/// The `listed` bits of exactly this entry.
pub(super) fn own<N: Prefix>(net: &N, allow: &[N], deny: &[N]) -> u32 {
    let mut bits = 0;
    if allow.binary_search(net).is_ok() {
        bits |= listed::ALLOW;
    }
    if deny.binary_search(net).is_ok() {
        bits |= listed::DENY;
    }
    bits
}

/// Every entry of either list (sorted, each once) with the bits of the lists covering it: its own
/// and those of every shorter entry it lies in. One pass, keeping the chain of entries that cover
/// the current one.
pub(super) fn merged<N: Prefix>(allow: &[N], deny: &[N]) -> Vec<(N, u32)> {
    let mut out: Vec<(N, u32)> = Vec::with_capacity(allow.len() + deny.len());
    let mut covering: Vec<(N, u32)> = Vec::new();
    let (mut a, mut d) = (allow.iter().peekable(), deny.iter().peekable());
    loop {
        let (net, bits) = match (a.peek(), d.peek()) {
            (None, None) => break,
            (Some(&&x), Some(&&y)) if x == y => {
                a.next();
                d.next();
                (x, listed::ALLOW | listed::DENY)
            }
            (Some(&&x), Some(&&y)) if x < y => {
                a.next();
                (x, listed::ALLOW)
            }
            (Some(&&x), None) => {
                a.next();
                (x, listed::ALLOW)
            }
            (_, Some(&&y)) => {
                d.next();
                (y, listed::DENY)
            }
        };
        while covering
            .last()
            .is_some_and(|(outer, _)| !outer.covers(&net))
        {
            covering.pop();
        }
        let bits = bits | covering.last().map_or(0, |&(_, outer)| outer);
        covering.push((net, bits));
        out.push((net, bits));
    }
    out
}

/// The bits `merged` gives `net`, worked out alone: for runtime changes of one entry.
pub(super) fn covering_bits<N: Prefix>(net: &N, allow: &[N], deny: &[N]) -> u32 {
    (0..=net.len()).fold(0, |bits, len| bits | own(&net.widened(len), allow, deny))
}

/// The entries of either list inside `net` (itself included), sorted, each once: those whose
/// bits a runtime change of `net` can change.
pub(super) fn inside<N: Prefix>(net: &N, allow: &[N], deny: &[N]) -> Vec<N> {
    let mut out: Vec<N> = Vec::new();
    for list in [allow, deny] {
        let start = list.partition_point(|entry| entry < net);
        out.extend(list[start..].iter().take_while(|entry| net.covers(entry)));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The word and mask of the `PREFILTER_V6` bit an IPv6 entry sets: that of its /48 if it is /48 or
/// longer, of its /32 if /32 to /47, none if shorter.
pub(super) fn prefilter_v6_bit(net: &Ipv6Net) -> Option<(u32, u64)> {
    let level = prefilter_v6::level_of(net.prefix_len())?;
    Some(prefilter_v6::place(&net.network().octets(), level))
}

/// The IPv6 prefilter of one slot: the bits the entries set.
pub(super) fn prefilter_v6_words<'a>(entries: impl IntoIterator<Item = &'a Ipv6Net>) -> Vec<u64> {
    let mut words = vec![0; prefilter_v6::WORDS as usize];
    for (word, mask) in entries.into_iter().filter_map(prefilter_v6_bit) {
        words[word as usize] |= mask;
    }
    words
}

/// The /16 of an IPv4 address, as the prefilter indexes it.
fn top16(addr: Ipv4Addr) -> usize {
    (u32::from(addr) >> 16) as usize
}

/// The /16s a change of `net` can change the prefilter nibble (and block) of.
pub(super) fn prefilter_span(net: &Ipv4Net) -> std::ops::RangeInclusive<usize> {
    top16(net.network())..=top16(net.broadcast())
}

/// The nibbles of the `count` prefixes of length `child_len` from `base` on: each starts as
/// `outer` (the bits of what covers them all) and takes the bits of the innermost entry of
/// `child_len` or shorter covering it; `DEEPER` marks those a longer entry lies inside. `entries`
/// are sorted, with their bits from `merged`: an entry comes before the entries inside it, so a
/// longer one overwrites the bits of the one it lies in with its own (which include them).
fn nibbles(
    entries: &[(Ipv4Net, u32)],
    base: u32,
    child_len: u8,
    count: usize,
    outer: u64,
) -> Vec<u64> {
    let shift = 32 - u32::from(child_len);
    let index = |addr: Ipv4Addr| ((u32::from(addr) - base) >> shift) as usize;
    let mut nibbles = vec![outer; count];
    for &(net, bits) in entries {
        if net.prefix_len() <= child_len {
            for nibble in &mut nibbles[index(net.network())..=index(net.broadcast())] {
                *nibble = (*nibble & prefilter::DEEPER) | u64::from(bits);
            }
        } else {
            nibbles[index(net.network())] |= prefilter::DEEPER;
        }
    }
    nibbles
}

/// The prefilter of one slot from `merged`'s entries: one nibble per /16, packed.
pub(super) fn prefilter_words(merged: &[(Ipv4Net, u32)]) -> Vec<u64> {
    pack(&nibbles(merged, 0, 16, 1 << 16, 0))
}

/// A /16 as a network.
fn slash16(top: usize) -> Ipv4Net {
    let network = Ipv4Addr::from((top as u32) << 16);
    Ipv4Net::new(network, 16).unwrap_or_default()
}

/// Where the entries strictly inside `region` (longer than it) stand in the sorted `entries`:
/// one run.
fn strictly_inside<T>(
    entries: &[T],
    region: &Ipv4Net,
    net: impl Fn(&T) -> Ipv4Net,
) -> std::ops::Range<usize> {
    let start = entries.partition_point(|entry| net(entry) <= *region);
    let len = entries[start..]
        .iter()
        .take_while(|entry| region.contains(&net(entry)))
        .count();
    start..start + len
}

/// The block of /24 nibbles of every /16 whose prefilter nibble says `DEEPER`, from `merged`'s
/// entries and that slot's prefilter words.
pub(super) fn blocks(merged: &[(Ipv4Net, u32)], prefilter: &[u64]) -> Vec<(u32, Block)> {
    let mut out = Vec::new();
    // The runs of the /16s follow one another: each search starts where the last one ended.
    let mut from = 0;
    for top in 0..1usize << 16 {
        let nibble = nibble_at(prefilter, top);
        if nibble & prefilter::DEEPER == 0 {
            continue;
        }
        let region = slash16(top);
        let run = strictly_inside(&merged[from..], &region, |&(net, _)| net);
        let inside = &merged[from + run.start..from + run.end];
        let base = u32::from(region.network());
        out.push((
            top as u32,
            pack_block(&nibbles(inside, base, 24, 256, nibble & prefilter::LISTED)),
        ));
        from += run.end;
    }
    out
}

/// The nibble at `index` of packed words.
pub(super) fn nibble_at(words: &[u64], index: usize) -> u64 {
    let (word, shift) = prefilter::place(index as u32);
    words.get(word as usize).map_or(0, |w| (w >> shift) & 0xf)
}

/// The nibble of one /16, worked out alone: for runtime changes.
fn prefilter_nibble(top: usize, allow: &[Ipv4Net], deny: &[Ipv4Net]) -> u64 {
    let region = slash16(top);
    let deeper = [allow, deny]
        .iter()
        .any(|list| !strictly_inside(list, &region, |&net| net).is_empty());
    u64::from(covering_bits(&region, allow, deny)) | if deeper { prefilter::DEEPER } else { 0 }
}

/// The nibble of one /16 and, where it says `DEEPER`, its block, worked out alone: for runtime
/// changes.
pub(super) fn nibble_and_block(
    top: usize,
    allow: &[Ipv4Net],
    deny: &[Ipv4Net],
) -> (u64, Option<Block>) {
    let nibble = prefilter_nibble(top, allow, deny);
    if nibble & prefilter::DEEPER == 0 {
        return (nibble, None);
    }
    let region = slash16(top);
    let entries: Vec<(Ipv4Net, u32)> = inside(&region, allow, deny)
        .into_iter()
        .filter(|net| net.prefix_len() > 16)
        .map(|net| (net, covering_bits(&net, allow, deny)))
        .collect();
    let base = u32::from(region.network());
    let block = nibbles(&entries, base, 24, 256, nibble & prefilter::LISTED);
    (nibble, Some(pack_block(&block)))
}

/// A block's 256 nibbles into its words.
fn pack_block(nibbles: &[u64]) -> Block {
    let mut block = [0; prefilter::BLOCK_WORDS];
    for (word, packed) in block.iter_mut().zip(pack(nibbles)) {
        *word = packed;
    }
    block
}

/// Nibbles (in order) into the words the kernel reads.
pub(super) fn pack(nibbles: &[u64]) -> Vec<u64> {
    nibbles
        .chunks(prefilter::PER_WORD as usize)
        .map(|chunk| {
            chunk.iter().enumerate().fold(0, |word, (i, &nibble)| {
                word | (nibble << (i as u32 * prefilter::BITS))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
