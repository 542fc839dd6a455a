//! Hash slots and the immutable slot table.
//!
//! A key's slot is `CRC16-XMODEM(key) % 16384`, where only the hash tag is
//! hashed if the key has one: the bytes between the first `{` and the first
//! `}` after it, when that span is non-empty.
//!
//! Invariant: a [`SlotTable`] is never mutated once built. The topology
//! refresher builds a whole new table and swaps it in atomically through
//! [`SharedSlotTable`] (an `ArcSwap`), so a request always routes against one
//! consistent snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::backend::Node;
use crate::error::ProxyError;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The slot of `key`, honouring hash tags.
///
/// ```
/// use slotproxy::cluster::slot::key_slot;
/// assert_eq!(key_slot(b"foo"), 12182);
/// // Keys with the same hash tag share a slot.
/// assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key)) % SLOTS as u16
}

/// The part of `key` that is hashed: the hash tag if there is a non-empty one, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// One contiguous range of slots and who serves it, as reported by CLUSTER SLOTS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    /// First slot, inclusive.
    pub start: u16,
    /// Last slot, inclusive.
    pub end: u16,
    /// Master address, `host:port`.
    pub master: String,
    /// Replica addresses, `host:port`.
    pub replicas: Vec<String>,
}

/// A master and its replicas.
#[derive(Debug)]
pub struct Shard {
    /// The master node.
    pub master: Arc<Node>,
    /// Its replicas.
    pub replicas: Vec<Arc<Node>>,
    /// The replicas read-only commands may go to under `cluster.read_from`
    /// (zone) and `cluster.max_replica_lag`, chosen when the table is built
    /// so that a request only checks reachability.
    pub readers: Vec<Arc<Node>>,
}

impl Shard {
    /// A reachable reader for a client on `lane`: the lane's own pick when
    /// it is reachable (one atomic load), else the next reachable one.
    pub fn reader(&self, lane: usize) -> Option<&Arc<Node>> {
        let n = self.readers.len();
        if n == 0 {
            return None;
        }
        let first = lane % n;
        (0..n)
            .map(|i| &self.readers[(first + i) % n])
            .find(|r| r.is_reachable())
    }
}

/// Marker for a slot no shard serves.
const UNASSIGNED: u16 = u16::MAX;

/// An immutable map from every slot to the shard serving it.
#[derive(Debug)]
pub struct SlotTable {
    version: u64,
    slots: Box<[u16]>,
    shards: Vec<Shard>,
    /// Before the first discovery: why the last attempt failed.
    discovery_error: Option<Arc<str>>,
}

impl SlotTable {
    /// A table with no slot assigned (before the first discovery).
    pub fn empty() -> SlotTable {
        SlotTable {
            version: 0,
            slots: vec![UNASSIGNED; SLOTS].into_boxed_slice(),
            shards: Vec::new(),
            discovery_error: None,
        }
    }

    /// An empty table recording why discovery failed (swapped in while the
    /// cluster has never been discovered, so clients learn the reason).
    pub fn undiscovered(error: &str) -> SlotTable {
        SlotTable {
            discovery_error: Some(error.into()),
            ..SlotTable::empty()
        }
    }

    /// The error for a request that arrives before the first discovery.
    pub fn undiscovered_error(&self) -> ProxyError {
        ProxyError::Undiscovered(self.discovery_error.clone())
    }

    /// Builds a table from CLUSTER SLOTS ranges; `node` maps an address to
    /// its (shared, reused across tables) backend handle, and `reads` says
    /// whether a replica's address may serve reads.
    pub fn build(
        version: u64,
        ranges: &[SlotRange],
        mut node: impl FnMut(&str) -> Arc<Node>,
        reads: impl Fn(&str) -> bool,
    ) -> SlotTable {
        let mut slots = vec![UNASSIGNED; SLOTS].into_boxed_slice();
        let mut shards: Vec<Shard> = Vec::new();
        let mut by_master: BTreeMap<&str, u16> = BTreeMap::new();
        for r in ranges {
            let idx = *by_master.entry(r.master.as_str()).or_insert_with(|| {
                let replicas: Vec<Arc<Node>> = r.replicas.iter().map(|a| node(a)).collect();
                shards.push(Shard {
                    master: node(&r.master),
                    readers: replicas
                        .iter()
                        .filter(|n| reads(n.addr()))
                        .cloned()
                        .collect(),
                    replicas,
                });
                (shards.len() - 1) as u16
            });
            for s in r.start..=r.end.min(SLOTS as u16 - 1) {
                slots[s as usize] = idx;
            }
        }
        SlotTable {
            version,
            slots,
            shards,
            discovery_error: None,
        }
    }

    /// Monotonic version, bumped on every swap.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The shard serving `slot`, if any.
    pub fn shard(&self, slot: u16) -> Option<&Shard> {
        self.shards.get(self.shard_index(slot)?)
    }

    /// The master serving `slot`, if any.
    pub fn master(&self, slot: u16) -> Option<&Arc<Node>> {
        self.shard(slot).map(|s| &s.master)
    }

    /// All shards (one per master).
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Index (into [`SlotTable::shards`]) of the shard serving `slot`.
    pub fn shard_index(&self, slot: u16) -> Option<usize> {
        match self.slots.get(slot as usize) {
            Some(&i) if i != UNASSIGNED => Some(i as usize),
            _ => None,
        }
    }

    /// Each shard's lowest slot with the shard's index, ordered by slot.
    pub fn first_slots(&self) -> Vec<(u16, usize)> {
        let mut seen = vec![false; self.shards.len()];
        let mut out = Vec::with_capacity(self.shards.len());
        for (slot, &i) in self.slots.iter().enumerate() {
            if i != UNASSIGNED && !seen[i as usize] {
                seen[i as usize] = true;
                out.push((slot as u16, i as usize));
            }
        }
        out
    }

    /// The slot ranges each shard serves, as `(start, end)` inclusive pairs.
    pub fn ranges(&self) -> Vec<Vec<(u16, u16)>> {
        let mut out = vec![Vec::new(); self.shards.len()];
        let mut slot = 0usize;
        while slot < SLOTS {
            let i = self.slots[slot];
            let start = slot;
            while slot < SLOTS && self.slots[slot] == i {
                slot += 1;
            }
            if i != UNASSIGNED {
                out[i as usize].push((start as u16, (slot - 1) as u16));
            }
        }
        out
    }

    /// Number of slots each shard serves, in shard order.
    pub fn slot_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.shards.len()];
        for &i in self.slots.iter().filter(|&&i| i != UNASSIGNED) {
            counts[i as usize] += 1;
        }
        counts
    }

    /// Number of slots whose master is reachable.
    pub fn slots_ok(&self) -> usize {
        self.shards
            .iter()
            .zip(self.slot_counts())
            .filter(|(s, _)| s.master.is_reachable())
            .map(|(_, n)| n)
            .sum()
    }

    /// Number of slots that have a master.
    pub fn assigned_slots(&self) -> usize {
        self.slots.iter().filter(|&&i| i != UNASSIGNED).count()
    }
}

/// The slot table shared by every session: readers load a snapshot, the
/// topology refresher stores a new one.
pub type SharedSlotTable = Arc<ArcSwap<SlotTable>>;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_slots() {
        // Values from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    }

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_tag(b"}{x}"), b"x");
    }

    proptest! {
        #[test]
        fn tagged_keys_share_a_slot(tag in "[a-z0-9]{1,12}", a in "[^{}]{0,8}", b in "[^{}]{0,8}") {
            let k1 = format!("{a}{{{tag}}}x");
            let k2 = format!("{b}{{{tag}}}yy");
            prop_assert_eq!(key_slot(k1.as_bytes()), key_slot(k2.as_bytes()));
            prop_assert_eq!(key_slot(k1.as_bytes()), key_slot(tag.as_bytes()));
        }

        #[test]
        fn slot_is_in_range(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert!((key_slot(&key) as usize) < SLOTS);
        }
    }
}
