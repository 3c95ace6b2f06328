//! The two fixes the window offers when Start fails because a port below 1024
//! needs a privilege (the snapshot's `port_error`): **Allow port N** runs the one
//! privileged step, `pkexec setcap cap_net_bind_service=+ep <helper>`, on the
//! port helper `analytics-bind-port`, then retries Start; **Use port 8000
//! instead** saves `PORT=8000` and retries. The Tauri commands only forward here.

use std::path::Path;

use tracing::{info, warn};

use crate::desktop::controller::{Controller, Part};
use crate::http::port_helper::HELPER_NAME;

/// The port "Use port 8000 instead" switches to.
pub const FALLBACK_PORT: u16 = 8000;

/// The program that asks for the password and runs the privileged step
/// (Debian's `pkexec` package); a parameter of [`allow_port`] so tests run a stand-in.
pub const PKEXEC: &str = "pkexec";

/// The capability the helper needs, as `setcap` writes it.
const CAPABILITY: &str = "cap_net_bind_service=+ep";

/// The arguments given to `pkexec`: `setcap cap_net_bind_service=+ep <helper>`.
pub fn setcap_arguments(helper: &Path) -> Vec<String> {
    vec!["setcap".into(), CAPABILITY.into(), helper.display().to_string()]
}

/// Why the privileged step did not happen, in words for a person.
#[derive(Debug, thiserror::Error)]
pub enum AllowError {
    /// No helper beside the app (a build without it).
    #[error(
        "the port helper is not installed at {0}: reinstall the package, or build it (cargo build --bin analytics-bind-port); \
         or use port 8000 instead"
    )]
    NoHelper(String),
    /// `pkexec` itself is missing.
    #[error(
        "cannot ask for permission: {program} is not installed (install the pkexec package), \
         or run once in a terminal: sudo setcap {CAPABILITY} {helper}"
    )]
    NoPkexec {
        /// The program tried.
        program: String,
        /// The helper, for the command to run by hand.
        helper: String,
    },
    /// The user closed or refused the password dialog, or setcap failed.
    #[error(
        "permission was not given ({status}{said}); nothing changed. Try again, or run once in a terminal: \
         sudo setcap {CAPABILITY} {helper}"
    )]
    Refused {
        /// How the program ended.
        status: String,
        /// What it said, if anything.
        said: String,
        /// The helper, for the command to run by hand.
        helper: String,
    },
}

/// "Allow port N": gives the port helper its capability through `program`
/// ([`PKEXEC`] in the app), then starts the service again. The error says what
/// to do; it is also kept as the snapshot's last error.
pub async fn allow_port(controller: &Controller, program: &Path) -> Result<(), String> {
    let helper = controller.port_helper().ok_or_else(|| AllowError::NoHelper(HELPER_NAME.into()).to_string())?;
    grant_capability(program, &helper).await.map_err(|error| {
        warn!(%error, "the port helper was not given its capability");
        error.to_string()
    })?;
    info!(helper = %helper.display(), "the port helper was given cap_net_bind_service");
    controller.start(Part::All).await
}

/// Runs `program setcap cap_net_bind_service=+ep <helper>` and waits for it.
pub async fn grant_capability(program: &Path, helper: &Path) -> Result<(), AllowError> {
    let shown = helper.display().to_string();
    if !helper.is_file() {
        return Err(AllowError::NoHelper(shown));
    }
    let output = tokio::process::Command::new(program)
        .args(setcap_arguments(helper))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|_| AllowError::NoPkexec { program: program.display().to_string(), helper: shown.clone() })?;
    if output.status.success() {
        return Ok(());
    }
    // pkexec: 126 when the dialog was closed or the password refused, 127 when not authorised.
    let status = match output.status.code() {
        Some(126) => "the password dialog was closed or refused".to_string(),
        Some(127) => "not authorised".to_string(),
        _ => output.status.to_string(),
    };
    let said = String::from_utf8_lossy(&output.stderr).trim().chars().take(300).collect::<String>();
    let said = if said.is_empty() { said } else { format!(": {said}") };
    Err(AllowError::Refused { status, said, helper: shown })
}

/// "Use port 8000 instead": saves `PORT=port` ([`FALLBACK_PORT`] in the app)
/// through the settings, then starts the service again.
pub async fn use_port(controller: &Controller, port: u16) -> Result<(), String> {
    let mut values = controller.settings_view().await.values;
    values.insert("PORT".into(), port.to_string());
    controller.save_settings(values).await?;
    info!(port, "switched to a port that needs no privilege");
    controller.start(Part::All).await
}
