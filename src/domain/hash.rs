//! FNV-1a, the one fast non-cryptographic hash of the warehouse: key hashes
//! at ingest, record fingerprints and match keys in identity resolution,
//! the rules fingerprint. Values are stored in the lake (match keys,
//! fingerprints), so the function never changes.

use std::hash::Hasher;

/// FNV-1a over 64 bits, as a [`Hasher`].
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl Fnv64 {
    /// Hash one part of a sequence: its bytes and a unit separator (0x1f),
    /// so that `["ab", "c"]` and `["a", "bc"]` differ.
    pub fn part(&mut self, bytes: &[u8]) {
        self.write(bytes);
        self.write(&[0x1f]);
    }
}

/// The hash of a sequence of strings, each a [`Fnv64::part`].
pub fn fnv(parts: &[&str]) -> u64 {
    let mut h = Fnv64::default();
    for p in parts {
        h.part(p.as_bytes());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_separated_parts() {
        // The FNV-1a test vector for "a".
        let mut h = Fnv64::default();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv(&["ab", "c"]), fnv(&["a", "bc"]));
        assert_eq!(fnv(&[]), 0xcbf2_9ce4_8422_2325);
    }
}
