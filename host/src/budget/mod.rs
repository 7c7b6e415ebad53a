//! Money: the ledger, prices and token bounds.
//!
//! Everything here is pure: no wasm, no IO, no clock. Money is integer
//! nano-USD (`Nanos`); floats appear only at the edges (parsing a flag,
//! printing a line, crossing the WIT boundary).

pub mod ledger;
pub mod pricing;
pub mod tokens;

pub use ledger::{Ledger, LedgerState, OpStat, Reservation, Settlement};
pub use pricing::{Price, PriceTable};

/// Integer nano-USD: 1 USD = 1_000_000_000.
pub type Nanos = u64;

/// Nano-USD in one USD.
pub const NANOS_PER_USD: u64 = 1_000_000_000;

/// The largest budget or price we accept: a million dollars is already absurd
/// for one run, and it keeps every product of tokens x price inside u128 math.
pub const MAX_USD: f64 = 1_000_000.0;

/// Why an amount or a ledger operation is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BudgetError {
    /// Zero, negative, or so small it rounds to zero nano-USD.
    #[error("budget must be a positive number of USD, got {0}")]
    NotPositive(String),
    /// NaN, an infinity, or not a number.
    #[error("budget {0} is not a finite number")]
    NotFinite(String),
    /// Over [`MAX_USD`].
    #[error("budget {0} USD is larger than the maximum of 1000000 USD")]
    TooLarge(String),
    /// A reservation that does not fit.
    #[error("not enough budget: the call needs {needed} nano-USD, {available} available")]
    Exhausted {
        /// What the call needs.
        needed: Nanos,
        /// What is left.
        available: Nanos,
    },
    /// A stored ledger whose figures do not add up.
    #[error("ledger state is inconsistent: {0}")]
    Inconsistent(String),
    /// A new limit below the money already spent.
    #[error("new limit {limit} nano-USD is below what was already spent ({spent})")]
    BelowSpent {
        /// The limit asked for.
        limit: Nanos,
        /// What was already spent.
        spent: Nanos,
    },
}

/// Parse a USD amount given by a user (flag, file) into nano-USD, refusing
/// NaN, infinities, zero, negatives and absurd sizes.
pub fn usd_to_nanos(usd: f64) -> Result<Nanos, BudgetError> {
    let shown = format!("{usd}");
    if !usd.is_finite() {
        return Err(BudgetError::NotFinite(shown));
    }
    if usd <= 0.0 {
        return Err(BudgetError::NotPositive(shown));
    }
    if usd > MAX_USD {
        return Err(BudgetError::TooLarge(shown));
    }
    let nanos = (usd * NANOS_PER_USD as f64).round() as Nanos;
    if nanos == 0 {
        return Err(BudgetError::NotPositive(shown));
    }
    Ok(nanos)
}

/// Parse the text of a `--budget` flag.
pub fn parse_usd(text: &str) -> Result<Nanos, BudgetError> {
    let trimmed = text.trim().trim_start_matches('$');
    let usd: f64 = trimmed
        .parse()
        .map_err(|_| BudgetError::NotFinite(format!("'{text}'")))?;
    usd_to_nanos(usd)
}

/// Nano-USD as USD, for display and the WIT boundary only.
pub fn nanos_to_usd(n: Nanos) -> f64 {
    n as f64 / NANOS_PER_USD as f64
}

/// `$0.0123` with four decimals, as the seed prints money.
pub fn fmt_usd(n: Nanos) -> String {
    format!("${:.4}", nanos_to_usd(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_budgets() {
        assert_eq!(parse_usd("1.0").unwrap(), NANOS_PER_USD);
        assert_eq!(parse_usd("$0.10").unwrap(), 100_000_000);
        for bad in ["0", "-1", "NaN", "nan", "inf", "-inf", "abc", "", "1e300", "0.0000000001"] {
            assert!(parse_usd(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn formats_like_the_seed() {
        assert_eq!(fmt_usd(100_000_000), "$0.1000");
        assert_eq!(fmt_usd(16_900_000), "$0.0169");
    }
}
