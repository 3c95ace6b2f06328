//! Engine: the one start/stop handle. [`Engine`] starts and stops
//! the API and the worker independently, reports their status, the pipeline
//! counters and the queue depth, and reads stats. The headless binary and the
//! desktop app are thin layers over it.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};

use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::{Mutex, OnceCell};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::Config;
use crate::http::{self, ApiState, BindError, WorkerHealth, WorkerProbe};
use crate::rollups;
use crate::stats::{self, SiteStats, SiteSummary, StatsFilter};
use crate::storage::{Store, StoreError};
use crate::telemetry::counters::{CountersSnapshot, PipelineCounters};
use crate::worker::Worker;

/// The state of one part of the engine (API or worker).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PartStatus {
    /// Not running.
    #[default]
    Stopped,
    /// Connecting to the database or opening its port.
    Starting,
    /// Running; for the API, the address it listens on.
    Running {
        /// Where the API listens (none for the worker).
        addr: Option<SocketAddr>,
    },
    /// Could not start, or stopped by itself.
    Failed {
        /// Why, in words for a person.
        reason: String,
    },
}

/// Everything the engine reports at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineStatus {
    /// The ingestion and stats API.
    pub api: PartStatus,
    /// The queue worker.
    pub worker: PartStatus,
    /// Totals since the engine was created.
    pub counters: CountersSnapshot,
}

/// Why a part could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database is unreachable or refused the start-up work (indexes).
    #[error(transparent)]
    Database(#[from] StoreError),
    /// The API's port could not be opened.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Listening beyond this machine without a token would publish the stats.
    #[error(
        "refusing to listen on {0}: HOST is not a loopback address, so /stats must be protected. \
         Set API_TOKEN to a secret of at least 16 characters, or HOST=127.0.0.1"
    )]
    ExposedWithoutToken(SocketAddr),
}

impl StartError {
    /// The structured case the desktop offers fixes for: a port below 1024 refused.
    pub fn port_error(&self) -> Option<http::port_helper::PortError> {
        match self {
            StartError::Bind(error) => error.port_error(),
            _ => None,
        }
    }
}

/// The engine: one per process, cheap to clone (all clones share the same parts).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    counters: Arc<PipelineCounters>,
    /// Connected (and indexes ensured) on first need; a failed attempt is retried next time.
    store: OnceCell<Store>,
    /// The port helper asked when a port below 1024 is refused (`analytics-bind-port`).
    port_helper: Option<PathBuf>,
    api: Part,
    worker: Part,
}

/// One supervised task: its status (readable at any time) and, while it runs,
/// the means to stop it. Start and stop hold `running`'s lock, so they never interleave.
#[derive(Default)]
struct Part {
    status: Arc<StdMutex<PartStatus>>,
    /// Set by its first start: a part never started here runs elsewhere, if anywhere.
    ever_started: Arc<AtomicBool>,
    running: Mutex<Option<RunningPart>>,
}

struct RunningPart {
    addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Engine {
    /// An engine with nothing started.
    pub fn new(config: Config) -> Engine {
        Engine::with_counters(config, Arc::default())
    }

    /// An engine adding to existing counters (the desktop app keeps its totals
    /// when new settings replace the engine).
    pub fn with_counters(config: Config, counters: Arc<PipelineCounters>) -> Engine {
        Engine::with_port_helper(config, counters, http::port_helper::beside_current_exe())
    }

    /// An engine asking the port helper at `port_helper` (instead of the one
    /// beside this program) when a port below 1024 is refused.
    pub fn with_port_helper(config: Config, counters: Arc<PipelineCounters>, port_helper: Option<PathBuf>) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                config,
                counters,
                store: OnceCell::new(),
                port_helper,
                api: Part::default(),
                worker: Part::default(),
            }),
        }
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The database, connected and indexed on first use.
    pub async fn store(&self) -> Result<&Store, StoreError> {
        self.inner
            .store
            .get_or_try_init(|| async {
                let store = Store::connect(&self.inner.config).await?;
                // Each stage that owns collections ensures its indexes.
                store.ensure_indexes().await?;
                rollups::ensure_indexes(store.database()).await?;
                crate::ingest::anonymous_id::ensure_indexes(store.database()).await?;
                info!(database = %self.inner.config.database, url = %self.inner.config.masked_mongo_url(), "connected to the database");
                Ok(store)
            })
            .await
    }

    /// The database if a connection was already made (never connects).
    pub fn connected_store(&self) -> Option<&Store> {
        self.inner.store.get()
    }

    /// The counters this engine adds to.
    pub fn counters(&self) -> &Arc<PipelineCounters> {
        &self.inner.counters
    }

    /// Starts the API and returns the address it listens on (the running
    /// address if it was already started).
    pub async fn start_api(&self) -> Result<SocketAddr, StartError> {
        let part = &self.inner.api;
        let mut running = part.running.lock().await;
        if let Some(current) = running.as_ref().filter(|r| !r.task.is_finished()) {
            return Ok(current.addr.expect("a running API has an address"));
        }
        part.set(PartStatus::Starting);
        let config = &self.inner.config;
        if config.is_exposed() && config.api_token.is_none() {
            let error = StartError::ExposedWithoutToken(config.listen_addr());
            part.set(PartStatus::Failed { reason: error.to_string() });
            return Err(error);
        }
        // The port first: a port problem is reported at once, database or not.
        let opened = async {
            let helper = self.inner.port_helper.as_deref();
            let listener = http::bind_with_helper(self.inner.config.listen_addr(), helper).await?;
            let addr = listener.local_addr().map_err(|e| BindError::from_io(self.inner.config.listen_addr(), e))?;
            let store = self.store().await?.clone();
            Ok::<_, StartError>((store, listener, addr))
        };
        let (store, listener, addr) =
            opened.await.inspect_err(|e| part.set(PartStatus::Failed { reason: e.to_string() }))?;

        let state =
            ApiState::new(store, self.inner.counters.clone(), &self.inner.config).with_worker(self.worker_probe());
        let limits = http::ApiLimits::from_config(&self.inner.config);
        let router = http::router_with_limits(state, limits.clone());
        let shutdown = CancellationToken::new();
        let serving = http::serve_with(listener, router, limits, shutdown.clone());
        let task = part.spawn("API", async move { serving.await.map_err(|e| format!("the API stopped: {e}")) });
        info!("API listening on http://{addr}");
        part.set(PartStatus::Running { addr: Some(addr) });
        *running = Some(RunningPart { addr: Some(addr), shutdown, task });
        Ok(addr)
    }

    /// What the API's `/health` reports about this engine's worker.
    fn worker_probe(&self) -> WorkerProbe {
        let status = self.inner.worker.status.clone();
        let ever_started = self.inner.worker.ever_started.clone();
        WorkerProbe::new(move || match &*status.lock().expect("status lock") {
            PartStatus::Running { .. } => WorkerHealth::Running,
            PartStatus::Starting => WorkerHealth::Starting,
            PartStatus::Failed { .. } => WorkerHealth::Failed,
            PartStatus::Stopped if ever_started.load(Ordering::Relaxed) => WorkerHealth::Stopped,
            PartStatus::Stopped => WorkerHealth::NotInThisProcess,
        })
    }

    /// Stops the API: no new connections, requests in flight are finished.
    pub async fn stop_api(&self) {
        self.inner.api.stop().await;
    }

    /// Starts the worker (no-op if it runs).
    pub async fn start_worker(&self) -> Result<(), StartError> {
        let part = &self.inner.worker;
        let mut running = part.running.lock().await;
        if running.as_ref().is_some_and(|r| !r.task.is_finished()) {
            return Ok(());
        }
        part.set(PartStatus::Starting);
        part.ever_started.store(true, Ordering::Relaxed);
        let store = self.store().await.inspect_err(|e| part.set(PartStatus::Failed { reason: e.to_string() }))?.clone();
        let config = &self.inner.config;
        let worker = Worker::new(store, config.batch_size, config.poll_interval, self.inner.counters.clone())
            .with_retention(config.retention_days);
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = part.spawn("worker", async move {
            worker.run(token).await;
            Ok(())
        });
        part.set(PartStatus::Running { addr: None });
        *running = Some(RunningPart { addr: None, shutdown, task });
        Ok(())
    }

    /// Stops the worker after the batch in progress, if any, is finished.
    pub async fn stop_worker(&self) {
        self.inner.worker.stop().await;
    }

    /// Stops the API first (so nothing new arrives), then the worker.
    pub async fn shutdown(&self) {
        self.stop_api().await;
        self.stop_worker().await;
    }

    /// Status of both parts and the counters.
    pub fn status(&self) -> EngineStatus {
        EngineStatus {
            api: self.inner.api.status(),
            worker: self.inner.worker.status(),
            counters: self.inner.counters.snapshot(),
        }
    }

    /// Events waiting in the queue.
    pub async fn queue_depth(&self) -> Result<u64, StoreError> {
        self.store().await?.queue_depth().await
    }

    /// Every site with processed events, most events first.
    pub async fn sites(&self) -> Result<Vec<SiteSummary>, StoreError> {
        stats::sites(self.store().await?).await
    }

    /// A site's stats, read directly from the database (the API need not run).
    pub async fn site_stats(&self, site_id: &str) -> Result<SiteStats, StoreError> {
        stats::site_stats(self.store().await?, &StatsFilter::site(site_id)).await
    }
}

impl Part {
    fn status(&self) -> PartStatus {
        self.status.lock().expect("status lock").clone()
    }

    fn set(&self, status: PartStatus) {
        *self.status.lock().expect("status lock") = status;
    }

    /// Runs `work` as a task whose failure or panic is recorded as `Failed`.
    fn spawn(
        &self,
        name: &'static str,
        work: impl Future<Output = Result<(), String>> + Send + 'static,
    ) -> JoinHandle<()> {
        let status = self.status.clone();
        tokio::spawn(async move {
            let outcome = AssertUnwindSafe(work).catch_unwind().await;
            let reason = match outcome {
                Ok(Ok(())) => return,
                Ok(Err(reason)) => reason,
                Err(_) => format!("the {name} crashed (see the log)"),
            };
            error!(part = name, %reason, "stopped unexpectedly");
            *status.lock().expect("status lock") = PartStatus::Failed { reason };
        })
    }

    async fn stop(&self) {
        let mut running = self.running.lock().await;
        if let Some(part) = running.take() {
            part.shutdown.cancel();
            let _ = part.task.await;
        }
        self.set(PartStatus::Stopped);
    }
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM: the signals that ask the
/// headless service and the desktop app to stop gracefully.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("cannot listen for SIGTERM");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
