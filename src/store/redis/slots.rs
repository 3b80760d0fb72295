//! Redis Cluster hash slots, for keys that must live beside another key.
//!
//! The "guards intact" marker must be read by the same script that claims
//! a user (so no join slips in between), and on a Cluster a script only
//! reaches keys of one slot. So there is one marker per slot, each under a
//! hash tag chosen to fall in that slot: [`tag_for_slot`] answers, for the
//! slot of a user's `{tenant|user}` tag, a tag of the same slot.

use std::sync::LazyLock;

/// Slots of a Redis Cluster.
pub const SLOTS: usize = 16_384;

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a hash tag's content (what sits between `{` and `}`).
pub fn slot_of(tag: &str) -> usize {
    usize::from(crc16(tag.as_bytes())) % SLOTS
}

/// For each slot, a short tag that hashes to it: `m0`, `m1`, … until every
/// slot has one (about 160k tries, once per process).
static TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut tags = vec![String::new(); SLOTS];
    let mut missing = SLOTS;
    let mut n: u64 = 0;
    while missing > 0 {
        let tag = format!("m{n}");
        let slot = slot_of(&tag);
        if tags[slot].is_empty() {
            tags[slot] = tag;
            missing -= 1;
        }
        n += 1;
    }
    tags
});

/// A tag whose keys live in the same slot as keys tagged `{tag}`.
pub fn tag_for_slot(slot: usize) -> &'static str {
    &TAGS[slot % SLOTS]
}

/// Every slot's tag.
pub fn all_tags() -> &'static [String] {
    &TAGS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_the_one_redis_cluster_uses() {
        // The check value of CRC16/XMODEM, and slots from the Redis Cluster
        // specification's examples.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of("foo"), 12_182);
        assert_eq!(slot_of("bar"), 5_061);
    }

    #[test]
    fn every_slot_has_a_tag_of_its_own_slot() {
        assert_eq!(all_tags().len(), SLOTS);
        for slot in [0, 1, 5_061, 12_182, SLOTS - 1] {
            assert_eq!(slot_of(tag_for_slot(slot)), slot);
        }
        assert!(all_tags().iter().enumerate().all(|(s, t)| slot_of(t) == s));
    }
}
