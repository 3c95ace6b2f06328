//! Analytics Desk's engine: local web analytics on MongoDB.
//!
//! Events arrive at the [`api`] (`POST /event`), are validated by [`ingest`] and
//! stored in a queue collection; the [`worker`] moves them in batches into
//! `events`, from which [`stats`] computes each site's exact figures. [`store`]
//! owns the database, [`config`] the settings, [`counters`] the metrics (running totals, latencies),
//! and [`supervisor`] the one handle ([`Engine`]) that starts and stops it all,
//! used by the headless `analytics-service` binary and the desktop app alike.
//! Browsers send events with the [`tracker`] script (`GET /script.js`); events
//! without a `user_id` get an anonymous one from [`visitor`]. The API documents
//! itself ([`openapi`], `GET /openapi.json`); [`export`] makes a site's CSV.
//! The desktop app adds [`settings`] (its saved configuration), [`local_db`]
//! (the database it launches when none answers) and [`desktop`] (its logic, and
//! with the `desktop` feature its Tauri shell).

pub mod api;
pub mod config;
pub mod counters;
pub mod desktop;
pub mod export;
pub mod ingest;
pub mod local_db;
pub mod openapi;
pub mod queue_writer;
pub mod retention;
pub mod rollups;
pub mod settings;
pub mod stats;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod tracker;
pub mod visitor;
pub mod worker;

pub use config::Config;
pub use supervisor::{Engine, EngineStatus, PartStatus, StartError};
