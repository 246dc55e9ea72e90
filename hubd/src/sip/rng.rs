//! The SIP cores' small deterministic generator (SplitMix64): tags,
//! branches, client nonces and backoff jitter. Seeded by the IO layer
//! (`random_seed`), so the sans-IO cores stay reproducible in tests.

/// SplitMix64: one `u64` of state, a full-period sequence.
#[derive(Debug, Clone)]
pub(super) struct SplitMix64(pub(super) u64);

impl SplitMix64 {
    /// The next value.
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 16 hex digits: a tag, a Call-ID part, a cnonce.
    pub(super) fn hex(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }

    /// An RFC 3261 branch (`z9hG4bK` magic cookie first).
    pub(super) fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.hex())
    }

    /// Uniform in `[0, 1)`: jitter.
    pub(super) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
