//! Arbitrary modem output, in arbitrary chunks and with time jumping about,
//! through the AT engine with a few commands queued; then every PDU,
//! USSD text and reply line it produced (and the input itself, as hex and as
//! text) through the decoders and parsers.
//!
//! Checked, besides "never panics": each command ends at most once and only
//! commands that were submitted end; the engine never starts a command while
//! another is on the wire; a running command or a resync always has a
//! deadline; and a modem that from then on answers `OK` to everything gets
//! every command ended (the engine never gets stuck).

#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hubd::device::at_modem::pdu::{self, SubmitOptions, deliver, submit, ussd};
use hubd::device::at_modem::{Command, CommandId, Engine, EngineConfig, EngineEvent, Urc, replies};
use libfuzzer_sys::fuzz_target;

struct Harness {
    engine: Engine,
    now: Instant,
    submitted: HashSet<CommandId>,
    ended: HashSet<CommandId>,
    /// Lines to run through the decoders (collected before the liveness phase).
    lines: HashSet<String>,
    collect: bool,
}

impl Harness {
    fn submit(&mut self, command: Command) {
        let id = self.engine.submit(command);
        assert!(self.submitted.insert(id), "ids are unique");
    }

    fn record(&mut self, events: Vec<EngineEvent>) {
        for event in events {
            let ended = match event {
                EngineEvent::Response { id, info, .. } => {
                    self.keep(info);
                    Some(id)
                }
                EngineEvent::Timeout { id } | EngineEvent::Abandoned { id, .. } => Some(id),
                EngineEvent::Urc(Urc::SmsDelivered { pdu, .. } | Urc::StatusReport { pdu, .. }) => {
                    self.keep([pdu]);
                    None
                }
                EngineEvent::Urc(Urc::Ussd(reply)) => {
                    self.keep(reply.text);
                    None
                }
                EngineEvent::Urc(Urc::Unknown(line)) | EngineEvent::Discarded(line) => {
                    self.keep([line]);
                    None
                }
                _ => None,
            };
            if let Some(id) = ended {
                assert!(
                    self.submitted.contains(&id),
                    "{id} ended but was never submitted"
                );
                assert!(self.ended.insert(id), "{id} ended twice");
            }
        }
        self.check_deadline();
    }

    fn keep(&mut self, lines: impl IntoIterator<Item = String>) {
        if self.collect {
            self.lines.extend(lines);
        }
    }

    fn transmit(&mut self) {
        loop {
            let before = self.engine.running();
            let Some(_bytes) = self.engine.poll_transmit(self.now) else {
                break;
            };
            let after = self.engine.running();
            if let Some(before) = before {
                assert_eq!(
                    after,
                    Some(before),
                    "a command started while {before} was on the wire"
                );
            }
        }
        self.check_deadline();
    }

    fn check_deadline(&self) {
        if self.engine.running().is_some() || self.engine.is_resyncing() {
            assert!(
                self.engine.next_deadline().is_some(),
                "busy without a deadline"
            );
        }
    }

    fn input(&mut self, bytes: &[u8]) {
        let events = self.engine.handle_input(bytes, self.now);
        self.record(events);
        self.transmit();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let events = self.engine.poll_timeout(self.now);
        self.record(events);
        self.transmit();
    }
}

/// The commands the driver queues, built once.
fn commands() -> &'static [Command] {
    static COMMANDS: OnceLock<Vec<Command>> = OnceLock::new();
    COMMANDS.get_or_init(|| {
        let mut out: Vec<Command> = [
            "AT+CSQ",
            "AT+CLCC",
            "AT+CREG?",
            "ATD+79161234567;",
            "AT+CGSN",
            "AT+CUSD=1,\"AA180C3602\",15",
        ]
        .into_iter()
        .filter_map(|t| Command::new(t).ok())
        .collect();
        if let Ok(parts) = submit::encode("+46708251358", "hellohello", &SubmitOptions::default()) {
            out.extend(parts.iter().map(Command::sms_submit));
        }
        out
    })
}

fn decode_everything(text: &str) {
    let _ = deliver::decode(text);
    let _ = submit::decode(text);
    for dcs in [None, Some(0x48), Some(0x11), Some(0x44)] {
        for charset in [
            ussd::UssdCharset::Auto,
            ussd::UssdCharset::PackedPerDcs,
            ussd::UssdCharset::Ucs2Hex,
            ussd::UssdCharset::Plain,
        ] {
            let _ = ussd::decode_reply(text, dcs, charset);
        }
    }
    let _ = replies::parse_csq(text);
    let _ = replies::parse_cops(text);
    let _ = replies::parse_creg_read(text);
    let _ = replies::parse_creg_urc(text);
    let _ = replies::parse_clcc(text);
    let _ = replies::parse_cnum(text);
    let _ = replies::parse_cvoice(text);
    let _ = replies::parse_cusd(text);
    let _ = replies::parse_cpin(text);
    let _ = replies::parse_cmgs(text);
    let one = [text.to_owned()];
    let _ = replies::parse_imei(&one);
    let _ = replies::parse_imsi(&one);
    let _ = replies::parse_iccid(&one);
    let _ = replies::parse_identity(&one, "+CGMI");
    let _ = replies::parse_cmgr(&[text.to_owned(), text.to_owned()]);
    let _ = pdu::PduPart::from_hex(text.len() / 2, text);
}

fuzz_target!(|data: &[u8]| {
    let config = EngineConfig {
        max_line_len: 256,
        max_info_lines: 16,
        ..EngineConfig::default()
    };
    let mut h = Harness {
        engine: Engine::new(config),
        now: Instant::now(),
        submitted: HashSet::new(),
        ended: HashSet::new(),
        lines: HashSet::new(),
        collect: true,
    };
    for command in commands() {
        h.submit(command.clone());
    }
    h.transmit();

    // Ops: a control byte, then (for input) that many bytes of modem output.
    let mut rest = data;
    while let [op, tail @ ..] = rest {
        rest = tail;
        match op % 8 {
            // Modem output, in a chunk of 1–32 bytes.
            0..=4 => {
                let n = usize::from(op >> 3) + 1;
                let (chunk, after) = rest.split_at(n.min(rest.len()));
                h.input(chunk);
                rest = after;
            }
            // Time passes: up to ~200 s in uneven steps.
            5 => h.advance(Duration::from_millis(u64::from(op >> 3).pow(3) * 50)),
            // The driver queues another command.
            6 => {
                let all = commands();
                if let Some(command) = all.get(usize::from(op >> 3) % all.len().max(1)) {
                    h.submit(command.clone());
                }
                h.transmit();
            }
            // The driver's recovery: force ATZ, resync, or reset.
            _ => match (op >> 3) % 3 {
                0 => {
                    if let Ok(atz) = Command::new("ATZ") {
                        let id = h.engine.force(atz);
                        assert!(h.submitted.insert(id));
                    }
                    h.transmit();
                }
                1 => {
                    let events = h.engine.resync(h.now);
                    h.record(events);
                    h.transmit();
                }
                _ => {
                    let events = h.engine.reset();
                    h.record(events);
                    h.transmit();
                }
            },
        }
    }

    // Liveness: from now on the modem answers OK to everything.
    h.collect = false;
    for _ in 0..(h.submitted.len() + 4) * 4 {
        if h.ended.len() == h.submitted.len() {
            break;
        }
        h.input(b"\r\nOK\r\n");
        h.advance(Duration::from_secs(200));
    }
    let stuck: Vec<_> = h.submitted.difference(&h.ended).collect();
    assert!(stuck.is_empty(), "commands never ended: {stuck:?}");

    for line in std::mem::take(&mut h.lines) {
        decode_everything(&line);
    }
    decode_everything(&pdu::hex::encode(data));
    decode_everything(&String::from_utf8_lossy(data));
});
