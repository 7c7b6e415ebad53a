//! The cost breakdown, in the seed's format, and the JSON summary; and
//! `host report`: the same breakdown read back from an audit log, as text,
//! JSON, or a self-contained HTML page with charts (`html`).

mod charts;
pub(crate) mod html;
#[doc(hidden)]
pub mod log;
mod totals;

use crate::budget::{fmt_usd, nanos_to_usd, LedgerState};
use crate::BadInput;
pub use log::{Log, LogError};
use std::fmt::Write;
use std::path::Path;

const RULE: &str = "============================================================";

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The seed's cost breakdown of a ledger, as printed at the end of a run.
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

/// The text report: per run a header and the seed's breakdown, then what
/// the reader noticed; with several runs, a total at the end.
pub fn text(log: &Log) -> String {
    let mut o = String::new();
    let mut total = (0u64, 0u32);
    for (i, r) in log.runs.iter().enumerate() {
        let t = r.totals();
        total = (total.0.saturating_add(t.spent_nanos), total.1.saturating_add(t.calls));
        if i > 0 {
            o.push('\n');
        }
        let model = match (&r.provider, &r.model) {
            (Some(p), Some(m)) => format!(" · {p}/{m}"),
            (None, Some(m)) => format!(" · {m}"),
            _ => String::new(),
        };
        let _ = writeln!(o, "Run: {} (agent {}{model})", r.run_id, r.agent_id);
        let status = match (&t.status, &t.stop_source) {
            (Some(s), Some(src)) => format!("{s} ({src})"),
            (Some(s), None) => s.clone(),
            _ => "unknown".into(),
        };
        let resumes = r.segments.iter().filter(|s| s.resumed_from.is_some()).count();
        let mut line = format!("Status: {status}");
        if let Some(c) = t.cycles_completed {
            let _ = write!(line, " · {c} cycles");
        }
        if resumes > 0 {
            let _ = write!(line, " · resumed {resumes} time{}", if resumes == 1 { "" } else { "s" });
        }
        if r.refused > 0 {
            let _ = write!(line, " · {} call{} refused", r.refused, if r.refused == 1 { "" } else { "s" });
        }
        let _ = writeln!(o, "{line}");
        let _ = writeln!(o, "{}", breakdown(&t.ledger_state()));
        let _ = writeln!(
            o,
            "Tokens: {} in ({} cached) / {} out{}",
            t.input_tokens,
            t.cached_tokens,
            t.output_tokens,
            t.fuel_used.map(|f| format!(" · fuel {f}")).unwrap_or_default()
        );
        for n in &t.notes {
            let _ = writeln!(o, "note: {n}");
        }
    }
    if log.runs.len() > 1 {
        let _ = writeln!(o, "\nAll {} runs: {} spent in {} calls", log.runs.len(), fmt_usd(total.0), total.1);
    }
    o
}

/// The same numbers as data (money in USD and in exact nanos).
pub fn json(log: &Log) -> serde_json::Value {
    use serde_json::json;
    let mut total = (0u64, 0u32);
    let runs: Vec<serde_json::Value> = log
        .runs
        .iter()
        .map(|r| {
            let t = r.totals();
            total = (total.0.saturating_add(t.spent_nanos), total.1.saturating_add(t.calls));
            let state = t.ledger_state();
            json!({
                "run_id": r.run_id, "agent_id": r.agent_id, "agent": r.agent, "provider": r.provider, "model": r.model,
                "status": t.status, "stop_source": t.stop_source, "cycles_completed": t.cycles_completed,
                "segments": r.segments.len(), "resumes": r.segments.iter().filter(|s| s.resumed_from.is_some()).count(),
                "limit_usd": nanos_to_usd(t.limit_nanos), "limit_nanos": t.limit_nanos,
                "spent_usd": nanos_to_usd(t.spent_nanos), "spent_nanos": t.spent_nanos,
                "ledger_spent_nanos": t.ledger_spent_nanos,
                "remaining_nanos": t.limit_nanos.saturating_sub(t.spent_nanos),
                "used_percentage": percent(t.spent_nanos, t.limit_nanos),
                "calls": t.calls, "refused": r.refused, "failed_uncharged": r.failed_uncharged,
                "avg_cost_nanos": if t.calls == 0 { 0 } else { t.spent_nanos / t.calls as u64 },
                "input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "cached_tokens": t.cached_tokens,
                "fuel_used": t.fuel_used, "unlogged_nanos": t.unlogged_nanos,
                "thresholds": t.thresholds, "thresholds_reached": state.fired,
                "cost_by_operation": operations_detail(&state),
                "llm_calls": r.calls, "markers": r.markers, "notes": t.notes,
            })
        })
        .collect();
    json!({
        "log": log.path, "lines": log.lines, "skipped": log.skipped,
        "runs": runs,
        "total": {"runs": log.runs.len(), "spent_usd": nanos_to_usd(total.0), "spent_nanos": total.0, "calls": total.1},
    })
}

/// What a ledger's calls would have cost at `price` (their input and output tokens).
pub fn would_cost(s: &LedgerState, price: &crate::budget::Price) -> crate::budget::Nanos {
    s.by_operation.values().fold(0, |sum: crate::budget::Nanos, op| sum.saturating_add(price.cost(op.input_tokens, 0, op.output_tokens)))
}

/// `host report LOG`: the breakdown on stdout (or JSON with `json`), the page
/// written to `html`, a one-line note on stderr for each skipped part.
pub fn command(path: &Path, as_json: bool, html: Option<&Path>, run: Option<&str>) -> anyhow::Result<()> {
    let mut log = Log::read(path).map_err(|e| BadInput(e.to_string()))?;
    if let Some(id) = run {
        let ids: Vec<String> = log.runs.iter().map(|r| r.run_id.clone()).collect();
        log.runs.retain(|r| r.run_id == id);
        if log.runs.is_empty() {
            return Err(BadInput(format!("no run '{id}' in {} (runs: {})", path.display(), ids.join(", "))).into());
        }
    }
    if let Some(n) = log.skipped_note() {
        eprintln!("{n}");
    }
    if let Some(out) = html {
        crate::durable::write_atomic(out, html::page(&log).as_bytes())
            .map_err(|e| BadInput(format!("cannot write the report page {}: {e:#}", out.display())))?;
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json(&log))?);
    } else {
        print!("{}", text(&log));
    }
    if let Some(out) = html {
        let line = format!("📊 Report page: {}", out.display());
        if as_json {
            eprintln!("{line}");
        } else {
            println!("\n{line}");
        }
    }
    Ok(())
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

    mod any_log {
        use super::super::*;
        use proptest::prelude::*;

        fn event_line() -> impl Strategy<Value = String> {
            let events = prop::sample::select(vec![
                "budget_monitoring_start", "llm_call", "llm_call_failed", "llm_call_refused", "budget_warning",
                "checkpoint_saved", "interrupt", "budget_monitoring_end", "plugin_log",
            ]);
            let stamps = prop::sample::select(vec!["2026-01-01T10:00:00.000001", "2026-01-01T09:00:00", "1999-12-31T23:59:59.9", "not a time", ""]);
            (events, stamps, 0..3u8, any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>(), prop::option::of(any::<u64>()), "[a-z<>&\"']{0,8}", any::<f64>())
                .prop_map(|(event, ts, run, a, b, c, cycle, d, text, t)| {
                    serde_json::json!({
                        "timestamp": ts, "event": event, "run_id": format!("r{run}"), "agent_id": text,
                        "budget_limit_nanos": a, "cost_nanos": b, "cumulative_nanos": c, "charged_nanos": b, "total_cost_nanos": c,
                        "spent_before_nanos": d, "resumed_from": d.map(|_| "ck.gz"), "resumed_cycle": d.map(|_| cycle),
                        "cycle": cycle, "cycles_completed": cycle, "operation": text, "warn": [t, 0.5],
                        "threshold": t, "percentage": t, "operations": cycle, "cost_by_operation_nanos": {text.clone(): b},
                        "input_tokens": a, "output_tokens": b, "cached_tokens": c, "latency_ms": a, "fuel": c,
                    })
                    .to_string()
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            /// Any log, cut anywhere: read, added up and drawn without a panic.
            #[test]
            fn reads_adds_up_and_draws_without_panic(
                lines in prop::collection::vec(prop_oneof![4 => event_line(), 1 => "\\PC{0,40}"], 1..24),
                cut in any::<usize>(),
            ) {
                let text_in = lines.join("\n");
                let bytes = text_in.as_bytes();
                let cut = cut % (bytes.len() + 1);
                if let Ok(log) = Log::parse(&bytes[..cut], Path::new("any.jsonl")) {
                    let _ = log.skipped_note();
                    for r in &log.runs {
                        let t = r.totals();
                        // The operations always add up to the total (saturating the same way).
                        prop_assert_eq!(t.by_operation.values().fold(0u64, |a, o| a.saturating_add(o.cost)), t.spent_nanos);
                    }
                    let _ = text(&log);
                    let _ = json(&log);
                    let page = html::page(&log);
                    prop_assert!(page.ends_with("</html>\n"));
                }
            }
        }
    }
}
