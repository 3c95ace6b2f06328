//! Living in the background: what closing the window does (hide it and keep
//! collecting, telling the user the first time, or quit as before), what the app
//! does when it opens (start the service if the user asked for it), and when the
//! login item must be written or removed. The shell only carries these out.

use tracing::{info, warn};

use crate::desktop::controller::{Controller, Part};
use crate::desktop::preferences::Preferences;

/// What closing the window does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    /// `keep_running_in_background` is off: the app quits, as it always did.
    Quit,
    /// The window hides; the service keeps collecting; the tray brings it back.
    Hide,
    /// As `Hide`, but the user has never been told: the window stays open and
    /// says so first; it hides once the user acknowledges ([`notice_acknowledged`]).
    NoticeThenHide,
}

/// What closing the window does under `preferences`.
pub fn close_action(preferences: &Preferences) -> CloseAction {
    match (preferences.keep_running_in_background, preferences.background_notice_shown) {
        (false, _) => CloseAction::Quit,
        (true, true) => CloseAction::Hide,
        (true, false) => CloseAction::NoticeThenHide,
    }
}

/// What closing the window does now. Unreadable preferences count as the
/// defaults (keep collecting), since quitting would silently lose visitors.
pub fn on_close_requested(controller: &Controller) -> CloseAction {
    let preferences = controller.preferences().unwrap_or_else(|error| {
        warn!(%error, "closing the window with the default preferences");
        Preferences::default()
    });
    let action = close_action(&preferences);
    info!(?action, "window close requested");
    action
}

/// Records that the user was told closing the window keeps collecting, so the
/// next close hides at once.
pub fn notice_acknowledged(controller: &Controller) -> Result<(), String> {
    let preferences = controller.preferences()?;
    if preferences.background_notice_shown {
        return Ok(());
    }
    controller.set_preferences(&Preferences { background_notice_shown: true, ..preferences })
}

/// At launch: starts the API and the worker when `start_service_on_open` is on.
/// Answers whether it tried; a failure is the controller's last error, as for Start.
pub async fn start_if_asked(controller: &Controller) -> Result<bool, String> {
    if !controller.preferences()?.start_service_on_open {
        return Ok(false);
    }
    info!("starting the service, as the app opened (start_service_on_open)");
    controller.start(Part::All).await?;
    Ok(true)
}

/// The login item to write (`Some(true)`), remove (`Some(false)`) or leave
/// (`None`) when the preferences go from `saved` to `wanted`. Turning it on
/// again rewrites it, so it points at the app's current executable.
pub fn login_item_change(saved: &Preferences, wanted: &Preferences) -> Option<bool> {
    match (saved.start_on_login, wanted.start_on_login) {
        (_, true) => Some(true),
        (true, false) => Some(false),
        (false, false) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_quits_when_background_is_off_and_tells_the_user_once_when_on() {
        let off = Preferences { keep_running_in_background: false, ..Preferences::default() };
        assert_eq!(close_action(&off), CloseAction::Quit);
        let fresh = Preferences::default();
        assert_eq!(close_action(&fresh), CloseAction::NoticeThenHide, "on by default, not yet told");
        let told = Preferences { background_notice_shown: true, ..fresh };
        assert_eq!(close_action(&told), CloseAction::Hide);
    }

    #[test]
    fn the_login_item_follows_start_on_login() {
        let off = Preferences::default();
        let on = Preferences { start_on_login: true, ..Preferences::default() };
        assert_eq!(login_item_change(&off, &on), Some(true));
        assert_eq!(login_item_change(&on, &off), Some(false));
        assert_eq!(login_item_change(&off, &off), None, "nothing written for a user who never asked");
        assert_eq!(login_item_change(&on, &on), Some(true), "rewritten: the executable may have moved");
    }
}
