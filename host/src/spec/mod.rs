//! What a run is: [`RunSpec`], built once (by the CLI, a team file or an
//! embedder) with [`RunSpecBuilder`] and stored whole in every checkpoint.
//!
//! A spec holds everything that defines the run and must survive a resume:
//! the agent and hook pins, the budget, limits, modes, thresholds, task,
//! model, hook configs and prices by value. It never holds where output goes
//! (log, checkpoint directory), an endpoint, a key or a ledger URL: those come
//! from the invocation that runs it ([`crate::RunOptions`]), so a stored spec
//! (a checkpoint, a manifest) cannot send a key or write a file anywhere.
//! This module knows nothing of clap, wasm or IO.

mod builder;
mod parse;

pub use builder::RunSpecBuilder;
pub use parse::{parse_duration, parse_warn};

use crate::budget::{BudgetError, Nanos, PriceTable};
use crate::interrupt::Mode;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A spec that cannot run, with the reason (a bad flag, a bad team entry).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

impl From<BudgetError> for SpecError {
    fn from(e: BudgetError) -> Self {
        SpecError(e.to_string())
    }
}

/// A plugin file to read, and the sha256 its bytes must have when one is pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginPin {
    /// Where the file is read from.
    pub path: PathBuf,
    /// Lowercase hex sha256 the bytes must have; `None` accepts the file as it is
    /// (a fresh run pins what it loads, and its checkpoints record that).
    pub sha256: Option<String>,
    /// Who pinned it (`--expect-sha256`, `lock file X`): a pin of the user's,
    /// which `resume --force` keeps. `None`: the run recorded what it loaded.
    #[serde(default)]
    pub by: Option<String>,
}

impl PluginPin {
    /// A file, not pinned yet.
    pub fn file(path: impl Into<PathBuf>) -> PluginPin {
        PluginPin { path: path.into(), sha256: None, by: None }
    }
}

/// A budget hook of the run: its name (unique in the run), file and configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    /// How logs, decisions and checkpoints name it.
    pub name: String,
    /// The component file.
    pub plugin: PluginPin,
    /// Free-form text handed to the hook's `on-start`.
    pub config: String,
}

impl HookSpec {
    /// `[NAME=]FILE.wasm[=CONFIG]`: the first segment ending in `.wasm` is the
    /// file; a segment before it is the hook's name (else the file stem).
    pub fn parse(text: &str) -> Result<HookSpec, SpecError> {
        let (name, rest) = match text.split_once('=') {
            Some((n, rest)) if !n.ends_with(".wasm") && rest.contains(".wasm") => (Some(n.to_string()), rest),
            _ => (None, text),
        };
        let (file, config) = match rest.split_once(".wasm=") {
            Some((p, c)) => (format!("{p}.wasm"), c.to_string()),
            None => (rest.to_string(), String::new()),
        };
        if file.is_empty() {
            return Err(SpecError(format!("--hook '{text}': no component file")));
        }
        let path = PathBuf::from(file);
        let name = name.unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "hook".into()));
        check_name("hook", &name)?;
        Ok(HookSpec { name, plugin: PluginPin::file(path), config })
    }
}

/// Names of agents and hooks appear in logs, file names and messages.
pub fn check_name(what: &str, name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        return Err(SpecError(format!("{what} name '{name}' must be 1 to 64 letters, digits, '.', '-' or '_'")));
    }
    Ok(())
}

/// Which provider answers the calls. Where it is (URL, key, model file) is
/// the invocation's business, never the spec's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The embedded GGUF model, in process: free and offline.
    Local,
    /// Any OpenAI-compatible `/v1/chat/completions` server.
    Openai,
    /// Ollama's `/api/chat`.
    Ollama,
    /// Responses replayed from a JSON file; for tests and demos.
    Scripted,
}

impl ProviderKind {
    /// The name used in flags, logs and banners.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Openai => "openai",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Scripted => "scripted",
        }
    }

    /// The model used when the run names none.
    pub fn default_model(self) -> &'static str {
        match self {
            ProviderKind::Local => "smollm2-135m-instruct",
            ProviderKind::Openai => "gpt-4o-mini",
            ProviderKind::Ollama => "llama3.1",
            ProviderKind::Scripted => "scripted",
        }
    }
}

/// What a hook that traps, loops or answers nonsense does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Deny the call and stop the run.
    #[default]
    Closed,
    /// Log the failure, disable the hook, go on.
    Open,
}

/// Limits on the agent and on what it may ask of the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Stop after this many cycles if the agent has not finished.
    pub max_cycles: u32,
    /// Guest instructions (wasmtime fuel) for the whole run, resumes included.
    pub fuel: Option<u64>,
    /// Linear memory per agent instance, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock limit for one process's part of the run.
    pub timeout: Option<Duration>,
    /// Largest request (sum of message bytes) a guest may send.
    pub max_request_bytes: usize,
    /// Most messages in one request.
    pub max_messages: usize,
    /// Largest agent snapshot kept, in bytes.
    pub max_snapshot_bytes: usize,
    /// Max output tokens for a call that does not ask for a number.
    pub default_max_tokens: u32,
    /// No call may ask for more output tokens than this.
    pub max_tokens_cap: u32,
    /// Below this many output tokens a call is refused rather than shortened.
    pub min_output_tokens: u32,
    /// Wall-clock limit for one agent entry (`init`, `step`, `snapshot`, `restore`).
    pub step_timeout: Option<Duration>,
}

/// Default largest request a guest may send (sum of message bytes).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1 << 20;
/// Default most messages in one request.
pub const DEFAULT_MAX_MESSAGES: usize = 1024;
/// Default wall-clock limit of one agent entry: generous for a step of many
/// LLM calls, finite so a guest blocked in WASI cannot hold the host forever.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The largest snapshot a checkpoint holds.
pub const MAX_SNAPSHOT_BYTES: usize = 256 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cycles: 100,
            fuel: None,
            memory_bytes: 256 << 20,
            timeout: None,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_messages: DEFAULT_MAX_MESSAGES,
            max_snapshot_bytes: MAX_SNAPSHOT_BYTES,
            default_max_tokens: 512,
            max_tokens_cap: 8192,
            min_output_tokens: 16,
            step_timeout: Some(DEFAULT_STEP_TIMEOUT),
        }
    }
}

/// Limits for each hook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookLimits {
    /// Fuel for one event.
    pub fuel_per_event: u64,
    /// Wall-clock limit for one event.
    pub time_per_event: Duration,
    /// Linear memory per hook instance, in bytes.
    pub memory_bytes: usize,
}

impl Default for HookLimits {
    fn default() -> Self {
        HookLimits { fuel_per_event: 50_000_000, time_per_event: Duration::from_secs(1), memory_bytes: 64 << 20 }
    }
}

/// When checkpoints are written and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPolicy {
    /// Every N completed cycles (0: only on interrupt and at the end).
    pub every: u32,
    /// Keep the newest N of this run's checkpoints.
    pub retain: u32,
    /// Write one when the run is interrupted.
    pub on_interrupt: bool,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy { every: 5, retain: 20, on_interrupt: true }
    }
}

/// Everything that defines a run. Build one with [`RunSpec::builder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The agent component.
    pub agent: PluginPin,
    /// The agent's name in logs, events and file names (a team member's name, else the file stem).
    pub agent_name: String,
    /// Hooks in priority order (the first wins a tie).
    pub hooks: Vec<HookSpec>,
    /// The task given to the agent's `init`.
    pub task: String,
    /// The hard limit, in nano-USD.
    pub budget: Nanos,
    /// Warning thresholds as fractions of the budget.
    pub warn: Vec<f64>,
    /// How a budget stop behaves.
    pub mode: Mode,
    /// Which provider answers.
    pub provider: ProviderKind,
    /// The model used when a request names none (and priced).
    pub model: String,
    /// Sampling temperature for calls that do not set one (`None`: the provider's default).
    pub temperature: Option<f32>,
    /// The script file of the scripted provider.
    pub script: Option<PluginPin>,
    /// Prices in force, by value (a resume prices as the run did).
    pub prices: PriceTable,
    /// Limits on the agent.
    pub limits: Limits,
    /// Limits on each hook event.
    pub hook_limits: HookLimits,
    /// What a failing hook does.
    pub hook_failure: FailurePolicy,
    /// Checkpoint schedule.
    pub checkpoints: CheckpointPolicy,
    /// How long a reservation on a shared ledger lives if its host dies mid-call.
    pub lease: Duration,
}

impl RunSpec {
    /// A builder for a run of the agent at `agent`. Defaults: the local
    /// provider, a budget of $1, warnings at 50/80/90%, graceful stops, 100
    /// cycles, 256 MiB per instance, no fuel limit, checkpoints every 5 cycles.
    pub fn builder(agent: impl Into<PathBuf>) -> RunSpecBuilder {
        let agent: PathBuf = agent.into();
        let agent_name = agent.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "agent".into());
        RunSpecBuilder {
            spec: RunSpec {
                agent: PluginPin::file(agent),
                agent_name,
                hooks: Vec::new(),
                task: DEFAULT_TASK.into(),
                budget: crate::budget::NANOS_PER_USD,
                warn: vec![0.5, 0.8, 0.9],
                mode: Mode::Graceful,
                provider: ProviderKind::Local,
                model: String::new(),
                temperature: None,
                script: None,
                prices: PriceTable::default(),
                limits: Limits::default(),
                hook_limits: HookLimits::default(),
                hook_failure: FailurePolicy::Closed,
                checkpoints: CheckpointPolicy::default(),
                lease: Duration::from_secs(600),
            },
            errors: Vec::new(),
        }
    }

    /// Every plugin of the run, agent first.
    pub fn plugins(&self) -> impl Iterator<Item = &PluginPin> {
        std::iter::once(&self.agent).chain(self.hooks.iter().map(|h| &h.plugin))
    }

    /// Pin every plugin to the sha256 a lock file gives; a plugin the lock does not list is refused.
    pub fn apply_lock(&mut self, lock: &crate::integrity::LockPins) -> Result<(), SpecError> {
        for pin in std::iter::once(&mut self.agent).chain(self.hooks.iter_mut().map(|h| &mut h.plugin)) {
            let sha = lock
                .sha256_of(&pin.path)
                .ok_or_else(|| SpecError(format!("refusing {}: it is not listed in {}, nothing was compiled", pin.path.display(), lock.by())))?;
            pin.sha256 = Some(sha.to_string());
            pin.by = Some(lock.by());
        }
        Ok(())
    }
}

/// The task when none is given: the seed's essay.
pub const DEFAULT_TASK: &str = "Write a short essay about the history of artificial intelligence.";

/// The file stem of a path, for default names.
pub fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "agent".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_specs() {
        let h = HookSpec::parse("a/b.wasm").unwrap();
        assert_eq!((h.name.as_str(), h.plugin.path.to_str().unwrap(), h.config.as_str()), ("b", "a/b.wasm", ""));
        let h = HookSpec::parse("b.wasm=x=1,y=2").unwrap();
        assert_eq!((h.name.as_str(), h.config.as_str()), ("b", "x=1,y=2"));
        let h = HookSpec::parse("cap=dir/hook.wasm=max=3").unwrap();
        assert_eq!((h.name.as_str(), h.plugin.path.to_str().unwrap(), h.config.as_str()), ("cap", "dir/hook.wasm", "max=3"));
        let h = HookSpec::parse("cap=dir/hook.wasm").unwrap();
        assert_eq!((h.name.as_str(), h.config.as_str()), ("cap", ""));
        assert!(HookSpec::parse("bad name=h.wasm").is_err());
    }

    #[test]
    fn builder_checks_and_defaults() {
        let s = RunSpec::builder("x/essay.wasm").budget_usd(0.1).build().unwrap();
        assert_eq!((s.agent_name.as_str(), s.budget, s.model.as_str()), ("essay", 100_000_000, crate::llm::local::MODEL_NAME));
        for b in [
            RunSpec::builder("a.wasm").budget_usd(-1.0),
            RunSpec::builder("a.wasm").fuel(Some(0)),
            RunSpec::builder("a.wasm").memory_mb(0),
            RunSpec::builder("a.wasm").temperature(Some(3.0)),
            RunSpec::builder("a.wasm").warn(&[1.5]),
            RunSpec::builder("a.wasm").provider(ProviderKind::Scripted),
            RunSpec::builder("a.wasm").hook(HookSpec::parse("h.wasm").unwrap()).hook(HookSpec::parse("x/h.wasm").unwrap()),
        ] {
            assert!(b.build().is_err());
        }
    }

    #[test]
    fn a_spec_round_trips_through_json() {
        let s = RunSpec::builder("a.wasm").hook(HookSpec::parse("h.wasm=cfg").unwrap()).timeout(Some(Duration::from_millis(1500))).build().unwrap();
        let back: RunSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
