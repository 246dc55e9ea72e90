//! The control plane's side of Outbox delivery, per hub, as sans-IO logic.
//!
//! This module owns two decisions. At connect, [`accept_hello`] picks the
//! version and the resume point from the hub's `Hello` and the control
//! plane's durable record for that hub. Then, per received batch,
//! [`Ingest::receive`] splits the events into rows to insert and duplicates to
//! drop, and [`Ingest::committed`] turns the caller's commits into the `Ack`
//! to send: the highest *contiguous* committed seq. It must never touch the
//! database or a socket, and never acknowledge a seq that is not durably
//! committed together with every seq below it.
//!
//! # Gaps
//!
//! A hub's seqs are contiguous (its writer rewinds the counter when a
//! transaction fails) and it deletes only acknowledged rows, so the rows after
//! the control plane's committed seq are always there to be sent. Hence:
//!
//! - **No record of the hub** (first connection ever, or the control plane
//!   lost it): the hub's declared `outbox.first_seq` sets the base; seqs below
//!   it were pruned after an earlier acknowledgement or never issued.
//!   [`Accepted::new_base`] asks the caller to record it.
//! - **A record `c`, and `first_seq > c + 1`**: the hub pruned rows this
//!   control plane never committed (its database was restored from an older
//!   backup, or a hub bug). Events are lost: [`HandshakeError::OutboxGap`],
//!   closed with `OutboxGap`, raised as an alert. Accepting the loss is an
//!   operator's act: set the record to `first_seq - 1`.
//! - **A record `c > last issued`**: the hub's seqs went backwards (its store
//!   was reset): [`HandshakeError::SequenceRegressed`]. Accepting its new
//!   events would drop them as duplicates, so it is refused until an operator
//!   re-enrolls the hub or resets its record.
//! - **Within a connection**, batches arrive in order on one stream, so an
//!   event above `accepted + 1` means the hub skipped seqs:
//!   [`IngestError::Gap`], closed with `OutboxGap`. The hub reconnects and
//!   resends from the last acknowledged seq, so a transient fault heals itself.
//!
//! **Invariant (one ingest per hub):** the caller runs at most one [`Ingest`]
//! per hub at a time, and before accepting a new connection it finishes or
//! abandons every commit of the previous one, so the record it reads is final.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use thiserror::Error;

use super::messages::{Ack, Close, CloseCode, Hello, OutboxBatch, OutboxEvent, Welcome};
use super::version::{self, VersionError, VersionRange};

/// The control plane's answer to an acceptable `Hello`.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The message to send.
    pub welcome: Welcome,
    /// The ingest state for this connection.
    pub ingest: Ingest,
    /// `Some(base)` when the control plane had no record of the hub: record
    /// `base` as its committed seq (before or with the first commit).
    pub new_base: Option<u64>,
}

/// Why a `Hello` is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// No protocol version in common.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The hub no longer holds events the control plane has not committed.
    #[error(
        "outbox gap: committed up to seq {committed}, but the hub's Outbox starts at {first_seq}; the events between are lost"
    )]
    OutboxGap {
        /// The control plane's committed seq.
        committed: u64,
        /// The lowest seq the hub holds.
        first_seq: u64,
    },
    /// The hub issued fewer seqs than the control plane committed.
    #[error(
        "sequence regressed: committed up to seq {committed}, but the hub issued only up to {last_issued}"
    )]
    SequenceRegressed {
        /// The control plane's committed seq.
        committed: u64,
        /// The highest seq the hub issued.
        last_issued: u64,
    },
}

impl HandshakeError {
    /// The close code to send.
    pub fn close_code(&self) -> CloseCode {
        match self {
            HandshakeError::Version(_) => CloseCode::UnsupportedVersion,
            HandshakeError::OutboxGap { .. } => CloseCode::OutboxGap,
            HandshakeError::SequenceRegressed { .. } => CloseCode::SequenceRegressed,
        }
    }

    /// The `Close` to send.
    pub fn close(&self) -> Close {
        Close::new(self.close_code(), self.to_string())
    }
}

/// Decides the answer to `hello`, given the versions this control plane
/// speaks, its clock and `record`: the hub's durably committed seq, `None`
/// if it has none. The caller has already checked the hub id against the
/// client certificate.
pub fn accept_hello(
    hello: &Hello,
    record: Option<u64>,
    ours: VersionRange,
    server_time_ms: i64,
) -> Result<Accepted, HandshakeError> {
    let version = version::negotiate(ours, hello.versions)?;
    let first_seq = hello.outbox.first_seq();
    let last_issued = hello.outbox.last_issued();
    let (committed, new_base) = match record {
        None => (first_seq - 1, Some(first_seq - 1)),
        Some(committed) if committed > last_issued => {
            return Err(HandshakeError::SequenceRegressed {
                committed,
                last_issued,
            });
        }
        Some(committed) if committed + 1 < first_seq => {
            return Err(HandshakeError::OutboxGap {
                committed,
                first_seq,
            });
        }
        Some(committed) => (committed, None),
    };
    Ok(Accepted {
        welcome: Welcome {
            version,
            server_time_ms,
            committed_seq: committed,
        },
        ingest: Ingest::new(committed),
        new_base,
    })
}

/// Why a batch or a commit report is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IngestError {
    /// The batch skips seqs: `expected` was due, `got` came.
    #[error("outbox gap: expected seq {expected}, got {got}")]
    Gap {
        /// The seq that was due.
        expected: u64,
        /// The seq that came instead.
        got: u64,
    },
    /// `committed` was told of seqs that were not handed out for insert, or
    /// were reported before (a caller bug).
    #[error(
        "commit of seqs {first}..={last} does not match what was handed out (committed {committed}, accepted {accepted})"
    )]
    BadCommit {
        /// First seq reported.
        first: u64,
        /// Last seq reported.
        last: u64,
        /// The contiguous committed seq.
        committed: u64,
        /// The highest seq handed out.
        accepted: u64,
    },
}

impl IngestError {
    /// The close code to send.
    pub fn close_code(&self) -> CloseCode {
        match self {
            IngestError::Gap { .. } => CloseCode::OutboxGap,
            IngestError::BadCommit { .. } => CloseCode::ProtocolError,
        }
    }

    /// The `Close` to send.
    pub fn close(&self) -> Close {
        Close::new(self.close_code(), self.to_string())
    }
}

/// A received batch, split.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Received {
    /// Rows to insert, contiguous and in seq order. Insert them idempotently on
    /// `(hub_id, seq)` and report the commit with [`Ingest::committed`].
    pub insert: Vec<OutboxEvent>,
    /// Seqs dropped as already committed, already handed out, or repeated
    /// within the batch.
    pub duplicates: Vec<u64>,
}

impl Received {
    /// The seqs in `insert`, to pass to [`Ingest::committed`]; `None` when empty.
    pub fn seqs(&self) -> Option<RangeInclusive<u64>> {
        Some(self.insert.first()?.seq..=self.insert.last()?.seq)
    }
}

/// One connection's ingest state for one hub.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// Every seq up to here is durably committed (and acknowledged).
    committed: u64,
    /// Every seq up to here was handed out for insert.
    accepted: u64,
    /// Committed runs above `committed` (first → last), waiting for the hole below them.
    done: BTreeMap<u64, u64>,
}

impl Ingest {
    /// Ingest resuming after `committed`, the hub's durably committed seq.
    pub fn new(committed: u64) -> Ingest {
        Ingest {
            committed,
            accepted: committed,
            done: BTreeMap::new(),
        }
    }

    /// Splits a received batch. On error nothing changes; close the connection.
    ///
    /// When `insert` is empty there is nothing to commit; answer with
    /// [`Ingest::ack`] so the hub is not left waiting.
    pub fn receive(&mut self, batch: OutboxBatch) -> Result<Received, IngestError> {
        let mut accepted = self.accepted;
        let mut received = Received::default();
        for event in batch.events {
            if event.seq <= accepted {
                received.duplicates.push(event.seq);
            } else if event.seq == accepted + 1 {
                accepted = event.seq;
                received.insert.push(event);
            } else {
                return Err(IngestError::Gap {
                    expected: accepted + 1,
                    got: event.seq,
                });
            }
        }
        self.accepted = accepted;
        Ok(received)
    }

    /// The caller durably committed the rows with seqs in `seqs` (all of one
    /// [`Received::seqs`], or any part of it, in any order across batches).
    /// Returns the `Ack` to send when the contiguous committed seq advanced.
    ///
    /// The caller records the ack's seq as the hub's committed seq before
    /// sending it (it may do so in the same transaction when it commits
    /// batches one at a time, in order: then the ack is that batch's last seq).
    pub fn committed(&mut self, seqs: RangeInclusive<u64>) -> Result<Option<Ack>, IngestError> {
        let (first, last) = (*seqs.start(), *seqs.end());
        let overlaps = self
            .done
            .range(..=last)
            .next_back()
            .is_some_and(|(_, end)| *end >= first);
        if first > last || first <= self.committed || last > self.accepted || overlaps {
            return Err(IngestError::BadCommit {
                first,
                last,
                committed: self.committed,
                accepted: self.accepted,
            });
        }
        self.done.insert(first, last);
        let before = self.committed;
        while let Some(end) = (self.committed.checked_add(1)).and_then(|n| self.done.remove(&n)) {
            self.committed = end;
        }
        Ok((self.committed > before).then_some(Ack {
            up_to_seq: self.committed,
        }))
    }

    /// The `Ack` for everything committed so far.
    pub fn ack(&self) -> Ack {
        Ack {
            up_to_seq: self.committed,
        }
    }

    /// The highest contiguous committed seq.
    pub fn committed_seq(&self) -> u64 {
        self.committed
    }

    /// The highest seq handed out for insert.
    pub fn accepted_seq(&self) -> u64 {
        self.accepted
    }
}
