//! Writing the policy into the maps, generation by generation.
//!
//! A new generation's settings, ports and list entries are written beside the live ones, then one
//! write to `ACTIVE` switches every CPU over, and only then is the old generation removed. A packet
//! reads `ACTIVE` once, so it sees the old policy or the new, never a mix. Single runtime entries
//! (`port25d deny add`) go straight into the live generation, with the entries, nibbles and blocks
//! they change, in an order where each source sees its old verdict or its new one.
//! docs/ARCHITECTURE.md, § Generations and § Lists; the kernel's form of a config is `settings`.

use std::time::Duration;

use aya::maps::{LpmTrie, MapData, lpm_trie::Key};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use port25_common::{
    BlockKey, GENERATION_BITS, PORT_WORDS, SLOTS, Settings, V4Key, V6Key, egress::EgressSettings,
    maps, port_bit, prefilter, prefilter_v6,
};

use super::{
    Block, Datapath, Error, lists,
    settings::{egress_settings_of, settings_of},
};
use crate::{
    config::{CidrSet, Config},
    model::ListKind,
};

/// How long packets already in flight may keep reading the generation being retired. XDP programs
/// run to completion in microseconds; this leaves a wide margin before their entries are removed.
pub(super) const RETIRE_GRACE: Duration = Duration::from_millis(20);

/// Entries written per progress line when loading large lists.
const PROGRESS_EVERY: usize = 200_000;

/// The entries of the live generation, and its prefilter slot as written.
#[derive(Clone, Debug, Default)]
pub(super) struct LiveLists {
    pub allow: CidrSet,
    pub deny: CidrSet,
    pub smart_hosts: CidrSet,
    /// The live slot of `PREFILTER_V4` (empty: all zero, nothing listed).
    pub prefilter: Vec<u64>,
}

impl LiveLists {
    pub(super) fn list_mut(&mut self, list: ListKind) -> &mut CidrSet {
        match list {
            ListKind::Allow => &mut self.allow,
            ListKind::Deny => &mut self.deny,
        }
    }
}

/// What a runtime change of one entry writes into the live generation (or a shadow's).
#[derive(Default)]
pub(super) struct LiveWrites {
    /// Trie entries with their new bits; `None`: the entry is in no list any more.
    v4: Vec<(Ipv4Net, Option<u32>)>,
    v6: Vec<(Ipv6Net, Option<u32>)>,
    /// Prefilter words of the live slot that changed: (index in the slot, word).
    prefilter: Vec<(u32, u64)>,
    /// The blocks of the /16s the change spans: `None` where a /16 needs none any more.
    blocks: Vec<(u32, Option<Block>)>,
    /// The `PREFILTER_V6` bit to set in the live slot (word, mask): that of an entry that came
    /// in. Bits are never cleared in place (§ Lists).
    prefilter_v6: Option<(u32, u64)>,
}

impl Datapath {
    /// Makes `config`'s policy (with `allow` and `deny` as its lists: the config's, or those plus
    /// runtime and watched-directory entries) live, atomically. On error the previous policy stays live
    /// and whatever was written for the new generation is removed again.
    pub fn apply_policy(
        &mut self,
        config: &Config,
        allow: CidrSet,
        deny: CidrSet,
    ) -> Result<(), Error> {
        if self.live.is_none() {
            // Adopted maps: whatever a killed daemon left half-written is swept first, and a
            // shadow it judged by goes (a restart drops it: § Shadow policy).
            self.array::<u32>(maps::SHADOW)?
                .set(0, 0, 0)
                .map_err(Error::map(maps::SHADOW))?;
            self.sweep_except(self.generation)?;
        }
        let next = self.next_generation();
        let smart_hosts = &config.egress.smart_hosts;
        let prefilter = match self.write_generation(next, config, &allow, &deny) {
            Ok(prefilter) => prefilter,
            Err(err) => {
                self.remove_lists(next, &allow, &deny);
                self.remove_blocks(|generation| generation == next);
                self.remove_smart_hosts(next, smart_hosts);
                return Err(err);
            }
        };
        self.array::<u32>(maps::ACTIVE)?
            .set(0, next, 0)
            .map_err(Error::map(maps::ACTIVE))?;
        let retired = self.generation;
        self.generation = next;
        std::thread::sleep(RETIRE_GRACE);
        // The live lists are these very sets, not copies: a million entries are tens of MiB.
        match self.live.replace(LiveLists {
            allow,
            deny,
            smart_hosts: smart_hosts.clone(),
            prefilter,
        }) {
            Some(old) => {
                self.remove_lists(retired, &old.allow, &old.deny);
                self.remove_blocks(|generation| generation == retired);
                self.remove_smart_hosts(retired, &old.smart_hosts);
            }
            None => self.sweep_except(next)?,
        }
        return_freed_memory();
        Ok(())
    }

    /// Adds one entry to the live generation of a list (runtime lists).
    pub fn insert_live(&mut self, list: ListKind, net: IpNet) -> Result<(), Error> {
        let live = self.live.get_or_insert_with(LiveLists::default);
        live.list_mut(list).insert(net);
        self.write_live(&net)
    }

    /// Removes one entry from the live generation of a list (runtime lists).
    pub fn remove_live(&mut self, list: ListKind, net: IpNet) -> Result<(), Error> {
        let live = self.live.get_or_insert_with(LiveLists::default);
        live.list_mut(list).remove(&net);
        self.write_live(&net)
    }

    /// After a runtime change of `net`: the new bits of it and of every entry inside it, and the
    /// prefilter nibbles of the /16s it spans, written into the live generation.
    fn write_live(&mut self, net: &IpNet) -> Result<(), Error> {
        let live = self.live.get_or_insert_with(LiveLists::default);
        let writes = live_writes(live, net);
        self.write_in_place(self.generation, &writes)
    }

    /// Writes what a change of one entry changes into `generation`, in place.
    pub(super) fn write_in_place(
        &mut self,
        generation: u32,
        writes: &LiveWrites,
    ) -> Result<(), Error> {
        // What a packet is sent to must be there first: trie entries, then the blocks, then the
        // prefilter nibbles; what nothing points at any more goes last.
        let (puts, removals): (Vec<_>, Vec<_>) =
            writes.v4.iter().partition(|(_, bits)| bits.is_some());
        let mut trie = self.trie_v4(maps::LISTS_V4)?;
        for (net, bits) in &puts {
            write_entry(&mut trie, &v4_key(generation, net), *bits)
                .map_err(Error::map(maps::LISTS_V4))?;
        }
        for name in V6_TRIES {
            let mut trie = self.trie_v6(name)?;
            for (net, bits) in writes.v6.iter().filter(|(net, _)| v6_trie(net) == name) {
                write_entry(&mut trie, &v6_key(generation, net), *bits)
                    .map_err(Error::map(name))?;
            }
        }
        if let Some((word, mask)) = writes.prefilter_v6 {
            let index = (generation % SLOTS) * prefilter_v6::WORDS + word;
            let mut words = self.array::<u64>(maps::PREFILTER_V6)?;
            let bits = words
                .get(&index, 0)
                .map_err(Error::map(maps::PREFILTER_V6))?;
            words
                .set(index, bits | mask, 0)
                .map_err(Error::map(maps::PREFILTER_V6))?;
        }
        let mut blocks = self.blocks_v4()?;
        for (top16, block) in &writes.blocks {
            if let Some(block) = block {
                let key = BlockKey {
                    generation,
                    top16: *top16,
                };
                blocks
                    .insert(key, block, 0)
                    .map_err(Error::map(maps::BLOCKS_V4))?;
            }
        }
        let base = (generation % SLOTS) * prefilter::WORDS;
        let mut words = self.array::<u64>(maps::PREFILTER_V4)?;
        for &(index, word) in &writes.prefilter {
            words
                .set(base + index, word, 0)
                .map_err(Error::map(maps::PREFILTER_V4))?;
        }
        let mut blocks = self.blocks_v4()?;
        for (top16, block) in &writes.blocks {
            if block.is_none() {
                let key = BlockKey {
                    generation,
                    top16: *top16,
                };
                already_gone_is_fine(blocks.remove(&key)).map_err(Error::map(maps::BLOCKS_V4))?;
            }
        }
        let mut trie = self.trie_v4(maps::LISTS_V4)?;
        for (net, bits) in &removals {
            write_entry(&mut trie, &v4_key(generation, net), *bits)
                .map_err(Error::map(maps::LISTS_V4))?;
        }
        Ok(())
    }

    /// Writes everything of `generation` but the `ACTIVE` switch; returns its prefilter slot.
    pub(super) fn write_generation(
        &mut self,
        generation: u32,
        config: &Config,
        allow: &CidrSet,
        deny: &CidrSet,
    ) -> Result<Vec<u64>, Error> {
        let slot = generation % SLOTS;
        self.array::<Settings>(maps::SETTINGS)?
            .set(slot, settings_of(config), 0)
            .map_err(Error::map(maps::SETTINGS))?;

        let mut words = vec![0u32; PORT_WORDS as usize];
        for &port in &config.ports {
            let (word, mask) = port_bit(port);
            words[word as usize] |= mask;
        }
        let mut ports = self.array::<u32>(maps::PORTS)?;
        for (i, word) in (0u32..).zip(words) {
            ports
                .set(slot * PORT_WORDS + i, word, 0)
                .map_err(Error::map(maps::PORTS))?;
        }

        // One family at a time, so that only one merged list is held at once.
        let total = allow.len() + deny.len();
        let progress = |written: usize| {
            if written.is_multiple_of(PROGRESS_EVERY) {
                tracing::info!("writing lists into the kernel: {written} of {total} entries");
            }
        };
        let v4 = lists::merged(&allow.v4, &deny.v4);
        let mut trie = self.trie_v4(maps::LISTS_V4)?;
        for (i, (net, bits)) in v4.iter().enumerate() {
            trie.insert(&v4_key(generation, net), bits, 0)
                .map_err(Error::map(maps::LISTS_V4))?;
            progress(i + 1);
        }
        let prefilter = lists::prefilter_words(&v4);
        let mut blocks = self.blocks_v4()?;
        for (top16, block) in lists::blocks(&v4, &prefilter) {
            blocks
                .insert(BlockKey { generation, top16 }, block, 0)
                .map_err(Error::map(maps::BLOCKS_V4))?;
        }
        let mut written = v4.len();
        drop(v4);
        let v6 = lists::merged(&allow.v6, &deny.v6);
        for name in V6_TRIES {
            let mut trie = self.trie_v6(name)?;
            for (net, bits) in v6.iter().filter(|(net, _)| v6_trie(net) == name) {
                trie.insert(&v6_key(generation, net), bits, 0)
                    .map_err(Error::map(name))?;
                written += 1;
                progress(written);
            }
        }
        let words = lists::prefilter_v6_words(v6.iter().map(|(net, _)| net));
        drop(v6);
        let mut array = self.array::<u64>(maps::PREFILTER_V6)?;
        for (i, &word) in (0u32..).zip(&words) {
            array
                .set(slot * prefilter_v6::WORDS + i, word, 0)
                .map_err(Error::map(maps::PREFILTER_V6))?;
        }
        let mut array = self.array::<u64>(maps::PREFILTER_V4)?;
        for (i, &word) in (0u32..).zip(&prefilter) {
            array
                .set(slot * prefilter::WORDS + i, word, 0)
                .map_err(Error::map(maps::PREFILTER_V4))?;
        }

        self.array::<EgressSettings>(maps::EGRESS)?
            .set(slot, egress_settings_of(config), 0)
            .map_err(Error::map(maps::EGRESS))?;
        let mut trie = self.trie_v4(maps::SMART_V4)?;
        for net in config.egress.smart_hosts.v4.iter() {
            trie.insert(&v4_key(generation, net), 1, 0)
                .map_err(Error::map(maps::SMART_V4))?;
        }
        let mut trie = self.trie_v6(maps::SMART_V6)?;
        for net in config.egress.smart_hosts.v6.iter() {
            trie.insert(&v6_key(generation, net), 1, 0)
                .map_err(Error::map(maps::SMART_V6))?;
        }
        Ok(prefilter)
    }

    /// Best effort: removes the entries of both lists from one generation of the tries.
    pub(super) fn remove_lists(&mut self, generation: u32, allow: &CidrSet, deny: &CidrSet) {
        for set in [allow, deny] {
            self.remove_entries(generation, maps::LISTS_V4, maps::LISTS_V6, set);
        }
        // remove_entries took every IPv6 entry from LISTS_V6 (absent ones are fine); the shorter
        // ones are in the other two.
        for name in &V6_TRIES[1..] {
            let Ok(mut trie) = self.trie_v6(name) else {
                continue;
            };
            for net in allow.v6.iter().chain(deny.v6.iter()) {
                if v6_trie(net) == *name {
                    let _ = write_entry(&mut trie, &v6_key(generation, net), None);
                }
            }
        }
    }

    pub(super) fn remove_smart_hosts(&mut self, generation: u32, smart_hosts: &CidrSet) {
        self.remove_entries(generation, maps::SMART_V4, maps::SMART_V6, smart_hosts);
    }

    /// Best effort: an entry that is already gone is fine.
    fn remove_entries(
        &mut self,
        generation: u32,
        v4: &'static str,
        v6: &'static str,
        set: &CidrSet,
    ) {
        let result = (|| -> Result<(), Error> {
            let mut trie = self.trie_v4(v4)?;
            for net in set.v4.iter() {
                write_entry(&mut trie, &v4_key(generation, net), None).map_err(Error::map(v4))?;
            }
            let mut trie = self.trie_v6(v6)?;
            for net in set.v6.iter() {
                write_entry(&mut trie, &v6_key(generation, net), None).map_err(Error::map(v6))?;
            }
            Ok(())
        })();
        if let Err(err) = result {
            tracing::warn!("removing the entries of generation {generation}: {err:#}");
        }
    }

    /// Best effort: removes the blocks of the generations `which` picks; returns how many.
    pub(super) fn remove_blocks(&mut self, which: impl Fn(u32) -> bool) -> usize {
        let Ok(mut blocks) = self.blocks_v4() else {
            return 0;
        };
        // Collected first: deleting while walking with get_next_key would restart the walk.
        let stale: Vec<BlockKey> = blocks
            .keys()
            .filter_map(Result::ok)
            .filter(|key| which(key.generation))
            .collect();
        for key in &stale {
            let _ = blocks.remove(key);
        }
        stale.len()
    }

    /// Removes every list entry of any generation but `keep`: after adopting maps, nothing else
    /// is known about what a killed daemon left.
    fn sweep_except(&mut self, keep: u32) -> Result<(), Error> {
        let mut swept = self.remove_blocks(|generation| generation != keep);
        for name in [maps::LISTS_V4, maps::SMART_V4] {
            swept += sweep(&mut self.trie_v4(name)?, keep);
        }
        for name in V6_TRIES.into_iter().chain([maps::SMART_V6]) {
            swept += sweep(&mut self.trie_v6(name)?, keep);
        }
        if swept > 0 {
            tracing::info!("removed {swept} list entries of earlier generations");
        }
        Ok(())
    }
}

/// What a runtime change of `net` (already made in `live`'s lists) writes.
pub(super) fn live_writes(live: &mut LiveLists, net: &IpNet) -> LiveWrites {
    let mut writes = LiveWrites::default();
    match net {
        IpNet::V4(net) => {
            writes.v4 = entry_writes(net, &live.allow.v4, &live.deny.v4);
            if live.prefilter.len() != prefilter::WORDS as usize {
                live.prefilter = vec![0; prefilter::WORDS as usize];
            }
            for top in lists::prefilter_span(net) {
                let (nibble, block) = lists::nibble_and_block(top, &live.allow.v4, &live.deny.v4);
                writes.blocks.push((top as u32, block));
                let (word, shift) = prefilter::place(top as u32);
                let old = live.prefilter[word as usize];
                let new = (old & !(0xf << shift)) | (nibble << shift);
                if new != old {
                    live.prefilter[word as usize] = new;
                    match writes.prefilter.last_mut() {
                        Some((index, last)) if *index == word => *last = new,
                        _ => writes.prefilter.push((word, new)),
                    }
                }
            }
        }
        IpNet::V6(net) => {
            let (allow, deny) = (&live.allow.v6, &live.deny.v6);
            writes.v6 = entry_writes(net, allow, deny);
            if lists::own(net, allow, deny) != 0 {
                writes.prefilter_v6 = lists::prefilter_v6_bit(net);
            }
        }
    }
    writes
}

/// The IPv6 list tries, longest entries first: /48 and longer, /32 to /47, shorter (§ Lists).
const V6_TRIES: [&str; 3] = [
    maps::LISTS_V6,
    maps::LISTS_V6_32_TO_47,
    maps::LISTS_V6_UNDER_32,
];

/// The IPv6 list trie an entry lies in: by the `PREFILTER_V6` level whose bit it sets.
fn v6_trie(net: &Ipv6Net) -> &'static str {
    match prefilter_v6::level_of(net.prefix_len()) {
        Some(0) => maps::LISTS_V6,
        Some(_) => maps::LISTS_V6_32_TO_47,
        None => maps::LISTS_V6_UNDER_32,
    }
}

/// The trie writes after a change of `net`: it leaves the trie if in no list any more, and it and
/// every entry inside it get their bits again.
fn entry_writes<N: lists::Prefix>(net: &N, allow: &[N], deny: &[N]) -> Vec<(N, Option<u32>)> {
    let mut writes = Vec::new();
    if lists::own(net, allow, deny) == 0 {
        writes.push((*net, None));
    }
    for inner in lists::inside(net, allow, deny) {
        writes.push((inner, Some(lists::covering_bits(&inner, allow, deny))));
    }
    writes
}

/// A removal of what is not there is what was asked (aya says so as `KeyNotFound` for tries and
/// as the syscall's ENOENT for hash maps).
fn already_gone_is_fine(
    result: Result<(), aya::maps::MapError>,
) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(err))
            if err.io_error.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Puts `bits` at `key`, or removes it (already gone is what was asked).
fn write_entry<K: aya::Pod>(
    trie: &mut LpmTrie<&mut MapData, K, u32>,
    key: &Key<K>,
    bits: Option<u32>,
) -> Result<(), aya::maps::MapError> {
    match bits {
        Some(bits) => trie.insert(key, bits, 0),
        None => already_gone_is_fine(trie.remove(key)),
    }
}

/// Keys that carry their policy generation.
trait Generational: aya::Pod {
    fn generation(&self) -> u32;
}

impl Generational for V4Key {
    fn generation(&self) -> u32 {
        self.generation
    }
}

impl Generational for V6Key {
    fn generation(&self) -> u32 {
        self.generation
    }
}

/// Removes the entries of every generation but `keep` from one trie; returns how many.
fn sweep<K: Generational>(trie: &mut LpmTrie<&mut MapData, K, u32>, keep: u32) -> usize {
    // Collected first: deleting while walking with get_next_key would restart the walk.
    let stale: Vec<_> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|key| key.data().generation() != keep)
        .collect();
    for key in &stale {
        let _ = trie.remove(key);
    }
    stale.len()
}

fn v4_key(generation: u32, net: &Ipv4Net) -> Key<V4Key> {
    let addr = net.network().octets();
    Key::new(prefix_bits(net.prefix_len()), V4Key { generation, addr })
}

fn v6_key(generation: u32, net: &Ipv6Net) -> Key<V6Key> {
    let addr = net.network().octets();
    Key::new(prefix_bits(net.prefix_len()), V6Key { generation, addr })
}

/// A list key's prefix length: the generation's bits, then the CIDR's (§ Generations).
fn prefix_bits(cidr_prefix: u8) -> u32 {
    GENERATION_BITS + u32::from(cidr_prefix)
}

/// Hands the heap memory that writing a generation used and freed (the merged lists of a million
/// entries are tens of MiB) back to the system: glibc keeps it otherwise, and the daemon's RSS
/// would stay at its peak.
fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}
