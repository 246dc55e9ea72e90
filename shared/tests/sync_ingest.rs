//! The control plane's side of Outbox delivery: the handshake decision,
//! dedupe, gaps, the contiguous ack, and a seeded simulation of a hub and a
//! control plane over a lossy, duplicating, reordering link with reconnects.

use std::collections::{BTreeMap, VecDeque};

use vss_shared::HubId;
use vss_shared::sync::version::SUPPORTED;
use vss_shared::sync::{
    Ack, AckOutcome, CloseCode, HandshakeError, Hello, Ingest, IngestError, OutboxBatch,
    OutboxEvent, OutboxSender, OutboxState, SenderConfig, VersionError, VersionRange, accept_hello,
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

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn event(seq: u64) -> OutboxEvent {
    OutboxEvent {
        seq,
        kind: "cdr".into(),
        payload: format!("event {seq}").into_bytes(),
        created_at_ms: seq as i64,
    }
}

fn batch(seqs: &[u64]) -> OutboxBatch {
    OutboxBatch {
        events: seqs.iter().copied().map(event).collect(),
    }
}

fn hello(first_seq: u64, next_seq: u64, versions: VersionRange) -> Hello {
    Hello {
        hub_id: HubId::new("msk-01").expect("valid"),
        versions,
        software_version: "test".into(),
        config_revision: None,
        outbox: OutboxState::new(first_seq, next_seq).expect("valid"),
    }
}

// ---------------------------------------------------------------- handshake

/// (record, hub outbox first..next, expected committed / error, new base)
type HandshakeCase = (
    Option<u64>,
    (u64, u64),
    Result<u64, HandshakeError>,
    Option<u64>,
);

#[test]
fn the_handshake_picks_the_resume_point_or_refuses() {
    let cases: [HandshakeCase; 8] = [
        // A new hub, nothing ever issued.
        (None, (1, 1), Ok(0), Some(0)),
        // A new hub with history.
        (None, (1, 50), Ok(0), Some(0)),
        // No record, but the hub pruned acknowledged rows (another control
        // plane, or a lost record): its first seq sets the base.
        (None, (40, 50), Ok(39), Some(39)),
        // Known hub, rows still there.
        (Some(39), (1, 50), Ok(39), None),
        (Some(39), (40, 50), Ok(39), None),
        (Some(49), (50, 50), Ok(49), None),
        // Known hub that pruned rows never committed here.
        (
            Some(30),
            (40, 50),
            Err(HandshakeError::OutboxGap {
                committed: 30,
                first_seq: 40,
            }),
            None,
        ),
        // Known hub whose seqs went backwards (store reset).
        (
            Some(60),
            (1, 50),
            Err(HandshakeError::SequenceRegressed {
                committed: 60,
                last_issued: 49,
            }),
            None,
        ),
    ];
    for (record, (first, next), expected, new_base) in cases {
        let got = accept_hello(&hello(first, next, SUPPORTED), record, SUPPORTED, 123);
        match (got, expected) {
            (Ok(accepted), Ok(committed)) => {
                assert_eq!(
                    accepted.welcome.committed_seq, committed,
                    "{record:?} {first}..{next}"
                );
                assert_eq!(accepted.welcome.version, 1);
                assert_eq!(accepted.welcome.server_time_ms, 123);
                assert_eq!(accepted.new_base, new_base);
                assert_eq!(accepted.ingest.committed_seq(), committed);
            }
            (Err(got), Err(expected)) => assert_eq!(got, expected),
            (got, expected) => panic!("{record:?} {first}..{next}: {got:?} vs {expected:?}"),
        }
    }
}

#[test]
fn handshake_errors_close_with_their_code() {
    let ours = VersionRange::new(2, 3).expect("valid");
    let theirs = VersionRange::new(1, 1).expect("valid");
    let err = accept_hello(&hello(1, 1, theirs), None, ours, 0).expect_err("no common version");
    assert_eq!(
        err,
        HandshakeError::Version(VersionError::NoCommonVersion { ours, theirs })
    );
    let close = err.close();
    assert_eq!(close.code, CloseCode::UnsupportedVersion);
    assert!(close.reason.contains("2..=3") && close.reason.contains("1..=1"));

    let gap = HandshakeError::OutboxGap {
        committed: 1,
        first_seq: 5,
    };
    assert_eq!(gap.close().code, CloseCode::OutboxGap);
    let regressed = HandshakeError::SequenceRegressed {
        committed: 5,
        last_issued: 1,
    };
    assert_eq!(regressed.close().code, CloseCode::SequenceRegressed);
}

// ---------------------------------------------------------------- receive

#[test]
fn batches_split_into_inserts_and_duplicates() {
    let mut ingest = Ingest::new(10);
    // (batch, expected inserts, expected duplicates)
    let steps: [(&[u64], &[u64], &[u64]); 7] = [
        (&[5, 9, 10], &[], &[5, 9, 10]),           // already committed
        (&[11, 12, 13], &[11, 12, 13], &[]),       // new
        (&[12, 13, 14, 15], &[14, 15], &[12, 13]), // overlapping re-send
        (&[16, 16, 17, 16], &[16, 17], &[16, 16]), // repeated within the batch
        (&[], &[], &[]),
        (&[18, 17, 19], &[18, 19], &[17]),
        (&[1, 2, 20], &[20], &[1, 2]),
    ];
    for (i, (seqs, inserts, duplicates)) in steps.into_iter().enumerate() {
        let received = ingest.receive(batch(seqs)).expect("no gap");
        let got: Vec<u64> = received.insert.iter().map(|e| e.seq).collect();
        assert_eq!(got, inserts, "step {i}: inserts");
        assert_eq!(received.duplicates, duplicates, "step {i}: duplicates");
        assert_eq!(
            received.seqs(),
            inserts
                .first()
                .map(|f| *f..=*inserts.last().expect("non-empty")),
        );
        if let Some(event) = received.insert.first() {
            assert_eq!(event.payload, format!("event {}", event.seq).into_bytes());
        }
    }
    assert_eq!(ingest.accepted_seq(), 20);
    assert_eq!(ingest.committed_seq(), 10, "nothing committed yet");
}

#[test]
fn a_skipped_seq_is_a_gap_and_changes_nothing() {
    // (committed, batch, expected error)
    let cases: [(u64, &[u64], IngestError); 3] = [
        (
            10,
            &[12],
            IngestError::Gap {
                expected: 11,
                got: 12,
            },
        ),
        (
            10,
            &[11, 12, 14],
            IngestError::Gap {
                expected: 13,
                got: 14,
            },
        ),
        (
            0,
            &[5, 6],
            IngestError::Gap {
                expected: 1,
                got: 5,
            },
        ),
    ];
    for (committed, seqs, expected) in cases {
        let mut ingest = Ingest::new(committed);
        assert_eq!(
            ingest.receive(batch(seqs)),
            Err(expected.clone()),
            "{seqs:?}"
        );
        assert_eq!(ingest.accepted_seq(), committed, "nothing handed out");
        assert_eq!(expected.close().code, CloseCode::OutboxGap);
    }
}

#[test]
fn the_ack_is_the_highest_contiguous_commit_whatever_the_commit_order() {
    let mut ingest = Ingest::new(0);
    for seqs in [&[1, 2, 3][..], &[4, 5], &[6], &[7, 8, 9, 10]] {
        ingest.receive(batch(seqs)).expect("in order");
    }
    // (committed range, expected ack)
    let steps = [
        (4..=5, None),
        (7..=10, None),
        (1..=3, Some(5)),
        (6..=6, Some(10)),
    ];
    for (range, expected) in steps {
        assert_eq!(
            ingest.committed(range.clone()),
            Ok(expected.map(|up_to_seq| Ack { up_to_seq })),
            "{range:?}"
        );
    }
    assert_eq!(ingest.ack(), Ack { up_to_seq: 10 });
}

#[test]
fn commit_reports_that_do_not_match_are_refused() {
    let mut ingest = Ingest::new(10);
    ingest
        .receive(batch(&[11, 12, 13, 14, 15]))
        .expect("in order");
    ingest.committed(13..=14).expect("valid");
    #[allow(clippy::reversed_empty_ranges)]
    let bad = [
        9..=11,  // below committed
        10..=10, // committed already
        14..=16, // beyond accepted
        16..=16, // not handed out
        13..=13, // reported twice
        12..=13, // overlaps a report
        12..=11, // empty
    ];
    for range in bad {
        let got = ingest.committed(range.clone());
        assert!(
            matches!(got, Err(IngestError::BadCommit { .. })),
            "{range:?}: {got:?}"
        );
    }
    assert_eq!(ingest.committed(11..=12), Ok(Some(Ack { up_to_seq: 14 })));
    assert_eq!(ingest.committed(15..=15), Ok(Some(Ack { up_to_seq: 15 })));
}

// ---------------------------------------------------------------- simulation

/// How the control plane commits what `receive` hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commits {
    /// One transaction at a time, in order (the recommended driver).
    Sequential,
    /// Several transactions at once, finishing in any order.
    Concurrent,
}

/// The control plane's database, for one hub.
#[derive(Default)]
struct CpDb {
    rows: BTreeMap<u64, Vec<u8>>,
    record: Option<u64>,
    /// Inserts of a row already present (absorbed by `ON CONFLICT DO NOTHING`).
    conflicts: usize,
    /// Seqs in the order they were first inserted.
    log: Vec<u64>,
}

impl CpDb {
    fn commit(&mut self, events: &[OutboxEvent]) {
        for e in events {
            match self.rows.get(&e.seq) {
                Some(existing) => {
                    assert_eq!(
                        existing, &e.payload,
                        "seq {} re-inserted differently",
                        e.seq
                    );
                    self.conflicts += 1;
                }
                None => {
                    self.rows.insert(e.seq, e.payload.clone());
                    self.log.push(e.seq);
                }
            }
        }
    }

    /// Records an ack; checks it covers only a contiguous committed prefix.
    fn record_ack(&mut self, ack: Ack, base: u64) {
        for seq in base + 1..=ack.up_to_seq {
            assert!(
                self.rows.contains_key(&seq),
                "ack {} covers missing seq {seq}",
                ack.up_to_seq
            );
        }
        let previous = self.record.unwrap_or(0);
        assert!(
            ack.up_to_seq >= previous,
            "the committed record went backwards"
        );
        self.record = Some(ack.up_to_seq);
    }
}

/// The hub: its Outbox rows and its sender.
struct Hub {
    rows: BTreeMap<u64, OutboxEvent>,
    next_seq: u64,
    sender: OutboxSender,
}

impl Hub {
    fn outbox_state(&self) -> OutboxState {
        let first = self.rows.keys().next().copied().unwrap_or(self.next_seq);
        OutboxState::new(first, self.next_seq).expect("valid")
    }

    fn append(&mut self) {
        let seq = self.next_seq;
        self.rows.insert(seq, event(seq));
        self.next_seq += 1;
    }

    /// Deletes acknowledged rows, as `PruneAcked` does.
    fn prune(&mut self) {
        let acked = self.sender.acked();
        self.rows.retain(|seq, _| *seq > acked);
    }

    fn pump(&mut self) -> Vec<OutboxBatch> {
        let mut out = Vec::new();
        while let Some(want) = self.sender.want() {
            let rows: Vec<OutboxEvent> = self
                .rows
                .range(want.from_seq..)
                .take(want.max_events)
                .map(|(_, e)| e.clone())
                .collect();
            match self.sender.fill(rows).expect("store rows are contiguous") {
                Some(batch) => out.push(batch),
                None => break,
            }
        }
        out
    }
}

struct Outcome {
    conflicts: usize,
    gaps: usize,
    duplicates: usize,
    connections: usize,
    log_sorted: bool,
}

/// Runs one seeded scenario to completion and checks every invariant.
fn simulate(seed: u64, commits: Commits) -> Outcome {
    let mut rng = XorShift(seed | 1);
    let total = 150 + rng.below(150);
    let base = rng.below(40); // the hub's Outbox starts after pruned history
    let config = SenderConfig {
        max_batch_events: 1 + rng.below(8) as usize,
        max_events_in_flight: 4 + rng.below(28) as usize,
        ..SenderConfig::default()
    };
    let mut hub = Hub {
        rows: BTreeMap::new(),
        next_seq: base + 1,
        sender: OutboxSender::new(config),
    };
    let mut db = CpDb::default();
    let mut connections = 0;
    let mut step = 0u64;
    let (mut gaps, mut duplicates) = (0, 0);

    while hub.sender.acked() < base + total {
        connections += 1;
        assert!(connections < 5000, "seed {seed}: no progress");
        // Faults stop after a while, so every run terminates.
        let faulty = step < 3000;
        let fault = |rng: &mut XorShift, percent| faulty && rng.chance(percent);

        // Handshake.
        hub.sender.connect(hub.outbox_state());
        let hello = hello(
            hub.outbox_state().first_seq(),
            hub.outbox_state().next_seq(),
            SUPPORTED,
        );
        let accepted = accept_hello(&hello, db.record, SUPPORTED, 0)
            .unwrap_or_else(|e| panic!("seed {seed}: handshake refused: {e}"));
        if let Some(new_base) = accepted.new_base {
            assert_eq!(
                new_base, base,
                "seed {seed}: the base is the hub's declared one"
            );
            db.record = Some(new_base);
        }
        let mut ingest = accepted.ingest;
        if fault(&mut rng, 5) {
            hub.sender.disconnected(); // Welcome lost with the connection.
            step += 1;
            continue;
        }
        if let AckOutcome::Advanced { .. } = hub
            .sender
            .on_welcome(&accepted.welcome)
            .expect("valid welcome")
        {
            hub.prune();
        }

        let mut to_cp: VecDeque<OutboxBatch> = VecDeque::new();
        let mut to_hub: VecDeque<Ack> = VecDeque::new();
        let mut pending: Vec<(std::ops::RangeInclusive<u64>, Vec<OutboxEvent>)> = Vec::new();
        let mut alive = true;

        while alive && hub.sender.acked() < base + total {
            step += 1;
            let faulty = step < 3000;
            let fault = |rng: &mut XorShift, percent| faulty && rng.chance(percent);

            // The hub records new events while connected.
            if hub.next_seq <= base + total && rng.chance(60) {
                for _ in 0..=rng.below(3) {
                    if hub.next_seq <= base + total {
                        hub.append();
                    }
                }
            }
            // The hub sends; the link loses, duplicates and reorders.
            for b in hub.pump() {
                if fault(&mut rng, 4) {
                    continue; // lost
                }
                if fault(&mut rng, 4) {
                    to_cp.push_back(b.clone()); // duplicated
                }
                to_cp.push_back(b);
                if to_cp.len() >= 2 && fault(&mut rng, 3) {
                    let n = to_cp.len();
                    to_cp.swap(n - 1, n - 2); // reordered
                }
            }
            // The control plane receives.
            for _ in 0..=rng.below(3) {
                let Some(b) = to_cp.pop_front() else { break };
                match ingest.receive(b) {
                    Ok(received) => {
                        duplicates += received.duplicates.len();
                        match received.seqs() {
                            Some(range) => pending.push((range, received.insert)),
                            None => to_hub.push_back(ingest.ack()),
                        }
                    }
                    Err(IngestError::Gap { .. }) => {
                        gaps += 1;
                        alive = false; // Close { OutboxGap }; the hub reconnects.
                        break;
                    }
                    Err(e) => panic!("seed {seed}: {e}"),
                }
            }
            // The control plane commits.
            if alive && !pending.is_empty() && rng.chance(70) {
                let i = match commits {
                    Commits::Sequential => 0,
                    Commits::Concurrent => rng.below(pending.len() as u64) as usize,
                };
                if fault(&mut rng, 3) {
                    alive = false; // The transaction failed: close, the hub resends.
                } else {
                    let (range, events) = pending.remove(i);
                    db.commit(&events);
                    if let Some(ack) = ingest.committed(range).expect("valid commit") {
                        db.record_ack(ack, base);
                        if !fault(&mut rng, 5) {
                            to_hub.push_back(ack); // or the ack is lost
                        }
                    }
                }
            }
            // The hub receives acks.
            while let Some(ack) = to_hub.pop_front() {
                match hub.sender.on_ack(&ack) {
                    Ok(AckOutcome::Advanced { .. }) => {
                        if rng.chance(50) {
                            hub.prune();
                        }
                    }
                    Ok(AckOutcome::Stale) => {}
                    Err(e) => panic!("seed {seed}: {e}"),
                }
            }
            if fault(&mut rng, 2) {
                alive = false; // The connection dies.
            }
        }

        // Before the next handshake, the previous connection's commits end:
        // sequential drivers finish a prefix and abandon the rest; concurrent
        // ones finish or abandon each independently.
        let mut keep_going = true;
        for (range, events) in pending.drain(..) {
            keep_going = match commits {
                Commits::Sequential => keep_going && rng.chance(50),
                Commits::Concurrent => rng.chance(50),
            };
            if keep_going {
                db.commit(&events);
                if let Some(ack) = ingest.committed(range).expect("valid commit") {
                    db.record_ack(ack, base);
                }
            }
        }
        hub.sender.disconnected();
    }

    // Every seq arrived, once, intact, and the record says so.
    let expected: Vec<u64> = (base + 1..=base + total).collect();
    assert_eq!(
        db.rows.keys().copied().collect::<Vec<_>>(),
        expected,
        "seed {seed}"
    );
    for (seq, payload) in &db.rows {
        assert_eq!(payload, &format!("event {seq}").into_bytes());
    }
    assert_eq!(db.log.len(), expected.len());
    assert_eq!(db.record, Some(base + total), "seed {seed}");
    hub.prune();
    assert!(
        hub.rows.is_empty(),
        "seed {seed}: the hub keeps only unacknowledged rows"
    );
    Outcome {
        conflicts: db.conflicts,
        gaps,
        duplicates,
        connections,
        log_sorted: db.log.windows(2).all(|w| w[0] < w[1]),
    }
}

#[test]
fn every_seq_is_committed_exactly_once_in_order_through_faults_sequential_commits() {
    let (mut connections, mut gaps, mut duplicates) = (0, 0, 0);
    for seed in 1..=150 {
        let outcome = simulate(seed * 0x9e37_79b9, Commits::Sequential);
        assert_eq!(
            outcome.conflicts, 0,
            "seed {seed}: a row was inserted twice"
        );
        assert!(
            outcome.log_sorted,
            "seed {seed}: rows committed out of seq order"
        );
        connections += outcome.connections;
        gaps += outcome.gaps;
        duplicates += outcome.duplicates;
    }
    eprintln!("{connections} connections, {gaps} gaps, {duplicates} duplicates dropped");
    // The faults were exercised: reconnects, gaps from loss and reordering,
    // duplicates from the link.
    assert!(connections > 150 * 3 && gaps > 50 && duplicates > 50);
}

#[test]
fn every_seq_is_committed_once_through_faults_concurrent_commits() {
    let mut conflicts = 0;
    for seed in 1..=150 {
        // Rows committed above a hole that was then abandoned are sent again
        // and absorbed by the idempotent insert: still one row per seq.
        conflicts += simulate(seed * 0x85eb_ca6b, Commits::Concurrent).conflicts;
    }
    // The scenario does exercise the idempotent path.
    assert!(conflicts > 0);
}
