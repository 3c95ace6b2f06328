//! Living in the background, through the controller (no window): starting the
//! service when the app opens, the first-close notice recorded once, and the
//! tray's status line following the pipeline.

use std::path::Path;

use analytics_desk::PartStatus;
use analytics_desk::desktop::background::{self, CloseAction};
use analytics_desk::desktop::controller::{Controller, DesktopPaths};
use analytics_desk::desktop::preferences::Preferences;
use analytics_desk::desktop::tray_menu::{ServiceState, TrayAction, TrayMenu};

use crate::common;

fn controller(dir: &Path, port: u16) -> Controller {
    common::write_file(dir, ".env", &format!("PORT={port}\nMONGO_URL={}\nPOLL_MS=20\n", common::fresh_database_url()));
    Controller::new(DesktopPaths {
        settings_file: dir.join("config/settings.json"),
        database_dir: dir.join("data/db"),
        seed_dir: dir.to_path_buf(),
        sidecar_dir: None,
        export_dir: dir.join("Downloads"),
    })
}

#[tokio::test]
async fn the_service_starts_at_launch_only_when_asked_and_the_tray_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let controller = controller(dir.path(), port);

    assert!(!background::start_if_asked(&controller).await.unwrap(), "off by default");
    let stopped = TrayMenu::from_snapshot(&controller.snapshot().await);
    assert_eq!((stopped.state, stopped.status.as_str()), (ServiceState::Stopped, "Stopped"));

    let asked = Preferences { start_service_on_open: true, ..controller.preferences().unwrap() };
    controller.set_preferences(&asked).unwrap();
    assert!(background::start_if_asked(&controller).await.unwrap());
    let snapshot = controller.snapshot().await;
    assert!(matches!(snapshot.api, PartStatus::Running { addr: Some(a) } if a.port() == port));
    let response = reqwest::get(format!("http://127.0.0.1:{port}/health")).await.unwrap();
    assert_eq!(response.status(), 200, "the API answers without anyone clicking Start");

    let running = TrayMenu::from_snapshot(&snapshot);
    assert_eq!(running.status, "Running · 0 queued");
    let enabled: Vec<_> = running.items.iter().filter(|item| item.enabled).map(|item| item.action).collect();
    assert_eq!(enabled, [TrayAction::Stop, TrayAction::Open, TrayAction::Quit]);
    controller.shutdown().await;
    assert_eq!(controller.snapshot().await.api, PartStatus::Stopped);
}

#[tokio::test]
async fn a_start_at_launch_that_fails_is_an_error_kept_for_the_window_and_the_tray() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let controller = controller(dir.path(), taken.local_addr().unwrap().port());
    let asked = Preferences { start_service_on_open: true, ..Preferences::default() };
    controller.set_preferences(&asked).unwrap();

    let error = background::start_if_asked(&controller).await.unwrap_err();
    assert!(error.contains("already in use"), "{error}");
    let snapshot = controller.snapshot().await;
    assert_eq!(snapshot.last_error.as_deref(), Some(error.as_str()));
    assert_eq!(TrayMenu::from_snapshot(&snapshot).state, ServiceState::Failed);
    controller.shutdown().await;
}

#[tokio::test]
async fn the_first_close_tells_the_user_once_and_closing_quits_when_background_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller(dir.path(), common::free_port());
    assert_eq!(background::on_close_requested(&controller), CloseAction::NoticeThenHide);

    background::notice_acknowledged(&controller).unwrap();
    assert!(controller.preferences().unwrap().background_notice_shown, "recorded in the preferences file");
    assert_eq!(background::on_close_requested(&controller), CloseAction::Hide, "told once only");

    let off = Preferences { keep_running_in_background: false, ..controller.preferences().unwrap() };
    controller.set_preferences(&off).unwrap();
    assert_eq!(background::on_close_requested(&controller), CloseAction::Quit);
    background::notice_acknowledged(&controller).unwrap();
    assert_eq!(controller.preferences().unwrap(), off, "acknowledging again changes nothing");
}

#[tokio::test]
async fn damaged_preferences_keep_collecting_on_close_and_refuse_a_start_at_launch_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller(dir.path(), common::free_port());
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    common::write_file(&dir.path().join("config"), "preferences.json", "{not json");
    assert_eq!(background::on_close_requested(&controller), CloseAction::NoticeThenHide);
    let error = background::start_if_asked(&controller).await.unwrap_err();
    assert!(error.contains("preferences.json") && error.contains("damaged"), "{error}");
    assert_eq!(controller.snapshot().await.api, PartStatus::Stopped);
}
