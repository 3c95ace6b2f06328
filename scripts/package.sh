#!/usr/bin/env bash
# Builds the desktop app's Debian package with Tauri's own bundler
# (@tauri-apps/cli from npm, pinned; a .deb needs nothing downloaded at bundle
# time) and prints the .deb's path. The package holds the app, the secantusd-rs
# sidecar, the port helper `analytics-bind-port` (given cap_net_bind_service by
# the postinst, so port 1000 works for a normal user), the enrichment data sets,
# the desktop entry and the icons.
#   PROFILE=debug scripts/package.sh   # a debug build (what CI installs: faster to build)
# Install: sudo apt install ./analytics-desk_*.deb   Remove: sudo apt remove analytics-desk
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
"$here/setup-desktop.sh" >&2
cd "$here/.."

TAURI_CLI_VERSION="2.12.5" # the same minor as the `tauri` crate in Cargo.lock
cli_dir="$ANALYTICS_DESK_CACHE/tauri-cli-$TAURI_CLI_VERSION"
if [ ! -x "$cli_dir/node_modules/.bin/tauri" ]; then
  command -v npm >/dev/null 2>&1 || "$here/apt-install.sh" npm >&2
  mkdir -p "$cli_dir"
  npm install --silent --no-audit --no-fund --prefix "$cli_dir" "@tauri-apps/cli@$TAURI_CLI_VERSION" >&2
fi

profile="${PROFILE:-release}"
tauri_flags=(--bundles deb --features desktop --ci)
[ "$profile" = debug ] && tauri_flags+=(--debug)

# The bundler packages every binary the build makes (the app, analytics-service,
# the port helper analytics-bind-port) into /usr/bin. The data sets are the
# deb's extra files (tauri.conf.json, bundle > linux > deb > files), staged in
# src-tauri/bundle/ (ignored by git).
stage="src-tauri/bundle"
rm -rf "$stage" && mkdir -p "$stage/data-sets"
data="$("$here/install-data-sets.sh")"
cp "$data"/country.mmdb "$data"/country.LICENSE "$data"/referrers.json "$data"/referrers.LICENSE "$stage/data-sets/"

"$cli_dir/node_modules/.bin/tauri" build "${tauri_flags[@]}" -- --locked >&2
# The bundler names the file after the product ("Analytics Desk_0.1.0_amd64.deb");
# Debian's convention is the package's name: analytics-desk_0.1.0_amd64.deb.
out="$CARGO_TARGET_DIR/$profile/bundle/deb"
built="$(ls -t "$out"/*.deb | head -1)"
deb="$out/$(dpkg-deb -f "$built" Package)_$(dpkg-deb -f "$built" Version)_$(dpkg-deb -f "$built" Architecture).deb"
[ "$built" = "$deb" ] || mv -f "$built" "$deb"
contents="$(dpkg-deb -c "$deb")"
for program in analytics-desk analytics-bind-port secantusd-rs; do
  grep -qE "(^| |\./)usr/bin/$program\$" <<<"$contents" || { echo "the .deb lacks /usr/bin/$program" >&2; exit 1; }
done
echo "$deb"
