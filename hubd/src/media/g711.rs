//! G.711 (ITU-T): PCMU (μ-law) and PCMA (A-law) to and from 16-bit linear
//! PCM, and the 20 ms frame helpers between an RTP payload (160 bytes) and a
//! device [`Frame`] (160 samples, s16le, 320 bytes).
//!
//! Table-driven: the encode tables (16 Ki entries for μ-law's 14-bit input,
//! 8 Ki for A-law's 13-bit input) and the 256-entry decode tables are built
//! at compile time from the reference algorithm (the one in Sun's public
//! `g711.c`), so nothing is computed or allocated per sample at run time.
//! Owns no state and does no I/O.

use crate::device::at_modem::voice::FRAME_BYTES;

/// Samples in one 20 ms frame at 8 kHz (and bytes of its G.711 payload).
pub const FRAME_SAMPLES: usize = 160;

/// The two G.711 laws, as RTP names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// μ-law, static RTP payload type 0.
    Pcmu,
    /// A-law, static RTP payload type 8.
    Pcma,
}

impl Codec {
    /// The static RTP payload type (RFC 3551).
    pub const fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name in an SDP `a=rtpmap` line.
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The code of `sample`.
    #[inline]
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Codec::Pcmu => ulaw_encode(sample),
            Codec::Pcma => alaw_encode(sample),
        }
    }

    /// The linear value of `code`.
    #[inline]
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Codec::Pcmu => ulaw_decode(code),
            Codec::Pcma => alaw_decode(code),
        }
    }

    /// The code of digital silence (linear 0).
    pub const fn silence(self) -> u8 {
        match self {
            Codec::Pcmu => 0xFF,
            Codec::Pcma => 0xD5,
        }
    }

    /// Decodes one 20 ms payload into samples.
    pub fn decode_frame(self, payload: &[u8; FRAME_SAMPLES]) -> [i16; FRAME_SAMPLES] {
        let table = self.decode_table();
        let mut out = [0i16; FRAME_SAMPLES];
        for (o, &c) in out.iter_mut().zip(payload) {
            *o = table[usize::from(c)];
        }
        out
    }

    /// Decodes one 20 ms payload straight into a device frame (s16le).
    /// A payload shorter than a frame leaves the rest silent; a longer one is
    /// cut at a frame.
    pub fn decode_to_frame(self, payload: &[u8], out: &mut [u8; FRAME_BYTES]) {
        let table = self.decode_table();
        let n = payload.len().min(FRAME_SAMPLES);
        for (pair, &c) in out.chunks_exact_mut(2).zip(&payload[..n]) {
            pair.copy_from_slice(&table[usize::from(c)].to_le_bytes());
        }
        out[n * 2..].fill(0);
    }

    /// Encodes one device frame (s16le) into a 20 ms payload.
    pub fn encode_frame(self, frame: &[u8; FRAME_BYTES], out: &mut [u8; FRAME_SAMPLES]) {
        match self {
            Codec::Pcmu => {
                for (o, pair) in out.iter_mut().zip(frame.chunks_exact(2)) {
                    *o = ulaw_encode(i16::from_le_bytes([pair[0], pair[1]]));
                }
            }
            Codec::Pcma => {
                for (o, pair) in out.iter_mut().zip(frame.chunks_exact(2)) {
                    *o = alaw_encode(i16::from_le_bytes([pair[0], pair[1]]));
                }
            }
        }
    }

    fn decode_table(self) -> &'static [i16; 256] {
        match self {
            Codec::Pcmu => &ULAW_DECODE,
            Codec::Pcma => &ALAW_DECODE,
        }
    }
}

/// μ-law code of a 16-bit sample.
#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    // The table is indexed by the 14-bit value (two's complement, masked).
    ULAW_ENCODE[((sample >> 2) as u16 & 0x3FFF) as usize]
}

/// 16-bit value of a μ-law code.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

/// A-law code of a 16-bit sample.
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    ALAW_ENCODE[((sample >> 3) as u16 & 0x1FFF) as usize]
}

/// 16-bit value of an A-law code.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 8159;
const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

const fn segment(value: i32, ends: &[i32; 8]) -> i32 {
    let mut i = 0;
    while i < 8 {
        if value <= ends[i] {
            return i as i32;
        }
        i += 1;
    }
    8
}

/// The reference μ-law encoder on a 14-bit value.
const fn ulaw_encode_ref(pcm14: i32) -> u8 {
    let (mut pcm, mask) = if pcm14 < 0 {
        (-pcm14, 0x7F)
    } else {
        (pcm14, 0xFF)
    };
    if pcm > ULAW_CLIP {
        pcm = ULAW_CLIP;
    }
    pcm += ULAW_BIAS >> 2;
    let seg = segment(pcm, &SEG_UEND);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let u = (seg << 4) | ((pcm >> (seg + 1)) & 0xF);
    (u ^ mask) as u8
}

const fn ulaw_decode_ref(code: u8) -> i16 {
    let u = !code as i32 & 0xFF;
    let mut t = ((u & 0x0F) << 3) + ULAW_BIAS;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 {
        ULAW_BIAS - t
    } else {
        t - ULAW_BIAS
    }) as i16
}

/// The reference A-law encoder on a 13-bit value.
const fn alaw_encode_ref(pcm13: i32) -> u8 {
    let (pcm, mask) = if pcm13 >= 0 {
        (pcm13, 0xD5)
    } else {
        (-pcm13 - 1, 0x55)
    };
    let seg = segment(pcm, &SEG_AEND);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut a = seg << 4;
    if seg < 2 {
        a |= (pcm >> 1) & 0xF;
    } else {
        a |= (pcm >> seg) & 0xF;
    }
    (a ^ mask) as u8
}

const fn alaw_decode_ref(code: u8) -> i16 {
    let a = (code ^ 0x55) as i32;
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

static ULAW_ENCODE: [u8; 1 << 14] = {
    let mut table = [0u8; 1 << 14];
    let mut i = 0;
    while i < (1 << 14) {
        // Index i is the 14-bit two's complement value.
        let v = if i >= (1 << 13) {
            i as i32 - (1 << 14)
        } else {
            i as i32
        };
        table[i] = ulaw_encode_ref(v);
        i += 1;
    }
    table
};

static ALAW_ENCODE: [u8; 1 << 13] = {
    let mut table = [0u8; 1 << 13];
    let mut i = 0;
    while i < (1 << 13) {
        let v = if i >= (1 << 12) {
            i as i32 - (1 << 13)
        } else {
            i as i32
        };
        table[i] = alaw_encode_ref(v);
        i += 1;
    }
    table
};

static ULAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ulaw_decode_ref(i as u8);
        i += 1;
    }
    table
};

static ALAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = alaw_decode_ref(i as u8);
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        // The first step above zero: 8 (code 0xFE decodes to 8).
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7E), -8);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_encode(-1), 0x55);
    }

    /// Every code survives decode → encode (μ-law's two zeros both come back
    /// as the positive one).
    #[test]
    fn codes_round_trip() {
        for c in 0..=255u8 {
            let back = ulaw_encode(ulaw_decode(c));
            if c == 0x7F {
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, c, "μ-law {c:#04x}");
            }
            assert_eq!(alaw_encode(alaw_decode(c)), c, "A-law {c:#04x}");
        }
    }

    /// Over every i16, the error is within half a quantisation step of the
    /// segment (about 1/32 of the magnitude) or the clip at full scale, and
    /// encoding is monotonic.
    #[test]
    fn linear_round_trip_error_is_bounded() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut last_decoded = i16::MIN;
            for x in i16::MIN..=i16::MAX {
                let y = codec.decode(codec.encode(x));
                let err = (i32::from(x) - i32::from(y)).abs();
                let bound = i32::from(x).abs() / 30 + 16;
                let clip = i32::from(x).abs() > 32_124;
                assert!(err <= bound || (clip && err <= 1024), "{codec:?} {x} → {y}");
                assert!(y >= last_decoded, "{codec:?} not monotonic at {x}");
                last_decoded = y;
            }
        }
    }

    #[test]
    fn frame_helpers_agree_with_the_sample_functions() {
        let mut frame = [0u8; FRAME_BYTES];
        for (i, pair) in frame.chunks_exact_mut(2).enumerate() {
            let s = ((i as i32 * 409) % 65_536 - 32_768) as i16;
            pair.copy_from_slice(&s.to_le_bytes());
        }
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut payload = [0u8; FRAME_SAMPLES];
            codec.encode_frame(&frame, &mut payload);
            let samples = codec.decode_frame(&payload);
            let mut back = [0u8; FRAME_BYTES];
            codec.decode_to_frame(&payload, &mut back);
            for i in 0..FRAME_SAMPLES {
                let s = i16::from_le_bytes([frame[2 * i], frame[2 * i + 1]]);
                assert_eq!(payload[i], codec.encode(s));
                assert_eq!(samples[i], codec.decode(payload[i]));
                assert_eq!(
                    i16::from_le_bytes([back[2 * i], back[2 * i + 1]]),
                    samples[i]
                );
            }
            // A short payload leaves the rest of the frame silent.
            let mut short = [0xAAu8; FRAME_BYTES];
            codec.decode_to_frame(&payload[..10], &mut short);
            assert!(short[20..].iter().all(|&b| b == 0));
            assert!(codec.decode(codec.silence()).unsigned_abs() <= 8);
        }
    }
}
