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
use crate::rbac::Role;
use crate::store::Scope;
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
        Command::Serve { store, http } => {
            let mut config = match load(&store) {
                Ok(config) => config,
                Err(e) => return refuse(e),
            };
            if let Some(http) = http {
                config.server.http = http;
            }
            serve(config).await
        }
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
