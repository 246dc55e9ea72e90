//! RTP packets (RFC 3550 §5.1): the fixed header, CSRCs, the header
//! extension and padding, parsed strictly and without copying; the header
//! written into a caller's buffer; and [`RtpStream`], the state of one
//! outgoing stream (SSRC, sequence number, timestamp, marker).
//!
//! Sans-IO: no sockets, no clock. Randomness comes in through
//! [`StreamStart`]. Never panics on any input and never allocates.

use thiserror::Error;

/// Bytes of the fixed RTP header.
pub const HEADER_BYTES: usize = 12;
/// RTP timestamp units in one 20 ms frame at 8 kHz.
pub const FRAME_TIMESTAMP_STEP: u32 = 160;

/// Why a datagram is not a valid RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtpError {
    /// Fewer bytes than the fixed header.
    #[error("packet of {0} bytes is shorter than the 12-byte RTP header")]
    TooShort(usize),
    /// The version field is not 2.
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    /// The CSRC list runs past the end of the packet.
    #[error("CSRC list runs past the end of the packet")]
    CsrcOverrun,
    /// The header extension runs past the end of the packet.
    #[error("header extension runs past the end of the packet")]
    ExtensionOverrun,
    /// The padding count is zero or larger than what is left.
    #[error("invalid padding count")]
    BadPadding,
    /// The output buffer cannot hold the packet.
    #[error("output buffer too small for the RTP packet")]
    BufferTooSmall,
}

/// The fields of an RTP header this hub reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// The marker bit (start of a talkspurt, start of an event).
    pub marker: bool,
    /// Payload type, 0–127.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp (8 kHz units for G.711 and telephone-events).
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

/// A parsed RTP packet borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The fixed header.
    pub header: RtpHeader,
    /// The CSRC list, raw (4 bytes each).
    pub csrcs: &'a [u8],
    /// The header extension: its 16-bit profile field and data, if present.
    pub extension: Option<(u16, &'a [u8])>,
    /// The payload, padding removed.
    pub payload: &'a [u8],
    /// Padding bytes that were removed.
    pub padding: u8,
}

impl RtpPacket<'_> {
    /// Number of contributing sources.
    pub fn csrc_count(&self) -> usize {
        self.csrcs.len() / 4
    }
}

/// Whether `datagram` looks like RTCP multiplexed on the RTP port (RFC 5761
/// §4: second byte 192–223, i.e. packet types 200–204 with marker set).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.len() >= 2 && datagram[0] >> 6 == 2 && (192..=223).contains(&datagram[1])
}

/// Parses an RTP packet strictly: version 2, every length inside the
/// datagram.
pub fn parse(datagram: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    if datagram.len() < HEADER_BYTES {
        return Err(RtpError::TooShort(datagram.len()));
    }
    let b0 = datagram[0];
    let version = b0 >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let has_padding = b0 & 0x20 != 0;
    let has_extension = b0 & 0x10 != 0;
    let cc = usize::from(b0 & 0x0F);
    let header = RtpHeader {
        marker: datagram[1] & 0x80 != 0,
        payload_type: datagram[1] & 0x7F,
        sequence: u16::from_be_bytes([datagram[2], datagram[3]]),
        timestamp: u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]),
        ssrc: u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]),
    };
    let csrc_end = HEADER_BYTES + cc * 4;
    let csrcs = datagram
        .get(HEADER_BYTES..csrc_end)
        .ok_or(RtpError::CsrcOverrun)?;
    let mut pos = csrc_end;
    let extension = if has_extension {
        let head = datagram
            .get(pos..pos + 4)
            .ok_or(RtpError::ExtensionOverrun)?;
        let profile = u16::from_be_bytes([head[0], head[1]]);
        let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let data = datagram
            .get(pos + 4..pos + 4 + words * 4)
            .ok_or(RtpError::ExtensionOverrun)?;
        pos += 4 + words * 4;
        Some((profile, data))
    } else {
        None
    };
    let mut end = datagram.len();
    let mut padding = 0;
    if has_padding {
        padding = datagram[end - 1];
        let p = usize::from(padding);
        if p == 0 || p > end - pos {
            return Err(RtpError::BadPadding);
        }
        end -= p;
    }
    Ok(RtpPacket {
        header,
        csrcs,
        extension,
        payload: &datagram[pos..end],
        padding,
    })
}

/// Writes `header` (no CSRC, no extension, no padding) into the start of
/// `out`; returns [`HEADER_BYTES`].
pub fn write_header(header: &RtpHeader, out: &mut [u8]) -> Result<usize, RtpError> {
    let out = out
        .get_mut(..HEADER_BYTES)
        .ok_or(RtpError::BufferTooSmall)?;
    out[0] = 0x80;
    out[1] = (u8::from(header.marker) << 7) | (header.payload_type & 0x7F);
    out[2..4].copy_from_slice(&header.sequence.to_be_bytes());
    out[4..8].copy_from_slice(&header.timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&header.ssrc.to_be_bytes());
    Ok(HEADER_BYTES)
}

/// Writes a whole packet (`header` then `payload`) into `out`; returns its
/// length.
pub fn build(header: &RtpHeader, payload: &[u8], out: &mut [u8]) -> Result<usize, RtpError> {
    let len = HEADER_BYTES + payload.len();
    if out.len() < len {
        return Err(RtpError::BufferTooSmall);
    }
    write_header(header, out)?;
    out[HEADER_BYTES..len].copy_from_slice(payload);
    Ok(len)
}

/// Where an outgoing stream starts: RFC 3550 wants SSRC, sequence number and
/// timestamp random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    /// The stream's SSRC.
    pub ssrc: u32,
    /// The first sequence number.
    pub sequence: u16,
    /// The first timestamp.
    pub timestamp: u32,
}

impl StreamStart {
    /// A start drawn from the operating system's random source.
    pub fn random() -> Result<StreamStart, getrandom::Error> {
        let mut b = [0u8; 10];
        getrandom::fill(&mut b)?;
        Ok(StreamStart {
            ssrc: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            sequence: u16::from_be_bytes([b[4], b[5]]),
            timestamp: u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
        })
    }
}

/// One outgoing RTP stream: hands out the header of each packet.
///
/// The media clock advances [`FRAME_TIMESTAMP_STEP`] per 20 ms frame whether
/// or not a packet is sent for it ([`RtpStream::skip_frame`]), so silence
/// or a DTMF event in between keeps the timestamps in real time.
#[derive(Debug, Clone)]
pub struct RtpStream {
    ssrc: u32,
    next_sequence: u16,
    next_timestamp: u32,
    talkspurt_start: bool,
}

impl RtpStream {
    /// A stream starting at `start`; its first packet carries the marker.
    pub fn new(start: StreamStart) -> RtpStream {
        RtpStream {
            ssrc: start.ssrc,
            next_sequence: start.sequence,
            next_timestamp: start.timestamp,
            talkspurt_start: true,
        }
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The timestamp the next frame will carry.
    pub fn timestamp(&self) -> u32 {
        self.next_timestamp
    }

    /// The header of the next 20 ms audio frame, which advances the sequence
    /// number and the media clock. The marker is set on the first frame of
    /// a talkspurt.
    pub fn next_frame(&mut self, payload_type: u8) -> RtpHeader {
        let header = RtpHeader {
            marker: std::mem::take(&mut self.talkspurt_start),
            payload_type,
            sequence: self.next_sequence,
            timestamp: self.next_timestamp,
            ssrc: self.ssrc,
        };
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.next_timestamp = self.next_timestamp.wrapping_add(FRAME_TIMESTAMP_STEP);
        header
    }

    /// A 20 ms frame passes without an audio packet (silence suppressed,
    /// an event being sent): the clock advances, the next audio frame starts
    /// a talkspurt.
    pub fn skip_frame(&mut self) {
        self.next_timestamp = self.next_timestamp.wrapping_add(FRAME_TIMESTAMP_STEP);
        self.talkspurt_start = true;
    }

    /// The header of a packet with its own timestamp (a telephone-event):
    /// advances only the sequence number.
    pub fn next_event_packet(
        &mut self,
        payload_type: u8,
        timestamp: u32,
        marker: bool,
    ) -> RtpHeader {
        let header = RtpHeader {
            marker,
            payload_type,
            sequence: self.next_sequence,
            timestamp,
            ssrc: self.ssrc,
        };
        self.next_sequence = self.next_sequence.wrapping_add(1);
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(datagram: &[u8], expect: Result<(RtpHeader, &[u8]), RtpError>) {
        let got = parse(datagram).map(|p| (p.header, p.payload));
        assert_eq!(got, expect);
    }

    const H: RtpHeader = RtpHeader {
        marker: true,
        payload_type: 8,
        sequence: 0xFFFE,
        timestamp: 0xDEAD_BEEF,
        ssrc: 0x0102_0304,
    };

    #[test]
    fn builds_and_parses_a_plain_packet() {
        let mut buf = [0u8; 64];
        let n = build(&H, b"abc", &mut buf).unwrap();
        assert_eq!(n, 15);
        assert_eq!(
            &buf[..12],
            &[0x80, 0x88, 0xFF, 0xFE, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4]
        );
        check(&buf[..n], Ok((H, b"abc")));
    }

    #[test]
    fn csrc_extension_and_padding_are_skipped() {
        let mut p = vec![0x80 | 0x20 | 0x10 | 2, 0x08, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&[9; 8]); // two CSRCs
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 7, 7, 7, 7]); // one-word extension
        p.extend_from_slice(b"payload");
        p.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let parsed = parse(&p).unwrap();
        assert_eq!(parsed.csrc_count(), 2);
        assert_eq!(parsed.extension, Some((0xBEDE, &[7u8, 7, 7, 7][..])));
        assert_eq!(parsed.payload, b"payload");
        assert_eq!(parsed.padding, 3);
        assert_eq!(parsed.header.sequence, 1);
        assert!(!parsed.header.marker);
    }

    #[test]
    fn invalid_packets_are_typed_errors() {
        check(&[0x80; 11], Err(RtpError::TooShort(11)));
        check(&[0x40; 12], Err(RtpError::BadVersion(1)));
        check(
            &[0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            Err(RtpError::CsrcOverrun),
        );
        let mut ext = vec![
            0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xBE, 0xDE, 0, 2, 1, 2, 3, 4,
        ];
        check(&ext, Err(RtpError::ExtensionOverrun));
        ext.truncate(14);
        check(&ext, Err(RtpError::ExtensionOverrun));
        // Padding count 0, and padding longer than the payload.
        let mut pad = vec![0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        check(&pad, Err(RtpError::BadPadding));
        *pad.last_mut().unwrap() = 3;
        check(&pad, Err(RtpError::BadPadding));
        *pad.last_mut().unwrap() = 2;
        check(
            &pad,
            Ok((
                RtpHeader {
                    marker: false,
                    payload_type: 0,
                    sequence: 0,
                    timestamp: 0,
                    ssrc: 0,
                },
                b"",
            )),
        );
        assert_eq!(
            build(&H, &[0; 10], &mut [0u8; 21]),
            Err(RtpError::BufferTooSmall)
        );
    }

    #[test]
    fn rtcp_is_recognised() {
        // A receiver report: V=2, RC=0, PT=201.
        assert!(is_rtcp(&[0x80, 201, 0, 1, 0, 0, 0, 0]));
        assert!(!is_rtcp(&[0x80, 0x00, 0, 1]));
        assert!(!is_rtcp(&[0x80]));
    }

    #[test]
    fn stream_advances_and_marks_talkspurts() {
        let mut s = RtpStream::new(StreamStart {
            ssrc: 7,
            sequence: 65_535,
            timestamp: u32::MAX - 100,
        });
        let a = s.next_frame(0);
        assert!(a.marker);
        assert_eq!(
            (a.sequence, a.timestamp, a.ssrc),
            (65_535, u32::MAX - 100, 7)
        );
        let b = s.next_frame(0);
        assert!(!b.marker);
        assert_eq!((b.sequence, b.timestamp), (0, 59));
        s.skip_frame();
        let e = s.next_event_packet(101, 1234, true);
        assert_eq!((e.sequence, e.timestamp, e.payload_type), (1, 1234, 101));
        let c = s.next_frame(0);
        assert!(c.marker);
        assert_eq!((c.sequence, c.timestamp), (2, 59 + 320));
        assert_ne!(
            StreamStart::random().unwrap(),
            StreamStart::random().unwrap()
        );
    }
}
