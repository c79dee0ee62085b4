//! Which shard a node is in, and which conductor should own each shard. Pure functions.
//!
//! A node's shard is a stable hash of its name (FNV-1a, 64 bit) modulo the shard count; it never
//! depends on the set of conductors, so a node stays in its shard for the life of the cluster.
//!
//! The target owner of each shard comes from rendezvous hashing with bounded load: shards are
//! taken in order, and each goes to the live member with the highest `hash(shard, member)` that
//! still has room. Room is ⌈S/n⌉ for the first `S mod n` members to fill up and ⌊S/n⌋ for the
//! rest, so every member ends with ⌊S/n⌋ or ⌈S/n⌉ shards. Because each shard prefers the same
//! members whatever else changes, adding or removing one member moves about S/n shards.

use std::collections::{BTreeMap, HashMap};

/// A shard number, `0..shards`.
pub type ShardId = u32;

/// FNV-1a, 64 bit: small, stable across versions and platforms (never change it: it places nodes).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shard of node `name` among `shards` shards.
pub fn shard_of(name: &str, shards: u32) -> ShardId {
    (fnv1a(name.as_bytes()) % u64::from(shards.max(1))) as ShardId
}

/// Mixes two values into a well-spread 64-bit score (splitmix64 finaliser).
fn score(shard: ShardId, member: u64) -> u64 {
    let mut z = member ^ (u64::from(shard).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The target owner of every shard for the given live members (by id). Empty members: empty map.
pub fn target(members: &[String], shards: u32) -> BTreeMap<ShardId, String> {
    let mut out = BTreeMap::new();
    if members.is_empty() {
        return out;
    }
    let mut ids: Vec<&String> = members.iter().collect();
    ids.sort();
    ids.dedup();
    let n = ids.len() as u32;
    let (floor, extra) = (shards / n, shards % n);
    let hashes: Vec<u64> = ids.iter().map(|m| fnv1a(m.as_bytes())).collect();
    let mut load: HashMap<usize, u32> = HashMap::new();
    let mut at_ceiling = 0;
    for shard in 0..shards {
        let mut ranked: Vec<usize> = (0..ids.len()).collect();
        ranked.sort_by_key(|&i| std::cmp::Reverse((score(shard, hashes[i]), i)));
        let chosen = ranked.into_iter().find(|i| {
            let l = load.get(i).copied().unwrap_or(0);
            let cap = if at_ceiling < extra { floor + 1 } else { floor };
            l < cap
        });
        // There is always room: total capacity equals the number of shards.
        let Some(i) = chosen else { continue };
        let l = load.entry(i).or_insert(0);
        *l += 1;
        if *l == floor + 1 {
            at_ceiling += 1;
        }
        out.insert(shard, ids[i].clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("conductor-{i}")).collect()
    }

    fn loads(t: &BTreeMap<ShardId, String>) -> HashMap<String, u32> {
        let mut l = HashMap::new();
        for m in t.values() {
            *l.entry(m.clone()).or_insert(0) += 1;
        }
        l
    }

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("node01", 64), shard_of("node01", 64));
        assert_eq!(
            fnv1a(b""),
            0xcbf2_9ce4_8422_2325,
            "the hash must never change"
        );
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut counts = vec![0u32; 64];
        for i in 0..10_000 {
            counts[shard_of(&format!("node{i:05}"), 64) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (100..=220).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn every_member_gets_floor_or_ceiling() {
        for shards in [1, 7, 64, 100, 256] {
            for n in 1..=9 {
                let t = target(&members(n), shards);
                assert_eq!(t.len(), shards as usize, "every shard has an owner");
                let l = loads(&t);
                let (lo, hi) = (shards / n as u32, shards.div_ceil(n as u32));
                for m in members(n) {
                    let got = l.get(&m).copied().unwrap_or(0);
                    assert!(got == lo || got == hi, "S={shards} n={n} {m}: {got}");
                }
            }
        }
    }

    #[test]
    fn adding_or_removing_one_member_moves_about_s_over_n() {
        let shards = 64;
        for n in 2..=8usize {
            let before = target(&members(n), shards);
            let after = target(&members(n + 1), shards);
            let moved = before.iter().filter(|(s, m)| after[s] != **m).count();
            let ideal = shards as usize / (n + 1);
            assert!(
                moved <= ideal * 2 + 2,
                "n={n}: moved {moved}, ideal {ideal}"
            );
            let back = target(&members(n), shards);
            assert_eq!(before, back, "deterministic");
        }
    }

    #[test]
    fn order_and_duplicates_do_not_matter() {
        let mut m = members(4);
        let a = target(&m, 64);
        m.reverse();
        m.push("conductor-0".into());
        assert_eq!(a, target(&m, 64));
        assert!(target(&[], 64).is_empty());
    }
}
