//! The AudioSocket bridge: a slot's call streamed to an AudioSocket server
//! (Asterisk's protocol; the seeds' AI call processor), with the server's
//! audio played into the call, so an AI agent talks through a GSM slot.
//!
//! One task per call, like the SIP bridges ([`super::bridge`]), and with the
//! same link to the slot's session ([`DeviceLink`]): it never touches the
//! device itself, only asks the session ([`ToDevice`]).
//!
//! - A call ringing on the device ([`stream`] with `answer`): the server is
//!   connected first (its UUID frame sent), then the device answers — a
//!   caller is never answered into a dead line.
//! - A call the slot dialled itself, once the device reports it answered
//!   (`answer` false): the server is connected at once.
//!
//! Then the device's audio is taken and joined to the server through the
//! bridge's [`tap`](super::bridge) — so the call is recorded and its media
//! health measured like a SIP call — by a small pump task moving 20 ms
//! frames between the tap's far side and the [`AudioSocketClient`]. The
//! pump paces the server's audio at one frame per 20 ms with at most
//! [`MAX_LEAD`] frames ahead, so the voice clock's queue (10 frames) never
//! overflows and a server sending faster than real time loses nothing (the
//! client stops reading its socket meanwhile).
//!
//! Ends: the server hangs up, closes or errs → the device hangs up; the
//! device's call ends → a hangup frame goes to the server; hub shutdown →
//! both. A server that cannot be reached → the device's call is hung up
//! (a ringing one never answered), with a warning and `end = "error: …"`.
//! The [`CallOutcome`] carries an [`AudioSocketSession`] for the CDR.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use vss_shared::media::AudioSocketSession;

use super::bridge::{self, BridgeConfig, CallOutcome, DeviceLink, FromDevice, ToDevice};
use crate::device::at_modem::voice::Frame;
use crate::media::audiosocket::{AudioSocketClient, AudioSocketOptions, EndReason};
use crate::media::health::{HealthMeter, MediaHealth};
use crate::media::recording::{RecorderPool, RecordingHandle};

/// One frame of call audio.
const FRAME: Duration = Duration::from_millis(20);
/// Frames queued between the tap and the pump, each way.
const TAP_QUEUE: usize = 8;
/// Most server frames handed toward the device ahead of the 20 ms clock
/// (100 ms): catches up a late frame, stays well inside the voice clock's
/// 10-frame queue.
pub const MAX_LEAD: u32 = 5;

/// Streams the slot's call to the AudioSocket server `server` (`host:port`)
/// until either side ends; `answer`: the call is ringing on the device and
/// is answered once the server is connected.
pub async fn stream(
    device: DeviceLink,
    config: BridgeConfig,
    server: String,
    answer: bool,
    stop: CancellationToken,
) -> CallOutcome {
    stream_with(
        device,
        config,
        server,
        answer,
        stop,
        AudioSocketOptions::default(),
    )
    .await
}

/// [`stream`] with the client's options.
pub async fn stream_with(
    mut device: DeviceLink,
    config: BridgeConfig,
    server: String,
    answer: bool,
    stop: CancellationToken,
    options: AudioSocketOptions,
) -> CallOutcome {
    let uuid = new_uuid();
    let mut session = AudioSocketSession {
        server: server.clone(),
        uuid: hyphenated(&uuid),
        end: String::new(),
        frames_in: 0,
        frames_out: 0,
    };
    let mut outcome = CallOutcome {
        device_call: true,
        ..CallOutcome::default()
    };
    tracing::info!(
        server,
        uuid = session.uuid,
        answer,
        "streaming the call to AudioSocket"
    );

    // Connect first, watching the device's call and the hub.
    let connect = AudioSocketClient::connect(server.clone(), uuid, options);
    tokio::pin!(connect);
    // Answered meanwhile (the local API): nothing left to answer.
    let mut answer = answer;
    let client = loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                session.end = "hub_shutdown".into();
                device.tell(ToDevice::HangUp).await;
                return finish(outcome, session);
            }
            event = device.events.recv() => match event {
                Some(FromDevice::Answered) => answer = false,
                Some(FromDevice::Ended { cause }) => {
                    outcome.device_cause = Some(cause);
                    session.end = "call_ended".into();
                    return finish(outcome, session);
                }
                None => {
                    outcome.device_cause = Some("session_gone".into());
                    session.end = "call_ended".into();
                    return finish(outcome, session);
                }
            },
            connected = &mut connect => match connected {
                Ok(client) => break client,
                Err(e) => {
                    tracing::warn!(
                        server,
                        error = %e,
                        "AudioSocket server unreachable: hanging up the device's call"
                    );
                    session.end = format!("error: {e}");
                    device.tell(ToDevice::HangUp).await;
                    return finish(outcome, session);
                }
            },
        }
    };

    if answer {
        match device.ask(|reply| ToDevice::Answer { reply }).await {
            Some(Ok(())) => {}
            other => {
                tracing::warn!(result = ?other, "the device did not answer; AudioSocket stream hung up");
                outcome.device_cause = Some("answer_failed".into());
                session.end = "error: the device did not answer".into();
                device.tell(ToDevice::HangUp).await;
                let _ = client.hangup().await;
                return finish(outcome, session);
            }
        }
    }
    outcome.answered = true;

    let Some(Some(audio)) = device.ask(|reply| ToDevice::TakeAudio { reply }).await else {
        tracing::warn!("the device has no audio for this call; AudioSocket needs it: hanging up");
        session.end = "error: the device has no audio for this call".into();
        device.tell(ToDevice::HangUp).await;
        let _ = client.hangup().await;
        return finish(outcome, session);
    };

    let cancel = CancellationToken::new();
    let (to_server, from_tap) = mpsc::channel(TAP_QUEUE);
    let (to_tap, from_server) = mpsc::channel(TAP_QUEUE);
    let (detected, digits) = mpsc::channel(bridge::DIGIT_QUEUE);
    let tap = tokio::spawn(bridge::tap(
        audio,
        to_server,
        from_server,
        HealthMeter::new(config.health.clone()),
        recorder(&config),
        detected,
        cancel.clone(),
    ));
    let hangup = CancellationToken::new();
    let mut pump = tokio::spawn(pump(
        client,
        Legs {
            from_tap,
            to_tap,
            digits,
        },
        hangup.clone(),
    ));
    // A bridge aborted mid-call (the session gave up waiting) still ends
    // its pump (hanging up the stream) and its tap (closing the recording).
    let _stop_pump = hangup.clone().drop_guard();
    let _stop_tap = cancel.clone().drop_guard();

    let (pumped, shutdown) = loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                device.tell(ToDevice::HangUp).await;
                hangup.cancel();
                break ((&mut pump).await, true);
            }
            event = device.events.recv() => match event {
                Some(FromDevice::Answered) => {}
                Some(FromDevice::Ended { cause }) => {
                    outcome.device_cause = Some(cause);
                    hangup.cancel();
                    break ((&mut pump).await, false);
                }
                None => {
                    outcome.device_cause = Some("session_gone".into());
                    hangup.cancel();
                    break ((&mut pump).await, false);
                }
            },
            pumped = &mut pump => {
                // The server ended the stream: the device's call ends too.
                device.tell(ToDevice::HangUp).await;
                break (pumped, false);
            }
        }
    };
    match pumped {
        Ok(pumped) => {
            match &pumped.reason {
                EndReason::CallHangup | EndReason::ServerHangup | EndReason::ServerClosed => {}
                reason => tracing::warn!(%reason, "AudioSocket stream failed; the call is hung up"),
            }
            session.end = end_word(&pumped.reason);
            session.frames_in = pumped.frames_in;
            session.frames_out = pumped.frames_out;
        }
        Err(e) => {
            tracing::error!(error = %e, "AudioSocket pump failed");
            session.end = format!("error: {e}");
        }
    }
    if shutdown {
        session.end = "hub_shutdown".into();
    }
    cancel.cancel();
    let (health, recording) = finish_tap(tap).await;
    outcome.health = health;
    outcome.recording = recording;
    finish(outcome, session)
}

/// The CDR's word for how the stream ended.
fn end_word(reason: &EndReason) -> String {
    match reason {
        EndReason::CallHangup => "call_ended".into(),
        EndReason::ServerHangup => "server_hangup".into(),
        EndReason::ServerClosed => "server_closed".into(),
        reason => format!("error: {reason}"),
    }
}

fn finish(mut outcome: CallOutcome, session: AudioSocketSession) -> CallOutcome {
    tracing::info!(
        server = session.server,
        uuid = session.uuid,
        end = session.end,
        frames_in = session.frames_in,
        frames_out = session.frames_out,
        "AudioSocket stream over"
    );
    outcome.audiosocket = Some(session);
    outcome
}

/// The call's recording, when the slot's policy records it: created,
/// encoded and written on the hub's recorder threads, as for a SIP call.
fn recorder(config: &BridgeConfig) -> Option<RecordingHandle> {
    config
        .recording
        .as_ref()
        .map(|(path, recording)| RecorderPool::shared().start(path, &config.meta, recording))
}

async fn finish_tap(
    tap: tokio::task::JoinHandle<(MediaHealth, Option<PathBuf>)>,
) -> (Option<MediaHealth>, Option<PathBuf>) {
    match tap.await {
        Ok((health, recording)) => (Some(health), recording),
        Err(e) => {
            tracing::error!(error = %e, "call media tap failed");
            (None, None)
        }
    }
}

/// What the pump reports when the stream is over.
#[derive(Debug)]
struct Pumped {
    reason: EndReason,
    frames_in: u64,
    frames_out: u64,
}

/// Moves frames between the tap's far side and the client until the server
/// ends the stream or `hangup` (the call's end) — then hangs up the stream.
/// Device frames go to the server as they come (dropped when it does not
/// read); the server's frames go to the tap one per 20 ms, at most
/// [`MAX_LEAD`] ahead.
/// The tap's far side, as the pump sees it.
struct Legs {
    /// The device's audio, for the server.
    from_tap: mpsc::Receiver<Frame>,
    /// The server's audio, for the device.
    to_tap: mpsc::Sender<Frame>,
    /// DTMF heard in the device's audio, for the server (kind `0x03`).
    digits: mpsc::Receiver<crate::media::telephone_event::Digit>,
}

async fn pump(mut client: AudioSocketClient, legs: Legs, hangup: CancellationToken) -> Pumped {
    let Legs {
        mut from_tap,
        to_tap,
        mut digits,
    } = legs;
    let mut ticker = tokio::time::interval(FRAME);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut credit = 0u32;
    let mut frames_out = 0u64;
    let mut tap_open = true;
    let reason = loop {
        tokio::select! {
            biased;
            () = hangup.cancelled() => {
                let frames_in = client.stats().frames_from_server;
                return Pumped {
                    reason: client.hangup().await,
                    frames_in,
                    frames_out,
                };
            }
            frame = from_tap.recv(), if tap_open => match frame {
                Some(frame) => {
                    if client.send_audio(frame).is_ok() {
                        frames_out += 1;
                    }
                }
                None => tap_open = false,
            },
            Some(digit) = digits.recv() => {
                if let Err(e) = client.send_dtmf(digit.as_char() as u8) {
                    tracing::info!(%digit, error = %e, "DTMF not sent to the AudioSocket server");
                }
            }
            _ = ticker.tick() => credit = (credit + 1).min(MAX_LEAD),
            frame = client.recv(), if credit > 0 => match frame {
                Some(frame) => {
                    credit -= 1;
                    let _ = to_tap.try_send(frame);
                }
                None => break client.closed().await,
            },
        }
    };
    // The server's last frames (a goodbye) are still in the device's queue:
    // let them play before the device hangs up.
    for _ in 0..MAX_LEAD {
        tokio::select! {
            () = hangup.cancelled() => break,
            _ = ticker.tick() => {}
        }
    }
    Pumped {
        reason,
        frames_in: client.stats().frames_from_server,
        frames_out,
    }
}

/// A fresh random UUID (version 4, RFC 9562).
pub fn new_uuid() -> [u8; 16] {
    let mut uuid = [0u8; 16];
    if getrandom::fill(&mut uuid).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut rng = super::rng::SplitMix64(nanos as u64 ^ u64::from(std::process::id()));
        uuid[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
        uuid[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    }
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

/// `8-4-4-4-12` lower-case hex.
pub fn hyphenated(uuid: &[u8; 16]) -> String {
    let mut text = String::with_capacity(36);
    for (i, byte) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use vss_shared::{CallDirection, SlotId};

    use super::*;
    use crate::device::at_modem::voice::{self, AudioStream, DeviceSide, FRAME_BYTES};
    use crate::media::health::HealthConfig;
    use crate::media::recording::RecordingMeta;
    use crate::media::rtp_session::{PortRange, RtpConfig};
    use crate::sip::bridge::SessionLink;

    /// Upper bound on any wait in these tests; never reached when they pass.
    const BOUND: Duration = Duration::from_secs(20);

    async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
        match tokio::time::timeout(BOUND, future).await {
            Ok(value) => value,
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }

    fn config() -> BridgeConfig {
        BridgeConfig {
            meta: RecordingMeta {
                call_id: "1-1000-0".into(),
                slot: SlotId::new(1).expect("slot"),
                direction: CallDirection::Inbound,
                started_at_ms: 1_000,
            },
            local_ip: Ipv4Addr::LOCALHOST.into(),
            bind_ip: Ipv4Addr::LOCALHOST.into(),
            ports: PortRange::new(40_000, 40_010).expect("ports"),
            rtp: RtpConfig::default(),
            health: HealthConfig::default(),
            recording: None,
        }
    }

    /// What the bridge asked of the fake session.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Asked {
        Answer,
        TakeAudio,
        HangUp,
    }

    /// The slot's session, faked: answers and hangs up at once, hands over
    /// `audio` once; reports every request.
    struct FakeSession {
        asked: mpsc::UnboundedReceiver<Asked>,
        events: mpsc::Sender<FromDevice>,
    }

    impl FakeSession {
        fn start(link: SessionLink, audio: AudioStream) -> FakeSession {
            let SessionLink {
                mut requests,
                events,
            } = link;
            let (tx, asked) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut audio = Some(audio);
                while let Some(request) = requests.recv().await {
                    match request {
                        ToDevice::Answer { reply } => {
                            let _ = tx.send(Asked::Answer);
                            let _ = reply.send(Ok(()));
                        }
                        ToDevice::TakeAudio { reply } => {
                            let _ = tx.send(Asked::TakeAudio);
                            let _ = reply.send(audio.take());
                        }
                        ToDevice::HangUp => {
                            let _ = tx.send(Asked::HangUp);
                        }
                        ToDevice::Dial { reply, .. } => {
                            let _ = reply.send(Ok(()));
                        }
                        ToDevice::Dtmf(_) => {}
                    }
                }
            });
            FakeSession { asked, events }
        }

        async fn next(&mut self) -> Option<Asked> {
            bounded("a request from the bridge", self.asked.recv()).await
        }
    }

    struct Bed {
        session: FakeSession,
        device: DeviceSide,
        stop: CancellationToken,
        bridge: tokio::task::JoinHandle<CallOutcome>,
    }

    fn start(server: String, answer: bool) -> Bed {
        let (link, session_link) = bridge::link();
        let (audio, device) = voice::audio_pair();
        let session = FakeSession::start(session_link, audio);
        let stop = CancellationToken::new();
        let bridge = tokio::spawn(stream(link, config(), server, answer, stop.clone()));
        Bed {
            session,
            device,
            stop,
            bridge,
        }
    }

    async fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        (listener, addr)
    }

    /// Accepts the bridge's connection; returns it with the UUID frame's
    /// 16 bytes, checked to be a version 4 UUID.
    async fn accept(listener: &TcpListener) -> (TcpStream, [u8; 16]) {
        let (mut server, _) = bounded("the connection", listener.accept())
            .await
            .expect("accept");
        let mut hello = [0u8; 19];
        bounded("the UUID frame", server.read_exact(&mut hello))
            .await
            .expect("UUID frame");
        assert_eq!(hello[..3], [0x01, 0x00, 0x10], "the UUID frame comes first");
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&hello[3..]);
        assert_eq!(uuid[6] >> 4, 4, "version 4");
        assert_eq!(uuid[8] & 0xc0, 0x80, "RFC variant");
        (server, uuid)
    }

    fn frame(fill: u8) -> Frame {
        Box::new([fill; FRAME_BYTES])
    }

    fn audio_bytes(fill: u8) -> Vec<u8> {
        let mut bytes = vec![0x10, 0x01, 0x40];
        bytes.extend_from_slice(&[fill; FRAME_BYTES]);
        bytes
    }

    async fn read_to_end(server: &mut TcpStream) -> Vec<u8> {
        let mut rest = Vec::new();
        bounded("EOF", server.read_to_end(&mut rest))
            .await
            .expect("read to end");
        rest
    }

    #[tokio::test]
    async fn a_ringing_call_is_answered_streamed_both_ways_and_its_end_hangs_up_the_stream() {
        let (listener, addr) = listener().await;
        let mut bed = start(addr.to_string(), true);
        let (mut server, uuid) = accept(&listener).await;
        assert_eq!(bed.session.next().await, Some(Asked::Answer));
        assert_eq!(bed.session.next().await, Some(Asked::TakeAudio));

        // The device's audio reaches the server, one audio frame per 20 ms.
        for fill in 1..=3 {
            bed.device
                .from_device
                .send(frame(fill))
                .await
                .expect("device frame");
        }
        for fill in 1..=3 {
            let mut got = vec![0u8; 3 + FRAME_BYTES];
            bounded("device audio", server.read_exact(&mut got))
                .await
                .expect("audio frame");
            assert_eq!(got, audio_bytes(fill));
        }
        // The server's audio reaches the device.
        for fill in 11..=14 {
            server.write_all(&audio_bytes(fill)).await.expect("write");
        }
        for fill in 11..=14 {
            let got = bounded("server audio", bed.device.to_device.recv())
                .await
                .expect("a frame for the device");
            assert_eq!(got[..], [fill; FRAME_BYTES]);
        }

        // The device's call ends: a hangup frame, then the socket closes.
        bed.session
            .events
            .send(FromDevice::Ended {
                cause: "normal_clearing".into(),
            })
            .await
            .expect("event");
        assert_eq!(read_to_end(&mut server).await, [0x00, 0x00, 0x00]);
        let outcome = bounded("the outcome", bed.bridge).await.expect("bridge");
        assert!(outcome.answered && outcome.device_call);
        assert_eq!(outcome.device_cause.as_deref(), Some("normal_clearing"));
        assert!(outcome.health.is_some(), "media health measured");
        let session = outcome.audiosocket.expect("AudioSocket session");
        assert_eq!(session.server, addr.to_string());
        assert_eq!(session.uuid, hyphenated(&uuid));
        assert_eq!(session.end, "call_ended");
        assert_eq!((session.frames_in, session.frames_out), (4, 3));
        // The device's call was already over: nothing more was asked.
        assert_eq!(bed.session.next().await, None);
    }

    #[tokio::test]
    async fn the_server_hanging_up_hangs_up_the_device_after_its_last_words() {
        let (listener, addr) = listener().await;
        let mut bed = start(addr.to_string(), false);
        let (mut server, _) = accept(&listener).await;
        // Already answered (a call the slot dialled): no answer asked.
        assert_eq!(bed.session.next().await, Some(Asked::TakeAudio));
        let mut goodbye = audio_bytes(7);
        goodbye.extend_from_slice(&[0x00, 0x00, 0x00]);
        server.write_all(&goodbye).await.expect("write");
        let got = bounded("the goodbye", bed.device.to_device.recv())
            .await
            .expect("a frame");
        assert_eq!(got[..], [7; FRAME_BYTES]);
        assert_eq!(bed.session.next().await, Some(Asked::HangUp));
        let outcome = bounded("the outcome", bed.bridge).await.expect("bridge");
        assert!(outcome.answered);
        let session = outcome.audiosocket.expect("AudioSocket session");
        assert_eq!(session.end, "server_hangup");
        assert_eq!(session.frames_in, 1);
    }

    #[tokio::test]
    async fn a_server_burst_reaches_the_device_paced_and_whole() {
        let (listener, addr) = listener().await;
        let mut bed = start(addr.to_string(), false);
        let (mut server, _) = accept(&listener).await;
        assert_eq!(bed.session.next().await, Some(Asked::TakeAudio));
        // 1.2 s of audio at once, in 60 frames, then an EOF.
        let mut burst = Vec::new();
        for k in 0..60u8 {
            burst.extend_from_slice(&audio_bytes(k));
        }
        server.write_all(&burst).await.expect("write");
        drop(server);
        for k in 0..60u8 {
            let got = bounded("the burst", bed.device.to_device.recv())
                .await
                .expect("a frame");
            assert_eq!(got[0], k, "frames in order, none dropped");
        }
        assert_eq!(bed.session.next().await, Some(Asked::HangUp));
        let outcome = bounded("the outcome", bed.bridge).await.expect("bridge");
        let session = outcome.audiosocket.expect("AudioSocket session");
        assert_eq!(session.end, "server_closed");
        assert_eq!(session.frames_in, 60);
    }

    #[tokio::test]
    async fn an_unreachable_server_leaves_the_ringing_call_unanswered_and_hangs_it_up() {
        let (listener, addr) = listener().await;
        drop(listener);
        let mut bed = start(addr.to_string(), true);
        assert_eq!(bed.session.next().await, Some(Asked::HangUp));
        let outcome = bounded("the outcome", bed.bridge).await.expect("bridge");
        assert!(!outcome.answered, "never answered");
        assert!(
            outcome.device_call,
            "the session waits for the device's end"
        );
        assert_eq!(outcome.health, None);
        let session = outcome.audiosocket.expect("AudioSocket session");
        assert!(session.end.starts_with("error: "), "{}", session.end);
        assert!(session.end.contains(&addr.to_string()), "{}", session.end);
        assert_eq!(bed.session.next().await, None, "nothing else asked");
    }

    #[tokio::test]
    async fn hub_shutdown_hangs_up_both_sides() {
        let (listener, addr) = listener().await;
        let mut bed = start(addr.to_string(), true);
        let (mut server, _) = accept(&listener).await;
        assert_eq!(bed.session.next().await, Some(Asked::Answer));
        assert_eq!(bed.session.next().await, Some(Asked::TakeAudio));
        bed.stop.cancel();
        assert_eq!(bed.session.next().await, Some(Asked::HangUp));
        assert_eq!(read_to_end(&mut server).await, [0x00, 0x00, 0x00]);
        let outcome = bounded("the outcome", bed.bridge).await.expect("bridge");
        let session = outcome.audiosocket.expect("AudioSocket session");
        assert_eq!(session.end, "hub_shutdown");
    }

    #[test]
    fn uuids_are_random_version_4_and_hyphenated() {
        let (a, b) = (new_uuid(), new_uuid());
        assert_ne!(a, b);
        let text = hyphenated(&a);
        assert_eq!(text.len(), 36);
        let groups: Vec<usize> = text.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"), "{text}");
        assert_eq!(
            hyphenated(&[
                0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x80, 0x01, 0x02, 0x03, 0x04, 0x05,
                0x06, 0x07
            ]),
            "12345678-9abc-4def-8001-020304050607"
        );
    }
}
