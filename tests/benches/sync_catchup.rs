//! Sync catch-up: a hub whose outbox holds N events (1,000,000 by default)
//! connects to a control plane on Postgres; the figure is events per second
//! from the hub's SQLite to committed rows in Postgres (until the hub has
//! every event acknowledged), printed beside a plain `COPY` of the same rows
//! into the same Postgres from one process (`psql \copy`), in the same run.
//!
//! Target: at least 50,000 events/s and at least 0.5 of plain COPY. A
//! measurement, not a test: it exits 0 whether or not the target is met, and
//! 1 when it cannot measure. It needs the release binaries and a Postgres at
//! `$CP_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! ```text
//! cargo build --release -p hubd -p control-plane
//! cargo bench -p vss-tests --bench sync_catchup                 # 1,000,000 events
//! cargo bench -p vss-tests --bench sync_catchup -- --quick      # 100,000 (CI smoke)
//! cargo bench -p vss-tests --bench sync_catchup -- --events 250000
//! ```

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use vss_tests::control_plane::ControlPlane;
use vss_tests::hubd_bin;

const TARGET_RATE: f64 = 50_000.0;
const TARGET_RATIO: f64 = 0.5;

fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([url, "-qAtc", sql])
        .output()
        .map_err(|e| format!("psql: {e} (Debian postgresql-client)"))?;
    if !out.status.success() {
        return Err(format!(
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn hubd(args: &[&str]) -> Result<(), String> {
    let status = Command::new(hubd_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("hubd: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("hubd {} exited {status}", args.join(" ")))
}

fn thousands(n: f64) -> String {
    let text = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i > 0 && (text.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn measure(events: u64, db_url: &str, work: &Path) -> Result<(), String> {
    let hub_dir = work.join("hub");
    let cp_dir = work.join("cp");
    let dir = hub_dir.to_str().ok_or("utf-8 path")?;
    // 1. The hub's outbox fills while it is offline.
    let filled = Instant::now();
    hubd(&[
        "outbox-load",
        "--data-dir",
        dir,
        "--events",
        &events.to_string(),
        "--concurrency",
        "64",
    ])?;
    let fill_s = filled.elapsed().as_secs_f64();

    // 2. A control plane on Postgres; the hub enrolls.
    let cp = ControlPlane::start_with(&cp_dir, None, &["--database-url", db_url], Stdio::null());
    let admin = cp.login(&cp.admin.0, &cp.admin.1);
    let token = cp.hub_with_token(&admin, "Catch-up", "hub-catchup");
    hubd(&[
        "enroll",
        "--control-plane",
        &cp.sync.to_string(),
        "--token",
        &token,
        "--data-dir",
        dir,
    ])?;

    // 3. It reconnects and catches up: until every event is acknowledged.
    let started = Instant::now();
    hubd(&["outbox-load", "--data-dir", dir, "--events", "0", "--sync"])?;
    let sync_s = started.elapsed().as_secs_f64();
    let stored: u64 = psql(db_url, "SELECT count(*) FROM hub_events")?
        .parse()
        .map_err(|e| format!("count: {e}"))?;
    if stored != events {
        return Err(format!("{stored} events in Postgres, expected {events}"));
    }
    drop(cp);

    // 4. The reference: the same rows, COPYed by one process into a table of
    // the same shape in the same database.
    let dump = work.join("events.copy");
    let dump_text = dump.to_str().ok_or("utf-8 path")?;
    psql(
        db_url,
        &format!(
            "\\copy (SELECT hub_id, seq, kind, payload, created_at_ms, received_at_ms FROM hub_events) TO '{dump_text}'"
        ),
    )?;
    psql(
        db_url,
        "CREATE TABLE copy_reference (LIKE hub_events INCLUDING ALL)",
    )?;
    let copied = Instant::now();
    psql(db_url, &format!("\\copy copy_reference FROM '{dump_text}'"))?;
    let copy_s = copied.elapsed().as_secs_f64();

    let rate = events as f64 / sync_s;
    let copy_rate = events as f64 / copy_s;
    let ratio = rate / copy_rate;
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "sync_catchup: {} events buffered on the hub ({:.1} s to write), hub SQLite -> QUIC/mTLS -> Postgres committed and acknowledged in {:.2} s; plain COPY of the same rows {:.2} s",
        thousands(events as f64),
        fill_s,
        sync_s,
        copy_s
    );
    println!(
        "sync_catchup: {}/s; plain COPY {}/s; ratio {ratio:.2} (target >= {TARGET_RATIO:.2}): {}; rate target >= {}/s: {}",
        thousands(rate),
        thousands(copy_rate),
        verdict(ratio >= TARGET_RATIO),
        thousands(TARGET_RATE),
        verdict(rate >= TARGET_RATE)
    );
    Ok(())
}

fn main() {
    let mut events = 1_000_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => events = 100_000,
            "--events" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => events = n,
                _ => {
                    eprintln!("sync_catchup: --events needs a positive number");
                    std::process::exit(2);
                }
            },
            "--bench" => {}
            other if other.starts_with('-') => {
                eprintln!("sync_catchup: unknown option {other}; options: --quick, --events N");
                std::process::exit(2);
            }
            _ => {}
        }
    }
    let admin = std::env::var("CP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!("vss_bench_catchup_{}", std::process::id());
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let db_url = format!("{base}/{name}");
    let work = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("sync_catchup: cannot measure: {e}");
            std::process::exit(1);
        }
    };
    let outcome = psql(&admin, &format!("CREATE DATABASE {name}"))
        .and_then(|_| measure(events, &db_url, work.path()));
    let _ = psql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
    if let Err(e) = outcome {
        eprintln!("sync_catchup: cannot measure: {e}");
        println!("sync_catchup: MEASUREMENT FAILED (see above)");
        std::process::exit(1);
    }
}
