#!/usr/bin/env bash
# Sets up the machine and runs every test against a real MongoDB-wire server
# (MONGO_TEST_URL if set, otherwise a SecantusDB server the tests start and stop):
# the engine's unit and integration tests, the tracker script in headless
# Chromium, then the desktop app end to end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
"$here/setup-desktop.sh"
cd "$here/.."
cargo test --locked "$@"
"$here/test-browser.sh"
"$here/test-desktop.sh"
"$here/test-package.sh"
