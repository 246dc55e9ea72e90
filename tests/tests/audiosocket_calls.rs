//! Calls streamed by the real `hubd` between an emulated GSM modem and an
//! AudioSocket server (Asterisk's protocol; the AI call processor): one
//! AUTO slot with `audiosocket = <test server>` and no `[sip]` at all.
//!
//! - A call ringing on the modem: the slot answers it, the server receives
//!   the UUID frame first (`01 00 10` + 16 bytes), then the modem's 425 Hz
//!   tone in `10 01 40` + 320-byte frames; the server's 1 kHz tone is heard
//!   on the modem's voice port; the modem's caller hangs up → the server
//!   receives `00 00 00` and the connection closes; the CDR names the
//!   stream's UUID.
//! - The server hangs up first → the modem's call is hung up, the slot
//!   returns to READY.
//! - The server is not listening → the slot does not get stuck.
//! - A call the slot dialled (local API) is streamed once answered.
//!
//! Waits are for observable states with deadlines; nothing sleeps.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use vss_tests::audiosocket::{
    AUDIO, AudioSocketServer, FRAME_BYTES, Received, ServerTone, uuid_text,
};
use vss_tests::modem::{Callee, Identity, ModemConfig, Profile, Tone};
use vss_tests::modem_hub::ModemHub;
use vss_tests::{post_json, tone, wait_for};

const CALLER: &str = "+4930123456";
const MODEM_TONE_HZ: f64 = 425.0;
const SERVER_TONE_HZ: f64 = 1000.0;
/// One second of 8 kHz s16le.
const SECOND_BYTES: usize = 16_000;

/// One emulated modem and a hub whose slot 1 streams its calls to `server`.
struct Bed(ModemHub);

impl std::ops::Deref for Bed {
    type Target = ModemHub;
    fn deref(&self) -> &ModemHub {
        &self.0
    }
}

impl Bed {
    fn start(server: SocketAddr, callee: Callee) -> Bed {
        let mut config = ModemConfig::new(
            Profile::HuaweiE1550,
            Identity::from_seed(62, 0, Profile::HuaweiE1550),
        );
        config.callee = callee;
        config.tone = Some(Tone {
            freq_hz: MODEM_TONE_HZ,
            amplitude: 8_000,
            also_hz: None,
        });
        Bed(ModemHub::start(
            config,
            "hub-audiosocket",
            "",
            &format!("recording = \"all\"\naudiosocket = \"{server}\""),
        ))
    }

    /// `AT+CHUP` commands the modem received.
    fn hang_ups(&self) -> usize {
        self.modem_got("AT+CHUP")
    }
}

/// Waits until the server has received `n` audio frames.
fn wait_audio(server: &AudioSocketServer, n: usize) -> Received {
    wait_for(
        &format!("{n} audio frames at the AudioSocket server"),
        Duration::from_secs(20),
        || {
            let received = server.received();
            (received.audio_payloads().len() >= n).then_some(received)
        },
    )
}

/// Checks the exact framing: the UUID frame first, then only 20 ms audio
/// frames (and at most a hangup at the very end).
fn assert_framing(received: &Received) {
    let first = received.first().expect("a first frame");
    assert_eq!(
        first.len(),
        19,
        "the UUID frame is 3 + 16 bytes: {first:02x?}"
    );
    assert_eq!(first[..3], [0x01, 0x00, 0x10], "the UUID frame comes first");
    let uuid = received.uuid().expect("a UUID");
    assert_eq!(uuid[6] >> 4, 4, "a version 4 UUID");
    let last = received.frames.len() - 1;
    for (i, frame) in received.frames.iter().enumerate().skip(1) {
        if i == last && frame[..] == [0x00, 0x00, 0x00] {
            continue;
        }
        assert_eq!(frame.len(), 3 + FRAME_BYTES, "frame {i}");
        assert_eq!(frame[..3], [AUDIO, 0x01, 0x40], "frame {i}");
    }
    assert!(received.trailing.is_empty(), "no partial frame");
}

/// The samples of the audio frames the server received.
fn server_heard(received: &Received) -> Vec<i16> {
    let bytes: Vec<u8> = received.audio_payloads().concat();
    tone::samples_from_s16le(&bytes)
}

/// Waits until the last second on the modem's voice port is the server's
/// tone.
fn wait_server_tone_on_modem(bed: &Bed) {
    wait_for(
        "the server's 1 kHz tone on the modem's voice port",
        Duration::from_secs(20),
        || {
            let bytes = bed.modem.voice_received();
            let tail = &bytes[bytes.len().saturating_sub(SECOND_BYTES)..];
            let samples = tone::samples_from_s16le(tail);
            (samples.len() >= SECOND_BYTES / 2
                && tone::tone_purity(&samples, SERVER_TONE_HZ, 8000) > 0.5)
                .then_some(())
        },
    );
}

#[test]
fn a_call_ringing_on_the_modem_is_streamed_to_the_audiosocket_server_both_ways() {
    let server = AudioSocketServer::start(Some(ServerTone {
        freq_hz: SERVER_TONE_HZ,
        amplitude: 8_000,
    }));
    let bed = Bed::start(server.addr(), Callee::default());
    bed.modem.incoming_call(CALLER).expect("the call rings");
    bed.wait_state(&["ACTIVE_CALL"], Duration::from_secs(15));
    assert!(
        bed.modem.log().commands.iter().any(|c| c == "ATA"),
        "the slot answered the modem's call"
    );

    // The modem's 425 Hz tone reaches the server in exact 20 ms frames.
    let received = wait_audio(&server, 50);
    assert_framing(&received);
    let heard = server_heard(&received);
    let tail = &heard[heard.len() - 8_000..];
    let (frequency, _) = tone::dominant_frequency(tail, 8000).expect("audio at the server");
    assert!(
        (frequency - MODEM_TONE_HZ).abs() <= 50.0,
        "the server heard {frequency} Hz"
    );
    assert!(tone::tone_purity(tail, MODEM_TONE_HZ, 8000) > 0.5);

    // The server's 1 kHz tone is heard on the modem's voice port.
    wait_server_tone_on_modem(&bed);

    // The modem's caller hangs up: a hangup frame, then the connection closes.
    assert!(bed.modem.remote_hangup(), "a call to hang up");
    let received = wait_for(
        "the hangup frame and the close",
        Duration::from_secs(10),
        || {
            let received = server.received();
            (received.hangup() && received.closed).then_some(received)
        },
    );
    assert_eq!(
        received.frames.last().map(Vec::as_slice),
        Some(&[0x00, 0x00, 0x00][..]),
        "the hangup frame is the last"
    );
    assert_framing(&received);
    bed.wait_state(&["POSTCALL", "READY"], Duration::from_secs(10));

    // The CDR keeps the stream: server, the UUID sent, how it ended.
    let uuid = received.uuid().expect("a UUID");
    let cdr = bed.cdr();
    assert_eq!(cdr["remote_number"], CALLER, "{cdr}");
    assert_eq!(cdr["direction"], "inbound", "{cdr}");
    assert!(cdr["answered_at_ms"].is_number(), "{cdr}");
    let stream = &cdr["audiosocket"];
    assert_eq!(stream["uuid"], uuid_text(&uuid), "{cdr}");
    assert_eq!(stream["server"], server.addr().to_string(), "{cdr}");
    assert_eq!(stream["end"], "call_ended", "{cdr}");
    assert!(stream["frames_out"].as_u64() >= Some(50), "{cdr}");
    assert!(stream["frames_in"].as_u64() >= Some(1), "{cdr}");
    // Measured and recorded like a SIP call.
    assert!(cdr["media"]["verdict"].is_string(), "{cdr}");
    assert!(cdr["recording"].is_string(), "{cdr}");
}

#[test]
fn the_server_hanging_up_hangs_up_the_modem_and_the_slot_is_ready_again() {
    let server = AudioSocketServer::start(Some(ServerTone::default()));
    let bed = Bed::start(server.addr(), Callee::default());
    bed.modem.incoming_call(CALLER).expect("the call rings");
    bed.wait_state(&["ACTIVE_CALL"], Duration::from_secs(15));
    wait_audio(&server, 10);
    let before = bed.hang_ups();

    server.hang_up();
    wait_for("the modem hung up", Duration::from_secs(10), || {
        (bed.hang_ups() > before).then_some(())
    });
    bed.wait_state(&["READY"], Duration::from_secs(20));
    wait_for("the connection closed", Duration::from_secs(10), || {
        server.received().closed.then_some(())
    });
    let cdr = bed.cdr();
    assert_eq!(cdr["audiosocket"]["end"], "server_hangup", "{cdr}");
    assert_eq!(cdr["end_cause"], "audiosocket_server_hangup", "{cdr}");
    let uuid = server.received().uuid().expect("a UUID");
    assert_eq!(cdr["audiosocket"]["uuid"], uuid_text(&uuid), "{cdr}");
}

#[test]
fn an_unreachable_server_does_not_leave_the_slot_stuck() {
    let addr = AudioSocketServer::unused_addr();
    let bed = Bed::start(addr, Callee::default());
    bed.modem.incoming_call(CALLER).expect("the call rings");
    wait_for("the modem hung up", Duration::from_secs(15), || {
        (bed.hang_ups() > 0).then_some(())
    });
    bed.wait_state(&["READY"], Duration::from_secs(30));
    assert!(
        !bed.modem.log().commands.iter().any(|c| c == "ATA"),
        "the call was never answered"
    );
    let cdr = bed.cdr();
    let end = cdr["audiosocket"]["end"].as_str().unwrap_or_default();
    assert!(end.starts_with("error: "), "{cdr}");
    assert!(end.contains(&addr.to_string()), "{cdr}");
    let log = bed.log();
    let warning = log
        .lines()
        .find(|l| l.contains("AudioSocket server unreachable"))
        .unwrap_or_else(|| panic!("no warning in the log:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&addr.to_string()), "{warning}");
}

#[test]
fn a_call_the_slot_dialled_is_streamed_once_answered() {
    let server = AudioSocketServer::start(Some(ServerTone {
        freq_hz: SERVER_TONE_HZ,
        amplitude: 8_000,
    }));
    let bed = Bed::start(
        server.addr(),
        Callee::Answers {
            after: Duration::from_millis(300),
            hangs_up_after: None,
        },
    );
    let (status, body) = post_json(
        bed.api,
        "/api/slots/1/dial",
        &json!({ "number": "+79161234567" }),
    );
    assert_eq!(status, 200, "{body}");
    bed.wait_state(&["ACTIVE_CALL"], Duration::from_secs(15));
    let received = wait_audio(&server, 25);
    assert_framing(&received);
    wait_server_tone_on_modem(&bed);

    server.hang_up();
    bed.wait_state(&["READY"], Duration::from_secs(20));
    let cdr = bed.cdr();
    assert_eq!(cdr["direction"], "outbound", "{cdr}");
    assert_eq!(cdr["audiosocket"]["end"], "server_hangup", "{cdr}");
}

#[test]
fn a_key_the_gsm_caller_presses_reaches_the_server_as_one_dtmf_frame() {
    let server = AudioSocketServer::start(None);
    let bed = Bed::start(server.addr(), Callee::default());
    // The caller holds the key 5 (770 + 1336 Hz in band) for the whole call.
    bed.modem.set_tone(Some(Tone {
        freq_hz: 770.0,
        amplitude: 6_000,
        also_hz: Some(1336.0),
    }));
    bed.modem.incoming_call(CALLER).expect("the call rings");
    wait_audio(&server, 25);
    assert!(bed.modem.remote_hangup(), "a call to hang up");
    bed.wait_state(&["READY"], Duration::from_secs(20));
    wait_for("the connection closed", Duration::from_secs(10), || {
        server.received().closed.then_some(())
    });
    // One press, however long: exactly one `03 00 01 '5'` frame.
    let received = server.received();
    let dtmf: Vec<&[u8]> = received
        .frames
        .iter()
        .map(Vec::as_slice)
        .filter(|frame| frame.first() == Some(&0x03))
        .collect();
    assert_eq!(dtmf, [&[0x03, 0x00, 0x01, b'5'][..]]);
}
