//! A run's totals: every segment added up and checked against the ledger's
//! own figures; whatever disagrees becomes a note.

use super::log::{fmt_exact, Run, UNLOGGED};
use crate::budget::{LedgerState, Nanos, OpStat};
use indexmap::IndexMap;

/// A run's figures for the breakdown, the JSON and the page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Totals {
    /// The limit in force at the end (a resume may raise it).
    pub limit_nanos: Nanos,
    /// Every nano-dollar the run's lines account for, all segments.
    pub spent_nanos: Nanos,
    /// What the run's own ledger holds at the end.
    pub ledger_spent_nanos: Nanos,
    /// Charged calls.
    pub calls: u32,
    /// Input tokens billed.
    pub input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
    /// Input tokens read from a cache.
    pub cached_tokens: u64,
    /// Money the ledger charged without a call line (a call cut off by an immediate stop).
    pub unlogged_nanos: Nanos,
    /// Billed past reservations (part of `spent_nanos`).
    pub overrun_nanos: Nanos,
    /// Cost and tokens per operation label.
    pub by_operation: IndexMap<String, OpStat>,
    /// Warning thresholds (fractions of the limit).
    pub thresholds: Vec<f64>,
    /// The last segment's status.
    pub status: Option<String>,
    /// What stopped it, if something did.
    pub stop_source: Option<String>,
    /// Cycles completed.
    pub cycles_completed: Option<u32>,
    /// Guest fuel used.
    pub fuel_used: Option<u64>,
    /// Disagreements and gaps, one sentence each.
    pub notes: Vec<String>,
}

impl Totals {
    /// The figures as the ledger's state, for `report::breakdown`.
    pub fn ledger_state(&self) -> LedgerState {
        let fired = self
            .thresholds
            .iter()
            .map(|t| (self.spent_nanos as u128) * 1_000_000 >= ((*t * 1e6).round() as u128).saturating_mul(self.limit_nanos as u128))
            .collect();
        LedgerState {
            limit: self.limit_nanos,
            spent: self.spent_nanos,
            calls: self.calls,
            by_operation: self.by_operation.clone(),
            thresholds: self.thresholds.clone(),
            fired,
            overrun: self.overrun_nanos,
        }
    }
}

impl Run {
    /// The run's figures, every segment added up and checked against the
    /// ledger's own numbers.
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            limit_nanos: 0,
            spent_nanos: 0,
            ledger_spent_nanos: 0,
            calls: 0,
            input_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            unlogged_nanos: 0,
            overrun_nanos: 0,
            by_operation: IndexMap::new(),
            thresholds: Vec::new(),
            status: None,
            stop_source: None,
            cycles_completed: None,
            fuel_used: None,
            notes: Vec::new(),
        };
        for c in &self.calls {
            let op = t.by_operation.entry(c.operation.clone()).or_default();
            // A log is input: hostile figures saturate, they never overflow.
            op.cost = op.cost.saturating_add(c.cost_nanos);
            op.calls = op.calls.saturating_add(1);
            op.input_tokens = op.input_tokens.saturating_add(c.input_tokens);
            op.output_tokens = op.output_tokens.saturating_add(c.output_tokens);
            t.calls = t.calls.saturating_add(1);
            t.input_tokens = t.input_tokens.saturating_add(c.input_tokens);
            t.output_tokens = t.output_tokens.saturating_add(c.output_tokens);
            t.cached_tokens = t.cached_tokens.saturating_add(c.cached_tokens);
            t.spent_nanos = t.spent_nanos.saturating_add(c.cost_nanos);
            if c.over_reservation_nanos > 0 {
                t.overrun_nanos = t.overrun_nanos.saturating_add(c.over_reservation_nanos);
                t.notes.push(format!(
                    "{} (cycle {}) was billed {} past its reservation: charged as billed, and the run stopped (exit 8)",
                    c.operation,
                    c.cycle,
                    fmt_exact(c.over_reservation_nanos)
                ));
            }
        }
        // Check each call's logged ledger figure against the running sum.
        let mut ledger_calls_before: Option<u32> = Some(0);
        let mut prev_ledger: Option<(Nanos, Option<u32>)> = None;
        for (k, s) in self.segments.iter().enumerate() {
            if let Some((prev_spent, prev_calls)) = prev_ledger {
                if s.implicit_start {
                    ledger_calls_before = None;
                } else if s.spent_before_nanos < prev_spent {
                    let lost = prev_spent - s.spent_before_nanos;
                    t.notes.push(format!(
                        "segment {} resumed from a checkpoint at {} after {} had been spent: the {} spent in between is counted here, the run's own ledger no longer counts it",
                        k + 1,
                        fmt_exact(s.spent_before_nanos),
                        fmt_exact(prev_spent),
                        fmt_exact(lost)
                    ));
                    ledger_calls_before = None;
                } else if s.spent_before_nanos > prev_spent {
                    t.notes.push(format!(
                        "segment {} starts with {} spent, {} more than the log accounts for before it",
                        k + 1,
                        fmt_exact(s.spent_before_nanos),
                        fmt_exact(s.spent_before_nanos - prev_spent)
                    ));
                    ledger_calls_before = None;
                } else {
                    ledger_calls_before = prev_calls;
                }
            } else if s.implicit_start || s.spent_before_nanos > 0 {
                // The log starts mid-run: what came before is not in it.
                if s.spent_before_nanos > 0 {
                    t.notes.push(format!("the log starts with {} already spent that no line in it accounts for", fmt_exact(s.spent_before_nanos)));
                }
                ledger_calls_before = None;
            }
            let mut running = s.spent_before_nanos;
            let mut mismatch = None;
            for c in self.calls.iter().filter(|c| c.segment == k) {
                running = running.saturating_add(c.cost_nanos);
                if let Some(cum) = c.cumulative_nanos {
                    if cum != running && mismatch.is_none() {
                        mismatch = Some((c.seq, cum, running));
                    }
                    running = cum.max(running);
                }
            }
            if let Some((seq, cum, expect)) = mismatch {
                t.notes.push(format!("call {seq}: the ledger logged {} spent, the call lines before it add up to {}", fmt_exact(cum), fmt_exact(expect)));
            }
            let ledger_end = match &s.end {
                Some(e) => {
                    let expect = s.spent_before_nanos.saturating_add(s.logged_nanos);
                    if e.total_cost_nanos > expect {
                        let gap = e.total_cost_nanos - expect;
                        t.unlogged_nanos = t.unlogged_nanos.saturating_add(gap);
                        t.spent_nanos = t.spent_nanos.saturating_add(gap);
                        let unlogged_calls = match (ledger_calls_before, e.operations) {
                            (Some(b), Some(ops)) => ops.saturating_sub(b.saturating_add(s.calls)),
                            _ => 0,
                        };
                        let op = t.by_operation.entry(UNLOGGED.into()).or_default();
                        op.cost = op.cost.saturating_add(gap);
                        op.calls = op.calls.saturating_add(unlogged_calls);
                        t.calls = t.calls.saturating_add(unlogged_calls);
                        t.notes.push(format!(
                            "segment {}: its end line records {} spent, {} more than its call lines (a call cancelled by an immediate stop is charged its reservation)",
                            k + 1,
                            fmt_exact(e.total_cost_nanos),
                            fmt_exact(gap)
                        ));
                    } else if e.total_cost_nanos < expect {
                        t.notes.push(format!(
                            "segment {}: its end line records {} spent, less than the {} its call lines add up to",
                            k + 1,
                            fmt_exact(e.total_cost_nanos),
                            fmt_exact(expect)
                        ));
                    }
                    prev_ledger = Some((e.total_cost_nanos, e.operations));
                    e.total_cost_nanos
                }
                None => {
                    let spent = running.max(s.spent_before_nanos.saturating_add(s.logged_nanos));
                    let calls = ledger_calls_before.map(|b| b.saturating_add(s.calls));
                    prev_ledger = Some((spent, calls));
                    if k + 1 < self.segments.len() {
                        t.notes.push(format!("segment {} has no end line (the process stopped without finishing)", k + 1));
                    }
                    spent
                }
            };
            t.ledger_spent_nanos = ledger_end;
            let limit = s.end.as_ref().and_then(|e| e.budget_limit_nanos).unwrap_or(s.limit_nanos);
            if limit > 0 {
                t.limit_nanos = limit;
            }
            if !s.thresholds.is_empty() {
                t.thresholds = s.thresholds.clone();
            }
        }
        if t.limit_nanos == 0 {
            t.limit_nanos = self.calls.iter().rev().find_map(|c| c.limit_nanos).unwrap_or(0);
        }
        match self.segments.last().and_then(|s| s.end.as_ref()) {
            Some(e) => {
                t.status = e.status.clone();
                t.stop_source = e.stop_source.clone();
                t.cycles_completed = e.cycles_completed;
                t.fuel_used = e.fuel_used;
            }
            None => {
                t.status = Some("unfinished".into());
                t.cycles_completed = self.calls.iter().map(|c| c.cycle).max();
                t.fuel_used = self.calls.iter().filter_map(|c| c.fuel).max();
                if !self.segments.is_empty() {
                    t.notes.push("the log has no end line for the last segment: the run is still going, or its process died".into());
                }
            }
        }
        t
    }

    /// The limit in force at each segment's start: `(seconds, cycle, limit)`.
    pub fn limit_steps(&self) -> Vec<(Option<f64>, Option<u32>, Nanos)> {
        self.segments
            .iter()
            .map(|s| (s.t, s.resumed_cycle, s.end.as_ref().and_then(|e| e.budget_limit_nanos).unwrap_or(s.limit_nanos)))
            .collect()
    }
}
