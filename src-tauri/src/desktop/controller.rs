//! The desktop app's logic, free of Tauri so that it is tested like the engine:
//! start and stop the parts (launching the managed local database first when
//! needed), apply saved settings by restarting what runs, and build the
//! once-a-second [`Snapshot`] the window shows. The Tauri shell only forwards.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::desktop_settings::{self as settings, FieldErrors, Settings, Values};
use crate::desktop::api_token;
use crate::desktop::preferences::{self, Preferences};
use crate::engine::{Engine, PartStatus};
use crate::http::port_helper::PortError;
use crate::storage::local_db::{self, DatabaseState, DatabaseStatus, ManagedDatabase};
use crate::telemetry::counters::{CountersSnapshot, PipelineCounters};
use crate::worker::quarantine;

/// How long the snapshot waits for the database's counts before showing none.
const SNAPSHOT_QUERY_TIMEOUT: Duration = Duration::from_millis(800);

/// Which part of the service an action is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// API and worker.
    All,
    /// The API only.
    Api,
    /// The worker only.
    Worker,
}

impl Part {
    fn has_api(self) -> bool {
        matches!(self, Part::All | Part::Api)
    }
    fn has_worker(self) -> bool {
        matches!(self, Part::All | Part::Worker)
    }
}

/// Where the app keeps its files.
#[derive(Debug, Clone)]
pub struct DesktopPaths {
    /// The settings file (OS config dir).
    pub settings_file: PathBuf,
    /// The managed database's data (OS data dir).
    pub database_dir: PathBuf,
    /// Where a `.env` seeding the first run may be (the working directory).
    pub seed_dir: PathBuf,
    /// Where sidecar programs (`secantusd-rs`) sit: beside the app's executable.
    pub sidecar_dir: Option<PathBuf>,
    /// Where "Export CSV" saves files: the user's Downloads dir (else the data dir).
    pub export_dir: PathBuf,
}

/// Everything the window shows about the pipeline, pushed once a second.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The API's status.
    pub api: PartStatus,
    /// The worker's status.
    pub worker: PartStatus,
    /// The batch size the running worker moves (none when it does not run).
    pub worker_batch_size: Option<u32>,
    /// Events waiting in the queue (none when the database cannot be read).
    pub queue_depth: Option<u64>,
    /// Queue entries the database refused to move, set aside for a requeue
    /// (none when the database cannot be read).
    pub quarantined: Option<u64>,
    /// Processed events in the database.
    pub total_events: Option<u64>,
    /// Events acknowledged by the API per second, over the last tick.
    pub ingested_per_sec: f64,
    /// Events moved by the worker per second, over the last tick.
    pub processed_per_sec: f64,
    /// Events acknowledged since the app started.
    pub events_queued: u64,
    /// Events moved since the app started.
    pub events_processed: u64,
    /// The database: external, or the managed one's state.
    pub database: DatabaseStatus,
    /// Where sites should send events, when the API runs.
    pub api_url: Option<String>,
    /// The last error of an action, in plain words.
    pub last_error: Option<String>,
    /// Set when the last start failed on a port below 1024 (the window offers its fixes).
    pub port_error: Option<PortError>,
    /// When this was taken (ms since the epoch).
    pub at: i64,
}

/// The answer to saving settings.
#[derive(Debug, Clone, Serialize)]
pub struct SaveOutcome {
    /// The saved values, password masked.
    pub values: Values,
    /// The parts restarted to apply them.
    pub restarted: Vec<&'static str>,
    /// The `API_TOKEN` generated because `HOST` exposes the API and none was
    /// set: shown this once, to copy (masked afterwards).
    pub generated_token: Option<String>,
}

/// The settings as the UI edits them.
#[derive(Debug, Clone, Serialize)]
pub struct SettingsView {
    /// Current values, password masked.
    pub values: Values,
    /// The settings file.
    pub path: String,
    /// The data folder (the managed database's files), for **Open folder**.
    pub data_dir: String,
}

/// The desktop app's state and actions; shared by all commands (`&self`).
pub struct Controller {
    paths: DesktopPaths,
    counters: Arc<PipelineCounters>,
    /// The engine for the current settings; replaced when settings change.
    engine: RwLock<Engine>,
    database: Mutex<DatabaseStatus>,
    last_error: Mutex<Option<String>>,
    port_error: Mutex<Option<PortError>>,
    rates: Mutex<Rates>,
    /// Serializes actions (start, stop, save, quit); readers never wait on it.
    control: tokio::sync::Mutex<Control>,
}

struct Control {
    settings: Settings,
    managed: Option<ManagedDatabase>,
}

#[derive(Default)]
struct Rates {
    last: Option<(Instant, CountersSnapshot)>,
    ingested_per_sec: f64,
    processed_per_sec: f64,
}

impl Controller {
    /// Loads the settings (or seeds them on first run) and prepares an engine;
    /// nothing is started. Damaged or invalid saved settings fall back to the
    /// defaults, and the reason is shown as the last error.
    pub fn new(paths: DesktopPaths) -> Controller {
        let (settings, problem) = match Settings::load_or_seed(&paths.settings_file, &paths.seed_dir) {
            Ok(settings) => (settings, None),
            Err(error) => {
                warn!(%error, "using default settings");
                (Settings::from_config(&crate::Config::default()), Some(format!("{error}; using the defaults")))
            }
        };
        let counters = Arc::new(PipelineCounters::default());
        let config = settings.config();
        Controller {
            database: Mutex::new(DatabaseStatus::initial(&config)),
            engine: RwLock::new(Engine::with_port_helper(config, counters.clone(), port_helper(&paths))),
            counters,
            paths,
            last_error: Mutex::new(problem),
            port_error: Mutex::default(),
            rates: Mutex::default(),
            control: tokio::sync::Mutex::new(Control { settings, managed: None }),
        }
    }

    /// The engine for the current settings.
    pub fn engine(&self) -> Engine {
        self.engine.read().expect("engine lock").clone()
    }

    /// The engine with its database reachable (launching the managed one if
    /// needed), for the actions other files of `desktop` add to the controller.
    pub async fn engine_with_database(&self) -> Result<Engine, String> {
        self.ensure_database(&mut *self.control.lock().await).await?;
        Ok(self.engine())
    }

    /// Starts `part`, first launching the managed database if `MONGO_URL` is
    /// local and nothing answers. The error, in plain words, is also kept as the last error.
    pub async fn start(&self, part: Part) -> Result<(), String> {
        let mut control = self.control.lock().await;
        let result = self.start_locked(&mut control, part).await;
        *self.last_error.lock().expect("error lock") = result.as_ref().err().cloned();
        result
    }

    async fn start_locked(&self, control: &mut Control, part: Part) -> Result<(), String> {
        *self.port_error.lock().expect("error lock") = None;
        self.ensure_database(control).await?;
        let engine = self.engine();
        if part.has_api()
            && let Err(error) = engine.start_api().await
        {
            *self.port_error.lock().expect("error lock") = error.port_error();
            return Err(error.to_string());
        }
        if part.has_worker() {
            engine.start_worker().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Stops `part` (the worker after its current batch). The managed database
    /// keeps running for browsing stats until the app quits.
    pub async fn stop(&self, part: Part) {
        let _control = self.control.lock().await;
        let engine = self.engine();
        if part.has_api() {
            engine.stop_api().await;
        }
        if part.has_worker() {
            engine.stop_worker().await;
        }
    }

    /// Stops everything, the managed database last. Called when the app quits.
    pub async fn shutdown(&self) {
        let mut control = self.control.lock().await;
        self.engine().shutdown().await;
        if let Some(database) = control.managed.take() {
            database.stop().await;
            self.database.lock().expect("db lock").state = DatabaseState::Stopped;
        }
    }

    /// Launches the managed database if the URL is local and nothing answers.
    async fn ensure_database(&self, control: &mut Control) -> Result<(), String> {
        let config = self.engine().config().clone();
        let Some(port) = local_db::local_port(&config) else {
            return Ok(()); // the user's own remote database
        };
        if control.managed.as_ref().is_some_and(|db| db.port == port) {
            return Ok(());
        }
        if local_db::answers(port).await {
            // Someone else's server on this machine: use it, don't manage it.
            self.database.lock().expect("db lock").state = DatabaseState::External;
            return Ok(());
        }
        let mut status = DatabaseStatus::initial(&config);
        let Some((kind, program)) = local_db::find_server(self.paths.sidecar_dir.as_deref()) else {
            let error = local_db::LocalDbError::NoServerProgram { url: config.masked_mongo_url() }.to_string();
            status.state = DatabaseState::Failed;
            status.reason = Some(error.clone());
            *self.database.lock().expect("db lock") = status;
            return Err(error);
        };
        status.state = DatabaseState::Starting;
        status.kind = Some(kind);
        status.data_path = Some(self.paths.database_dir.display().to_string());
        *self.database.lock().expect("db lock") = status.clone();

        match ManagedDatabase::start(kind, &program, port, &self.paths.database_dir).await {
            Ok(database) => {
                status.state = DatabaseState::Running;
                status.version = Some(database.version.clone());
                *self.database.lock().expect("db lock") = status;
                control.managed = Some(database);
                Ok(())
            }
            Err(error) => {
                status.state = DatabaseState::Failed;
                status.reason = Some(error.to_string());
                *self.database.lock().expect("db lock") = status;
                Err(error.to_string())
            }
        }
    }

    /// The port helper the engines ask (see [`port_helper`]).
    pub fn port_helper(&self) -> Option<PathBuf> {
        port_helper(&self.paths)
    }

    /// The settings for the UI, password masked.
    pub async fn settings_view(&self) -> SettingsView {
        let control = self.control.lock().await;
        let (values, path) = (control.settings.masked_values(), self.paths.settings_file.display().to_string());
        SettingsView { values, path, data_dir: self.data_dir().display().to_string() }
    }

    /// The app's data folder: where the managed database keeps its files.
    pub fn data_dir(&self) -> PathBuf {
        self.paths.database_dir.parent().unwrap_or(&self.paths.database_dir).to_path_buf()
    }

    /// Checks values as typed; an error per invalid field.
    pub async fn validate(&self, values: Values) -> FieldErrors {
        let control = self.control.lock().await;
        settings::validate(&control.settings.unmask(values))
    }

    /// Validates and saves settings (a token generated when `HOST` exposes the
    /// API without one); if they changed, replaces the engine and restarts the
    /// parts that were running so the change applies now.
    pub async fn save_settings(&self, values: Values) -> Result<SaveOutcome, String> {
        let mut control = self.control.lock().await;
        let mut values = control.settings.unmask(values);
        let generated_token = api_token::fill_for_exposed_host(&mut values);
        let settings = Settings::new(&values).map_err(|e| e.to_string())?;
        settings.save(&self.paths.settings_file).map_err(|e| e.to_string())?;
        let values = settings.masked_values();
        if settings == control.settings {
            return Ok(SaveOutcome { values, restarted: Vec::new(), generated_token });
        }

        let old = self.engine();
        let status = old.status();
        let was_running = |s: &PartStatus| matches!(s, PartStatus::Running { .. } | PartStatus::Starting);
        let part = match (was_running(&status.api), was_running(&status.worker)) {
            (true, true) => Some(Part::All),
            (true, false) => Some(Part::Api),
            (false, true) => Some(Part::Worker),
            (false, false) => None,
        };
        old.shutdown().await;

        let config = settings.config();
        info!(?config, "settings saved");
        if control.managed.as_ref().is_some_and(|db| local_db::local_port(&config) != Some(db.port)) {
            control.managed.take().expect("checked").stop().await;
        }
        let mut database = DatabaseStatus::initial(&config);
        if let Some(managed) = &control.managed {
            database.state = DatabaseState::Running;
            database.kind = Some(managed.kind);
            database.version = Some(managed.version.clone());
            database.data_path = Some(managed.data_path.display().to_string());
        }
        *self.database.lock().expect("db lock") = database;
        let helper = port_helper(&self.paths);
        *self.engine.write().expect("engine lock") = Engine::with_port_helper(config, self.counters.clone(), helper);
        control.settings = settings;

        let Some(part) = part else { return Ok(SaveOutcome { values, restarted: Vec::new(), generated_token }) };
        let restarted = match part {
            Part::All => vec!["api", "worker"],
            Part::Api => vec!["api"],
            Part::Worker => vec!["worker"],
        };
        let result = self.start_locked(&mut control, part).await;
        *self.last_error.lock().expect("error lock") = result.as_ref().err().cloned();
        result.map_err(|e| format!("Settings saved, but the service could not restart: {e}"))?;
        Ok(SaveOutcome { values, restarted, generated_token })
    }

    /// The app's preferences (the defaults before the first save).
    pub fn preferences(&self) -> Result<Preferences, String> {
        Preferences::load(&preferences::file_beside(&self.paths.settings_file)).map_err(|e| e.to_string())
    }

    /// Saves the app's preferences; they never restart the service.
    pub fn set_preferences(&self, preferences: &Preferences) -> Result<(), String> {
        preferences.save(&preferences::file_beside(&self.paths.settings_file)).map_err(|e| e.to_string())
    }

    /// Where "Export CSV" and "Back up…" save files.
    pub fn export_dir(&self) -> &Path {
        &self.paths.export_dir
    }

    /// Updates the per-second rates from the counters, then takes a snapshot.
    /// Called by the once-a-second ticker only.
    pub async fn tick(&self) -> Snapshot {
        let now = Instant::now();
        let counters = self.counters.snapshot();
        {
            let mut rates = self.rates.lock().expect("rates lock");
            if let Some((then, before)) = rates.last {
                let seconds = now.duration_since(then).as_secs_f64().max(1e-3);
                rates.ingested_per_sec = counters.events_queued.saturating_sub(before.events_queued) as f64 / seconds;
                rates.processed_per_sec =
                    counters.events_processed.saturating_sub(before.events_processed) as f64 / seconds;
            }
            rates.last = Some((now, counters));
        }
        self.snapshot().await
    }

    /// The current snapshot (rates as of the last tick). Reads the database only
    /// if the engine is already connected, and never waits long for it.
    pub async fn snapshot(&self) -> Snapshot {
        let engine = self.engine();
        let status = engine.status();
        let (queue_depth, total_events, quarantined) = match engine.connected_store() {
            None => (None, None, None),
            Some(store) => {
                let depth = tokio::time::timeout(SNAPSHOT_QUERY_TIMEOUT, store.queue_depth());
                let total = tokio::time::timeout(SNAPSHOT_QUERY_TIMEOUT, store.events().estimated_document_count());
                let quarantined = tokio::time::timeout(SNAPSHOT_QUERY_TIMEOUT, quarantine::count(store));
                let (depth, total, quarantined) = tokio::join!(depth, total, quarantined);
                let read = |answer: Result<Result<u64, _>, _>| answer.ok().and_then(Result::ok);
                (read(depth), total.ok().and_then(Result::ok), read(quarantined))
            }
        };
        let api_url = match &status.api {
            // Loopback or every address: `localhost`, the name sites are told to use
            // (and the one cookies such as /exclude-me's are set for).
            PartStatus::Running { addr: Some(addr) } if addr.ip().is_unspecified() || is_localhost(addr.ip()) => {
                Some(format!("http://localhost:{}", addr.port()))
            }
            PartStatus::Running { addr: Some(addr) } => Some(format!("http://{addr}")),
            _ => None,
        };
        let worker_batch_size =
            matches!(status.worker, PartStatus::Running { .. }).then_some(engine.config().batch_size);
        let rates = self.rates.lock().expect("rates lock");
        Snapshot {
            api: status.api,
            worker: status.worker,
            worker_batch_size,
            queue_depth,
            quarantined,
            total_events,
            ingested_per_sec: rates.ingested_per_sec,
            processed_per_sec: rates.processed_per_sec,
            events_queued: status.counters.events_queued,
            events_processed: status.counters.events_processed,
            database: self.database.lock().expect("db lock").clone(),
            api_url,
            last_error: self.last_error.lock().expect("error lock").clone(),
            port_error: self.port_error.lock().expect("error lock").clone(),
            at: mongodb::bson::DateTime::now().timestamp_millis(),
        }
    }
}

/// The port helper `analytics-bind-port` beside the app, where the package
/// installs it and cargo builds it.
fn port_helper(paths: &DesktopPaths) -> Option<PathBuf> {
    paths.sidecar_dir.as_ref().map(|dir| dir.join(crate::http::port_helper::HELPER_NAME))
}

/// Whether `ip` is what `localhost` names (127.0.0.1 or ::1).
fn is_localhost(ip: std::net::IpAddr) -> bool {
    ip == std::net::Ipv4Addr::LOCALHOST || ip == std::net::Ipv6Addr::LOCALHOST
}
