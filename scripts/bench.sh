#!/usr/bin/env bash
# Runs the side-by-side benchmark of issue #4 (benches/pipeline/): our service
# against the original Node design (the seed), on one secantusd-rs, in one run.
# Installs what it needs (wrk, Node.js), prepares the seed in the cache dir (never
# in the clone), then runs `cargo bench --bench pipeline`. The table is printed and
# written to $CARGO_TARGET_DIR/bench-results.md.
#
#   scripts/bench.sh                 # full run (3 rounds, 10 s of wrk, stats up to 1M events)
#   BENCH_QUICK=1 scripts/bench.sh   # smoke run (1 round, 3 s, 10k events)
#
# Knobs (environment): BENCH_ROUNDS, BENCH_SECONDS, BENCH_STATS_SIZES (e.g. 10k,100k,1M),
# BENCH_QUICK, BENCH_LOG (RUST_LOG of our processes, e.g. warn,analytics_desk=debug for the
# worker's per-batch step times), SEED_DIR (default ../shared/peers/seed-node), WRK_SCRIPT (default
# ../shared/tools/post_event.lua), both relative to the repo root; CARGO_TARGET_DIR.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
source "$here/env.sh"
cd "$root"

command -v wrk >/dev/null 2>&1 || "$here/apt-install.sh" wrk
command -v node >/dev/null 2>&1 || "$here/apt-install.sh" nodejs
command -v npm >/dev/null 2>&1 || "$here/apt-install.sh" npm

seed_source="$(cd "${SEED_DIR:-../shared/peers/seed-node}" && pwd)"
seed_app="$ANALYTICS_DESK_CACHE/seed-node"
mkdir -p "$seed_app"
cp -r "$seed_source"/. "$seed_app"/
chmod -R u+w "$seed_app"
# npm install once, and again only when the seed's package.json changes.
if [ ! -d "$seed_app/node_modules" ] || ! cmp -s "$seed_app/package.json" "$seed_app/.installed-package.json"; then
  (cd "$seed_app" && npm install --no-audit --no-fund --loglevel=error)
  cp "$seed_app/package.json" "$seed_app/.installed-package.json"
fi

secantusd="$("$here/install-secantus.sh" | tail -n 1)"
wrk_script="${WRK_SCRIPT:-../shared/tools/post_event.lua}"
wrk_script="$(cd "$(dirname "$wrk_script")" && pwd)/$(basename "$wrk_script")"

SECANTUSD="$secantusd" SEED_APP_DIR="$seed_app" WRK_SCRIPT="$wrk_script" \
  cargo bench --locked --bench pipeline
