#!/usr/bin/env bash
# The product's promise, end to end (issue #16): builds the .deb (a debug build,
# faster), installs it with dpkg, then as a fresh NON-ROOT user, under Xvfb and
# D-Bus with WebDriver, launches the INSTALLED app (tests/package/): Start on port
# 1000, a page on localhost with the <script> tag sends a page view that the window
# shows, closing the window keeps the API up, quitting stops it and the database.
# Last, reinstalling keeps the data, `dpkg -r` removes the app and leaves the
# user's data, and purging says what it leaves. Needs root (dpkg,
# useradd); run after scripts/test-browser.sh (it reuses its playwright-core).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
# It installs a package and creates a user: root, or through sudo.
[ "$(id -u)" -eq 0 ] || exec sudo --preserve-env=ANALYTICS_DESK_CACHE,CARGO_TARGET_DIR,PATH bash "$0" "$@"
"$here/apt-install.sh" libcap2-bin dbus-daemon dbus-bin passwd util-linux procps
cd "$here/.."

deb="$(PROFILE=debug "$here/package.sh")"
echo "Installing $deb" >&2
dpkg -r analytics-desk >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$deb" >&2

# A normal user with a fresh home, as on a new machine.
user=analytics-desk-e2e
# Whatever happens, leave no user, process or package behind (a failed run too),
# so the next run starts fresh.
remove_user() {
  if id "$user" >/dev/null 2>&1; then
    pkill -KILL -u "$user" >/dev/null 2>&1 || true
    for _ in $(seq 50); do pgrep -u "$user" >/dev/null 2>&1 || break; sleep 0.1; done
    userdel -r "$user" >/dev/null 2>&1 || true
  fi
}
work=""
cleanup() {
  remove_user
  dpkg --purge analytics-desk >/dev/null 2>&1 || true
  [ -z "$work" ] || rm -rf "$work"
}
trap cleanup EXIT
remove_user
useradd --create-home --shell /bin/bash "$user"
home="$(getent passwd "$user" | cut -d: -f6)"

# What the user runs must be readable by them: the test files, the WebDriver
# bridge and playwright-core, copied out of this clone (which may sit under /root).
work="$(mktemp -d)"
mkdir -p "$work/tests/browser/node_modules" "$work/bin" "$work/screenshots"
cp -r tests/package tests/e2e tests/common "$work/tests/"
cp -r tests/browser/node_modules/playwright-core "$work/tests/browser/node_modules/"
cp "$ANALYTICS_DESK_CACHE/tauri-driver/bin/tauri-driver" "$work/bin/"
chmod -R a+rX "$work" && chown "$user" "$work/screenshots"

# Another user ran a tray app first: tray-icon's default image dir is theirs.
# The app must neither depend on it nor fail (it did: "tray icon error: Permission denied").
mkdir -p /tmp/tray-icon && chown root:root /tmp/tray-icon && chmod 755 /tmp/tray-icon

status=0
runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" LANG=C.UTF-8 \
  APP_BINARY=/usr/bin/analytics-desk TAURI_DRIVER="$work/bin/tauri-driver" CHROMIUM=/usr/bin/chromium \
  SCREENSHOT_DIR="$work/screenshots" \
  bash -c "cd '$work' && dbus-run-session -- node --test --test-reporter=spec --test-concurrency=1 tests/package/" || status=$?
mkdir -p "$CARGO_TARGET_DIR/package-screenshots" && cp "$work"/screenshots/*.png "$CARGO_TARGET_DIR/package-screenshots/" 2>/dev/null || true
[ "$status" -eq 0 ] || { echo "the installed app's test failed" >&2; exit "$status"; }

# An upgrade (here: the same .deb again) keeps the user's data and the helper's capability.
dpkg -i "$deb" >&2
[ -d "$home/.local/share/analytics-desk" ] || { echo "the user's data was lost by reinstalling" >&2; exit 1; }
getcap /usr/bin/analytics-bind-port | grep -q cap_net_bind_service || { echo "reinstalling lost the helper's capability" >&2; exit 1; }

# Removing the package keeps the user's data (dpkg never touches home directories);
# purging says what it leaves.
dpkg -r analytics-desk >&2
[ ! -e /usr/bin/analytics-desk ] || { echo "dpkg -r left /usr/bin/analytics-desk" >&2; exit 1; }
[ -d "$home/.local/share/analytics-desk" ] || { echo "the user's data was not kept after dpkg -r" >&2; exit 1; }
[ -s "$home/.config/analytics-desk/settings.json" ] || { echo "the user's settings were not kept after dpkg -r" >&2; exit 1; }
purge_said="$(dpkg --purge analytics-desk 2>&1)"
grep -q "local/share/analytics-desk" <<<"$purge_said" || { echo "purge did not say what it leaves: $purge_said" >&2; exit 1; }
[ -d "$home/.local/share/analytics-desk" ] || { echo "purge removed the user's data" >&2; exit 1; }
echo "package test passed: installed, used as $user on port 1000, removed; the user's data kept" >&2
