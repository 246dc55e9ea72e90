//! The recordings directory at hubd's start: created when missing, an
//! unusable one refused naming it (exit 2), and the recordings a crash
//! interrupted repaired before any slot starts — a recording cut mid-page
//! is cut back to its last whole page and decodes with the real `opusdec`
//! (Debian's `opus-tools`), a file that is no recording is renamed
//! `*.broken`, and `/metrics` counts each outcome.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hubd::media::recording::{Recorder, RecordingConfig, RecordingMeta};
use vss_shared::SlotId;
use vss_shared::slot_fsm::CallDirection;
use vss_tests::{HubProcess, hubd_bin, metric, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// A hub config with one simulated slot, its store in `data_dir` and its
/// recordings in `recordings_dir`.
fn config(data_dir: &Path, recordings_dir: &Path) -> String {
    format!(
        "[hub]\nid = \"hub-rec\"\nname = \"Recordings test hub\"\ndata_dir = \"{}\"\n\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\n\
         [media]\nrecordings_dir = \"{}\"\n\n\
         [[slots]]\nid = 1\nkind = \"auto\"\nrecording = \"all\"\ndriver = {{ type = \"sim\", latency_ms = 5 }}\n",
        data_dir.display(),
        recordings_dir.display()
    )
}

/// Records `seconds` of a 440 Hz tone on both legs into `path`, finished.
fn record(path: &Path, seconds: usize) {
    let meta = RecordingMeta {
        call_id: "call-cut".into(),
        slot: SlotId::new(1).expect("slot id"),
        direction: CallDirection::Outbound,
        started_at_ms: 1_790_000_000_000,
    };
    let mut recorder =
        Recorder::create(path, &meta, &RecordingConfig::default()).expect("recording created");
    let mut t = 0usize;
    for _ in 0..seconds * 50 {
        let frame: Vec<i16> = (0..160)
            .map(|_| {
                t += 1;
                let phase = 2.0 * std::f64::consts::PI * 440.0 * t as f64 / 8_000.0;
                (8_000.0 * phase.sin()) as i16
            })
            .collect();
        recorder
            .push(Some(&frame), Some(&frame))
            .expect("frame recorded");
    }
    recorder.finish().expect("recording finished");
}

/// Byte offsets of the Ogg pages of `bytes` (each starts with `OggS`).
fn page_offsets(bytes: &[u8]) -> Vec<usize> {
    bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"OggS")
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn interrupted_recordings_are_repaired_at_start() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let recordings = dir.path().join("recordings");
    std::fs::create_dir(&recordings).expect("recordings dir");

    // A finished recording, and a copy cut 20 bytes into its last page (as a
    // kill -9 mid-write leaves it).
    let complete = recordings.join("complete.opus");
    record(&complete, 3);
    let bytes = std::fs::read(&complete).expect("recording read");
    let pages = page_offsets(&bytes);
    assert!(pages.len() >= 4, "headers and audio pages: {pages:?}");
    let last = *pages.last().expect("a last page");
    let cut = recordings.join("cut.opus");
    std::fs::write(&cut, &bytes[..last + 20]).expect("cut copy written");
    // Not a recording at all.
    let garbage = recordings.join("garbage.opus");
    std::fs::write(&garbage, b"this is not an Ogg Opus file\n").expect("garbage written");

    let config_path = dir.path().join("hubd.toml");
    std::fs::write(&config_path, config(&dir.path().join("data"), &recordings))
        .expect("config written");
    let (hub, api) = HubProcess::run_config(&config_path);

    let series = |outcome: &str| format!("hubd_recordings_repaired_total{{outcome=\"{outcome}\"}}");
    wait_for("the repair outcomes on /metrics", WAIT, || {
        metric(api, &series("repaired"))
    });
    for (outcome, count) in [
        ("complete", 1.0),
        ("repaired", 1.0),
        ("broken", 1.0),
        ("failed", 0.0),
    ] {
        assert_eq!(metric(api, &series(outcome)), Some(count), "{outcome}");
    }

    // The cut one was repaired: shorter than the original, and playable.
    let repaired_len = std::fs::metadata(&cut).expect("cut file kept").len();
    assert!(
        repaired_len <= last as u64,
        "cut back to whole pages: {repaired_len} > {last}"
    );
    let kept_ms = vss_tests::recording::opusdec(&cut).duration_ms();
    assert!(kept_ms > 0, "the repaired recording decodes to some audio");
    assert!(
        kept_ms < vss_tests::recording::opusdec(&complete).duration_ms(),
        "the cut page is gone"
    );
    // The garbage was set aside, not deleted.
    assert!(!garbage.exists(), "garbage.opus renamed");
    assert_eq!(
        std::fs::read(recordings.join("garbage.opus.broken")).expect("garbage.opus.broken"),
        b"this is not an Ogg Opus file\n"
    );
    let status = hub.terminate();
    assert!(status.success(), "hubd exited with {status}");
}

#[test]
fn a_missing_recordings_dir_is_created_0750() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("a temp dir");
    let recordings = dir.path().join("media").join("recordings");
    let config_path = dir.path().join("hubd.toml");
    std::fs::write(&config_path, config(&dir.path().join("data"), &recordings))
        .expect("config written");
    let (hub, api) = HubProcess::run_config(&config_path);
    wait_for("the repair outcomes on /metrics", WAIT, || {
        metric(api, "hubd_recordings_repaired_total{outcome=\"complete\"}")
    });
    let mode = std::fs::metadata(&recordings)
        .expect("recordings dir created")
        .permissions()
        .mode();
    // 0750 less the umask: never group-writable, nothing for others.
    assert_eq!(mode & 0o700, 0o700, "mode {mode:o}");
    assert_eq!(mode & 0o027, 0, "mode {mode:o}");
    let status = hub.terminate();
    assert!(status.success(), "hubd exited with {status}");
}

#[test]
fn an_unusable_recordings_dir_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("file written");
    let recordings = file.join("recordings");
    let config_path = dir.path().join("hubd.toml");
    std::fs::write(&config_path, config(&dir.path().join("data"), &recordings))
        .expect("config written");
    let output = Command::new(hubd_bin())
        .args(["run", "--config"])
        .arg(&config_path)
        .output()
        .expect("hubd runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("hubd: "))
        .unwrap_or_else(|| panic!("no refusal line in {stderr}"));
    assert!(
        line.contains(&format!("media.recordings_dir {}", recordings.display()))
            && line.contains("cannot create it"),
        "{line}"
    );
    assert!(
        output.stdout.is_empty(),
        "nothing on stdout: {:?}",
        output.stdout
    );
}
