//! `host run`: flags -> a `RunSpec` (what the run is) and `RunOptions`
//! (where it goes and what it talks to), then one agent or a team.

use super::signals;
use budget_host::budget::{parse_usd, PriceTable};
use budget_host::console::Console;
use budget_host::interrupt::Mode;
use budget_host::llm::Endpoints;
use budget_host::spec::{self, FailurePolicy, HookSpec, ProviderKind, RunSpec, RunSpecBuilder, DEFAULT_MAX_MESSAGES, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_TASK};
use budget_host::{BadInput, RunOptions};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderArg {
    /// The embedded GGUF model, in process: free and offline.
    Local,
    /// Any OpenAI-compatible /v1/chat/completions server.
    Openai,
    /// Ollama's /api/chat.
    Ollama,
    /// Replays responses from a JSON file (--script); for tests and demos.
    Scripted,
}

impl From<ProviderArg> for ProviderKind {
    fn from(p: ProviderArg) -> Self {
        match p {
            ProviderArg::Local => ProviderKind::Local,
            ProviderArg::Openai => ProviderKind::Openai,
            ProviderArg::Ollama => ProviderKind::Ollama,
            ProviderArg::Scripted => ProviderKind::Scripted,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Graceful,
    Immediate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailureArg {
    /// Deny the call and stop the run.
    Closed,
    /// Log the failure, disable the hook, go on.
    Open,
}

/// Where the providers are: flags and environment of this invocation (a resume takes its own).
#[derive(Args, Debug, Clone)]
pub struct EndpointArgs {
    /// The GGUF file for --provider local [default: $BUDGET_HOST_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf].
    #[arg(long)]
    pub model_path: Option<PathBuf>,
    /// OpenAI-compatible base URL, including /v1.
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub base_url: Option<String>,
    /// Ollama address (scheme optional).
    #[arg(long, env = "OLLAMA_HOST")]
    pub ollama_host: Option<String>,
    /// Per-request provider timeout, e.g. 120s.
    #[arg(long, default_value = "120s")]
    pub provider_timeout: String,
}

impl EndpointArgs {
    pub fn endpoints(&self) -> Result<Endpoints, BadInput> {
        Ok(Endpoints {
            base_url: self.base_url.clone(),
            ollama_host: self.ollama_host.clone(),
            model_path: self.model_path.clone(),
            timeout: spec::parse_duration(&self.provider_timeout).map_err(|e| BadInput(format!("--provider-timeout: {e}")))?,
            openai_key: std::env::var("OPENAI_API_KEY").ok().filter(|k| !k.is_empty()),
        })
    }
}

/// Where output goes and how it looks.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Directory for checkpoints and the default log [default: .host/checkpoints/<agent>; a resume: the checkpoint's own].
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Audit log (JSON lines) [default: <checkpoint-dir>/budget_monitoring.jsonl].
    #[arg(long)]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub shown: ConsoleArgs,
    /// Share one budget with other hosts on a Redis server: redis://host:port/key.
    #[arg(long, value_name = "URL")]
    pub ledger: Option<String>,
    /// Do not journal calls (the write-ahead journal in the checkpoint directory lets a
    /// resume after a crash count every call and replay answered ones at $0).
    #[arg(long)]
    pub no_journal: bool,
}

impl OutputArgs {
    /// The write-ahead journal in `dir`, unless `--no-journal`.
    pub fn journal(&self, dir: &Path) -> Result<Option<budget_host::journal::Journal>, BadInput> {
        if self.no_journal {
            return Ok(None);
        }
        // Trimmed to what the checkpoints kept in `dir` still need: a run's
        // records from its oldest retained checkpoint on.
        let path = dir.join(budget_host::journal::FILE);
        let journal = match budget_host::checkpoint::journal_needs(dir) {
            Ok(needs) => budget_host::journal::Journal::open_trimmed(&path, |r| {
                needs.get(&budget_host::checkpoint::run_tag(r.run_id())).is_some_and(|from| r.seq() >= *from)
            }),
            Err(_) => budget_host::journal::Journal::open(&path),
        };
        journal.map(Some).map_err(bad)
    }
}

/// How a verb's output looks, and whether it uses the compiled-artifact cache
/// (`run`, `resume` and `replay` alike).
#[derive(Args, Debug, Clone)]
pub struct ConsoleArgs {
    /// Print one JSON summary on stdout (human output, guests' included, goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Only errors on the console.
    #[arg(long)]
    pub quiet: bool,
    /// No live progress display (shown only when stdout is a terminal, without --json or --quiet).
    #[arg(long)]
    pub no_progress: bool,
    /// Do not read or write the compiled-artifact cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl ConsoleArgs {
    pub fn console(&self) -> Console {
        Console {
            json: self.json,
            quiet: self.quiet,
            progress: budget_host::progress::Progress::terminal(!(self.json || self.quiet || self.no_progress)),
            ..Default::default()
        }
    }
}

impl OutputArgs {
    pub fn console(&self) -> Console {
        self.shown.console()
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The agent component (.wasm, world `agent`).
    #[arg(required_unless_present = "team")]
    pub agent: Option<PathBuf>,
    /// Run the agents listed in this TOML file as a team sharing --budget.
    #[arg(long, value_name = "TEAM.toml", conflicts_with = "agent")]
    pub team: Option<PathBuf>,
    /// A budget tier (e.g. dev, staging, prod) from host.toml or the team file; --budget wins.
    #[arg(long)]
    pub tier: Option<String>,
    /// Hard limit in USD, e.g. 1.0 (never exceeded).
    #[arg(long, allow_hyphen_values = true, required_unless_present_any = ["team", "tier"])]
    pub budget: Option<String>,
    /// The task given to the agent's init.
    #[arg(long, default_value = DEFAULT_TASK)]
    pub task: String,
    /// Stop after this many cycles if the agent has not finished.
    #[arg(long, default_value_t = 100)]
    pub max_cycles: u32,
    #[arg(long, value_enum, default_value = "local")]
    pub provider: ProviderArg,
    /// Model name sent to the provider and used for pricing.
    #[arg(long)]
    pub model: Option<String>,
    /// JSON script for --provider scripted.
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Price file overriding and extending the built-in table (OpenAI and Anthropic list prices, late 2025): ours (USD per 1M tokens) or LiteLLM's model prices JSON.
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
    /// Wall-clock limit for each agent entry (init, each step, snapshot, restore); `none` for no limit.
    #[arg(long, default_value = "30m")]
    pub step_timeout: String,
    /// How a budget stop behaves: finish the step, or cancel the guest now.
    #[arg(long, value_enum, default_value = "graceful")]
    pub mode: ModeArg,
    /// Max output tokens for a call that does not ask for a number.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,
    /// Refuse (rather than shorten) a call when fewer output tokens than this fit the budget.
    #[arg(long, default_value_t = 16)]
    pub min_output_tokens: u32,
    /// Sampling temperature for calls that do not set one [default: the provider's].
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Largest request (sum of message bytes) a guest may send.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
    /// Most messages in one request.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGES)]
    pub max_messages: usize,
    /// Write a checkpoint every N completed cycles (0: only on interrupt and at the end).
    #[arg(long, default_value_t = 5)]
    pub checkpoint_every: u32,
    /// Keep the newest N checkpoints of this run in the checkpoint directory.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub retain: u32,
    /// Do not write a checkpoint when the run is interrupted.
    #[arg(long)]
    pub no_checkpoint_on_interrupt: bool,
    /// A budget hook: `FILE.wasm`, `FILE.wasm=CONFIG`, `NAME=FILE.wasm[=CONFIG]`; repeatable, first = highest priority.
    #[arg(long = "hook", value_name = "[NAME=]FILE[=CONFIG]")]
    pub hooks: Vec<String>,
    /// What a hook that traps, loops or answers nonsense does: deny and stop (closed) or get disabled (open).
    #[arg(long, value_enum, default_value = "closed")]
    pub hook_failure: FailureArg,
    /// Fuel for each hook event.
    #[arg(long, default_value_t = 50_000_000)]
    pub hook_fuel: u64,
    /// Wall-clock limit for each hook event, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub hook_timeout_ms: u64,
    /// Memory limit per hook instance, in MiB.
    #[arg(long, default_value_t = 64)]
    pub hook_memory_mb: u64,
    /// How long a reservation on the shared ledger lives if its host dies mid-call.
    #[arg(long, default_value = "10m")]
    pub lease: String,
    /// Largest agent snapshot kept, in MiB (1..=256); a bigger one stops the run and the previous checkpoint is kept.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub max_snapshot_mb: u64,
    /// Refuse the agent unless its file's sha256 is this (64 hex digits); checked before compiling (teams: use --lock).
    #[arg(long, value_name = "SHA256", conflicts_with = "team")]
    pub expect_sha256: Option<String>,
    /// The run's id in logs and checkpoints (default: the agent's name, the time and a nonce).
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// After the run, say what its tokens would have cost on this model (priced in the table); repeatable.
    #[arg(long, value_name = "MODEL")]
    pub compare: Vec<String>,
    /// A lock file (`host lock`) giving the sha256 of every plugin the run may load; others are refused.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Record the run's calls into a tape written here at its end (`.gz`: gzipped), for `host replay`.
    #[arg(long, value_name = "TAPE", conflicts_with = "team")]
    pub record: Option<PathBuf>,
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

fn bad(e: impl std::fmt::Display) -> BadInput {
    BadInput(e.to_string())
}

impl RunArgs {
    /// The tier's budget and thresholds, applied where flags did not say otherwise.
    fn tier(&self, file: Option<&Path>) -> Result<(Option<String>, Option<Vec<f64>>), BadInput> {
        let Some(name) = &self.tier else { return Ok((self.budget.clone(), None)) };
        let t = budget_host::team::tier(name, file)?;
        Ok((self.budget.clone().or(Some(format!("{}", t.budget))), t.warn))
    }

    /// Everything but the agent and the budget, shared by a run and a team's agents.
    fn builder(&self, agent: &Path, warn: Option<Vec<f64>>) -> Result<RunSpecBuilder, BadInput> {
        let warn = match warn {
            Some(w) => w,
            None => spec::parse_warn(&self.warn).map_err(bad)?,
        };
        let timeout = self.timeout.as_deref().map(spec::parse_duration).transpose().map_err(bad)?;
        let step_timeout = match self.step_timeout.as_str() {
            "none" => None,
            t => Some(spec::parse_duration(t).map_err(|e| BadInput(format!("--step-timeout: {e}")))?),
        };
        let prices = match &self.prices {
            Some(p) => PriceTable::load(&p.to_string_lossy()).map_err(bad)?,
            None => PriceTable::default(),
        };
        let mut b = RunSpec::builder(agent)
            .task(&self.task)
            .max_cycles(self.max_cycles)
            .provider(self.provider.into())
            .prices(prices)
            .warn(&warn)
            .fuel(self.fuel)
            .memory_mb(self.memory_mb)
            .timeout(timeout)
            .step_timeout(step_timeout)
            .mode(match self.mode {
                ModeArg::Graceful => Mode::Graceful,
                ModeArg::Immediate => Mode::Immediate,
            })
            .max_tokens(self.max_tokens)
            .min_output_tokens(self.min_output_tokens)
            .temperature(self.temperature)
            .request_limits(self.max_request_bytes, self.max_messages)
            .checkpoints(self.checkpoint_every, self.retain, !self.no_checkpoint_on_interrupt)
            .hook_limits(self.hook_fuel, std::time::Duration::from_millis(self.hook_timeout_ms.max(1)), self.hook_memory_mb)
            .hook_failure(match self.hook_failure {
                FailureArg::Closed => FailurePolicy::Closed,
                FailureArg::Open => FailurePolicy::Open,
            })
            .lease(spec::parse_duration(&self.lease).map_err(|e| BadInput(format!("--lease: {e}")))?)
            .max_snapshot_mb(self.max_snapshot_mb);
        if let Some(script) = &self.script {
            b = b.script(script);
        }
        if let Some(m) = &self.model {
            b = b.model(m);
        }
        for h in &self.hooks {
            b = b.hook(HookSpec::parse(h).map_err(bad)?);
        }
        Ok(b)
    }

    fn options(&self, provider: Arc<dyn budget_host::llm::Provider>, stop: Arc<budget_host::interrupt::StopSignal>) -> RunOptions {
        let mut o = RunOptions::new(provider).console(self.output.console()).stop(stop);
        o.checkpoint_dir = self.output.checkpoint_dir.clone();
        o.log = self.output.log.clone();
        o.seal_key = budget_host::checkpoint::seal_key_from_env();
        o.run_id = self.run_id.clone();
        o.record = self.record.clone();
        o
    }
}

/// The shared ledger of `--ledger`, connected before anything is spent.
pub async fn shared_ledger(url: Option<&str>, limit: budget_host::budget::Nanos, lease: std::time::Duration) -> anyhow::Result<Option<Arc<dyn budget_host::shared_ledger::SharedLedger>>> {
    let Some(url) = url else { return Ok(None) };
    budget_host::shared_ledger::redis::split_url(url).map_err(BadInput)?;
    let l = budget_host::shared_ledger::redis::RedisLedger::connect(url, limit, lease, std::time::Duration::from_secs(5)).await.map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some(Arc::new(l)))
}

pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    if let Some(team) = args.team.clone() {
        return run_team(args, &team).await;
    }
    let (budget, warn) = args.tier(None)?;
    let budget = budget.ok_or_else(|| BadInput("--budget is required (or --tier with a tier that sets one)".into()))?;
    let budget = parse_usd(&budget).map_err(|e| BadInput(format!("--budget: {e}")))?;
    let agent = args.agent.clone().ok_or_else(|| BadInput("an agent .wasm is required".into()))?;
    let mut b = args.builder(&agent, warn)?.budget_nanos(budget);
    if let Some(h) = &args.expect_sha256 {
        b = b.expect_agent_sha256(h, "--expect-sha256");
    }
    let mut spec = b.build().map_err(bad)?;
    if let Some(id) = &args.run_id {
        spec::check_name("run id", id).map_err(bad)?;
    }
    if let Some(lock) = &args.lock {
        spec.apply_lock(&budget_host::integrity::LockPins::read(lock).map_err(bad)?).map_err(bad)?;
    }
    let provider = budget_host::llm::connect(&mut spec, &args.endpoints.endpoints()?).map_err(BadInput)?;
    let host = super::host(args.output.shown.no_cache)?;
    let stop = budget_host::interrupt::StopSignal::new();
    let mut opts = args.options(provider, stop.clone());
    opts.journal = args.output.journal(&opts.checkpoint_dir_for(&spec))?;
    opts.shared = shared_ledger(args.output.ledger.as_deref(), spec.budget, spec.lease).await?;
    signals::watch(stop, opts.console.clone());
    finish(&host, spec, opts, &args.compare).await
}

/// Run one agent, print its JSON summary when asked, return its exit code.
pub async fn finish(host: &budget_host::Host, spec: RunSpec, opts: RunOptions, compare: &[String]) -> anyhow::Result<i32> {
    let (json, console) = (opts.console.json, opts.console.clone());
    let prices: Vec<(String, budget_host::budget::Price)> = compare
        .iter()
        .map(|m| spec.prices.get(m).map(|p| (m.clone(), p)).ok_or_else(|| BadInput(format!("--compare {m}: no price for it (add it with --prices)"))))
        .collect::<Result<_, _>>()?;
    let outcome = host.run(spec, opts).await;
    // The live display never outlives the run, whatever way it ended.
    console.progress.finish();
    let mut outcome = outcome?;
    for (model, price) in &prices {
        let l = &outcome.ledger;
        let cost = budget_host::report::would_cost(l, price);
        let (input, output) = l.by_operation.values().fold((0u64, 0u64), |(i, o), op| (i.saturating_add(op.input_tokens), o.saturating_add(op.output_tokens)));
        console.out(&format!(
            "💡 The same {} calls ({input} input, {output} output tokens) on {model} would have cost {} ({}% of this run's budget)",
            l.calls,
            budget_host::budget::fmt_usd(cost),
            format_args!("{:.1}", budget_host::report::percent(cost, l.limit))
        ));
        outcome.summary["compare"][model] = serde_json::json!({"cost_nanos": cost, "cost_usd": budget_host::budget::nanos_to_usd(cost)});
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome.summary)?);
    }
    Ok(outcome.exit_code())
}

async fn run_team(args: RunArgs, team: &Path) -> anyhow::Result<i32> {
    let (budget, warn) = args.tier(Some(team))?;
    let total = budget.as_deref().map(parse_usd).transpose().map_err(|e| BadInput(format!("--budget: {e}")))?;
    let mut base = args.builder(team, warn)?.build().map_err(bad)?;
    let provider = budget_host::llm::connect(&mut base, &args.endpoints.endpoints()?).map_err(BadInput)?;
    let mut plan = budget_host::team::plan(team, &base, total)?;
    if let Some(lock) = &args.lock {
        let pins = budget_host::integrity::LockPins::read(lock).map_err(bad)?;
        for (_, spec) in plan.members.iter_mut() {
            spec.apply_lock(&pins).map_err(bad)?;
        }
    }
    let host = super::host(args.output.shown.no_cache)?;
    let stop = budget_host::interrupt::StopSignal::new();
    let mut base_opts = args.options(provider, stop.clone());
    signals::watch(stop, base_opts.console.clone());
    let team_name = team.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "team".into());
    let dir = args.output.checkpoint_dir.clone().unwrap_or_else(|| PathBuf::from(".host/checkpoints").join(&team_name));
    // One journal for the team: its agents share a process and a group commit.
    base_opts.journal = args.output.journal(&dir)?;
    let shared = shared_ledger(args.output.ledger.as_deref(), plan.total, base.lease).await?;
    let opts = budget_host::team::TeamOptions { base: base_opts, dir, log: args.output.log.clone(), shared, json: args.output.shown.json };
    budget_host::team::run_team(&host, plan, opts).await
}
