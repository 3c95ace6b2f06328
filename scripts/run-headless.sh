#!/usr/bin/env bash
# Sets up the machine, builds the service and runs it (API and worker, `all`),
# reading the environment and ./.env. When MONGO_URL points at this machine and no
# database answers there, starts SecantusDB's secantusd-rs for you first, with its
# data in ~/.local/share/analytics-desk/db. Extra arguments replace `all`
# (e.g. `scripts/run-headless.sh api`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/env.sh"
"$here/setup.sh"
cd "$here/.."
cargo build --release --locked --bin analytics-service
service="$CARGO_TARGET_DIR/release/analytics-service"

# MONGO_URL as the service will see it: environment first, then .env, then the default.
url="${MONGO_URL:-}"
if [ -z "$url" ] && [ -f .env ]; then
  url="$(sed -n 's/^[[:space:]]*MONGO_URL[[:space:]]*=[[:space:]]*//p' .env | tail -n 1 | tr -d "\"'")"
fi
url="${url:-mongodb://localhost:27017/analytics_db}"

# host:port of a single-host mongodb:// URL on this machine, else nothing.
authority="$(printf '%s' "$url" | sed -n 's|^mongodb://\([^/?]*\).*|\1|p')"
authority="${authority##*@}"
host="${authority%%:*}"; port="${authority##*:}"
[ "$port" = "$authority" ] && port=27017

db_pid=""
if [[ "$authority" != *,* ]] && [[ "$host" =~ ^(localhost|127\.0\.0\.1|\[::1\])$ ]] \
   && ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  data="${XDG_DATA_HOME:-$HOME/.local/share}/analytics-desk/db"
  mkdir -p "$data" && chmod 700 "$data"
  echo "No database answers at $host:$port: starting secantusd-rs there (data in $data)" >&2
  # As the desktop app does (src-tauri/src/storage/local_db.rs): loopback only,
  # our own config (--config turns off the search for a secantusd.toml in the
  # working directory, ~/.secantus/ or /etc/secantus/, which could bind it to
  # 0.0.0.0), run from its data dir, log and config readable by the user only.
  config="$data.secantusd.toml"
  (umask 077 && printf '[server]\nhost = "127.0.0.1"\nenable_test_commands = false\n' >"$config" && : >"$data.log")
  chmod 600 "$config" "$data.log"
  bin="$("$here/install-secantus.sh")"
  (cd "$data" && exec "$bin" --config "$config" --host 127.0.0.1 --port "$port" --storage-path "$data" \
    --cache-size 512M --sync-on-commit >"$data.log" 2>&1) &
  db_pid=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$db_pid" 2>/dev/null || { echo "secantusd-rs failed to start; see $data.log" >&2; exit 1; }
    sleep 0.1
  done
fi

status=0
"$service" "${@:-all}" &
service_pid=$!
trap 'kill -TERM "$service_pid" 2>/dev/null' INT TERM
wait "$service_pid" || status=$?
wait "$service_pid" 2>/dev/null || true
if [ -n "$db_pid" ]; then
  kill -TERM "$db_pid" 2>/dev/null || true
  wait "$db_pid" 2>/dev/null || true
fi
exit "$status"
