//! The AT command engine: commands in → bytes out, bytes in → events out,
//! deadlines out, time in.
//!
//! Owns the command queue (one command on the wire at a time), each
//! command's deadline, the two phases of `AT+CMGS` (wait for `> `, then send
//! the PDU and Ctrl-Z), two-line URCs (`+CMT`, `+CDS`), and resync: after a
//! timeout, garbage or an unexpected `> ` it sends `AT` (preceded by ESC to
//! leave a stuck prompt), waits for `OK`, then for a quiet `settle` period
//! (so the late `OK` of a timed-out command is not taken for the probe's),
//! and only then releases the queue. Each probe that fails is reported, so
//! the driver can climb the [`super::recovery::RecoveryLadder`].
//!
//! Never reads a clock (time is the `now` argument), never touches a port,
//! never sleeps, never panics on modem input, never holds more than
//! `max_line_len` bytes of a line or `max_info_lines` lines of a reply.
//!
//! Usage by a driver:
//!
//! ```
//! use std::time::Instant;
//! use hubd::device::at_modem::{Command, Engine, EngineConfig, EngineEvent, FinalResult};
//!
//! let mut engine = Engine::new(EngineConfig::default());
//! let now = Instant::now();
//! let id = engine.submit(Command::new("AT+CSQ")?);
//! assert_eq!(engine.poll_transmit(now), Some(b"AT+CSQ\r".to_vec()));
//! let events = engine.handle_input(b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n", now);
//! assert_eq!(
//!     events,
//!     vec![EngineEvent::Response { id, info: vec!["+CSQ: 20,99".into()], result: FinalResult::Ok }]
//! );
//! # Ok::<(), hubd::device::at_modem::CommandError>(())
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::command::{Command, CommandId};
use super::lines::{Frame, Framer, Garbage};
use super::parser::{self, FinalResult, Line};
use super::replies::ReplyError;
use super::urc::{PduHeader, Urc};

/// Limits and timings of an [`Engine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// A line longer than this is garbage (a `+COPS=?` list is a few hundred bytes).
    pub max_line_len: usize,
    /// Information lines kept per reply; more are discarded.
    pub max_info_lines: usize,
    /// How long `AT+CMGS` waits for the `> ` prompt.
    pub prompt_timeout: Duration,
    /// How long a resync probe (`AT`) waits for `OK`.
    pub probe_timeout: Duration,
    /// How long the line must stay quiet after the probe's `OK`.
    pub settle: Duration,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            max_line_len: 4096,
            max_info_lines: 256,
            prompt_timeout: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(2),
            settle: Duration::from_millis(300),
        }
    }
}

/// What the engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// A command ended with a final result (which may be an error).
    Response {
        /// The command.
        id: CommandId,
        /// Its information lines, in order, URCs excluded.
        info: Vec<String>,
        /// How it ended.
        result: FinalResult,
    },
    /// An unsolicited result code.
    Urc(Urc),
    /// Bytes that were not a line; the engine resyncs.
    Garbage(Garbage),
    /// A command got no final result in time; the engine resyncs.
    Timeout {
        /// The command.
        id: CommandId,
    },
    /// A command was given up without a final result; the engine resyncs.
    Abandoned {
        /// The command.
        id: CommandId,
        /// Why.
        reason: AbandonReason,
    },
    /// A line that belonged to nothing (a stray `OK`, the late reply of a
    /// timed-out command, lines past `max_info_lines`); logged, not fatal.
    Discarded(String),
    /// A resync probe failed (no `OK` in time, or the line was not quiet);
    /// `attempts` counts the failures of this resync. The engine tries again.
    ResyncFailed {
        /// Failed probes so far in this resync.
        attempts: u32,
    },
    /// Resync succeeded; queued commands flow again.
    Resynced {
        /// Probes that failed before this one succeeded.
        failed_attempts: u32,
    },
}

/// Why a command was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbandonReason {
    /// Garbage arrived while it ran.
    Garbage,
    /// A `> ` prompt came that it did not ask for.
    UnexpectedPrompt,
    /// The driver called [`Engine::reset`] or [`Engine::resync`].
    Reset,
}

#[derive(Debug)]
struct Running {
    id: CommandId,
    command: Command,
    awaiting_prompt: bool,
    info: Vec<String>,
    deadline: Instant,
}

#[derive(Debug)]
struct Resync {
    failed: u32,
    /// Got the probe's `OK`; waiting for the line to stay quiet.
    settling: bool,
    deadline: Instant,
}

#[derive(Debug)]
enum Phase {
    Idle,
    Running(Running),
    Resync(Resync),
}

/// The sans-IO AT command engine of one modem.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    framer: Framer,
    queue: VecDeque<(CommandId, Command)>,
    phase: Phase,
    tx: VecDeque<Vec<u8>>,
    next_id: u64,
    pending_pdu: Option<PduHeader>,
    probe: Command,
}

impl Engine {
    /// An idle engine with an empty queue.
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            framer: Framer::new(config.max_line_len),
            config,
            queue: VecDeque::new(),
            phase: Phase::Idle,
            tx: VecDeque::new(),
            next_id: 1,
            pending_pdu: None,
            probe: Command::trusted("AT".to_owned()),
        }
    }

    /// Queues `command`; it goes on the wire once those before it ended.
    pub fn submit(&mut self, command: Command) -> CommandId {
        let id = self.allocate_id();
        self.queue.push_back((id, command));
        id
    }

    /// Queues `command` ahead of all others and, if a resync is under way,
    /// ends it: for the recovery ladder's `ATZ` and `AT+CFUN=1,1`. A command
    /// already on the wire is not interrupted.
    pub fn force(&mut self, command: Command) -> CommandId {
        let id = self.allocate_id();
        self.queue.push_front((id, command));
        if matches!(self.phase, Phase::Resync(_)) {
            self.phase = Phase::Idle;
            self.tx.clear();
        }
        id
    }

    /// The next bytes to write to the modem, if any. Starts the next queued
    /// command when none is running; its deadline counts from `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some(bytes) = self.tx.pop_front() {
            return Some(bytes);
        }
        if !matches!(self.phase, Phase::Idle) {
            return None;
        }
        let (id, command) = self.queue.pop_front()?;
        let awaiting_prompt = command.payload().is_some();
        let wait = if awaiting_prompt {
            self.config.prompt_timeout.min(command.timeout())
        } else {
            command.timeout()
        };
        self.framer.set_prompt_expected(awaiting_prompt);
        let bytes = command.wire_bytes();
        self.phase = Phase::Running(Running {
            id,
            command,
            awaiting_prompt,
            info: Vec::new(),
            deadline: now + wait,
        });
        Some(bytes)
    }

    /// Feeds bytes read from the modem (any chunking) and returns what they
    /// completed.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Vec<EngineEvent> {
        let mut frames = Vec::new();
        self.framer.push(bytes, &mut frames);
        let mut out = Vec::new();
        for frame in frames {
            match frame {
                Frame::Line(line) => self.on_line(line, now, &mut out),
                Frame::Prompt => self.on_prompt(now, &mut out),
                Frame::Garbage(garbage) => self.on_garbage(garbage, now, &mut out),
            }
        }
        out
    }

    /// Acts on deadlines that passed by `now`: a command's timeout, a failed
    /// probe, the end of a settle period.
    pub fn poll_timeout(&mut self, now: Instant) -> Vec<EngineEvent> {
        let mut out = Vec::new();
        match &mut self.phase {
            Phase::Running(running) if now >= running.deadline => {
                let escape = running.awaiting_prompt;
                out.push(EngineEvent::Timeout { id: running.id });
                self.enter_resync(now, escape);
            }
            Phase::Resync(resync) if now >= resync.deadline => {
                if resync.settling {
                    out.push(EngineEvent::Resynced {
                        failed_attempts: resync.failed,
                    });
                    self.phase = Phase::Idle;
                } else {
                    self.probe_failed(now, &mut out);
                }
            }
            _ => {}
        }
        out
    }

    /// When [`Engine::poll_timeout`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Idle => None,
            Phase::Running(r) => Some(r.deadline),
            Phase::Resync(r) => Some(r.deadline),
        }
    }

    /// Starts a resync now (e.g. after the port was reopened); a running
    /// command is abandoned.
    pub fn resync(&mut self, now: Instant) -> Vec<EngineEvent> {
        let mut out = Vec::new();
        if let Phase::Running(running) = &self.phase {
            out.push(EngineEvent::Abandoned {
                id: running.id,
                reason: AbandonReason::Reset,
            });
        }
        self.enter_resync(now, true);
        out
    }

    /// Abandons the running command and every queued one, and forgets any
    /// partial input: for a modem that is being power-cycled.
    pub fn reset(&mut self) -> Vec<EngineEvent> {
        let mut out = Vec::new();
        if let Phase::Running(running) = &self.phase {
            out.push(EngineEvent::Abandoned {
                id: running.id,
                reason: AbandonReason::Reset,
            });
        }
        out.extend(self.queue.drain(..).map(|(id, _)| EngineEvent::Abandoned {
            id,
            reason: AbandonReason::Reset,
        }));
        self.phase = Phase::Idle;
        self.tx.clear();
        self.framer.reset();
        self.framer.set_prompt_expected(false);
        self.pending_pdu = None;
        out
    }

    /// The command on the wire, if any.
    pub fn running(&self) -> Option<CommandId> {
        match &self.phase {
            Phase::Running(r) => Some(r.id),
            _ => None,
        }
    }

    /// Commands waiting for the wire.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether a resync is under way (the queue is held).
    pub fn is_resyncing(&self) -> bool {
        matches!(self.phase, Phase::Resync(_))
    }

    fn allocate_id(&mut self) -> CommandId {
        let id = CommandId::new(self.next_id);
        self.next_id += 1;
        id
    }

    fn enter_resync(&mut self, now: Instant, escape: bool) {
        self.phase = Phase::Resync(Resync {
            failed: 0,
            settling: false,
            deadline: now + self.config.probe_timeout,
        });
        self.send_probe(escape);
    }

    fn send_probe(&mut self, escape: bool) {
        self.tx.clear();
        self.framer.set_prompt_expected(false);
        let mut bytes = Vec::with_capacity(4);
        if escape {
            bytes.push(0x1B);
        }
        bytes.extend_from_slice(b"AT\r");
        self.tx.push_back(bytes);
    }

    /// The probe got no clean answer: count it and probe again, escaping a
    /// possible prompt this time.
    fn probe_failed(&mut self, now: Instant, out: &mut Vec<EngineEvent>) {
        let Phase::Resync(resync) = &mut self.phase else {
            return;
        };
        resync.failed = resync.failed.saturating_add(1);
        resync.settling = false;
        resync.deadline = now + self.config.probe_timeout;
        out.push(EngineEvent::ResyncFailed {
            attempts: resync.failed,
        });
        self.send_probe(true);
    }

    fn on_line(&mut self, line: String, now: Instant, out: &mut Vec<EngineEvent>) {
        if let Some(header) = self.pending_pdu.take() {
            if line.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(EngineEvent::Urc(header.complete(line)));
                return;
            }
            let (name, tpdu_len) = match header {
                PduHeader::Sms { tpdu_len } => ("+CMT", tpdu_len),
                PduHeader::StatusReport { tpdu_len } => ("+CDS", tpdu_len),
            };
            out.push(EngineEvent::Urc(Urc::Malformed {
                line: format!("{name}: {tpdu_len}"),
                error: ReplyError::Missing {
                    reply: name,
                    field: "pdu",
                },
            }));
        }
        let running = match &self.phase {
            Phase::Idle => None,
            Phase::Running(r) => Some(&r.command),
            Phase::Resync(_) => Some(&self.probe),
        };
        match parser::classify(&line, running) {
            Line::Echo => {}
            Line::Urc(Urc::Unknown(_)) if matches!(self.phase, Phase::Resync(_)) => {
                out.push(EngineEvent::Discarded(line));
            }
            Line::Urc(urc) => out.push(EngineEvent::Urc(urc)),
            Line::PduFollows(header) => self.pending_pdu = Some(header),
            Line::Info(info) => match &mut self.phase {
                Phase::Running(r) if r.info.len() < self.config.max_info_lines => r.info.push(info),
                _ => out.push(EngineEvent::Discarded(info)),
            },
            Line::Final(result) => self.on_final(line, result, now, out),
        }
    }

    fn on_final(
        &mut self,
        line: String,
        result: FinalResult,
        now: Instant,
        out: &mut Vec<EngineEvent>,
    ) {
        match &mut self.phase {
            Phase::Idle => out.push(EngineEvent::Discarded(line)),
            Phase::Running(_) => {
                if let Phase::Running(running) = std::mem::replace(&mut self.phase, Phase::Idle) {
                    self.framer.set_prompt_expected(false);
                    out.push(EngineEvent::Response {
                        id: running.id,
                        info: running.info,
                        result,
                    });
                }
            }
            Phase::Resync(resync) if resync.settling => {
                // Two answers to one probe: one was the late reply of the
                // command that timed out. Not clean yet.
                out.push(EngineEvent::Discarded(line));
                self.probe_failed(now, out);
            }
            Phase::Resync(resync) if result == FinalResult::Ok => {
                resync.settling = true;
                resync.deadline = now + self.config.settle;
            }
            Phase::Resync(_) => out.push(EngineEvent::Discarded(line)),
        }
    }

    fn on_prompt(&mut self, now: Instant, out: &mut Vec<EngineEvent>) {
        match &mut self.phase {
            Phase::Running(running) if running.awaiting_prompt => {
                let mut bytes = running
                    .command
                    .payload()
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec();
                bytes.push(0x1A);
                self.tx.push_back(bytes);
                running.awaiting_prompt = false;
                running.deadline = now + running.command.timeout();
                self.framer.set_prompt_expected(false);
            }
            Phase::Running(running) => {
                out.push(EngineEvent::Discarded("> ".to_owned()));
                out.push(EngineEvent::Abandoned {
                    id: running.id,
                    reason: AbandonReason::UnexpectedPrompt,
                });
                self.enter_resync(now, true);
            }
            Phase::Resync(resync) => {
                // The modem waits for SMS text: leave the prompt first.
                out.push(EngineEvent::Discarded("> ".to_owned()));
                if resync.settling {
                    resync.settling = false;
                    resync.deadline = now + self.config.probe_timeout;
                }
                self.send_probe(true);
            }
            Phase::Idle => {
                out.push(EngineEvent::Discarded("> ".to_owned()));
                self.enter_resync(now, true);
            }
        }
    }

    fn on_garbage(&mut self, garbage: Garbage, now: Instant, out: &mut Vec<EngineEvent>) {
        out.push(EngineEvent::Garbage(garbage));
        match &self.phase {
            Phase::Running(running) => {
                let escape = running.awaiting_prompt;
                out.push(EngineEvent::Abandoned {
                    id: running.id,
                    reason: AbandonReason::Garbage,
                });
                self.enter_resync(now, escape);
            }
            Phase::Idle => self.enter_resync(now, false),
            Phase::Resync(resync) if resync.settling => self.probe_failed(now, out),
            Phase::Resync(_) => {}
        }
    }
}
