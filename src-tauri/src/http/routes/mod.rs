//! The routes, one file per group; [`crate::http`] gathers them into one table.

pub mod breakdown;
pub mod exclude_me;
pub mod ingest;
pub mod operations;
pub mod sites;
pub mod stats;
pub mod tracker;
