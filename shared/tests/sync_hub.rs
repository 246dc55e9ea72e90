//! The hub's sans-IO sync pieces: the Outbox sender (window, acks, reconnect),
//! the reconnect backoff, and the at-most-once command ledger.

use std::time::Duration;

use vss_shared::sync::codec::event_wire_len;
use vss_shared::sync::{
    Ack, AckOutcome, Backoff, BackoffConfig, CloseCode, Command, CommandDecision, CommandId,
    CommandLedger, CommandOutcome, CommandResult, Jitter, LedgerEntry, LedgerError, OutboxEvent,
    OutboxSender, OutboxState, SenderConfig, SenderError, SenderPhase, Want, Welcome,
};

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
}

// ---------------------------------------------------------------- sender

/// A fake hub store: rows `first..next` with payloads of `payload_len` bytes.
struct Store {
    first: u64,
    next: u64,
    payload_len: usize,
}

impl Store {
    fn new(first: u64, next: u64, payload_len: usize) -> Store {
        Store {
            first,
            next,
            payload_len,
        }
    }

    fn state(&self) -> OutboxState {
        OutboxState::new(self.first, self.next).expect("valid")
    }

    fn row(&self, seq: u64) -> OutboxEvent {
        OutboxEvent {
            seq,
            kind: "cdr".into(),
            payload: vec![b'x'; self.payload_len],
            created_at_ms: seq as i64,
        }
    }

    fn read(&self, want: Want) -> Vec<OutboxEvent> {
        (want.from_seq..self.next)
            .take(want.max_events)
            .map(|seq| self.row(seq))
            .collect()
    }
}

fn welcome(committed: u64) -> Welcome {
    Welcome {
        version: 1,
        server_time_ms: 0,
        committed_seq: committed,
    }
}

fn ack(up_to_seq: u64) -> Ack {
    Ack { up_to_seq }
}

fn streaming(config: SenderConfig, store: &Store, committed: u64) -> OutboxSender {
    let mut sender = OutboxSender::new(config);
    sender.connect(store.state());
    sender.on_welcome(&welcome(committed)).expect("welcome");
    sender
}

/// Asks and fills until the window is full; returns the seq ranges of the batches.
fn pump(sender: &mut OutboxSender, store: &Store) -> Vec<(u64, u64)> {
    let mut batches = Vec::new();
    while let Some(want) = sender.want() {
        match sender.fill(store.read(want)).expect("fill") {
            Some(batch) => {
                let first = batch.events.first().map(|e| e.seq).unwrap_or(0);
                let last = batch.events.last().map(|e| e.seq).unwrap_or(0);
                batches.push((first, last));
            }
            None => break,
        }
    }
    batches
}

#[test]
fn the_window_limits_events_in_flight_and_batch_size() {
    let config = SenderConfig {
        max_events_in_flight: 10,
        max_batch_events: 4,
        ..SenderConfig::default()
    };
    let store = Store::new(1, 101, 10);
    let mut sender = streaming(config, &store, 0);
    assert_eq!(pump(&mut sender, &store), vec![(1, 4), (5, 8), (9, 10)]);
    assert_eq!(sender.in_flight_events(), 10);
    assert_eq!(sender.want(), None, "window full");

    assert_eq!(
        sender.on_ack(&ack(3)),
        Ok(AckOutcome::Advanced { through: 3 })
    );
    assert_eq!(sender.in_flight_events(), 7);
    assert_eq!(pump(&mut sender, &store), vec![(11, 13)]);
    assert_eq!(sender.next_seq(), 14);
}

#[test]
fn the_window_limits_bytes_in_flight() {
    let store = Store::new(1, 101, 100);
    let size = event_wire_len(&store.row(1));
    let config = SenderConfig {
        max_bytes_in_flight: size * 5 + size / 2,
        max_batch_bytes: size * 2,
        ..SenderConfig::default()
    };
    let mut sender = streaming(config, &store, 0);
    assert_eq!(pump(&mut sender, &store), vec![(1, 2), (3, 4), (5, 5)]);
    assert_eq!(sender.in_flight_bytes(), size * 5);
    // Half an event of room is not enough for one more.
    assert!(sender.want().is_some());
    assert_eq!(
        sender.fill(store.read(sender.want().expect("room"))),
        Ok(None)
    );

    assert_eq!(
        sender.on_ack(&ack(5)),
        Ok(AckOutcome::Advanced { through: 5 })
    );
    assert_eq!(sender.in_flight_bytes(), 0);
    assert_eq!(pump(&mut sender, &store), vec![(6, 7), (8, 9), (10, 10)]);
}

#[test]
fn an_event_larger_than_a_batch_goes_alone_when_nothing_is_in_flight() {
    let store = Store::new(1, 4, 5000);
    let config = SenderConfig {
        max_batch_bytes: 1000,
        max_bytes_in_flight: 1000,
        ..SenderConfig::default()
    };
    let mut sender = streaming(config, &store, 0);
    assert_eq!(pump(&mut sender, &store), vec![(1, 1)]);
    assert_eq!(
        sender.on_ack(&ack(1)),
        Ok(AckOutcome::Advanced { through: 1 })
    );
    assert_eq!(pump(&mut sender, &store), vec![(2, 2)]);
}

#[test]
fn an_event_beyond_the_event_limit_is_an_error_and_changes_nothing() {
    let store = Store::new(1, 4, 5000);
    let config = SenderConfig {
        max_event_bytes: 1000,
        ..SenderConfig::default()
    };
    let mut sender = streaming(config, &store, 0);
    let want = sender.want().expect("room");
    assert!(matches!(
        sender.fill(store.read(want)),
        Err(SenderError::EventTooLarge {
            seq: 1,
            max: 1000,
            ..
        })
    ));
    assert_eq!((sender.next_seq(), sender.in_flight_events()), (1, 0));
}

#[test]
fn rows_that_do_not_continue_the_cursor_are_refused() {
    let store = Store::new(1, 20, 1);
    let mut sender = streaming(SenderConfig::default(), &store, 0);
    // (rows handed in, expected error)
    let cases: [(Vec<u64>, SenderError); 3] = [
        (
            vec![2, 3],
            SenderError::RowsOutOfOrder {
                expected: 1,
                got: 2,
            },
        ),
        (
            vec![1, 3],
            SenderError::RowsOutOfOrder {
                expected: 2,
                got: 3,
            },
        ),
        (
            vec![1, 2, 2],
            SenderError::RowsOutOfOrder {
                expected: 3,
                got: 2,
            },
        ),
    ];
    for (seqs, expected) in cases {
        let rows: Vec<OutboxEvent> = seqs.iter().map(|s| store.row(*s)).collect();
        assert_eq!(sender.fill(rows), Err(expected), "{seqs:?}");
        assert_eq!(sender.next_seq(), 1, "nothing consumed");
    }
    assert_eq!(sender.fill(Vec::new()), Ok(None));
}

#[test]
fn acks_advance_stale_ones_are_ignored_and_beyond_sent_is_an_error() {
    let store = Store::new(1, 101, 1);
    let config = SenderConfig {
        max_batch_events: 10,
        ..SenderConfig::default()
    };
    let mut sender = streaming(config, &store, 0);
    let _ = sender.fill(store.read(sender.want().expect("room"))); // sends 1..=10
    // (ack, expected outcome, acked after)
    let cases = [
        (4, Ok(AckOutcome::Advanced { through: 4 }), 4),
        (4, Ok(AckOutcome::Stale), 4),
        (2, Ok(AckOutcome::Stale), 4),
        (0, Ok(AckOutcome::Stale), 4),
        (
            11,
            Err(SenderError::AckBeyondSent {
                up_to: 11,
                last_sent: 10,
            }),
            4,
        ),
        (
            u64::MAX,
            Err(SenderError::AckBeyondSent {
                up_to: u64::MAX,
                last_sent: 10,
            }),
            4,
        ),
        (10, Ok(AckOutcome::Advanced { through: 10 }), 10),
    ];
    for (up_to, expected, acked) in cases {
        assert_eq!(sender.on_ack(&ack(up_to)), expected, "ack {up_to}");
        assert_eq!(sender.acked(), acked, "after ack {up_to}");
    }
    assert_eq!(sender.in_flight_events(), 0);
    assert_eq!(
        SenderError::AckBeyondSent {
            up_to: 1,
            last_sent: 0
        }
        .close_code(),
        CloseCode::ProtocolError
    );
}

#[test]
fn messages_out_of_phase_are_errors() {
    let store = Store::new(1, 5, 1);
    let mut sender = OutboxSender::new(SenderConfig::default());
    assert_eq!(sender.phase(), SenderPhase::Disconnected);
    assert_eq!(
        sender.on_ack(&ack(1)),
        Err(SenderError::Unexpected {
            message: "Ack",
            phase: SenderPhase::Disconnected
        })
    );
    assert_eq!(
        sender.on_welcome(&welcome(0)),
        Err(SenderError::Unexpected {
            message: "Welcome",
            phase: SenderPhase::Disconnected
        })
    );
    assert_eq!(sender.want(), None);
    assert_eq!(
        sender.fill(vec![store.row(1)]),
        Err(SenderError::NotStreaming {
            phase: SenderPhase::Disconnected
        })
    );
    sender.connect(store.state());
    assert_eq!(
        sender.on_ack(&ack(1)),
        Err(SenderError::Unexpected {
            message: "Ack",
            phase: SenderPhase::AwaitingWelcome
        })
    );
    assert_eq!(sender.want(), None, "nothing is sent before Welcome");
    assert!(sender.on_welcome(&welcome(0)).is_ok());
    assert_eq!(
        sender.on_welcome(&welcome(0)),
        Err(SenderError::Unexpected {
            message: "Welcome",
            phase: SenderPhase::Streaming
        })
    );
}

#[test]
fn welcome_is_checked_against_the_outbox() {
    // (outbox first..next, committed in Welcome, expected)
    let cases = [
        ((1, 1), 0, Ok(AckOutcome::Stale)),
        ((1, 11), 10, Ok(AckOutcome::Advanced { through: 10 })),
        ((5, 11), 4, Ok(AckOutcome::Advanced { through: 4 })),
        (
            (5, 11),
            3,
            Err(SenderError::ResumeBelowOutbox {
                committed: 3,
                first_seq: 5,
            }),
        ),
        (
            (1, 11),
            11,
            Err(SenderError::ResumeBeyondIssued {
                committed: 11,
                last_issued: 10,
            }),
        ),
    ];
    for ((first, next), committed, expected) in cases {
        let mut sender = OutboxSender::new(SenderConfig::default());
        sender.connect(Store::new(first, next, 1).state());
        let got = sender.on_welcome(&welcome(committed));
        assert_eq!(
            got, expected,
            "outbox {first}..{next}, committed {committed}"
        );
        if let Err(e) = got {
            let code = e.close_code();
            assert!(matches!(
                code,
                CloseCode::OutboxGap | CloseCode::SequenceRegressed
            ));
        }
    }
}

#[test]
fn reconnect_rewinds_to_the_committed_seq_and_resends_everything_unacked() {
    let store = Store::new(1, 51, 1);
    let config = SenderConfig {
        max_batch_events: 10,
        max_events_in_flight: 30,
        ..SenderConfig::default()
    };
    let mut sender = streaming(config, &store, 0);
    assert_eq!(pump(&mut sender, &store), vec![(1, 10), (11, 20), (21, 30)]);
    assert_eq!(
        sender.on_ack(&ack(10)),
        Ok(AckOutcome::Advanced { through: 10 })
    );

    sender.disconnected();
    assert_eq!(sender.phase(), SenderPhase::Disconnected);
    assert_eq!((sender.next_seq(), sender.in_flight_events()), (11, 0));

    // The control plane committed up to 15 but the ack was lost.
    sender.connect(store.state());
    assert_eq!(
        sender.on_welcome(&welcome(15)),
        Ok(AckOutcome::Advanced { through: 15 })
    );
    assert_eq!(
        pump(&mut sender, &store),
        vec![(16, 25), (26, 35), (36, 45)]
    );

    // The control plane lost its last commits (restored database) but the
    // rows are still here: resend from there.
    sender.disconnected();
    sender.connect(store.state());
    assert_eq!(sender.on_welcome(&welcome(12)), Ok(AckOutcome::Stale));
    assert_eq!(sender.acked(), 12);
    assert_eq!(pump(&mut sender, &store)[0], (13, 22));
}

// ---------------------------------------------------------------- backoff

fn backoff(jitter: Jitter) -> Backoff {
    Backoff::new(BackoffConfig {
        jitter,
        ..BackoffConfig::default()
    })
}

#[test]
fn backoff_stays_within_one_and_thirty_seconds() {
    let mut rng = XorShift(42);
    for jitter in [Jitter::Full, Jitter::Decorrelated] {
        let mut b = backoff(jitter);
        for attempt in 0..200 {
            let delay = b.next_delay(rng.next());
            assert!(
                (Duration::from_secs(1)..=Duration::from_secs(30)).contains(&delay),
                "{jitter:?} attempt {attempt}: {delay:?}"
            );
        }
        // Extreme random values too.
        for random in [0, 1, u64::MAX, u64::MAX / 2] {
            let delay = b.next_delay(random);
            assert!((Duration::from_secs(1)..=Duration::from_secs(30)).contains(&delay));
        }
    }
}

#[test]
fn full_jitter_ceiling_grows_exponentially() {
    // With the largest random below the span, the delay is the ceiling.
    let mut b = backoff(Jitter::Full);
    let ceilings: Vec<u64> = (0..8)
        .map(|_| b.next_delay(u64::MAX).as_millis() as u64)
        .collect();
    // u64::MAX % (span + 1) for span + 1 = ceiling - 1000 + 1.
    let expected: Vec<u64> = [1000u64, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        .iter()
        .map(|c| 1000 + u64::MAX % (c - 1000 + 1))
        .collect();
    assert_eq!(ceilings, expected);
    let mut b = backoff(Jitter::Full);
    assert_eq!(
        b.next_delay(0),
        Duration::from_secs(1),
        "random 0 gives the floor"
    );
}

#[test]
fn decorrelated_jitter_is_bounded_by_three_times_the_previous_delay() {
    let mut rng = XorShift(9);
    let mut b = backoff(Jitter::Decorrelated);
    let mut previous = Duration::from_secs(1);
    for _ in 0..100 {
        let delay = b.next_delay(rng.next());
        assert!(delay <= (previous * 3).min(Duration::from_secs(30)));
        previous = delay;
    }
}

#[test]
fn backoff_resets_only_after_a_healthy_connection() {
    for jitter in [Jitter::Full, Jitter::Decorrelated] {
        let mut b = backoff(jitter);
        for _ in 0..10 {
            b.next_delay(u64::MAX);
        }
        assert_eq!(b.attempt(), 10);

        // Up for 5 s: not healthy, the backoff continues.
        b.connected(100_000);
        b.disconnected(105_000);
        assert_eq!(b.attempt(), 10);
        if jitter == Jitter::Full {
            // Still at the 30 s ceiling: 1000 + 29000 % 29001 ms.
            assert_eq!(b.next_delay(29_000), Duration::from_secs(30));
        } else {
            b.next_delay(29_000);
        }

        // A failed attempt (never connected) does not reset either.
        b.disconnected(200_000);
        assert_eq!(b.attempt(), 11);

        // Up for 30 s: healthy, start again from 1 s.
        b.connected(300_000);
        b.disconnected(330_000);
        assert_eq!(b.attempt(), 0);
        assert!(b.next_delay(u64::MAX) <= Duration::from_secs(3));
        b.reset();
        assert_eq!(b.next_delay(0), Duration::from_secs(1));
    }
}

// ---------------------------------------------------------------- commands

fn id(s: &str) -> CommandId {
    CommandId::new(s).expect("valid id")
}

fn command(name: &str, expires_at_ms: i64) -> Command {
    Command {
        id: id(name),
        kind: "slot_restart".into(),
        args: vec![],
        expires_at_ms,
    }
}

#[test]
fn the_ledger_executes_each_command_at_most_once() {
    let mut ledger = CommandLedger::new();
    // (step, command, expires_at, now, expected decision)
    enum Step {
        Decide(&'static str, i64, i64, CommandDecision),
        Finish(&'static str, CommandOutcome),
    }
    use CommandDecision::*;
    use Step::*;
    let steps = [
        Decide("a", 1000, 500, Execute),
        Decide("a", 1000, 600, InProgress),
        Finish("a", CommandOutcome::Done),
        Decide("a", 1000, 700, AlreadyDone(CommandOutcome::Done)),
        Decide("a", 1000, 5000, AlreadyDone(CommandOutcome::Done)),
        Decide("b", 1000, 1000, Execute), // expiry is inclusive
        Finish("b", CommandOutcome::Failed("no modem".into())),
        Decide(
            "b",
            1000,
            1001,
            AlreadyDone(CommandOutcome::Failed("no modem".into())),
        ),
        Decide("c", 1000, 1001, Expired),
        Decide("c", 1000, 900, AlreadyDone(CommandOutcome::Expired)),
    ];
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Decide(name, expires, now, expected) => {
                assert_eq!(
                    ledger.decide(&command(name, expires), now),
                    expected,
                    "step {i}"
                );
            }
            Finish(name, outcome) => {
                assert_eq!(
                    ledger.finish(&id(name), outcome.clone()),
                    Ok(CommandResult {
                        id: id(name),
                        outcome
                    }),
                    "step {i}"
                );
            }
        }
    }
    assert_eq!(
        ledger.finish(&id("a"), CommandOutcome::Done),
        Err(LedgerError::NotRunning { id: id("a") })
    );
    assert_eq!(
        ledger.finish(&id("zzz"), CommandOutcome::Done),
        Err(LedgerError::NotRunning { id: id("zzz") })
    );
}

#[test]
fn a_command_interrupted_by_a_restart_is_never_run_again() {
    let stored = vec![
        LedgerEntry {
            id: id("done"),
            expires_at_ms: 1000,
            outcome: Some(CommandOutcome::Done),
        },
        LedgerEntry {
            id: id("running"),
            expires_at_ms: 1000,
            outcome: None,
        },
    ];
    let (mut ledger, interrupted) = CommandLedger::restore(stored);
    assert_eq!(
        interrupted,
        vec![CommandResult {
            id: id("running"),
            outcome: CommandOutcome::Unknown
        }]
    );
    assert_eq!(
        ledger.decide(&command("running", 1000), 10),
        CommandDecision::AlreadyDone(CommandOutcome::Unknown)
    );
    assert_eq!(
        ledger.decide(&command("done", 1000), 10),
        CommandDecision::AlreadyDone(CommandOutcome::Done)
    );
    assert_eq!(ledger.len(), 2);
}

#[test]
fn pruned_commands_are_answered_expired_never_run() {
    let mut ledger = CommandLedger::new();
    assert_eq!(
        ledger.decide(&command("old", 1000), 10),
        CommandDecision::Execute
    );
    assert_eq!(
        ledger.decide(&command("live", 9000), 10),
        CommandDecision::Execute
    );
    ledger
        .finish(&id("old"), CommandOutcome::Done)
        .expect("running");
    // Running commands are never pruned, finished ones past expiry are.
    assert_eq!(ledger.prune(2000), vec![id("old")]);
    assert_eq!(ledger.len(), 1);
    assert!(ledger.get(&id("live")).is_some());
    assert_eq!(
        ledger.decide(&command("old", 1000), 2000),
        CommandDecision::Expired
    );
}
