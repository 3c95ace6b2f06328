//! The HTTP load: wrk run with the benchmark's threads and connections against one
//! URL and Lua script, and what it reports, parsed.

use std::path::Path;
use std::process::Command;

use crate::processes::die_with_harness;

/// wrk's threads (`-t`).
pub const WRK_THREADS: u32 = 2;
/// wrk's connections (`-c`): also how many requests may be in flight when it stops.
pub const WRK_CONNECTIONS: u64 = 32;

/// What wrk reported.
pub struct WrkRun {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub seconds: f64,
    pub non_2xx: u64,
    /// Requests wrk gave up on (2 s): possibly stored, never counted as completed.
    pub timeouts: u64,
    /// wrk's "Socket errors" line, if any.
    pub socket_errors: Option<String>,
}

/// Runs wrk for `seconds` against `url` with `script`, and returns what it reported.
pub async fn run(url: &str, script: &Path, seconds: u64) -> WrkRun {
    let mut command = Command::new("wrk");
    command
        .arg(format!("-t{WRK_THREADS}"))
        .arg(format!("-c{WRK_CONNECTIONS}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(script)
        .arg(url);
    die_with_harness(&mut command);
    let output = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run wrk (is it installed? scripts/bench.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&output.stderr));
    parse_wrk(&text)
}

/// Reads wrk's summary: requests, duration, rate, non-2xx answers and socket errors.
fn parse_wrk(output: &str) -> WrkRun {
    let field_after = |label: &str| {
        output.lines().find_map(|line| line.trim().strip_prefix(label).map(|rest| rest.trim().to_string()))
    };
    // "  24567 requests in 10.01s, 3.45MB read"
    let summary = output.lines().find(|line| line.contains(" requests in ")).expect("wrk's summary line");
    let mut words = summary.split_whitespace();
    let requests = words.next().and_then(|n| n.parse().ok()).expect("wrk's request count");
    let duration = words.nth(2).expect("wrk's duration").trim_end_matches(',');
    let seconds = parse_wrk_duration(duration);
    let requests_per_sec = field_after("Requests/sec:").and_then(|n| n.parse().ok()).expect("wrk's Requests/sec");
    let non_2xx = field_after("Non-2xx or 3xx responses:").map_or(0, |n| n.parse().expect("wrk's non-2xx count"));
    let socket_errors = field_after("Socket errors:");
    let timeouts = socket_errors
        .as_deref()
        .and_then(|errors| errors.split(',').find_map(|part| part.trim().strip_prefix("timeout ")?.parse().ok()))
        .unwrap_or(0);
    WrkRun { requests, requests_per_sec, seconds, non_2xx, timeouts, socket_errors }
}

/// `10.01s`, `987.65ms`, `1.00m`.
fn parse_wrk_duration(text: &str) -> f64 {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).expect("a unit");
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().expect("a number");
    match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => panic!("unknown wrk duration unit {other:?}"),
    }
}
