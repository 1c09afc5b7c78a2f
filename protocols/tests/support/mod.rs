//! What the seeded randomized tests share.
// Each test file is its own crate and uses only part of this.
#![allow(dead_code)]

/// SplitMix64: small, fast, good enough to drive tests. Fixed seeds, so a
/// failure names the seed that reproduces it.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n
    }

    pub(crate) fn chance(&mut self, one_in: u64) -> bool {
        self.next() % one_in == 0
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `len` random bytes.
    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Mutates `wire` one to three times: a flipped bit, an inserted byte, a
/// removed byte, a byte set to one of `interesting` (a protocol's marker
/// and length values), or a truncation.
pub(crate) fn mutate(rng: &mut Rng, wire: &mut Vec<u8>, interesting: &[u8]) {
    for _ in 0..rng.range(1, 4) {
        match rng.below(5) {
            0 if !wire.is_empty() => {
                let at = rng.below(wire.len());
                wire[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(wire.len() + 1);
                wire.insert(at, rng.next() as u8);
            }
            2 if !wire.is_empty() => {
                let at = rng.below(wire.len());
                wire.remove(at);
            }
            3 if !wire.is_empty() => {
                let at = rng.below(wire.len());
                wire[at] = *rng.pick(interesting);
            }
            _ => {
                let len = rng.below(wire.len() + 1);
                wire.truncate(len);
            }
        }
    }
}
