//! The command line: `serve`, `migrate`, `check-config`, `user create`.
//!
//! Exit codes: 0 success; 2 refused (configuration, secret, database, port,
//! bad arguments), with one line naming what and why; 1 a failure while running.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{self, StartError};
use crate::auth::password::{check_strength, hash_password};
use crate::config::{Config, ConfigError, cp_env};
use crate::fleet::ca::FleetCa;
use crate::rbac::Role;
use crate::store::Scope;
use crate::store::audit::{NewAudit, Outcome};
use crate::store::users::NewUser;

/// Exit code for a refused start or command.
pub const EXIT_REFUSED: i32 = 2;

#[derive(Debug, Parser)]
#[command(name = "control-plane", version, about = "VSS Demiurge control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration and the database are; every command that touches the store takes these.
#[derive(Debug, Args, Clone)]
struct StoreArgs {
    /// TOML config file (optional; defaults and CP__… variables apply without one).
    #[arg(long)]
    config: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://…` (default: SQLite in the data dir).
    #[arg(long)]
    database_url: Option<String>,
    /// Directory for the embedded database.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// Address of the HTTP API.
        #[arg(long)]
        http: Option<SocketAddr>,
        /// UDP address of the fleet endpoint hubs connect to (QUIC).
        #[arg(long)]
        sync: Option<SocketAddr>,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Validate the configuration (file and CP__… variables) and exit.
    CheckConfig {
        /// TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage the fleet of hubs.
    Hub {
        #[command(subcommand)]
        command: HubCommand,
    },
}

#[derive(Debug, Subcommand)]
enum HubCommand {
    /// Register a hub (if new) and print a one-time enrollment token for
    /// `hubd enroll`.
    Enroll {
        #[command(flatten)]
        store: StoreArgs,
        /// Human name of the hub, e.g. "Moscow 01".
        #[arg(long)]
        name: String,
        /// The hub's call centre: its id or its name.
        #[arg(long)]
        centre: String,
        /// Create the centre (standard template) when no centre has that name.
        #[arg(long)]
        create_centre: bool,
        /// Hub id (a slug); derived from the name when absent.
        #[arg(long)]
        id: Option<String>,
        /// How long the token stays valid, in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u32,
    },
    /// A hub's desired slot configuration.
    Config {
        #[command(subcommand)]
        command: HubConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum HubConfigCommand {
    /// Replace the hub's slot list with the slots of a file, as a new
    /// revision (pushed to the hub by the control plane serving it).
    Set {
        #[command(flatten)]
        store: StoreArgs,
        /// The hub's id.
        #[arg(long)]
        hub: String,
        /// `*.json` (`{"slots":[…]}`, the API's body) or `*.toml` (`[[slots]]`
        /// tables, as in hubd's own file, plus `sip_password`).
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create an account; the password is read from standard input.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Login email.
        #[arg(long)]
        email: String,
        /// admin, supervisor, operator, technician or viewer.
        #[arg(long)]
        role: String,
        /// The user's centre (required for every role but admin).
        #[arg(long)]
        centre: Option<String>,
        /// Read the password from standard input (required: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

/// Parses the command line, runs the command, returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("control-plane: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(dispatch(cli.command))
}

fn refuse(e: impl std::fmt::Display) -> i32 {
    eprintln!("control-plane: {e}");
    EXIT_REFUSED
}

fn load(args: &StoreArgs) -> Result<Config, ConfigError> {
    let mut config = Config::load(args.config.as_deref(), cp_env()?)?;
    if let Some(url) = &args.database_url {
        config.database.url = url.clone();
    }
    if let Some(dir) = &args.data_dir {
        config.database.data_dir = dir.clone();
    }
    crate::config::validate(&config, "command line")?;
    Ok(config)
}

async fn dispatch(command: Command) -> i32 {
    match command {
        Command::Serve { store, http, sync } => {
            let mut config = match load(&store) {
                Ok(config) => config,
                Err(e) => return refuse(e),
            };
            if let Some(http) = http {
                config.server.http = http;
            }
            if let Some(sync) = sync {
                config.sync.listen = sync;
            }
            serve(config).await
        }
        Command::Hub {
            command:
                HubCommand::Enroll {
                    store,
                    name,
                    centre,
                    create_centre,
                    id,
                    ttl_hours,
                },
        } => enroll_hub(store, name, centre, create_centre, id, ttl_hours).await,
        Command::Hub {
            command:
                HubCommand::Config {
                    command: HubConfigCommand::Set { store, hub, file },
                },
        } => set_hub_config(store, hub, file).await,
        Command::Migrate { store } => {
            let config = match load(&store) {
                Ok(config) => config,
                Err(e) => return refuse(e),
            };
            match app::open_store(&config).await {
                Ok(store) => {
                    println!(
                        "database {} is at the latest schema",
                        crate::store::redact(&config.database_url())
                    );
                    store.close().await;
                    0
                }
                Err(e) => refuse(e),
            }
        }
        Command::CheckConfig { config } => {
            match cp_env().and_then(|vars| Config::load(config.as_deref(), vars)) {
                Ok(c) => {
                    println!(
                        "configuration ok (HTTP {}, database {})",
                        c.server.http,
                        crate::store::redact(&c.database_url())
                    );
                    0
                }
                Err(e) => refuse(e),
            }
        }
        Command::User {
            command:
                UserCommand::Create {
                    store,
                    email,
                    role,
                    centre,
                    ..
                },
        } => create_user(store, email, role, centre).await,
    }
}

async fn create_user(args: StoreArgs, email: String, role: String, centre: Option<String>) -> i32 {
    let config = match load(&args) {
        Ok(config) => config,
        Err(e) => return refuse(e),
    };
    let Some(role) = Role::parse(&role) else {
        return refuse(format!(
            "--role {role:?}: expected admin, supervisor, operator, technician or viewer"
        ));
    };
    match (&centre, role.is_platform()) {
        (Some(_), true) => return refuse("--centre: administrators belong to no centre"),
        (None, false) => {
            return refuse(format!(
                "--centre is required for the {} role",
                role.as_str()
            ));
        }
        _ => {}
    }
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut password) {
        return refuse(format!("cannot read the password from standard input: {e}"));
    }
    let password = password.trim_end_matches(['\n', '\r']);
    if let Err(why) = check_strength(password) {
        return refuse(format!("password refused: {why}"));
    }
    let store = match app::open_store(&config).await {
        Ok(store) => store,
        Err(e) => return refuse(e),
    };
    if let Some(centre) = &centre {
        match store.centre(&Scope::All, centre).await {
            Ok(Some(_)) => {}
            Ok(None) => return refuse(format!("--centre {centre}: no such centre")),
            Err(e) => return refuse(e),
        }
    }
    let hash = match hash_password(password) {
        Ok(hash) => hash,
        Err(e) => return refuse(e),
    };
    let created = store
        .create_user(NewUser {
            centre_id: centre,
            email,
            role,
            password_hash: hash,
        })
        .await;
    store.close().await;
    match created {
        Ok(user) => {
            println!(
                "created {} ({}) id {}",
                user.email,
                user.role.as_str(),
                user.id
            );
            0
        }
        Err(e) => refuse(e),
    }
}

/// A hub id from a name: lowercase ASCII letters and digits, other runs as `-`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').chars().take(63).collect()
}

async fn enroll_hub(
    args: StoreArgs,
    name: String,
    centre: String,
    create_centre: bool,
    id: Option<String>,
    ttl_hours: u32,
) -> i32 {
    let config = match load(&args) {
        Ok(config) => config,
        Err(e) => return refuse(e),
    };
    let id = id.unwrap_or_else(|| slug(&name));
    if let Err(e) = vss_shared::HubId::new(id.clone()) {
        return refuse(format!("--id {id:?}: {e} (pass --id explicitly)"));
    }
    if !(1..=24 * 30).contains(&ttl_hours) {
        return refuse("--ttl-hours must be between 1 and 720");
    }
    let dir = &config.database.data_dir;
    if let Err(e) = std::fs::create_dir_all(dir) {
        return refuse(format!("data dir {}: {e}", dir.display()));
    }
    let ca = match FleetCa::load_or_create(dir, crate::store::now_ms()) {
        Ok(ca) => ca,
        Err(e) => return refuse(e),
    };
    let store = match app::open_store(&config).await {
        Ok(store) => store,
        Err(e) => return refuse(e),
    };
    let outcome = async {
        let centre = match store.centre(&Scope::All, &centre).await? {
            Some(found) => found.id,
            None => match store.centre_by_name(&centre).await? {
                Some(found) => found.id,
                None if create_centre => {
                    let template = &crate::store::centres::templates()[0];
                    store.create_centre(&centre, template, None).await?.id
                }
                None => {
                    return Ok(Err(format!(
                        "--centre {centre}: no centre with this id or name (--create-centre makes it)"
                    )));
                }
            },
        };
        match store.hub(&Scope::All, &id).await? {
            Some(hub) if hub.centre_id != centre => {
                return Ok(Err(format!(
                    "hub {id} exists in centre {}, not {centre}",
                    hub.centre_id
                )));
            }
            Some(_) => {}
            None => {
                store.create_hub(&centre, &id, &name).await?;
            }
        }
        let ttl_ms = i64::from(ttl_hours) * 3_600_000;
        let token = store
            .create_enrollment_token(&Scope::All, &id, ttl_ms, None)
            .await?;
        store
            .audit(NewAudit {
                centre_id: Some(centre.clone()),
                action: "hub.enrollment_token".into(),
                target: Some(id.clone()),
                source_addr: Some("cli".into()),
                outcome: Some(if token.is_some() {
                    Outcome::Ok
                } else {
                    Outcome::Denied
                }),
                ..NewAudit::default()
            })
            .await?;
        Ok::<_, crate::store::StoreError>(
            token.ok_or_else(|| format!("hub {id} is revoked: it cannot enroll again")),
        )
    }
    .await;
    store.close().await;
    match outcome {
        Ok(Ok(token)) => {
            let text = vss_shared::enroll::EnrollmentToken {
                secret: token.token,
                ca_fingerprint: ca.fingerprint(),
            }
            .to_text();
            println!("hub {id} ({name}) in centre {centre}");
            println!("enrollment token (one use, valid {ttl_hours} h):");
            println!("{text}");
            println!(
                "on the hub: hubd enroll --control-plane HOST:{} --token {text}",
                config.sync.listen.port()
            );
            0
        }
        Ok(Err(why)) => refuse(why),
        Err(e) => refuse(e),
    }
}

/// `control-plane hub config set`: the file's slots, checked like
/// `PUT /api/hubs/{id}/config`, stored as the hub's next revision.
async fn set_hub_config(args: StoreArgs, hub: String, file: PathBuf) -> i32 {
    let config = match load(&args) {
        Ok(config) => config,
        Err(e) => return refuse(e),
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) => return refuse(format!("--file {}: {e}", file.display())),
    };
    let toml = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let body: Result<crate::api::hub_config::PutHubConfig, String> = if toml {
        toml::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    };
    let body = match body {
        Ok(body) => body,
        Err(e) => return refuse(format!("--file {}: {e}", file.display())),
    };
    let slots = match crate::api::hub_config::validate_slots(body.slots) {
        Ok(slots) => slots,
        Err(e) => return refuse(format!("--file {}: {}", file.display(), e.message)),
    };
    let store = match app::open_store(&config).await {
        Ok(store) => store,
        Err(e) => return refuse(e),
    };
    let outcome = store
        .replace_hub_config(&Scope::All, &hub, body.expected_revision, slots, None)
        .await;
    store.close().await;
    match outcome {
        Ok(crate::store::hub_config::Replaced::Stored(stored)) => {
            println!(
                "hub {hub}: revision {} with {} slots; the control plane serving it pushes it (at once, or within 5 s)",
                stored.revision,
                stored.slots.len()
            );
            0
        }
        Ok(crate::store::hub_config::Replaced::NotFound) => {
            refuse(format!("--hub {hub}: no such hub"))
        }
        Ok(crate::store::hub_config::Replaced::Conflict { current }) => refuse(format!(
            "hub {hub} is at revision {current}, not the file's expected_revision"
        )),
        Err(e) => refuse(e),
    }
}

async fn serve(config: Config) -> i32 {
    init_logging(&config);
    let shutdown = CancellationToken::new();
    let running = match app::start(config, shutdown.clone()).await {
        Ok(running) => running,
        Err(
            e @ (StartError::Secret(_)
            | StartError::Store(_)
            | StartError::DataDir { .. }
            | StartError::Bind { .. }
            | StartError::Other(_)),
        ) => {
            return refuse(e);
        }
    };
    let addr = running.addr;
    println!("VSS Demiurge control plane");
    println!("  API (no web admin yet): http://{addr}/api");
    println!("  OpenAPI:                http://{addr}/api/openapi.json");
    println!("  Health:                 http://{addr}/health");
    if let (Some(sync), Some(fingerprint)) = (running.sync_addr, running.ca_fingerprint) {
        println!("  Hubs (QUIC, mTLS):      {sync}");
        println!(
            "  Fleet CA SHA-256:       {}",
            vss_shared::enroll::fingerprint_hex(&fingerprint)
        );
    }
    match &running.first_admin {
        Some(admin) => println!(
            "  First admin:            {} / {}   (shown once: log in and keep it safe)",
            admin.email, admin.password
        ),
        None => println!(
            "  Accounts:               existing (the first admin was created on an earlier start)"
        ),
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = running.done.await;
    0
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if config.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
