//! The simulated device: a stand-in for a modem, phone or PC that needs no
//! hardware. Seeded randomness makes a run repeatable; latency, failure rate,
//! call traffic and an injected panic are configurable.
//!
//! It never sleeps on the wall clock directly: all waiting is `tokio::time`,
//! so tests can pause and advance time.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use vss_shared::SlotId;

use super::{Device, DeviceError, DeviceEvent, DeviceInfo};
use crate::config::SimConfig;

/// A simulated device.
#[derive(Debug)]
pub struct SimDevice {
    slot: SlotId,
    seed: u64,
    config: SimConfig,
    rng: SplitMix64,
    bound: bool,
    ready_at: Option<Instant>,
    phase: Phase,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No call; the next inbound call rings at this time (if calls are on).
    Idle { next_call: Option<Instant> },
    /// A call is ringing; it is answered (or given up) at this time.
    Ringing { until: Instant, answers: bool },
    /// A call is up until this time.
    Talking { until: Instant },
}

impl SimDevice {
    /// A simulated device for `slot` in its `session`-th session. Each
    /// session draws its own numbers (the same ones in every run), so a
    /// restart is not doomed to repeat the failure that caused it.
    pub fn new(slot: SlotId, session: u64, config: SimConfig) -> SimDevice {
        let seed = if config.seed == 0 {
            u64::from(slot.get())
        } else {
            config.seed
        };
        let mut mix = SplitMix64(seed ^ session.wrapping_mul(0xA076_1D64_78BD_642F));
        SimDevice {
            slot,
            seed,
            config,
            rng: SplitMix64(mix.next_u64()),
            bound: false,
            ready_at: None,
            phase: Phase::Idle { next_call: None },
        }
    }

    /// Waits about `latency_ms` (±50%), then fails with the configured probability.
    async fn operation(&mut self, operation: &'static str, scale: u64) -> Result<(), DeviceError> {
        let base = self.config.latency_ms.saturating_mul(scale);
        let jitter = self.rng.next_f64() + 0.5;
        tokio::time::sleep(Duration::from_millis((base as f64 * jitter) as u64)).await;
        if self.rng.next_f64() < self.config.failure_rate {
            return Err(DeviceError::Failed {
                operation,
                message: format!(
                    "simulated failure (failure_rate {})",
                    self.config.failure_rate
                ),
            });
        }
        Ok(())
    }

    fn exponential(&mut self, mean_ms: u64) -> Duration {
        let u = self.rng.next_f64().max(1e-9);
        Duration::from_millis((-(u.ln()) * mean_ms as f64) as u64)
    }

    fn schedule_next_call(&mut self) -> Option<Instant> {
        (self.config.call_every_ms > 0)
            .then(|| Instant::now() + self.exponential(self.config.call_every_ms))
    }
}

#[async_trait]
impl Device for SimDevice {
    async fn bind(&mut self) -> Result<DeviceInfo, DeviceError> {
        self.operation("bind", 1).await?;
        self.bound = true;
        Ok(DeviceInfo {
            description: format!(
                "simulated device for slot {} (seed {})",
                self.slot, self.seed
            ),
        })
    }

    async fn register(&mut self) -> Result<(), DeviceError> {
        self.operation("register", 2).await?;
        self.ready_at = Some(Instant::now());
        let next_call = self.schedule_next_call();
        self.phase = Phase::Idle { next_call };
        Ok(())
    }

    async fn next_event(&mut self) -> Result<DeviceEvent, DeviceError> {
        let panic_at = self
            .config
            .panic_after_ms
            .zip(self.ready_at)
            .map(|(ms, ready)| ready + Duration::from_millis(ms));
        let next = match self.phase {
            Phase::Idle { next_call } => next_call,
            Phase::Ringing { until, .. } | Phase::Talking { until } => Some(until),
        };
        let wake = match (panic_at, next) {
            (Some(p), Some(n)) => Some(p.min(n)),
            (p, n) => p.or(n),
        };
        let Some(wake) = wake else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(wake).await;
        if panic_at.is_some_and(|p| p <= Instant::now()) {
            panic!(
                "simulated driver panic on slot {} (panic_after_ms = {})",
                self.slot,
                self.config.panic_after_ms.unwrap_or_default()
            );
        }
        // The state changes only after the wait: dropping this future early changes nothing.
        let now = Instant::now();
        match self.phase {
            Phase::Idle { .. } => {
                let answers = self.rng.next_f64() >= 0.2;
                let ring = Duration::from_millis(1_000 + self.rng.below(4_000));
                self.phase = Phase::Ringing {
                    until: now + ring,
                    answers,
                };
                Ok(DeviceEvent::IncomingCall {
                    remote_number: format!("+7999{:07}", self.rng.below(10_000_000)),
                })
            }
            Phase::Ringing { answers: true, .. } => {
                let talk = self.exponential(self.config.call_duration_ms.max(1));
                self.phase = Phase::Talking { until: now + talk };
                Ok(DeviceEvent::CallAnswered)
            }
            Phase::Ringing { answers: false, .. } => {
                self.phase = Phase::Idle {
                    next_call: self.schedule_next_call(),
                };
                Ok(DeviceEvent::CallEnded {
                    cause: "no_answer".into(),
                })
            }
            Phase::Talking { .. } => {
                self.phase = Phase::Idle {
                    next_call: self.schedule_next_call(),
                };
                Ok(DeviceEvent::CallEnded {
                    cause: "normal_clearing".into(),
                })
            }
        }
    }

    async fn health_check(&mut self) -> Result<(), DeviceError> {
        if !self.bound {
            return Err(DeviceError::Gone("not bound".into()));
        }
        self.operation("health check", 1).await
    }

    async fn dial(&mut self, _number: &str) -> Result<(), DeviceError> {
        self.operation("dial", 1).await?;
        let answers = self.rng.next_f64() >= 0.3;
        let ring = Duration::from_millis(2_000 + self.rng.below(8_000));
        self.phase = Phase::Ringing {
            until: Instant::now() + ring,
            answers,
        };
        Ok(())
    }

    async fn hang_up(&mut self) -> Result<(), DeviceError> {
        self.phase = Phase::Idle {
            next_call: self.schedule_next_call(),
        };
        Ok(())
    }

    async fn release(&mut self) {
        self.bound = false;
        self.ready_at = None;
        self.phase = Phase::Idle { next_call: None };
    }
}

/// SplitMix64: a tiny, good-enough seeded generator for simulation.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}
