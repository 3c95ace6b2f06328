//! The tray menu as data: its status line (running / stopped / failed, queue
//! depth) made from a [`Snapshot`], which actions are enabled, and the mapping
//! between a menu item's id and its [`TrayAction`]. Kept apart from the shell so
//! that the menu's words and rules are unit-tested; the shell only builds the
//! native menu from [`TrayMenu`] and calls the action it is handed back.

use crate::desktop::controller::Snapshot;
use crate::engine::PartStatus;

/// What a tray menu item does when clicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayAction {
    /// Starts the API and the worker (as the window's Start).
    Start,
    /// Stops the API and the worker (as the window's Stop).
    Stop,
    /// Shows and focuses the window (hidden while the app lives in the background).
    Open,
    /// Quits the app: the batch in flight is finished, the managed database stopped.
    Quit,
}

impl TrayAction {
    /// Every action, in the menu's order.
    pub const ALL: [TrayAction; 4] = [TrayAction::Start, TrayAction::Stop, TrayAction::Open, TrayAction::Quit];

    /// The menu item's id: how a click is mapped back to the action.
    pub fn id(self) -> &'static str {
        match self {
            TrayAction::Start => "start",
            TrayAction::Stop => "stop",
            TrayAction::Open => "open",
            TrayAction::Quit => "quit",
        }
    }

    /// The action of a clicked item's id (none for the status line or an unknown id).
    pub fn from_id(id: &str) -> Option<TrayAction> {
        TrayAction::ALL.into_iter().find(|action| action.id() == id)
    }

    /// The item's label, as a person reads it in the menu.
    pub fn label(self) -> &'static str {
        match self {
            TrayAction::Start => "Start",
            TrayAction::Stop => "Stop",
            TrayAction::Open => "Open Analytics Desk",
            TrayAction::Quit => "Quit",
        }
    }
}

/// How the service stands, summed up for one line of the tray.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceState {
    /// API and worker both run.
    Running,
    /// Some part runs or starts, but not all of it.
    Partial,
    /// Nothing runs.
    Stopped,
    /// A part failed (or the database did); the window says why.
    Failed,
}

/// One item of the tray menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayItem {
    /// What the item does.
    pub action: TrayAction,
    /// Its label.
    pub label: &'static str,
    /// Whether it can be clicked now (Start while everything runs cannot).
    pub enabled: bool,
}

/// The whole tray menu for one moment: a status line (never clickable), then the actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayMenu {
    /// The status line, e.g. "Running · 12 queued".
    pub status: String,
    /// The same, as a state (the shell may use it for the tooltip).
    pub state: ServiceState,
    /// Start, Stop, Open, Quit.
    pub items: Vec<TrayItem>,
}

/// The id of the status line's item: not an action.
pub const STATUS_ID: &str = "status";

impl TrayMenu {
    /// The menu for `snapshot`.
    pub fn from_snapshot(snapshot: &Snapshot) -> TrayMenu {
        let state = service_state(snapshot);
        let word = match state {
            ServiceState::Running => "Running",
            ServiceState::Partial => "Partly running",
            ServiceState::Stopped => "Stopped",
            ServiceState::Failed => "Failed",
        };
        let status = match snapshot.queue_depth {
            Some(depth) => format!("{word} · {depth} queued"),
            None => word.to_string(),
        };
        let all_running = state == ServiceState::Running;
        let any_active = |s: &PartStatus| matches!(s, PartStatus::Running { .. } | PartStatus::Starting);
        let something_runs = any_active(&snapshot.api) || any_active(&snapshot.worker);
        let items = TrayAction::ALL
            .into_iter()
            .map(|action| TrayItem {
                action,
                label: action.label(),
                enabled: match action {
                    TrayAction::Start => !all_running,
                    TrayAction::Stop => something_runs,
                    TrayAction::Open | TrayAction::Quit => true,
                },
            })
            .collect();
        TrayMenu { status, state, items }
    }

    /// The tooltip of the tray icon: the app's name and the status line.
    pub fn tooltip(&self) -> String {
        format!("Analytics Desk — {}", self.status)
    }
}

/// The service's state from the API's and the worker's: a failure wins, then
/// both running, then nothing running.
fn service_state(snapshot: &Snapshot) -> ServiceState {
    let failed = |s: &PartStatus| matches!(s, PartStatus::Failed { .. });
    let running = |s: &PartStatus| matches!(s, PartStatus::Running { .. });
    let stopped = |s: &PartStatus| matches!(s, PartStatus::Stopped);
    if failed(&snapshot.api) || failed(&snapshot.worker) {
        ServiceState::Failed
    } else if running(&snapshot.api) && running(&snapshot.worker) {
        ServiceState::Running
    } else if stopped(&snapshot.api) && stopped(&snapshot.worker) {
        ServiceState::Stopped
    } else {
        ServiceState::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::local_db::DatabaseStatus;

    fn snapshot(api: PartStatus, worker: PartStatus, queue_depth: Option<u64>) -> Snapshot {
        Snapshot {
            api,
            worker,
            worker_batch_size: None,
            queue_depth,
            quarantined: None,
            total_events: None,
            ingested_per_sec: 0.0,
            processed_per_sec: 0.0,
            events_queued: 0,
            events_processed: 0,
            database: DatabaseStatus::initial(&crate::Config::default()),
            api_url: None,
            last_error: None,
            port_error: None,
            at: 0,
        }
    }

    fn running() -> PartStatus {
        PartStatus::Running { addr: None }
    }

    fn enabled(menu: &TrayMenu) -> Vec<TrayAction> {
        menu.items.iter().filter(|item| item.enabled).map(|item| item.action).collect()
    }

    #[test]
    fn stopped_shows_stopped_and_offers_start_not_stop() {
        let menu = TrayMenu::from_snapshot(&snapshot(PartStatus::Stopped, PartStatus::Stopped, None));
        assert_eq!(menu.status, "Stopped");
        assert_eq!(menu.state, ServiceState::Stopped);
        assert_eq!(enabled(&menu), [TrayAction::Start, TrayAction::Open, TrayAction::Quit]);
        assert_eq!(menu.tooltip(), "Analytics Desk — Stopped");
    }

    #[test]
    fn running_shows_the_queue_depth_and_offers_stop_not_start() {
        let menu = TrayMenu::from_snapshot(&snapshot(running(), running(), Some(12)));
        assert_eq!(menu.status, "Running · 12 queued");
        assert_eq!(enabled(&menu), [TrayAction::Stop, TrayAction::Open, TrayAction::Quit]);
    }

    #[test]
    fn one_part_running_offers_both_start_and_stop() {
        let menu = TrayMenu::from_snapshot(&snapshot(running(), PartStatus::Stopped, Some(0)));
        assert_eq!(menu.status, "Partly running · 0 queued");
        assert_eq!(enabled(&menu), [TrayAction::Start, TrayAction::Stop, TrayAction::Open, TrayAction::Quit]);
        let starting = TrayMenu::from_snapshot(&snapshot(PartStatus::Starting, PartStatus::Stopped, None));
        assert_eq!(starting.state, ServiceState::Partial);
    }

    #[test]
    fn a_failed_part_wins_over_a_running_one_and_start_retries() {
        let failed = PartStatus::Failed { reason: "cannot listen on 127.0.0.1:1000".into() };
        let menu = TrayMenu::from_snapshot(&snapshot(failed, running(), Some(3)));
        assert_eq!(menu.status, "Failed · 3 queued");
        assert_eq!(menu.state, ServiceState::Failed);
        assert!(enabled(&menu).contains(&TrayAction::Start), "Start retries after a failure");
        assert!(enabled(&menu).contains(&TrayAction::Stop), "the worker still runs and can be stopped");
    }

    #[test]
    fn every_action_maps_to_its_id_and_back_and_the_status_line_is_no_action() {
        for action in TrayAction::ALL {
            assert_eq!(TrayAction::from_id(action.id()), Some(action));
        }
        assert_eq!(TrayAction::from_id(STATUS_ID), None);
        assert_eq!(TrayAction::from_id("Start"), None, "ids are exact");
        let menu = TrayMenu::from_snapshot(&snapshot(PartStatus::Stopped, PartStatus::Stopped, None));
        let labels: Vec<_> = menu.items.iter().map(|item| item.label).collect();
        assert_eq!(labels, ["Start", "Stop", "Open Analytics Desk", "Quit"]);
    }
}
