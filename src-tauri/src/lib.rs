//! Analytics Desk's engine: local web analytics on MongoDB, with no knowledge of
//! Tauri. The desktop app (`bin/analytics-desk`) and the headless
//! `analytics-service` are thin layers over it.
//!
//! An event's path through the modules, in order (see `docs/architecture.md`):
//!
//! 1. [`http`]: the axum server; a route parses the request and calls one engine
//!    function (`/event`, `/events`, `/script.js`, `/stats`, `/health`, ...).
//! 2. [`ingest`]: validates the event, checks its site, gives it an anonymous
//!    visitor id when it has none, and group-commits it into the queue collection.
//! 3. [`worker`]: moves queued events into `events` in batches, in transactions
//!    that also update the [`rollups`]; expires old events (retention).
//! 4. [`rollups`]: per-site aggregates kept in step with `events`.
//! 5. [`stats`]: a site's exact figures, read from the rollups (or `events`),
//!    and the CSV export; [`sites`]: a site's settings (its goals).
//!
//! Around them: [`storage`] (the database connection, its errors, the local
//! database process), [`config`] (environment and the desktop's settings),
//! [`telemetry`] (logs and metrics), [`engine`] (the one handle that starts and
//! stops the API and the worker), [`backup`] (every raw event, site and setting
//! in one file, and back) and [`desktop`] (the desktop app's logic).

pub mod backup;
pub mod config;
pub mod desktop;
pub mod engine;
pub mod http;
pub mod ingest;
pub mod rollups;
pub mod sites;
pub mod stats;
pub mod storage;
pub mod telemetry;
pub mod worker;

pub use config::Config;
pub use engine::{Engine, EngineStatus, PartStatus, StartError};
