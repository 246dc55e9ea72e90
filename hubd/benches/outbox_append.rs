//! Outbox append throughput: durable appends per second through the store's
//! single writer (group commit, WAL, `synchronous = FULL`), printed beside a
//! plain rusqlite loop that inserts the same rows in transactions of the same
//! size, in the same run, as a ratio.
//!
//! Targets: at least 100,000 events/s through the writer, and at least 0.8 of
//! the plain loop. This is a measurement, not a test: it exits 0 whether or not
//! the targets are met and says "met" / "NOT met". It exits 1 only when it
//! cannot measure (the store does not open, a write fails, rows are missing).
//!
//! ```text
//! cargo bench -p hubd --bench outbox_append                # 5 rounds of 200,000 events
//! cargo bench -p hubd --bench outbox_append -- --quick     # 1 round of 20,000 (CI smoke)
//! cargo bench -p hubd --bench outbox_append -- --events 500000 --rounds 5 --batch 1024 --producers 4096
//! ```
//!
//! The data directories are temporary directories under `$OUTBOX_BENCH_DIR`
//! (default: the system temp dir). Put them on the disk hubd would use: on a
//! tmpfs an fsync costs nothing and the figures mean little.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hubd::cli::load_event_payload;
use hubd::config::Synchronous;
use hubd::metrics::Metrics;
use hubd::store::{Store, StoreOptions, Write, now_ms};
use rusqlite::{Connection, params};

/// hubd's schema, applied to the plain loop's database so both sides write
/// to the same table with the same indexes.
const SCHEMA: &str = include_str!("../src/store/migrations/0001_initial.sql");
/// The statement hubd's writer runs for each outbox append.
const INSERT: &str =
    "INSERT INTO outbox (seq, kind, payload, created_at_ms) VALUES (?1, ?2, ?3, ?4)";
/// The kind both sides store.
const KIND: &str = "load_test";
/// Target throughput through the writer.
const TARGET_EVENTS_PER_S: f64 = 100_000.0;
/// Target writer / plain ratio.
const TARGET_RATIO: f64 = 0.8;

/// What to run.
#[derive(Debug, Clone)]
struct Config {
    events: usize,
    rounds: usize,
    batch: usize,
    producers: usize,
    base_dir: PathBuf,
}

impl Config {
    fn from_args(args: impl Iterator<Item = String>) -> anyhow::Result<Config> {
        let mut config = Config {
            events: 200_000,
            // The machine's noise (2 vCPUs shared by the writer thread and the
            // producers) makes single rounds vary by a third; 5 medians well.
            rounds: 5,
            batch: 1024,
            // Each producer has one write in flight; with 4 batches' worth of
            // producers the next batch is always queued while one commits.
            producers: 4096,
            base_dir: std::env::var_os("OUTBOX_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
        };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> anyhow::Result<usize> {
                let value = args
                    .next()
                    .with_context(|| format!("{name} needs a number"))?;
                let n: usize = value
                    .replace('_', "")
                    .parse()
                    .with_context(|| format!("{name} {value}: not a number"))?;
                ensure!(n > 0, "{name} must be at least 1");
                Ok(n)
            };
            match arg.as_str() {
                "--quick" => {
                    config.events = 20_000;
                    config.rounds = 1;
                }
                "--events" => config.events = number("--events")?,
                "--rounds" => config.rounds = number("--rounds")?,
                "--batch" => config.batch = number("--batch")?,
                "--producers" => config.producers = number("--producers")?,
                // `cargo bench` passes `--bench`; a bench-name filter is a bare word.
                "--bench" => {}
                flag if flag.starts_with('-') => bail!(
                    "unknown option {flag}; options: --quick, --events N, --rounds N, --batch N, --producers N"
                ),
                _ => {}
            }
        }
        config.producers = config.producers.min(config.events);
        Ok(config)
    }
}

/// One round through the writer.
#[derive(Debug, Clone, Copy)]
struct WriterRound {
    elapsed: Duration,
    writes: u64,
    commits: u64,
    /// The writer thread's scheduling over the timed span.
    sched: Option<SchedStat>,
    /// The tokio worker threads' (the producers') time on a CPU, same span.
    producers_on_cpu: Option<Duration>,
}

/// A thread's time on a CPU and time runnable but waiting for one, from
/// `/proc/.../schedstat` (Linux): the writer is one thread, so how busy it
/// was and how long it queued for a core explain most of the ratio.
#[derive(Debug, Clone, Copy)]
struct SchedStat {
    on_cpu: Duration,
    waiting: Duration,
}

impl SchedStat {
    fn read(path: &Path) -> Option<SchedStat> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        Some(SchedStat {
            on_cpu: Duration::from_nanos(fields.next()??),
            waiting: Duration::from_nanos(fields.next()??),
        })
    }

    /// The sum over several threads.
    fn sum(paths: &[PathBuf]) -> Option<SchedStat> {
        paths.iter().try_fold(
            SchedStat {
                on_cpu: Duration::ZERO,
                waiting: Duration::ZERO,
            },
            |total, path| {
                let s = SchedStat::read(path)?;
                Some(SchedStat {
                    on_cpu: total.on_cpu + s.on_cpu,
                    waiting: total.waiting + s.waiting,
                })
            },
        )
    }

    fn since(self, earlier: SchedStat) -> SchedStat {
        SchedStat {
            on_cpu: self.on_cpu.saturating_sub(earlier.on_cpu),
            waiting: self.waiting.saturating_sub(earlier.waiting),
        }
    }

    fn describe(sched: Option<SchedStat>, wall: Duration) -> String {
        match sched {
            Some(s) => format!(
                "on a CPU {} ms, waiting for one {} ms, of {} ms",
                s.on_cpu.as_millis(),
                s.waiting.as_millis(),
                wall.as_millis()
            ),
            None => "thread times n/a".to_owned(),
        }
    }
}

/// The schedstat files of this process's threads named `comm` (thread names
/// are cut to 15 bytes: the writer is `hubd-store-writ`).
fn threads_schedstat(comm: &str) -> Vec<PathBuf> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .map(|task| task.path())
        .filter(|task| {
            std::fs::read_to_string(task.join("comm")).is_ok_and(|name| name.trim_end() == comm)
        })
        .map(|task| task.join("schedstat"))
        .collect()
}

impl WriterRound {
    fn mean_batch(&self) -> f64 {
        self.writes as f64 / self.commits.max(1) as f64
    }
}

fn main() {
    let config = match Config::from_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("outbox_append: {e:#}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&config) {
        eprintln!("outbox_append: cannot measure: {e:#}");
        std::process::exit(1);
    }
}

fn run(config: &Config) -> anyhow::Result<()> {
    // hubd runs its tokio runtime with 2 worker threads; so do the producers here.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let payloads: Vec<String> = (0..config.events as u64).map(load_event_payload).collect();
    let mean_payload = payloads.iter().map(String::len).sum::<usize>() / payloads.len().max(1);
    println!(
        "outbox_append: {} events x {} rounds, {} producers, batch_max {}, payload ~{mean_payload} B, WAL, synchronous=FULL, under {}",
        thousands(config.events as f64),
        config.rounds,
        config.producers,
        config.batch,
        config.base_dir.display()
    );

    let mut writer_rates = Vec::new();
    let mut plain_rates = Vec::new();
    let mut writer_batches = Vec::new();
    let mut plain_batches = Vec::new();
    for round in 1..=config.rounds {
        let dir = temp_dir(&config.base_dir, "outbox-append-writer-")?;
        let writer = writer_round(&runtime, dir.path(), config, &payloads)?;
        check_rows(&dir.path().join(hubd::store::DB_FILE), config.events)?;
        drop(dir);

        // The plain loop commits in batches of the size the writer achieved:
        // the configured one when the writer's batches were (nearly) full.
        let mean = writer.mean_batch();
        let plain_batch = if mean >= 0.95 * config.batch as f64 {
            config.batch
        } else {
            (mean.round() as usize).max(1)
        };
        let dir = temp_dir(&config.base_dir, "outbox-append-plain-")?;
        let db = dir.path().join("plain.db");
        let (plain, plain_sched) = plain_round(&db, &payloads, plain_batch)?;
        check_rows(&db, config.events)?;
        drop(dir);

        let writer_rate = rate(config.events, writer.elapsed);
        let plain_rate = rate(config.events, plain);
        println!(
            "outbox_append: round {round}: writer {} events/s ({} commits, batch mean {mean:.0}; writer thread {}; producers' runtime threads on a CPU {})",
            thousands(writer_rate),
            writer.commits,
            SchedStat::describe(writer.sched, writer.elapsed),
            writer
                .producers_on_cpu
                .map_or("n/a".to_owned(), |d| format!("{} ms", d.as_millis())),
        );
        println!(
            "outbox_append: round {round}: plain rusqlite {} events/s (batch {plain_batch}; {}), ratio {:.2}",
            thousands(plain_rate),
            SchedStat::describe(plain_sched, plain),
            writer_rate / plain_rate
        );
        writer_rates.push(writer_rate);
        plain_rates.push(plain_rate);
        writer_batches.push(mean);
        plain_batches.push(plain_batch);
    }

    let writer_median = median(&writer_rates);
    let plain_median = median(&plain_rates);
    let ratio = writer_median / plain_median;
    let plain_batch_text = {
        let mut sizes = plain_batches.clone();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("/")
    };
    println!(
        "outbox_append: writer {} events/s (median of {}, best {}; batch {} mean {:.0})",
        thousands(writer_median),
        config.rounds,
        thousands(best(&writer_rates)),
        config.batch,
        median(&writer_batches)
    );
    println!(
        "outbox_append: plain rusqlite {} events/s (median of {}, best {}; same rows, batch {plain_batch_text})",
        thousands(plain_median),
        config.rounds,
        thousands(best(&plain_rates)),
    );
    println!(
        "outbox_append: ratio {ratio:.2} (target >= {TARGET_RATIO:.2}): {}; target {} events/s: {}",
        verdict(ratio >= TARGET_RATIO),
        thousands(TARGET_EVENTS_PER_S),
        verdict(writer_median >= TARGET_EVENTS_PER_S)
    );
    Ok(())
}

/// Appends every payload through hubd's store writer from `config.producers`
/// concurrent tasks, each waiting for its write to be durable before the next.
/// Timed from the first submit to the last `Ok`.
fn writer_round(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    config: &Config,
    payloads: &[String],
) -> anyhow::Result<WriterRound> {
    let metrics = Arc::new(Metrics::default());
    let options = StoreOptions {
        data_dir: dir.to_owned(),
        batch_max: config.batch,
        synchronous: Synchronous::Full,
    };
    let store = Store::open(&options, Arc::clone(&metrics))
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    // Producer p writes events p, p + P, p + 2P, … (as `hubd outbox-load` does);
    // the payloads are built before the clock starts.
    let mut lanes: Vec<Vec<String>> = vec![Vec::new(); config.producers];
    for (i, payload) in payloads.iter().enumerate() {
        lanes[i % config.producers].push(payload.clone());
    }
    let writer_thread = threads_schedstat("hubd-store-writ");
    let read_sched = || SchedStat::sum(&writer_thread).filter(|_| writer_thread.len() == 1);
    let workers = threads_schedstat("tokio-rt-worker");
    let read_workers = || SchedStat::sum(&workers).filter(|_| !workers.is_empty());
    let (elapsed, sched, producers_on_cpu) = runtime.block_on(async {
        let (go, gate) = tokio::sync::watch::channel(false);
        let mut producers = tokio::task::JoinSet::new();
        for lane in lanes {
            let handle = store.handle();
            let mut gate = gate.clone();
            producers.spawn(async move {
                let _ = gate.wait_for(|go| *go).await;
                for payload in lane {
                    let write = Write::Outbox {
                        kind: KIND.to_owned(),
                        payload,
                    };
                    handle.write(write).await?;
                }
                Ok::<Instant, hubd::store::StoreError>(Instant::now())
            });
        }
        let sched_before = read_sched();
        let workers_before = read_workers();
        let start = Instant::now();
        go.send_replace(true);
        let mut last_ok = start;
        let mut failure = None;
        while let Some(joined) = producers.join_next().await {
            match joined {
                Ok(Ok(done)) => last_ok = last_ok.max(done),
                Ok(Err(e)) => failure = Some(anyhow::Error::new(e).context("a write failed")),
                Err(e) => failure = Some(anyhow::Error::new(e).context("a producer panicked")),
            }
        }
        let sched = read_sched()
            .zip(sched_before)
            .map(|(after, before)| after.since(before));
        let producers_on_cpu = read_workers()
            .zip(workers_before)
            .map(|(after, before)| after.since(before).on_cpu);
        store.close().await;
        match failure {
            Some(e) => Err(e),
            None => Ok((last_ok - start, sched, producers_on_cpu)),
        }
    })?;
    let writes = metrics.store_writes.load(Ordering::Relaxed);
    ensure!(
        writes == payloads.len() as u64,
        "the writer committed {writes} writes, expected {}",
        payloads.len()
    );
    Ok(WriterRound {
        elapsed,
        writes,
        commits: commit_count(&metrics)?,
        sched,
        producers_on_cpu,
    })
}

/// Group commits so far: the count of the `store_commit` histogram, which the
/// writer observes once per batch. The histogram's fields are private, so it
/// is read back from the Prometheus text.
fn commit_count(metrics: &Metrics) -> anyhow::Result<u64> {
    let mut text = String::new();
    metrics.render(&mut text);
    text.lines()
        .find_map(|line| line.strip_prefix("hubd_store_commit_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .context("no hubd_store_commit_seconds_count in the metrics")
}

/// The reference: one connection with hubd's pragmas and schema, the same rows
/// inserted with a cached prepared statement, `batch` rows per transaction,
/// nothing else. Returns the time taken and how this thread was scheduled.
fn plain_round(
    db: &Path,
    payloads: &[String],
    batch: usize,
) -> anyhow::Result<(Duration, Option<SchedStat>)> {
    let mut conn = Connection::open(db).with_context(|| format!("cannot open {}", db.display()))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "no WAL mode here ({mode})"
    );
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    let sched_path = Path::new("/proc/thread-self/schedstat");
    let sched_before = SchedStat::read(sched_path);
    let start = Instant::now();
    let mut seq: i64 = 1;
    for rows in payloads.chunks(batch) {
        let tx = conn.transaction()?;
        let now = now_ms();
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for payload in rows {
                insert.execute(params![seq, KIND, payload, now])?;
                seq += 1;
            }
        }
        tx.commit()?;
    }
    let elapsed = start.elapsed();
    let sched = SchedStat::read(sched_path)
        .zip(sched_before)
        .map(|(after, before)| after.since(before));
    conn.close().map_err(|(_, e)| e)?;
    Ok((elapsed, sched))
}

/// Checks that `db` holds exactly `events` outbox rows, seq 1..=events.
fn check_rows(db: &Path, events: usize) -> anyhow::Result<()> {
    let conn = Connection::open(db).with_context(|| format!("cannot reopen {}", db.display()))?;
    let (count, min, max): (i64, Option<i64>, Option<i64>) = conn.query_row(
        "SELECT count(*), min(seq), max(seq) FROM outbox",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    let events = events as i64;
    ensure!(
        count == events && min == Some(1) && max == Some(events),
        "{}: {count} outbox rows, seq {min:?}..={max:?}; expected {events}, 1..={events}",
        db.display()
    );
    Ok(())
}

fn temp_dir(base: &Path, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {} (set OUTBOX_BENCH_DIR)",
                base.display()
            )
        })
}

fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn best(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, f64::max)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// `182340.7` as `182,341`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
