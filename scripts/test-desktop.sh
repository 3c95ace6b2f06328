#!/usr/bin/env bash
# The desktop app's end-to-end test: builds the app, then drives the real window
# under Xvfb through tauri-driver and WebKitWebDriver (tests/e2e/). Screenshots of
# each view land in target/e2e-screenshots/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
command -v node >/dev/null 2>&1 || "$here/apt-install.sh" nodejs
# A D-Bus session, as on a desktop: the app's one-instance check runs over it.
"$here/apt-install.sh" dbus-daemon dbus-bin
app="$("$here/build-desktop.sh")"
cd "$here/.."
APP_BINARY="$app" TAURI_DRIVER="$ANALYTICS_DESK_CACHE/tauri-driver/bin/tauri-driver" \
  dbus-run-session -- node --test --test-reporter=spec --test-concurrency=1 tests/e2e/
