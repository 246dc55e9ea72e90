//! The non-INVITE client transaction over UDP (RFC 3261 §17.1.2): timer E
//! retransmits the request (T1, doubling up to T2; T2 once a provisional
//! response came), timer F gives up after 64·T1.
//!
//! Sans-IO: time comes in as `Instant`s, retransmissions go out as bytes the
//! caller sends. It never looks at responses beyond their status.

use std::time::{Duration, Instant};

/// RFC 3261 timer values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip estimate (500 ms by default).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests (4 s).
    pub t2: Duration,
}

impl Timers {
    /// RFC 3261 defaults with `t1`; T2 stays 4 s unless T1 exceeds it.
    pub fn with_t1(t1: Duration) -> Timers {
        Timers {
            t1,
            t2: Duration::from_secs(4).max(t1),
        }
    }

    /// Timer F: how long a transaction waits for a final response.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

impl Default for Timers {
    fn default() -> Self {
        Timers::with_t1(Duration::from_millis(500))
    }
}

/// What the transaction wants after time passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// Nothing yet.
    Wait,
    /// Send the request again.
    Retransmit,
    /// Timer F fired: no final response; the transaction is over.
    TimedOut,
}

/// One non-INVITE client transaction, from the first send to its final
/// response or its timeout.
#[derive(Debug, Clone)]
pub struct ClientTransaction {
    timers: Timers,
    interval: Duration,
    retransmit_at: Instant,
    timeout_at: Instant,
    proceeding: bool,
    done: bool,
}

impl ClientTransaction {
    /// A transaction whose request was sent for the first time at `now`.
    pub fn start(timers: Timers, now: Instant) -> ClientTransaction {
        ClientTransaction {
            timers,
            interval: timers.t1,
            retransmit_at: now + timers.t1,
            timeout_at: now + timers.timeout(),
            proceeding: false,
            done: false,
        }
    }

    /// When [`ClientTransaction::tick`] next has something to do; `None` once over.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.done).then(|| self.retransmit_at.min(self.timeout_at))
    }

    /// Advances the timers to `now`.
    pub fn tick(&mut self, now: Instant) -> Tick {
        if self.done {
            return Tick::Wait;
        }
        if now >= self.timeout_at {
            self.done = true;
            return Tick::TimedOut;
        }
        if now >= self.retransmit_at {
            self.interval = if self.proceeding {
                self.timers.t2
            } else {
                (self.interval * 2).min(self.timers.t2)
            };
            self.retransmit_at = now + self.interval;
            return Tick::Retransmit;
        }
        Tick::Wait
    }

    /// A response with `status` arrived; true when it ends the transaction.
    pub fn on_response(&mut self, status: u16) -> bool {
        if self.done {
            return false;
        }
        if status < 200 {
            self.proceeding = true;
            false
        } else {
            self.done = true;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmits_doubling_to_t2_then_times_out_at_64_t1() {
        let start = Instant::now();
        let mut tx = ClientTransaction::start(Timers::default(), start);
        let mut sent = Vec::new();
        while let Some(at) = tx.deadline() {
            match tx.tick(at) {
                Tick::Retransmit => sent.push((at - start).as_millis()),
                Tick::TimedOut => {
                    assert_eq!((at - start).as_millis(), 32_000);
                    break;
                }
                Tick::Wait => panic!("a deadline with nothing to do"),
            }
        }
        assert_eq!(
            sent,
            vec![
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(tx.deadline(), None);
    }

    #[test]
    fn provisional_slows_to_t2_and_final_ends() {
        let start = Instant::now();
        let mut tx = ClientTransaction::start(Timers::with_t1(Duration::from_millis(50)), start);
        assert!(!tx.on_response(100));
        assert_eq!(tx.tick(start + Duration::from_millis(50)), Tick::Retransmit);
        assert_eq!(
            tx.deadline(),
            Some(start + Duration::from_millis(50) + Duration::from_secs(4))
                .map(|d| d.min(start + Duration::from_millis(3200)))
        );
        assert!(tx.on_response(200));
        assert!(!tx.on_response(200), "a retransmitted final is ignored");
        assert_eq!(tx.deadline(), None);
    }
}
