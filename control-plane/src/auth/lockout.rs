//! Login throttling with a growing lockout, by key (an account, a source
//! address). Sans-IO: the caller passes the time. Memory is bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most keys remembered at once.
const CAPACITY: usize = 100_000;

/// When and how long to lock a key out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures before the first lockout.
    pub after_failures: u32,
    /// First lockout; each further failure doubles it.
    pub base: Duration,
    /// Longest lockout; also how long failures are remembered.
    pub max: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

/// Failed attempts and lockouts by key.
#[derive(Debug)]
pub struct Lockouts {
    policy: LockoutPolicy,
    entries: HashMap<String, Entry>,
}

impl Lockouts {
    /// Empty, under `policy`.
    pub fn new(policy: LockoutPolicy) -> Lockouts {
        Lockouts {
            policy,
            entries: HashMap::new(),
        }
    }

    /// `Err(remaining)` while `key` is locked out at `now`.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.entries.get(key).and_then(|e| e.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failure of `key` at `now`; returns the lockout now in force, if any.
    pub fn record_failure(&mut self, key: &str, now: Instant) -> Option<Duration> {
        if !self.entries.contains_key(key) && self.entries.len() >= CAPACITY {
            self.make_room(now);
        }
        let policy = self.policy;
        let entry = self.entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            last_failure: now,
            locked_until: None,
        });
        // Failures older than the longest lockout are forgotten.
        if now.saturating_duration_since(entry.last_failure) > policy.max {
            entry.failures = 0;
            entry.locked_until = None;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        if entry.failures < policy.after_failures {
            return None;
        }
        let doublings = (entry.failures - policy.after_failures).min(30);
        let lockout = policy
            .base
            .saturating_mul(1u32 << doublings)
            .min(policy.max);
        entry.locked_until = Some(now + lockout);
        Some(lockout)
    }

    /// Forgets `key` (a successful login).
    pub fn record_success(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Drops expired entries; if still full, the entries idle the longest.
    fn make_room(&mut self, now: Instant) {
        let max = self.policy.max;
        self.entries.retain(|_, e| {
            e.locked_until.is_some_and(|u| u > now)
                || now.saturating_duration_since(e.last_failure) <= max
        });
        if self.entries.len() >= CAPACITY {
            let mut by_age: Vec<(Instant, String)> = self
                .entries
                .iter()
                .map(|(k, e)| (e.last_failure, k.clone()))
                .collect();
            by_age.sort_unstable();
            for (_, key) in by_age.into_iter().take(CAPACITY / 10) {
                self.entries.remove(&key);
            }
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn lockouts() -> Lockouts {
        Lockouts::new(LockoutPolicy {
            after_failures: 3,
            base: S(30),
            max: S(300),
        })
    }

    #[test]
    fn locks_after_the_threshold_and_doubles_up_to_the_cap() {
        let mut l = lockouts();
        let t = Instant::now();
        assert_eq!(l.record_failure("a", t), None);
        assert_eq!(l.record_failure("a", t), None);
        assert_eq!(l.check("a", t), Ok(()));
        assert_eq!(l.record_failure("a", t), Some(S(30)));
        assert_eq!(l.check("a", t + S(10)), Err(S(20)));
        assert_eq!(l.check("a", t + S(30)), Ok(()));
        assert_eq!(l.record_failure("a", t + S(31)), Some(S(60)));
        assert_eq!(l.record_failure("a", t + S(92)), Some(S(120)));
        assert_eq!(l.record_failure("a", t + S(213)), Some(S(240)));
        assert_eq!(l.record_failure("a", t + S(454)), Some(S(300)));
        assert_eq!(l.check("b", t), Ok(()));
    }

    #[test]
    fn success_and_time_forget_failures() {
        let mut l = lockouts();
        let t = Instant::now();
        l.record_failure("a", t);
        l.record_failure("a", t);
        l.record_success("a");
        assert_eq!(l.record_failure("a", t), None);
        l.record_failure("a", t);
        // More than `max` later, the old failures no longer count.
        assert_eq!(l.record_failure("a", t + S(301)), None);
    }

    #[test]
    fn memory_is_bounded() {
        let mut l = lockouts();
        let t = Instant::now();
        for i in 0..CAPACITY + 10 {
            l.record_failure(&format!("ip:{i}"), t);
        }
        assert!(l.len() <= CAPACITY);
    }
}
