//! Desktop: what the desktop app does, free of Tauri so that it is tested like
//! the rest of the engine. [`controller`] starts and stops the parts (launching
//! the local database first when needed), applies saved settings and builds the
//! snapshot the window shows; [`site_data`] the sites, stats, goals, exports
//! and backups its tabs read and change; [`preferences`] holds how the app lives on the
//! machine (background, login, first run); [`background`] decides what closing
//! the window and opening the app do; [`tray_menu`] is the tray's menu as data;
//! [`first_run`] the first-run flow
//! (a first site, its script tag, its first event); [`port_access`] the fixes
//! offered when a port below 1024 is refused; [`api_token`] makes
//! `API_TOKEN`s, [`data_folder`] shows the data folder and [`backup`] backs up
//! and restores from the Settings tab. The Tauri shell itself (windows, tray, commands,
//! events) is the `analytics-desk` binary's (`src-tauri/src/bin/analytics-desk/`),
//! which only forwards to this module.

pub mod api_token;
pub mod background;
pub mod backup;
pub mod controller;
pub mod data_folder;
pub mod first_run;
pub mod port_access;
pub mod preferences;
pub mod site_data;
pub mod tray_menu;
