//! Call state of one modem, followed from call-progress URCs (`^ORIG`,
//! `^CONF`, `^CONN`, `^CEND`, `RING`) and `+CLCC` snapshots, and the proof
//! type that gates `AT+CHLD=1<idx>`.
//!
//! Owns the E1550 trap: the modem stops answering if `AT+CHLD=1x` is sent for
//! an outgoing call before its `^CONF`. A [`ConfirmedCall`] can only be had
//! from [`CallTracker::confirmed`], which refuses a call that has not reached
//! `^CONF` (or `^CONN`, or alerting/active/held in `+CLCC`); it borrows the
//! tracker, so it cannot outlive the next event fed to it; and
//! [`super::command::Command::new`] refuses `AT+CHLD=1x` text, so
//! [`super::profile::ModemProfile::release_call`] is the only way to build
//! one. Incoming calls have no `^ORIG`/`^CONF` phase and are confirmed once
//! known.
//!
//! Never sends anything, never panics on odd URC orders (a `^CONF` for an
//! unknown call creates it).
//!
//! ```compile_fail
//! use hubd::device::at_modem::{CallTracker, Urc};
//! let mut tracker = CallTracker::default();
//! tracker.on_urc(&Urc::CallAlerting { call: 1 });
//! let proof = tracker.confirmed(1).unwrap();
//! tracker.on_urc(&Urc::Ring); // the proof still borrows the tracker
//! drop(proof);
//! ```

use std::collections::BTreeMap;
use std::marker::PhantomData;

use super::replies::{Call, CallDirection, CallState};
use super::urc::Urc;

/// Calls the tracker keeps at most (27.007 call indices are 1–7).
const MAX_CALLS: usize = 16;

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPhase {
    /// Outgoing, originated (`^ORIG`), remote not alerted yet.
    Dialing,
    /// Outgoing, the remote party is alerted (`^CONF`).
    Alerting,
    /// Incoming, ringing.
    Incoming,
    /// Incoming while another call is up.
    Waiting,
    /// Answered (`^CONN`).
    Active,
    /// On hold.
    Held,
}

/// One call the tracker follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedCall {
    /// The call index.
    pub index: u8,
    /// Who placed it, when known.
    pub direction: Option<CallDirection>,
    /// Where it is.
    pub phase: CallPhase,
    /// Whether `AT+CHLD=1<index>` is safe (see the module doc).
    pub confirmed: bool,
}

/// Why a call cannot be released by index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No such call.
    #[error("no call {0}")]
    Unknown(u8),
    /// The call has not reached `^CONF`.
    #[error("call {index} is {phase:?}: AT+CHLD=1{index} must wait for ^CONF")]
    NotConfirmed {
        /// The call index.
        index: u8,
        /// Where it is.
        phase: CallPhase,
    },
}

/// Proof that a call has reached `^CONF` (or later), valid while the tracker
/// is not changed.
#[derive(Debug)]
pub struct ConfirmedCall<'a> {
    index: u8,
    _tracker: PhantomData<&'a CallTracker>,
}

impl ConfirmedCall<'_> {
    /// The call index.
    pub fn index(&self) -> u8 {
        self.index
    }
}

/// The calls of one modem.
#[derive(Debug, Clone, Default)]
pub struct CallTracker {
    calls: BTreeMap<u8, TrackedCall>,
}

impl CallTracker {
    /// Follows a URC; URCs that are not about calls are ignored.
    pub fn on_urc(&mut self, urc: &Urc) {
        match urc {
            Urc::CallOriginated { call, .. } => {
                self.set(
                    *call,
                    Some(CallDirection::MobileOriginated),
                    CallPhase::Dialing,
                    false,
                );
            }
            Urc::CallAlerting { call } => {
                self.set(
                    *call,
                    Some(CallDirection::MobileOriginated),
                    CallPhase::Alerting,
                    true,
                );
            }
            Urc::CallConnected { call, .. } => {
                let direction = self.calls.get(call).and_then(|c| c.direction);
                self.set(*call, direction, CallPhase::Active, true);
            }
            Urc::CallEnded(end) => {
                self.calls.remove(&end.call);
            }
            _ => {}
        }
    }

    /// Replaces the state with an `AT+CLCC` snapshot: calls it does not list
    /// are gone. A call already confirmed stays confirmed.
    pub fn on_clcc(&mut self, calls: &[Call]) {
        let mut next = BTreeMap::new();
        for call in calls.iter().take(MAX_CALLS) {
            let phase = match call.state {
                CallState::Active => CallPhase::Active,
                CallState::Held => CallPhase::Held,
                CallState::Dialing => CallPhase::Dialing,
                CallState::Alerting => CallPhase::Alerting,
                CallState::Incoming => CallPhase::Incoming,
                CallState::Waiting => CallPhase::Waiting,
            };
            let was_confirmed = self.calls.get(&call.index).is_some_and(|c| c.confirmed);
            let confirmed = was_confirmed
                || call.direction == CallDirection::MobileTerminated
                || phase != CallPhase::Dialing;
            next.insert(
                call.index,
                TrackedCall {
                    index: call.index,
                    direction: Some(call.direction),
                    phase,
                    confirmed,
                },
            );
        }
        self.calls = next;
    }

    /// Forgets every call (the modem was reset).
    pub fn clear(&mut self) {
        self.calls.clear();
    }

    /// The calls, by index.
    pub fn calls(&self) -> impl Iterator<Item = &TrackedCall> {
        self.calls.values()
    }

    /// Call `index`, if known.
    pub fn get(&self, index: u8) -> Option<&TrackedCall> {
        self.calls.get(&index)
    }

    /// The proof that call `index` may be released with `AT+CHLD=1<index>`.
    pub fn confirmed(&self, index: u8) -> Result<ConfirmedCall<'_>, CallError> {
        let call = self.calls.get(&index).ok_or(CallError::Unknown(index))?;
        if !call.confirmed {
            return Err(CallError::NotConfirmed {
                index,
                phase: call.phase,
            });
        }
        Ok(ConfirmedCall {
            index,
            _tracker: PhantomData,
        })
    }

    fn set(
        &mut self,
        index: u8,
        direction: Option<CallDirection>,
        phase: CallPhase,
        confirmed: bool,
    ) {
        if !self.calls.contains_key(&index) && self.calls.len() >= MAX_CALLS {
            return;
        }
        let entry = self.calls.entry(index).or_insert(TrackedCall {
            index,
            direction,
            phase,
            confirmed,
        });
        entry.direction = direction.or(entry.direction);
        entry.phase = phase;
        entry.confirmed |= confirmed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::at_modem::replies::{CallMode, parse_clcc};
    use crate::device::at_modem::urc::CallEnd;

    fn clcc(line: &str) -> Call {
        parse_clcc(line).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn chld_waits_for_conf() {
        let mut t = CallTracker::default();
        assert_eq!(
            t.confirmed(1).map(|c| c.index()).err(),
            Some(CallError::Unknown(1))
        );
        t.on_urc(&Urc::CallOriginated {
            call: 1,
            call_type: 0,
        });
        assert_eq!(
            t.confirmed(1).map(|c| c.index()).err(),
            Some(CallError::NotConfirmed {
                index: 1,
                phase: CallPhase::Dialing
            })
        );
        t.on_urc(&Urc::CallAlerting { call: 1 });
        assert_eq!(t.confirmed(1).map(|c| c.index()), Ok(1));
        t.on_urc(&Urc::CallConnected {
            call: 1,
            call_type: 0,
        });
        assert_eq!(t.get(1).map(|c| c.phase), Some(CallPhase::Active));
        assert_eq!(t.confirmed(1).map(|c| c.index()), Ok(1));
        t.on_urc(&Urc::CallEnded(CallEnd {
            call: 1,
            duration_s: 3,
            end_status: 104,
            cc_cause: Some(16),
        }));
        assert_eq!(
            t.confirmed(1).map(|c| c.index()).err(),
            Some(CallError::Unknown(1))
        );
        // The next call reusing index 1 starts unconfirmed again.
        t.on_urc(&Urc::CallOriginated {
            call: 1,
            call_type: 0,
        });
        assert!(t.confirmed(1).is_err());
    }

    #[test]
    fn clcc_snapshots() {
        let mut t = CallTracker::default();
        t.on_clcc(&[
            clcc("+CLCC: 1,0,2,0,0,\"123\",129"),
            clcc("+CLCC: 2,1,5,0,0"),
        ]);
        assert!(
            t.confirmed(1).is_err(),
            "an MO call still dialling is not confirmed"
        );
        assert!(t.confirmed(2).is_ok(), "an MT call is confirmed once known");
        t.on_clcc(&[clcc("+CLCC: 1,0,3,0,0,\"123\",129")]);
        assert!(t.confirmed(1).is_ok());
        assert!(t.get(2).is_none());
        assert_eq!(t.calls().count(), 1);
        let call = clcc("+CLCC: 1,0,0,0,0");
        assert_eq!(call.mode, CallMode::Voice);
        t.clear();
        assert!(t.get(1).is_none());
    }
}
