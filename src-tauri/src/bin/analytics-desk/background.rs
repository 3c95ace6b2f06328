//! The shell's part of living in the background: the tray icon (built from the
//! library's [`TrayMenu`], refreshed every few seconds), the window's close
//! (hide, tell once, or quit: decided by [`background::on_close_requested`]), the
//! login item (`tauri-plugin-autostart`) and starting the service at launch.
//! Decisions live in `analytics_desk::desktop`; this only carries them out.

use std::sync::Arc;
use std::time::Duration;

use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Emitter, Manager, State, Window, WindowEvent, Wry};
use tauri_plugin_autostart::ManagerExt;
use tracing::{info, warn};

use analytics_desk::desktop::background::{self, CloseAction};
use analytics_desk::desktop::controller::{Controller, Part};
use analytics_desk::desktop::preferences::Preferences;
use analytics_desk::desktop::tray_menu::{STATUS_ID, TrayAction, TrayMenu};

/// How often the tray's status line is refreshed from the controller's snapshot.
const TRAY_REFRESH: Duration = Duration::from_secs(3);

/// The event the window listens to for the first-close notice (ui/js/background-notice.js).
const NOTICE_EVENT: &str = "background-notice";

type Shared<'a> = State<'a, Arc<Controller>>;

/// The tray menu's items, kept to update their text and enabled state.
struct TrayItems {
    status: MenuItem<Wry>,
    actions: Vec<(TrayAction, MenuItem<Wry>)>,
}

/// Builds the tray icon and starts refreshing it. Without a tray host (a bare
/// X server) the icon is simply not shown; the app works the same. `icon_dir`
/// is where the icon's image is written for the tray host to read: a directory
/// of this user's, since the default (`/tmp/tray-icon`) belongs to whichever user
/// ran a tray app first, and every other user's then fails (measured: "tray icon
/// error: Permission denied").
pub fn install_tray(app: &AppHandle, controller: Arc<Controller>, icon_dir: &std::path::Path) -> tauri::Result<()> {
    let status = MenuItem::with_id(app, STATUS_ID, "Stopped", false, None::<&str>)?;
    let actions = TrayAction::ALL
        .into_iter()
        .map(|action| {
            MenuItem::with_id(app, action.id(), action.label(), true, None::<&str>).map(|item| (action, item))
        })
        .collect::<tauri::Result<Vec<_>>>()?;
    let separator = PredefinedMenuItem::separator(app)?;
    let mut entries: Vec<&dyn tauri::menu::IsMenuItem<Wry>> = vec![&status, &separator];
    entries.extend(actions.iter().map(|(_, item)| item as &dyn tauri::menu::IsMenuItem<Wry>));
    let menu = Menu::with_items(app, &entries)?;
    let mut builder = TrayIconBuilder::with_id("main")
        .menu(&menu)
        .show_menu_on_left_click(true)
        .tooltip("Analytics Desk")
        .temp_dir_path(icon_dir)
        .on_menu_event(|app, event| {
            if let Some(action) = TrayAction::from_id(&event.id().0) {
                run_action(app, action);
            }
        });
    if let Some(icon) = app.default_window_icon() {
        builder = builder.icon(icon.clone());
    }
    let tray = builder.build(app)?;
    let items = TrayItems { status, actions };
    tauri::async_runtime::spawn(async move {
        let mut every = tokio::time::interval(TRAY_REFRESH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut shown: Option<TrayMenu> = None;
        loop {
            every.tick().await;
            let menu = TrayMenu::from_snapshot(&controller.snapshot().await);
            if shown.as_ref() != Some(&menu) {
                apply(&items, &menu);
                let _ = tray.set_tooltip(Some(menu.tooltip()));
                shown = Some(menu);
            }
        }
    });
    Ok(())
}

/// Shows `menu` in the tray's items.
fn apply(items: &TrayItems, menu: &TrayMenu) {
    let _ = items.status.set_text(&menu.status);
    for item in &menu.items {
        if let Some((_, native)) = items.actions.iter().find(|(action, _)| *action == item.action) {
            let _ = native.set_enabled(item.enabled);
        }
    }
}

/// Carries out a tray action (also reached through the `tray_action` command).
pub fn run_action(app: &AppHandle, action: TrayAction) {
    info!(action = action.id(), "tray action");
    let controller = app.state::<Arc<Controller>>().inner().clone();
    match action {
        TrayAction::Start => {
            tauri::async_runtime::spawn(async move {
                // The error is the snapshot's last error, shown in the window and the tray.
                let _ = controller.start(Part::All).await;
            });
        }
        TrayAction::Stop => {
            tauri::async_runtime::spawn(async move { controller.stop(Part::All).await });
        }
        TrayAction::Open => show_window(app),
        // Through RunEvent::Exit: the batch in flight is finished, the database stopped.
        TrayAction::Quit => app.exit(0),
    }
}

/// Shows, unminimizes and focuses the main window.
pub fn show_window(app: &AppHandle) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
}

/// The window's close button: hides it (keeping the service) or lets it close.
pub fn on_window_event(window: &Window, event: &WindowEvent) {
    let WindowEvent::CloseRequested { api, .. } = event else { return };
    let controller = window.state::<Arc<Controller>>();
    match background::on_close_requested(&controller) {
        CloseAction::Quit => {}
        CloseAction::Hide => {
            api.prevent_close();
            let _ = window.hide();
        }
        CloseAction::NoticeThenHide => {
            api.prevent_close();
            let _ = window.emit(NOTICE_EVENT, ());
        }
    }
}

/// At launch: starts the service when the user asked for it (`start_service_on_open`).
pub fn start_if_asked(controller: Arc<Controller>) {
    tauri::async_runtime::spawn(async move {
        if let Err(error) = background::start_if_asked(&controller).await {
            warn!(%error, "the service did not start as the app opened");
        }
    });
}

/// Writes or removes the login item so it follows `wanted`, before the
/// preferences are saved: if that fails, nothing is saved.
pub fn sync_login_item(app: &AppHandle, saved: &Preferences, wanted: &Preferences) -> Result<(), String> {
    let Some(enable) = background::login_item_change(saved, wanted) else { return Ok(()) };
    let autostart = app.autolaunch();
    let result = if enable { autostart.enable() } else { autostart.disable() };
    result.map_err(|error| {
        let verb = if enable { "turn on" } else { "turn off" };
        format!("Cannot {verb} start on login (start_on_login): {error}")
    })
}

/// The window's "Keep running in the background" answer to the first-close
/// notice: records that the user was told and hides the window.
#[tauri::command]
pub fn hide_to_background(app: AppHandle, controller: Shared<'_>) -> Result<(), String> {
    background::notice_acknowledged(&controller)?;
    if let Some(window) = app.get_webview_window("main") {
        window.hide().map_err(|e| format!("cannot hide the window: {e}"))?;
    }
    Ok(())
}

/// Quits the app as the tray's Quit does (the notice's "Quit" button, tests).
#[tauri::command]
pub fn quit_app(app: AppHandle) {
    run_action(&app, TrayAction::Quit);
}

/// A tray menu item's action by its id (`start`, `stop`, `open`, `quit`): the
/// same code the tray runs, reachable where there is no tray host (Xvfb, tests).
#[tauri::command]
pub fn tray_action(app: AppHandle, id: String) -> Result<(), String> {
    let action =
        TrayAction::from_id(&id).ok_or_else(|| format!("unknown tray action {id:?}: use start, stop, open or quit"))?;
    run_action(&app, action);
    Ok(())
}

/// The tray menu as it stands now (status line, enabled actions), for tests and
/// for desktops without a tray host.
#[tauri::command]
pub async fn tray_menu(controller: Shared<'_>) -> Result<serde_json::Value, String> {
    let menu = TrayMenu::from_snapshot(&controller.snapshot().await);
    let items: Vec<_> = menu
        .items
        .iter()
        .map(|item| serde_json::json!({ "id": item.action.id(), "label": item.label, "enabled": item.enabled }))
        .collect();
    Ok(serde_json::json!({ "status": menu.status, "items": items }))
}
