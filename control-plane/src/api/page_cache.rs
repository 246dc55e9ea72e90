//! A short-lived cache of serialised list pages (a "microcache").
//!
//! Dashboards and wallboards poll `GET /api/slots` from every operator's
//! browser; between two writes they all ask for the same few pages. This
//! cache keeps the JSON bytes of a page for at most `server.list_cache_ms`
//! and only while the store's slot generation is the one the page was read
//! at, so:
//!
//! - a write through this control plane (a slot report, a hub revoked) is
//!   visible to the very next request: it bumps the generation;
//! - a write through *another* control-plane instance sharing the database
//!   is visible at most `list_cache_ms` later (the age bound);
//! - the key carries the caller's scope, so one centre never sees another
//!   centre's page. Authentication and the permission check run before the
//!   cache is consulted, on every request.
//!
//! It never holds more than [`MAX_ENTRIES`] pages (cursors are client input);
//! when full, it is emptied rather than grown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Most pages held at once.
pub const MAX_ENTRIES: usize = 256;

/// Which page: the caller's scope and the page request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    /// The caller's centre, `None` for platform admins (all centres).
    pub centre: Option<String>,
    /// The decoded cursor.
    pub after: Option<String>,
    /// Rows per page.
    pub limit: i64,
}

#[derive(Debug)]
struct Entry {
    generation: u64,
    stored_at: Instant,
    body: Bytes,
}

/// Serialised pages, each valid for one store generation and a bounded age.
#[derive(Debug)]
pub struct PageCache {
    max_age: Duration,
    entries: Mutex<HashMap<PageKey, Entry>>,
}

impl PageCache {
    /// A cache whose pages live at most `max_age`; zero disables it.
    pub fn new(max_age: Duration) -> PageCache {
        PageCache {
            max_age,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The page for `key`, when one was stored at `generation` less than
    /// `max_age` before `now`.
    pub fn get(&self, key: &PageKey, generation: u64, now: Instant) -> Option<Bytes> {
        if self.max_age.is_zero() {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(key)?;
        let fresh = entry.generation == generation
            && now.saturating_duration_since(entry.stored_at) < self.max_age;
        fresh.then(|| entry.body.clone())
    }

    /// Keeps `body` as the page for `key`, read at `generation` (taken
    /// *before* the read, so a write that raced the read outdates it).
    pub fn put(&self, key: PageKey, generation: u64, now: Instant, body: Bytes) {
        if self.max_age.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                generation,
                stored_at: now,
                body,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(centre: Option<&str>, after: Option<&str>) -> PageKey {
        PageKey {
            centre: centre.map(str::to_owned),
            after: after.map(str::to_owned),
            limit: 100,
        }
    }

    #[test]
    fn a_page_is_served_only_for_its_generation_scope_and_age() {
        let cache = PageCache::new(Duration::from_millis(500));
        let t0 = Instant::now();
        cache.put(key(Some("a"), None), 7, t0, Bytes::from_static(b"page-a"));

        let hit = cache.get(&key(Some("a"), None), 7, t0 + Duration::from_millis(499));
        assert_eq!(hit.as_deref(), Some(&b"page-a"[..]));
        // Another centre, an admin, another cursor: never this page.
        assert_eq!(cache.get(&key(Some("b"), None), 7, t0), None);
        assert_eq!(cache.get(&key(None, None), 7, t0), None);
        assert_eq!(cache.get(&key(Some("a"), Some("5")), 7, t0), None);
        // A write bumped the generation.
        assert_eq!(cache.get(&key(Some("a"), None), 8, t0), None);
        // Too old.
        assert_eq!(
            cache.get(&key(Some("a"), None), 7, t0 + Duration::from_millis(500)),
            None
        );
    }

    #[test]
    fn zero_age_disables_it_and_it_never_grows_past_its_bound() {
        let off = PageCache::new(Duration::ZERO);
        let t0 = Instant::now();
        off.put(key(None, None), 1, t0, Bytes::from_static(b"x"));
        assert_eq!(off.get(&key(None, None), 1, t0), None);

        let cache = PageCache::new(Duration::from_secs(1));
        for n in 0..(MAX_ENTRIES * 3) {
            cache.put(key(None, Some(&n.to_string())), 1, t0, Bytes::new());
            assert!(cache.entries.lock().map(|e| e.len()).unwrap_or(0) <= MAX_ENTRIES);
        }
    }
}
