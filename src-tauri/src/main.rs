//! `analytics-desk`: the desktop app. Everything happens in the library's
//! `desktop` module; this is only the entry point.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    analytics_desk::desktop::run();
}
