//! Reconnect delays for the hub's sync client.
//!
//! This module owns how long the hub waits before reconnecting: exponential
//! from [`BackoffConfig::initial`] (1 s) to [`BackoffConfig::max`] (30 s),
//! jittered so a fleet of hubs does not reconnect in step after a control
//! plane restart, and reset once a connection has stayed up for
//! [`BackoffConfig::healthy_after`]. It must never read a clock or a global
//! RNG: the caller passes `now_ms` (any monotonic milliseconds) and a random
//! `u64` per delay.

use std::time::Duration;

/// How the delay is spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform between `initial` and the exponential ceiling
    /// `min(max, initial * 2^attempt)`.
    Full,
    /// Uniform between `initial` and three times the previous delay, capped at `max`
    /// ("decorrelated jitter").
    Decorrelated,
}

/// Backoff tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The shortest delay, and the first attempt's floor.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// How delays are spread.
    pub jitter: Jitter,
    /// A connection that lasted this long resets the backoff when it ends.
    pub healthy_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: Jitter::Full,
            healthy_after: Duration::from_secs(30),
        }
    }
}

/// Reconnect delay state for one sync client.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    healthy_after_ms: u64,
    jitter: Jitter,
    /// Failed attempts since the last reset.
    attempt: u32,
    /// The previous delay (decorrelated jitter), ms.
    previous_ms: u64,
    /// When the current connection came up, if one is up.
    connected_at_ms: Option<u64>,
}

impl Backoff {
    /// A fresh backoff; `max` below `initial` is raised to `initial`.
    pub fn new(config: BackoffConfig) -> Backoff {
        let initial_ms = millis(config.initial).max(1);
        Backoff {
            initial_ms,
            max_ms: millis(config.max).max(initial_ms),
            healthy_after_ms: millis(config.healthy_after),
            jitter: config.jitter,
            attempt: 0,
            previous_ms: initial_ms,
            connected_at_ms: None,
        }
    }

    /// The delay before the next connection attempt; `random` is a fresh
    /// uniformly random `u64` from the caller.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let ceiling = match self.jitter {
            Jitter::Full => {
                let factor = 1u64.checked_shl(self.attempt).unwrap_or(u64::MAX);
                self.initial_ms.saturating_mul(factor)
            }
            Jitter::Decorrelated => self.previous_ms.saturating_mul(3),
        }
        .min(self.max_ms);
        let delay = uniform(self.initial_ms, ceiling, random);
        self.attempt = self.attempt.saturating_add(1);
        self.previous_ms = delay;
        Duration::from_millis(delay)
    }

    /// A connection came up at `now_ms`.
    pub fn connected(&mut self, now_ms: u64) {
        self.connected_at_ms = Some(now_ms);
    }

    /// The connection (or attempt) ended at `now_ms`. If it had been up for
    /// `healthy_after`, the backoff starts again from `initial`.
    pub fn disconnected(&mut self, now_ms: u64) {
        if let Some(since) = self.connected_at_ms.take()
            && now_ms.saturating_sub(since) >= self.healthy_after_ms
        {
            self.reset();
        }
    }

    /// Starts again from `initial`.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.previous_ms = self.initial_ms;
    }

    /// Delays handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A value in `low..=high` from `random` (`low` when `high <= low`).
fn uniform(low: u64, high: u64, random: u64) -> u64 {
    if high <= low {
        return low;
    }
    match (high - low).checked_add(1) {
        Some(span) => low + random % span,
        None => random, // The whole u64 range.
    }
}
