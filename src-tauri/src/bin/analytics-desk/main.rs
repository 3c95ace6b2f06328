//! `analytics-desk`: the desktop app, a Tauri shell over the engine's
//! [`desktop`](analytics_desk::desktop) logic. [`shell`] registers the
//! controller as managed state and forwards the window's commands to it; the
//! engine library itself knows nothing of Tauri.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod background;
mod shell;

fn main() {
    shell::run();
}
