//! [`RunSpecBuilder`]: each setter checks its value; `build` reports the first problem.

use super::*;
use crate::budget::usd_to_nanos;

/// Builds a [`RunSpec`]; each setter checks its value, `build` reports the first problem.
#[derive(Debug, Clone)]
pub struct RunSpecBuilder {
    pub(super) spec: RunSpec,
    pub(super) errors: Vec<String>,
}

impl RunSpecBuilder {
    fn fail(mut self, msg: String) -> Self {
        self.errors.push(msg);
        self
    }

    /// The hard limit in USD (positive, at most 1,000,000).
    pub fn budget_usd(self, usd: f64) -> Self {
        match usd_to_nanos(usd) {
            Ok(n) => self.budget_nanos(n),
            Err(e) => self.fail(format!("budget (--budget): {e}")),
        }
    }

    /// The hard limit in nano-USD.
    pub fn budget_nanos(mut self, nanos: Nanos) -> Self {
        if nanos == 0 {
            return self.fail("budget (--budget) must be more than 0".into());
        }
        self.spec.budget = nanos;
        self
    }

    /// The agent's name in logs and events.
    pub fn agent_name(mut self, name: &str) -> Self {
        if let Err(e) = check_name("agent", name) {
            return self.fail(e.0);
        }
        self.spec.agent_name = name.into();
        self
    }

    /// The sha256 the agent's file must have (`--expect-sha256`).
    pub fn expect_agent_sha256(mut self, sha256: &str, by: &str) -> Self {
        match crate::integrity::parse_sha256(by, sha256) {
            Ok(h) => {
                self.spec.agent.sha256 = Some(h);
                self.spec.agent.by = Some(by.into());
                self
            }
            Err(e) => self.fail(e.to_string()),
        }
    }

    /// A hook, after those already added (lower priority). Names must be unique.
    pub fn hook(mut self, hook: HookSpec) -> Self {
        if self.spec.hooks.iter().any(|h| h.name == hook.name) {
            let msg = format!(
                "two hooks are named '{}': name them apart with --hook NAME=FILE.wasm (e.g. --hook {}-2={})",
                hook.name,
                hook.name,
                hook.plugin.path.display()
            );
            return self.fail(msg);
        }
        self.spec.hooks.push(hook);
        self
    }

    /// The task given to the agent's `init`.
    pub fn task(mut self, task: &str) -> Self {
        self.spec.task = task.into();
        self
    }

    /// Warning thresholds as fractions of the budget, each in (0, 1].
    pub fn warn(mut self, thresholds: &[f64]) -> Self {
        if let Some(t) = thresholds.iter().find(|t| !t.is_finite() || **t <= 0.0 || **t > 1.0) {
            return self.fail(format!("warning threshold (--warn) {t} must be a fraction of the budget in (0, 1]"));
        }
        self.spec.warn = thresholds.to_vec();
        self
    }

    /// How a budget stop behaves.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.spec.mode = mode;
        self
    }

    /// Which provider answers, and its default model unless [`Self::model`] names one.
    pub fn provider(mut self, kind: ProviderKind) -> Self {
        self.spec.provider = kind;
        self
    }

    /// The model used when a request names none.
    pub fn model(mut self, model: &str) -> Self {
        if model.is_empty() || model.len() > 256 {
            return self.fail(format!("model name (--model) '{model}' must be 1 to 256 bytes"));
        }
        self.spec.model = model.into();
        self
    }

    /// The scripted provider's file.
    pub fn script(mut self, path: impl Into<PathBuf>) -> Self {
        self.spec.script = Some(PluginPin::file(path));
        self
    }

    /// Default sampling temperature (0..=2).
    pub fn temperature(mut self, t: Option<f32>) -> Self {
        if let Some(v) = t {
            if !v.is_finite() || !(0.0..=2.0).contains(&v) {
                return self.fail(format!("temperature (--temperature) {v} is outside 0..=2"));
            }
        }
        self.spec.temperature = t;
        self
    }

    /// Prices in force.
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.spec.prices = prices;
        self
    }

    /// Stop after this many cycles.
    pub fn max_cycles(mut self, n: u32) -> Self {
        self.spec.limits.max_cycles = n;
        self
    }

    /// Fuel for the whole run (at least 1).
    pub fn fuel(mut self, fuel: Option<u64>) -> Self {
        if fuel == Some(0) {
            return self.fail("fuel (--fuel) must be at least 1".into());
        }
        self.spec.limits.fuel = fuel;
        self
    }

    /// Memory per agent instance, in MiB (1..=65536).
    pub fn memory_mb(mut self, mb: u64) -> Self {
        if mb == 0 || mb > 64 * 1024 {
            return self.fail(format!("memory limit (--memory-mb) of {mb} MiB is outside 1..=65536"));
        }
        self.spec.limits.memory_bytes = (mb << 20) as usize;
        self
    }

    /// Wall-clock limit for the run.
    pub fn timeout(mut self, t: Option<Duration>) -> Self {
        self.spec.limits.timeout = t;
        self
    }

    /// Wall-clock limit for one agent entry (init, step, snapshot, restore).
    pub fn step_timeout(mut self, t: Option<Duration>) -> Self {
        self.spec.limits.step_timeout = t;
        self
    }

    /// Default and cap of output tokens per call.
    pub fn max_tokens(mut self, n: u32) -> Self {
        if n == 0 {
            return self.fail("max tokens (--max-tokens) must be at least 1".into());
        }
        self.spec.limits.default_max_tokens = n;
        self.spec.limits.max_tokens_cap = n.max(8192);
        self
    }

    /// Refuse rather than shorten a call when fewer output tokens than this fit.
    pub fn min_output_tokens(mut self, n: u32) -> Self {
        self.spec.limits.min_output_tokens = n.max(1);
        self
    }

    /// Request size limits: bytes and messages.
    pub fn request_limits(mut self, max_bytes: usize, max_messages: usize) -> Self {
        self.spec.limits.max_request_bytes = max_bytes;
        self.spec.limits.max_messages = max_messages;
        self
    }

    /// Largest agent snapshot kept, in MiB (1..=256).
    pub fn max_snapshot_mb(mut self, mb: u64) -> Self {
        if mb == 0 || mb > (MAX_SNAPSHOT_BYTES >> 20) as u64 {
            return self.fail(format!("snapshot limit (--max-snapshot-mb) of {mb} MiB is outside 1..={}", MAX_SNAPSHOT_BYTES >> 20));
        }
        self.spec.limits.max_snapshot_bytes = (mb << 20) as usize;
        self
    }

    /// Limits on each hook event.
    pub fn hook_limits(mut self, fuel: u64, time: Duration, memory_mb: u64) -> Self {
        self.spec.hook_limits = HookLimits { fuel_per_event: fuel.max(1), time_per_event: time, memory_bytes: (memory_mb.clamp(1, 4096) << 20) as usize };
        self
    }

    /// What a failing hook does.
    pub fn hook_failure(mut self, p: FailurePolicy) -> Self {
        self.spec.hook_failure = p;
        self
    }

    /// Checkpoint schedule.
    pub fn checkpoints(mut self, every: u32, retain: u32, on_interrupt: bool) -> Self {
        if retain == 0 {
            return self.fail("retention (--retain) must keep at least 1 checkpoint".into());
        }
        self.spec.checkpoints = CheckpointPolicy { every, retain, on_interrupt };
        self
    }

    /// Lease of a reservation on a shared ledger.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.spec.lease = lease;
        self
    }

    /// The spec, or the first problem found.
    pub fn build(self) -> Result<RunSpec, SpecError> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(SpecError(e));
        }
        let mut spec = self.spec;
        if spec.model.is_empty() {
            spec.model = spec.provider.default_model().into();
        }
        if spec.provider == ProviderKind::Scripted && spec.script.is_none() {
            return Err(SpecError("the scripted provider needs a script file (--script FILE)".into()));
        }
        Ok(spec)
    }
}

