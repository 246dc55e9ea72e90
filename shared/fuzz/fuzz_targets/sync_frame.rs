//! Fuzzes the sync frame decoder: arbitrary bytes, cut into arbitrary chunks,
//! in both directions. It must never panic, never buffer more than one frame,
//! and decode the same messages (and the same first error) however the stream
//! is chunked; every message it yields must survive re-encoding.
//!
//! Input layout: byte 0 picks the maximum frame size, byte 1 seeds the chunk
//! lengths; the rest is the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vss_shared::sync::frame::HEADER_BYTES;
use vss_shared::sync::{
    ControlMessage, FrameConfig, FrameDecoder, FrameError, HubMessage, WireMessage, encode_frame,
};

fuzz_target!(|data: &[u8]| {
    let [max_byte, seed, stream @ ..] = data else {
        return;
    };
    // Small limits reach the oversize path; 0 means the default 4 MiB.
    let config = match max_byte {
        0 => FrameConfig::default(),
        n => FrameConfig {
            max_frame_bytes: u32::from(*n) * 16,
        },
    };
    check::<HubMessage>(config, *seed, stream);
    check::<ControlMessage>(config, *seed, stream);
});

fn check<M: WireMessage + PartialEq + std::fmt::Debug>(
    config: FrameConfig,
    seed: u8,
    stream: &[u8],
) {
    let whole = decode(config, stream, &mut std::iter::once(stream.len()));
    let mut state = u32::from(seed) | 1;
    let mut lens = std::iter::from_fn(move || {
        // xorshift32: chunk lengths 0..=31, including empty chunks.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        Some((state % 32) as usize)
    });
    let chunked = decode::<M>(config, stream, &mut lens);
    assert_eq!(whole, chunked, "chunking changed the result");
    let byte_by_byte = decode::<M>(config, stream, &mut std::iter::repeat(1));
    assert_eq!(whole, byte_by_byte, "byte-by-byte changed the result");

    for msg in &whole.0 {
        let frame =
            encode_frame(msg, &FrameConfig::default()).expect("a decoded message re-encodes");
        let mut decoder = FrameDecoder::<M>::new(FrameConfig::default());
        let mut out = Vec::new();
        decoder
            .decode(&frame, &mut out)
            .expect("a re-encoded message decodes");
        assert_eq!(
            out.as_slice(),
            std::slice::from_ref(msg),
            "re-encoding changed the message"
        );
    }
}

/// Decodes `stream` cut by `lens`; returns the messages and the first error.
fn decode<M: WireMessage>(
    config: FrameConfig,
    stream: &[u8],
    lens: &mut dyn Iterator<Item = usize>,
) -> (Vec<M>, Option<FrameError>) {
    let mut decoder = FrameDecoder::<M>::new(config);
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = lens.next().unwrap_or(rest.len()).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if let Err(e) = decoder.decode(chunk, &mut out) {
            assert_eq!(
                decoder.decode(b"\0\0\0\x01\0", &mut out),
                Err(FrameError::Failed)
            );
            return (out, Some(e));
        }
        assert!(decoder.buffered() <= HEADER_BYTES + config.max_frame_bytes as usize);
    }
    let end = decoder.finish().err();
    (out, end)
}
