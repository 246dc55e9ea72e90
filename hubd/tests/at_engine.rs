//! The AT command engine at its public boundary: scripted transcripts of
//! what the driver does and what the modem sends, checked against the
//! events and bytes the engine produces. Time is a number of milliseconds
//! added to one `Instant`; nothing sleeps.

use std::time::{Duration, Instant};

use hubd::device::at_modem::engine::AbandonReason;
use hubd::device::at_modem::pdu::{SubmitOptions, submit};
use hubd::device::at_modem::{
    Command, Engine, EngineConfig, EngineEvent, RecoveryAction, RecoveryLadder, RecoveryStep,
};

/// Renders an event on one line.
fn render(event: &EngineEvent) -> String {
    match event {
        EngineEvent::Response { id, info, result } => format!("response {id} {info:?} {result}"),
        EngineEvent::Urc(urc) => format!("urc {urc:?}"),
        EngineEvent::Garbage(g) => format!("garbage {:?} {}", g.reason, g.preview),
        EngineEvent::Timeout { id } => format!("timeout {id}"),
        EngineEvent::Abandoned { id, reason } => format!("abandoned {id} {reason:?}"),
        EngineEvent::Discarded(line) => format!("discarded {line:?}"),
        EngineEvent::ResyncFailed { attempts } => format!("resync failed {attempts}"),
        EngineEvent::Resynced { failed_attempts } => {
            format!("resynced after {failed_attempts} failed")
        }
    }
}

/// Turns `\r`, `\n`, `\xNN` escapes into bytes.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b'x' => {
                    let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).expect("test escape");
                    out.push(u8::from_str_radix(hex, 16).expect("test escape"));
                    i += 2;
                }
                other => out.push(other),
            }
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Renders bytes the engine transmits, escaping CR, Ctrl-Z and ESC.
fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'\r' => "\\r".to_owned(),
            0x1A => "^Z".to_owned(),
            0x1B => "ESC".to_owned(),
            b => char::from(b).to_string(),
        })
        .collect()
}

/// Runs a transcript and compares the log with `expect`.
///
/// Script lines:
/// - `submit <text>`: queue a command;
/// - `sms <destination> <text>`: queue each part of an SMS;
/// - `rx <bytes>`: the modem sends bytes (`\r`, `\n`, `\xNN` escapes);
/// - `rx/<n> <bytes>`: the same, in chunks of `n` bytes;
/// - `at <ms>`: time moves to `ms` after the start, `poll_timeout` runs;
/// - `force <text>`, `reset`: the driver's recovery calls.
///
/// After every step the engine's transmissions are drained and logged as
/// `tx <bytes>`.
fn check(script: &str, expect: &str) {
    let mut engine = Engine::new(EngineConfig::default());
    let log = run(&mut engine, script);
    let expect: Vec<&str> = expect
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let got: Vec<&str> = log.iter().map(String::as_str).collect();
    assert_eq!(got, expect, "\n--- got:\n{}\n", log.join("\n"));
}

fn run(engine: &mut Engine, script: &str) -> Vec<String> {
    let t0 = Instant::now();
    let mut now = t0;
    let mut log = Vec::new();
    // Logs events, then drains what the engine wants to send, as a driver does.
    let step =
        |engine: &mut Engine, events: Vec<EngineEvent>, now: Instant, log: &mut Vec<String>| {
            log.extend(events.iter().map(render));
            while let Some(bytes) = engine.poll_transmit(now) {
                log.push(format!("tx {}", escape(&bytes)));
            }
        };
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
        let events = match cmd {
            "submit" => {
                engine.submit(Command::new(arg).expect("valid test command"));
                Vec::new()
            }
            "force" => {
                engine.force(Command::new(arg).expect("valid test command"));
                Vec::new()
            }
            "sms" => {
                let (to, text) = arg.split_once(' ').expect("sms <to> <text>");
                for part in submit::encode(to, text, &SubmitOptions::default()).expect("encodable")
                {
                    engine.submit(Command::sms_submit(&part));
                }
                Vec::new()
            }
            "rx" => engine.handle_input(&unescape(arg), now),
            "at" => {
                now = t0 + Duration::from_millis(arg.parse().expect("at <ms>"));
                engine.poll_timeout(now)
            }
            "reset" => engine.reset(),
            _ if cmd.starts_with("rx/") => {
                let n: usize = cmd[3..].parse().expect("rx/<n>");
                for chunk in unescape(arg).chunks(n) {
                    let events = engine.handle_input(chunk, now);
                    step(engine, events, now, &mut log);
                }
                Vec::new()
            }
            _ => panic!("bad script line {line:?}"),
        };
        step(engine, events, now, &mut log);
    }
    log
}

#[test]
fn simple_reply() {
    check(
        r"
        submit AT+CSQ
        rx \r\n+CSQ: 20,99\r\n\r\nOK\r\n
        ",
        r#"
        tx AT+CSQ\r
        response #1 ["+CSQ: 20,99"] OK
        "#,
    );
}

#[test]
fn urcs_interleaved_inside_a_reply_are_never_attributed_to_it() {
    check(
        r#"
        submit AT+CLCC
        rx \r\n+CLCC: 1,1,4,0,0,"+79161234567",145\r\n
        rx \r\nRING\r\n
        rx \r\n^RSSI:17\r\n
        rx \r\n+CLIP: "+79161234567",145,,,,0\r\n\r\n+CLCC: 2,1,5,0,0\r\n^BOOT:1,0,0,0,72\r\n\r\nOK\r\n
        "#,
        r#"
        tx AT+CLCC\r
        urc Ring
        urc Rssi(17)
        urc CallerId(CallerId { number: "+79161234567", number_type: Some(145), alpha: None, validity: Some(0) })
        urc Boot("1,0,0,0,72")
        response #1 ["+CLCC: 1,1,4,0,0,\"+79161234567\",145", "+CLCC: 2,1,5,0,0"] OK
        "#,
    );
}

#[test]
fn a_reply_split_across_many_chunks() {
    for n in [1, 2, 3, 5, 7, 64] {
        let script = format!(
            r#"
            submit AT+CREG?
            submit AT+CGSN
            rx/{n} \r\n+CREG: 2,1,"00C3","0010"\r\n\r\n+CREG: 1,"00C4","0011"\r\n\r\nOK\r\n\r\n490154203237518\r\n\r\nOK\r\n
            "#
        );
        check(
            &script,
            r#"
            tx AT+CREG?\r
            response #1 ["+CREG: 2,1,\"00C3\",\"0010\"", "+CREG: 1,\"00C4\",\"0011\""] OK
            tx AT+CGSN\r
            response #2 ["490154203237518"] OK
            "#,
        );
    }
}

#[test]
fn creg_is_a_urc_unless_creg_query_runs() {
    check(
        r#"
        submit AT+CSQ
        rx +CREG: 1,"00C3","0010"\r\n+CSQ: 5,0\r\nOK\r\n
        rx +CREG: 5\r\n
        "#,
        r#"
        tx AT+CSQ\r
        urc Registration(Registration { status: Home, lac: Some(195), cell_id: Some(16), access_technology: None })
        response #1 ["+CSQ: 5,0"] OK
        urc Registration(Registration { status: Roaming, lac: None, cell_id: None, access_technology: None })
        "#,
    );
}

#[test]
fn echo_is_dropped_and_errors_are_results() {
    check(
        r"
        submit AT+CPIN?
        submit AT+CMGR=1
        rx AT+CPIN?\r\r\n+CME ERROR: 10\r\n
        rx AT+CMGR=1\r\r\n+CMS ERROR: 321\r\n
        ",
        r#"
        tx AT+CPIN?\r
        response #1 [] +CME ERROR: 10
        tx AT+CMGR=1\r
        response #2 [] +CMS ERROR: 321
        "#,
    );
}

#[test]
fn one_command_on_the_wire_at_a_time() {
    check(
        r"
        submit AT
        submit ATE0
        submit AT+CGMI
        rx OK\r\n
        rx OK\r\n
        rx huawei\r\nOK\r\n
        rx OK\r\n
        ",
        r#"
        tx AT\r
        response #1 [] OK
        tx ATE0\r
        response #2 [] OK
        tx AT+CGMI\r
        response #3 ["huawei"] OK
        discarded "OK"
        "#,
    );
}

#[test]
fn dial_results_and_no_carrier_as_urc() {
    check(
        r"
        submit ATD+79161234567;
        rx \r\nBUSY\r\n
        rx \r\nNO CARRIER\r\n
        submit AT+CHUP
        rx \r\nNO CARRIER\r\n\r\n^CEND:1,0,104,16\r\n\r\nOK\r\n
        ",
        r#"
        tx ATD+79161234567;\r
        response #1 [] BUSY
        urc CallResult(NoCarrier)
        tx AT+CHUP\r
        urc CallResult(NoCarrier)
        urc CallEnded(CallEnd { call: 1, duration_s: 0, end_status: 104, cc_cause: Some(16) })
        response #2 [] OK
        "#,
    );
}

#[test]
fn sms_arriving_during_a_command_is_a_urc_with_its_pdu() {
    check(
        r"
        submit AT+CSQ
        rx \r\n+CMT: ,28\r\n07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37\r\n
        rx \r\n+CSQ: 20,99\r\n\r\nOK\r\n
        rx \r\n+CMT: ,24\r\nOK\r\n
        ",
        r#"
        tx AT+CSQ\r
        urc SmsDelivered { tpdu_len: 28, pdu: "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37" }
        response #1 ["+CSQ: 20,99"] OK
        urc Malformed { line: "+CMT: 24", error: Missing { reply: "+CMT", field: "pdu" } }
        discarded "OK"
        "#,
    );
}

#[test]
fn the_sms_prompt_flow() {
    // "hellohello" to +46708251358: AT+CMGS=23, then the PDU and Ctrl-Z.
    check(
        r"
        sms +46708251358 hellohello
        rx \r\n>\x20
        rx \r\n+CMGS: 12\r\n\r\nOK\r\n
        ",
        r#"
        tx AT+CMGS=23\r
        tx 0011000B916407281553F80000AA0AE8329BFD4697D9EC37^Z
        response #1 ["+CMGS: 12"] OK
        "#,
    );
    // The prompt split from its space, with echo on, and a URC in between.
    check(
        r"
        sms +46708251358 hellohello
        rx AT+CMGS=23\r\r\n>
        rx \x20
        rx 0011000B916407281553F80000AA0AE8329BFD4697D9EC37\x1a\r\n^RSSI:9\r\n+CMGS: 13\r\nOK\r\n
        ",
        r#"
        tx AT+CMGS=23\r
        tx 0011000B916407281553F80000AA0AE8329BFD4697D9EC37^Z
        urc Rssi(9)
        response #1 ["+CMGS: 13"] OK
        "#,
    );
    // Refused before the prompt.
    check(
        r"
        sms +46708251358 hellohello
        rx \r\n+CMS ERROR: 304\r\n
        ",
        r#"
        tx AT+CMGS=23\r
        response #1 [] +CMS ERROR: 304
        "#,
    );
}

#[test]
fn a_prompt_that_never_comes_times_out_and_escapes() {
    check(
        r"
        sms +46708251358 hellohello
        submit AT+CSQ
        at 9999
        at 10000
        rx \r\nOK\r\n
        at 10299
        at 10300
        rx \r\n+CSQ: 1,1\r\nOK\r\n
        ",
        r#"
        tx AT+CMGS=23\r
        timeout #1
        tx ESCAT\r
        resynced after 0 failed
        tx AT+CSQ\r
        response #2 ["+CSQ: 1,1"] OK
        "#,
    );
}

#[test]
fn an_unexpected_prompt_is_escaped() {
    check(
        r"
        rx \r\n>\x20
        rx OK\r\n
        at 300
        ",
        r#"
        discarded "> "
        tx ESCAT\r
        resynced after 0 failed
        "#,
    );
}

#[test]
fn timeout_then_resync_with_a_late_reply() {
    // AT+CSQ times out after 2 s; its late reply arrives during the resync.
    // The probe's OK and the late OK both come: not clean, probe again.
    check(
        r#"
        submit AT+CSQ
        submit AT+COPS?
        at 1999
        at 2000
        rx \r\n+CSQ: 20,99\r\n\r\nOK\r\n
        rx \r\nOK\r\n
        rx \r\nOK\r\n
        at 2500
        at 2800
        rx \r\n+COPS: 0,0,"MegaFon",2\r\n\r\nOK\r\n
        "#,
        r#"
        tx AT+CSQ\r
        timeout #1
        tx AT\r
        discarded "+CSQ: 20,99"
        discarded "OK"
        resync failed 1
        tx ESCAT\r
        resynced after 1 failed
        tx AT+COPS?\r
        response #2 ["+COPS: 0,0,\"MegaFon\",2"] OK
        "#,
    );
}

#[test]
fn a_silent_modem_fails_probe_after_probe() {
    check(
        r"
        submit AT
        at 2000
        at 4000
        at 6000
        at 8000
        rx OK\r\n
        at 8300
        ",
        r#"
        tx AT\r
        timeout #1
        tx AT\r
        resync failed 1
        tx ESCAT\r
        resync failed 2
        tx ESCAT\r
        resync failed 3
        tx ESCAT\r
        resynced after 3 failed
        "#,
    );
}

#[test]
fn garbage_then_resync() {
    check(
        r"
        submit AT+CSQ
        submit AT+CGMM
        rx \r\n+CS\xff\xfe\r\n
        rx OK\r\n
        at 300
        rx E1550\r\nOK\r\n
        ",
        r#"
        tx AT+CSQ\r
        garbage NotUtf8 +CS\xff\xfe
        abandoned #1 Garbage
        tx AT\r
        resynced after 0 failed
        tx AT+CGMM\r
        response #2 ["E1550"] OK
        "#,
    );
    // An over-long line while idle, then garbage while settling.
    let long = "A".repeat(5000);
    check(
        &format!(
            r"
            rx {long}\r\n
            rx OK\r\n
            rx \x07\r\n
            rx OK\r\n
            at 300
            "
        ),
        r#"
        garbage TooLong AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA…
        tx AT\r
        garbage ControlBytes \x07
        resync failed 1
        tx ESCAT\r
        resynced after 1 failed
        "#,
    );
}

#[test]
fn force_preempts_a_resync_and_reset_abandons_everything() {
    check(
        r"
        submit AT+CSQ
        submit AT+CIMI
        at 2000
        force ATZ
        rx OK\r\n
        submit AT+CGSN
        reset
        ",
        r#"
        tx AT+CSQ\r
        timeout #1
        tx AT\r
        tx ATZ\r
        response #3 [] OK
        tx AT+CIMI\r
        abandoned #2 Reset
        abandoned #4 Reset
        "#,
    );
}

#[test]
fn ids_deadlines_and_state() {
    let t0 = Instant::now();
    let mut engine = Engine::new(EngineConfig::default());
    assert_eq!(engine.next_deadline(), None);
    let a = engine.submit(Command::new("ATA").expect("valid"));
    let b = engine.submit(Command::new("AT+COPS=?").expect("valid"));
    assert_eq!(engine.queued(), 2);
    assert_eq!(engine.poll_transmit(t0).as_deref(), Some(&b"ATA\r"[..]));
    assert_eq!(engine.running(), Some(a));
    assert_eq!(engine.next_deadline(), Some(t0 + Duration::from_secs(30)));
    assert_eq!(engine.poll_transmit(t0), None, "one command on the wire");
    let events = engine.handle_input(b"\r\nNO ANSWER\r\n", t0);
    assert_eq!(events.len(), 1);
    assert_eq!(
        engine.poll_transmit(t0).as_deref(),
        Some(&b"AT+COPS=?\r"[..])
    );
    assert_eq!(engine.next_deadline(), Some(t0 + Duration::from_secs(180)));
    assert_eq!(engine.running(), Some(b));
    let events = engine.resync(t0);
    assert_eq!(
        events,
        vec![EngineEvent::Abandoned {
            id: b,
            reason: AbandonReason::Reset
        }]
    );
    assert!(engine.is_resyncing());
    assert_eq!(engine.poll_transmit(t0).as_deref(), Some(&b"\x1bAT\r"[..]));
}

#[test]
fn info_lines_are_bounded() {
    let t0 = Instant::now();
    let config = EngineConfig {
        max_info_lines: 2,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config);
    engine.submit(Command::new("AT+CLCC").expect("valid"));
    engine.poll_transmit(t0);
    let events = engine.handle_input(
        b"+CLCC: 1,0,0,0,0\r\n+CLCC: 2,0,0,0,0\r\n+CLCC: 3,0,0,0,0\r\nOK\r\n",
        t0,
    );
    let rendered: Vec<String> = events.iter().map(render).collect();
    assert_eq!(
        rendered,
        [
            "discarded \"+CLCC: 3,0,0,0,0\"",
            "response #1 [\"+CLCC: 1,0,0,0,0\", \"+CLCC: 2,0,0,0,0\"] OK"
        ]
    );
}

/// The driver's loop in miniature: engine failures climb the ladder.
#[test]
fn engine_failures_drive_the_recovery_ladder() {
    let t0 = Instant::now();
    let mut engine = Engine::new(EngineConfig::default());
    let mut ladder = RecoveryLadder::new(Default::default());
    let mut actions = Vec::new();
    engine.submit(Command::new("AT+CSQ").expect("valid"));
    let mut now = t0;
    engine.poll_transmit(now);
    for _ in 0..5 {
        now = engine
            .next_deadline()
            .expect("a deadline while the modem is silent");
        for event in engine.poll_timeout(now) {
            if matches!(
                event,
                EngineEvent::Timeout { .. } | EngineEvent::ResyncFailed { .. }
            ) {
                let action = ladder.on_failure(now);
                if action == RecoveryAction::Perform(RecoveryStep::SoftReset) {
                    engine.force(Command::new("ATZ").expect("valid"));
                }
                actions.push(action);
            }
        }
        while engine.poll_transmit(now).is_some() {}
    }
    assert_eq!(
        actions,
        [
            RecoveryAction::Perform(RecoveryStep::Resync),
            RecoveryAction::Perform(RecoveryStep::Resync),
            RecoveryAction::Perform(RecoveryStep::Resync),
            RecoveryAction::Perform(RecoveryStep::SoftReset),
            RecoveryAction::Perform(RecoveryStep::Reboot),
        ]
    );
}
