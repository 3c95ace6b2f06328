#!/usr/bin/env bash
# Sets up the machine, builds the desktop app and opens it. Click Start: if
# MONGO_URL points at this machine and no database answers, the app launches its
# own (mongod if installed, else the bundled secantusd-rs). For servers without a
# display, see scripts/run-headless.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
app="$(PROFILE="${PROFILE:-release}" "$here/build-desktop.sh")"
exec "$app" "$@"
