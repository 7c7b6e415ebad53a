//! Read-mostly state shared by the loop and every import call of one run:
//! the spec, the provider, the output, the stop signal and the deadline.

use crate::budget::{fmt_usd, nanos_to_usd, pricing::Price, Nanos};
use crate::interrupt::StopSignal;
use crate::llm::{retry::RetryPolicy, Provider};
use crate::output::Output;
use crate::spec::RunSpec;
use std::sync::Arc;
use std::time::Instant;

/// One run's shared context.
pub struct RunCtx {
    /// What the run is.
    pub spec: Arc<RunSpec>,
    /// Its id in logs and checkpoints.
    pub run_id: String,
    /// Who answers its calls.
    pub provider: Arc<dyn Provider>,
    /// Its audit log and console.
    pub out: Arc<Output>,
    /// Signals from outside (Ctrl+C), shared by every run of the process.
    pub stop: Arc<StopSignal>,
    /// When the run's `--timeout` ends.
    pub deadline: Option<Instant>,
    /// How provider calls are retried.
    pub retry: RetryPolicy,
}

impl RunCtx {
    /// The price of `model`: from the spec's table, free for a free provider, else refused.
    pub fn price_for(&self, model: &str) -> Result<Price, String> {
        match self.spec.prices.get(model) {
            Some(p) => Ok(p),
            None if !self.provider.is_paid() => Ok(Price::FREE),
            None => Err(format!(
                "no price for model '{model}' with the {} provider: add it to a --prices file (USD per 1M tokens)",
                self.provider.name()
            )),
        }
    }

    /// A threshold crossed: an audit event, and a warning after the cycle's
    /// line unless `quiet` (several crossed by one call say it once).
    pub fn warn_threshold(&self, t: f64, spent: Nanos, limit: Nanos, cycle: u32, quiet: bool) {
        let pct = crate::report::percent(spent, limit);
        if !quiet {
            self.out.defer_warning(format!("⚠️  Budget warning: {pct:.1}% used ({} / {})", fmt_usd(spent), fmt_usd(limit)));
        }
        self.out.event(&crate::audit::Event::BudgetWarning(crate::audit::events::Warning {
            threshold: t,
            percentage: pct,
            total_cost: nanos_to_usd(spent),
            total_cost_nanos: spent,
            budget_limit: nanos_to_usd(limit),
            budget_limit_nanos: limit,
            cycle: Some(cycle),
        }));
    }
}

/// Wait until `deadline`, or forever without one.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
