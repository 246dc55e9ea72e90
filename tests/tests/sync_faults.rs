//! Fault injection between a hub and the control plane, real processes and
//! sockets: the hub's traffic goes through a UDP proxy that drops, delays,
//! reorders and duplicates datagrams and cuts the link, while the control
//! plane and the hub are each SIGKILLed at a random moment of every round.
//! After every round and at the end, the control plane's database holds every
//! event whose write the hub confirmed, exactly once, in contiguous per-hub
//! seq order. On SQLite and on Postgres.
//!
//! `VSS_FAULT_ROUNDS` (default 20) and `VSS_FAULT_EVENTS` (default 10,000 per
//! round) size it; `UDP_PROXY_SEED` replays a run (the seed is printed).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vss_tests::control_plane::ControlPlane;
use vss_tests::udp_proxy::{Faults, UdpProxy, seed_from_env};
use vss_tests::{HubProcess, hubd_bin, wait_for};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

enum Backend {
    Sqlite,
    Postgres { admin: String, name: String },
}

impl Backend {
    fn postgres() -> Backend {
        let admin = std::env::var("CP_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("vss_faults_{}", std::process::id());
        psql(&admin, &format!("DROP DATABASE IF EXISTS {name}"));
        psql(&admin, &format!("CREATE DATABASE {name}"));
        Backend::Postgres { admin, name }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Backend::Sqlite => Vec::new(),
            Backend::Postgres { admin, name } => {
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                vec!["--database-url".into(), format!("{base}/{name}")]
            }
        }
    }

    /// `(seq, payload)` of every event of `hub`, in seq order.
    fn events(&self, cp_dir: &Path, hub: &str) -> Vec<(u64, String)> {
        let query =
            format!("SELECT seq, payload FROM hub_events WHERE hub_id = '{hub}' ORDER BY seq");
        match self {
            Backend::Sqlite => {
                let db = rusqlite::Connection::open_with_flags(
                    cp_dir.join("control-plane.db"),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .expect("control-plane.db");
                let mut stmt = db.prepare(&query).expect("query");
                stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
                    .expect("rows")
                    .collect::<Result<_, _>>()
                    .expect("decode")
            }
            Backend::Postgres { .. } => {
                let url = &self.args()[1];
                let out = Command::new("psql")
                    .args([url.as_str(), "-AtF", "\t", "-c", &query])
                    .output()
                    .expect("psql runs");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| {
                        let (seq, payload) = l.split_once('\t')?;
                        Some((seq.parse().ok()?, payload.to_owned()))
                    })
                    .collect()
            }
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Postgres { admin, name } = self {
            psql(
                admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-qAtc", sql])
        .output()
        .expect("psql runs (Debian postgresql-client)");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn log(dir: &Path, name: &str) -> Stdio {
    File::options()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

fn loader(hub_dir: &Path, log_dir: &Path, start: u64, events: u64) -> HubProcess {
    HubProcess::spawn_program(
        &hubd_bin(),
        &[
            "outbox-load",
            "--data-dir",
            hub_dir.to_str().expect("utf-8"),
            "--events",
            &events.to_string(),
            "--start",
            &start.to_string(),
            "--sync",
        ],
        log(log_dir, "hub.log"),
    )
}

/// Every confirmed event is there with its payload, and the seqs are 1..=n.
fn check(events: &[(u64, String)], confirmed: &BTreeMap<u64, u64>, what: &str) {
    for (i, (seq, _)) in events.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "{what}: seqs must be 1..=n, each once");
    }
    for (seq, i) in confirmed {
        let (_, payload) = events
            .get((*seq - 1) as usize)
            .unwrap_or_else(|| panic!("{what}: confirmed seq {seq} missing"));
        assert_eq!(
            payload,
            &hubd::cli::load_event_payload(*i),
            "{what}: seq {seq}"
        );
    }
}

fn run(backend: Backend, label: &str) {
    let rounds = env_u64("VSS_FAULT_ROUNDS", 20);
    let per_round = env_u64("VSS_FAULT_EVENTS", 10_000);
    let seed = seed_from_env();
    let mut rng = Rng(seed | 1);
    let cp_dir = tempfile::tempdir().expect("dir");
    let hub_dir = tempfile::tempdir().expect("dir");
    let logs = cp_dir.path().to_owned();
    eprintln!(
        "{label}: {rounds} rounds x {per_round} events, seed {seed}, logs in {}",
        logs.display()
    );
    let args = backend.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cp = ControlPlane::start_with(cp_dir.path(), None, &args, log(&logs, "cp.log"));
    let admin = cp.login(&cp.admin.0, &cp.admin.1);
    let token = cp.hub_with_token(&admin, "Faults", "hub-faults");
    let sync = cp.sync;
    let proxy = UdpProxy::start(sync, seed).expect("proxy");
    let link = proxy.handle();
    let out = Command::new(hubd_bin())
        .args([
            "enroll",
            "--control-plane",
            &proxy.addr().to_string(),
            "--token",
            &token,
            "--data-dir",
            hub_dir.path().to_str().expect("utf-8"),
        ])
        .output()
        .expect("enroll");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut cp = Some(cp);
    let mut confirmed = BTreeMap::new();
    let started = Instant::now();
    for round in 0..rounds {
        link.set(Faults::hostile());
        let kill_cp_at = rng.below(per_round);
        let kill_hub_at = rng.below(per_round);
        let cut_at = rng.below(per_round);
        let (mut cp_killed, mut hub_killed, mut cut) = (false, false, false);
        let base = round * per_round;
        let mut written = 0u64;
        let mut hub = loader(hub_dir.path(), &logs, base, per_round);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            assert!(
                Instant::now() < deadline,
                "{label}: round {round} did not finish in 300 s (seed {seed})"
            );
            if let Some(line) = hub.next_line(Duration::from_millis(20)) {
                let mut words = line.split_whitespace();
                if let (Some("ok"), Some(seq), Some(i)) = (words.next(), words.next(), words.next())
                {
                    let (seq, i): (u64, u64) = (seq.parse().expect("seq"), i.parse().expect("i"));
                    confirmed.insert(seq, i);
                    written += 1;
                }
                continue;
            }
            if !cp_killed && written >= kill_cp_at {
                cp_killed = true;
                if let Some(old) = cp.take() {
                    old.process.kill9();
                }
                // The control plane stays down for a random 0-500 ms: part of the
                // fault being injected, not a wait for anything.
                std::thread::sleep(Duration::from_millis(rng.below(500)));
                cp = Some(ControlPlane::start_with(
                    cp_dir.path(),
                    Some(sync),
                    &args,
                    log(&logs, "cp.log"),
                ));
            }
            if !hub_killed && written >= kill_hub_at {
                hub_killed = true;
                hub.kill9();
                hub = loader(hub_dir.path(), &logs, base + written, per_round - written);
                continue;
            }
            if !cut && written >= cut_at {
                cut = true;
                link.cut_for(Duration::from_millis(300 + rng.below(1700)));
            }
            if let Some(status) = hub.try_wait() {
                // Drain what it printed before exiting.
                while let Some(line) = hub.next_line(Duration::from_millis(50)) {
                    let mut words = line.split_whitespace();
                    if let (Some("ok"), Some(seq), Some(i)) =
                        (words.next(), words.next(), words.next())
                    {
                        confirmed.insert(seq.parse().expect("seq"), i.parse().expect("i"));
                    }
                }
                assert!(
                    status.success(),
                    "{label}: round {round}: the hub loader failed: {status}"
                );
                break;
            }
        }
        let events = backend.events(cp_dir.path(), "hub-faults");
        check(&events, &confirmed, &format!("{label} round {round}"));
        eprintln!(
            "{label}: round {round}: {} events in the control plane, {} confirmed, proxy {:?}",
            events.len(),
            confirmed.len(),
            link.stats().to_server
        );
    }
    // A clean link: everything the hub holds is delivered and acknowledged.
    link.set(Faults::default());
    let mut hub = loader(hub_dir.path(), &logs, rounds * per_round, 0);
    let status = wait_for("the final drain", Duration::from_secs(120), || {
        hub.try_wait()
    });
    assert!(status.success(), "{label}: final drain failed");
    let events = backend.events(cp_dir.path(), "hub-faults");
    check(&events, &confirmed, label);
    assert!(
        confirmed.len() as u64 >= rounds * per_round,
        "every round confirmed its events"
    );
    eprintln!(
        "{label}: {} events exactly once in {:.1} s (seed {seed})",
        events.len(),
        started.elapsed().as_secs_f64()
    );
    drop(cp);
}

#[test]
fn every_event_arrives_exactly_once_through_faults_and_kills_on_sqlite() {
    run(Backend::Sqlite, "sqlite");
}

#[test]
fn every_event_arrives_exactly_once_through_faults_and_kills_on_postgres() {
    run(Backend::postgres(), "postgres");
}
