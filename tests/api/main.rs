//! Integration tests of the engine and its HTTP API against a real MongoDB-wire
//! server (see `tests/common`): one database per test, so they run in parallel.

mod background;
mod backup;
mod batch;
mod breakdown;
#[path = "../common/mod.rs"]
mod common;
mod desktop;
mod desktop_backup;
mod desktop_settings;
mod engine;
mod enrich;
mod event;
mod exclusion;
mod export;
mod first_run;
mod goals;
mod group_commit;
mod health;
mod helpers;
mod host_check;
mod limits;
mod liveness;
mod local_database;
mod metrics;
mod openapi;
mod poison;
mod port_access;
mod ranks;
mod rebuild_fence;
mod retention;
mod retries;
mod rollups;
mod security;
mod slow_bodies;
mod stats;
mod tls;
mod tracker;
mod traffic;
mod variety;
mod visitor;
mod visits;
mod worker;
