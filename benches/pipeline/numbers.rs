//! Percentiles of samples, ratios, and how figures are written in progress lines
//! and in the report.

/// Nearest-rank percentile (`fraction` 0.5 for the median); `None` without samples.
pub fn percentile(samples: &[f64], fraction: f64) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// The middle sample (nearest rank); `None` without samples.
pub fn median(samples: &[f64]) -> Option<f64> {
    percentile(samples, 0.5)
}

/// `12,345` (rounded to a whole number).
pub fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

/// `value` written by `format`, or `—` when there is none.
pub fn shown(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "—".to_string(), format)
}

/// One decimal below 100 ms, whole and grouped above.
pub fn milliseconds(value: f64) -> String {
    if value < 100.0 { format!("{value:.1}") } else { grouped(value) }
}

/// Ours over the seed's, when both are known and the ratio is finite.
pub fn ratio(ours: Option<f64>, seed: Option<f64>) -> Option<f64> {
    Some(ours? / seed?).filter(|r| r.is_finite())
}

/// A target's verdict, `**no**` in bold.
pub fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "**no**" }
}
