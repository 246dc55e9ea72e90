//! Restart backoff: exponential with jitter, reset once a slot has been stable.
//! Pure: the caller supplies the random numbers, so tests are deterministic.

use std::time::Duration;

/// Delay before the next restart of a faulted slot.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The delay to wait now (the current step ±20% by `unit`, in [0, 1)),
    /// and moves to the next step.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let factor = 0.8 + 0.4 * unit.clamp(0.0, 1.0);
        let delay = self.current.mul_f64(factor).min(self.max);
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// Back to the initial delay (the slot proved stable).
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let steps: Vec<u128> = (0..5).map(|_| b.next_delay(0.5).as_millis()).collect();
        assert_eq!(steps, vec![500, 1000, 2000, 3000, 3000]);
        b.reset();
        assert_eq!(b.next_delay(0.5), Duration::from_millis(500));
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_under_max() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(800));
        assert_eq!(b.next_delay(1.0), Duration::from_secs(1));
    }
}
