#!/usr/bin/env bash
# Installs SecantusDB's `secantusd-rs` (a MongoDB-wire server over WiredTiger) once
# into a cache dir outside the clone, and prints its path. Safe to run twice.
# SecantusDB is GPL-2.0: we only ever run it as a separate process.
set -euo pipefail

SECANTUS_VERSION="0.5.3-beta.196"
CACHE_DIR="${ANALYTICS_DESK_CACHE:-$HOME/.cache/analytics-desk}"
ROOT="$CACHE_DIR/secantus-$SECANTUS_VERSION"
BIN="$ROOT/bin/secantusd-rs"

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

# Building WiredTiger needs cmake and a C toolchain.
if ! command -v cmake >/dev/null 2>&1; then
  "$(dirname "$0")/apt-install.sh" cmake build-essential pkg-config >&2
fi

mkdir -p "$ROOT"
echo "Building secantusd-rs $SECANTUS_VERSION into $ROOT (takes ~7 minutes once)..." >&2
cargo install secantus-mdb --version "$SECANTUS_VERSION" \
  --ignore-rust-version --locked --root "$ROOT" \
  --target-dir "$CACHE_DIR/secantus-build" >&2
echo "$BIN"
