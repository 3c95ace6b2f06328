//! Build script: only the desktop app needs one (Tauri embeds `ui/` and reads
//! `tauri.conf.json`); the engine and `analytics-service` build without it.

fn main() {
    #[cfg(feature = "desktop")]
    tauri_build::build();
}
