//! The hub's side of Outbox delivery, as a sans-IO state machine.
//!
//! This module owns the Outbox cursor: the highest seq the control plane
//! acknowledged, the next seq to send, and the in-flight window (events sent
//! and not yet acknowledged, bounded in count and bytes by [`SenderConfig`]).
//! It must never read the store, touch a socket or look at a clock: the caller
//! asks [`OutboxSender::want`] which rows to read, hands them to
//! [`OutboxSender::fill`], sends the batch it gets back, and feeds in
//! `Welcome` and `Ack`.
//!
//! **Invariant (at-least-once):** every event above `acked()` is sent again on
//! the next connection, from the control plane's committed seq; the caller
//! deletes (prunes) nothing above `acked()`.
//!
//! The driver's loop, per connection:
//!
//! ```text
//! sender.connect(store.outbox_state());          // then send Hello with that state
//! on Welcome  => sender.on_welcome(&w)?          // Advanced { through } => store.mark_acked(through)
//! on Ack      => sender.on_ack(&a)?              // same
//! whenever an ack arrived or the Outbox grew:
//!     while let Some(want) = sender.want() {
//!         let rows = store.outbox_from(want.from_seq, want.max_events);
//!         match sender.fill(rows)? { Some(batch) => send(batch), None => break }
//!     }
//! on disconnect => sender.disconnected()
//! ```

use std::collections::VecDeque;

use thiserror::Error;

use super::codec::event_wire_len;
use super::messages::{Ack, CloseCode, OutboxBatch, OutboxEvent, OutboxState, Welcome};

/// Limits of the in-flight window and of one batch.
///
/// The control plane's `FrameConfig::max_frame_bytes` must exceed both
/// `max_batch_bytes` and `max_event_bytes` by a few dozen bytes (envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderConfig {
    /// Most events sent and not yet acknowledged.
    pub max_events_in_flight: usize,
    /// Most bytes (see `codec::event_wire_len`) sent and not yet acknowledged.
    pub max_bytes_in_flight: usize,
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Most bytes in one batch; a single larger event still goes alone when
    /// nothing is in flight, so no event blocks the Outbox.
    pub max_batch_bytes: usize,
    /// The largest single event accepted; a larger one is an error, never sent.
    pub max_event_bytes: usize,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            max_events_in_flight: 4096,
            max_bytes_in_flight: 2 * 1024 * 1024,
            max_batch_events: 512,
            max_batch_bytes: 512 * 1024,
            max_event_bytes: 1024 * 1024,
        }
    }
}

/// Where the sender is in a connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderPhase {
    /// No connection.
    Disconnected,
    /// `Hello` sent, waiting for `Welcome`.
    AwaitingWelcome,
    /// Sending batches and receiving acks.
    Streaming,
}

/// Which rows the sender wants next: up to `max_events` rows with
/// `seq >= from_seq`, in seq order (acknowledged-but-unpruned rows included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// The first seq wanted.
    pub from_seq: u64,
    /// Most rows worth reading.
    pub max_events: usize,
    /// Bytes of window left (rows beyond it wait; informational).
    pub max_bytes: usize,
}

/// What an `Ack` or `Welcome` did to the acknowledged seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// Everything up to `through` is acknowledged: mark it so in the store; it may be pruned.
    Advanced {
        /// The new highest acknowledged seq.
        through: u64,
    },
    /// Nothing new was acknowledged (a stale or repeated ack).
    Stale,
}

/// A protocol violation by the control plane, or a misuse by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SenderError {
    /// A message arrived that the current phase does not allow (an `Ack`
    /// before `Welcome`, a second `Welcome`).
    #[error("unexpected {message} while {phase:?}")]
    Unexpected {
        /// The message that arrived.
        message: &'static str,
        /// The phase the sender was in.
        phase: SenderPhase,
    },
    /// The control plane acknowledged a seq that was never sent on this connection.
    #[error("ack up to seq {up_to} but only up to {last_sent} was sent")]
    AckBeyondSent {
        /// The acknowledged seq.
        up_to: u64,
        /// The highest seq sent.
        last_sent: u64,
    },
    /// `Welcome` asks to resume below what this Outbox still holds.
    #[error("control plane committed seq {committed}, but the Outbox starts at {first_seq}")]
    ResumeBelowOutbox {
        /// The committed seq in `Welcome`.
        committed: u64,
        /// The lowest seq the Outbox holds.
        first_seq: u64,
    },
    /// `Welcome` claims seqs committed that this hub never issued.
    #[error(
        "control plane committed seq {committed}, but this hub issued only up to {last_issued}"
    )]
    ResumeBeyondIssued {
        /// The committed seq in `Welcome`.
        committed: u64,
        /// The highest seq this hub issued.
        last_issued: u64,
    },
    /// `fill` was called outside the streaming phase (a caller bug).
    #[error("fill called while {phase:?}")]
    NotStreaming {
        /// The phase the sender was in.
        phase: SenderPhase,
    },
    /// The rows handed to `fill` do not continue from the wanted seq (a store bug:
    /// the Outbox has a hole).
    #[error("outbox rows out of order: expected seq {expected}, got {got}")]
    RowsOutOfOrder {
        /// The seq that should have come next.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
    /// An Outbox row is larger than `max_event_bytes`; it can never be delivered.
    #[error("outbox event {seq} is {bytes} bytes; at most {max} can be sent")]
    EventTooLarge {
        /// Its seq.
        seq: u64,
        /// Its size bound (`codec::event_wire_len`).
        bytes: usize,
        /// The configured maximum.
        max: usize,
    },
}

impl SenderError {
    /// The close code to send for this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            SenderError::ResumeBelowOutbox { .. } => CloseCode::OutboxGap,
            SenderError::ResumeBeyondIssued { .. } => CloseCode::SequenceRegressed,
            _ => CloseCode::ProtocolError,
        }
    }
}

/// The hub's Outbox cursor and in-flight window.
#[derive(Debug, Clone)]
pub struct OutboxSender {
    config: SenderConfig,
    phase: SenderPhase,
    /// The Outbox as it was when this connection started (checked against `Welcome`).
    outbox: OutboxState,
    acked: u64,
    next: u64,
    /// Sizes of the events in flight: `in_flight[i]` is seq `acked + 1 + i`.
    in_flight: VecDeque<usize>,
    in_flight_bytes: usize,
}

impl OutboxSender {
    /// A sender with nothing acknowledged yet, disconnected.
    pub fn new(config: SenderConfig) -> OutboxSender {
        OutboxSender {
            config: SenderConfig {
                max_events_in_flight: config.max_events_in_flight.max(1),
                max_batch_events: config.max_batch_events.max(1),
                ..config
            },
            phase: SenderPhase::Disconnected,
            outbox: OutboxState::empty(),
            acked: 0,
            next: 1,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
        }
    }

    /// A connection is starting; `outbox` is the store's state, sent in `Hello`.
    /// Anything in flight on an earlier connection is forgotten.
    pub fn connect(&mut self, outbox: OutboxState) {
        self.rewind();
        self.outbox = outbox;
        self.phase = SenderPhase::AwaitingWelcome;
    }

    /// The connection is accepted: resume after the control plane's committed seq.
    ///
    /// A committed seq below what was acknowledged before (a restored control
    /// plane database) is accepted as long as the Outbox still holds the rows:
    /// they are sent again.
    pub fn on_welcome(&mut self, welcome: &Welcome) -> Result<AckOutcome, SenderError> {
        if self.phase != SenderPhase::AwaitingWelcome {
            return Err(SenderError::Unexpected {
                message: "Welcome",
                phase: self.phase,
            });
        }
        let committed = welcome.committed_seq;
        if committed < self.outbox.first_seq() - 1 {
            return Err(SenderError::ResumeBelowOutbox {
                committed,
                first_seq: self.outbox.first_seq(),
            });
        }
        if committed > self.outbox.last_issued() {
            return Err(SenderError::ResumeBeyondIssued {
                committed,
                last_issued: self.outbox.last_issued(),
            });
        }
        let outcome = if committed > self.acked {
            AckOutcome::Advanced { through: committed }
        } else {
            AckOutcome::Stale
        };
        self.acked = committed;
        self.rewind();
        self.phase = SenderPhase::Streaming;
        Ok(outcome)
    }

    /// The control plane committed up to `ack.up_to_seq`. Lower or equal acks
    /// are stale and ignored; an ack beyond what was sent is an error.
    pub fn on_ack(&mut self, ack: &Ack) -> Result<AckOutcome, SenderError> {
        if self.phase != SenderPhase::Streaming {
            return Err(SenderError::Unexpected {
                message: "Ack",
                phase: self.phase,
            });
        }
        let up_to = ack.up_to_seq;
        if up_to <= self.acked {
            return Ok(AckOutcome::Stale);
        }
        if up_to >= self.next {
            return Err(SenderError::AckBeyondSent {
                up_to,
                last_sent: self.next - 1,
            });
        }
        // up_to < next, so at most `in_flight.len()` entries go.
        for _ in self.acked..up_to {
            if let Some(bytes) = self.in_flight.pop_front() {
                self.in_flight_bytes -= bytes;
            }
        }
        self.acked = up_to;
        Ok(AckOutcome::Advanced { through: up_to })
    }

    /// The connection ended (for any reason): everything unacknowledged will
    /// be sent again on the next one.
    pub fn disconnected(&mut self) {
        self.rewind();
        self.phase = SenderPhase::Disconnected;
    }

    /// Which rows to read next, or `None` when not streaming or the window is full.
    pub fn want(&self) -> Option<Want> {
        if self.phase != SenderPhase::Streaming {
            return None;
        }
        let events = self
            .config
            .max_events_in_flight
            .saturating_sub(self.in_flight.len());
        let bytes = self
            .config
            .max_bytes_in_flight
            .saturating_sub(self.in_flight_bytes);
        if events == 0 || (bytes == 0 && !self.in_flight.is_empty()) {
            return None;
        }
        Some(Want {
            from_seq: self.next,
            max_events: events.min(self.config.max_batch_events),
            max_bytes: bytes.min(self.config.max_batch_bytes),
        })
    }

    /// Takes rows read for the last [`Want`] (starting at its `from_seq`, in
    /// seq order) and returns the batch to send, or `None` if there were no
    /// rows or the window has no room. Rows beyond the window are left for the
    /// next `want`. On error nothing changes.
    pub fn fill(
        &mut self,
        rows: impl IntoIterator<Item = OutboxEvent>,
    ) -> Result<Option<OutboxBatch>, SenderError> {
        if self.phase != SenderPhase::Streaming {
            return Err(SenderError::NotStreaming { phase: self.phase });
        }
        let Some(want) = self.want() else {
            return Ok(None);
        };
        let mut events = Vec::new();
        let mut sizes = Vec::new();
        let mut bytes = 0usize;
        for row in rows {
            if events.len() == want.max_events {
                break;
            }
            let expected = self.next + events.len() as u64;
            if row.seq != expected {
                return Err(SenderError::RowsOutOfOrder {
                    expected,
                    got: row.seq,
                });
            }
            let size = event_wire_len(&row);
            if size > self.config.max_event_bytes {
                return Err(SenderError::EventTooLarge {
                    seq: row.seq,
                    bytes: size,
                    max: self.config.max_event_bytes,
                });
            }
            // The first event of an empty window always goes, however large.
            let alone = events.is_empty() && self.in_flight.is_empty();
            if !alone && bytes + size > want.max_bytes {
                break;
            }
            bytes += size;
            sizes.push(size);
            events.push(row);
        }
        if events.is_empty() {
            return Ok(None);
        }
        self.next += events.len() as u64;
        self.in_flight.extend(sizes);
        self.in_flight_bytes += bytes;
        Ok(Some(OutboxBatch { events }))
    }

    /// The phase.
    pub fn phase(&self) -> SenderPhase {
        self.phase
    }

    /// The highest seq the control plane acknowledged (0 before any).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The seq the next batch starts at.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Events sent and not yet acknowledged.
    pub fn in_flight_events(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes (see `codec::event_wire_len`) sent and not yet acknowledged.
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes
    }

    fn rewind(&mut self) {
        self.next = self.acked + 1;
        self.in_flight.clear();
        self.in_flight_bytes = 0;
    }
}
