//! Arbitrary bytes through the media parsers and the jitter buffer: as an
//! SDP offer (parsed, negotiated, answered), as an RTP packet, as a
//! telephone-event payload, and as a script of packets and ticks for the
//! jitter buffer and the DTMF receiver.
//!
//! Checked, besides "never panics": our answer to any acceptable offer
//! parses and negotiates to the same codec and telephone-event type; a
//! parsed RTP packet's payload lies inside the datagram and survives a
//! rebuild; a telephone-event payload survives a rebuild; the jitter buffer
//! plays sequence numbers strictly increasing (mod 2^16) within an epoch,
//! each frame with the payload pushed for it, never holds more than its
//! maximum, and never plays a frame it was not given.

#![no_main]

use std::net::IpAddr;

use hubd::media::jitter::{JitterBuffer, JitterConfig, MAX_PAYLOAD, Playout, Push};
use hubd::media::rtp;
use hubd::media::sdp::{self, LocalMedia, SessionDescription};
use hubd::media::telephone_event::{EventPayload, EventReceiver, Received};
use libfuzzer_sys::fuzz_target;

fn sdp_offer(data: &[u8]) {
    let Ok(offer) = SessionDescription::parse(data) else {
        return;
    };
    let Ok(chosen) = sdp::negotiate(&offer) else {
        return;
    };
    let local = LocalMedia {
        address: IpAddr::from([192, 0, 2, 1]),
        port: 40_000,
        session_id: 1,
        session_version: 1,
    };
    let text = sdp::answer(&offer, &chosen, &local);
    let back = SessionDescription::parse(text.as_bytes()).expect("our answer parses");
    assert_eq!(
        back.media.len(),
        offer.media.len(),
        "one m= line per offered"
    );
    let again = sdp::negotiate(&back).expect("our answer is acceptable");
    assert_eq!(again.media_index, chosen.media_index);
    assert_eq!(again.codec, chosen.codec);
    assert_eq!(again.payload_type, chosen.payload_type);
    assert_eq!(again.telephone_event, chosen.telephone_event);
    assert_eq!(again.direction, chosen.direction.reversed());
}

fn rtp_packet(data: &[u8]) {
    let _ = rtp::is_rtcp(data);
    let Ok(packet) = rtp::parse(data) else {
        return;
    };
    let start = packet.payload.as_ptr() as usize - data.as_ptr() as usize;
    assert!(start + packet.payload.len() + usize::from(packet.padding) <= data.len());
    let mut buf = vec![0u8; rtp::HEADER_BYTES + packet.payload.len()];
    let n = rtp::build(&packet.header, packet.payload, &mut buf).expect("fits");
    let again = rtp::parse(&buf[..n]).expect("rebuilt packet parses");
    assert_eq!(again.header, packet.header);
    assert_eq!(again.payload, packet.payload);
}

fn telephone_event(data: &[u8]) {
    if let Ok(ev) = EventPayload::parse(data) {
        assert_eq!(EventPayload::parse(&ev.to_bytes()), Ok(ev));
    }
}

/// The bytes as a script: each step is a tick or a packet (SSRC from a
/// small set, sequence number, payload length).
fn jitter_script(data: &[u8]) {
    let Some((&depths, mut rest)) = data.split_first() else {
        return;
    };
    let config = JitterConfig {
        target_depth: u16::from(depths & 0x0F),
        max_depth: u16::from(depths >> 4) * 4,
    };
    let mut jb = JitterBuffer::new(config);
    let max = usize::from(jb.config().max_depth);
    let mut events = EventReceiver::new();
    let mut last: Option<(u64, u16)> = None;
    let mut digits = 0usize;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        if op & 1 == 0 {
            // Only pushes start a new epoch.
            let epoch = jb.epoch();
            match jb.pop() {
                Playout::Frame { sequence, payload } => {
                    if let Some((prev_epoch, prev)) = last
                        && prev_epoch == epoch
                    {
                        let step = sequence.wrapping_sub(prev);
                        assert!(step != 0 && step < 0x8000, "{prev} then {sequence}");
                    }
                    last = Some((epoch, sequence));
                    assert!(payload.len() <= MAX_PAYLOAD);
                    if payload.len() >= 2 {
                        assert_eq!(
                            payload[..2],
                            sequence.to_be_bytes(),
                            "the frame pushed for {sequence}"
                        );
                    }
                }
                Playout::Missing(_) => {}
            }
            continue;
        }
        let Some(fields) = rest.get(..4) else {
            return;
        };
        rest = &rest[4..];
        let ssrc = u32::from(op >> 6);
        let sequence = u16::from_be_bytes([fields[0], fields[1]]);
        let len = usize::from(fields[2]);
        let mut payload = [fields[3]; 255];
        payload[..2].copy_from_slice(&sequence.to_be_bytes());
        let outcome = jb.push(ssrc, sequence, &payload[..len]);
        assert!(jb.len() <= max, "{} frames held, max {max}", jb.len());
        if outcome == Push::Reset {
            last = None;
        }
        // The same bytes as a telephone-event of this SSRC.
        if let Ok(Some(Received::Digit(_))) =
            events.on_packet(ssrc, u32::from(sequence) / 8, &payload[..len])
        {
            digits += 1;
        }
    }
    let _ = digits;
}

fuzz_target!(|data: &[u8]| {
    sdp_offer(data);
    rtp_packet(data);
    telephone_event(data);
    jitter_script(data);
});
