//! `GET /api/slots` under load: requests/s and p50/p99 latency of an
//! authenticated page of 100 slots out of 1,000, on SQLite and on Postgres,
//! measured by `wrk` (a second process) and printed beside nginx serving the
//! same JSON body as a static file, on the same machine, in the same run, as a
//! ratio.
//!
//! Targets: at least 0.3 of nginx's requests/s on each backend, and p99 under
//! 20 ms. This is a measurement, not a test: it exits 0 whether or not the
//! targets are met and says "met" / "NOT met". It exits 1 only when it cannot
//! measure (wrk or nginx missing, Postgres not answering, the server not
//! starting, an answer that is not 200 during a run).
//!
//! ```text
//! cargo bench -p control-plane --bench api_slots                  # 10 s per side
//! cargo bench -p control-plane --bench api_slots -- --quick       # 3 s per side (CI smoke)
//! cargo bench -p control-plane --bench api_slots -- --backend sqlite --duration 30 --connections 64 --pool 4
//! ```
//!
//! The real control plane runs in this process (`app::start`, the runtime's
//! default worker count, the shipped pool size); wrk and nginx are child
//! processes. Postgres: a throwaway database on `$CP_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`, trust auth), dropped
//! afterwards. It installs nothing: `apt-get install -y wrk nginx`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use control_plane::app::{self, Running};
use control_plane::config::{Config, Mode};
use control_plane::store::centres::templates;
use control_plane::store::slots::SlotReport;
use control_plane::store::{Pool, Store, redact};
use sqlx::Connection as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use vss_shared::SlotState;

/// The request measured.
const PATH: &str = "/api/slots?limit=100";
/// Slots on one page.
const PAGE: usize = 100;
/// Hubs seeded, all in one centre.
const HUBS: i64 = 10;
/// Slots per hub.
const SLOTS_PER_HUB: i64 = 100;
/// wrk threads.
const WRK_THREADS: u32 = 2;
/// Target control plane / nginx requests/s.
const TARGET_RATIO: f64 = 0.3;
/// Target p99 latency, ms.
const TARGET_P99_MS: f64 = 20.0;
/// Unmeasured wrk run before each measured one (pool connections, caches).
const WARM_UP: Duration = Duration::from_secs(1);
/// How long one setup request may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// `/proc/<pid>/stat` counts CPU time in clock ticks of 1/100 s (USER_HZ).
const TICKS_PER_S: u64 = 100;

/// Which database the control plane runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
struct Options {
    duration: Duration,
    connections: u32,
    /// `database.max_connections`; `None`: the shipped default.
    pool: Option<u32>,
    /// `server.list_cache_ms`; `None`: the shipped default.
    list_cache_ms: Option<u64>,
    backends: Vec<Backend>,
}

impl Options {
    fn from_args(args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
        let mut options = Options {
            duration: Duration::from_secs(10),
            connections: 32,
            pool: None,
            list_cache_ms: None,
            backends: vec![Backend::Sqlite, Backend::Postgres],
        };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> anyhow::Result<u64> {
                let value = args
                    .next()
                    .with_context(|| format!("{name} needs a number"))?;
                let n: u64 = value
                    .parse()
                    .with_context(|| format!("{name} {value}: not a number"))?;
                ensure!(n > 0, "{name} must be at least 1");
                Ok(n)
            };
            match arg.as_str() {
                "--quick" => options.duration = Duration::from_secs(3),
                "--duration" => options.duration = Duration::from_secs(number("--duration")?),
                "--connections" => {
                    options.connections = u32::try_from(number("--connections")?)
                        .context("--connections: too large")?;
                }
                "--pool" => {
                    options.pool =
                        Some(u32::try_from(number("--pool")?).context("--pool: too large")?);
                }
                "--list-cache-ms" => {
                    let value = args.next().context("--list-cache-ms needs a number")?;
                    options.list_cache_ms = Some(
                        value
                            .parse()
                            .with_context(|| format!("--list-cache-ms {value}: not a number"))?,
                    );
                }
                "--backend" => {
                    let name = args.next().context("--backend needs sqlite or postgres")?;
                    options.backends = match name.as_str() {
                        "sqlite" => vec![Backend::Sqlite],
                        "postgres" => vec![Backend::Postgres],
                        other => bail!("--backend {other}: expected sqlite or postgres"),
                    };
                }
                // `cargo bench` passes `--bench`; a bench-name filter is a bare word.
                "--bench" => {}
                flag if flag.starts_with('-') => bail!(
                    "unknown option {flag}; options: --quick, --duration SECONDS, --connections N, --pool N, --list-cache-ms N, --backend sqlite|postgres"
                ),
                _ => {}
            }
        }
        Ok(options)
    }
}

/// The two programs the bench drives.
struct Tools {
    wrk: PathBuf,
    nginx: PathBuf,
}

impl Tools {
    /// Finds `wrk` and `nginx` on `PATH` (and in the sbin directories, where
    /// Debian puts nginx), or says which Debian packages to install.
    fn find() -> anyhow::Result<Tools> {
        let (wrk, nginx) = (find_program("wrk"), find_program("nginx"));
        let missing: Vec<&str> = [("wrk", wrk.is_none()), ("nginx", nginx.is_none())]
            .into_iter()
            .filter_map(|(name, missing)| missing.then_some(name))
            .collect();
        match (wrk, nginx) {
            (Some(wrk), Some(nginx)) => Ok(Tools { wrk, nginx }),
            _ => bail!(
                "{} not found: this bench needs wrk and nginx (Debian: apt-get install -y wrk nginx)",
                missing.join(" and ")
            ),
        }
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn main() {
    let options = match Options::from_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("api_slots: {e:#}");
            std::process::exit(2);
        }
    };
    let tools = match Tools::find() {
        Ok(tools) => tools,
        Err(e) => {
            eprintln!("api_slots: cannot measure: {e:#}");
            std::process::exit(1);
        }
    };
    // The control plane's own runtime (`cli::main`): tokio's default worker
    // count, one per CPU. nginx gets as many worker processes (its `auto`).
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("api_slots: cannot measure: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let pool = options
        .pool
        .unwrap_or(Config::default().database.max_connections);
    let cache = match options
        .list_cache_ms
        .unwrap_or(Config::default().server.list_cache_ms)
    {
        0 => "page cache off".to_owned(),
        ms => format!("page cache {ms} ms"),
    };
    println!(
        "api_slots: GET {PATH}, {PAGE} of {} slots (1 centre, {HUBS} hubs x {SLOTS_PER_HUB}); wrk -t{WRK_THREADS} -c{} -d{}s --latency after a {}s warm-up; {workers} CPUs: control plane runtime {workers} workers, database pool {pool}, {cache}; nginx {workers} worker processes",
        thousands((HUBS * SLOTS_PER_HUB) as f64),
        options.connections,
        options.duration.as_secs(),
        WARM_UP.as_secs()
    );
    let mut failed = false;
    for &backend in &options.backends {
        if let Err(e) = measure(&runtime, backend, &options, &tools, workers) {
            eprintln!("api_slots: {}: cannot measure: {e:#}", backend.name());
            println!(
                "api_slots: {}: MEASUREMENT FAILED (see the line above)",
                backend.name()
            );
            failed = true;
        }
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    if failed {
        std::process::exit(1);
    }
}

/// A throwaway database for one backend, removed by [`Database::remove`].
enum Database {
    Sqlite {
        dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin: String,
        name: String,
        url: String,
    },
}

impl Database {
    async fn create(backend: Backend) -> anyhow::Result<Database> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("api-slots-sqlite-")
                    .tempdir()
                    .context("cannot create a temporary directory")?;
                let url = format!("sqlite://{}", dir.path().join("control-plane.db").display());
                Ok(Database::Sqlite { dir, url })
            }
            Backend::Postgres => {
                let admin = std::env::var("CP_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
                let name = format!("cp_bench_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin).await.with_context(|| {
                    format!(
                        "Postgres at {} does not answer (set CP_TEST_POSTGRES_URL; .ci/ensure-postgres starts one)",
                        redact(&admin)
                    )
                })?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .with_context(|| format!("CREATE DATABASE {name} on {}", redact(&admin)))?;
                conn.close().await.ok();
                let Some((base, _)) = admin.rsplit_once('/') else {
                    bail!(
                        "CP_TEST_POSTGRES_URL needs a database path: {}",
                        redact(&admin)
                    );
                };
                let url = format!("{base}/{name}");
                Ok(Database::Postgres { admin, name, url })
            }
        }
    }

    fn url(&self) -> &str {
        match self {
            Database::Sqlite { url, .. } | Database::Postgres { url, .. } => url,
        }
    }

    fn data_dir(&self) -> PathBuf {
        match self {
            Database::Sqlite { dir, .. } => dir.path().to_owned(),
            Database::Postgres { .. } => std::env::temp_dir(),
        }
    }

    /// Drops the Postgres database (the SQLite directory goes with `self`).
    async fn remove(self) {
        if let Database::Postgres { admin, name, .. } = self {
            let dropped = async {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            };
            if let Err(e) = dropped.await {
                eprintln!("api_slots: postgres: could not drop the database {name}: {e}");
            }
        }
    }
}

/// Creates the database, measures, stops the server, removes the database.
fn measure(
    runtime: &tokio::runtime::Runtime,
    backend: Backend,
    options: &Options,
    tools: &Tools,
    workers: usize,
) -> anyhow::Result<()> {
    let db = runtime.block_on(Database::create(backend))?;
    let measured = measure_on(runtime, backend, &db, options, tools, workers);
    runtime.block_on(db.remove());
    measured
}

fn measure_on(
    runtime: &tokio::runtime::Runtime,
    backend: Backend,
    db: &Database,
    options: &Options,
    tools: &Tools,
    workers: usize,
) -> anyhow::Result<()> {
    let name = backend.name();
    let mut config = Config::default();
    config.server.http = SocketAddr::from(([127, 0, 0, 1], 0));
    config.sync.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.database.url = db.url().to_owned();
    config.database.data_dir = db.data_dir();
    if let Some(pool) = options.pool {
        config.database.max_connections = pool;
    }
    if let Some(ms) = options.list_cache_ms {
        config.server.list_cache_ms = ms;
    }
    config.auth.mode = Mode::Production;
    config.auth.jwt_secret = strong_secret()?;
    let shutdown = CancellationToken::new();
    let running = runtime
        .block_on(app::start(config, shutdown.clone()))
        .context("the control plane did not start")?;
    let measured = serve_and_measure(runtime, backend, db, &running, options, tools, workers);
    shutdown.cancel();
    let stopped = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), running.done).await });
    if stopped.is_err() {
        eprintln!("api_slots: {name}: the control plane did not stop within 10 s");
    }
    measured
}

fn serve_and_measure(
    runtime: &tokio::runtime::Runtime,
    backend: Backend,
    db: &Database,
    running: &Running,
    options: &Options,
    tools: &Tools,
    workers: usize,
) -> anyhow::Result<()> {
    let name = backend.name();
    let admin = running
        .first_admin
        .clone()
        .context("a fresh database should get a first administrator")?;
    let addr = running.addr;
    let (token, body) = runtime.block_on(async {
        seed(db.url()).await?;
        let token = login(addr, &admin.email, &admin.password).await?;
        let bearer = format!("Bearer {token}");
        let answer = http(addr, "GET", PATH, &[("Authorization", &bearer)], b"").await?;
        ensure!(
            answer.status == 200,
            "GET {PATH}: {} {:.300}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        check_page(&answer.body)?;
        Ok::<_, anyhow::Error>((token, answer.body))
    })?;

    let nginx_dir = tempfile::Builder::new()
        .prefix("api-slots-nginx-")
        .tempdir()
        .context("cannot create a temporary directory for nginx")?;
    let nginx = Nginx::start(&tools.nginx, nginx_dir.path(), &body, workers)?;
    let served = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match http(nginx.addr, "GET", PATH, &[], b"").await {
                Ok(answer) => return Ok(answer),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context("nginx did not answer within 10 s"));
                }
                // Not listening yet: the master binds while it starts.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    let served = served.with_context(|| nginx.error_log())?;
    ensure!(
        served.status == 200 && served.body == body,
        "nginx answers {} with {} bytes, not the control plane's {} bytes; {}",
        served.status,
        served.body.len(),
        body.len(),
        nginx.error_log()
    );

    let bearer = format!("Authorization: Bearer {token}");
    let cp_url = format!("http://{addr}{PATH}");
    let nginx_url = format!("http://{}{PATH}", nginx.addr);
    let wrk = |url: &str, duration: Duration| {
        Wrk {
            program: &tools.wrk,
            connections: options.connections,
            header: &bearer,
        }
        .run(url, duration)
    };

    wrk(&cp_url, WARM_UP)?.check("control plane (warm-up)")?;
    // The control plane is this process; on Postgres, its pool's backends too
    // (when the server runs on this machine).
    let this_process = || vec!["self".to_owned()];
    let db_backends = || match db {
        Database::Postgres { url, .. } => runtime.block_on(postgres_backends(url)),
        Database::Sqlite { .. } => Vec::new(),
    };
    let (cp, cp_usage) = measured(&[&this_process, &db_backends], || {
        wrk(&cp_url, options.duration)
    })?;
    cp.check("control plane")?;

    wrk(&nginx_url, WARM_UP)?.check("nginx (warm-up)")?;
    let nginx_workers = || nginx.workers();
    let (reference, nginx_usage) =
        measured(&[&nginx_workers], || wrk(&nginx_url, options.duration))?;
    reference.check("nginx")?;
    drop(nginx);

    let mut detail = format!(
        "api_slots: {name}: body {} B; control plane {} requests, on a CPU {}",
        thousands(body.len() as f64),
        thousands(cp.requests as f64),
        cpu_per_request(cp_usage.cpu[0], cp.requests),
    );
    if backend == Backend::Postgres {
        let _ = write!(
            detail,
            ", its {} Postgres backends {}",
            cp_usage.processes[1],
            cpu_per_request(cp_usage.cpu[1], cp.requests)
        );
    }
    let _ = write!(
        detail,
        ", machine {}; nginx ({} workers) {} requests, on a CPU {}, machine {}",
        busy(cp_usage.machine_busy),
        nginx_usage.processes[0],
        thousands(reference.requests as f64),
        cpu_per_request(nginx_usage.cpu[0], reference.requests),
        busy(nginx_usage.machine_busy),
    );
    for (who, report) in [("control plane", &cp), ("nginx", &reference)] {
        if let Some(errors) = &report.socket_errors {
            let _ = write!(detail, "; {who}: wrk SOCKET ERRORS: {errors}");
        }
    }
    println!("{detail}");
    let ratio = cp.requests_per_s / reference.requests_per_s.max(1e-9);
    println!(
        "api_slots: {name}: {} req/s, p50 {:.2} ms, p99 {:.2} ms; nginx {} req/s, p50 {:.2} ms, p99 {:.2} ms; ratio {ratio:.2} (target >= {TARGET_RATIO:.2}): {}; p99 target < {TARGET_P99_MS:.0} ms: {}",
        thousands(cp.requests_per_s),
        cp.p50_ms,
        cp.p99_ms,
        thousands(reference.requests_per_s),
        reference.p50_ms,
        reference.p99_ms,
        verdict(ratio >= TARGET_RATIO),
        verdict(cp.p99_ms < TARGET_P99_MS),
    );
    Ok(())
}

/// A production-strength signing secret: 48 random bytes, base64.
fn strong_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 48];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness for the secret: {e}"))?;
    Ok(STANDARD.encode(bytes))
}

/// One centre, [`HUBS`] hubs of [`SLOTS_PER_HUB`] slots each, as hubs report them:
/// kinds and states vary, LS and MF slots have a remote host, faults a reason.
async fn seed(url: &str) -> anyhow::Result<()> {
    let store = Store::connect(url, 2)
        .await
        .context("cannot open the database to seed it")?;
    let seeded = async {
        let centre = store
            .create_centre("Bench centre", &templates()[0], None)
            .await
            .context("seed the centre")?;
        for hub in 1..=HUBS {
            let hub_id = format!("bench-hub-{hub:02}");
            store
                .create_hub(&centre.id, &hub_id, &format!("Bench hub {hub:02}"))
                .await
                .with_context(|| format!("seed hub {hub_id}"))?;
            for n in 1..=SLOTS_PER_HUB {
                let i = (hub - 1) * SLOTS_PER_HUB + n;
                let kind = ["auto", "mf", "ls"][(i % 3) as usize];
                let state = SlotState::ALL[(i as usize) % SlotState::ALL.len()];
                let report = SlotReport {
                    hub_slot_id: n,
                    name: format!("Slot {hub:02}-{n:03}"),
                    kind: kind.to_owned(),
                    sip_number: format!("{}", 6000 + i),
                    fsm_state: state,
                    fault_reason: (state == SlotState::Fault).then(|| "SIM not detected".into()),
                    remote_host: (kind != "auto").then(|| format!("10.0.{hub}.{n}")),
                };
                store
                    .upsert_slot_report(&hub_id, &report)
                    .await
                    .with_context(|| format!("seed slot {n} of {hub_id}"))?;
            }
        }
        // Postgres plans this query from table statistics; without them (a
        // minute after the inserts, before autovacuum's first ANALYZE) it
        // joins every slot and sorts. Measure the steady state.
        if let Pool::Postgres(pool) = store.pool() {
            sqlx::query("ANALYZE")
                .execute(pool)
                .await
                .context("ANALYZE after seeding")?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let seeded = seeded.await;
    store.close().await;
    seeded
}

/// Logs in and returns the access token.
async fn login(addr: SocketAddr, email: &str, password: &str) -> anyhow::Result<String> {
    let body = serde_json::json!({ "email": email, "password": password }).to_string();
    let answer = http(
        addr,
        "POST",
        "/api/auth/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await?;
    ensure!(
        answer.status == 200,
        "POST /api/auth/login: {} {:.300}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    let session: serde_json::Value =
        serde_json::from_slice(&answer.body).context("the login answer is not JSON")?;
    session["token"]
        .as_str()
        .map(str::to_owned)
        .context("the login answer has no token")
}

/// The answer is a full page: [`PAGE`] items and a cursor to the next one.
fn check_page(body: &[u8]) -> anyhow::Result<()> {
    let page: serde_json::Value =
        serde_json::from_slice(body).context("GET /api/slots: the answer is not JSON")?;
    let items = page["items"].as_array().map_or(0, Vec::len);
    ensure!(
        items == PAGE && page["next_cursor"].is_string(),
        "GET {PATH}: {items} items and next_cursor {}; expected {PAGE} and a cursor",
        page["next_cursor"]
    );
    Ok(())
}

/// An HTTP answer.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); the
/// answer must carry a `Content-Length`.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Answer> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            let _ = write!(request, "{name}: {value}\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{method} {path} on {addr}: no answer within {ANSWER_TIMEOUT:?}"))?
        .with_context(|| format!("{method} {path} on {addr}"))?;
    parse_answer(&raw).with_context(|| {
        format!(
            "{method} {path} on {addr}: not an HTTP answer: {:.300}",
            String::from_utf8_lossy(&raw)
        )
    })
}

fn parse_answer(raw: &[u8]) -> anyhow::Result<Answer> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the HTTP head")?;
    let head = std::str::from_utf8(&raw[..end]).context("the HTTP head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|line| line.get(..3))
        .and_then(|code| code.parse().ok())
        .context("bad status line")?;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').context("bad header line")?;
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .context("bad Content-Length")?,
            );
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a chunked answer: this bench's client reads Content-Length bodies only");
        }
    }
    let length = length.context("no Content-Length")?;
    let body = raw
        .get(end + 4..end + 4 + length)
        .with_context(|| format!("body cut short: {} of {length} bytes", raw.len() - end - 4))?;
    Ok(Answer {
        status,
        body: body.to_vec(),
    })
}

/// nginx serving `body` at [`PATH`] as a static file, as a child process
/// under a temporary prefix; stopped when dropped.
struct Nginx {
    child: Child,
    program: PathBuf,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    fn start(program: &Path, dir: &Path, body: &[u8], workers: usize) -> anyhow::Result<Nginx> {
        let www = dir.join("www/api");
        std::fs::create_dir_all(&www)
            .and_then(|()| std::fs::create_dir_all(dir.join("temp")))
            .with_context(|| format!("cannot create nginx's directories in {}", dir.display()))?;
        std::fs::write(www.join("slots"), body)
            .with_context(|| format!("cannot write the body under {}", www.display()))?;
        // A free port: bind one, read it, let it go for nginx.
        let addr = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("cannot find a free port for nginx")?;
        let d = dir.display();
        // Run as root, nginx's workers would become `nobody`, who cannot read
        // the (0700) temporary directory.
        let user = if running_as_root() {
            "user root;\n"
        } else {
            ""
        };
        let conf = format!(
            "{user}worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/json;
    client_body_temp_path {d}/temp/client_body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    server {{
        listen {addr};
        root {d}/www;
    }}
}}
"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)
            .with_context(|| format!("cannot write {}", conf_path.display()))?;
        let child = Command::new(program)
            .args(Self::base_args(dir))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        Ok(Nginx {
            child,
            program: program.to_owned(),
            dir: dir.to_owned(),
            addr,
        })
    }

    fn base_args(dir: &Path) -> Vec<String> {
        let d = dir.display();
        vec![
            "-p".into(),
            format!("{d}/"),
            "-c".into(),
            format!("{d}/nginx.conf"),
            "-e".into(),
            format!("{d}/error.log"),
        ]
    }

    /// The worker processes (children of the master).
    fn workers(&self) -> Vec<String> {
        let master = self.child.id().to_string();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
            .filter(|pid| stat_fields(pid).is_some_and(|f| f.get(1) == Some(&master)))
            .collect()
    }

    /// nginx's error log, for messages.
    fn error_log(&self) -> String {
        let path = self.dir.join("error.log");
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                format!("nginx's {}: {:.600}", path.display(), text.trim())
            }
            _ => format!("nginx's {} is empty", path.display()),
        }
    }
}

impl Drop for Nginx {
    /// `nginx -s stop` (SIGTERM to the master, which stops its workers), then
    /// waits for it; a master that cannot be told is killed.
    fn drop(&mut self) {
        let told = Command::new(&self.program)
            .args(Self::base_args(&self.dir))
            .args(["-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !told {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// One wrk run's figures.
#[derive(Debug, Clone)]
struct Report {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
    /// wrk's "Socket errors:" line, when it printed one.
    socket_errors: Option<String>,
    output: String,
}

impl Report {
    /// Every answer was 2xx (wrk counts non-2xx/3xx answers; a 3xx here would
    /// be as wrong as a 4xx, and neither server redirects).
    fn check(&self, what: &str) -> anyhow::Result<()> {
        ensure!(
            self.non_2xx == 0 && self.requests > 0,
            "{what}: {} of {} answers were not 2xx (wrk: \"Non-2xx or 3xx responses: {}\"): the figures would be those of an error answer; wrk printed:\n{}",
            thousands(self.non_2xx as f64),
            thousands(self.requests as f64),
            self.non_2xx,
            self.output.trim_end()
        );
        Ok(())
    }
}

/// How wrk is run.
struct Wrk<'a> {
    program: &'a Path,
    connections: u32,
    header: &'a str,
}

impl Wrk<'_> {
    fn run(&self, url: &str, duration: Duration) -> anyhow::Result<Report> {
        let output = Command::new(self.program)
            .arg(format!("-t{WRK_THREADS}"))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", duration.as_secs().max(1)))
            .arg("--latency")
            .args(["-H", self.header])
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.program.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        ensure!(
            output.status.success(),
            "wrk {url}: {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            stdout.trim()
        );
        parse_wrk(&stdout).with_context(|| format!("wrk {url}: cannot read its output:\n{stdout}"))
    }
}

/// Reads `Requests/sec:`, the 50% and 99% lines of `Latency Distribution`,
/// `N requests in …`, `Non-2xx or 3xx responses: N` and `Socket errors: …`.
fn parse_wrk(output: &str) -> anyhow::Result<Report> {
    let mut requests_per_s = None;
    let mut p50_ms = None;
    let mut p99_ms = None;
    let mut requests = None;
    let mut non_2xx = 0;
    let mut socket_errors = None;
    let mut in_distribution = false;
    for line in output.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            requests_per_s = Some(rate.trim().parse::<f64>().context("Requests/sec")?);
        } else if line.starts_with("Latency Distribution") {
            in_distribution = true;
        } else if in_distribution && let Some((percent, value)) = line.split_once('%') {
            match percent.trim() {
                "50" => p50_ms = Some(latency_ms(value.trim())?),
                "99" => p99_ms = Some(latency_ms(value.trim())?),
                _ => {}
            }
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = n.trim().parse().context("Non-2xx or 3xx responses")?;
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            socket_errors = Some(errors.trim().to_owned());
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            in_distribution = false;
            requests = Some(n.trim().parse().context("N requests in")?);
        }
    }
    Ok(Report {
        requests_per_s: requests_per_s.context("no Requests/sec line")?,
        p50_ms: p50_ms.context("no 50% line under Latency Distribution")?,
        p99_ms: p99_ms.context("no 99% line under Latency Distribution")?,
        requests: requests.context("no 'N requests in' line")?,
        non_2xx,
        socket_errors,
        output: output.to_owned(),
    })
}

/// wrk's latency (`850.00us`, `1.20ms`, `2.01s`, `1.50m`) in milliseconds.
fn latency_ms(text: &str) -> anyhow::Result<f64> {
    let units = [
        ("us", 0.001),
        ("ms", 1.0),
        ("s", 1_000.0),
        ("m", 60_000.0),
        ("h", 3_600_000.0),
    ];
    let (number, scale) = units
        .iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|n| (n, *scale)))
        .with_context(|| format!("latency {text:?}: unknown unit"))?;
    let value: f64 = number
        .parse()
        .with_context(|| format!("latency {text:?}: not a number"))?;
    Ok(value * scale)
}

/// The fields of `/proc/<pid>/stat` after the command name: index 1 is the
/// parent pid, 11 and 12 the user and system CPU time in clock ticks.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The CPU time of each group of processes, and how busy the whole machine
/// was, while `run` ran.
struct Usage {
    /// Per group: the CPU time, `None` when none of its processes could be read.
    cpu: Vec<Option<Duration>>,
    /// Per group: how many of its processes were counted.
    processes: Vec<usize>,
    machine_busy: Option<f64>,
}

/// A function listing the pids of one group of processes; it is asked before
/// and after the run, so a process that starts during the run (a pool
/// connection opened under load) counts with all its CPU time.
type Pids<'a> = &'a dyn Fn() -> Vec<String>;

fn measured<T>(
    groups: &[Pids<'_>],
    run: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Usage)> {
    let before: Vec<HashMap<String, Duration>> =
        groups.iter().map(|pids| cpu_snapshot(pids())).collect();
    let machine_before = machine_cpu();
    let result = run()?;
    let machine = machine_cpu()
        .zip(machine_before)
        .map(|((busy, total), (busy0, total0))| {
            busy.saturating_sub(busy0) as f64 / total.saturating_sub(total0).max(1) as f64
        });
    let mut usage = Usage {
        cpu: Vec::new(),
        processes: Vec::new(),
        machine_busy: machine,
    };
    for (pids, before) in groups.iter().zip(&before) {
        // A process gone since is not counted: its share is lost, not invented.
        let after = cpu_snapshot(pids().into_iter().chain(before.keys().cloned()).collect());
        let cpu = after
            .iter()
            .map(|(pid, now)| now.saturating_sub(before.get(pid).copied().unwrap_or_default()))
            .sum();
        usage.cpu.push((!after.is_empty()).then_some(cpu));
        usage.processes.push(after.len());
    }
    Ok((result, usage))
}

/// The CPU time of each of `pids` that can be read.
fn cpu_snapshot(pids: Vec<String>) -> HashMap<String, Duration> {
    pids.into_iter()
        .filter_map(|pid| process_cpu(&pid).map(|cpu| (pid, cpu)))
        .collect()
}

/// Busy and total ticks of all CPUs, from the first line of `/proc/stat`
/// (idle and iowait count as not busy).
fn machine_cpu() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = text
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .take(8)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

fn busy(fraction: Option<f64>) -> String {
    fraction.map_or("n/a".to_owned(), |f| format!("{:.0}% busy", f * 100.0))
}

/// The pids of the Postgres backends connected to the database at `url`
/// (the control plane's pool), if the server runs on this machine.
async fn postgres_backends(url: &str) -> Vec<String> {
    let query = async {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut conn)
        .await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(pids)
    };
    match query.await {
        Ok(pids) => pids
            .into_iter()
            .map(|pid| pid.to_string())
            .filter(|pid| std::path::Path::new("/proc").join(pid).exists())
            .collect(),
        Err(e) => {
            eprintln!("api_slots: postgres: cannot list the pool's backends: {e}");
            Vec::new()
        }
    }
}

/// User + system CPU time of a process (all its threads).
fn process_cpu(pid: &str) -> Option<Duration> {
    let fields = stat_fields(pid)?;
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_S))
}

fn cpu_per_request(cpu: Option<Duration>, requests: u64) -> String {
    match cpu {
        Some(cpu) => format!(
            "{:.2} s ({:.0} us/request)",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / requests.max(1) as f64
        ),
        None => "n/a".to_owned(),
    }
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
