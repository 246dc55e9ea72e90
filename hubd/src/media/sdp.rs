//! SDP (RFC 4566) for the audio of a call and the offer/answer rules of
//! RFC 3264 that apply to it: parse a remote description, choose what the
//! call will use ([`negotiate`]), write our answer ([`answer`]) or our own
//! offer ([`offer`]).
//!
//! What we accept: one audio stream over `RTP/AVP` (or `RTP/AVPF`) with PCMU
//! or PCMA at 8000 Hz, mono, in the remote's order of preference, plus
//! `telephone-event/8000` at whatever dynamic payload type the remote chose.
//! We always ask for 20 ms packets (`a=ptime:20`). A description with no
//! such stream is a [`NegotiationError`], which the SIP layer answers with
//! 488 Not Acceptable Here; a description that does not parse is an
//! [`SdpError`] (400 Bad Request).
//!
//! Parsing is bounded (size, lines, media, formats, attributes) and never
//! panics. Owns no I/O.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use thiserror::Error;

use crate::media::g711::Codec;

/// Largest description accepted, in bytes.
pub const MAX_SDP_BYTES: usize = 16 * 1024;
/// Most `m=` sections accepted.
pub const MAX_MEDIA: usize = 16;
/// Most formats on one `m=` line.
pub const MAX_FORMATS: usize = 64;
/// Most `a=` lines in one section.
pub const MAX_ATTRIBUTES: usize = 128;
/// The payload type of telephone-events in our own offers.
pub const OUR_TELEPHONE_EVENT_PT: u8 = 101;
/// The packet time we send and ask for, in milliseconds.
pub const PTIME_MS: u32 = 20;

/// Why a description does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    /// Larger than [`MAX_SDP_BYTES`].
    #[error("SDP of {0} bytes is larger than the {MAX_SDP_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not UTF-8 text.
    #[error("SDP is not UTF-8 text")]
    NotText,
    /// The first line is not `v=0`.
    #[error("SDP does not start with v=0")]
    BadVersion,
    /// A line is not `<letter>=<value>`.
    #[error("SDP line {0} is not <type>=<value>")]
    BadLine(usize),
    /// A `c=` line is not `IN IP4|IP6 <address>`.
    #[error("SDP line {0}: bad connection (c=) line")]
    BadConnection(usize),
    /// An `m=` line is not `<media> <port> <proto> <fmt>…`.
    #[error("SDP line {0}: bad media (m=) line")]
    BadMedia(usize),
    /// An `a=rtpmap`, `a=fmtp` or `a=ptime` value does not parse.
    #[error("SDP line {0}: bad attribute")]
    BadAttribute(usize),
    /// More than [`MAX_MEDIA`] media, [`MAX_FORMATS`] formats or
    /// [`MAX_ATTRIBUTES`] attributes.
    #[error("SDP line {0}: too many media, formats or attributes")]
    TooMany(usize),
}

/// Why no call can be set up with a (well-formed) description: answered 488.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NegotiationError {
    /// No audio stream with a non-zero port over RTP/AVP.
    #[error("no usable audio stream in the SDP")]
    NoAudio,
    /// Audio, but neither PCMU nor PCMA at 8000 Hz.
    #[error("no acceptable audio codec (PCMU or PCMA at 8000 Hz) offered")]
    NoAcceptableCodec,
    /// The audio stream has no connection address.
    #[error("the audio stream has no connection (c=) address")]
    NoConnection,
}

impl NegotiationError {
    /// The SIP status code for this failure: 488 Not Acceptable Here.
    pub const fn sip_status(self) -> u16 {
        488
    }
}

/// The direction attribute of a session or a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Both ways (the default).
    #[default]
    SendRecv,
    /// The describer only sends.
    SendOnly,
    /// The describer only receives.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    /// The direction an answer gives to this offered direction.
    pub const fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// The attribute name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether we may send under this (our) direction.
    pub const fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether we expect to receive under this (our) direction.
    pub const fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// An `a=rtpmap` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type it maps.
    pub payload_type: u8,
    /// Encoding name as written (compare case-insensitively).
    pub encoding: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Channels (1 when absent).
    pub channels: u32,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, …
    pub kind: String,
    /// Transport port; 0 is a rejected or disabled stream.
    pub port: u16,
    /// `RTP/AVP`, …
    pub proto: String,
    /// Formats in the order written (payload types for RTP).
    pub formats: Vec<String>,
    /// The section's `c=` address, if any.
    pub connection: Option<IpAddr>,
    /// `a=rtpmap` lines.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp` lines: payload type and parameters.
    pub fmtps: Vec<(u8, String)>,
    /// `a=ptime`, in milliseconds.
    pub ptime: Option<u32>,
    /// The section's direction attribute, if any.
    pub direction: Option<Direction>,
}

impl Media {
    fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == pt)
    }

    fn is_rtp_avp(&self) -> bool {
        self.proto.eq_ignore_ascii_case("RTP/AVP") || self.proto.eq_ignore_ascii_case("RTP/AVPF")
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionDescription {
    /// The session-level `c=` address, if any.
    pub connection: Option<IpAddr>,
    /// The session-level direction attribute, if any.
    pub direction: Option<Direction>,
    /// The `m=` sections in order.
    pub media: Vec<Media>,
}

impl SessionDescription {
    /// Parses `text` (CRLF or LF line ends).
    pub fn parse(text: &[u8]) -> Result<SessionDescription, SdpError> {
        if text.len() > MAX_SDP_BYTES {
            return Err(SdpError::TooLarge(text.len()));
        }
        let text = std::str::from_utf8(text).map_err(|_| SdpError::NotText)?;
        let mut sd = SessionDescription::default();
        let mut attributes = 0usize;
        let mut first = true;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let (kind, value) = match line.split_once('=') {
                Some((k, v)) if k.len() == 1 => (k.as_bytes()[0], v),
                _ => return Err(SdpError::BadLine(n)),
            };
            if first {
                if kind != b'v' || value.trim() != "0" {
                    return Err(SdpError::BadVersion);
                }
                first = false;
                continue;
            }
            match kind {
                b'c' => {
                    let addr = parse_connection(value).ok_or(SdpError::BadConnection(n))?;
                    match sd.media.last_mut() {
                        Some(m) => m.connection = Some(addr),
                        None => sd.connection = Some(addr),
                    }
                }
                b'm' => {
                    if sd.media.len() >= MAX_MEDIA {
                        return Err(SdpError::TooMany(n));
                    }
                    sd.media.push(parse_media(value, n)?);
                    attributes = 0;
                }
                b'a' => {
                    attributes += 1;
                    if attributes > MAX_ATTRIBUTES {
                        return Err(SdpError::TooMany(n));
                    }
                    parse_attribute(&mut sd, value, n)?;
                }
                _ => {}
            }
        }
        if first {
            return Err(SdpError::BadVersion);
        }
        Ok(sd)
    }
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    let mut parts = value.split_ascii_whitespace();
    if parts.next()? != "IN" {
        return None;
    }
    let family = parts.next()?;
    // Multicast addresses may carry /ttl and /count.
    let addr = parts.next()?.split('/').next()?;
    let ip: IpAddr = addr.parse().ok()?;
    match (family, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Some(ip),
        _ => None,
    }
}

fn parse_media(value: &str, n: usize) -> Result<Media, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    let bad = SdpError::BadMedia(n);
    let kind = parts.next().ok_or(bad.clone())?;
    let port = parts.next().ok_or(bad.clone())?;
    let port: u16 = port
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or(bad.clone())?;
    let proto = parts.next().ok_or(bad.clone())?;
    let mut formats = Vec::new();
    for f in parts {
        if formats.len() >= MAX_FORMATS {
            return Err(SdpError::TooMany(n));
        }
        formats.push(f.to_owned());
    }
    if formats.is_empty() {
        return Err(bad);
    }
    Ok(Media {
        kind: kind.to_owned(),
        port,
        proto: proto.to_owned(),
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        direction: None,
    })
}

fn parse_payload_type(s: &str) -> Option<u8> {
    s.parse::<u8>().ok().filter(|pt| *pt <= 127)
}

fn parse_attribute(sd: &mut SessionDescription, value: &str, n: usize) -> Result<(), SdpError> {
    let (name, arg) = match value.split_once(':') {
        Some((k, v)) => (k, Some(v)),
        None => (value.trim(), None),
    };
    let direction = match name {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    };
    let Some(media) = sd.media.last_mut() else {
        if direction.is_some() {
            sd.direction = direction;
        }
        return Ok(());
    };
    if direction.is_some() {
        media.direction = direction;
        return Ok(());
    }
    let bad = SdpError::BadAttribute(n);
    match (name, arg) {
        ("rtpmap", Some(arg)) => {
            let (pt, rest) = arg.trim().split_once(' ').ok_or(bad.clone())?;
            let pt = parse_payload_type(pt).ok_or(bad.clone())?;
            let mut enc = rest.trim().split('/');
            let encoding = enc.next().filter(|e| !e.is_empty()).ok_or(bad.clone())?;
            let clock_rate = enc.next().and_then(|r| r.parse().ok()).ok_or(bad.clone())?;
            let channels = match enc.next() {
                Some(c) => c.parse().map_err(|_| bad.clone())?,
                None => 1,
            };
            media.rtpmaps.push(RtpMap {
                payload_type: pt,
                encoding: encoding.to_owned(),
                clock_rate,
                channels,
            });
        }
        ("fmtp", Some(arg)) => {
            let (pt, params) = arg.trim().split_once(' ').unwrap_or((arg.trim(), ""));
            let pt = parse_payload_type(pt).ok_or(bad)?;
            media.fmtps.push((pt, params.trim().to_owned()));
        }
        ("ptime", Some(arg)) => {
            media.ptime = Some(arg.trim().parse().map_err(|_| bad)?);
        }
        _ => {}
    }
    Ok(())
}

/// What a call's audio will use, chosen from a remote description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Index of the chosen `m=` section in the remote description.
    pub media_index: usize,
    /// Where the remote wants its RTP (before latching).
    pub remote: SocketAddr,
    /// The codec.
    pub codec: Codec,
    /// Its payload type (0 or 8, or a dynamic type the remote mapped).
    pub payload_type: u8,
    /// The remote's telephone-event payload type, if it offered one.
    pub telephone_event: Option<u8>,
    /// The remote's `a=ptime`, if any (we send 20 ms regardless).
    pub remote_ptime: Option<u32>,
    /// Our direction (the remote's, reversed).
    pub direction: Direction,
}

/// Chooses the call's audio from a remote offer or answer: the first audio
/// stream over RTP/AVP with a non-zero port and an acceptable codec, and in
/// it the first of PCMU/PCMA at 8000 Hz in the remote's order.
pub fn negotiate(remote: &SessionDescription) -> Result<Negotiated, NegotiationError> {
    let mut saw_audio = false;
    for (index, m) in remote.media.iter().enumerate() {
        if !m.kind.eq_ignore_ascii_case("audio") || m.port == 0 || !m.is_rtp_avp() {
            continue;
        }
        saw_audio = true;
        let Some((codec, payload_type)) = m.formats.iter().find_map(|f| {
            let pt = parse_payload_type(f)?;
            acceptable_codec(m, pt).map(|c| (c, pt))
        }) else {
            continue;
        };
        let telephone_event = m.formats.iter().find_map(|f| {
            let pt = parse_payload_type(f)?;
            let map = m.rtpmap(pt)?;
            (map.encoding.eq_ignore_ascii_case("telephone-event") && map.clock_rate == 8000)
                .then_some(pt)
        });
        let ip = m
            .connection
            .or(remote.connection)
            .ok_or(NegotiationError::NoConnection)?;
        let direction = m
            .direction
            .or(remote.direction)
            .unwrap_or_default()
            .reversed();
        return Ok(Negotiated {
            media_index: index,
            remote: SocketAddr::new(ip, m.port),
            codec,
            payload_type,
            telephone_event,
            remote_ptime: m.ptime,
            direction,
        });
    }
    Err(if saw_audio {
        NegotiationError::NoAcceptableCodec
    } else {
        NegotiationError::NoAudio
    })
}

/// The codec of payload type `pt` in `m`, if we accept it: a mapping to
/// PCMU/PCMA at 8000 Hz mono, or static 0/8 without a mapping.
fn acceptable_codec(m: &Media, pt: u8) -> Option<Codec> {
    match m.rtpmap(pt) {
        Some(map) => {
            if map.clock_rate != 8000 || map.channels != 1 {
                return None;
            }
            if map.encoding.eq_ignore_ascii_case("PCMU") {
                Some(Codec::Pcmu)
            } else if map.encoding.eq_ignore_ascii_case("PCMA") {
                Some(Codec::Pcma)
            } else {
                None
            }
        }
        None => match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        },
    }
}

/// Our side of a description: where we receive, and the `o=` identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalMedia {
    /// The address in our `c=` and `o=` lines.
    pub address: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// `o=` session id (random, stable for the call).
    pub session_id: u64,
    /// `o=` version: incremented by the caller at every new description.
    pub session_version: u64,
}

fn write_session_head(out: &mut String, local: &LocalMedia) {
    let family = if local.address.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    };
    let _ = write!(
        out,
        "v=0\r\no=vss {} {} IN {family} {}\r\ns=vss\r\nc=IN {family} {}\r\nt=0 0\r\n",
        local.session_id, local.session_version, local.address, local.address
    );
}

/// Our answer to `offer` given what [`negotiate`] chose: the same number of
/// `m=` lines in the same order, every other one rejected with port 0.
pub fn answer(offer: &SessionDescription, chosen: &Negotiated, local: &LocalMedia) -> String {
    let mut out = String::with_capacity(320);
    write_session_head(&mut out, local);
    for (i, m) in offer.media.iter().enumerate() {
        if i != chosen.media_index {
            let first = m.formats.first().map_or("0", String::as_str);
            let _ = write!(out, "m={} 0 {} {first}\r\n", m.kind, m.proto);
            continue;
        }
        let codec_pt = chosen.payload_type;
        let _ = write!(out, "m=audio {} {} {codec_pt}", local.port, m.proto);
        if let Some(te) = chosen.telephone_event {
            let _ = write!(out, " {te}");
        }
        let _ = write!(
            out,
            "\r\na=rtpmap:{codec_pt} {}/8000\r\n",
            chosen.codec.name()
        );
        if let Some(te) = chosen.telephone_event {
            let _ = write!(
                out,
                "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-15\r\n"
            );
        }
        let _ = write!(
            out,
            "a=ptime:{PTIME_MS}\r\na={}\r\n",
            chosen.direction.as_str()
        );
    }
    out
}

/// Our offer for an outgoing call: PCMU, PCMA and telephone-events at
/// [`OUR_TELEPHONE_EVENT_PT`], 20 ms, both ways.
pub fn offer(local: &LocalMedia) -> String {
    let mut out = String::with_capacity(320);
    write_session_head(&mut out, local);
    let te = OUR_TELEPHONE_EVENT_PT;
    let _ = write!(
        out,
        "m=audio {} RTP/AVP 0 8 {te}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-15\r\na=ptime:{PTIME_MS}\r\na=sendrecv\r\n",
        local.port
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: LocalMedia = LocalMedia {
        address: IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)),
        port: 40_000,
        session_id: 77,
        session_version: 1,
    };

    fn check(
        offer: &str,
        expect: Result<(Codec, u8, Option<u8>, &str, Direction), NegotiationError>,
    ) {
        let sd = SessionDescription::parse(offer.as_bytes()).expect("offer parses");
        let got = negotiate(&sd).map(|n| {
            (
                n.codec,
                n.payload_type,
                n.telephone_event,
                n.remote.to_string(),
                n.direction,
            )
        });
        assert_eq!(
            got,
            expect.map(|(c, pt, te, addr, d)| (c, pt, te, addr.to_owned(), d))
        );
    }

    const SIPP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
        c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0 101\r\n\
        a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\na=ptime:20\r\n";

    #[test]
    fn chooses_in_the_offerers_order() {
        use Codec::*;
        use Direction::*;
        check(SIPP, Ok((Pcma, 8, Some(101), "127.0.0.1:6000", SendRecv)));
        // PCMU first, no telephone-event, media-level c= over session-level.
        check(
            "v=0\no=- 1 1 IN IP4 1.1.1.1\ns=-\nc=IN IP4 1.1.1.1\nt=0 0\n\
             m=audio 5004 RTP/AVP 18 0 8\nc=IN IP4 192.0.2.7\na=sendonly\n",
            Ok((Pcmu, 0, None, "192.0.2.7:5004", RecvOnly)),
        );
        // IPv6, a dynamic type mapped to PCMU, session-level direction.
        check(
            "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\na=recvonly\r\n\
             m=audio 7000 RTP/AVP 96 97\r\na=rtpmap:96 PCMU/8000/1\r\na=rtpmap:97 telephone-event/8000\r\n",
            Ok((Pcmu, 96, Some(97), "[2001:db8::1]:7000", SendOnly)),
        );
        // Video first (skipped), then audio.
        check(
            "v=0\r\nc=IN IP4 10.1.1.1\r\nm=video 9000 RTP/AVP 31\r\nm=audio 9002 RTP/AVP 0\r\na=inactive\r\n",
            Ok((Pcmu, 0, None, "10.1.1.1:9002", Inactive)),
        );
    }

    #[test]
    fn unacceptable_offers_are_488() {
        use NegotiationError::*;
        // Opus and G.722 only.
        check(
            "v=0\r\nc=IN IP4 10.1.1.1\r\nm=audio 9000 RTP/AVP 111 9\r\na=rtpmap:111 opus/48000/2\r\n",
            Err(NoAcceptableCodec),
        );
        // PCMU at the wrong rate.
        check(
            "v=0\r\nc=IN IP4 10.1.1.1\r\nm=audio 9000 RTP/AVP 0\r\na=rtpmap:0 PCMU/16000\r\n",
            Err(NoAcceptableCodec),
        );
        // Secure RTP, a disabled stream, or video only: no usable audio.
        check(
            "v=0\r\nc=IN IP4 10.1.1.1\r\nm=audio 9000 RTP/SAVP 0\r\n",
            Err(NoAudio),
        );
        check(
            "v=0\r\nc=IN IP4 10.1.1.1\r\nm=audio 0 RTP/AVP 0\r\n",
            Err(NoAudio),
        );
        check(
            "v=0\r\nc=IN IP4 10.1.1.1\r\nm=video 9000 RTP/AVP 31\r\n",
            Err(NoAudio),
        );
        check("v=0\r\nm=audio 9000 RTP/AVP 0\r\n", Err(NoConnection));
        assert_eq!(NoAcceptableCodec.sip_status(), 488);
    }

    #[test]
    fn malformed_descriptions_are_errors() {
        let parse = |s: &str| SessionDescription::parse(s.as_bytes());
        assert_eq!(parse(""), Err(SdpError::BadVersion));
        assert_eq!(parse("v=1\r\n"), Err(SdpError::BadVersion));
        assert_eq!(parse("v=0\r\nxx\r\n"), Err(SdpError::BadLine(2)));
        assert_eq!(
            parse("v=0\r\nc=IN IP4 ::1\r\n"),
            Err(SdpError::BadConnection(2))
        );
        assert_eq!(
            parse("v=0\r\nm=audio x RTP/AVP 0\r\n"),
            Err(SdpError::BadMedia(2))
        );
        assert_eq!(
            parse("v=0\r\nm=audio 1 RTP/AVP\r\n"),
            Err(SdpError::BadMedia(2))
        );
        assert_eq!(
            parse("v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:300 X/8000\r\n"),
            Err(SdpError::BadAttribute(3))
        );
        assert_eq!(
            SessionDescription::parse(&[b'v'; MAX_SDP_BYTES + 1]),
            Err(SdpError::TooLarge(MAX_SDP_BYTES + 1))
        );
        assert_eq!(
            SessionDescription::parse(b"v=0\r\n\xff"),
            Err(SdpError::NotText)
        );
        let many = format!("v=0\r\n{}", "m=audio 1 RTP/AVP 0\r\n".repeat(MAX_MEDIA + 1));
        assert_eq!(parse(&many), Err(SdpError::TooMany(MAX_MEDIA + 2)));
    }

    #[test]
    fn answer_mirrors_the_offer() {
        let offer_text = "v=0\r\nc=IN IP4 10.1.1.1\r\nm=video 9000 RTP/AVP 31\r\n\
             m=audio 9002 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n";
        let sd = SessionDescription::parse(offer_text.as_bytes()).unwrap();
        let chosen = negotiate(&sd).unwrap();
        let text = answer(&sd, &chosen, &LOCAL);
        assert_eq!(
            text,
            "v=0\r\no=vss 77 1 IN IP4 10.0.0.2\r\ns=vss\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
             m=video 0 RTP/AVP 31\r\n\
             m=audio 40000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=recvonly\r\n"
        );
        // Our answer, read back as the remote would, gives the same choice.
        let back = negotiate(&SessionDescription::parse(text.as_bytes()).unwrap()).unwrap();
        assert_eq!((back.codec, back.telephone_event), (Codec::Pcma, Some(101)));
        assert_eq!(back.remote, "10.0.0.2:40000".parse().unwrap());
        assert_eq!(back.direction, Direction::SendOnly);
    }

    #[test]
    fn our_offer_parses_and_negotiates() {
        let text = offer(&LOCAL);
        let sd = SessionDescription::parse(text.as_bytes()).unwrap();
        let n = negotiate(&sd).unwrap();
        assert_eq!(
            (n.codec, n.payload_type, n.telephone_event, n.remote_ptime),
            (Codec::Pcmu, 0, Some(101), Some(20))
        );
        assert_eq!(sd.media[0].formats, vec!["0", "8", "101"]);
    }
}
