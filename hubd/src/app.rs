//! Wiring: starts a hub from a validated [`Config`] — API listener, store,
//! slot supervisors, API server — and stops it in order.
//!
//! Start order matters: the API port is bound before anything is written, so
//! a port conflict leaves the data directory untouched. The recordings
//! directory is created and its interrupted recordings repaired before any
//! slot starts (a file being recorded would look interrupted). Shutdown order: stop
//! the supervisors (they release devices and record what they did), stop the
//! API, then commit and close the store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiState, router};

use crate::config::{Config, validate};
use crate::health::Readiness;
use crate::media::recording::RepairOutcome;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, StoreOptions, Write};
use crate::supervisor::{MediaContext, Registry, SipContext, SlotContext};

/// Why the hub could not start. Each renders as one line for the terminal.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The API address cannot be bound.
    #[error(
        "api.listen {addr}: cannot listen: {source}; stop what listens there or set api.listen"
    )]
    ApiBind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store cannot be opened or initialised.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The enrollment in the data directory is unusable.
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    /// The recordings directory cannot be created or written.
    #[error("media.recordings_dir {}: {why}", path.display())]
    Recordings {
        /// The directory.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
}

/// A running hub.
#[derive(Debug)]
pub struct RunningHub {
    api_addr: SocketAddr,
    shutdown: CancellationToken,
    registry: Arc<Registry>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningHub {
    /// Where the local API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The hub's slots.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Asks the hub to stop and waits until the store is closed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.done.await;
    }

    /// Waits until the hub stops (after its shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Starts the hub described by `config`; cancelling `shutdown` stops it.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<RunningHub, StartError> {
    validate(&config, "config")?;
    crate::config::slot_numbers_checked(&config)?;
    let listener = TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| StartError::ApiBind {
            addr: config.api.listen,
            source,
        })?;
    let api_addr = listener
        .local_addr()
        .map_err(|source| StartError::ApiBind {
            addr: config.api.listen,
            source,
        })?;

    // A broken enrollment refuses the start before the store is touched.
    let identity = crate::sync::identity::load(&config.hub.data_dir)?;
    let metrics = Arc::new(Metrics::default());
    let options = StoreOptions {
        data_dir: config.hub.data_dir.clone(),
        batch_max: config.store.batch_max,
        synchronous: config.store.synchronous,
    };
    let store = Store::open(&options, metrics.clone())?;
    // A configuration revision the control plane pushed wins over the file's [[slots]].
    let applied = crate::store::desired::load_applied(store.db_path())?;
    let (slots, revision) = crate::sync::config::startup_slots(&config, applied)?;
    store
        .handle()
        .write(Write::UpsertSlots(crate::sync::config::slot_rows(&slots)))
        .await?;

    let media = MediaContext::from_config(&config)?;
    let recordings_dir = media.recordings_dir().to_owned();
    let outcomes = tokio::task::spawn_blocking(move || prepare_recordings(&recordings_dir))
        .await
        .map_err(|e| StartError::Recordings {
            path: media.recordings_dir().to_owned(),
            why: format!("the start-up repair stopped: {e}"),
        })??;
    for outcome in &outcomes {
        log_repair(outcome);
        metrics.recordings_repair.count(outcome);
    }
    tracing::info!(dir = %media.recordings_dir().display(), checked = outcomes.len(), "recordings directory ready");

    let registry = Arc::new(Registry::with_slots(slots));
    let config_status = Arc::new(crate::sync::config::ConfigStatus::new(revision));
    let components = std::iter::once("store".to_owned()).chain(
        registry
            .iter()
            .filter(|c| c.config.enabled)
            .map(|c| format!("slot {}", c.id())),
    );
    let readiness = Arc::new(Readiness::new(components));
    readiness.report("store");

    // The SIP endpoint outlives the slots: they unregister while it still runs.
    let sip_stop = CancellationToken::new();
    let sip = match &config.sip {
        Some(section) => {
            // A SIP port conflict is reported like a bad field: it names sip.listen.
            let ua = crate::sip::SipUa::bind_with_metrics(
                section.into(),
                sip_stop.clone(),
                metrics.sip.clone(),
            )
            .await
            .map_err(|e| crate::config::ConfigError::Invalid {
                origin: "config".into(),
                field: "sip.listen".into(),
                value: format!("\"{}\"", section.listen),
                why: e.to_string(),
            })?;
            Some(SipContext {
                ua,
                file_passwords: Arc::new(config.sip_passwords.clone()),
                incoming_destination: section.incoming_destination.clone(),
            })
        }
        None => None,
    };
    let ctx = SlotContext {
        store: store.handle(),
        metrics: metrics.clone(),
        timing: config.supervisor.clone(),
        devices: crate::device::DeviceEnv::new(&config.modems, metrics.clone()),
        sip,
        media,
    };
    // Sync with the control plane when this hub is enrolled; the hub works
    // the same without it.
    let sync_status = Arc::new(crate::sync::client::SyncStatus::default());
    let sync = match identity {
        Some(identity) => {
            if identity.enrollment.hub_id != config.hub.id {
                tracing::warn!(configured = %config.hub.id, enrolled = %identity.enrollment.hub_id, "hub.id differs from the enrolled hub id; the control plane knows this hub by the enrolled one");
            }
            tracing::info!(control_plane = %identity.enrollment.control_plane, "syncing with the control plane");
            Some(crate::sync::client::spawn(
                identity,
                store.handle(),
                store.db_path().to_owned(),
                registry.clone(),
                Some(Arc::new(crate::sync::config::ConfigApplier::new(
                    config.clone(),
                    registry.clone(),
                    store.db_path().to_owned(),
                    config_status.clone(),
                ))),
                sync_status.clone(),
                shutdown.clone(),
            ))
        }
        None => {
            tracing::info!("not enrolled with a control plane: running standalone (hubd enroll)");
            None
        }
    };
    registry.start(&ctx, &readiness, &shutdown);
    drop(ctx);

    let app = router(ApiState {
        hub_id: config.hub.id.clone(),
        registry: registry.clone(),
        metrics,
        readiness,
        sync: sync.is_some().then(|| sync_status.clone()),
        config: config_status,
    });
    let api_shutdown = shutdown.clone();
    let api = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { api_shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "local API stopped");
        }
    });
    tracing::info!(hub = %config.hub.id, api = %format!("http://{api_addr}"), slots = registry.iter().count(), "hubd started");

    let stop = shutdown.clone();
    let slots = registry.clone();
    let done = tokio::spawn(async move {
        stop.cancelled().await;
        slots.join_all().await;
        let _ = api.await;
        if let Some(sync) = sync {
            let _ = sync.await;
        }
        // Slots a configuration change started during shutdown.
        slots.join_all().await;
        sip_stop.cancel();
        store.close().await;
        tracing::info!("hubd stopped");
    });
    Ok(RunningHub {
        api_addr,
        shutdown,
        registry,
        done,
    })
}

/// Creates the recordings directory (0750) if missing, checks it can be
/// written, and repairs the recordings a crash interrupted.
fn prepare_recordings(dir: &Path) -> Result<Vec<RepairOutcome>, StartError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let error = |why: String| StartError::Recordings {
        path: dir.to_owned(),
        why,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|e| {
            error(format!(
                "cannot create it: {e}; fix the path or its parent's permissions"
            ))
        })?;
    if !dir.is_dir() {
        return Err(error("is not a directory".into()));
    }
    let probe = dir.join(".hubd-write-check");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| error(format!("not writable ({e}); fix its owner or permissions")))?;
    Ok(crate::media::recording::repair_dir(dir))
}

/// One log line per recording the start-up repair touched or could not.
fn log_repair(outcome: &RepairOutcome) {
    match outcome {
        RepairOutcome::Complete { .. } => {}
        RepairOutcome::Repaired {
            path,
            duration_ms,
            dropped_bytes,
        } => tracing::warn!(
            path = %path.display(),
            kept_ms = duration_ms,
            dropped_bytes,
            "interrupted recording repaired"
        ),
        RepairOutcome::Broken {
            path,
            moved_to,
            error,
        } => tracing::error!(
            path = %path.display(),
            moved_to = %moved_to.display(),
            %error,
            "unrecoverable recording set aside"
        ),
        RepairOutcome::Failed { path, error } => tracing::error!(
            path = %path.display(),
            %error,
            "recording could not be checked; left in place"
        ),
    }
}
