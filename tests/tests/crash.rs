//! Durability across `kill -9`: hubd appends 10,000 outbox events and prints
//! `ok <seq> <i>` as each write returns Ok; the test kills it with SIGKILL at a
//! random moment, restarts hubd on the same store, and checks that every
//! acknowledged event is there, intact, exactly once, in sequence order, and
//! that sequence numbers keep increasing after the restart.
//!
//! The kill point is random; the seed is printed, and `CRASH_SEED=<n>`
//! replays a run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hubd::cli::load_event_payload;
use vss_tests::{HubProcess, metric, open_store, wait_for};

const EVENTS: u64 = 10_000;
const ROUNDS: u64 = 3;

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Runs `hubd outbox-load` and SIGKILLs it after `kill_after` acknowledged
/// writes; returns the acknowledged `(seq, i)` pairs.
fn load_and_kill(data_dir: &Path, kill_after: u64) -> BTreeMap<u64, u64> {
    let dir = data_dir.to_str().unwrap();
    let events = EVENTS.to_string();
    let mut loader = HubProcess::spawn(&["outbox-load", "--data-dir", dir, "--events", &events]);
    let mut acked = BTreeMap::new();
    while (acked.len() as u64) < kill_after {
        let Some(line) = loader.next_line(Duration::from_secs(60)) else {
            break; // finished (or died) before the kill point
        };
        let mut parts = line.split(' ');
        assert_eq!(parts.next(), Some("ok"), "unexpected line {line:?}");
        let seq: u64 = parts.next().unwrap().parse().unwrap();
        let i: u64 = parts.next().unwrap().parse().unwrap();
        assert!(
            acked.insert(seq, i).is_none(),
            "seq {seq} acknowledged twice"
        );
    }
    loader.kill9();
    acked
}

/// Every event in the outbox that a load wrote: seq -> i, checking each payload.
fn stored_events(data_dir: &Path) -> (BTreeMap<u64, u64>, u64) {
    let db = open_store(data_dir);
    let verdict: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(verdict, "ok");
    let mut stmt = db
        .prepare("SELECT seq, kind, payload FROM outbox ORDER BY seq")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .unwrap();
    let mut events = BTreeMap::new();
    let mut max_seq = 0;
    for row in rows {
        let (seq, kind, payload) = row.unwrap();
        let seq = u64::try_from(seq).unwrap();
        max_seq = max_seq.max(seq);
        if kind != "load_test" {
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(&payload)
            .unwrap_or_else(|e| panic!("seq {seq}: corrupt payload ({e}): {payload:?}"));
        let i = json["i"].as_u64().unwrap();
        assert_eq!(payload, load_event_payload(i), "seq {seq}: payload altered");
        events.insert(seq, i);
    }
    (events, max_seq)
}

#[test]
fn acknowledged_outbox_writes_survive_sigkill() {
    let seed = seed();
    eprintln!("crash test seed {seed} (replay with CRASH_SEED={seed})");
    let mut rng = seed;
    let dir = tempfile::tempdir().unwrap();
    let mut all_acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut previous_max = 0;
    for round in 0..ROUNDS {
        let kill_after = 1 + splitmix(&mut rng) % (EVENTS - 1);
        let acked = load_and_kill(dir.path(), kill_after);
        assert!(!acked.is_empty(), "round {round}: nothing acknowledged");
        assert!(
            *acked.keys().next().unwrap() > previous_max,
            "round {round}: seq restarted below the previous maximum {previous_max}"
        );
        all_acked.extend(&acked);

        // Restart a hub on the same store; it must open it as it is.
        let (hub, addr) = HubProcess::demo(dir.path(), &["--slots", "2"]);
        wait_for("both slots READY", Duration::from_secs(60), || {
            (metric(addr, "hubd_slots{state=\"READY\"}")? == 2.0).then_some(())
        });
        assert!(
            hub.terminate().success(),
            "round {round}: hubd did not stop cleanly"
        );

        let (stored, max_seq) = stored_events(dir.path());
        for (seq, i) in &all_acked {
            assert_eq!(
                stored.get(seq),
                Some(i),
                "round {round}: acknowledged seq {seq} (event {i}) lost"
            );
        }
        // Each event of this round is stored at most once: no write applied twice.
        let mut seen = std::collections::HashSet::new();
        for (seq, i) in stored.range(previous_max + 1..) {
            assert!(
                seen.insert(*i),
                "round {round}: event {i} stored twice (seq {seq})"
            );
        }
        eprintln!(
            "round {round}: killed after {} acknowledged writes; {} load events stored in all; max seq {max_seq}",
            acked.len(),
            stored.len()
        );
        assert!(
            max_seq > *acked.keys().next_back().unwrap(),
            "round {round}: the restarted hub appended nothing after the loader's events"
        );
        previous_max = max_seq;
    }
}
