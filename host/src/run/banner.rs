//! What a run prints: the banner before it, the ending after it (the seed's
//! layout), and the `--json` summary.

use super::{RunOutcome, Status};
use crate::budget::{fmt_usd, nanos_to_usd};
use crate::console::Console;
use crate::interrupt::Source;
use crate::llm::Provider;
use crate::spec::RunSpec;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const RULE: &str = "============================================================";

/// How the agent's component was loaded, for the banner.
pub struct LoadInfo<'a> {
    pub sha256: &'a str,
    pub cached: bool,
    pub compile_time: Duration,
    /// Each hook: name, sha256, config.
    pub hooks: Vec<(&'a str, &'a str, &'a str)>,
}

/// The banner before the first cycle.
pub fn banner(c: &Console, spec: &RunSpec, provider: &dyn Provider, checkpoint_dir: &Path, load: &LoadInfo<'_>) {
    let price = match spec.prices.get(&spec.model) {
        Some(p) if p.is_free() => "FREE".to_string(),
        Some(p) => format!("${} in / ${} out per 1M tokens", p.input as f64 / 1e9, p.output as f64 / 1e9),
        None if !provider.is_paid() => "FREE (local)".to_string(),
        None => "no price".to_string(),
    };
    let how = if load.cached { "from compiled cache".to_string() } else { format!("compiled in {} ms", load.compile_time.as_millis()) };
    c.out(RULE);
    c.out("💰 BUDGET-LIMITED EXECUTION");
    c.out(RULE);
    c.out(&format!("📦 Agent: {} (sha256 {}…, {how})", spec.agent.path.display(), &load.sha256[..12]));
    for (name, sha, config) in &load.hooks {
        let config = if config.is_empty() { String::new() } else { format!(", config {config}") };
        c.out(&format!("🪝 Hook: {name} (sha256 {}…{config})", &sha[..12.min(sha.len())]));
    }
    c.out(&format!("🔧 LLM: {}/{} ({price})", provider.name(), spec.model));
    c.out(&format!("   via {}", provider.describe()));
    c.out(&format!("💵 Budget Limit: {}", fmt_usd(spec.budget)));
    let warn: Vec<String> = spec.warn.iter().map(|w| format!("{:.0}%", w * 100.0)).collect();
    c.out(&format!("⚠️  Warnings at: {}", if warn.is_empty() { "none".into() } else { warn.join(", ") }));
    if let Some(f) = spec.limits.fuel {
        c.out(&format!("⛽ Fuel limit: {f} instructions"));
    }
    c.out(&format!("📂 Checkpoint Dir: {}", checkpoint_dir.display()));
    c.out(RULE);
    c.out("");
    c.out(&format!("ℹ️  Agent will stop before any call that could take spending past {}.", fmt_usd(spec.budget)));
    c.out("");
}

/// The ending: how the run stopped, the seed's breakdown, the result.
pub fn ending(c: &Console, spec: &RunSpec, o: &RunOutcome) {
    c.progress.finish();
    // `--quiet` is "errors only": a run that failed still says why.
    if c.quiet {
        if let Some(i) = o.interrupt.as_ref().filter(|i| matches!(i.source, Source::Error | Source::HookFailed | Source::Overrun | Source::Diverged)) {
            c.error(&format!("{}: {}", i.source.as_str(), i.message));
        }
        return;
    }
    let l = &o.ledger;
    c.out("");
    match (&o.interrupt, o.status) {
        (None, Status::Completed) => {
            c.out("✅ Task completed within budget!");
            c.out("");
            c.out(&format!("   Cycles: {}", o.cycles_completed));
            c.out(&format!("   Cost: {} / {}", fmt_usd(l.spent), fmt_usd(l.limit)));
            c.out(&format!("   Remaining budget: {}", fmt_usd(l.limit.saturating_sub(l.spent))));
        }
        (None, _) => {
            c.out(&format!("⏹️  Stopped at --max-cycles {} before the agent finished.", spec.limits.max_cycles));
            c.out("");
            c.out(&format!("   Cycles: {}", o.cycles_completed));
            c.out(&format!("   Cost: {} / {}", fmt_usd(l.spent), fmt_usd(l.limit)));
        }
        (Some(i), _) => {
            let title = match i.source {
                Source::Budget => format!("💰 Budget limit reached: {} of {} spent", fmt_usd(l.spent), fmt_usd(l.limit)),
                Source::Fuel => "⛽ Fuel limit reached".to_string(),
                Source::Timeout => "⏱️  Timeout reached".to_string(),
                Source::Signal => "🛑 Interrupted".to_string(),
                Source::Hook => "🪝 Stopped by a hook".to_string(),
                Source::HookFailed => "🪝 A hook failed".to_string(),
                Source::Overrun => format!("🚨 Billed past the reservation: {} of {} spent", fmt_usd(l.spent), fmt_usd(l.limit)),
                Source::Diverged => "🎞️  Replay diverged from the tape".to_string(),
                Source::Error => "❌ Run failed".to_string(),
            };
            c.out(&title);
            let how = match i.mode {
                crate::interrupt::Mode::Graceful => "   Graceful shutdown completed: the current cycle finished, no call spent past the limit.",
                crate::interrupt::Mode::Immediate => "   Immediate stop: the guest was cancelled; state is kept from the last completed cycle.",
            };
            c.out(how);
            c.out("");
            c.out(&format!("   Source: {}", i.source.as_str().to_uppercase()));
            c.out(&format!("   Mode: {}", i.mode.as_str().to_uppercase()));
            c.out(&format!("   Message: {}", i.message));
            if l.overrun > 0 {
                c.out(&format!("   Over the reservation: {} ({} nano-USD), charged as billed", fmt_usd(l.overrun), l.overrun));
            }
            c.out(&format!("   Timestamp: {}", i.timestamp));
            c.out("");
            match &o.checkpoint {
                Some(p) => c.out(&format!("   Checkpoint: {}", p.display())),
                None => c.out("   Checkpoint: none written"),
            }
            c.out(&format!("   Cycles completed: {}", o.cycles_completed));
        }
    }
    c.out("");
    for line in crate::report::breakdown(l).lines() {
        c.out(line);
    }
    if let Some(r) = &o.result {
        c.out("");
        c.out("📄 Result:");
        for line in r.lines() {
            c.out(&format!("   {line}"));
        }
    }
    c.out("");
    c.out(&format!("📊 Budget monitoring log: {}", o.log.display()));
    c.out(&format!("   View detailed metrics: cat {}", o.log.display()));
}

/// The `--json` summary of a run.
pub fn summary(spec: &RunSpec, provider: &dyn Provider, o: &RunOutcome) -> serde_json::Value {
    let l = &o.ledger;
    let input = l.by_operation.values().fold(0u64, |a, op| a.saturating_add(op.input_tokens));
    let output = l.by_operation.values().fold(0u64, |a, op| a.saturating_add(op.output_tokens));
    json!({
        "run_id": o.run_id,
        "agent": spec.agent_name,
        "status": o.status,
        "stop_reason": o.interrupt.as_ref().map(|i| json!({"source": i.source, "mode": i.mode, "message": i.message, "timestamp": i.timestamp})),
        "exit_code": o.exit_code(),
        "cycles": o.cycles_completed,
        "spent_usd": nanos_to_usd(l.spent), "spent_nanos": l.spent,
        "limit_usd": nanos_to_usd(l.limit), "limit_nanos": l.limit,
        "remaining_usd": nanos_to_usd(l.limit.saturating_sub(l.spent)),
        "over_reservation_usd": nanos_to_usd(l.overrun), "over_reservation_nanos": l.overrun,
        "calls": l.calls, "input_tokens": input, "output_tokens": output,
        "fuel_used": o.fuel_used, "fuel_limit": spec.limits.fuel,
        "cost_by_operation": crate::report::operations_detail(l),
        "provider": provider.name(), "model": spec.model,
        "log": o.log, "checkpoint": o.checkpoint,
        "result": o.result,
    })
}
