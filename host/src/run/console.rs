//! What a person sees. With `--json` every human line goes to stderr so
//! stdout holds only the summary; `--quiet` keeps only errors.

use super::{RunConfig, RunOutcome, Status};
use crate::budget::fmt_usd;
use crate::interrupt::Source;
use std::io::Write;
use std::time::Duration;

const RULE: &str = "============================================================";

#[derive(Debug, Clone, Default)]
pub struct Console {
    pub json: bool,
    pub quiet: bool,
    /// The live display on a terminal (off by default); every line below prints around it.
    pub progress: crate::progress::Progress,
    /// `[name] ` before every line, for agents of a team.
    pub prefix: String,
}

impl Console {
    /// Main output: the banner, `CYCLE n:` lines, the ending.
    pub fn out(&self, line: &str) {
        if self.quiet {
            return;
        }
        let prefix = &self.prefix;
        if self.json {
            eprintln!("{prefix}{line}");
        } else {
            self.progress.suspend(|| {
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{prefix}{line}");
                let _ = o.flush();
            });
        }
    }
    /// Warnings share the main stream so they interleave correctly with cycles.
    pub fn warn(&self, line: &str) {
        self.out(line);
    }
    /// Secondary lines (plugin logs, anomalies): stderr.
    pub fn note(&self, line: &str) {
        if !self.quiet {
            self.progress.suspend(|| eprintln!("{line}"));
        }
    }
    pub fn error(&self, line: &str) {
        self.progress.suspend(|| eprintln!("error: {line}"));
    }

    pub fn banner(&self, cfg: &RunConfig, sha256: &str, cached: bool, compile: Duration) {
        let price = match cfg.prices.get(&cfg.model) {
            Some(p) if p.is_free() => "FREE".to_string(),
            Some(p) => format!("${} in / ${} out per 1M tokens", p.input as f64 / 1e9, p.output as f64 / 1e9),
            None if !cfg.provider.is_paid() => "FREE (local)".to_string(),
            None => "no price".to_string(),
        };
        let how = if cached { "from compiled cache".to_string() } else { format!("compiled in {} ms", compile.as_millis()) };
        self.out(RULE);
        self.out("💰 BUDGET-LIMITED EXECUTION");
        self.out(RULE);
        self.out(&format!("📦 Agent: {} (sha256 {}…, {how})", cfg.agent.display(), &sha256[..12]));
        self.out(&format!("🔧 LLM: {}/{} ({price})", cfg.provider.name(), cfg.model));
        self.out(&format!("   via {}", cfg.provider.describe()));
        self.out(&format!("💵 Budget Limit: {}", fmt_usd(cfg.budget)));
        let warn: Vec<String> = cfg.warn.iter().map(|w| format!("{:.0}%", w * 100.0)).collect();
        self.out(&format!("⚠️  Warnings at: {}", if warn.is_empty() { "none".into() } else { warn.join(", ") }));
        if let Some(f) = cfg.fuel {
            self.out(&format!("⛽ Fuel limit: {f} instructions"));
        }
        self.out(&format!("📂 Checkpoint Dir: {}", cfg.checkpoint_dir.display()));
        self.out(RULE);
        self.out("");
        self.out(&format!("ℹ️  Agent will stop before any call that could take spending past {}.", fmt_usd(cfg.budget)));
        self.out("");
    }

    pub fn ending(&self, cfg: &RunConfig, o: &RunOutcome) {
        self.progress.finish();
        let l = &o.ledger;
        self.out("");
        match (&o.interrupt, o.status) {
            (None, Status::Completed) => {
                self.out("✅ Task completed within budget!");
                self.out("");
                self.out(&format!("   Cycles: {}", o.cycles_completed));
                self.out(&format!("   Cost: {} / {}", fmt_usd(l.spent), fmt_usd(l.limit)));
                self.out(&format!("   Remaining budget: {}", fmt_usd(l.limit - l.spent)));
            }
            (None, _) => {
                self.out(&format!("⏹️  Stopped at --max-cycles {} before the agent finished.", cfg.max_cycles));
                self.out("");
                self.out(&format!("   Cycles: {}", o.cycles_completed));
                self.out(&format!("   Cost: {} / {}", fmt_usd(l.spent), fmt_usd(l.limit)));
            }
            (Some(i), _) => {
                let title = match i.source {
                    Source::Budget => format!("💰 Budget limit reached: {} of {} spent", fmt_usd(l.spent), fmt_usd(l.limit)),
                    Source::Fuel => "⛽ Fuel limit reached".to_string(),
                    Source::Timeout => "⏱️  Timeout reached".to_string(),
                    Source::Signal => "🛑 Interrupted".to_string(),
                    Source::Hook => "🪝 Stopped by a hook".to_string(),
                    Source::Error => "❌ Run failed".to_string(),
                };
                self.out(&title);
                let how = match i.mode {
                    crate::interrupt::Mode::Graceful => "   Graceful shutdown completed: the current cycle finished, no call spent past the limit.",
                    crate::interrupt::Mode::Immediate => "   Immediate stop: the guest was cancelled; state is kept from the last completed cycle.",
                };
                self.out(how);
                self.out("");
                self.out(&format!("   Source: {}", i.source.as_str().to_uppercase()));
                self.out(&format!("   Mode: {}", i.mode.as_str().to_uppercase()));
                self.out(&format!("   Message: {}", i.message));
                self.out(&format!("   Timestamp: {}", i.timestamp));
                self.out("");
                match &o.checkpoint {
                    Some(c) => self.out(&format!("   Checkpoint: {}", c.display())),
                    None => self.out("   Checkpoint: none written"),
                }
                self.out(&format!("   Cycles completed: {}", o.cycles_completed));
            }
        }
        self.out("");
        for line in crate::report::breakdown(l).lines() {
            self.out(line);
        }
        if let Some(r) = &o.result {
            self.out("");
            self.out("📄 Result:");
            for line in r.lines() {
                self.out(&format!("   {line}"));
            }
        }
        self.out("");
        self.out(&format!("📊 Budget monitoring log: {}", o.log.display()));
        self.out(&format!("   View detailed metrics: cat {}", o.log.display()));
    }
}
