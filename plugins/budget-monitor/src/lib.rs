//! The seed's BudgetMonitoringHook as a sandboxed hook: operation-level cost
//! tracking, its own warning thresholds, the average cost per operation, and
//! its breakdown emitted into the host's audit log (hooks get no filesystem).
//!
//! Config (`--hook budget-monitor.wasm=warn=0.5,0.8`): `warn=` fractions of the
//! limit at which it logs its own warning (default 0.8, as in the seed).
//! It only watches: it never denies or interrupts.

use guest_sdk::hook::{log, AfterDecision, CostEvent, EndEvent, Hook, InterruptEvent, StartEvent, ThresholdEvent};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct BudgetMonitor {
    budget_limit: f64,
    total_cost: f64,
    operation_count: u32,
    /// In first-seen order, like the host's breakdown.
    cost_by_operation: Vec<(String, f64)>,
    warn_at: Vec<f64>,
    warned: Vec<f64>,
    host_thresholds_seen: Vec<f64>,
}

fn parse_warn(config: &str) -> Vec<f64> {
    let list = config.split(';').find_map(|kv| kv.trim().strip_prefix("warn=")).unwrap_or("0.8");
    let mut v: Vec<f64> = list.split(',').filter_map(|x| x.trim().parse().ok()).filter(|x: &f64| *x > 0.0 && *x <= 1.0).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

impl BudgetMonitor {
    fn breakdown(&self) -> serde_json::Value {
        let avg = if self.operation_count > 0 { self.total_cost / self.operation_count as f64 } else { 0.0 };
        serde_json::json!({
            "total_cost": self.total_cost,
            "budget_limit": self.budget_limit,
            "budget_remaining": (self.budget_limit - self.total_cost).max(0.0),
            "budget_used_percentage": if self.budget_limit > 0.0 { self.total_cost / self.budget_limit * 100.0 } else { 0.0 },
            "operations": self.operation_count,
            "avg_cost_per_operation": avg,
            "cost_by_operation": self.cost_by_operation.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "host_thresholds_seen": self.host_thresholds_seen,
        })
    }
}

impl Hook for BudgetMonitor {
    fn on_start(&mut self, e: &StartEvent) {
        if !e.resumed {
            self.warn_at = parse_warn(&e.config);
        }
        self.budget_limit = e.limit_usd;
        log::info(&format!("budget monitor: limit ${:.4}, warnings at {:?}, resumed: {}", e.limit_usd, self.warn_at, e.resumed));
    }

    fn after_call(&mut self, e: &CostEvent) -> AfterDecision {
        self.total_cost += e.cost_usd;
        self.operation_count += 1;
        match self.cost_by_operation.iter_mut().find(|(k, _)| *k == e.operation) {
            Some((_, c)) => *c += e.cost_usd,
            None => self.cost_by_operation.push((e.operation.clone(), e.cost_usd)),
        }
        let used = if self.budget_limit > 0.0 { self.total_cost / self.budget_limit } else { 0.0 };
        for t in self.warn_at.clone() {
            if used >= t && !self.warned.contains(&t) && used < 1.0 {
                self.warned.push(t);
                log::warn(&format!("⚠️  Budget monitor: {:.1}% used (${:.4} / ${:.4})", used * 100.0, self.total_cost, self.budget_limit));
                log::emit("budget_monitor_warning", &serde_json::json!({"threshold": t, "percentage": used * 100.0, "total_cost": self.total_cost}));
            }
        }
        AfterDecision::Continue
    }

    fn on_threshold(&mut self, e: &ThresholdEvent) {
        self.host_thresholds_seen.push(e.threshold);
    }

    fn on_interrupt(&mut self, e: &InterruptEvent) {
        log::emit("budget_monitor_interrupt", &serde_json::json!({"message": e.message, "cycle": e.cycle, "total_cost": self.total_cost}));
    }

    fn on_end(&mut self, _e: &EndEvent) {
        log::emit("budget_monitor_breakdown", &self.breakdown());
    }
}

guest_sdk::export_hook!(BudgetMonitor);
