#!/usr/bin/env bash
# Prepares a fresh Debian machine to build and run Analytics Desk: system packages,
# the Rust toolchain check, and SecantusDB's secantusd-rs (the local database) in a
# cache dir outside the clone. Safe to run any number of times.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# Build tools for our crates and for WiredTiger (inside secantusd-rs).
# socat and openssl: the TLS test puts a TLS terminator in front of the test database.
"$here/apt-install.sh" build-essential pkg-config cmake curl ca-certificates socat openssl
# libcap2-bin (setcap, getcap) and util-linux (setpriv): the port helper's tests give it
# cap_net_bind_service and run it as `nobody` (tests/port_helper.rs).
"$here/apt-install.sh" libcap2-bin util-linux

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi

"$here/install-secantus.sh" >/dev/null

# The enrichment data sets (country, referrers), read by the API at start.
"$here/install-data-sets.sh" >/dev/null
