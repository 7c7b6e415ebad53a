//! The command line: clap structs live only here and are converted once into
//! a typed `RunConfig`; nothing past this module sees clap.

use crate::budget::{parse_usd, PriceTable};
use crate::interrupt::Mode;
use crate::llm::{ollama, openai, scripted, Provider};
use crate::run::{Console, RunConfig, DEFAULT_MAX_MESSAGES, DEFAULT_MAX_REQUEST_BYTES};
use crate::BadInput;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "host", version, about = "Run WebAssembly LLM agents under a hard USD budget", args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an agent component under a budget.
    Run(RunArgs),
    /// Say whether a .wasm is an agent or a hook, and whether this host can run it.
    Validate { file: PathBuf },
    /// Continue a run from a checkpoint.
    Resume(ResumeArgs),
    /// Show what a checkpoint holds.
    Inspect {
        checkpoint: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the cost breakdown of an audit log (a run, its resumes, several runs); --html writes a page with charts.
    Report(ReportArgs),
    /// Write a lock file of the plugins' sha256, for `run --lock` (refuses any plugin whose bytes change).
    Lock {
        /// The plugin components (.wasm) to pin.
        #[arg(required = true)]
        plugins: Vec<PathBuf>,
        /// Write the lock here (paths in it relative to its directory) instead of printing it.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Compile a component ahead of time into the cache (tied to this host build and machine).
    Precompile {
        file: PathBuf,
        /// Also write the artifact here.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The embedded GGUF model, in process: free and offline.
    Local,
    /// Any OpenAI-compatible /v1/chat/completions server.
    Openai,
    /// Ollama's /api/chat.
    Ollama,
    /// Replays responses from a JSON file (--script); for tests and demos.
    Scripted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeArg {
    Graceful,
    Immediate,
}

#[derive(Args, Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunArgs {
    /// The agent component (.wasm, world `agent`).
    #[arg(required_unless_present = "team")]
    pub agent: Option<PathBuf>,
    /// Run the agents listed in this TOML file as a team sharing --budget.
    #[arg(long, value_name = "TEAM.toml", conflicts_with = "agent")]
    #[serde(default)]
    pub team: Option<PathBuf>,
    /// A budget tier (e.g. dev, staging, prod) from host.toml or the team file; --budget wins.
    #[arg(long)]
    #[serde(default)]
    pub tier: Option<String>,
    /// Hard limit in USD, e.g. 1.0 (never exceeded).
    #[arg(long, allow_hyphen_values = true, required_unless_present_any = ["team", "tier"])]
    pub budget: Option<String>,
    /// The task given to the agent's init.
    #[arg(long, default_value = "Write a short essay about the history of artificial intelligence.")]
    pub task: String,
    /// Stop after this many cycles if the agent has not finished.
    #[arg(long, default_value_t = 100)]
    pub max_cycles: u32,
    #[arg(long, value_enum, default_value = "local")]
    pub provider: ProviderKind,
    /// The GGUF file for --provider local [default: $BUDGET_HOST_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf].
    #[arg(long)]
    #[serde(default)]
    pub model_path: Option<PathBuf>,
    /// Model name sent to the provider and used for pricing.
    #[arg(long)]
    pub model: Option<String>,
    /// OpenAI-compatible base URL, including /v1.
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub base_url: Option<String>,
    /// Ollama address (scheme optional).
    #[arg(long, env = "OLLAMA_HOST")]
    pub ollama_host: Option<String>,
    /// JSON script for --provider scripted.
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// JSON price file (USD per 1M tokens) overriding and extending the built-in table.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Warning thresholds as fractions of the budget.
    #[arg(long, default_value = "0.5,0.8,0.9")]
    pub warn: String,
    /// Limit on guest instructions (wasmtime fuel) for the whole run.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Memory limit per wasm instance, in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory_mb: u64,
    /// Wall-clock limit for the run, e.g. 30s, 2m, 500ms.
    #[arg(long)]
    pub timeout: Option<String>,
    /// How a budget stop behaves: finish the step, or cancel the guest now.
    #[arg(long, value_enum, default_value = "graceful")]
    pub mode: ModeArg,
    /// Directory for checkpoints and the default log [default: .host/checkpoints/<agent>].
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Audit log (JSON lines) [default: <checkpoint-dir>/budget_monitoring.jsonl].
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Print one JSON summary on stdout (human output goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Only errors on the console.
    #[arg(long)]
    pub quiet: bool,
    /// No live progress display (shown only when stdout is a terminal, without --json or --quiet).
    #[arg(long)]
    #[serde(default)]
    pub no_progress: bool,
    /// Max output tokens for a call that does not ask for a number.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    /// Refuse (rather than shorten) a call when fewer output tokens than this fit the budget.
    #[arg(long, default_value_t = 16)]
    pub min_output_tokens: u32,
    /// Sampling temperature for calls that do not set one.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Per-request provider timeout, e.g. 120s.
    #[arg(long, default_value = "120s")]
    pub provider_timeout: String,
    /// Largest request (sum of message bytes) a guest may send.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Most messages in one request.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGES)]
    pub max_messages: usize,
    /// Do not read or write the compiled-artifact cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Write a checkpoint every N completed cycles (0: only on interrupt and at the end).
    #[arg(long, default_value_t = 5)]
    pub checkpoint_every: u32,
    /// Keep the newest N checkpoints in the checkpoint directory.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub retain: u64,
    /// Do not write a checkpoint when the run is interrupted.
    #[arg(long)]
    pub no_checkpoint_on_interrupt: bool,
    /// A budget hook component, `FILE.wasm` or `FILE.wasm=CONFIG`; repeatable, first = highest priority.
    #[arg(long = "hook", value_name = "FILE[=CONFIG]")]
    pub hooks: Vec<String>,
    /// What a hook that traps, loops or answers nonsense does: deny and stop (closed) or get disabled (open).
    #[arg(long, value_enum, default_value = "closed")]
    pub hook_failure: crate::hooks::FailurePolicy,
    /// Fuel for each hook event.
    #[arg(long, default_value_t = 50_000_000)]
    pub hook_fuel: u64,
    /// Wall-clock limit for each hook event, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub hook_timeout_ms: u64,
    /// Memory limit per hook instance, in MiB.
    #[arg(long, default_value_t = 64)]
    pub hook_memory_mb: u64,
    /// Share one budget with other hosts on a Redis server: redis://host:port/key.
    #[arg(long, value_name = "URL")]
    #[serde(default)]
    pub ledger: Option<String>,
    /// How long a reservation on the shared ledger lives if its host dies mid-call.
    #[arg(long, default_value = "10m")]
    #[serde(default = "default_lease")]
    pub lease: String,
    /// Largest agent snapshot kept, in MiB (1..=256); a bigger one stops the run and the previous checkpoint is kept.
    #[arg(long, value_name = "MIB", default_value_t = default_max_snapshot_mb(), value_parser = clap::value_parser!(u64).range(1..=default_max_snapshot_mb()))]
    #[serde(default = "default_max_snapshot_mb")]
    pub max_snapshot_mb: u64,
    /// Refuse the agent unless its file's sha256 is this (64 hex digits); checked before compiling (teams: use --lock).
    #[arg(long, value_name = "SHA256", conflicts_with = "team")]
    #[serde(default)]
    pub expect_sha256: Option<String>,
    /// A lock file (`host lock`) giving the sha256 of every plugin the run may load; others are refused.
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub lock: Option<PathBuf>,
}

const fn default_max_snapshot_mb() -> u64 {
    (crate::checkpoint::MAX_SNAPSHOT >> 20) as u64
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The checkpoint to continue from (.jsonl.gz).
    #[arg(required_unless_present = "latest", conflicts_with = "latest")]
    pub checkpoint: Option<PathBuf>,
    /// Pick the newest checkpoint in this directory.
    #[arg(long, value_name = "DIR")]
    pub latest: Option<PathBuf>,
    /// With --latest: if the newest checkpoint is damaged, use the newest valid older one.
    #[arg(long, requires = "latest")]
    pub fallback: bool,
    /// New total limit in USD (must be at least what was already spent); default: the old limit.
    #[arg(long, allow_hyphen_values = true)]
    pub budget: Option<String>,
    /// New fuel limit for the whole run (must be above what was already used).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// New --max-cycles.
    #[arg(long)]
    pub max_cycles: Option<u32>,
    /// Resume even though the agent's bytes changed since the checkpoint.
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub quiet: bool,
    /// No live progress display.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The audit log (JSON lines), e.g. .host/checkpoints/<agent>/budget_monitoring.jsonl.
    pub log: PathBuf,
    /// Print the numbers as JSON (money also in exact nano-USD).
    #[arg(long)]
    pub json: bool,
    /// Write a self-contained HTML page with charts and every call.
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
    /// Only the run with this id.
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
}

fn default_lease() -> String {
    "10m".into()
}

/// `30s`, `2m`, `1h`, `500ms`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, BadInput> {
    let t = text.trim();
    let bad = || BadInput(format!("'{text}' is not a duration (examples: 30s, 2m, 500ms)"));
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 365.0 * 86400.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn parse_warn(text: &str) -> Result<Vec<f64>, BadInput> {
    if text.trim().is_empty() || text.trim() == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|p| {
            let v: f64 = p.trim().parse().map_err(|_| BadInput(format!("--warn: '{p}' is not a number")))?;
            if !v.is_finite() || v <= 0.0 || v > 1.0 {
                return Err(BadInput(format!("--warn: {p} must be a fraction of the budget in (0, 1]")));
            }
            Ok(v)
        })
        .collect()
}

fn run_id(agent: &str) -> String {
    let now = chrono::Local::now().format("%Y%m%d_%H%M%S");
    let nonce: u32 = std::process::id() ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos());
    format!("{agent}-{now}-{:04x}", nonce & 0xffff)
}

impl RunArgs {
    /// Validate everything and build the typed config (and the provider) once.
    pub fn into_config(mut self) -> Result<RunConfig, BadInput> {
        if self.tier.is_some() {
            crate::team::apply_tier(&mut self, None)?;
        }
        let settings = serde_json::to_value(&self).expect("run arguments serialise");
        let budget_text = self.budget.as_deref().ok_or_else(|| BadInput("--budget is required (or --tier with a tier that sets one)".into()))?;
        let budget = parse_usd(budget_text).map_err(|e| BadInput(format!("--budget: {e}")))?;
        let agent = self.agent.clone().ok_or_else(|| BadInput("an agent .wasm is required".into()))?;
        let integrity = crate::integrity::Integrity::new(&agent, self.expect_sha256.as_deref(), self.lock.as_deref())
            .map_err(|e| BadInput(e.to_string()))?;
        let warn = parse_warn(&self.warn)?;
        if self.fuel == Some(0) {
            return Err(BadInput("--fuel must be at least 1".into()));
        }
        if self.memory_mb == 0 || self.memory_mb > 64 * 1024 {
            return Err(BadInput(format!("--memory-mb {} is outside 1..=65536", self.memory_mb)));
        }
        if self.max_tokens == 0 {
            return Err(BadInput("--max-tokens must be at least 1".into()));
        }
        if let Some(t) = self.temperature {
            if !t.is_finite() || !(0.0..=2.0).contains(&t) {
                return Err(BadInput(format!("--temperature {t} is outside 0..=2")));
            }
        }
        let timeout = self.timeout.as_deref().map(parse_duration).transpose()?;
        let provider_timeout = parse_duration(&self.provider_timeout)?;
        let prices = match &self.prices {
            Some(p) => PriceTable::load(&p.to_string_lossy()).map_err(|e| BadInput(e.to_string()))?,
            None => PriceTable::default(),
        };
        let (provider, default_model): (Arc<dyn Provider>, String) = match self.provider {
            ProviderKind::Local => {
                let path = self.model_path.clone().unwrap_or_else(llm_local::default_model_path);
                let local = crate::llm::local::Local::load(&path).map_err(|e| BadInput(e.to_string()))?;
                (Arc::new(local), crate::llm::local::MODEL_NAME.into())
            }
            ProviderKind::Openai => {
                let base = self.base_url.clone().unwrap_or_else(|| openai::DEFAULT_BASE_URL.into());
                if !(base.starts_with("http://") || base.starts_with("https://")) {
                    return Err(BadInput(format!("--base-url '{base}' must start with http:// or https://")));
                }
                let key = std::env::var("OPENAI_API_KEY").ok();
                (Arc::new(openai::OpenAi::new(&base, key, provider_timeout)), "gpt-4o-mini".into())
            }
            ProviderKind::Ollama => {
                let host = self.ollama_host.clone().unwrap_or_else(|| ollama::DEFAULT_HOST.into());
                (Arc::new(ollama::Ollama::new(&host, provider_timeout)), "llama3.1".into())
            }
            ProviderKind::Scripted => {
                let path = self.script.as_ref().ok_or_else(|| BadInput("--provider scripted needs --script FILE".into()))?;
                let s = scripted::Scripted::load(&path.to_string_lossy()).map_err(BadInput)?;
                let model = s.model().to_string();
                (Arc::new(s), model)
            }
        };
        let model = self.model.clone().unwrap_or(default_model);
        // A paid provider never runs a model it cannot price.
        if provider.is_paid() && prices.get(&model).is_none() {
            return Err(BadInput(format!(
                "no price for model '{model}' with the {} provider: add it to a --prices file (USD per 1M tokens), e.g. {{\"{model}\": {{\"input\": 0.15, \"output\": 0.6}}}}",
                provider.name()
            )));
        }
        let stem = agent.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "agent".into());
        let checkpoint_dir = self.checkpoint_dir.clone().unwrap_or_else(|| PathBuf::from(".host/checkpoints").join(&stem));
        let log = self.log.clone().unwrap_or_else(|| checkpoint_dir.join("budget_monitoring.jsonl"));
        Ok(RunConfig {
            run_id: run_id(&stem),
            agent,
            task: self.task,
            budget,
            warn,
            max_cycles: self.max_cycles,
            fuel: self.fuel,
            memory_bytes: (self.memory_mb << 20) as usize,
            timeout,
            mode: match self.mode {
                ModeArg::Graceful => Mode::Graceful,
                ModeArg::Immediate => Mode::Immediate,
            },
            provider,
            model,
            prices,
            default_max_tokens: self.max_tokens,
            max_tokens_cap: self.max_tokens.max(8192),
            min_output_tokens: self.min_output_tokens.max(1),
            temperature: self.temperature,
            checkpoint_dir,
            log,
            console: Console {
                json: self.json,
                quiet: self.quiet,
                progress: crate::progress::Progress::terminal(!(self.json || self.quiet || self.no_progress)),
                ..Default::default()
            },
            max_request_bytes: self.max_request_bytes,
            max_messages: self.max_messages,
            cache_dir: if self.no_cache { None } else { crate::engine::default_cache_dir() },
            checkpoint_every: self.checkpoint_every,
            retain: self.retain as usize,
            checkpoint_on_interrupt: !self.no_checkpoint_on_interrupt,
            settings,
            resume: None,
            hooks: self.hooks.iter().map(|h| crate::hooks::HookSpec::parse(h)).collect(),
            hook_limits: crate::hooks::HookLimits {
                fuel_per_event: self.hook_fuel.max(1),
                ticks_per_event: (self.hook_timeout_ms / 10).max(1),
                memory_bytes: (self.hook_memory_mb.clamp(1, 4096) << 20) as usize,
            },
            hook_failure: self.hook_failure,
            pool: None,
            ledger_url: match &self.ledger {
                Some(u) => {
                    crate::pool::redis::split_url(u).map_err(BadInput)?;
                    Some(u.clone())
                }
                None => None,
            },
            lease: parse_duration(&self.lease)?,
            agent_name: None,
            agent_ledger: None,
            max_snapshot_bytes: (self.max_snapshot_mb.clamp(1, default_max_snapshot_mb()) << 20) as usize,
            integrity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        for bad in ["", "0s", "-1s", "abc", "5x", "nan"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn warn_thresholds() {
        assert_eq!(parse_warn("0.5,0.8,0.9").unwrap(), vec![0.5, 0.8, 0.9]);
        assert!(parse_warn("none").unwrap().is_empty());
        for bad in ["0", "1.5", "x", "NaN", "0.5,,0.8"] {
            assert!(parse_warn(bad).is_err(), "{bad}");
        }
    }
}
