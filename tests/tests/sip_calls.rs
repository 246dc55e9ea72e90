//! Calls bridged by the real `hubd` between SIP/RTP and an emulated GSM
//! modem (issue 6, F-09): Kamailio (the repo's config) as registrar and
//! proxy, hubd with one AUTO slot on a pty modem registered as 6001, and a
//! sipp UAC calling 6001 with `X-VSS-Dial` and an RTP tone. The modem must
//! see `ATD<number>;` and hear the tone on its voice port; the slot goes
//! READY → CALLING → ACTIVE_CALL → POSTCALL and writes a CDR. F-03: a call
//! ringing on the modem reaches a sipp UAS (the agents' queue, 6201) through
//! the slot, and the modem's caller hanging up ends it.
//!
//! Then the rest of the bridge with the same peers: audio the other way (the
//! modem's 425 Hz tone echoed back by sipp, F-03 and F-09), each side
//! hanging up (the callee's BYE in F-09, the agent's in F-03), CANCEL while
//! the modem dials, a busy callee (486), an offer without G.711 (488, no
//! `ATD`), and RTP sprayed at the hub's port from an unexpected source
//! (dropped, never heard). Each checks the call's CDR (`sip_cause`,
//! `device_cause`, media and RTP counters).
//!
//! Waits are for observable states with deadlines; nothing sleeps to wait
//! (the RTP spray is paced at 20 ms like a real stream).

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use hubd::media::g711::Codec;
use serde_json::Value;
use vss_tests::kamailio::{Kamailio, KamailioOptions};
use vss_tests::modem::model::{Direction as ModemDirection, EndCause};
use vss_tests::modem::{Callee, EmulatedModem, Identity, ModemConfig, Profile, Tone as ModemTone};
use vss_tests::modem_hub::ModemHub;
use vss_tests::sipp::{self, Sipp, SippConfig, Tone};
use vss_tests::{metric, tone, wait_for};

const PASSWORD: &str = "secret";
const CALLER: &str = "6101";
const SLOT: &str = "6001";
const NUMBER: &str = "+79161234567";
const AGENT: &str = "6201";
/// How far a measured tone may be from the one sent.
const TOLERANCE_HZ: f64 = 60.0;
/// The hang-up command the hub's AT driver sends to a Huawei E1550.
const HANG_UP: &str = "AT+CHUP";

/// What differs between the beds of the tests.
struct BedOptions {
    /// How the party the modem dials behaves.
    callee: Callee,
    /// With it, calls ringing on the modem go to that SIP user.
    destination: Option<&'static str>,
    /// The hub's one RTP port (`[media] rtp_ports = "P-P+1"`); else the
    /// default range.
    rtp_port: Option<u16>,
    /// What the modem's voice port plays during a call.
    tone: Option<ModemTone>,
    /// A dead registrar listed before Kamailio (the slot fails over).
    dead_primary: bool,
    /// `[media] rtp_timeout_s`, when not the default.
    rtp_timeout_s: Option<u32>,
    /// `[sip] advertised_address`, when the hub must claim another address
    /// than the one it sends from (behind a NAT).
    advertised: Option<&'static str>,
}

impl Default for BedOptions {
    fn default() -> Self {
        BedOptions {
            callee: Callee::default(),
            destination: None,
            rtp_port: None,
            tone: Some(ModemTone::default()),
            dead_primary: false,
            rtp_timeout_s: None,
            advertised: None,
        }
    }
}

/// Kamailio, one emulated modem and a hub whose slot 1 (6001) is on it.
struct Bed {
    kamailio: Kamailio,
    hub: ModemHub,
}

impl std::ops::Deref for Bed {
    type Target = ModemHub;
    fn deref(&self) -> &ModemHub {
        &self.hub
    }
}

impl Bed {
    /// With `destination`, calls ringing on the modem go to that SIP user.
    fn start(callee: Callee, destination: Option<&'static str>) -> Bed {
        Bed::with(BedOptions {
            callee,
            destination,
            ..BedOptions::default()
        })
    }

    fn with(options: BedOptions) -> Bed {
        let kamailio = Kamailio::start(KamailioOptions {
            qop: true,
            password: PASSWORD.to_owned(),
        });
        let mut config = ModemConfig::new(
            Profile::HuaweiE1550,
            Identity::from_seed(61, 0, Profile::HuaweiE1550),
        );
        config.callee = options.callee;
        config.tone = options.tone;
        let destination = options
            .destination
            .map(|user| format!("incoming_destination = \"sip:{user}@{}\"", kamailio.addr()))
            .unwrap_or_default();
        let registrars = if options.dead_primary {
            // A port nobody listens on: bound, then closed.
            let dead = UdpSocket::bind("127.0.0.1:0")
                .and_then(|socket| socket.local_addr())
                .expect("a port");
            format!("\"{dead}\", \"{}\"", kamailio.addr())
        } else {
            format!("\"{}\"", kamailio.addr())
        };
        let ports = options
            .rtp_port
            .map(|port| format!("rtp_ports = \"{port}-{}\"\n", port + 1))
            .unwrap_or_default();
        let rtp_timeout = options
            .rtp_timeout_s
            .map(|s| format!("rtp_timeout_s = {s}\n"))
            .unwrap_or_default();
        let media = format!("[media]\n{ports}{rtp_timeout}");
        let advertised = options
            .advertised
            .map(|address| format!("advertised_address = \"{address}\"\n"))
            .unwrap_or_default();
        let sections = format!(
            "[sip]\nregistrars = [{registrars}]\nlisten = \"127.0.0.1:0\"\nexpires_s = 60\n\
             t1_ms = 100\n{advertised}{destination}\n\n{media}"
        );
        let slot = format!("sip_password = \"{PASSWORD}\"\nrecording = \"all\"");
        let hub = ModemHub::start(config, "hub-sip-calls", &sections, &slot);
        wait_for("6001 registered", Duration::from_secs(20), || {
            kamailio
                .registered_aors()
                .contains(&SLOT.to_owned())
                .then_some(())
        });
        Bed { kamailio, hub }
    }
}

#[test]
fn sipp_calls_slot_6001_which_dials_on_its_modem_and_the_tone_arrives() {
    let bed = Bed::start(
        Callee::Answers {
            after: Duration::from_millis(300),
            hangs_up_after: None,
        },
        None,
    );
    let uac = Sipp::run(
        SippConfig::uac("uac_call_dial.xml", bed.kamailio.addr(), SLOT)
            .auth(CALLER, PASSWORD)
            .key("dial", NUMBER)
            .tone(Tone::default())
            .pause_ms(2500),
    );
    uac.assert_succeeded(1, "the caller");
    // The slot dialled the number the INVITE carried.
    let dialled = format!("ATD{NUMBER};");
    let commands = bed.modem.log().commands;
    assert!(
        commands.iter().any(|c| c == &dialled),
        "no {dialled} among {commands:?}"
    );
    // sipp's 1 kHz tone reached the modem's voice port.
    let samples = tone::samples_from_s16le(&bed.modem.voice_received());
    let (frequency, _) = tone::dominant_frequency(&samples, 8000)
        .unwrap_or_else(|| panic!("no audio on the voice port ({} samples)", samples.len()));
    assert!(
        (frequency - 1000.0).abs() < 60.0,
        "the voice port heard {frequency} Hz"
    );
    // sipp's RFC 4733 digit 1 (sip-tester's dtmf_2833_1.pcap) became the
    // modem's DTMF (`AT^DTMF` on this Huawei).
    let dtmf = wait_for("the digit on the modem", Duration::from_secs(10), || {
        let dtmf = bed.modem.log().dtmf;
        (!dtmf.is_empty()).then_some(dtmf)
    });
    assert_eq!(dtmf, "1");
    // The caller's BYE hung the modem up; the CDR is written.
    bed.wait_state(&["POSTCALL", "READY"], Duration::from_secs(10));
    let cdr = bed.cdr();
    assert_eq!(cdr["remote_number"], NUMBER, "{cdr}");
    assert!(cdr["answered_at_ms"].is_number(), "{cdr}");
    // The caller hung up first; the modem then cleared normally.
    assert_eq!(cdr["end_cause"], "remote_bye", "{cdr}");
    assert_eq!(cdr["sip_cause"], "remote_bye", "{cdr}");
    assert_eq!(cdr["device_cause"], "normal_clearing", "{cdr}");
    // Media: speech both ways (sipp's tone, the modem's), and the RTP leg
    // took sipp's packets.
    let media = &cdr["media"];
    assert_eq!(media["verdict"], "healthy", "{cdr}");
    for leg in ["sip_to_device", "device_to_sip"] {
        let speech = media[leg]["speech_ms"].as_u64().unwrap_or_default();
        assert!(speech >= 1_000, "{leg}: {speech} ms of speech in {cdr}");
    }
    assert!(
        cdr["rtp"]["packets_in"].as_u64().unwrap_or_default() >= 50,
        "{cdr}"
    );
    assert!(
        cdr["rtp"]["packets_out"].as_u64().unwrap_or_default() >= 50,
        "{cdr}"
    );
    assert_eq!(cdr["rtp"]["dtmf_in"], 1, "{cdr}");
    // /metrics counts the call, answered, with its verdict, and none active.
    for (series, value) in [
        ("hubd_bridged_calls_total{kind=\"sip_incoming\"}", 1.0),
        (
            "hubd_bridged_calls_answered_total{kind=\"sip_incoming\"}",
            1.0,
        ),
        ("hubd_bridged_calls_total{kind=\"sip_outgoing\"}", 0.0),
        ("hubd_bridged_calls_active", 0.0),
        ("hubd_call_media_verdicts_total{verdict=\"healthy\"}", 1.0),
        ("hubd_recordings_active", 0.0),
        ("hubd_recording_ticks_dropped_total", 0.0),
    ] {
        assert_eq!(metric(bed.api, series), Some(value), "{series}");
    }

    // The recording the CDR names decodes (real opusdec) to the call's
    // answered length, each leg carrying its party's tone.
    let path = cdr["recording"].as_str().expect("a recording path");
    let decoded = vss_tests::recording::opusdec(Path::new(path));
    let answered_ms = cdr["ended_at_ms"].as_u64().unwrap_or_default()
        - cdr["answered_at_ms"].as_u64().unwrap_or_default();
    let recorded_ms = decoded.duration_ms();
    assert!(
        recorded_ms + 600 >= answered_ms && recorded_ms <= answered_ms + 200,
        "recorded {recorded_ms} ms of a call answered for {answered_ms} ms"
    );
    let rate = vss_tests::recording::DECODE_HZ;
    let (sip_hz, _) = tone::dominant_frequency(&decoded.sip, rate).expect("audio on the SIP leg");
    assert!((sip_hz - 1000.0).abs() < 60.0, "SIP leg: {sip_hz} Hz");
    let (device_hz, _) =
        tone::dominant_frequency_between(&decoded.device, rate, 200.0, 3400.0, 5.0)
            .expect("audio on the device leg");
    assert!(
        (device_hz - 425.0).abs() < 20.0,
        "device leg: {device_hz} Hz"
    );
}

#[test]
fn a_call_ringing_on_the_modem_reaches_a_sipp_uas_through_the_slot() {
    let bed = Bed::start(Callee::default(), Some(AGENT));
    let uas = Sipp::listen(SippConfig {
        service: AGENT.to_owned(),
        ..SippConfig::uas("uas_answer.xml")
    });
    Sipp::register(bed.kamailio.addr(), AGENT, PASSWORD, uas.addr().port(), 60);
    bed.modem
        .incoming_call("+4930123456")
        .expect("the call rings");
    // The agent answered: the slot answered the modem's call.
    bed.wait_state(&["ACTIVE_CALL"], Duration::from_secs(15));
    // The modem's caller hangs up: the slot's BYE ends the agent's call.
    assert!(bed.modem.remote_hangup(), "a call to hang up");
    uas.wait().assert_succeeded(1, "the agent");
    bed.wait_state(&["POSTCALL", "READY"], Duration::from_secs(10));
}

/// Samples in the window a tone must fill: 0.5 s.
const TONE_WINDOW: usize = 4000;
/// Mean power of a 20 ms frame below which it is silence (-50 dBFS).
const SILENCE_POWER: f64 = 107.0 * 107.0;

/// The last [`TONE_WINDOW`] samples the hub wrote to the modem's voice port,
/// or fewer when it has not written that much yet.
fn last_window(modem: &EmulatedModem) -> Vec<i16> {
    let samples = tone::samples_from_s16le(&modem.voice_received());
    samples[samples.len().saturating_sub(TONE_WINDOW)..].to_vec()
}

/// The strongest frequency in `samples` (5 Hz steps over the telephone band).
fn strongest(samples: &[i16]) -> Option<f64> {
    tone::dominant_frequency_between(samples, 8000, 200.0, 3400.0, 5.0).map(|(f, _)| f)
}

/// Whether `window` is a whole window of sound (no silent 20 ms frame)
/// whose strongest frequency is `expected` (within [`TOLERANCE_HZ`]).
fn is_tone(window: &[i16], expected: f64) -> bool {
    window.len() == TONE_WINDOW
        && window
            .chunks(160)
            .all(|frame| tone::mean_power(frame) > SILENCE_POWER)
        && strongest(window).is_some_and(|f| (f - expected).abs() < TOLERANCE_HZ)
}

/// Waits until the modem's voice port has received `expected` Hz without a
/// break for the last 0.5 s; returns the frequency measured then. Panics
/// after `timeout` with the last measurement.
fn wait_for_tone(modem: &EmulatedModem, expected: f64, timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let window = last_window(modem);
        if is_tone(&window, expected) {
            return strongest(&window).expect("a tone");
        }
        let silent = window
            .chunks(160)
            .filter(|frame| tone::mean_power(frame) <= SILENCE_POWER)
            .count();
        assert!(
            Instant::now() < deadline,
            "after {timeout:?} the modem's voice port still did not hear {expected} Hz for \
             0.5 s: its last {} samples ({silent} silent frames) peak at {:?}",
            window.len(),
            strongest(&window)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free even UDP port, with the odd one above it, for the hub's only RTP
/// port: below both the kernel's ephemeral range (where sipp, Kamailio and
/// every `:0` socket get theirs) and the hub's default RTP range
/// (16384–32767, which the other tests' hubs use), so nothing running in
/// parallel is handed it before the hub binds it at the INVITE.
fn private_rtp_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = 10_000 + u16::try_from(random % 3_000).expect("small") * 2;
        let free = |p: u16| UdpSocket::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 1) {
            return port;
        }
    }
}

/// The last call the modem ended.
fn last_modem_call(modem: &EmulatedModem) -> vss_tests::modem::model::CallRecord {
    wait_for("the modem's call to end", Duration::from_secs(10), || {
        modem.log().calls.last().cloned()
    })
}

/// A sipp UAC calling the slot, which dials [`NUMBER`].
fn caller(scenario: &str, bed: &Bed) -> SippConfig {
    SippConfig::uac(scenario, bed.kamailio.addr(), SLOT)
        .auth(CALLER, PASSWORD)
        .key("dial", NUMBER)
}

/// A sipp UAS registered as [`AGENT`], the destination of the modem's calls.
fn agent(config: SippConfig, bed: &Bed) -> Sipp {
    let uas = Sipp::listen(SippConfig {
        service: AGENT.to_owned(),
        ..config
    });
    Sipp::register(bed.kamailio.addr(), AGENT, PASSWORD, uas.addr().port(), 60);
    uas
}

fn answers(after_ms: u64, hangs_up_after: Option<Duration>) -> Callee {
    Callee::Answers {
        after: Duration::from_millis(after_ms),
        hangs_up_after,
    }
}

/// The modem's last call ended by the hub's `AT+CHUP` (not by its far
/// end), after an answer or not; the call's record.
fn assert_the_hub_hung_up_the_modem(
    bed: &Bed,
    answered: bool,
) -> vss_tests::modem::model::CallRecord {
    let call = last_modem_call(&bed.modem);
    assert_eq!(call.answered, answered, "{call:?}");
    assert_eq!(call.cause, EndCause::LocalHangup, "{call:?}");
    let commands = bed.modem.log().commands;
    assert!(
        commands.iter().any(|c| c == HANG_UP),
        "no {HANG_UP} among {commands:?}"
    );
    call
}

/// `cdr[key]` as a string, for messages.
fn field<'a>(cdr: &'a Value, key: &str) -> &'a str {
    cdr[key].as_str().unwrap_or("<absent>")
}

/// The CDR's media summary says both directions carried speech.
fn assert_speech_both_ways(cdr: &Value) {
    let media = &cdr["media"];
    for leg in ["sip_to_device", "device_to_sip"] {
        assert!(
            media[leg]["speech_ms"].as_u64().is_some_and(|ms| ms > 0),
            "no speech {leg} in {cdr}"
        );
    }
    assert_eq!(media["one_way_audio"], Value::Null, "{cdr}");
}

#[test]
fn the_modems_tone_reaches_a_sipp_agent_and_its_echo_comes_back_f03() {
    let bed = Bed::start(Callee::default(), Some(AGENT));
    let uas = agent(SippConfig::uas("uas_answer.xml").rtp_echo(), &bed);
    bed.modem
        .incoming_call("+4930123456")
        .expect("the call rings");
    bed.wait_state(&["ACTIVE_CALL"], Duration::from_secs(15));
    // The modem plays 425 Hz; the agent's sipp echoes the RTP; the hub
    // plays what comes back to the modem.
    let heard = wait_for_tone(&bed.modem, 425.0, Duration::from_secs(15));
    assert!((heard - 425.0).abs() < TOLERANCE_HZ, "heard {heard} Hz");
    assert!(bed.modem.remote_hangup(), "a call to hang up");
    uas.wait().assert_succeeded(1, "the agent");
    let cdr = bed.wait_ready_after_call();
    assert_eq!(field(&cdr, "device_cause"), "normal_clearing", "{cdr}");
    assert_eq!(field(&cdr, "sip_cause"), "local_bye", "{cdr}");
    assert!(cdr["rtp"]["packets_out"].as_u64() > Some(0), "{cdr}");
    assert!(cdr["rtp"]["packets_in"].as_u64() > Some(0), "{cdr}");
    assert_speech_both_ways(&cdr);
}

#[test]
fn the_modems_tone_reaches_a_sipp_caller_and_its_echo_comes_back_f09() {
    let bed = Bed::start(answers(300, None), None);
    let config = caller("uac_call_dial_echo.xml", &bed)
        .rtp_echo()
        .pause_ms(5000);
    let uac = std::thread::spawn(move || Sipp::run(config));
    let heard = wait_for_tone(&bed.modem, 425.0, Duration::from_secs(20));
    assert!((heard - 425.0).abs() < TOLERANCE_HZ, "heard {heard} Hz");
    uac.join()
        .expect("the sipp thread")
        .assert_succeeded(1, "the caller");
    let cdr = bed.wait_ready_after_call();
    assert_eq!(field(&cdr, "sip_cause"), "remote_bye", "{cdr}");
    assert!(cdr["rtp"]["packets_out"].as_u64() > Some(0), "{cdr}");
    assert!(cdr["rtp"]["packets_in"].as_u64() > Some(0), "{cdr}");
    assert_speech_both_ways(&cdr);
}

#[test]
fn the_modems_callee_hangs_up_and_the_sipp_caller_gets_a_bye_f09() {
    let bed = Bed::start(answers(300, Some(Duration::from_millis(2000))), None);
    let uac = Sipp::run(caller("uac_call_dial_remote_bye.xml", &bed).tone(Tone::default()));
    uac.assert_succeeded(1, "the caller waiting for the slot's BYE");
    assert!(
        uac.messages.contains("BYE sip:"),
        "no BYE among sipp's messages:\n{}",
        uac.messages
    );
    let call = last_modem_call(&bed.modem);
    assert_eq!(call.cause, EndCause::RemoteHangup, "{call:?}");
    assert!(call.answered, "{call:?}");
    let cdr = bed.wait_ready_after_call();
    assert_eq!(field(&cdr, "sip_cause"), "local_bye", "{cdr}");
    assert_eq!(field(&cdr, "device_cause"), "normal_clearing", "{cdr}");
    assert!(cdr["answered_at_ms"].is_number(), "{cdr}");
}

#[test]
fn a_caller_that_goes_silent_is_hung_up_both_ways_f09() {
    // A softphone or PBX that died without a BYE: after the answer the
    // caller sends no RTP at all, and only waits for the slot's BYE.
    let bed = Bed::with(BedOptions {
        callee: answers(300, None),
        rtp_timeout_s: Some(5),
        ..BedOptions::default()
    });
    let uac = Sipp::run(caller("uac_call_dial_silent.xml", &bed));
    uac.assert_succeeded(1, "the silent caller waiting for the slot's BYE");
    assert_the_hub_hung_up_the_modem(&bed, true);
    let cdr = bed.wait_ready_after_call();
    assert_eq!(field(&cdr, "sip_cause"), "rtp_timeout", "{cdr}");
    assert_eq!(cdr["rtp"]["packets_in"], 0, "{cdr}");
    assert!(
        cdr["rtp"]["packets_out"].as_u64() > Some(0),
        "the modem's audio never went out: {cdr}"
    );
}

#[test]
fn a_modem_that_hangs_mid_call_ends_the_call_with_a_bye_and_a_cdr_f09() {
    let bed = Bed::start(answers(300, None), None);
    let uac = Sipp::spawn(caller("uac_call_dial_remote_bye.xml", &bed).tone(Tone::default()));
    bed.wait_state(&["ACTIVE_CALL"], Duration::from_secs(20));
    // The modem hangs mid-call (the field notes' E3372 in a reset loop, an
    // E1550 after an early AT+CHLD): it answers nothing from now on.
    bed.modem.set_silent(true);
    uac.wait()
        .assert_succeeded(1, "the caller waiting for the slot's BYE");
    // The hub found the modem hung (its health check went unanswered),
    // ended the call on the SIP side and wrote the record, naming the
    // modem's failure as what ended it.
    let cdr = bed.cdr();
    assert_eq!(field(&cdr, "end_cause"), "modem_failure", "{cdr}");
    assert_eq!(field(&cdr, "device_cause"), "modem_failure", "{cdr}");
    assert_eq!(field(&cdr, "sip_cause"), "local_bye", "{cdr}");
    assert!(cdr["answered_at_ms"].is_number(), "{cdr}");
    let recording = std::path::PathBuf::from(field(&cdr, "recording"));
    assert!(
        recording.is_file(),
        "no recording at {}: {cdr}",
        recording.display()
    );
    // The modem comes back: so does the slot, with no restart by hand.
    bed.modem.set_silent(false);
    bed.wait_state(&["READY"], Duration::from_secs(90));
}

#[test]
fn behind_a_nat_the_slot_registers_where_kamailio_saw_it_and_takes_calls_there_f09() {
    // The hub claims an address that is not its own and that nothing
    // answers on (a private address behind a NAT, as the PBX would see
    // it); its REGISTERs and calls really leave from 127.0.0.1.
    const CLAIMED: &str = "198.51.100.7:5070";
    let bed = Bed::with(BedOptions {
        // Talks until after timer H (64 x T1 = 6.4 s): an ACK lost on the
        // way to a wrong Contact would end the call as ack_timeout first.
        callee: answers(300, Some(Duration::from_secs(8))),
        advertised: Some(CLAIMED),
        ..BedOptions::default()
    });
    // Kamailio's answer said where it saw the REGISTER come from; the slot
    // registered that instead, and unbound the claimed Contact.
    let contacts = wait_for(
        "the slot's one Contact at 127.0.0.1",
        Duration::from_secs(20),
        || {
            let contacts: Vec<String> = bed
                .kamailio
                .ul_dump()
                .into_iter()
                .filter(|b| b.aor == SLOT)
                .map(|b| b.contact)
                .collect();
            (contacts.len() == 1 && contacts[0].contains("@127.0.0.1:")).then_some(contacts)
        },
    );
    assert!(!contacts[0].contains("198.51.100.7"), "{contacts:?}");
    // Kamailio's INVITE reaches the slot there, the caller's ACK (to the
    // Contact of our 200) too, and the callee's hang-up becomes our BYE.
    let uac = Sipp::run(caller("uac_call_dial_silent.xml", &bed));
    uac.assert_succeeded(1, "the caller waiting for the slot's BYE");
    assert!(
        bed.modem_got(&format!("ATD{NUMBER};")) > 0,
        "the slot never dialled"
    );
    // Media: the SDP names the claimed IP, the RTP port is bound on the
    // hub's own (the claimed one is not on this host).
    assert!(
        uac.messages.contains("c=IN IP4 198.51.100.7"),
        "our SDP does not name the claimed address:\n{}",
        uac.messages
    );
    let cdr = bed.wait_ready_after_call();
    assert_eq!(field(&cdr, "sip_cause"), "local_bye", "{cdr}");
    assert_eq!(field(&cdr, "device_cause"), "normal_clearing", "{cdr}");
}

#[test]
fn a_cancel_while_the_modem_dials_hangs_it_up_f09() {
    let bed = Bed::start(Callee::NeverAnswers, None);
    let uac = Sipp::run(caller("uac_cancel_dial.xml", &bed));
    uac.assert_succeeded(1, "the caller cancelling");
    let dialled = format!("ATD{NUMBER};");
    assert!(bed.modem_got(&dialled) > 0, "no {dialled}");
    assert_the_hub_hung_up_the_modem(&bed, false);
    let cdr = bed.wait_ready_after_call();
    assert_eq!(field(&cdr, "sip_cause"), "cancelled", "{cdr}");
    assert_eq!(field(&cdr, "device_cause"), "normal_clearing", "{cdr}");
    assert_eq!(cdr["answered_at_ms"], Value::Null, "{cdr}");
}

#[test]
fn a_busy_callee_is_486_for_the_sipp_caller_f09() {
    let bed = Bed::start(
        Callee::Busy {
            after: Duration::from_millis(200),
        },
        None,
    );
    let uac = Sipp::run(caller("uac_dial_busy.xml", &bed));
    uac.assert_succeeded(1, "the caller expecting 486");
    let call = last_modem_call(&bed.modem);
    assert_eq!(call.cause, EndCause::Busy, "{call:?}");
    let cdr = bed.wait_ready_after_call();
    assert_eq!(field(&cdr, "sip_cause"), "486", "{cdr}");
    assert_eq!(field(&cdr, "device_cause"), "user_busy", "{cdr}");
}

#[test]
fn an_offer_without_g711_is_488_and_nothing_is_dialled_f09() {
    let bed = Bed::start(answers(300, None), None);
    let uac = Sipp::run(caller("uac_dial_g729.xml", &bed));
    uac.assert_succeeded(1, "the caller offering G.729 only");
    let cdr = bed.wait_ready_after_call();
    assert_eq!(field(&cdr, "sip_cause"), "488", "{cdr}");
    assert_eq!(cdr["device_cause"], Value::Null, "no device call: {cdr}");
    assert_eq!(cdr["answered_at_ms"], Value::Null, "{cdr}");
    let commands = bed.modem.log().commands;
    assert!(
        !commands.iter().any(|c| c.starts_with("ATD")),
        "the modem dialled: {commands:?}"
    );
    assert!(
        bed.modem.log().calls.is_empty(),
        "{:?}",
        bed.modem.log().calls
    );
}

#[test]
fn rtp_from_an_unexpected_source_is_dropped_and_never_heard_f09() {
    let rtp_port = private_rtp_port();
    let bed = Bed::with(BedOptions {
        callee: answers(300, None),
        rtp_port: Some(rtp_port),
        ..BedOptions::default()
    });
    let config = caller("uac_call_dial.xml", &bed)
        .tone(Tone {
            seconds: 8.0,
            ..Tone::default()
        })
        .pause_ms(8000);
    let uac = std::thread::spawn(move || Sipp::run(config));
    // sipp's 1 kHz tone is heard: the hub has latched onto sipp's media port.
    wait_for_tone(&bed.modem, 1000.0, Duration::from_secs(20));
    bed.modem.clear_voice_received();
    // A stranger sends 2 kHz (same payload type, its own SSRC) to the port,
    // paced as a real stream, for 2 s.
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("a socket");
    let target = SocketAddr::from(([127, 0, 0, 1], rtp_port));
    let packets = sipp::tone_rtp(
        &Tone {
            frequency: 2000.0,
            seconds: 2.0,
            codec: Codec::Pcmu,
        },
        0x0bad_5eed,
    );
    let start = Instant::now();
    for (i, packet) in (1u64..).zip(&packets) {
        stranger.send_to(packet, target).expect("sent");
        let due = start + Duration::from_millis(20 * i);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let samples = tone::samples_from_s16le(&bed.modem.voice_received());
    let wanted = tone::goertzel_power(&samples, 1000.0, 8000);
    let stray = tone::goertzel_power(&samples, 2000.0, 8000);
    assert!(
        strongest(&samples).is_some_and(|f| (f - 1000.0).abs() < TOLERANCE_HZ),
        "while sprayed at, the voice port peaked at {:?} ({} samples)",
        strongest(&samples),
        samples.len()
    );
    assert!(
        stray * 1000.0 < wanted,
        "2 kHz reached the modem: power {stray} against 1 kHz {wanted}"
    );
    // The call went on to the caller's BYE.
    let outcome = uac.join().expect("the sipp thread");
    outcome.assert_succeeded(1, "the caller");
    assert!(
        outcome.messages.contains(&format!("m=audio {rtp_port} ")),
        "the hub's SDP does not name port {rtp_port}:\n{}",
        outcome.messages
    );
    let cdr = bed.wait_ready_after_call();
    assert_eq!(field(&cdr, "sip_cause"), "remote_bye", "{cdr}");
    let dropped = cdr["rtp"]["dropped_wrong_source"]
        .as_u64()
        .unwrap_or_default();
    assert!(
        dropped > 0,
        "no packet counted from the wrong source: {cdr}"
    );
    // The same count on the hub's /metrics, for the operator's alerts.
    assert_eq!(
        metric(
            bed.api,
            "hubd_rtp_packets_dropped_total{reason=\"wrong_source\"}"
        ),
        Some(dropped as f64)
    );
}

#[test]
fn the_sipp_agent_hangs_up_and_the_modems_call_ends_f03() {
    let bed = Bed::start(Callee::default(), Some(AGENT));
    let uas = agent(SippConfig::uas("uas_answer_bye.xml").pause_ms(1500), &bed);
    bed.modem
        .incoming_call("+4930123456")
        .expect("the call rings");
    uas.wait().assert_succeeded(1, "the agent hanging up");
    let call = assert_the_hub_hung_up_the_modem(&bed, true);
    assert_eq!(call.direction, ModemDirection::Incoming, "{call:?}");
    let cdr = bed.wait_ready_after_call();
    assert_eq!(field(&cdr, "sip_cause"), "remote_bye", "{cdr}");
    assert_eq!(field(&cdr, "device_cause"), "normal_clearing", "{cdr}");
}

#[test]
fn after_a_failover_the_modems_call_rings_the_agent_and_the_callers_giving_up_cancels_it_f03() {
    // The slot registered with Kamailio, the second registrar: its INVITE
    // must go there too, not to the dead first one.
    let bed = Bed::with(BedOptions {
        destination: Some(AGENT),
        dead_primary: true,
        ..BedOptions::default()
    });
    let uas = agent(SippConfig::uas("uas_ring.xml"), &bed);
    bed.modem
        .incoming_call("+4930123456")
        .expect("the call rings");
    // The agent's phone rings (180 relayed); the modem's caller gives up.
    wait_for("the agent ringing", Duration::from_secs(15), || {
        uas.messages_so_far().contains("180 Ringing").then_some(())
    });
    assert!(bed.modem.remote_hangup(), "a call to hang up");
    uas.wait().assert_succeeded(1, "the agent, cancelled");
    let call = last_modem_call(&bed.modem);
    assert!(!call.answered, "{call:?}");
    let cdr = bed.wait_ready_after_call();
    assert_eq!(field(&cdr, "sip_cause"), "local_cancel", "{cdr}");
    assert!(cdr["answered_at_ms"].is_null(), "{cdr}");
}
