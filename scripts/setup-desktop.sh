#!/usr/bin/env bash
# Prepares a fresh Debian machine to build and test the desktop app: everything
# setup.sh does, plus Tauri's system libraries (WebKitGTK), Xvfb and
# WebKitWebDriver for the end-to-end test, tauri-driver, and the secantusd-rs
# sidecar placed where Tauri's bundler expects it. Safe to run any number of times.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
"$here/setup.sh"

"$here/apt-install.sh" libwebkit2gtk-4.1-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev libssl-dev \
  xvfb xauth x11-utils webkit2gtk-driver fonts-dejavu-core

# The app ships secantusd-rs as a sidecar: Tauri wants it at
# src-tauri/binaries/secantusd-rs-<target triple> when building.
triple="$(rustc -vV | sed -n 's/^host: //p')"
mkdir -p "$here/../src-tauri/binaries"
sidecar="$here/../src-tauri/binaries/secantusd-rs-$triple"
secantus="$("$here/install-secantus.sh")"
if ! cmp -s "$secantus" "$sidecar" 2>/dev/null; then
  cp "$secantus" "$sidecar"
fi

# tauri-driver (WebDriver for Tauri apps), for the end-to-end test.
if [ ! -x "$ANALYTICS_DESK_CACHE/tauri-driver/bin/tauri-driver" ]; then
  cargo install tauri-driver --version '^2' --locked --root "$ANALYTICS_DESK_CACHE/tauri-driver" \
    --target-dir "$ANALYTICS_DESK_CACHE/tauri-driver-build"
fi
