//! DTMF as RTP telephone-events (RFC 4733 §2.3): the 4-byte payload, the
//! [`Digit`]s 0–9 `*` `#` A–D and their event codes 0–15, an
//! [`EventReceiver`] that turns the redundant and retransmitted packets of
//! one event into exactly one digit, and an [`EventSender`] that produces
//! the RFC's packet sequence for one digit.
//!
//! Sans-IO: no sockets, no clock — the sender is stepped once per 20 ms
//! frame by its caller. Never panics on any input.

use std::time::Duration;

use thiserror::Error;

/// RTP timestamp units per 20 ms packet interval at 8 kHz.
const UNITS_PER_PACKET: u32 = 160;
/// End packets sent for each event (RFC 4733 §2.5.1.4 recommends three).
const END_PACKETS: u8 = 3;
/// The volume we send: −10 dBm0.
const SEND_VOLUME: u8 = 10;

/// A DTMF digit: `0`–`9`, `*`, `#`, `A`–`D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digit(u8);

impl Digit {
    /// The digit of a character (`a`–`d` accepted as `A`–`D`).
    pub fn from_char(c: char) -> Option<Digit> {
        let code = match c {
            '0'..='9' => c as u8 - b'0',
            '*' => 10,
            '#' => 11,
            'A'..='D' => c as u8 - b'A' + 12,
            'a'..='d' => c as u8 - b'a' + 12,
            _ => return None,
        };
        Some(Digit(code))
    }

    /// The digit of an RFC 4733 event code; codes above 15 are not digits.
    pub fn from_event(code: u8) -> Option<Digit> {
        (code <= 15).then_some(Digit(code))
    }

    /// The RFC 4733 event code, 0–15.
    pub fn event_code(self) -> u8 {
        self.0
    }

    /// The character, as the modem's `AT+VTS` takes it.
    pub fn as_char(self) -> char {
        match self.0 {
            0..=9 => char::from(b'0' + self.0),
            10 => '*',
            11 => '#',
            c => char::from(b'A' + (c - 12)),
        }
    }
}

impl std::fmt::Display for Digit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// Why a payload is not a telephone-event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EventError {
    /// The payload is shorter than 4 bytes.
    #[error("telephone-event payload of {0} bytes, expected at least 4")]
    TooShort(usize),
}

/// One telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    /// The event code (0–15 are DTMF digits).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power level in −dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl EventPayload {
    /// Parses the first 4 bytes (further bytes are other events of a
    /// redundant block and are ignored).
    pub fn parse(payload: &[u8]) -> Result<EventPayload, EventError> {
        let b = payload
            .get(..4)
            .ok_or(EventError::TooShort(payload.len()))?;
        Ok(EventPayload {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The 4 wire bytes (the R bit is zero).
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// What a received telephone-event packet meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// The first packet of a new event: report the digit now.
    Digit(Digit),
    /// The first end packet of an event already reported (or nothing new).
    Ended {
        /// The digit that ended.
        digit: Digit,
        /// Its duration in timestamp units.
        duration: u16,
    },
}

/// Events remembered to recognise late retransmissions.
const RECENT: usize = 4;

/// Turns the packets of one stream into one [`Received::Digit`] per event.
///
/// An event is identified by (SSRC, RTP timestamp): every packet of one
/// event, updates and retransmitted ends alike, carries the timestamp of its
/// start. The digit is reported on the first packet seen, even if that is an
/// end packet (the start was lost), so the call bridge hears it at once.
#[derive(Debug, Default, Clone)]
pub struct EventReceiver {
    recent: [Option<Seen>; RECENT],
    next: usize,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    ssrc: u32,
    timestamp: u32,
    ended: bool,
}

impl EventReceiver {
    /// A receiver that has seen nothing.
    pub fn new() -> EventReceiver {
        EventReceiver::default()
    }

    /// Feeds one packet's header fields and payload. Returns the digit the
    /// first time an event is seen, `Ended` the first time its end is seen,
    /// and `None` for repeats and for events that are not DTMF digits.
    pub fn on_packet(
        &mut self,
        ssrc: u32,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<Option<Received>, EventError> {
        let ev = EventPayload::parse(payload)?;
        let Some(digit) = Digit::from_event(ev.event) else {
            return Ok(None);
        };
        if let Some(seen) = self
            .recent
            .iter_mut()
            .flatten()
            .find(|s| s.ssrc == ssrc && s.timestamp == timestamp)
        {
            if ev.end && !seen.ended {
                seen.ended = true;
                return Ok(Some(Received::Ended {
                    digit,
                    duration: ev.duration,
                }));
            }
            return Ok(None);
        }
        self.recent[self.next] = Some(Seen {
            ssrc,
            timestamp,
            ended: ev.end,
        });
        self.next = (self.next + 1) % RECENT;
        Ok(Some(Received::Digit(digit)))
    }
}

/// One packet an [`EventSender`] wants sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// The RTP marker: set on the first packet of the event.
    pub marker: bool,
    /// The payload.
    pub payload: EventPayload,
}

/// The packets of one digit, one per 20 ms step: the start (marker set),
/// updates with a growing duration until `duration` is reached, then three
/// end packets with the final duration. Every packet carries the RTP
/// timestamp of the event's start, which the caller keeps.
#[derive(Debug, Clone)]
pub struct EventSender {
    digit: Digit,
    total: u16,
    sent_units: u32,
    ends_sent: u8,
}

impl EventSender {
    /// The sequence for `digit` lasting `duration` (at least one packet
    /// interval, at most the field's 65535 units ≈ 8.2 s).
    pub fn new(digit: Digit, duration: Duration) -> EventSender {
        let units = duration.as_millis().saturating_mul(8);
        let total = u16::try_from(units.max(u128::from(UNITS_PER_PACKET))).unwrap_or(u16::MAX);
        EventSender {
            digit,
            total,
            sent_units: 0,
            ends_sent: 0,
        }
    }

    /// The digit being sent.
    pub fn digit(&self) -> Digit {
        self.digit
    }

    /// The next packet, or `None` once the last end packet was handed out.
    pub fn next_packet(&mut self) -> Option<EventPacket> {
        let marker = self.sent_units == 0;
        if self.sent_units < u32::from(self.total) {
            self.sent_units = (self.sent_units + UNITS_PER_PACKET).min(u32::from(self.total));
            let end = self.sent_units >= u32::from(self.total);
            if end {
                self.ends_sent = 1;
            }
            return Some(self.packet(marker, end));
        }
        if self.ends_sent < END_PACKETS {
            self.ends_sent += 1;
            return Some(self.packet(false, true));
        }
        None
    }

    fn packet(&self, marker: bool, end: bool) -> EventPacket {
        EventPacket {
            marker,
            payload: EventPayload {
                event: self.digit.event_code(),
                end,
                volume: SEND_VOLUME,
                duration: u16::try_from(self.sent_units).unwrap_or(u16::MAX),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_map_to_event_codes() {
        let all = "0123456789*#ABCD";
        for (code, c) in all.chars().enumerate() {
            let d = Digit::from_char(c).unwrap();
            assert_eq!(usize::from(d.event_code()), code);
            assert_eq!(d.as_char(), c);
            assert_eq!(Digit::from_event(code as u8), Some(d));
        }
        assert_eq!(Digit::from_char('b'), Digit::from_char('B'));
        assert_eq!(Digit::from_char('E'), None);
        assert_eq!(Digit::from_event(16), None);
    }

    #[test]
    fn payload_round_trips() {
        let p = EventPayload {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        assert_eq!(p.to_bytes(), [11, 0x8A, 0x03, 0x20]);
        assert_eq!(EventPayload::parse(&p.to_bytes()), Ok(p));
        assert_eq!(
            EventPayload::parse(&[1, 2, 3]),
            Err(EventError::TooShort(3))
        );
    }

    #[test]
    fn sender_emits_start_updates_and_three_ends() {
        let mut s = EventSender::new(Digit::from_char('5').unwrap(), Duration::from_millis(100));
        let mut packets = Vec::new();
        while let Some(p) = s.next_packet() {
            packets.push((p.marker, p.payload.end, p.payload.duration));
        }
        assert_eq!(
            packets,
            vec![
                (true, false, 160),
                (false, false, 320),
                (false, false, 480),
                (false, false, 640),
                (false, true, 800),
                (false, true, 800),
                (false, true, 800),
            ]
        );
    }

    /// Every packet of a sent digit, repeated and reordered, gives one digit.
    #[test]
    fn receiver_reports_each_event_once() {
        let mut rx = EventReceiver::new();
        let mut digits = Vec::new();
        let mut ends = 0;
        for (ts, c) in [(1000u32, '1'), (5000, '#'), (9000, '1')] {
            let mut s = EventSender::new(Digit::from_char(c).unwrap(), Duration::from_millis(60));
            let mut packets = Vec::new();
            while let Some(p) = s.next_packet() {
                packets.push(p.payload.to_bytes());
            }
            // Each packet twice, the first two swapped.
            packets.swap(0, 1);
            for p in packets.iter().flat_map(|p| [p, p]) {
                match rx.on_packet(42, ts, p).unwrap() {
                    Some(Received::Digit(d)) => digits.push(d.as_char()),
                    Some(Received::Ended { duration, .. }) => {
                        assert_eq!(duration, 480);
                        ends += 1;
                    }
                    None => {}
                }
            }
        }
        assert_eq!(digits, vec!['1', '#', '1']);
        assert_eq!(ends, 3);
        // A late retransmission of the first event is not a new digit.
        let late = EventPayload {
            event: 1,
            end: true,
            volume: 10,
            duration: 480,
        };
        assert_eq!(rx.on_packet(42, 1000, &late.to_bytes()), Ok(None));
        // The same timestamp from another source is another event.
        assert_eq!(
            rx.on_packet(43, 1000, &late.to_bytes()),
            Ok(Some(Received::Digit(Digit::from_char('1').unwrap())))
        );
        // Non-DTMF events (e.g. 32, answer tone) are ignored.
        let tone = EventPayload {
            event: 32,
            end: false,
            volume: 10,
            duration: 160,
        };
        assert_eq!(rx.on_packet(42, 20_000, &tone.to_bytes()), Ok(None));
    }
}
