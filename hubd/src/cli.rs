//! The command line: `run`, `check-config`, `demo`, `status`, `outbox-load`.
//!
//! Exit codes: 0 success; 2 the configuration or start-up was refused (the
//! message names the file, field or resource); 1 a failure while running.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use vss_shared::{HubId, SlotId, SlotKind};

use crate::api::client;
use crate::app::{self, StartError};
use crate::config::{
    Config, ConfigError, DriverConfig, LogFormat, SimConfig, SlotConfig, Synchronous, hub_env,
};
use crate::metrics::Metrics;
use crate::store::{Store, StoreOptions, Write};

/// Exit code for a refused configuration or start-up.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code for a failure while running.
pub const EXIT_FAILURE: i32 = 1;

#[derive(Debug, Parser)]
#[command(name = "hubd", version, about = "VSS Demiurge hub daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub described by a config file.
    Run {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
        /// Override log.format (text or json).
        #[arg(long)]
        log_format: Option<LogFormat>,
    },
    /// Validate a config file (and HUBD__… overrides) and exit.
    CheckConfig {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a hub with simulated slots and no config file.
    Demo(DemoArgs),
    /// Enroll this hub with a control plane, once, with a token from
    /// `control-plane hub enroll` (or `POST /api/hubs/{id}/enrollment-tokens`).
    Enroll {
        /// `HOST:PORT` of the control plane's fleet endpoint (UDP).
        #[arg(long)]
        control_plane: String,
        /// The one-time token (`vss1.…`).
        #[arg(long)]
        token: String,
        /// The hub's config file (its hub.data_dir receives the certificate).
        #[arg(long, conflicts_with = "data_dir")]
        config: Option<PathBuf>,
        /// The hub's data directory, instead of --config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// GSM modems (AUTO slots): find them by probing serial ports.
    Modems {
        #[command(subcommand)]
        command: ModemsCommand,
    },
    /// Print the slots of a running hub, read from its local API.
    Status {
        /// Address of the hub's local API.
        #[arg(long, default_value = "127.0.0.1:8790")]
        api: SocketAddr,
    },
    /// Developer tool: append N events to the outbox of DIR's store, printing
    /// `ok <seq> <i>` for each write as soon as it is durable.
    OutboxLoad {
        /// Data directory of the store.
        #[arg(long)]
        data_dir: PathBuf,
        /// How many events.
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// Concurrent writers.
        #[arg(long, default_value_t = 8)]
        concurrency: u64,
        /// Index of the first event (payloads carry `i`).
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Also sync with the control plane (the data dir must be enrolled),
        /// and exit only once every event in the outbox is acknowledged
        /// (`acked N` on stdout).
        #[arg(long)]
        sync: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ModemsCommand {
    /// Probe the serial ports `[modems] scan` matches (ports another program
    /// holds are skipped) and print each modem found: port, IMEI, make,
    /// model, voice port. Run it with hubd stopped, or it sees only the
    /// modems no slot holds.
    Scan {
        /// The hub's config file (for `[modems]`); defaults otherwise.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Glob patterns of ports to probe, instead of the config's `scan`.
        #[arg(long = "port")]
        ports: Vec<String>,
        /// One JSON object per line: {"port","imei","vendor","model","voice"}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Number of simulated slots (AUTO, AUTO, MF, LS, repeating).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=999))]
    slots: u32,
    /// Address of the local API.
    #[arg(long, default_value = "127.0.0.1:8790")]
    api: SocketAddr,
    /// Data directory for the store.
    #[arg(long, default_value = ".demo/hub")]
    data_dir: PathBuf,
    /// Seed of the simulated devices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Typical device latency in ms.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Probability (0–1) that a device operation fails.
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Mean ms between simulated incoming calls per slot; 0 = no calls.
    #[arg(long, default_value_t = 0)]
    call_every_ms: u64,
    /// Test hook: this slot's driver panics after it is READY.
    #[arg(long)]
    panic_slot: Option<u32>,
    /// With --panic-slot: ms after READY before the panic.
    #[arg(long, default_value_t = 500)]
    panic_after_ms: u64,
    /// Log format (text or json).
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
}

impl clap::ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[LogFormat::Text, LogFormat::Json]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }))
    }
}

async fn modems_scan(settings: crate::config::ModemsSection, json: bool) -> i32 {
    let recovery = settings.recovery_config();
    let patterns = settings.scan.clone();
    let directory = crate::device::at_modem::directory::ModemDirectory::new(settings, recovery);
    let found = directory.scan().await;
    for modem in &found {
        if json {
            match serde_json::to_string(modem) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("hubd: {e}"),
            }
        } else {
            println!("{}", crate::device::at_modem::driver::describe(modem));
        }
    }
    if found.is_empty() {
        eprintln!("hubd: no modem answered on the ports matching {patterns:?}");
        return EXIT_FAILURE;
    }
    0
}

/// Parses the command line, runs the command, returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hubd: cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(command: Command) -> i32 {
    match command {
        Command::Run { config, log_format } => {
            match hub_env().and_then(|vars| Config::load(&config, vars)) {
                Ok(mut config) => {
                    if let Some(format) = log_format {
                        config.log.format = format;
                    }
                    serve(config, None).await
                }
                Err(e) => refuse(e),
            }
        }
        Command::CheckConfig { config: path } => {
            match hub_env().and_then(|vars| Config::load(&path, vars)) {
                Ok(config) => {
                    let slots = config.slots.len();
                    println!(
                        "{}: ok (hub {}, {slots} slot{}, API {})",
                        path.display(),
                        config.hub.id,
                        if slots == 1 { "" } else { "s" },
                        config.api.listen
                    );
                    0
                }
                Err(e) => refuse(e),
            }
        }
        Command::Demo(args) => match demo_config(&args) {
            Ok(config) => {
                let banner = DemoBanner {
                    slots: args.slots,
                    data_dir: args.data_dir.clone(),
                };
                serve(config, Some(banner)).await
            }
            Err(e) => refuse(e),
        },
        Command::Status { api } => status(api).await,
        Command::Modems {
            command:
                ModemsCommand::Scan {
                    config,
                    ports,
                    json,
                },
        } => {
            let mut settings = match config {
                Some(path) => match hub_env().and_then(|vars| Config::load(&path, vars)) {
                    Ok(config) => config.modems,
                    Err(e) => return refuse(e),
                },
                None => crate::config::ModemsSection::default(),
            };
            if !ports.is_empty() {
                settings.scan = ports;
            }
            modems_scan(settings, json).await
        }
        Command::Enroll {
            control_plane,
            token,
            config,
            data_dir,
        } => {
            let data_dir = match (config, data_dir) {
                (_, Some(dir)) => dir,
                (Some(path), None) => match hub_env().and_then(|vars| Config::load(&path, vars)) {
                    Ok(config) => config.hub.data_dir,
                    Err(e) => return refuse(e),
                },
                (None, None) => return refuse("pass --config PATH or --data-dir DIR"),
            };
            match crate::sync::enroll::enroll(&data_dir, &control_plane, &token).await {
                Ok(hub_id) => {
                    println!(
                        "enrolled as hub {hub_id} with {control_plane}; certificate in {}",
                        crate::sync::identity::sync_dir(&data_dir).display()
                    );
                    0
                }
                Err(e) => refuse(e),
            }
        }
        Command::OutboxLoad {
            data_dir,
            events,
            concurrency,
            start,
            sync,
        } => outbox_load(data_dir, events, concurrency, start, sync).await,
    }
}

fn refuse(e: impl std::fmt::Display) -> i32 {
    eprintln!("hubd: {e}");
    EXIT_CONFIG
}

struct DemoBanner {
    slots: u32,
    data_dir: PathBuf,
}

/// Runs a hub until SIGINT or SIGTERM.
async fn serve(config: Config, banner: Option<DemoBanner>) -> i32 {
    crate::logging::init(config.log.format, &config.log.level);
    let shutdown = CancellationToken::new();
    let hub = match app::start(config, shutdown.clone()).await {
        Ok(hub) => hub,
        Err(
            e @ (StartError::Config(_)
            | StartError::ApiBind { .. }
            | StartError::Store(_)
            | StartError::Sync(_)
            | StartError::Recordings { .. }),
        ) => {
            return refuse(e);
        }
    };
    if let Some(banner) = banner {
        let api = hub.api_addr();
        println!("VSS Demiurge hub demo: {} simulated slots", banner.slots);
        println!("  API (no web admin yet): http://{api}/api/slots");
        println!("  Health:                 http://{api}/health");
        println!("  Metrics:                http://{api}/metrics");
        println!("  Slot table:             hubd status --api {api}");
        println!(
            "  Credentials:            none (the hub API is loopback-only and has no accounts)"
        );
        println!("  Data dir:               {}", banner.data_dir.display());
        println!("Press Ctrl-C to stop.");
    } else {
        // One line for whoever started it (and for api.listen = "…:0").
        println!("hubd: local API on http://{}/api/slots", hub.api_addr());
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    hub.stop().await;
    0
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop hubd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The config `hubd demo` runs: `slots` simulated slots, AUTO, AUTO, MF, LS, …
fn demo_config(args: &DemoArgs) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    config.hub.id = HubId::new("hub-demo").unwrap_or_else(|_| unreachable!("a valid literal slug"));
    config.hub.name = "Demo hub".into();
    config.hub.data_dir = args.data_dir.clone();
    config.api.listen = args.api;
    config.log.format = args.log_format;
    config.supervisor.restart_backoff_initial_ms = 200;
    config.supervisor.restart_backoff_max_ms = 5_000;
    for n in 1..=args.slots {
        let id = SlotId::new(n).map_err(|e| ConfigError::Invalid {
            origin: "hubd demo".into(),
            field: "--slots".into(),
            value: args.slots.to_string(),
            why: e.to_string(),
        })?;
        let kind = match (n - 1) % 4 {
            0 | 1 => SlotKind::Auto,
            2 => SlotKind::Mf,
            _ => SlotKind::Ls,
        };
        config.slots.push(SlotConfig {
            id,
            name: None,
            kind,
            sip_number: None,
            enabled: true,
            driver: DriverConfig::Sim(SimConfig {
                seed: args.seed.wrapping_mul(1000).wrapping_add(u64::from(n)),
                latency_ms: args.latency_ms,
                failure_rate: args.failure_rate,
                call_every_ms: args.call_every_ms,
                panic_after_ms: (args.panic_slot == Some(n)).then_some(args.panic_after_ms),
                ..SimConfig::default()
            }),
        });
    }
    crate::config::validate(&config, "hubd demo")?;
    Ok(config)
}

/// `hubd status`: the slot table.
async fn status(api: SocketAddr) -> i32 {
    let answer = match client::request(api, "GET", "/api/slots", Duration::from_secs(5)).await {
        Ok(answer) if answer.status == 200 => answer,
        Ok(answer) => {
            eprintln!(
                "hubd: the hub API at {api} answered {}: {}",
                answer.status, answer.body
            );
            return EXIT_FAILURE;
        }
        Err(e) => {
            eprintln!("hubd: {e}");
            return EXIT_FAILURE;
        }
    };
    let slots: Vec<serde_json::Value> = match serde_json::from_str(&answer.body) {
        Ok(slots) => slots,
        Err(e) => {
            eprintln!("hubd: the hub API at {api} sent a slot list hubd cannot read: {e}");
            return EXIT_FAILURE;
        }
    };
    println!(
        "{:>4}  {:<10}  {:<4}  {:<6}  {:<11}  {:<7}  {:>8}  REASON",
        "ID", "NAME", "KIND", "NUMBER", "STATE", "STATUS", "RESTARTS"
    );
    for s in &slots {
        let text = |key: &str| s[key].as_str().unwrap_or("-").to_owned();
        println!(
            "{:>4}  {:<10}  {:<4}  {:<6}  {:<11}  {:<7}  {:>8}  {}",
            s["id"].as_u64().unwrap_or(0),
            text("name"),
            text("device_type").to_uppercase(),
            text("internal_sip_number"),
            text("fsm_state"),
            text("status"),
            s["restarts"].as_u64().unwrap_or(0),
            s["fault_reason"].as_str().unwrap_or(""),
        );
    }
    if let Ok(health) = client::request(api, "GET", "/health", Duration::from_secs(5)).await
        && let Ok(health) = serde_json::from_str::<serde_json::Value>(&health.body)
    {
        match health["config"]["revision"].as_u64() {
            Some(revision) => {
                println!("Configuration: revision {revision} (pushed by the control plane)")
            }
            None => println!("Configuration: the file's [[slots]] (no revision pushed)"),
        }
        if let Some(rejected) = health["config"]["last_rejected"].as_object() {
            println!(
                "  last rejected: revision {} ({})",
                rejected
                    .get("revision")
                    .and_then(|r| r.as_u64())
                    .unwrap_or(0),
                rejected
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("")
            );
        }
    }
    0
}

/// The payload `outbox-load` writes for event `i`; tests rebuild it to check
/// what they read back.
pub fn load_event_payload(i: u64) -> String {
    let body = format!("event {i} ").repeat(4);
    serde_json::json!({ "i": i, "body": body }).to_string()
}

/// `hubd outbox-load`: durable appends, acknowledged on stdout one by one.
async fn outbox_load(
    data_dir: PathBuf,
    events: u64,
    concurrency: u64,
    start: u64,
    sync: bool,
) -> i32 {
    let identity = if sync {
        match crate::sync::identity::load(&data_dir) {
            Ok(Some(identity)) => Some(identity),
            Ok(None) => {
                return refuse(format!(
                    "--sync: {} is not enrolled (hubd enroll)",
                    data_dir.display()
                ));
            }
            Err(e) => return refuse(e),
        }
    } else {
        None
    };
    let options = StoreOptions {
        data_dir,
        batch_max: 1024,
        synchronous: Synchronous::Full,
    };
    let store = match Store::open(&options, Arc::new(Metrics::default())) {
        Ok(store) => store,
        Err(e) => return refuse(e),
    };
    let shutdown = CancellationToken::new();
    let status = Arc::new(crate::sync::client::SyncStatus::default());
    let syncing = identity.map(|identity| {
        crate::sync::client::spawn(
            identity,
            store.handle(),
            store.db_path().to_owned(),
            Arc::new(crate::supervisor::Registry::new(Vec::new())),
            None,
            status.clone(),
            shutdown.clone(),
        )
    });
    let concurrency = concurrency.clamp(1, 1024);
    let mut writers = tokio::task::JoinSet::new();
    for lane in 0..concurrency {
        let handle = store.handle();
        writers.spawn(async move {
            let mut i = lane;
            while i < events {
                let write = Write::Outbox {
                    kind: "load_test".into(),
                    payload: load_event_payload(start + i),
                };
                match handle.write(write).await {
                    Ok(receipt) => println!("ok {} {}", receipt.seq.unwrap_or(0), start + i),
                    Err(e) => {
                        eprintln!("hubd: write {i} failed: {e}");
                        return false;
                    }
                }
                i += concurrency;
            }
            true
        });
    }
    let mut ok = true;
    while let Some(result) = writers.join_next().await {
        ok &= matches!(result, Ok(true));
    }
    if let Some(syncing) = syncing {
        // Every row written (by this run or an earlier one) must be acknowledged.
        let last = store
            .reader()
            .and_then(|reader| reader.outbox_range())
            .map(|(_, next)| next.saturating_sub(1));
        match last {
            Ok(last) => {
                while status.acked_seq.load(std::sync::atomic::Ordering::Relaxed) < last {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                println!("acked {last}");
            }
            Err(e) => {
                eprintln!("hubd: cannot read the outbox: {e}");
                ok = false;
            }
        }
        shutdown.cancel();
        let _ = syncing.await;
    }
    store.close().await;
    if ok { 0 } else { EXIT_FAILURE }
}
