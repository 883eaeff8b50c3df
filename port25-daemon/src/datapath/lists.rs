//! The allow and deny lists in the form the kernel reads them (docs/ARCHITECTURE.md, § Lists): one
//! trie per family whose every entry carries the `listed` bits of itself and of each shorter entry
//! covering it, so that the longest match alone gives the verdict; and the IPv4 /16 prefilter,
//! which answers without the trie wherever no entry longer than /16 lies.

use ipnet::{Ipv4Net, Ipv6Net};
use port25_common::{listed, prefilter};

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
fn own<N: Prefix>(net: &N, allow: &[N], deny: &[N]) -> u32 {
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

/// The /16 of an IPv4 address, as the prefilter indexes it.
fn top16(addr: std::net::Ipv4Addr) -> usize {
    (u32::from(addr) >> 16) as usize
}

/// The /16s a change of `net` can change the prefilter nibble of.
pub(super) fn prefilter_span(net: &Ipv4Net) -> std::ops::RangeInclusive<usize> {
    top16(net.network())..=top16(net.broadcast())
}

/// The prefilter of one slot from `merged`'s entries: one nibble per /16, packed.
pub(super) fn prefilter_words(merged: &[(Ipv4Net, u32)]) -> Vec<u64> {
    let mut nibbles = vec![0u64; 1 << 16];
    // In sorted order an entry comes before the entries inside it, so a longer entry of /16 or
    // shorter overwrites the bits of the one it lies in with its own (which include them).
    for &(net, bits) in merged {
        if net.prefix_len() <= 16 {
            for nibble in &mut nibbles[prefilter_span(&net)] {
                *nibble = (*nibble & prefilter::DEEPER) | u64::from(bits);
            }
        } else {
            nibbles[top16(net.network())] |= prefilter::DEEPER;
        }
    }
    pack(&nibbles)
}

/// The nibble of one /16, worked out alone: for runtime changes.
pub(super) fn prefilter_nibble(top: usize, allow: &[Ipv4Net], deny: &[Ipv4Net]) -> u64 {
    let network = std::net::Ipv4Addr::from((top as u32) << 16);
    let Ok(slash16) = Ipv4Net::new(network, 16) else {
        return prefilter::DEEPER;
    };
    let deeper = [allow, deny].iter().any(|list| {
        // The first entry after the /16 itself and the entries it lies in.
        let start = list.partition_point(|entry| entry <= &slash16);
        list.get(start).is_some_and(|entry| slash16.contains(entry))
    });
    u64::from(covering_bits(&slash16, allow, deny)) | if deeper { prefilter::DEEPER } else { 0 }
}

/// Nibbles (one per /16, in order) into the words the kernel reads.
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
