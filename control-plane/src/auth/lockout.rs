//! Login throttling with a growing lockout, by caller-chosen key
//! (`"account:a@b.c"`, `"ip:1.2.3.4"`). Sans-IO: the caller passes the time,
//! so tests drive it with `Instant` offsets and never sleep.
//!
//! **Invariant:** memory is bounded — at most 100 000 keys; when full,
//! forgettable entries go first, then the oldest. It never blocks, sleeps,
//! logs or reads a clock itself.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most keys remembered at once.
const CAPACITY: usize = 100_000;
/// Longest lockout and failure window honoured, whatever the policy says
/// (keeps `Instant` arithmetic far from overflow).
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// When and for how long a key is locked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// The failure that brings the first lockout (the ones before it lock
    /// nothing); 0 counts as 1.
    pub after_failures: u32,
    /// First lockout; each further failure doubles it.
    pub base: Duration,
    /// Longest lockout (at most a year); also the window: failures are
    /// forgotten once `max` has passed since the last one.
    pub max: Duration,
}

/// What is remembered about one key.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures counted in the current window.
    failures: u32,
    /// The latest of them.
    last_failure: Instant,
    /// End of the lockout in force, if any.
    locked_until: Option<Instant>,
}

impl Entry {
    /// Whether, at `now`, the entry no longer matters: its window has passed
    /// (which also ends any lockout, a lockout being at most `max`).
    fn forgettable(&self, now: Instant, max: Duration) -> bool {
        now.saturating_duration_since(self.last_failure) > max
            && self.locked_until.is_none_or(|until| until <= now)
    }
}

/// Failed attempts and lockouts by key, bounded in memory.
#[derive(Debug)]
pub struct Lockouts {
    policy: LockoutPolicy,
    entries: HashMap<String, Entry>,
    capacity: usize,
}

impl Lockouts {
    /// Nothing remembered yet, under `policy`.
    pub fn new(policy: LockoutPolicy) -> Lockouts {
        Lockouts::with_capacity(policy, CAPACITY)
    }

    fn with_capacity(policy: LockoutPolicy, capacity: usize) -> Lockouts {
        let max = policy.max.min(LONGEST);
        Lockouts {
            policy: LockoutPolicy {
                after_failures: policy.after_failures.max(1),
                base: policy.base.min(max),
                max,
            },
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// `Err(remaining)` if `key` is locked out at `now`; rounding the
    /// remaining time for a `Retry-After` is the caller's job.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.entries.get(key).and_then(|e| e.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failed attempt of `key` at `now`; returns the lockout now in
    /// force (time left from `now`), if any. The n-th failure in the window
    /// locks for `base · 2^(n − after_failures)`, capped at `max`.
    pub fn record_failure(&mut self, key: &str, now: Instant) -> Option<Duration> {
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        let policy = self.policy;
        let entry = self.entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            last_failure: now,
            locked_until: None,
        });
        if now.saturating_duration_since(entry.last_failure) > policy.max {
            // Failures older than the window are forgotten.
            entry.failures = 0;
            entry.locked_until = None;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = entry.last_failure.max(now);
        let doublings = entry.failures.checked_sub(policy.after_failures)?;
        let lockout = policy
            .base
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(policy.max);
        if lockout.is_zero() {
            return None;
        }
        // A failure never shortens a lockout already in force (requests may
        // report their failures out of order).
        let until = entry
            .locked_until
            .map_or(now + lockout, |u| u.max(now + lockout));
        entry.locked_until = Some(until);
        Some(until - now)
    }

    /// Forgets `key` (a successful login).
    pub fn record_success(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Frees room for a new key: drops forgettable entries; if that frees
    /// less than a tenth of the capacity, drops the oldest (by last failure)
    /// down to nine tenths, so a flood of new keys costs one pass per tenth
    /// of the capacity, not one per key.
    fn make_room(&mut self, now: Instant) {
        let max = self.policy.max;
        self.entries.retain(|_, e| !e.forgettable(now, max));
        let keep = self.capacity - self.capacity.div_ceil(10);
        if self.entries.len() <= keep {
            return;
        }
        let mut ages: Vec<Instant> = self.entries.values().map(|e| e.last_failure).collect();
        let drop = ages.len() - keep;
        // The `drop`-th oldest last failure: entries older go, and ties at it
        // go until `drop` are gone.
        let (_, &mut cutoff, _) = ages.select_nth_unstable(drop - 1);
        let mut tied = drop - ages.iter().filter(|&&t| t < cutoff).count();
        self.entries.retain(|_, e| {
            if e.last_failure < cutoff {
                false
            } else if e.last_failure == cutoff && tied > 0 {
                tied -= 1;
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// Three failures to the first lockout of 30 s, at most 300 s.
    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            after_failures: 3,
            base: s(30),
            max: s(300),
        }
    }

    #[test]
    fn below_the_threshold_nothing_is_locked() {
        let mut l = Lockouts::new(policy());
        let t = Instant::now();
        assert_eq!(l.record_failure("account:a@b.c", t), None);
        assert_eq!(l.record_failure("account:a@b.c", t + s(1)), None);
        assert_eq!(l.check("account:a@b.c", t + s(1)), Ok(()));
        assert_eq!(l.check("account:other", t), Ok(()));
    }

    #[test]
    fn the_threshold_locks_for_base_and_check_gives_the_remaining_time() {
        let mut l = Lockouts::new(policy());
        let t = Instant::now();
        l.record_failure("ip:1.2.3.4", t);
        l.record_failure("ip:1.2.3.4", t);
        assert_eq!(l.record_failure("ip:1.2.3.4", t + s(5)), Some(s(30)));
        assert_eq!(l.check("ip:1.2.3.4", t + s(5)), Err(s(30)));
        assert_eq!(
            l.check("ip:1.2.3.4", t + s(20) + Duration::from_millis(500)),
            Err(s(14) + Duration::from_millis(500))
        );
        assert_eq!(l.check("ip:1.2.3.5", t + s(5)), Ok(()));
    }

    #[test]
    fn lockouts_double_up_to_the_cap_then_expire() {
        let mut l = Lockouts::new(policy());
        let t = Instant::now();
        l.record_failure("a", t);
        l.record_failure("a", t);
        let mut now = t;
        for expected in [30, 60, 120, 240, 300, 300, 300] {
            assert_eq!(l.record_failure("a", now), Some(s(expected)));
            assert_eq!(l.check("a", now + s(expected) - s(1)), Err(s(1)));
            assert_eq!(l.check("a", now + s(expected)), Ok(()));
            now += s(expected);
        }
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut l = Lockouts::new(LockoutPolicy {
            after_failures: 1,
            base: s(1),
            max: Duration::MAX,
        });
        let t = Instant::now();
        let mut last = None;
        for i in 0..200 {
            last = l.record_failure("a", t + s(i));
        }
        assert_eq!(last, Some(LONGEST));
        assert!(l.check("a", t + s(200)).is_err());
    }

    #[test]
    fn a_failure_during_a_lockout_never_shortens_it() {
        let mut l = Lockouts::new(LockoutPolicy {
            after_failures: 1,
            base: s(100),
            max: s(100),
        });
        let t = Instant::now();
        assert_eq!(l.record_failure("a", t + s(50)), Some(s(100)));
        // An earlier timestamp (two requests racing for the lock) changes nothing.
        assert_eq!(l.record_failure("a", t), Some(s(150)));
        assert_eq!(l.check("a", t + s(149)), Err(s(1)));
    }

    #[test]
    fn success_forgets_the_key() {
        let mut l = Lockouts::new(policy());
        let t = Instant::now();
        l.record_failure("a", t);
        l.record_failure("a", t);
        assert_eq!(l.record_failure("a", t), Some(s(30)));
        l.record_success("a");
        assert_eq!(l.check("a", t), Ok(()));
        assert!(l.is_empty());
        assert_eq!(l.record_failure("a", t), None);
        assert_eq!(l.record_failure("a", t), None);
        assert_eq!(l.record_failure("a", t), Some(s(30)));
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let mut l = Lockouts::new(policy());
        let t = Instant::now();
        l.record_failure("a", t);
        l.record_failure("a", t + s(200));
        // 300 s after the last failure still counts...
        assert_eq!(l.record_failure("a", t + s(500)), Some(s(30)));
        // ...more than 300 s after it starts over.
        assert_eq!(l.record_failure("a", t + s(801)), None);
        assert_eq!(l.record_failure("a", t + s(802)), None);
        assert_eq!(l.record_failure("a", t + s(803)), Some(s(30)));
    }

    #[test]
    fn zero_threshold_counts_as_one_and_zero_base_locks_nothing() {
        let t = Instant::now();
        let mut l = Lockouts::new(LockoutPolicy {
            after_failures: 0,
            ..policy()
        });
        assert_eq!(l.record_failure("a", t), Some(s(30)));
        let mut l = Lockouts::new(LockoutPolicy {
            after_failures: 1,
            base: Duration::ZERO,
            max: s(300),
        });
        assert_eq!(l.record_failure("a", t), None);
        assert_eq!(l.check("a", t), Ok(()));
    }

    #[test]
    fn memory_is_bounded_at_the_default_capacity() {
        let mut l = Lockouts::new(policy());
        let t = Instant::now();
        for i in 0..CAPACITY + 10 {
            l.record_failure(&format!("ip:{i}"), t);
        }
        assert!(l.len() <= CAPACITY);
        assert!(l.len() >= CAPACITY * 9 / 10);
    }

    #[test]
    fn when_full_forgettable_entries_go_first() {
        let mut l = Lockouts::with_capacity(policy(), 10);
        let t = Instant::now();
        for i in 0..9 {
            l.record_failure(&format!("old:{i}"), t);
        }
        for _ in 0..3 {
            l.record_failure("locked", t + s(100));
        }
        assert_eq!(l.len(), 10);
        // 350 s on: the old ones are past the window, "locked" is not.
        l.record_failure("new", t + s(350));
        assert_eq!(l.len(), 2);
        assert!(l.check("locked", t + s(110)).is_err());
        assert_eq!(l.record_failure("locked", t + s(351)), Some(s(60)));
    }

    #[test]
    fn when_full_of_live_entries_the_oldest_go() {
        let mut l = Lockouts::with_capacity(policy(), 10);
        let t = Instant::now();
        for i in 0..10 {
            l.record_failure(&format!("k{i}"), t + s(i));
        }
        // A known key is updated in place, evicting nothing.
        l.record_failure("k0", t + s(10));
        assert_eq!(l.len(), 10);
        l.record_failure("new", t + s(11));
        assert_eq!(l.len(), 10);
        // k1 was the oldest (k0 failed again at 10 s).
        assert!(!l.entries.contains_key("k1"));
        for key in ["k0", "k2", "k9", "new"] {
            assert!(l.entries.contains_key(key), "{key}");
        }
    }

    #[test]
    fn eviction_with_equal_ages_drops_exactly_enough() {
        let mut l = Lockouts::with_capacity(policy(), 20);
        let t = Instant::now();
        for i in 0..20 {
            l.record_failure(&format!("k{i}"), t);
        }
        l.record_failure("new", t);
        // Down to 18, then the new key.
        assert_eq!(l.len(), 19);
        assert!(l.entries.contains_key("new"));
    }
}
