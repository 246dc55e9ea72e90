//! The sync protocol's bytes: codec round trips and validation, framing under
//! every chunking, framing errors, and version negotiation.

use vss_shared::HubId;
use vss_shared::sync::codec::{EVENT_OVERHEAD_BYTES, event_wire_len};
use vss_shared::sync::frame::{DEFAULT_MAX_FRAME_BYTES, HEADER_BYTES};
use vss_shared::sync::version::{self, CURRENT, SUPPORTED};
use vss_shared::sync::{
    Ack, Close, CloseCode, CodecError, Command, CommandId, CommandOutcome, CommandResult,
    ConfigApplied, ConfigOutcome, ConfigPush, ControlMessage, FrameConfig, FrameDecoder,
    FrameError, Heartbeat, HeartbeatAck, Hello, HubMessage, OutboxBatch, OutboxEvent, OutboxState,
    VersionError, VersionRange, Welcome, WireMessage, encode_frame,
};

/// A tiny deterministic RNG (xorshift64*), so tests need no `rand`.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn event(seq: u64, kind: &str, payload: &str) -> OutboxEvent {
    OutboxEvent {
        seq,
        kind: kind.to_owned(),
        payload: payload.as_bytes().to_vec(),
        created_at_ms: 1_700_000_000_000 + seq as i64,
    }
}

fn command_id(s: &str) -> CommandId {
    CommandId::new(s).expect("test id is valid")
}

/// Every hub message variant, with fields at defaults and away from them.
fn hub_messages() -> Vec<HubMessage> {
    vec![
        HubMessage::Hello(Hello {
            hub_id: HubId::new("msk-01").expect("valid"),
            versions: VersionRange::new(1, 3).expect("valid"),
            software_version: "0.3.1".into(),
            config_revision: Some(42),
            outbox: OutboxState::new(100, 250).expect("valid"),
        }),
        HubMessage::Hello(Hello {
            hub_id: HubId::new("a").expect("valid"),
            versions: SUPPORTED,
            software_version: String::new(),
            config_revision: Some(0),
            outbox: OutboxState::empty(),
        }),
        HubMessage::Hello(Hello {
            hub_id: HubId::new("b").expect("valid"),
            versions: SUPPORTED,
            software_version: String::new(),
            config_revision: None,
            outbox: OutboxState::new(u64::MAX, u64::MAX).expect("valid"),
        }),
        HubMessage::OutboxBatch(OutboxBatch {
            events: vec![
                event(1, "slot_transition", r#"{"slot_id":1,"from":"IDLE"}"#),
                event(2, "cdr", ""),
                event(3, "sms", "\u{0}\u{ff}binary-ish"),
            ],
        }),
        HubMessage::OutboxBatch(OutboxBatch { events: vec![] }),
        HubMessage::ConfigApplied(ConfigApplied {
            revision: 7,
            outcome: ConfigOutcome::Applied,
        }),
        HubMessage::ConfigApplied(ConfigApplied {
            revision: 8,
            outcome: ConfigOutcome::Rejected("slot 6001 assigned twice".into()),
        }),
        HubMessage::ConfigApplied(ConfigApplied {
            revision: 0,
            outcome: ConfigOutcome::Rejected(String::new()),
        }),
        HubMessage::CommandResult(CommandResult {
            id: command_id("0b5d8f0e-3c1a-4f7e-9d6b-2a4c8e1f0a37"),
            outcome: CommandOutcome::Done,
        }),
        HubMessage::CommandResult(CommandResult {
            id: command_id("c2"),
            outcome: CommandOutcome::Failed("modem did not answer".into()),
        }),
        HubMessage::CommandResult(CommandResult {
            id: command_id("c3"),
            outcome: CommandOutcome::Failed(String::new()),
        }),
        HubMessage::CommandResult(CommandResult {
            id: command_id("c4"),
            outcome: CommandOutcome::Expired,
        }),
        HubMessage::CommandResult(CommandResult {
            id: command_id("c5"),
            outcome: CommandOutcome::Unknown,
        }),
        HubMessage::Heartbeat(Heartbeat { sent_at_ms: 0 }),
        HubMessage::Heartbeat(Heartbeat {
            sent_at_ms: u64::MAX,
        }),
    ]
}

/// Every control-plane message variant.
fn control_messages() -> Vec<ControlMessage> {
    vec![
        ControlMessage::Welcome(Welcome {
            version: 1,
            server_time_ms: 1_700_000_000_000,
            committed_seq: 99,
        }),
        ControlMessage::Welcome(Welcome {
            version: 3,
            server_time_ms: -5,
            committed_seq: 0,
        }),
        ControlMessage::Ack(Ack { up_to_seq: 0 }),
        ControlMessage::Ack(Ack {
            up_to_seq: u64::MAX,
        }),
        ControlMessage::ConfigPush(ConfigPush {
            revision: 12,
            document: b"[[slots]]\nid = 1\n".to_vec(),
        }),
        ControlMessage::ConfigPush(ConfigPush {
            revision: 0,
            document: vec![],
        }),
        ControlMessage::Command(Command {
            id: command_id("cmd-1"),
            kind: "slot_restart".into(),
            args: br#"{"slot_id":3}"#.to_vec(),
            expires_at_ms: 1_700_000_060_000,
        }),
        ControlMessage::HeartbeatAck(HeartbeatAck {
            sent_at_ms: 123,
            server_time_ms: 456,
        }),
        ControlMessage::Close(Close::new(CloseCode::OutboxGap, "events lost")),
        ControlMessage::Close(Close::new(CloseCode::Other(77), "")),
    ]
}

// ---------------------------------------------------------------- codec

#[test]
fn every_message_round_trips() {
    for msg in hub_messages() {
        let bytes = msg.encode();
        assert_eq!(HubMessage::decode(&bytes), Ok(msg.clone()), "{msg:?}");
    }
    for msg in control_messages() {
        let bytes = msg.encode();
        assert_eq!(ControlMessage::decode(&bytes), Ok(msg.clone()), "{msg:?}");
    }
}

#[test]
fn every_close_code_round_trips() {
    let codes = [
        CloseCode::Normal,
        CloseCode::ProtocolError,
        CloseCode::UnsupportedVersion,
        CloseCode::FrameTooLarge,
        CloseCode::MalformedMessage,
        CloseCode::OutboxGap,
        CloseCode::SequenceRegressed,
        CloseCode::Unauthorized,
        CloseCode::Superseded,
        CloseCode::Other(0),
        CloseCode::Other(1000),
    ];
    for code in codes {
        assert_eq!(CloseCode::from_wire(code.to_wire()), code);
        let msg = ControlMessage::Close(Close::new(code, "x"));
        assert_eq!(ControlMessage::decode(&msg.encode()), Ok(msg));
    }
}

/// Hand-assembled protobuf for cases the domain types cannot produce.
mod raw {
    /// A length-delimited field.
    pub fn ld(tag: u32, body: &[u8]) -> Vec<u8> {
        let mut out = varint(u64::from(tag << 3 | 2));
        out.extend(varint(body.len() as u64));
        out.extend_from_slice(body);
        out
    }

    /// A varint field.
    pub fn vi(tag: u32, value: u64) -> Vec<u8> {
        let mut out = varint(u64::from(tag << 3));
        out.extend(varint(value));
        out
    }

    pub fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    pub fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }
}

#[test]
fn invalid_hub_messages_are_errors_not_panics() {
    use raw::{cat, ld, vi};
    let hello = |fields: Vec<u8>| ld(1, &fields);
    let good_hello = || vec![ld(1, b"msk-01"), vi(2, 1), vi(3, 1), vi(6, 1), vi(7, 1)];
    // (name, bytes, expected error)
    let cases: Vec<(&str, Vec<u8>, CodecError)> = vec![
        (
            "empty envelope",
            vec![],
            CodecError::MissingField {
                message: "HubEnvelope",
                field: "msg",
            },
        ),
        (
            "unknown envelope variant only",
            ld(99, b""),
            CodecError::MissingField {
                message: "HubEnvelope",
                field: "msg",
            },
        ),
        (
            "hello without hub id",
            hello(cat(&good_hello()[1..])),
            CodecError::InvalidField {
                message: "Hello",
                field: "hub_id",
                reason: "hub id is empty".into(),
            },
        ),
        (
            "hello with version 0",
            hello(cat(&[ld(1, b"h"), vi(3, 1), vi(6, 1), vi(7, 1)])),
            CodecError::InvalidField {
                message: "Hello",
                field: "min_version",
                reason: "invalid protocol version range 0..=1".into(),
            },
        ),
        (
            "hello with min above max",
            hello(cat(&[ld(1, b"h"), vi(2, 3), vi(3, 2), vi(6, 1), vi(7, 1)])),
            CodecError::InvalidField {
                message: "Hello",
                field: "min_version",
                reason: "invalid protocol version range 3..=2".into(),
            },
        ),
        (
            "hello with first_seq 0",
            hello(cat(&[ld(1, b"h"), vi(2, 1), vi(3, 1), vi(7, 1)])),
            CodecError::InvalidField {
                message: "Hello",
                field: "outbox_first_seq",
                reason: "outbox first_seq is 0; sequence numbers start at 1".into(),
            },
        ),
        (
            "hello with first_seq above next_seq",
            hello(cat(&[ld(1, b"h"), vi(2, 1), vi(3, 1), vi(6, 5), vi(7, 4)])),
            CodecError::InvalidField {
                message: "Hello",
                field: "outbox_first_seq",
                reason: "outbox first_seq 5 is above next_seq 4".into(),
            },
        ),
        (
            "event with seq 0",
            ld(2, &ld(1, &ld(2, b"cdr"))),
            CodecError::MissingField {
                message: "OutboxEvent",
                field: "seq",
            },
        ),
        (
            "event without kind",
            ld(2, &ld(1, &vi(1, 5))),
            CodecError::MissingField {
                message: "OutboxEvent",
                field: "kind",
            },
        ),
        (
            "command result without outcome",
            ld(4, &ld(1, b"c1")),
            CodecError::MissingField {
                message: "CommandResult",
                field: "outcome",
            },
        ),
        (
            "command result with a bad id",
            ld(4, &cat(&[ld(1, b"has space"), ld(2, b"")])),
            CodecError::InvalidField {
                message: "CommandResult",
                field: "command_id",
                reason: "command id contains ' '; only printable ASCII without spaces is allowed"
                    .into(),
            },
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(HubMessage::decode(&bytes), Err(expected), "{name}");
    }
    // And the good hello really is good.
    assert!(HubMessage::decode(&hello(cat(&good_hello()))).is_ok());
}

#[test]
fn invalid_control_messages_are_errors_not_panics() {
    use raw::{cat, ld, vi};
    let cases: Vec<(&str, Vec<u8>, CodecError)> = vec![
        (
            "empty envelope",
            vec![],
            CodecError::MissingField {
                message: "ControlEnvelope",
                field: "msg",
            },
        ),
        (
            "welcome without version",
            ld(1, &vi(3, 10)),
            CodecError::MissingField {
                message: "Welcome",
                field: "version",
            },
        ),
        (
            "command without kind",
            ld(4, &ld(1, b"c1")),
            CodecError::MissingField {
                message: "Command",
                field: "kind",
            },
        ),
        (
            "command with an empty id",
            ld(4, &cat(&[ld(2, b"slot_restart")])),
            CodecError::InvalidField {
                message: "Command",
                field: "id",
                reason: "command id is empty".into(),
            },
        ),
        (
            "command with a 65-byte id",
            ld(4, &cat(&[ld(1, &[b'a'; 65]), ld(2, b"k")])),
            CodecError::InvalidField {
                message: "Command",
                field: "id",
                reason: "command id is 65 bytes long; at most 64 are allowed".into(),
            },
        ),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(ControlMessage::decode(&bytes), Err(expected), "{name}");
    }
}

#[test]
fn garbage_bytes_are_protobuf_errors() {
    for bytes in [
        &[0xff][..],
        &[0x0a, 0x05, 0x01],                   // length beyond the end
        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff], // runaway varint
        &[0x0f],                               // wire type 7
    ] {
        assert!(
            matches!(HubMessage::decode(bytes), Err(CodecError::Protobuf(_))),
            "{bytes:?}"
        );
        assert!(
            matches!(ControlMessage::decode(bytes), Err(CodecError::Protobuf(_))),
            "{bytes:?}"
        );
    }
}

#[test]
fn event_wire_len_bounds_the_encoded_size() {
    let mut rng = XorShift(7);
    for seq in [1, 127, 128, 1 << 35, u64::MAX] {
        for payload_len in [0, 1, 127, 128, 20_000] {
            let payload: String = (0..payload_len)
                .map(|_| char::from(b'a' + rng.below(26) as u8))
                .collect();
            let mut e = event(seq, "slot_transition", &payload);
            e.created_at_ms = i64::MIN; // the longest varint
            let one = HubMessage::OutboxBatch(OutboxBatch {
                events: vec![e.clone()],
            })
            .encode()
            .len();
            let none = HubMessage::OutboxBatch(OutboxBatch { events: vec![] })
                .encode()
                .len();
            assert!(
                one - none <= event_wire_len(&e),
                "seq {seq} len {payload_len}"
            );
            assert!(event_wire_len(&e) - (one - none) <= EVENT_OVERHEAD_BYTES);
        }
    }
}

// ---------------------------------------------------------------- frame

fn stream_of<M: WireMessage>(msgs: &[M]) -> Vec<u8> {
    msgs.iter()
        .flat_map(|m| encode_frame(m, &FrameConfig::default()).expect("fits"))
        .collect()
}

/// Feeds `stream` cut at `cuts` and returns the decoded messages.
fn decode_chunked<M: WireMessage>(
    stream: &[u8],
    chunk_lens: impl Iterator<Item = usize>,
) -> Vec<M> {
    let mut decoder = FrameDecoder::<M>::new(FrameConfig::default());
    let mut out = Vec::new();
    let mut rest = stream;
    let mut lens = chunk_lens;
    while !rest.is_empty() {
        let n = lens.next().unwrap_or(rest.len()).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        decoder.decode(chunk, &mut out).expect("valid stream");
        assert!(decoder.buffered() <= HEADER_BYTES + DEFAULT_MAX_FRAME_BYTES as usize);
        rest = tail;
    }
    assert_eq!(decoder.finish(), Ok(()));
    out
}

#[test]
fn frames_decode_in_one_chunk_byte_by_byte_and_in_random_chunks() {
    let hub = hub_messages();
    let control = control_messages();
    let hub_stream = stream_of(&hub);
    let control_stream = stream_of(&control);

    assert_eq!(
        decode_chunked::<HubMessage>(&hub_stream, std::iter::empty()),
        hub
    );
    assert_eq!(
        decode_chunked::<HubMessage>(&hub_stream, std::iter::repeat(1)),
        hub
    );
    assert_eq!(
        decode_chunked::<ControlMessage>(&control_stream, std::iter::repeat(1)),
        control
    );
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        // Small chunks split headers; large ones carry several frames.
        let max = [2, 5, 17, 64, 1000][round % 5];
        let lens: Vec<usize> = (0..hub_stream.len()).map(|_| rng.below(max) + 1).collect();
        assert_eq!(
            decode_chunked::<HubMessage>(&hub_stream, lens.into_iter()),
            hub,
            "round {round}"
        );
        let lens: Vec<usize> = (0..control_stream.len())
            .map(|_| rng.below(max) + 1)
            .collect();
        assert_eq!(
            decode_chunked::<ControlMessage>(&control_stream, lens.into_iter()),
            control,
            "round {round}"
        );
    }
}

#[test]
fn empty_chunks_change_nothing() {
    let msgs = hub_messages();
    let stream = stream_of(&msgs);
    let mut decoder = FrameDecoder::<HubMessage>::new(FrameConfig::default());
    let mut out = Vec::new();
    for byte in &stream {
        assert_eq!(decoder.decode(&[], &mut out), Ok(0));
        decoder
            .decode(std::slice::from_ref(byte), &mut out)
            .expect("valid");
    }
    assert_eq!(out, msgs);
}

/// (name, stream, max frame bytes, messages decoded before the error, error)
fn bad_stream_cases() -> Vec<(&'static str, Vec<u8>, u32, usize, FrameError)> {
    let good = encode_frame(
        &HubMessage::Heartbeat(Heartbeat { sent_at_ms: 5 }),
        &FrameConfig::default(),
    )
    .expect("fits");
    let with_good = |bad: &[u8]| [good.clone(), bad.to_vec()].concat();
    vec![
        ("zero length", vec![0, 0, 0, 0], 1024, 0, FrameError::Empty),
        (
            "zero length after a good frame",
            with_good(&[0, 0, 0, 0, 1, 2, 3]),
            1024,
            1,
            FrameError::Empty,
        ),
        (
            "oversize",
            vec![0, 0, 4, 1],
            1024,
            0,
            FrameError::TooLarge {
                len: 1025,
                max: 1024,
            },
        ),
        (
            "oversize at the default limit",
            (DEFAULT_MAX_FRAME_BYTES + 1).to_be_bytes().to_vec(),
            DEFAULT_MAX_FRAME_BYTES,
            0,
            FrameError::TooLarge {
                len: DEFAULT_MAX_FRAME_BYTES + 1,
                max: DEFAULT_MAX_FRAME_BYTES,
            },
        ),
        (
            "u32::MAX length",
            with_good(&[0xff, 0xff, 0xff, 0xff]),
            1024,
            1,
            FrameError::TooLarge {
                len: u32::MAX,
                max: 1024,
            },
        ),
        (
            "garbage body",
            with_good(&[0, 0, 0, 2, 0xff, 0xff]),
            1024,
            1,
            FrameError::Decode(CodecError::Protobuf(
                match HubMessage::decode(&[0xff, 0xff]) {
                    Err(CodecError::Protobuf(e)) => e,
                    other => panic!("expected a protobuf error, got {other:?}"),
                },
            )),
        ),
        (
            "valid protobuf, only an unknown field",
            with_good(&[0, 0, 0, 3, 0x90, 0x03, 0x01]),
            1024,
            1,
            FrameError::Decode(CodecError::MissingField {
                message: "HubEnvelope",
                field: "msg",
            }),
        ),
    ]
}

#[test]
fn bad_frames_are_typed_errors_in_any_chunking() {
    for (name, stream, max, good_before, expected) in bad_stream_cases() {
        for chunk in [usize::MAX, 1, 3] {
            let config = FrameConfig {
                max_frame_bytes: max,
            };
            let mut decoder = FrameDecoder::<HubMessage>::new(config);
            let mut out = Vec::new();
            let mut result = Ok(0);
            for piece in stream.chunks(chunk.min(stream.len())) {
                result = decoder.decode(piece, &mut out);
                if result.is_err() {
                    break;
                }
            }
            assert_eq!(result, Err(expected.clone()), "{name} in chunks of {chunk}");
            assert_eq!(
                out.len(),
                good_before,
                "{name}: good frames before the bad one"
            );
            // Failed for good, and holding nothing.
            assert_eq!(
                decoder.decode(&[0, 0, 0, 1, 0], &mut out),
                Err(FrameError::Failed)
            );
            assert_eq!(decoder.finish(), Err(FrameError::Failed));
            assert_eq!(decoder.buffered(), 0);
        }
    }
}

#[test]
fn frame_errors_map_to_close_codes() {
    let cases = [
        (FrameError::Empty, CloseCode::MalformedMessage),
        (
            FrameError::TooLarge { len: 9, max: 8 },
            CloseCode::FrameTooLarge,
        ),
        (
            FrameError::MessageTooLarge { len: 9, max: 8 },
            CloseCode::FrameTooLarge,
        ),
        (
            FrameError::Truncated { buffered: 3 },
            CloseCode::MalformedMessage,
        ),
        (FrameError::Failed, CloseCode::MalformedMessage),
    ];
    for (error, code) in cases {
        let close = error.close();
        assert_eq!(close.code, code, "{error}");
        assert_eq!(close.reason, error.to_string());
    }
}

#[test]
fn a_stream_ending_inside_a_frame_is_truncated() {
    let stream = stream_of(&control_messages());
    for cut in [1, 3, 4, 5, stream.len() - 1] {
        let mut decoder = FrameDecoder::<ControlMessage>::new(FrameConfig::default());
        let mut out = Vec::new();
        decoder
            .decode(&stream[..cut], &mut out)
            .expect("valid so far");
        assert!(
            matches!(decoder.finish(), Err(FrameError::Truncated { buffered }) if buffered > 0),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_slow_large_frame_is_buffered_up_to_its_size_only() {
    let big = HubMessage::OutboxBatch(OutboxBatch {
        events: vec![event(1, "cdr", &"x".repeat(100_000))],
    });
    let frame = encode_frame(&big, &FrameConfig::default()).expect("fits");
    let mut decoder = FrameDecoder::<HubMessage>::new(FrameConfig::default());
    let mut out = Vec::new();
    for piece in frame.chunks(4096) {
        decoder.decode(piece, &mut out).expect("valid");
        assert!(decoder.buffered() <= frame.len());
    }
    assert_eq!(out, vec![big]);
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn encoding_refuses_a_message_larger_than_the_frame_limit() {
    let msg = ControlMessage::ConfigPush(ConfigPush {
        revision: 1,
        document: vec![7; 2000],
    });
    let small = FrameConfig {
        max_frame_bytes: 1000,
    };
    match encode_frame(&msg, &small) {
        Err(FrameError::MessageTooLarge { len, max: 1000 }) => assert!(len > 2000),
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    let frame = encode_frame(&msg, &FrameConfig::default()).expect("fits");
    assert_eq!(
        u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize,
        frame.len() - HEADER_BYTES
    );
}

// ---------------------------------------------------------------- version

fn range(min: u32, max: u32) -> VersionRange {
    VersionRange::new(min, max).expect("valid range")
}

#[test]
fn negotiation_picks_the_highest_common_version() {
    // (ours, theirs, expected)
    let cases = [
        ((1, 1), (1, 1), Some(1)),
        ((1, 3), (1, 2), Some(2)),
        ((2, 3), (1, 5), Some(3)),
        ((1, 2), (2, 9), Some(2)),
        ((4, 4), (1, 4), Some(4)),
        ((1, 1), (2, 3), None),
        ((3, 5), (1, 2), None),
    ];
    for ((a, b), (c, d), expected) in cases {
        let (ours, theirs) = (range(a, b), range(c, d));
        let got = version::negotiate(ours, theirs);
        match expected {
            Some(v) => {
                assert_eq!(got, Ok(v), "{ours} vs {theirs}");
                assert_eq!(version::negotiate(theirs, ours), Ok(v), "symmetric");
                assert_eq!(version::check_chosen(theirs, v), Ok(v));
            }
            None => {
                assert_eq!(got, Err(VersionError::NoCommonVersion { ours, theirs }));
                let text = got.expect_err("no common version").to_string();
                assert!(text.contains(&ours.to_string()) && text.contains(&theirs.to_string()));
            }
        }
    }
}

#[test]
fn version_ranges_and_choices_are_checked() {
    assert_eq!(
        VersionRange::new(0, 1),
        Err(VersionError::InvalidRange { min: 0, max: 1 })
    );
    assert_eq!(
        VersionRange::new(3, 2),
        Err(VersionError::InvalidRange { min: 3, max: 2 })
    );
    assert_eq!(
        version::check_chosen(range(1, 2), 3),
        Err(VersionError::NotOffered {
            chosen: 3,
            ours: range(1, 2)
        })
    );
    assert_eq!(CURRENT, 1);
    assert!(SUPPORTED.contains(CURRENT));
    assert_eq!(range(1, 3).to_string(), "1..=3");
}
