#!/usr/bin/env bash
# Sets up the machine for the desktop app and builds it; prints the binary's path.
# PROFILE=release for an optimized build (default: debug, faster to compile).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
"$here/setup-desktop.sh" >&2
cd "$here/.."
profile="${PROFILE:-debug}"
# The port helper beside the app, as the package installs it (tests/e2e/port-access.test.mjs uses it).
flags=(--locked --features desktop --bin analytics-desk --bin analytics-bind-port)
[ "$profile" = release ] && flags+=(--release)
cargo build "${flags[@]}" >&2
echo "$CARGO_TARGET_DIR/$profile/analytics-desk"
