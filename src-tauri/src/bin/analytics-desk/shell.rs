//! The Tauri shell: registers the [`Controller`] as managed state, exposes its
//! actions as commands, pushes a `pipeline` snapshot every second and each `log`
//! line as events, keeps one instance and the window's size, and on quit stops
//! the service gracefully (the batch in progress is finished) and the managed database.
//! The tray, the window's close and the login item are [`background`]'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tauri::{AppHandle, Emitter, Manager, RunEvent, State};

use crate::background;

use analytics_desk::config::desktop_settings::{FieldErrors, Values};
use analytics_desk::desktop::backup::BackupOutcome;
use analytics_desk::desktop::controller::{Controller, DesktopPaths, Part, SaveOutcome, SettingsView, Snapshot};
use analytics_desk::desktop::first_run::FirstEvent;
use analytics_desk::desktop::port_access;
use analytics_desk::desktop::preferences::Preferences;
use analytics_desk::engine::shutdown_signal;
use analytics_desk::sites::SiteGoals;
use analytics_desk::sites::registry::RegisteredSite;
use analytics_desk::stats::{SiteStats, SiteSummary};
use analytics_desk::telemetry::{self, LogBuffer, LogLine};

type Shared<'a> = State<'a, Arc<Controller>>;

#[tauri::command]
async fn get_snapshot(controller: Shared<'_>) -> Result<Snapshot, String> {
    Ok(controller.snapshot().await)
}

#[tauri::command]
async fn start_service(controller: Shared<'_>, part: Part) -> Result<Snapshot, String> {
    controller.start(part).await?;
    Ok(controller.snapshot().await)
}

#[tauri::command]
async fn stop_service(controller: Shared<'_>, part: Part) -> Result<Snapshot, String> {
    controller.stop(part).await;
    Ok(controller.snapshot().await)
}

#[tauri::command]
async fn get_settings(controller: Shared<'_>) -> Result<SettingsView, String> {
    Ok(controller.settings_view().await)
}

#[tauri::command]
async fn validate_settings(controller: Shared<'_>, values: Values) -> Result<serde_json::Value, String> {
    let errors: FieldErrors = controller.validate(values).await;
    Ok(serde_json::json!({ "errors": errors }))
}

#[tauri::command]
async fn save_settings(controller: Shared<'_>, values: Values) -> Result<SaveOutcome, String> {
    controller.save_settings(values).await
}

#[tauri::command]
async fn list_sites(controller: Shared<'_>) -> Result<Vec<SiteSummary>, String> {
    controller.sites().await
}

#[tauri::command]
async fn site_stats(controller: Shared<'_>, site_id: String) -> Result<SiteStats, String> {
    controller.site_stats(&site_id).await
}

#[tauri::command]
async fn export_site_csv(controller: Shared<'_>, site_id: String) -> Result<String, String> {
    controller.export_site_csv(&site_id).await.map(|path| path.display().to_string())
}

/// A site's goals (the dashboard's goal settings).
#[tauri::command]
async fn site_goals(controller: Shared<'_>, site_id: String) -> Result<SiteGoals, String> {
    controller.site_goals(&site_id).await
}

/// Replaces a site's goals (`goals`: the list of `PUT /sites/{site_id}/goals`).
#[tauri::command]
async fn set_site_goals(
    controller: Shared<'_>,
    site_id: String,
    goals: serde_json::Value,
) -> Result<SiteGoals, String> {
    controller.set_site_goals(&site_id, goals).await
}

/// The "Requeue" button: moves the quarantined entries back into the queue.
#[tauri::command]
async fn requeue_quarantine(controller: Shared<'_>) -> Result<Snapshot, String> {
    controller.requeue_quarantine().await?;
    Ok(controller.snapshot().await)
}

/// The app's preferences (background, login, first run).
#[tauri::command]
fn get_preferences(controller: Shared<'_>) -> Result<Preferences, String> {
    controller.preferences()
}

/// Saves the app's preferences (writing or removing the login item first, so
/// `start_on_login` is only saved once it took effect); answers them as saved.
#[tauri::command]
fn set_preferences(app: AppHandle, controller: Shared<'_>, preferences: Preferences) -> Result<Preferences, String> {
    // A damaged file must not block saving good preferences over it.
    let saved = controller.preferences().unwrap_or_default();
    background::sync_login_item(&app, &saved, &preferences)?;
    controller.set_preferences(&preferences)?;
    Ok(preferences)
}

/// A new random `API_TOKEN` for the Generate / Rotate button (saved with the settings).
#[tauri::command]
fn generate_api_token() -> String {
    analytics_desk::desktop::api_token::generate()
}

/// Shows the data folder in the file manager (the Open folder button); answers its path.
#[tauri::command]
fn open_data_folder(controller: Shared<'_>) -> Result<String, String> {
    let dir = controller.data_dir();
    analytics_desk::desktop::data_folder::open_with(analytics_desk::desktop::data_folder::opener(), &dir)
        .map_err(|e| e.to_string())?;
    Ok(dir.display().to_string())
}

/// The Settings tab's "Back up…": everything to a new file in the export dir.
#[tauri::command]
async fn back_up(controller: Shared<'_>) -> Result<BackupOutcome, String> {
    controller.back_up().await
}

/// The Settings tab's "Restore…": the backup at `path`.
#[tauri::command]
async fn restore_backup(controller: Shared<'_>, path: String) -> Result<BackupOutcome, String> {
    controller.restore_backup(&path).await
}

/// First run: the `site_id` a site's name gives.
#[tauri::command]
fn suggest_site_id(controller: Shared<'_>, name: String) -> Result<String, String> {
    controller.site_id_for_name(&name)
}

/// First run: adds a site by name (`site_id` made from it when absent); idempotent.
#[tauri::command]
async fn add_site(controller: Shared<'_>, name: String, site_id: Option<String>) -> Result<RegisteredSite, String> {
    controller.add_site(&name, site_id.as_deref()).await
}

/// The sites added by name, oldest first.
#[tauri::command]
async fn added_sites(controller: Shared<'_>) -> Result<Vec<RegisteredSite>, String> {
    controller.added_sites().await
}

/// First run: the site's `<script>` tag, from the running API's address.
#[tauri::command]
async fn site_script_tag(controller: Shared<'_>, site_id: String, include_localhost: bool) -> Result<String, String> {
    controller.site_script_tag(&site_id, include_localhost).await
}

/// First run: whether the site's first event arrived (asked once a second).
#[tauri::command]
async fn first_event(controller: Shared<'_>, site_id: String) -> Result<FirstEvent, String> {
    controller.first_event(&site_id).await
}

/// First run: sends one test page view of the site through the running API.
#[tauri::command]
async fn send_test_event(controller: Shared<'_>, site_id: String) -> Result<(), String> {
    controller.send_test_event(&site_id).await
}

/// "Allow port N": `pkexec setcap` on the port helper, then Start again.
#[tauri::command]
async fn allow_privileged_port(controller: Shared<'_>) -> Result<Snapshot, String> {
    port_access::allow_port(&controller, std::path::Path::new(port_access::PKEXEC)).await?;
    Ok(controller.snapshot().await)
}

/// "Use port 8000 instead": saves the port, then Start again.
#[tauri::command]
async fn use_fallback_port(controller: Shared<'_>) -> Result<Snapshot, String> {
    port_access::use_port(&controller, port_access::FALLBACK_PORT).await?;
    Ok(controller.snapshot().await)
}

#[tauri::command]
fn recent_logs(logs: State<'_, Arc<LogBuffer>>) -> Vec<LogLine> {
    logs.recent()
}

/// Runs the desktop app until it quits (the tray's Quit, SIGTERM, or closing
/// the window when it does not keep collecting in the background).
pub fn run() {
    let logs = telemetry::init_with_buffer();
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            // A second launch brings the running window forward (even hidden in the tray) instead.
            background::show_window(app);
        }))
        .plugin(tauri_plugin_window_state::Builder::default().build())
        .plugin(tauri_plugin_autostart::Builder::new().build())
        .on_window_event(background::on_window_event)
        .manage(logs.clone())
        .setup(move |app| {
            let controller = Arc::new(Controller::new(desktop_paths()?));
            app.manage(controller.clone());
            // The tray is a convenience: without it (no tray host, an error) the
            // window and Settings → App's Quit still do everything.
            if let Err(error) = background::install_tray(app.handle(), controller.clone(), &tray_icon_dir()) {
                tracing::warn!(%error, "no tray icon; the window and Settings → App's Quit do what it would");
            }
            background::start_if_asked(controller.clone());
            tauri::async_runtime::spawn(push_snapshots(app.handle().clone(), controller));
            tauri::async_runtime::spawn(push_logs(app.handle().clone(), logs.clone()));
            // SIGTERM / Ctrl-C quit like the tray's Quit: through RunEvent::Exit.
            let handle = app.handle().clone();
            tauri::async_runtime::spawn(async move {
                shutdown_signal().await;
                handle.exit(0);
            });
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            get_snapshot,
            start_service,
            stop_service,
            get_settings,
            validate_settings,
            save_settings,
            list_sites,
            site_stats,
            export_site_csv,
            back_up,
            restore_backup,
            site_goals,
            set_site_goals,
            requeue_quarantine,
            get_preferences,
            set_preferences,
            generate_api_token,
            open_data_folder,
            suggest_site_id,
            add_site,
            added_sites,
            site_script_tag,
            first_event,
            send_test_event,
            allow_privileged_port,
            use_fallback_port,
            background::hide_to_background,
            background::quit_app,
            background::tray_action,
            background::tray_menu,
            recent_logs
        ])
        .build(tauri::generate_context!())
        .expect("cannot build the Analytics Desk window");

    app.run(|app, event| {
        if let RunEvent::Exit = event {
            let controller = app.state::<Arc<Controller>>().inner().clone();
            tauri::async_runtime::block_on(controller.shutdown());
        }
    });
}

/// Where the tray icon's image is written: this user's runtime dir (private,
/// `XDG_RUNTIME_DIR`), else the app's cache dir, never a directory shared by users.
fn tray_icon_dir() -> PathBuf {
    let dirs = directories::ProjectDirs::from("dev", "Analytics Desk", "analytics-desk");
    dirs.map(|dirs| dirs.runtime_dir().unwrap_or(dirs.cache_dir()).join("tray-icon"))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("analytics-desk-tray-{}", std::process::id())))
}

/// Settings in the OS config dir, the managed database in the OS data dir
/// (through `directories`, which follows `XDG_CONFIG_HOME`/`XDG_DATA_HOME` on Linux),
/// exports in the user's Downloads dir (`XDG_DOWNLOAD_DIR`), else in the data dir.
fn desktop_paths() -> Result<DesktopPaths, Box<dyn std::error::Error>> {
    let dirs = directories::ProjectDirs::from("dev", "Analytics Desk", "analytics-desk")
        .ok_or("this system has no home directory for the settings")?;
    let downloads = directories::UserDirs::new().and_then(|user| user.download_dir().map(PathBuf::from));
    Ok(DesktopPaths {
        settings_file: dirs.config_dir().join("settings.json"),
        database_dir: dirs.data_dir().join("db"),
        seed_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        sidecar_dir: std::env::current_exe().ok().and_then(|exe| exe.parent().map(PathBuf::from)),
        export_dir: downloads.unwrap_or_else(|| dirs.data_dir().join("exports")),
    })
}

/// Emits a `pipeline` snapshot every second, so the window never polls.
async fn push_snapshots(app: AppHandle, controller: Arc<Controller>) {
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every_second.tick().await;
        let _ = app.emit("pipeline", controller.tick().await);
    }
}

/// Forwards each new log line as a `log` event.
async fn push_logs(app: AppHandle, logs: Arc<LogBuffer>) {
    let mut lines = logs.subscribe();
    loop {
        match lines.recv().await {
            Ok(line) => {
                let _ = app.emit("log", line);
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
}
