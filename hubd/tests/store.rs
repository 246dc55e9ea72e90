//! The hub store through its public interface: group commit under concurrency,
//! one bad write failing alone, sequence numbers never reused, and stores it
//! must refuse to open (too new, already in use).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hubd::config::Synchronous;
use hubd::metrics::Metrics;
use hubd::store::{Store, StoreError, StoreOptions, Write};
use vss_shared::events::CdrRecord;
use vss_shared::{CallDirection, SlotId};

fn options(dir: &Path) -> StoreOptions {
    StoreOptions {
        data_dir: dir.to_owned(),
        batch_max: 256,
        synchronous: Synchronous::Full,
    }
}

fn open(dir: &Path) -> Store {
    Store::open(&options(dir), Arc::new(Metrics::default())).expect("store opens")
}

fn raw(i: u64) -> Write {
    Write::Outbox {
        kind: "test".into(),
        payload: format!("{{\"i\":{i}}}"),
    }
}

fn cdr(call_id: &str) -> Write {
    Write::Cdr(Box::new(CdrRecord {
        call_id: call_id.into(),
        slot_id: SlotId::new(1).unwrap(),
        direction: CallDirection::Outbound,
        remote_number: "+79990000000".into(),
        started_at_ms: 1_000,
        answered_at_ms: Some(3_000),
        ended_at_ms: 63_000,
        end_cause: "normal_clearing".into(),
        sip_cause: None,
        device_cause: None,
        recording: None,
        media: None,
        rtp: None,
        audiosocket: None,
    }))
}

fn seqs(dir: &Path) -> Vec<u64> {
    let reader = hubd::store::StoreReader::open(&dir.join("hub.db")).unwrap();
    reader
        .outbox_after(0, usize::MAX)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_get_contiguous_unique_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let store = Store::open(&options(dir.path()), metrics.clone()).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..64u64 {
        let handle = store.handle();
        tasks.spawn(async move {
            let mut got = Vec::new();
            for k in 0..100 {
                got.push(
                    handle
                        .write(raw(lane * 1000 + k))
                        .await
                        .unwrap()
                        .seq
                        .unwrap(),
                );
            }
            got
        });
    }
    let mut all: Vec<u64> = tasks.join_all().await.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=6400).collect::<Vec<_>>());
    store.close().await;
    assert_eq!(seqs(dir.path()), (1..=6400).collect::<Vec<_>>());
    let writes = metrics.store_writes.load(Ordering::Relaxed);
    assert_eq!(writes, 6400);
    assert_eq!(metrics.outbox_depth.load(Ordering::Relaxed), 6400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_write_fails_alone_and_leaves_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let handle = store.handle();
    assert_eq!(handle.write(cdr("call-1")).await.unwrap().seq, Some(1));
    // A burst in which one write violates the CDR primary key.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let handle = handle.clone();
        let write = if i == 100 { cdr("call-1") } else { raw(i) };
        tasks.spawn(async move { (i, handle.write(write).await) });
    }
    let mut failed = Vec::new();
    for (i, result) in tasks.join_all().await {
        match result {
            Ok(receipt) => assert!(receipt.seq.is_some()),
            Err(e) => failed.push((i, e.to_string())),
        }
    }
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, 100);
    assert!(failed[0].1.contains("UNIQUE"), "{}", failed[0].1);
    store.close().await;
    // 1 CDR + 199 raw writes, numbered without a hole.
    assert_eq!(seqs(dir.path()), (1..=200).collect::<Vec<_>>());
}

#[tokio::test]
async fn sequence_numbers_are_never_reused_after_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let store = Store::open(&options(dir.path()), metrics.clone()).unwrap();
    let handle = store.handle();
    for i in 0..10 {
        handle.write(raw(i)).await.unwrap();
    }
    // The control plane acknowledged 1..=7: depth drops, rows stay until pruned.
    handle.write(Write::Ack { up_to: 7 }).await.unwrap();
    assert_eq!(metrics.outbox_depth.load(Ordering::Relaxed), 3);
    handle.write(Write::PruneAcked).await.unwrap();
    assert_eq!(seqs(dir.path()), vec![8, 9, 10]);
    handle.write(Write::Ack { up_to: 10 }).await.unwrap();
    handle.write(Write::PruneAcked).await.unwrap();
    assert_eq!(seqs(dir.path()), Vec::<u64>::new());
    store.close().await;
    // Every row is gone; a reopened store still continues after 10.
    let store = open(dir.path());
    let receipt = store.handle().write(raw(10)).await.unwrap();
    assert_eq!(receipt.seq, Some(11));
    store.close().await;
}

#[tokio::test]
async fn a_store_from_a_newer_hubd_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).close().await;
    let db_path = dir.path().join("hub.db");
    let db = rusqlite::Connection::open(&db_path).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let before = std::fs::read(&db_path).unwrap();
    let err = Store::open(&options(dir.path()), Arc::new(Metrics::default())).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("upgrade hubd"), "{err}");
    assert_eq!(std::fs::read(&db_path).unwrap(), before);
}

#[tokio::test]
async fn one_hubd_per_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let err = Store::open(&options(dir.path()), Arc::new(Metrics::default())).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    first.close().await;
    open(dir.path()).close().await;
}

#[tokio::test]
async fn writes_after_close_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let handle = store.handle();
    store.close().await;
    let err = handle.write(raw(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::WriterGone), "{err}");
}

#[tokio::test]
async fn a_database_locked_by_another_process_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).close().await;
    // Another program (say, sqlite3 in a transaction) holds an exclusive lock.
    let other = rusqlite::Connection::open(dir.path().join("hub.db")).unwrap();
    other
        .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;")
        .unwrap();
    let err = Store::open(&options(dir.path()), Arc::new(Metrics::default())).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
    other.execute_batch("COMMIT").unwrap();
    drop(other);
    open(dir.path()).close().await;
}
