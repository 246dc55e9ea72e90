//! The recovery ladder of a modem that stopped answering: resync → `ATZ` →
//! `AT+CFUN=1,1` → USB power cycle → FAULT.
//!
//! Owns which step comes next, how many times each step is tried before the
//! next one, and each step's rate limit: a step is never used again sooner
//! than its `min_interval` after its last use, even across successes. That
//! limit is what stops the field notes' reset loop (an E3372 rebooted on
//! every `AT+CSQ` timeout) and a USB hub power-cycled every minute. A
//! rate-limited step is waited for, not skipped: going *up* the ladder
//! because a gentle step was used recently would make things worse.
//!
//! Never performs a step (the driver does: the engine resyncs by itself,
//! `ATZ`/`AT+CFUN=1,1` go through [`super::engine::Engine::force`], the
//! power cycle is uhubctl's) and never reads a clock: time is `now`.

use std::time::{Duration, Instant};

/// One rung of the ladder, gentlest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecoveryStep {
    /// Let the engine probe with `AT` (and ESC) until it gets a clean `OK`.
    Resync,
    /// `ATZ`: reset the modem's settings, then run the init sequence again.
    SoftReset,
    /// `AT+CFUN=1,1`: reboot the modem (it re-enumerates on USB).
    Reboot,
    /// Cut and restore the USB port's power (uhubctl).
    UsbPowerCycle,
}

impl RecoveryStep {
    /// Every step, in order.
    pub const ALL: [RecoveryStep; 4] = [
        RecoveryStep::Resync,
        RecoveryStep::SoftReset,
        RecoveryStep::Reboot,
        RecoveryStep::UsbPowerCycle,
    ];

    fn index(self) -> usize {
        match self {
            RecoveryStep::Resync => 0,
            RecoveryStep::SoftReset => 1,
            RecoveryStep::Reboot => 2,
            RecoveryStep::UsbPowerCycle => 3,
        }
    }
}

/// How one step is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPolicy {
    /// Tries of this step before moving to the next (at least 1 is used).
    pub attempts: u32,
    /// The least time between two uses of this step.
    pub min_interval: Duration,
}

/// The ladder's policy, one entry per [`RecoveryStep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// Policies of `Resync`, `SoftReset`, `Reboot`, `UsbPowerCycle`, in that order.
    pub steps: [StepPolicy; 4],
}

impl Default for RecoveryConfig {
    fn default() -> RecoveryConfig {
        let step = |attempts, secs| StepPolicy {
            attempts,
            min_interval: Duration::from_secs(secs),
        };
        RecoveryConfig {
            steps: [step(3, 0), step(1, 60), step(1, 600), step(2, 900)],
        }
    }
}

/// What the driver should do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryAction {
    /// Perform this step now.
    Perform(RecoveryStep),
    /// This step is rate limited: do nothing until `until`, then report the
    /// failure again.
    Wait {
        /// The step that is due.
        step: RecoveryStep,
        /// When it may be used.
        until: Instant,
    },
    /// Every step is spent: the slot goes to FAULT.
    Fault,
}

/// The sans-IO recovery ladder of one modem.
#[derive(Debug, Clone)]
pub struct RecoveryLadder {
    config: RecoveryConfig,
    /// Index of the current step; 4 means FAULT.
    step: usize,
    attempts_here: u32,
    last_used: [Option<Instant>; 4],
}

impl RecoveryLadder {
    /// A ladder at its bottom rung.
    pub fn new(config: RecoveryConfig) -> RecoveryLadder {
        RecoveryLadder {
            config,
            step: 0,
            attempts_here: 0,
            last_used: [None; 4],
        }
    }

    /// The modem failed (a timeout, a failed resync probe, a step that did
    /// not help): what to do now.
    pub fn on_failure(&mut self, now: Instant) -> RecoveryAction {
        loop {
            let Some(policy) = self.config.steps.get(self.step).copied() else {
                return RecoveryAction::Fault;
            };
            let step = RecoveryStep::ALL[self.step.min(3)];
            if self.attempts_here >= policy.attempts.max(1) {
                self.step += 1;
                self.attempts_here = 0;
                continue;
            }
            if let Some(last) = self.last_used[self.step]
                && let Some(until) = last.checked_add(policy.min_interval)
                && now < until
            {
                return RecoveryAction::Wait { step, until };
            }
            self.last_used[self.step] = Some(now);
            self.attempts_here += 1;
            return RecoveryAction::Perform(step);
        }
    }

    /// The modem answers cleanly again: back to the bottom rung. The rate
    /// limits remember when each step was last used.
    pub fn on_success(&mut self) {
        if self.step < 4 {
            self.step = 0;
            self.attempts_here = 0;
        }
    }

    /// Whether the ladder is spent (FAULT), which only [`RecoveryLadder::clear`] undoes.
    pub fn is_fault(&self) -> bool {
        self.step >= 4
    }

    /// The step the next failure will try (`None` at FAULT).
    pub fn current(&self) -> Option<RecoveryStep> {
        RecoveryStep::ALL.get(self.step).copied()
    }

    /// Forgets FAULT and the attempt counts (an operator restarted the slot);
    /// the rate limits still apply.
    pub fn clear(&mut self) {
        self.step = 0;
        self.attempts_here = 0;
    }

    /// When `step` was last performed.
    pub fn last_used(&self, step: RecoveryStep) -> Option<Instant> {
        self.last_used[step.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a script of `fail <secs>` / `ok` lines (seconds since start) and
    /// renders each answer.
    fn check(script: &str, expect: &[&str]) {
        let t0 = Instant::now();
        let mut ladder = RecoveryLadder::new(RecoveryConfig::default());
        let mut got = Vec::new();
        for cmd in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            match cmd.split_once(' ') {
                Some(("fail", secs)) => {
                    let now = t0 + Duration::from_secs(secs.parse().unwrap_or(0));
                    got.push(match ladder.on_failure(now) {
                        RecoveryAction::Perform(step) => format!("{step:?}"),
                        RecoveryAction::Wait { step, until } => {
                            format!("wait {step:?} until {}", (until - t0).as_secs())
                        }
                        RecoveryAction::Fault => "FAULT".to_owned(),
                    });
                }
                _ if cmd == "ok" => ladder.on_success(),
                _ => panic!("bad script line {cmd:?}"),
            }
        }
        assert_eq!(got, expect, "script {script}");
    }

    #[test]
    fn escalates_step_by_step_then_faults() {
        check(
            "fail 0; fail 1; fail 2; fail 3; fail 4; fail 5; fail 6; fail 7; fail 8",
            &[
                "Resync",
                "Resync",
                "Resync",
                "SoftReset",
                "Reboot",
                "UsbPowerCycle",
                "wait UsbPowerCycle until 905",
                "wait UsbPowerCycle until 905",
                "wait UsbPowerCycle until 905",
            ],
        );
        check(
            "fail 0; fail 0; fail 0; fail 0; fail 0; fail 0; fail 905; fail 2000",
            &[
                "Resync",
                "Resync",
                "Resync",
                "SoftReset",
                "Reboot",
                "UsbPowerCycle",
                "UsbPowerCycle",
                "FAULT",
            ],
        );
    }

    #[test]
    fn success_goes_back_down_but_rate_limits_remain() {
        // ATZ helped at 3 s; the modem hangs again at 30 s: ATZ is not due
        // until 63 s, so the ladder waits rather than rebooting.
        check(
            "fail 0; fail 1; fail 2; fail 3; ok; fail 30; fail 31; fail 32; fail 33; fail 63; ok; fail 100; fail 101; fail 102; fail 103; fail 104",
            &[
                "Resync",
                "Resync",
                "Resync",
                "SoftReset",
                "Resync",
                "Resync",
                "Resync",
                "wait SoftReset until 63",
                "SoftReset",
                "Resync",
                "Resync",
                "Resync",
                "wait SoftReset until 123",
                "wait SoftReset until 123",
            ],
        );
    }

    #[test]
    fn fault_is_sticky_until_cleared() {
        let t0 = Instant::now();
        let config = RecoveryConfig {
            steps: [StepPolicy {
                attempts: 1,
                min_interval: Duration::ZERO,
            }; 4],
        };
        let mut ladder = RecoveryLadder::new(config);
        for step in RecoveryStep::ALL {
            assert_eq!(ladder.on_failure(t0), RecoveryAction::Perform(step));
        }
        assert_eq!(ladder.on_failure(t0), RecoveryAction::Fault);
        ladder.on_success();
        assert!(ladder.is_fault());
        assert_eq!(ladder.current(), None);
        ladder.clear();
        assert_eq!(ladder.current(), Some(RecoveryStep::Resync));
        assert_eq!(ladder.last_used(RecoveryStep::Reboot), Some(t0));
    }
}
