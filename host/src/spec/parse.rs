//! The text forms of durations and warning thresholds (flags, old checkpoints).

use super::SpecError;
use std::time::Duration;

/// `30s`, `2m`, `1h`, `500ms`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, SpecError> {
    let t = text.trim();
    let bad = || SpecError(format!("'{text}' is not a duration (examples: 30s, 2m, 500ms)"));
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 365.0 * 86400.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `0.5,0.8,0.9` (fractions of the budget), or `none`.
pub fn parse_warn(text: &str) -> Result<Vec<f64>, SpecError> {
    if text.trim().is_empty() || text.trim() == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|p| {
            let v: f64 = p.trim().parse().map_err(|_| SpecError(format!("--warn: '{p}' is not a number")))?;
            if !v.is_finite() || v <= 0.0 || v > 1.0 {
                return Err(SpecError(format!("--warn: {p} must be a fraction of the budget in (0, 1]")));
            }
            Ok(v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        for bad in ["", "0s", "-1s", "abc", "5x", "nan"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn warn_thresholds() {
        assert_eq!(parse_warn("0.5,0.8,0.9").unwrap(), vec![0.5, 0.8, 0.9]);
        assert!(parse_warn("none").unwrap().is_empty());
        for bad in ["0", "1.5", "x", "NaN", "0.5,,0.8"] {
            assert!(parse_warn(bad).is_err(), "{bad}");
        }
    }

}
