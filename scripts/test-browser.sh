#!/usr/bin/env bash
# The tracker script in a real browser (tests/browser/): installs Debian's
# chromium and Node.js if missing and the test's npm packages (playwright-core,
# mongodb; locked), builds analytics-service, then runs node's test runner. The
# test starts its own secantusd-rs and service on free ports.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
command -v node >/dev/null 2>&1 || "$here/apt-install.sh" nodejs
command -v npm >/dev/null 2>&1 || "$here/apt-install.sh" npm
"$here/apt-install.sh" chromium
secantus="$("$here/install-secantus.sh")"
cd "$here/.."
cargo build --locked --bin analytics-service
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
SERVICE_BINARY="$CARGO_TARGET_DIR/debug/analytics-service" SECANTUSD_BIN="$secantus" CHROMIUM=/usr/bin/chromium \
  node --test --test-reporter=spec tests/browser/
