//! Desktop: the Tauri app's side of things. [`controller`] holds the logic
//! (tested without a window); `shell` (feature `desktop`) wires it to Tauri:
//! managed state, commands, the `pipeline` and `log` events, and quitting cleanly.

pub mod controller;
#[cfg(feature = "desktop")]
mod shell;

#[cfg(feature = "desktop")]
pub use shell::run;
