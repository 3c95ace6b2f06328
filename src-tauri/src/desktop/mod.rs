//! Desktop: what the desktop app does, free of Tauri so that it is tested like
//! the rest of the engine. [`controller`] starts and stops the parts (launching
//! the local database first when needed), applies saved settings and builds the
//! snapshot the window shows; [`preferences`] holds how the app lives on the
//! machine (background, login, first run); [`background`] decides what closing
//! the window and opening the app do; [`tray_menu`] is the tray's menu as data.
//! The Tauri shell itself (windows, tray, commands, events) is the `analytics-desk` binary's (`src-tauri/src/bin/analytics-desk/`),
//! which only forwards to this module.

pub mod background;
pub mod controller;
pub mod preferences;
pub mod tray_menu;
