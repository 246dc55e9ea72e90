//! The GSM modem emulator (`vss_tests::modem`) at its boundaries: the
//! sans-IO model fed command lines with time stepped by hand; the hub's own
//! AT engine (`hubd::device::at_modem`) driving its init, dial and SMS
//! sequences against the model; real ptys opened like a driver would; the
//! `modem-emulator` binary; and socat, a third-party serial client.
//!
//! Nothing sleeps: model time is an `Instant` advanced by the test, and pty
//! tests wait for bytes or states with deadlines.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vss_tests::modem::audio::{self, ToneGenerator};
use vss_tests::modem::codec;
use vss_tests::modem::model::{CallState, EndCause};
use vss_tests::modem::{
    Callee, EmulatedModem, Garbage, Identity, InReply, InjectError, Interleave, ModelOutput,
    ModemConfig, ModemFarm, ModemModel, PortClient, Profile, Tone, UssdAnswer,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const WAIT: Duration = Duration::from_secs(5);

/// A model with a hand-driven clock.
struct Bench {
    model: ModemModel,
    now: Instant,
}

impl Bench {
    fn new(config: ModemConfig) -> Bench {
        Bench {
            model: ModemModel::new(config),
            now: Instant::now(),
        }
    }

    fn of(profile: Profile) -> Bench {
        Bench::new(ModemConfig::default_for(profile))
    }

    /// Feeds raw bytes; returns the output as lines.
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.model.handle_input(bytes, self.now);
        lines(&self.model.take_text())
    }

    /// Feeds `command` and a CR; returns the output as lines.
    fn send(&mut self, command: &str) -> Vec<String> {
        self.feed(format!("{command}\r").as_bytes())
    }

    /// Advances the clock; returns what the timers emitted, as lines.
    fn advance(&mut self, by: Duration) -> Vec<String> {
        self.now += by;
        self.model.handle_timeout(self.now);
        lines(&self.model.take_text())
    }

    fn echo_off(&mut self) {
        assert_eq!(self.send("ATE0"), ["ATE0", "OK"]);
    }
}

/// Output split on CR/LF, empty lines dropped.
fn lines(text: &str) -> Vec<String> {
    text.split(['\r', '\n'])
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks a script of `(command, expected output lines)`.
fn check(bench: &mut Bench, script: &[(&str, &[&str])]) {
    for (command, expect) in script {
        assert_eq!(bench.send(command), *expect, "reply to {command}");
    }
}

// ------------------------------------------------------------------ model

#[test]
fn huawei_answers_the_chan_dongle_init_line_by_line() {
    let mut b = Bench::of(Profile::HuaweiE1550);
    let id = b.model.config().identity.clone();
    let imei = id.imei.as_str();
    let imsi = id.imsi.as_str();
    let iccid = format!("^ICCID: {}", id.iccid_swapped());
    let number = format!(
        "+CNUM: \"\",\"{}\",145",
        id.own_number.clone().unwrap_or_default()
    );
    let creg = format!("+CREG: 2,1,\"{:04X}\",\"{:04X}\"", id.lac, id.cell_id);
    let csca_ucs2 = format!("+CSCA: \"{}\",145", codec::ucs2_hex("+79168999100"));
    check(
        &mut b,
        &[
            ("AT", &["AT", "OK"]),
            ("ATZ", &["ATZ", "OK"]),
            ("ATE0", &["ATE0", "OK"]),
            ("AT+CGMI", &["huawei", "OK"]),
            ("AT+CGMM", &["E1550", "OK"]),
            ("AT+CGMR", &["11.608.12.02.143", "OK"]),
            ("AT+CMEE=0", &["OK"]),
            ("AT+CGSN", &[imei, "OK"]),
            ("AT+CIMI", &[imsi, "OK"]),
            ("AT^ICCID?", &[&iccid, "OK"]),
            ("AT+CPIN?", &["+CPIN: READY", "OK"]),
            ("AT+COPS=0,0", &["OK"]),
            ("AT+CREG=2", &["OK"]),
            ("AT+CREG?", &[&creg, "OK"]),
            ("AT+CNUM", &[&number, "OK"]),
            ("AT^CVOICE?", &["^CVOICE:0,8000,16,20", "OK"]),
            ("AT+CSCA?", &["+CSCA: \"+79168999100\",145", "OK"]),
            ("AT+CSSN=1,1", &["OK"]),
            ("AT+CMGF=0", &["OK"]),
            ("AT+CSCS=\"UCS2\"", &["OK"]),
            ("AT+CSCA?", &[&csca_ucs2, "OK"]),
            (
                "AT+CPMS=\"SM\",\"SM\",\"SM\"",
                &["+CPMS: 0,20,0,20,0,20", "OK"],
            ),
            ("AT+CNMI=2,1,0,0,0", &["OK"]),
            ("AT+CSQ", &["+CSQ: 20,99", "OK"]),
            ("AT+COPS?", &["+COPS: 0,0,\"MTS RUS\",2", "OK"]),
            ("AT+QCCID", &["ERROR"]),
            ("at+cgmm", &["E1550", "OK"]),
        ],
    );
    assert!(vss_tests::modem::identity::luhn_valid(imei));
}

#[test]
fn quectel_answers_its_own_dialect() {
    let mut b = Bench::of(Profile::QuectelEc25);
    b.echo_off();
    let id = b.model.config().identity.clone();
    let qccid = format!("+QCCID: {}", id.iccid);
    let ccid = format!("+CCID: \"{}\"", id.iccid);
    check(
        &mut b,
        &[
            ("AT+CGMI", &["Quectel", "OK"]),
            ("AT+CGMM", &["EC25", "OK"]),
            ("AT+CMEE=1", &["OK"]),
            ("AT+QCCID", &[&qccid, "OK"]),
            ("AT+CCID", &[&ccid, "OK"]),
            ("AT^ICCID?", &["+CME ERROR: 100"]),
            ("AT^CVOICE?", &["+CME ERROR: 100"]),
            ("AT+QPCMV=1,0", &["OK"]),
            ("AT+QPCMV?", &["+QPCMV: 1,0", "OK"]),
            ("AT+CLIP=1", &["OK"]),
            ("AT+COPS?", &["+COPS: 0,0,\"MTS RUS\",7", "OK"]),
        ],
    );
}

#[test]
fn echo_follows_ate_and_atz() {
    let mut b = Bench::of(Profile::HuaweiE173);
    let mut exact = |input: &str, expect: &str| {
        b.model.handle_input(input.as_bytes(), b.now);
        assert_eq!(b.model.take_text(), expect, "after {input:?}");
    };
    exact("AT\r", "AT\r\r\nOK\r\n");
    exact("ATE0\r", "ATE0\r\r\nOK\r\n");
    exact("AT\r", "\r\nOK\r\n");
    exact("ATE1\r", "\r\nOK\r\n");
    exact("AT\r", "AT\r\r\nOK\r\n");
    exact("ATE0\r", "ATE0\r\r\nOK\r\n");
    exact("ATZ\r", "\r\nOK\r\n");
    // Echo is character by character, as typed (and a LF ends a line too).
    exact("AT+CS", "AT+CS");
    exact("Q\n", "Q\n\r\n+CSQ: 20,99\r\n\r\nOK\r\n");
    exact(
        "AT+CSX\x08Q\r",
        "AT+CSX\x08Q\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n",
    );
}

#[test]
fn unknown_commands_and_bad_parameters_follow_cmee() {
    let mut b = Bench::of(Profile::HuaweiE1550);
    b.echo_off();
    check(
        &mut b,
        &[
            ("AT+FOO", &["ERROR"]),
            ("AT+CMEE=7", &["ERROR"]),
            ("AT+CMEE=1", &["OK"]),
            ("AT+FOO", &["+CME ERROR: 100"]),
            ("AT^DTMF=1,5", &["+CME ERROR: 3"]),
            ("AT+CMEE=2", &["OK"]),
            ("AT+FOO?", &["+CME ERROR: unknown"]),
            ("AT+CMEE?", &["+CMEE: 2", "OK"]),
            ("AT+CMEE=?", &["+CMEE: (0-2)", "OK"]),
            ("AT+CMGR=9", &["+CMS ERROR: 321"]),
            ("hello", &[]),
            ("ATD12345", &["NO CARRIER"]),
            ("ATDabc;", &["ERROR"]),
            ("ATA", &["NO CARRIER"]),
        ],
    );
    let long = format!("AT{}", "X".repeat(5_000));
    assert_eq!(b.send(&long), ["ERROR"]);
    assert_eq!(b.send("AT"), ["OK"]);
}

#[test]
fn an_outgoing_call_goes_orig_conf_conn_then_cend_on_chup() {
    let mut config = ModemConfig::default_for(Profile::HuaweiE1550);
    config.callee = Callee::Answers {
        after: ms(1_000),
        hangs_up_after: None,
    };
    let mut b = Bench::new(config);
    b.echo_off();
    let clcc = |stat: u8| {
        vec![
            format!("+CLCC: 1,0,{stat},0,0,\"+79161234567\",145"),
            "OK".into(),
        ]
    };
    assert_eq!(b.send("ATD+79161234567;"), ["OK"]);
    assert_eq!(b.send("AT+CLCC"), clcc(2));
    assert_eq!(b.advance(ms(99)), Vec::<String>::new());
    assert_eq!(b.advance(ms(1)), ["^ORIG:1,0"]);
    assert_eq!(b.send("AT^DDSETEX=2"), ["OK"]);
    assert_eq!(b.advance(ms(399)), Vec::<String>::new());
    assert_eq!(b.advance(ms(1)), ["^CONF:1"]);
    assert_eq!(b.send("AT+CLCC"), clcc(3));
    assert!(!b.model.audio_active());
    assert_eq!(b.advance(ms(1_000)), ["^CONN:1,0"]);
    assert_eq!(b.send("AT+CLCC"), clcc(0));
    assert!(b.model.audio_active());
    assert_eq!(b.send("AT^DTMF=1,5"), ["OK"]);
    assert_eq!(b.send("AT^DTMF=1,#"), ["OK"]);
    assert_eq!(b.send("AT^DTMF=2,1"), ["ERROR"]);
    assert_eq!(b.advance(ms(3_400)), Vec::<String>::new());
    // Huawei's ATH does not end a voice call; AT+CHUP does.
    assert_eq!(b.send("ATH"), ["OK"]);
    assert_eq!(b.send("AT+CHUP"), ["OK", "^CEND:1,3,104,16"]);
    assert_eq!(b.send("AT+CLCC"), ["OK"]);
    assert!(!b.model.audio_active());
    let log = b.model.log();
    assert_eq!(log.dtmf, "5#");
    assert_eq!(log.calls.len(), 1);
    assert!(log.calls[0].answered);
    assert_eq!(log.calls[0].duration_s, 3);
    assert_eq!(log.calls[0].cause, EndCause::LocalHangup);
}

#[test]
fn scripted_callees_end_calls_with_their_causes() {
    let cases: &[(Profile, Callee, u64, &[&str])] = &[
        (
            Profile::HuaweiE1550,
            Callee::Busy { after: ms(300) },
            800,
            &["^ORIG:1,0", "^CONF:1", "^CEND:1,0,104,17"],
        ),
        (
            Profile::HuaweiE1550,
            Callee::NeverAnswers,
            60_500,
            &["^ORIG:1,0", "^CONF:1", "^CEND:1,0,104,19"],
        ),
        (
            Profile::HuaweiE173,
            Callee::Answers {
                after: ms(500),
                hangs_up_after: Some(ms(2_000)),
            },
            3_000,
            &["^ORIG:1,0", "^CONF:1", "^CONN:1,0", "^CEND:1,2,104,16"],
        ),
        (
            Profile::QuectelEc25,
            Callee::Busy { after: ms(300) },
            800,
            &["BUSY"],
        ),
        (
            Profile::QuectelEc25,
            Callee::Answers {
                after: ms(500),
                hangs_up_after: Some(ms(2_000)),
            },
            3_000,
            &["NO CARRIER"],
        ),
    ];
    for (profile, callee, until, expect) in cases {
        let mut b = Bench::of(*profile);
        b.echo_off();
        b.model.set_callee(*callee);
        assert_eq!(b.send("ATD89161234567;"), ["OK"]);
        let mut got = Vec::new();
        for _ in 0..*until / 100 {
            got.extend(b.advance(ms(100)));
        }
        assert_eq!(got, *expect, "{profile:?} {callee:?}");
        assert!(b.model.call().is_none(), "{profile:?} {callee:?}");
    }
}

#[test]
fn an_incoming_call_rings_until_answered_or_cancelled() {
    let mut b = Bench::of(Profile::HuaweiE1550);
    b.echo_off();
    let ring = ["RING", "+CLIP: \"+74951234567\",145,,,,0"];
    b.model.incoming_call("+74951234567", b.now).expect("rings");
    assert_eq!(b.model.take_text().matches("RING").count(), 1);
    assert_eq!(b.advance(ms(1_999)), Vec::<String>::new());
    assert_eq!(b.advance(ms(1)), ring);
    assert_eq!(b.advance(ms(2_000)), ring);
    assert_eq!(
        b.send("AT+CLCC"),
        ["+CLCC: 1,1,4,0,0,\"+74951234567\",145", "OK"]
    );
    assert_eq!(
        b.model.incoming_call("+7000", b.now),
        Err(InjectError::Busy)
    );
    assert_eq!(b.send("ATA"), ["OK", "^CONN:1,0"]);
    assert_eq!(b.advance(ms(5_000)), Vec::<String>::new());
    assert!(b.model.remote_hangup(b.now));
    assert_eq!(lines(&b.model.take_text()), ["^CEND:1,5,104,16"]);

    // The caller gives up before anyone answers.
    b.model.incoming_call("112", b.now).expect("rings");
    assert_eq!(
        lines(&b.model.take_text()),
        ["RING", "+CLIP: \"112\",129,,,,0"]
    );
    assert!(b.model.remote_hangup(b.now));
    assert_eq!(lines(&b.model.take_text()), ["^CEND:1,0,104,16"]);
    assert_eq!(b.model.log().calls[1].cause, EndCause::CallerCancelled);

    // Quectel shows +CLIP only after AT+CLIP=1, and ends with NO CARRIER.
    let mut q = Bench::of(Profile::QuectelEc25);
    q.echo_off();
    q.model.incoming_call("+74951234567", q.now).expect("rings");
    assert_eq!(lines(&q.model.take_text()), ["RING"]);
    assert_eq!(q.send("AT+CLIP=1"), ["OK"]);
    assert_eq!(q.advance(ms(2_000)), ring);
    assert!(q.model.remote_hangup(q.now));
    assert_eq!(lines(&q.model.take_text()), ["NO CARRIER"]);
}

/// SMS-SUBMIT to +79161234567, UCS-2 "Hi": 17 TPDU octets.
const SUBMIT_PDU: &str = "0001000B919761214365F700080400480069";

#[test]
fn sms_submit_goes_through_the_prompt() {
    let mut b = Bench::of(Profile::HuaweiE1550);
    b.echo_off();
    b.model.handle_input(b"AT+CMGS=17\r", b.now);
    assert_eq!(b.model.take_text(), "\r\n> ");
    let mut body = SUBMIT_PDU.as_bytes().to_vec();
    body.push(0x1A);
    let mr = b.model.log().sent_sms.len();
    let reply = b.feed(&body);
    assert_eq!(reply.len(), 2, "{reply:?}");
    assert!(reply[0].starts_with("+CMGS: "), "{reply:?}");
    assert_eq!(reply[1], "OK");
    let sent = &b.model.log().sent_sms[mr];
    assert_eq!(sent.pdu, SUBMIT_PDU);
    assert_eq!(sent.tpdu_len, 17);
    assert_eq!(reply[0], format!("+CMGS: {}", sent.mr));

    // ESC cancels; nothing is sent.
    b.model.handle_input(b"AT+CMGS=17\r", b.now);
    assert_eq!(b.model.take_text(), "\r\n> ");
    assert_eq!(b.feed(b"0001\x1b"), ["OK"]);
    // A length that does not match the PDU, and one out of range.
    b.model.handle_input(b"AT+CMGS=16\r", b.now);
    assert_eq!(b.model.take_text(), "\r\n> ");
    let mut wrong = SUBMIT_PDU.as_bytes().to_vec();
    wrong.push(0x1A);
    assert_eq!(b.feed(&wrong), ["+CMS ERROR: 304"]);
    assert_eq!(b.send("AT+CMGS=2"), ["+CMS ERROR: 304"]);
    assert_eq!(b.model.log().sent_sms.len(), 1);

    // With echo on, the PDU is echoed as typed.
    b.send("ATE1");
    b.model.handle_input(b"AT+CMGS=17\r", b.now);
    assert_eq!(b.model.take_text(), "AT+CMGS=17\r\r\n> ");
}

#[test]
fn incoming_sms_is_announced_read_and_deleted() {
    let mut b = Bench::of(Profile::HuaweiE1550);
    b.echo_off();
    let (len, pdu) = codec::sms_deliver_pdu(
        Some("+79168999100"),
        "+79161234567",
        "Привет",
        codec::SmsTimestamp::default(),
    )
    .expect("encodes");
    assert_eq!(b.model.incoming_sms(&pdu, b.now), Ok(Some(1)));
    assert_eq!(lines(&b.model.take_text()), ["+CMTI: \"SM\",1"]);
    let header = format!("+CMGR: 0,,{len}");
    assert_eq!(b.send("AT+CMGR=1"), [header.as_str(), &pdu, "OK"]);
    let header = format!("+CMGR: 1,,{len}");
    assert_eq!(b.send("AT+CMGR=1"), [header.as_str(), &pdu, "OK"]);
    assert_eq!(b.model.incoming_sms(&pdu, b.now), Ok(Some(2)));
    b.model.take_text();
    assert_eq!(
        b.send("AT+CPMS?")[0],
        "+CPMS: \"SM\",2,20,\"SM\",2,20,\"SM\",2,20"
    );
    assert_eq!(b.send("AT+CMGD=1"), ["OK"]);
    assert_eq!(b.send("AT+CMGR=1"), ["+CMS ERROR: 321"]);
    assert_eq!(b.send("AT+CMGL=4").len(), 3);
    assert_eq!(b.send("AT+CMGD=1,4"), ["OK"]);
    assert_eq!(b.send("AT+CMGL=4"), ["OK"]);
    assert!(matches!(
        b.model.incoming_sms("0X", b.now),
        Err(InjectError::BadPdu(_))
    ));
    // AT+CNMI=2,2: routed straight to the driver, not stored.
    assert_eq!(b.send("AT+CNMI=2,2,0,0,0"), ["OK"]);
    assert_eq!(b.model.incoming_sms(&pdu, b.now), Ok(None));
    let routed = format!("+CMT: ,{len}");
    assert_eq!(lines(&b.model.take_text()), [routed.as_str(), &pdu]);
}

#[test]
fn ussd_requests_get_the_configured_answer_later() {
    let mut b = Bench::of(Profile::HuaweiE1550);
    b.echo_off();
    assert_eq!(b.send("AT+CUSD=1,\"AA180C3602\",15"), ["OK"]);
    let request = b.model.log().ussd_requests[0].clone();
    assert_eq!(request.decoded.as_deref(), Some("*100#"));
    assert_eq!(request.dcs, 15);
    assert_eq!(b.advance(ms(499)), Vec::<String>::new());
    let answer = format!("+CUSD: 0,\"{}\",72", codec::ucs2_hex("Баланс: 100.00 руб."));
    assert_eq!(b.advance(ms(1)), [answer]);

    b.model.set_ussd_answer(UssdAnswer::gsm7("Balance 5.00"));
    b.send("AT+CUSD=1,\"AA180C3602\",15");
    let answer = format!("+CUSD: 0,\"{}\",15", codec::gsm7_pack_hex("Balance 5.00"));
    assert_eq!(b.advance(ms(500)), [answer]);

    // Quectel in UCS-2: the request and the answer are UCS-2 hex.
    let mut q = Bench::of(Profile::QuectelEc25);
    q.echo_off();
    q.send("AT+CSCS=\"UCS2\"");
    let req = codec::ucs2_hex("*100#");
    assert_eq!(q.send(&format!("AT+CUSD=1,\"{req}\",15")), ["OK"]);
    assert_eq!(
        q.model.log().ussd_requests[0].decoded.as_deref(),
        Some("*100#")
    );
    let answer = format!("+CUSD: 0,\"{}\",72", codec::ucs2_hex("Баланс: 100.00 руб."));
    assert_eq!(q.advance(ms(500)), [answer]);
}

#[test]
fn chld_before_conf_hangs_the_e1550_until_a_power_cycle() {
    let mut b = Bench::of(Profile::HuaweiE1550);
    b.echo_off();
    assert_eq!(b.send("ATD+79161234567;"), ["OK"]);
    assert_eq!(b.advance(ms(100)), ["^ORIG:1,0"]);
    assert_eq!(b.send("AT+CHLD=11"), Vec::<String>::new());
    assert!(b.model.is_hung());
    assert_eq!(b.send("AT"), Vec::<String>::new());
    assert_eq!(b.send("AT+CFUN=1,1"), Vec::<String>::new());
    assert_eq!(b.advance(ms(60_000)), Vec::<String>::new());
    assert_eq!(
        b.model.incoming_call("+7495", b.now),
        Err(InjectError::Unreachable)
    );
    b.model.set_silent(false);
    assert_eq!(b.send("AT"), Vec::<String>::new());
    b.model.power_cycle(b.now);
    assert_eq!(b.model.poll_output(), Some(ModelOutput::Detach));
    assert_eq!(b.model.poll_output(), Some(ModelOutput::Attach));
    assert!(b.model.take_text().contains("^BOOT:"));
    assert!(!b.model.is_hung());
    assert_eq!(b.send("AT"), ["AT", "OK"]);
    assert_eq!(b.model.log().hangs, 1);

    // After ^CONF the same command just releases the call.
    b.echo_off();
    b.send("ATD+79161234567;");
    assert_eq!(b.advance(ms(500)), ["^ORIG:1,0", "^CONF:1"]);
    assert_eq!(b.send("AT+CHLD=11"), ["OK", "^CEND:1,0,104,16"]);
    // And an E173 (no trap) releases a dialling call.
    let mut e173 = Bench::of(Profile::HuaweiE173);
    e173.echo_off();
    e173.send("ATD+79161234567;");
    assert_eq!(e173.send("AT+CHLD=11"), ["OK", "^CEND:1,0,104,16"]);
}

#[test]
fn urcs_interleave_inside_replies() {
    let mut b = Bench::of(Profile::HuaweiE1550);
    b.echo_off();
    b.model.set_callee(Callee::Answers {
        after: ms(0),
        hangs_up_after: None,
    });
    b.model
        .interleave(Interleave::urc("^RSSI:15").in_reply_to("AT+CLCC"));
    assert_eq!(b.send("AT"), ["OK"], "the filter holds it back");
    b.send("ATD+79161234567;");
    b.advance(ms(500));
    assert_eq!(
        b.send("AT+CLCC"),
        ["+CLCC: 1,0,0,0,0,\"+79161234567\",145", "^RSSI:15", "OK"]
    );
    assert_eq!(b.send("AT+CLCC").len(), 2, "once only");

    // RING in the middle of a two-message AT+CMGL reply.
    for _ in 0..2 {
        b.model.incoming_sms(SUBMIT_PDU, b.now).expect("stored");
    }
    b.model.take_text();
    b.model
        .interleave(Interleave::urc("RING").at(InReply::AfterFirstLine));
    let reply = b.send("AT+CMGL=4");
    assert_eq!(reply.len(), 6, "{reply:?}");
    assert!(reply[0].starts_with("+CMGL: 1,0,,"));
    assert_eq!(reply[2], "RING");
    assert!(reply[3].starts_with("+CMGL: 2,0,,"));
    assert_eq!(reply[5], "OK");

    // Garbage and periodic URCs come out as they are.
    b.model.inject_garbage(&Garbage::LongLine(10 * 1024));
    let garbage = b.model.take_bytes();
    assert_eq!(garbage.len(), 10 * 1024 + 4);
    b.model
        .set_periodic_urc(Some(("^BOOT:1,0,0,0,72".to_owned(), ms(1_000))), b.now);
    assert_eq!(
        b.advance(ms(2_000)),
        ["^BOOT:1,0,0,0,72", "^BOOT:1,0,0,0,72"]
    );
    b.model.set_periodic_urc(None, b.now);
    assert_eq!(b.advance(ms(2_000)), Vec::<String>::new());
}

#[test]
fn atz_and_cfun_reset_the_modem() {
    let mut b = Bench::of(Profile::HuaweiE1550);
    b.echo_off();
    b.send("AT+CMEE=2");
    b.send("ATD+79161234567;");
    assert_eq!(b.send("ATZ"), ["^CEND:1,0,104,16", "OK"]);
    assert_eq!(b.send("AT"), ["AT", "OK"], "echo is back on");
    assert_eq!(b.send("AT+CMEE?"), ["AT+CMEE?", "+CMEE: 0", "OK"]);

    assert_eq!(b.send("AT+CFUN=1,1"), ["AT+CFUN=1,1", "OK"]);
    assert_eq!(b.send("AT"), Vec::<String>::new(), "rebooting");
    b.advance(ms(50));
    assert_eq!(b.model.poll_output(), Some(ModelOutput::Detach));
    assert_eq!(b.advance(ms(1_949)), Vec::<String>::new());
    b.now += ms(1);
    b.model.handle_timeout(b.now);
    assert_eq!(b.model.poll_output(), Some(ModelOutput::Attach));
    assert_eq!(lines(&b.model.take_text()), ["^BOOT:20952549,0,0,0,72"]);
    assert_eq!(b.send("AT"), ["AT", "OK"]);

    let mut config = ModemConfig::default_for(Profile::QuectelEc25);
    config.reenumerate_on_reboot = false;
    let mut q = Bench::new(config);
    q.echo_off();
    q.send("AT+CFUN=1,1");
    assert_eq!(
        q.advance(ms(2_000)),
        ["RDY", "+CFUN: 1", "+CPIN: READY", "+QIND: SMS DONE"]
    );
    assert_eq!(q.model.poll_output(), None, "no re-enumeration");
}

// ------------------------------------------------------------------ the hub's engine against the model

mod with_the_hub_engine {
    use super::*;
    use hubd::device::at_modem::pdu::ussd::{self, UssdCharset};
    use hubd::device::at_modem::pdu::{SubmitOptions, deliver, submit};
    use hubd::device::at_modem::profile::DialNumber;
    use hubd::device::at_modem::replies;
    use hubd::device::at_modem::{
        Command, CommandId, Engine, EngineConfig, EngineEvent, FinalResult, ModemProfile, Urc,
    };

    /// Moves bytes both ways until neither side has anything to say.
    fn pump(engine: &mut Engine, model: &mut ModemModel, now: Instant) -> Vec<EngineEvent> {
        let mut events = Vec::new();
        for _ in 0..1_000 {
            let mut moved = false;
            while let Some(tx) = engine.poll_transmit(now) {
                model.handle_input(&tx, now);
                moved = true;
            }
            model.handle_timeout(now);
            let rx = model.take_bytes();
            if !rx.is_empty() {
                events.extend(engine.handle_input(&rx, now));
                moved = true;
            }
            events.extend(engine.poll_timeout(now));
            if !moved {
                break;
            }
        }
        events
    }

    fn responses(events: &[EngineEvent]) -> Vec<(CommandId, Vec<String>, FinalResult)> {
        events
            .iter()
            .filter_map(|e| match e {
                EngineEvent::Response { id, info, result } => {
                    Some((*id, info.clone(), result.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn run(
        engine: &mut Engine,
        model: &mut ModemModel,
        now: Instant,
        commands: Vec<Command>,
    ) -> Vec<(String, Vec<String>, FinalResult)> {
        let submitted: Vec<(CommandId, String)> = commands
            .into_iter()
            .map(|c| {
                let text = c.text().to_owned();
                (engine.submit(c), text)
            })
            .collect();
        let events = pump(engine, model, now);
        let got = responses(&events);
        assert!(
            events
                .iter()
                .all(|e| matches!(e, EngineEvent::Response { .. } | EngineEvent::Urc(_))),
            "{events:?}"
        );
        submitted
            .into_iter()
            .map(|(id, text)| {
                let (_, info, result) = got
                    .iter()
                    .find(|(rid, _, _)| *rid == id)
                    .cloned()
                    .unwrap_or_else(|| panic!("no response to {text}: {events:?}"));
                (text, info, result)
            })
            .collect()
    }

    #[test]
    fn hub_engine_identifies_and_initialises_each_profile() {
        for profile in Profile::ALL {
            let config = ModemConfig::new(profile, Identity::from_seed(3, 1, profile));
            let id = config.identity.clone();
            let mut model = ModemModel::new(config);
            let mut engine = Engine::new(EngineConfig::default());
            let now = Instant::now();
            let ident = run(
                &mut engine,
                &mut model,
                now,
                ModemProfile::identify_sequence(),
            );
            assert!(
                ident.iter().all(|(_, _, r)| *r == FinalResult::Ok),
                "{ident:?}"
            );
            let maker = replies::parse_identity(&ident[3].1, "+CGMI").expect("+CGMI");
            let model_name = replies::parse_identity(&ident[4].1, "+CGMM").expect("+CGMM");
            let hub_profile = ModemProfile::detect(&maker, &model_name);
            assert_eq!(hub_profile.model(), profile.model());

            let mut init = hub_profile.init_sequence();
            init.push(hub_profile.iccid_command());
            init.push(Command::new("AT+COPS?").expect("command"));
            let replies_ = run(&mut engine, &mut model, now, init);
            for (text, info, result) in &replies_ {
                assert_eq!(*result, FinalResult::Ok, "{profile:?} {text}: {info:?}");
            }
            let info_of = |cmd: &str| {
                replies_
                    .iter()
                    .find(|(t, _, _)| t == cmd)
                    .map(|(_, i, _)| i.clone())
                    .unwrap_or_else(|| panic!("{cmd} not sent"))
            };
            let imei = replies::parse_imei(&info_of("AT+CGSN")).expect("IMEI");
            assert_eq!(imei.as_str(), id.imei);
            assert_eq!(
                replies::parse_imsi(&info_of("AT+CIMI")),
                Ok(id.imsi.clone())
            );
            let iccid_cmd = hub_profile.iccid_command().text().to_owned();
            assert_eq!(
                replies::parse_iccid(&info_of(&iccid_cmd)),
                Ok(id.iccid.clone())
            );
            let csq = replies::parse_csq(&info_of("AT+CSQ")[0]).expect("+CSQ");
            assert_eq!((csq.rssi, csq.ber), (20, 99));
            let cops = replies::parse_cops(&info_of("AT+COPS?")[0]).expect("+COPS");
            assert_eq!(cops.name.as_deref(), Some("MTS RUS"));
            if profile.is_huawei() {
                let voice = replies::parse_cvoice(&info_of("AT^CVOICE?")[0]).expect("^CVOICE");
                assert_eq!(voice.frame_bytes(), 320);
            }
        }
    }

    #[test]
    fn hub_engine_dials_sends_sms_and_reads_ussd() {
        let mut config = ModemConfig::default_for(Profile::HuaweiE1550);
        config.callee = Callee::Answers {
            after: ms(700),
            hangs_up_after: Some(ms(1_000)),
        };
        let mut model = ModemModel::new(config);
        let hub = ModemProfile::detect("huawei", "E1550");
        let mut engine = Engine::new(EngineConfig::default());
        let t0 = Instant::now();
        run(
            &mut engine,
            &mut model,
            t0,
            ModemProfile::identify_sequence(),
        );

        let number = DialNumber::parse("+79161234567").expect("number");
        let dial = run(&mut engine, &mut model, t0, hub.dial_sequence(&number));
        assert!(
            dial.iter().all(|(_, _, r)| *r == FinalResult::Ok),
            "{dial:?}"
        );
        let calls = replies::parse_clcc_list(&dial[1].1).expect("+CLCC");
        assert_eq!(calls[0].number.as_deref(), Some("+79161234567"));
        let mut urcs = Vec::new();
        for step in 1..=30 {
            let events = pump(&mut engine, &mut model, t0 + ms(100 * step));
            urcs.extend(events.into_iter().filter_map(|e| match e {
                EngineEvent::Urc(u) => Some(format!("{u:?}")),
                _ => None,
            }));
        }
        assert_eq!(
            urcs,
            [
                "CallOriginated { call: 1, call_type: 0 }",
                "CallAlerting { call: 1 }",
                "CallConnected { call: 1, call_type: 0 }",
                "CallEnded(CallEnd { call: 1, duration_s: 1, end_status: 104, cc_cause: Some(16) })",
            ]
        );

        let now = t0 + ms(5_000);
        let parts =
            submit::encode("+79161234567", "Привет", &SubmitOptions::default()).expect("encodes");
        let sms = run(
            &mut engine,
            &mut model,
            now,
            parts.iter().map(Command::sms_submit).collect(),
        );
        let mr = replies::parse_cmgs(&sms[0].1[0]).expect("+CMGS");
        let sent = &model.log().sent_sms[0];
        assert_eq!(sent.mr, mr);
        assert_eq!(sent.pdu, parts[0].hex());
        assert_eq!(
            submit::decode(&sent.pdu)
                .expect("the hub decodes what it sent")
                .text(),
            Some("Привет".to_owned())
        );

        let ussd_cmd = hub.ussd("*100#").expect("encodes");
        run(&mut engine, &mut model, now, vec![ussd_cmd]);
        assert_eq!(
            model.log().ussd_requests[0].decoded.as_deref(),
            Some("*100#")
        );
        let events = pump(&mut engine, &mut model, now + ms(500));
        let reply = events
            .iter()
            .find_map(|e| match e {
                EngineEvent::Urc(Urc::Ussd(r)) => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no +CUSD: {events:?}"));
        let text = ussd::decode_reply(
            reply.text.as_deref().unwrap_or(""),
            reply.dcs,
            UssdCharset::PackedPerDcs,
        )
        .expect("decodes");
        assert_eq!(text, "Баланс: 100.00 руб.");

        // An SMS built by the emulator decodes with the hub's decoder.
        model
            .incoming_sms(
                &codec::sms_deliver_pdu(
                    Some("+79168999100"),
                    "+79031112233",
                    "Код 1234",
                    codec::SmsTimestamp::default(),
                )
                .expect("encodes")
                .1,
                now,
            )
            .expect("stored");
        let events = pump(&mut engine, &mut model, now + ms(600));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, EngineEvent::Urc(Urc::SmsStored { index: 1, .. }))),
            "{events:?}"
        );
        let read = run(
            &mut engine,
            &mut model,
            now + ms(600),
            vec![Command::new("AT+CMGR=1").expect("command")],
        );
        let stored = replies::parse_cmgr(&read[0].1).expect("+CMGR");
        let sms = deliver::decode(&stored.pdu).expect("SMS-DELIVER");
        assert_eq!(sms.text(), Some("Код 1234".to_owned()));
    }
}

// ------------------------------------------------------------------ real ptys

fn fast_config(profile: Profile, seed: u64) -> ModemConfig {
    let mut config = ModemConfig::new(profile, Identity::from_seed(seed, 0, profile));
    config.timings.orig = ms(10);
    config.timings.conf = ms(30);
    config.timings.reboot = ms(200);
    config.callee = Callee::Answers {
        after: ms(30),
        hangs_up_after: None,
    };
    config
}

fn open(path: &Path) -> PortClient {
    PortClient::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn exchange(client: &mut PortClient, command: &str) -> String {
    client
        .exchange(command, WAIT)
        .unwrap_or_else(|e| panic!("{command}: {e}"))
}

#[test]
fn pty_answers_at_and_survives_garbage_and_silence() {
    let modem = EmulatedModem::start(fast_config(Profile::HuaweiE1550, 11), None).expect("starts");
    let at = modem.at_path().expect("attached");
    assert!(at.starts_with("/dev/pts"), "{}", at.display());
    let mut client = open(&at);
    assert_eq!(exchange(&mut client, "AT"), "AT\r\r\nOK\r\n");
    assert!(exchange(&mut client, "AT+CGSN").contains(modem.imei()));

    modem.inject_garbage(Garbage::InvalidUtf8);
    modem.inject_garbage(Garbage::LongLine(10 * 1024));
    let expected = Garbage::InvalidUtf8.bytes().len() + Garbage::LongLine(10 * 1024).bytes().len();
    let raw = client
        .read_exact_bytes(expected, WAIT)
        .expect("garbage arrives");
    assert!(raw.contains(&0xFF) && std::str::from_utf8(&raw).is_err());
    assert!(raw.ends_with(b",\r\n"), "the 10 KB line arrives whole");
    assert_eq!(exchange(&mut client, "ATE0"), "ATE0\r\r\nOK\r\n");

    // Silenced, it swallows a command: once the emulator has read it,
    // nothing of it may come out, even after the silence ends.
    modem.set_silent(true);
    let read_before = modem.stats().at_bytes_in;
    client.command("AT").expect("writes");
    modem.wait_ports("the emulator to read AT", WAIT, |stats, _| {
        (stats.at_bytes_in >= read_before + 3).then_some(())
    });
    modem.set_silent(false);
    assert_eq!(
        exchange(&mut client, "AT+CSQ"),
        "\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    );
    assert_eq!(modem.last_error(), None);
}

#[test]
fn pty_vanishes_and_reappears_under_new_paths() {
    let dir = tempfile::tempdir().expect("temp dir");
    let modem = EmulatedModem::start(fast_config(Profile::HuaweiE1550, 12), Some(dir.path()))
        .expect("starts");
    let links = modem.links().expect("links").clone();
    let first = modem.paths().expect("attached");
    assert_eq!(std::fs::read_link(&links.at).expect("at link"), first.at);
    assert_eq!(
        std::fs::read_link(&links.voice).expect("voice link"),
        first.voice
    );
    let mut client = open(&links.at);
    assert!(exchange(&mut client, "AT").ends_with("OK\r\n"));

    modem.vanish().expect("vanishes");
    client.wait_closed(WAIT).expect("the driver sees EOF/EIO");
    assert!(modem.paths().is_none());
    assert!(
        !links.at.exists() && !links.voice.exists(),
        "udev removed the links"
    );

    let second = modem.reappear().expect("reappears");
    assert_ne!(second.at, first.at);
    assert_ne!(second.voice, first.voice);
    assert_eq!(std::fs::read_link(&links.at).expect("at link"), second.at);
    assert_eq!(modem.generation(), 2);
    let mut client = open(&links.at);
    let boot = client.wait_for("\r\n", WAIT).expect("boot URC");
    let boot = boot + &client.wait_for("\r\n", WAIT).expect("boot URC");
    assert!(boot.contains("^BOOT:"), "{boot:?}");
    assert_eq!(exchange(&mut client, "AT"), "AT\r\r\nOK\r\n");

    // AT+CFUN=1,1 re-enumerates USB on its own.
    assert!(exchange(&mut client, "AT+CFUN=1,1").ends_with("OK\r\n"));
    client.wait_closed(WAIT).expect("gone during the reboot");
    let third = modem.wait_for_generation(2).expect("back after the reboot");
    assert_ne!(third.at, second.at);
    let mut client = open(&links.at);
    assert!(exchange(&mut client, "AT").ends_with("OK\r\n"));
    assert_eq!(modem.inspect(|m| m.log().boots), 2);
}

#[test]
fn pty_voice_port_streams_a_tone_and_records_the_driver() {
    let modem = EmulatedModem::start(fast_config(Profile::HuaweiE1550, 13), None).expect("starts");
    let paths = modem.paths().expect("attached");
    let mut at = open(&paths.at);
    let mut voice = open(&paths.voice);
    exchange(&mut at, "ATE0");
    exchange(&mut at, "ATD+79161234567;");
    exchange(&mut at, "AT^DDSETEX=2");
    at.wait_for("^CONN:1,0", WAIT).expect("answered");

    let first = voice
        .read_exact_bytes(audio::FRAME_BYTES, WAIT)
        .expect("first frame");
    // (Real-time pacing is checked without a clock in the FramePacer unit
    // tests; tests here assert no timing.)
    let rest = voice
        .read_exact_bytes(9 * audio::FRAME_BYTES, WAIT)
        .expect("nine more frames");
    let pcm = audio::samples(&[first, rest].concat());
    let hz = audio::zero_crossing_hz(&pcm, audio::SAMPLE_RATE).expect("a tone");
    assert!((hz - 425.0).abs() < 10.0, "{hz} Hz");
    assert_eq!(
        audio::strongest_of(&pcm, &[350.0, 425.0, 1000.0], audio::SAMPLE_RATE),
        Some(425.0)
    );

    // What the driver plays is kept for the test.
    let mut generator = ToneGenerator::default();
    let tone = Some(Tone {
        freq_hz: 1000.0,
        amplitude: 12_000,
        also_hz: None,
    });
    let sent: Vec<u8> = (0..10).flat_map(|_| generator.next_frame(tone)).collect();
    voice.send(&sent).expect("writes audio");
    let heard = modem.wait_ports("the driver's audio", WAIT, |stats, ring| {
        (stats.voice_bytes_in >= sent.len() as u64).then(|| ring.contents())
    });
    assert_eq!(heard, sent);
    let pcm = audio::samples(&heard);
    assert_eq!(
        audio::strongest_of(&pcm, &[425.0, 1000.0], audio::SAMPLE_RATE),
        Some(1000.0)
    );

    assert!(exchange(&mut at, "AT+CHUP").contains("OK"));
    at.wait_for("^CEND:1,", WAIT).expect("call ended");
    modem.wait_until("audio to stop", WAIT, |m| (!m.audio_active()).then_some(()));
    assert!(modem.stats().frames_sent >= 10);
    assert_eq!(
        modem.inspect(|m| m.call().map(|c| c.state)),
        None::<CallState>
    );
}

#[test]
fn farm_starts_modems_with_distinct_identities_and_ports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let farm = ModemFarm::start(4, Profile::QuectelEc25, 42, Some(dir.path())).expect("starts");
    assert_eq!(farm.len(), 4);
    let mut imeis = std::collections::HashSet::new();
    let mut iccids = std::collections::HashSet::new();
    let mut paths = std::collections::HashSet::new();
    for (i, modem) in farm.modems().iter().enumerate() {
        let index = u32::try_from(i).expect("small");
        assert_eq!(
            *modem.identity(),
            Identity::from_seed(42, index, Profile::QuectelEc25)
        );
        imeis.insert(modem.imei().to_owned());
        iccids.insert(modem.identity().iccid.clone());
        let p = modem.paths().expect("attached");
        paths.insert(p.at.clone());
        paths.insert(p.voice.clone());
        let mut client = open(&modem.links().expect("links").at);
        let reply = exchange(&mut client, "AT+CGSN");
        assert!(reply.contains(modem.imei()), "{reply:?}");
    }
    assert_eq!((imeis.len(), iccids.len(), paths.len()), (4, 4, 8));
}

// ------------------------------------------------------------------ third-party client and the binary

fn socat_present() -> bool {
    Process::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `socat <args>`, writes `input`, and returns what it printed once
/// `done` holds (or panics after the deadline); socat is then killed.
fn socat(args: &[&str], input: &[u8], done: impl Fn(&str) -> bool) -> String {
    let mut child = Process::new("socat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("socat starts");
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(input).expect("socat takes input");
    stdin.flush().expect("flush");
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while !done(&String::from_utf8_lossy(&got)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => got.extend(chunk),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "socat {args:?} did not print what was wanted; got {:?}",
                    String::from_utf8_lossy(&got)
                );
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(stdin);
    let _ = reader.join();
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn socat_a_real_serial_client_reads_the_imei() {
    if !socat_present() {
        eprintln!(
            "SKIPPED socat_a_real_serial_client_reads_the_imei: socat is not installed (apt-get install -y socat)"
        );
        return;
    }
    let modem = EmulatedModem::start(fast_config(Profile::HuaweiE1550, 14), None).expect("starts");
    let at = modem.at_path().expect("attached");
    let at = at.to_str().expect("utf-8 path");
    let imei = modem.imei().to_owned();
    let out = socat(&["-", &format!("{at},raw,echo=0")], b"AT+CGSN\r", |o| {
        o.contains("OK")
    });
    assert!(
        out.contains(&format!("\r\n{imei}\r\n\r\nOK\r\n")),
        "socat printed {out:?}"
    );
    // The other spelling, and a person's Enter (LF) as line end.
    let out = socat(
        &["-T1", "STDIO", &format!("FILE:{at},raw,echo=0")],
        b"AT+CGMM\n",
        |o| o.contains("OK"),
    );
    assert!(out.contains("\r\nE1550\r\n"), "socat printed {out:?}");
}

#[test]
fn modem_emulator_binary_prints_its_ports_and_cleans_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let link_dir = dir.path().to_str().expect("utf-8");
    let mut emulator = vss_tests::HubProcess::spawn_program(
        Path::new(env!("CARGO_BIN_EXE_modem-emulator")),
        &[
            "--count",
            "2",
            "--profile",
            "quectel",
            "--link-dir",
            link_dir,
            "--seed",
            "9",
        ],
        Stdio::inherit(),
    );
    let mut modems = Vec::new();
    while modems.len() < 2 {
        let line = emulator.next_line_matching("a modem line", WAIT, |l| l.starts_with("modem "));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (fields[0], fields[2], fields[4], fields[6]),
            ("modem", "IMEI", "AT", "voice"),
            "{line}"
        );
        modems.push((fields[3].to_owned(), fields[5].to_owned()));
    }
    let expected = Identity::from_seed(9, 1, Profile::QuectelEc25).imei;
    assert_eq!(modems[1].0, expected);
    let mut client = open(Path::new(&modems[1].1));
    assert!(exchange(&mut client, "AT+CGMM").contains("\r\nEC25\r\n"));
    let link = dir.path().join("by-imei").join(format!("{expected}-at"));
    assert_eq!(
        std::fs::read_link(&link).expect("link").to_str(),
        Some(modems[1].1.as_str())
    );
    let status = emulator.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!link.exists(), "links removed on exit");
    client.wait_closed(WAIT).expect("ports closed on exit");
}
