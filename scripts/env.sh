# Sourced by the scripts: where builds and the database binary are cached, outside
# the clone, so that reruns (and CI) do not rebuild from scratch.
export ANALYTICS_DESK_CACHE="${ANALYTICS_DESK_CACHE:-$HOME/.cache/analytics-desk}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ANALYTICS_DESK_CACHE/target}"
export PATH="$HOME/.cargo/bin:$PATH"
