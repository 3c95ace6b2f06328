//! Desktop: what the desktop app does, free of Tauri so that it is tested like
//! the rest of the engine. [`controller`] starts and stops the parts (launching
//! the local database first when needed), applies saved settings and builds the
//! snapshot the window shows; [`preferences`] holds how the app lives on the
//! machine (background, login, first run); [`port_access`] the fixes offered
//! when a port below 1024 is refused. The Tauri shell itself (windows, commands,
//! events) is the `analytics-desk` binary's (`src-tauri/src/bin/analytics-desk/`),
//! which only forwards to this module.

pub mod controller;
pub mod port_access;
pub mod preferences;
