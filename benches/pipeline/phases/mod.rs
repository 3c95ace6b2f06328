//! The phases of a run, one module each, in the order `main` runs them: each is a
//! method of [`Bench`](crate::harness::Bench) that measures one system (or the
//! database) once and returns what it measured, printing progress as it goes.

pub mod batch_ingest;
pub mod drain;
pub mod enriched_ingest;
pub mod post_event;
pub mod stats;
pub mod variety;
pub mod visibility;
pub mod visits;
