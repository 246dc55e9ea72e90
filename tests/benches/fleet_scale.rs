//! Fleet scale: N enrolled hubs (2,000 by default) hold sync sessions with one
//! control plane at once — lightweight clients in this process, each a real
//! QUIC connection with mutual TLS, a `Hello`, and a heartbeat every 10 s —
//! and the control plane's resident memory and CPU are measured from outside
//! its process (`/proc/<pid>`) over a steady-state window.
//!
//! Target: under 500 MB resident and under 10% of one core at steady state;
//! each figure is printed beside its target as a ratio. A measurement, not a
//! test: exits 0 whether or not the targets are met, 1 when it cannot measure.
//!
//! ```text
//! cargo build --release -p hubd -p control-plane
//! cargo bench -p vss-tests --bench fleet_scale                 # 2,000 hubs, 30 s window
//! cargo bench -p vss-tests --bench fleet_scale -- --quick      # 200 hubs, 10 s window
//! cargo bench -p vss-tests --bench fleet_scale -- --hubs 500 --window 20
//! ```
//!
//! The control plane runs on its embedded SQLite (the zero-setup default).
//! Enrollment goes through `hubd::sync::enroll` (a key and a CSR per hub);
//! the sessions share one client UDP socket, as a NAT would make them look.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use vss_shared::sync::{ControlMessage, Heartbeat, HubMessage, OutboxState};
use vss_tests::control_plane::{ControlPlane, request};
use vss_tests::sync_client::{Session, client, connect_on};

const TARGET_RSS_BYTES: f64 = 500e6;
const TARGET_CPU: f64 = 0.10;
const HEARTBEAT: Duration = Duration::from_secs(10);
const TICKS_PER_S: f64 = 100.0;
/// How long a hub waits for an answer before it counts as failed.
const ANSWER: Duration = Duration::from_secs(30);

fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rss_bytes(pid: i32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

async fn measure(hubs: usize, window: Duration, work: PathBuf) -> Result<(), String> {
    let cp_dir = work.join("cp");
    let cp = ControlPlane::start_with(&cp_dir, None, &[], Stdio::null());
    let pid = cp.process.pid();
    let admin = cp.login(&cp.admin.0, &cp.admin.1);
    // A centre and the hubs, through the API.
    let first = cp.hub_with_token(&admin, "Fleet", "hub-0000");
    let (status, hub) = request(cp.http, "GET", "/api/hubs/hub-0000", Some(&admin), None);
    if status != 200 {
        return Err(format!("GET /api/hubs/hub-0000: {status} {hub}"));
    }
    let centre = hub["centre_id"].as_str().unwrap_or_default().to_owned();
    let mut tokens = vec![first];
    for n in 1..hubs {
        let id = format!("hub-{n:04}");
        let body = json!({"id": id, "name": id, "centre_id": centre});
        let (status, answer) = request(cp.http, "POST", "/api/hubs", Some(&admin), Some(&body));
        if status != 201 {
            return Err(format!("POST /api/hubs: {status} {answer}"));
        }
        tokens.push(cp.enrollment_token(&admin, &id));
    }

    // Enrollment: 16 at a time.
    let enrolled = Instant::now();
    let sync = cp.sync;
    let mut identities = Vec::with_capacity(hubs);
    for (chunk_no, chunk) in tokens.chunks(16).enumerate() {
        let mut set = tokio::task::JoinSet::new();
        for (i, token) in chunk.iter().enumerate() {
            let dir = work.join(format!("hub-{}", chunk_no * 16 + i));
            let token = token.clone();
            set.spawn(async move {
                hubd::sync::enroll::enroll(&dir, &sync.to_string(), &token)
                    .await
                    .map_err(|e| e.to_string())?;
                hubd::sync::identity::load(&dir)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "not enrolled".to_owned())
            });
        }
        while let Some(done) = set.join_next().await {
            identities.push(done.map_err(|e| e.to_string())??);
        }
    }
    let enroll_s = enrolled.elapsed().as_secs_f64();

    // Sessions: one shared client endpoint; a task per hub.
    let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into())
        .map_err(|e| e.to_string())?;
    let connected = Arc::new(AtomicU64::new(0));
    let beats = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let mut sessions = tokio::task::JoinSet::new();
    // At most this many handshakes at once: a fleet's reconnects are spread
    // by their jittered backoff, and one client socket cannot take 2,000
    // simultaneous handshakes' certificates without dropping datagrams.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(64));
    for (n, identity) in identities.into_iter().enumerate() {
        let config = client(
            &identity.ca,
            identity.chain.clone(),
            Some(identity.key.clone_key()),
        );
        let hub = identity.enrollment.hub_id.to_string();
        let endpoint = endpoint.clone();
        let (connected, beats, failures, stop) = (
            connected.clone(),
            beats.clone(),
            failures.clone(),
            stop.clone(),
        );
        let handshakes = handshakes.clone();
        // Spread the heartbeats over the period, as independent hubs would.
        let phase = HEARTBEAT.mul_f64((n as f64 * 0.618_033_988_75).fract());
        sessions.spawn(async move {
            let Ok(permit) = handshakes.acquire_owned().await else {
                return;
            };
            let Ok(connection) = connect_on(&endpoint, sync, config).await else {
                failures.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut session = Session::open(connection).await;
            session.hello(&hub, OutboxState::empty()).await;
            if !matches!(session.try_next(ANSWER).await, Some(ControlMessage::Welcome(_))) {
                failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
            connected.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            tokio::select! {
                () = tokio::time::sleep(phase) => {}
                () = stop.cancelled() => return,
            }
            let mut ticks = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        session.send(&HubMessage::Heartbeat(Heartbeat { sent_at_ms: 0 })).await;
                        match session.try_next(ANSWER).await {
                            Some(ControlMessage::HeartbeatAck(_)) => { beats.fetch_add(1, Ordering::Relaxed); }
                            _ => { failures.fetch_add(1, Ordering::Relaxed); return; }
                        }
                    }
                    () = stop.cancelled() => return,
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while connected.load(Ordering::Relaxed) + failures.load(Ordering::Relaxed) < hubs as u64 {
        if Instant::now() > deadline {
            return Err("sessions did not all connect within 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_s = started.elapsed().as_secs_f64();
    // Settle one heartbeat period, then measure the window.
    tokio::time::sleep(HEARTBEAT).await;
    let before = cpu_ticks(pid).ok_or("cannot read the control plane's CPU")?;
    let beats_before = beats.load(Ordering::Relaxed);
    let window_start = Instant::now();
    let mut rss_max: f64 = 0.0;
    while window_start.elapsed() < window {
        rss_max = rss_max.max(rss_bytes(pid).ok_or("cannot read the control plane's memory")?);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = cpu_ticks(pid).ok_or("cannot read the control plane's CPU")?;
    let elapsed = window_start.elapsed().as_secs_f64();
    let cpu = (after - before) as f64 / TICKS_PER_S / elapsed;
    let window_beats = beats.load(Ordering::Relaxed) - beats_before;
    stop.cancel();
    while sessions.join_next().await.is_some() {}
    let up = connected.load(Ordering::Relaxed);
    let failed = failures.load(Ordering::Relaxed);

    println!(
        "fleet_scale: {hubs} hubs enrolled in {enroll_s:.1} s; {up} sessions up in {connect_s:.1} s ({failed} failed); {window_beats} heartbeats answered in the {elapsed:.0} s window (QUIC + mutual TLS, one client process)"
    );
    println!(
        "fleet_scale: control plane RSS {:.0} MB (target < {:.0} MB): {:.2} of target, {}; CPU {:.1}% of one core (target < {:.0}%): {:.2} of target, {}",
        rss_max / 1e6,
        TARGET_RSS_BYTES / 1e6,
        rss_max / TARGET_RSS_BYTES,
        verdict(rss_max < TARGET_RSS_BYTES),
        cpu * 100.0,
        TARGET_CPU * 100.0,
        cpu / TARGET_CPU,
        verdict(cpu < TARGET_CPU),
    );
    if up < hubs as u64 {
        return Err(format!("only {up} of {hubs} sessions connected"));
    }
    drop(cp);
    Ok(())
}

fn main() {
    let mut hubs = 2_000usize;
    let mut window = Duration::from_secs(30);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> u64 {
            match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => n,
                _ => {
                    eprintln!("fleet_scale: {name} needs a positive number");
                    std::process::exit(2);
                }
            }
        };
        match arg.as_str() {
            "--quick" => {
                hubs = 200;
                window = Duration::from_secs(10);
            }
            "--hubs" => hubs = number("--hubs") as usize,
            "--window" => window = Duration::from_secs(number("--window")),
            "--bench" => {}
            other if other.starts_with('-') => {
                eprintln!(
                    "fleet_scale: unknown option {other}; options: --quick, --hubs N, --window S"
                );
                std::process::exit(2);
            }
            _ => {}
        }
    }
    let work = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("fleet_scale: cannot measure: {e}");
            std::process::exit(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fleet_scale: cannot measure: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(measure(hubs, window, work.path().to_owned())) {
        eprintln!("fleet_scale: cannot measure: {e}");
        println!("fleet_scale: MEASUREMENT FAILED (see above)");
        std::process::exit(1);
    }
}
