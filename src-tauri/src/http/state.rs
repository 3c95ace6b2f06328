//! What every route shares ([`ApiState`]), and how `/health` asks about this
//! process's worker without knowing the engine ([`WorkerProbe`]).

use std::sync::Arc;

use utoipa::ToSchema;

use super::access::ApiToken;
use super::host_check::HostPolicy;
use crate::config::Config;
use crate::ingest::Ingest;
use crate::storage::Store;
use crate::telemetry::counters::PipelineCounters;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The database.
    pub store: Store,
    /// This process's metrics: events received, refused and queued, HTTP latency
    /// (and the worker's, when it runs in this process).
    pub counters: Arc<PipelineCounters>,
    /// Who may read the stats and metrics (`API_TOKEN`).
    pub token: Arc<ApiToken>,
    /// Under which `Host` names the stats and metrics may be read (`PUBLIC_HOSTS`).
    pub hosts: Arc<HostPolicy>,
    /// Takes events into the queue.
    pub ingest: Ingest,
    /// How this process's worker is doing, for `GET /health`.
    pub worker: WorkerProbe,
}

impl ApiState {
    /// The state over `store` under `config`'s rules (`API_TOKEN`,
    /// `ALLOWED_SITES`, `TRUSTED_PROXIES`), starting its queue writer on the
    /// current runtime.
    pub fn new(store: Store, counters: Arc<PipelineCounters>, config: &Config) -> ApiState {
        let ingest = Ingest::new(&store, counters.clone(), config);
        let token = Arc::new(ApiToken::from_config(config));
        let hosts = Arc::new(HostPolicy::from_config(config));
        ApiState { store, counters, token, hosts, ingest, worker: WorkerProbe::not_in_this_process() }
    }

    /// The same state, with `/health` asking `worker` about this process's worker.
    pub fn with_worker(self, worker: WorkerProbe) -> ApiState {
        ApiState { worker, ..self }
    }
}

/// The state of this process's worker, as `GET /health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, ToSchema)]
pub enum WorkerHealth {
    /// Moving batches.
    #[serde(rename = "running")]
    Running,
    /// Connecting to the database.
    #[serde(rename = "starting")]
    Starting,
    /// Stopped after running in this process.
    #[serde(rename = "stopped")]
    Stopped,
    /// Could not start, or stopped by itself (see the logs).
    #[serde(rename = "failed")]
    Failed,
    /// Never started in this process: workers run elsewhere (`analytics-service api`).
    #[serde(rename = "not in this process")]
    NotInThisProcess,
}

/// Asks whoever runs the worker how it is doing, so that the API needs no
/// knowledge of the engine. Cheap to clone.
#[derive(Clone)]
pub struct WorkerProbe(Arc<dyn Fn() -> WorkerHealth + Send + Sync>);

impl WorkerProbe {
    /// A probe calling `health`.
    pub fn new(health: impl Fn() -> WorkerHealth + Send + Sync + 'static) -> WorkerProbe {
        WorkerProbe(Arc::new(health))
    }

    /// The probe of a process that runs no worker.
    pub fn not_in_this_process() -> WorkerProbe {
        WorkerProbe::new(|| WorkerHealth::NotInThisProcess)
    }

    /// The worker's state now.
    pub fn health(&self) -> WorkerHealth {
        (self.0)()
    }
}

impl std::fmt::Debug for WorkerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WorkerProbe").field(&self.health()).finish()
    }
}
