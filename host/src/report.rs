//! The cost breakdown, in the seed's format, and the JSON summary.

use crate::budget::{fmt_usd, nanos_to_usd, LedgerState};
use std::fmt::Write;

const RULE: &str = "============================================================";

pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

pub fn breakdown(s: &LedgerState) -> String {
    let mut o = String::new();
    let remaining = s.limit.saturating_sub(s.spent);
    let avg = if s.calls == 0 { 0 } else { s.spent / s.calls as u64 };
    let _ = writeln!(o, "{RULE}\n💰 COST BREAKDOWN\n{RULE}");
    let _ = writeln!(o, "Total Cost: {}", fmt_usd(s.spent));
    let _ = writeln!(o, "Budget Limit: {}", fmt_usd(s.limit));
    let _ = writeln!(o, "Budget Remaining: {}", fmt_usd(remaining));
    let _ = writeln!(o, "Budget Used: {:.1}%", percent(s.spent, s.limit));
    let _ = writeln!(o, "\nOperations:\n  Total: {}\n  Avg Cost: {}", s.calls, fmt_usd(avg));
    let _ = writeln!(o, "\nCost by Operation:");
    if s.by_operation.is_empty() {
        let _ = writeln!(o, "  (no calls)");
    }
    for (op, stat) in &s.by_operation {
        let _ = writeln!(o, "  {op}: {} ({:.1}%)", fmt_usd(stat.cost), percent(stat.cost, s.spent));
    }
    let _ = write!(o, "{RULE}");
    o
}

/// `cost_by_operation` as the seed logs it: operation -> USD.
pub fn cost_by_operation_usd(s: &LedgerState) -> serde_json::Value {
    s.by_operation.iter().map(|(k, v)| (k.clone(), serde_json::json!(nanos_to_usd(v.cost)))).collect::<serde_json::Map<_, _>>().into()
}

/// The same with every figure: cost (USD and nanos), calls, tokens.
pub fn operations_detail(s: &LedgerState) -> serde_json::Value {
    s.by_operation
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::json!({
                    "cost_usd": nanos_to_usd(v.cost), "cost_nanos": v.cost, "calls": v.calls,
                    "input_tokens": v.input_tokens, "output_tokens": v.output_tokens,
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Ledger;

    #[test]
    fn breakdown_matches_the_seed_layout() {
        let mut l = Ledger::new(100_000_000).unwrap();
        for (op, c) in [("llm_call_cycle_1", 14_500_000), ("llm_call_cycle_2", 16_700_000)] {
            let r = l.reserve(c).unwrap();
            let _ = l.settle(r, c, op, 0, 0);
        }
        let text = breakdown(&l.state());
        assert!(text.contains("Total Cost: $0.0312\n"), "{text}");
        assert!(text.contains("Budget Limit: $0.1000\n"));
        assert!(text.contains("Budget Remaining: $0.0688\n"));
        assert!(text.contains("Budget Used: 31.2%\n"));
        assert!(text.contains("  Total: 2\n  Avg Cost: $0.0156\n"));
        assert!(text.contains("  llm_call_cycle_1: $0.0145 (46.5%)\n"));
    }
}
