//! The agent loop, host-driven: `init`, then `step(cycle)` until done or
//! interrupted; every LLM call goes through `call`. Turns outcomes into
//! console lines, audit events and a `RunOutcome` with its exit code.

pub mod call;
pub mod console;
pub mod state;

use crate::audit::AuditLog;
use crate::bindings::agent::{budget_host::plugin as wit, Agent, AgentPre};
use crate::bindings::types;
use crate::budget::{fmt_usd, nanos_to_usd, pricing::Price, Ledger, LedgerState, Nanos, PriceTable};
use crate::checkpoint::{BudgetRecord, Checkpoint, Header, PluginRef};
use crate::engine::{self, Compiler, PluginFile, World};
use crate::interrupt::{exit, Interrupt, Mode, Source, StopSignal};
use crate::llm::{retry::RetryPolicy, Provider};
use crate::BadInput;
use anyhow::{Context, Result};
pub use console::Console;
use serde_json::json;
use state::HostState;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Store, StoreContextMut, StoreLimitsBuilder, Trap, UpdateDeadline};

/// Everything a run needs, validated (built once from the command line).
pub struct RunConfig {
    pub agent: PathBuf,
    pub task: String,
    pub budget: Nanos,
    pub warn: Vec<f64>,
    pub max_cycles: u32,
    pub fuel: Option<u64>,
    pub memory_bytes: usize,
    pub timeout: Option<Duration>,
    /// How budget stops behave.
    pub mode: Mode,
    pub provider: Arc<dyn Provider>,
    pub model: String,
    pub prices: PriceTable,
    /// Max output tokens when the guest does not ask for a number.
    pub default_max_tokens: u32,
    /// No call may ask for more output tokens than this.
    pub max_tokens_cap: u32,
    /// Below this many output tokens a call is refused rather than lowered.
    pub min_output_tokens: u32,
    pub temperature: Option<f32>,
    pub checkpoint_dir: PathBuf,
    pub log: PathBuf,
    pub console: Console,
    pub max_request_bytes: usize,
    pub max_messages: usize,
    pub cache_dir: Option<PathBuf>,
    pub run_id: String,
    /// Checkpoint every N completed cycles (0: never periodically).
    pub checkpoint_every: u32,
    /// Keep the newest N checkpoints in the directory.
    pub retain: usize,
    pub checkpoint_on_interrupt: bool,
    /// The command line's settings, recorded in checkpoints for `resume`.
    pub settings: serde_json::Value,
    /// Continue from this checkpoint instead of calling `init`.
    pub resume: Option<Resume>,
    /// Hooks in priority order.
    pub hooks: Vec<crate::hooks::HookSpec>,
    pub hook_limits: crate::hooks::HookLimits,
    pub hook_failure: crate::hooks::FailurePolicy,
    /// Money shared beyond this agent: a team's pool or a Redis ledger.
    pub pool: Option<Arc<dyn crate::pool::Pool>>,
    /// Connect to this shared ledger before the run (`--ledger`).
    pub ledger_url: Option<String>,
    pub lease: Duration,
    /// The agent's name in logs and events (a team member's name; else the file stem).
    pub agent_name: Option<String>,
    /// The agent's ledger, owned by a team that may raise its limit (unused shares).
    pub agent_ledger: Option<Arc<Mutex<Ledger>>>,
    /// Largest agent snapshot kept (`--max-snapshot-mb`, at most `checkpoint::MAX_SNAPSHOT`).
    pub max_snapshot_bytes: usize,
    /// The sha256 every plugin must have (`--expect-sha256`, `--lock`), checked before compiling.
    pub integrity: crate::integrity::Integrity,
}

pub struct Resume {
    pub path: PathBuf,
    pub checkpoint: crate::checkpoint::Checkpoint,
}

/// Documented request limits: checked before any reservation.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1 << 20;
pub const DEFAULT_MAX_MESSAGES: usize = 1024;

/// Read-mostly state shared by the loop and every import call of a run.
pub struct RunShared {
    pub config: RunConfig,
    pub provider: Arc<dyn Provider>,
    pub console: Console,
    audit: Mutex<AuditLog>,
    audit_failed: AtomicBool,
    pub stop: Arc<StopSignal>,
    pub deadline: Option<Instant>,
    pub retry: RetryPolicy,
    /// Warnings raised inside a step, printed after its `CYCLE n:` line.
    deferred: Mutex<Vec<String>>,
    /// Money shared beyond this agent, when there is any.
    pub pool: Option<Arc<dyn crate::pool::Pool>>,
}

impl RunShared {
    /// The shared state of one run, its audit log already open. `run_agent`
    /// builds it; an embedder (or a benchmark) that drives stores itself can too.
    pub fn new(config: RunConfig, stop: Arc<StopSignal>, audit: AuditLog) -> Arc<RunShared> {
        Arc::new(RunShared {
            provider: config.provider.clone(),
            console: config.console.clone(),
            audit: Mutex::new(audit),
            audit_failed: AtomicBool::new(false),
            stop,
            deadline: config.timeout.map(|t| Instant::now() + t),
            retry: RetryPolicy::default(),
            deferred: Mutex::new(Vec::new()),
            pool: config.pool.clone(),
            config,
        })
    }

    /// Write an audit event; a failure is reported once and stops the run
    /// (an unaudited spend is not acceptable).
    pub fn audit(&self, f: impl FnOnce(&mut AuditLog) -> Result<()>) {
        let mut log = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f(&mut log) {
            if !self.audit_failed.swap(true, Ordering::SeqCst) {
                self.console.error(&format!("{e:#}"));
            }
        }
    }

    /// Print the warnings a step raised.
    pub fn flush_warnings(&self) {
        for line in self.deferred.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            self.console.warn(&line);
        }
    }

    pub fn price_for(&self, model: &str) -> Result<Price, String> {
        match self.config.prices.get(model) {
            Some(p) => Ok(p),
            None if !self.provider.is_paid() => Ok(Price::FREE),
            None => Err(format!(
                "no price for model '{model}' with the {} provider: add it to a --prices file (USD per 1M tokens)",
                self.provider.name()
            )),
        }
    }

    pub fn warn_threshold(&self, t: f64, spent: Nanos, limit: Nanos, cycle: u32) {
        let pct = crate::report::percent(spent, limit);
        let line = format!("⚠️  Budget warning: {pct:.1}% used ({} / {})", fmt_usd(spent), fmt_usd(limit));
        self.deferred.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        self.audit(|a| {
            a.event(
                "budget_warning",
                json!({"threshold": t, "percentage": pct, "total_cost": nanos_to_usd(spent), "total_cost_nanos": spent,
                       "budget_limit": nanos_to_usd(limit), "budget_limit_nanos": limit, "cycle": cycle}),
            )
        });
    }
}

pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Completed,
    /// Stopped at `--max-cycles` without the agent saying it was done.
    MaxCycles,
    Interrupted,
}

pub struct RunOutcome {
    pub run_id: String,
    pub status: Status,
    pub interrupt: Option<Interrupt>,
    pub cycles_completed: u32,
    pub result: Option<String>,
    pub ledger: LedgerState,
    pub fuel_used: u64,
    pub log: PathBuf,
    pub checkpoint: Option<PathBuf>,
    /// The `--json` summary.
    pub summary: serde_json::Value,
}

impl RunOutcome {
    pub fn exit_code(&self) -> i32 {
        match &self.interrupt {
            Some(i) => i.source.exit_code(),
            None => exit::COMPLETED,
        }
    }

    pub fn summary_json(&self, cfg: &RunConfig) -> serde_json::Value {
        let l = &self.ledger;
        let input = l.by_operation.values().fold(0u64, |a, o| a.saturating_add(o.input_tokens));
        let output = l.by_operation.values().fold(0u64, |a, o| a.saturating_add(o.output_tokens));
        json!({
            "run_id": self.run_id,
            "status": self.status,
            "stop_reason": self.interrupt.as_ref().map(|i| json!({"source": i.source, "mode": i.mode, "message": i.message, "timestamp": i.timestamp})),
            "exit_code": self.exit_code(),
            "cycles": self.cycles_completed,
            "spent_usd": nanos_to_usd(l.spent), "spent_nanos": l.spent,
            "limit_usd": nanos_to_usd(l.limit), "limit_nanos": l.limit,
            "remaining_usd": nanos_to_usd(l.limit - l.spent),
            "calls": l.calls, "input_tokens": input, "output_tokens": output,
            "fuel_used": self.fuel_used, "fuel_limit": cfg.fuel,
            "cost_by_operation": crate::report::operations_detail(l),
            "provider": cfg.provider.name(), "model": cfg.model,
            "log": self.log, "checkpoint": self.checkpoint,
            "result": self.result,
        })
    }
}

/// One `Linker` for agents: WASI (nothing granted), `budget`, `log`, and `llm`
/// by hand because it needs the store's fuel.
pub fn agent_linker(engine: &wasmtime::Engine) -> Result<Linker<HostState>> {
    let mut linker: Linker<HostState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wit::budget::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    wit::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    let mut llm = linker.instance(&format!("{}/llm@{}", crate::bindings::WIT_PACKAGE, crate::bindings::WIT_VERSION))?;
    llm.func_wrap_async("complete", |mut store: StoreContextMut<'_, HostState>, (req,): (types::CompletionRequest,)| {
        Box::new(async move {
            let left = store.get_fuel().unwrap_or(0);
            let used = store.data().fuel_budget.saturating_sub(left);
            let r = store.data_mut().complete(req, used).await?;
            Ok((r,))
        })
    })?;
    Ok(linker)
}

fn fuel_used(store: &Store<HostState>) -> u64 {
    let s = store.data();
    s.fuel_before.saturating_add(s.fuel_budget.saturating_sub(store.get_fuel().unwrap_or(0)))
}

/// wasmtime's message when a guest hands the host more data than the store's hostcall fuel.
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";
/// Bytes a snapshot may be copied beyond the cap, so one just over it gets an exact size.
const SNAPSHOT_SLACK: usize = 1 << 20;

/// Why a trapped call stopped.
fn classify_trap(e: &wasmtime::Error, store: &Store<HostState>, what: &str) -> Interrupt {
    let s = store.data();
    if let Some(p) = &s.pending {
        if e.downcast_ref::<call::Cancelled>().is_some() {
            return p.clone();
        }
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Interrupt::new(
            Source::Fuel,
            Mode::Immediate,
            format!("fuel exhausted in {what}: {} instructions used of the limit of {}", fuel_used(store), s.shared.config.fuel.unwrap_or(0)),
        ),
        Some(Trap::Interrupt) if s.shared.deadline.is_some_and(|d| Instant::now() >= d) => Interrupt::new(
            Source::Timeout,
            Mode::Immediate,
            format!("timeout of {:?} reached in {what}", s.shared.config.timeout.unwrap_or_default()),
        ),
        Some(Trap::Interrupt) => Interrupt::new(Source::Signal, Mode::Immediate, format!("interrupted in {what} by a second signal")),
        Some(Trap::StackOverflow) => Interrupt::new(Source::Error, Mode::Immediate, format!("agent overflowed its stack in {what}")),
        _ => {
            let text = format!("{e:#}");
            if text.contains("forcing trap when growing memory") {
                Interrupt::new(
                    Source::Error,
                    Mode::Immediate,
                    format!("agent exceeded its memory limit of {} MiB in {what}", s.shared.config.memory_bytes >> 20),
                )
            } else if text.contains(HOSTCALL_FUEL_EXHAUSTED) {
                Interrupt::new(Source::Error, Mode::Immediate, format!("agent passed the host more data than allowed in {what}"))
            } else {
                Interrupt::new(Source::Error, Mode::Immediate, format!("agent trapped in {what}: {}", text.lines().next().unwrap_or("")))
            }
        }
    }
}

/// A fresh host state: nothing granted to the guest but stdout/stderr.
pub fn new_state(shared: &Arc<RunShared>, ledger: &Arc<Mutex<Ledger>>, who: &str, memory: usize, fuel_budget: u64, fuel_before: u64) -> HostState {
    HostState {
        wasi: wasmtime_wasi::WasiCtxBuilder::new().inherit_stdout().inherit_stderr().build(),
        table: ResourceTable::new(),
        limits: StoreLimitsBuilder::new().memory_size(memory).trap_on_grow_failure(true).build(),
        shared: shared.clone(),
        ledger: ledger.clone(),
        cycle: 0,
        fuel_budget,
        fuel_before,
        fuel_at_last_call: 0,
        pending: None,
        who: who.into(),
        hooks: crate::hooks::Hooks::none(),
        pool: shared.pool.clone(),
    }
}

/// Prepare, run and report one agent. `Err` is a failure before the run
/// started (bad input is wrapped in `BadInput`); a started run always returns
/// an outcome.
pub async fn run_agent(mut config: RunConfig, stop: Arc<StopSignal>) -> Result<RunOutcome> {
    // The shared ledger first: an unreachable one fails before anything is spent.
    if let (None, Some(url)) = (&config.pool, &config.ledger_url) {
        let pool = crate::pool::redis::RedisPool::connect(url, config.budget, config.lease, Duration::from_secs(5))
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        config.pool = Some(Arc::new(pool));
    }
    let engine = engine::new_engine()?;
    let compiler = Compiler::new(engine.clone(), config.cache_dir.clone()).with_integrity(config.integrity.clone());
    let plugin = PluginFile::read(&config.agent).map_err(BadInput::from)?;
    let compile_start = Instant::now();
    let (component, cached) = compiler.load(&plugin).map_err(BadInput::from)?;
    let compile_time = compile_start.elapsed();
    engine::check_world(&engine, &component, World::Agent, &config.agent).map_err(BadInput::from)?;
    let linker = agent_linker(&engine)?;
    let pre = linker.instantiate_pre(&component).map_err(|e| {
        BadInput(format!("{} needs imports this host does not provide: {e:#}", config.agent.display()))
    })?;
    let agent_pre = AgentPre::new(pre).map_err(|e| BadInput(format!("{}: {e:#}", config.agent.display())))?;

    let (ledger, fuel_before) = match &config.resume {
        Some(r) => {
            let mut l = Ledger::from_state(&r.checkpoint.budget.ledger)?;
            l.set_limit(config.budget).map_err(|_| {
                BadInput(format!(
                    "--budget {} is below the {} already spent by this run",
                    fmt_usd(config.budget),
                    fmt_usd(r.checkpoint.budget.ledger.spent)
                ))
            })?;
            (l, r.checkpoint.budget.fuel_used)
        }
        None => (Ledger::new(config.budget)?.with_thresholds(&config.warn), 0),
    };
    if let Some(limit) = config.fuel {
        if fuel_before >= limit {
            return Err(BadInput(format!("--fuel {limit} is not above the {fuel_before} instructions this run already used")).into());
        }
    }
    let agent_id = config
        .agent_name
        .clone()
        .unwrap_or_else(|| config.agent.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "agent".into()));
    let audit = AuditLog::open(&config.log, &config.run_id, &agent_id)?;
    let console = config.console.clone();
    let shared = RunShared::new(config, stop, audit);
    let cfg = &shared.config;

    console.banner(cfg, &plugin.sha256, cached, compile_time);
    if let Some(r) = &cfg.resume {
        let c = &r.checkpoint;
        console.out(&format!(
            "↩️  Resuming {} from {} (cycle {}, {} of {} spent)",
            c.header.run_id,
            r.path.display(),
            c.cycle,
            fmt_usd(c.budget.ledger.spent),
            fmt_usd(cfg.budget)
        ));
        console.out("");
    }
    shared.audit(|a| {
        a.event(
            "budget_monitoring_start",
            json!({"budget_limit": nanos_to_usd(cfg.budget), "budget_limit_nanos": cfg.budget, "agent": cfg.agent, "agent_sha256": plugin.sha256,
                   "provider": cfg.provider.name(), "model": cfg.model, "task": cfg.task, "warn": cfg.warn,
                   "fuel_limit": cfg.fuel, "max_cycles": cfg.max_cycles,
                   "resumed_from": cfg.resume.as_ref().map(|r| r.path.clone()),
                   "resumed_cycle": cfg.resume.as_ref().map(|r| r.checkpoint.cycle),
                   "spent_before_nanos": cfg.resume.as_ref().map(|r| r.checkpoint.budget.ledger.spent)}),
        )
    });

    let fuel_budget = cfg.fuel.map(|f| f - fuel_before).unwrap_or(u64::MAX);
    // A team builds its agents' ledgers itself (fresh or restored) and keeps a handle.
    let ledger = match &cfg.agent_ledger {
        Some(team_owned) => team_owned.clone(),
        None => Arc::new(Mutex::new(ledger)),
    };
    let hooks = {
        let (shared, ledger) = (shared.clone(), ledger.clone());
        crate::hooks::Hooks::load(&compiler, &cfg.hooks, cfg.hook_limits, cfg.hook_failure, move |name| {
            new_state(&shared, &ledger, name, usize::MAX, u64::MAX, 0)
        })
        .await?
    };
    let mut state = new_state(&shared, &ledger, "agent", cfg.memory_bytes, fuel_budget, fuel_before);
    state.hooks = hooks;
    let mut store = Store::new(&engine, state);
    store.limiter(|s| &mut s.limits);
    store.set_fuel(fuel_budget)?;
    let (stop_flag, deadline) = (shared.stop.clone(), shared.deadline);
    store.epoch_deadline_callback(move |_| {
        if stop_flag.immediate() || deadline.is_some_and(|d| Instant::now() >= d) {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);

    console.progress.start(&store.data().ledger().state(), fuel_before, cfg.resume.as_ref().map(|r| r.checkpoint.cycle).unwrap_or(0), &console.prefix);
    let mut ck = Checkpointer { agent: PluginRef { path: cfg.agent.clone(), sha256: plugin.sha256.clone() }, snapshot: Vec::new(), last: None };
    let mut outcome = drive(&agent_pre, &mut store, &mut ck).await;
    outcome.fuel_used = fuel_used(&store);
    tell_hooks_the_end(&mut store, &outcome).await;
    // The ledger's durable view after everything settled.
    outcome.ledger = store.data().ledger().state();
    // Interrupts and the end get a checkpoint of the last completed cycle.
    let reason = match (&outcome.interrupt, outcome.status) {
        (Some(_), _) if !cfg.checkpoint_on_interrupt => None,
        (Some(_), _) => Some("interrupt"),
        (None, _) => Some("final"),
    };
    if let (Some(reason), true) = (reason, ck.ready()) {
        match ck.save(&mut store, reason, outcome.interrupt.clone(), outcome.cycles_completed).await {
            Ok(p) => outcome.checkpoint = Some(p),
            Err(e) => {
                shared.console.error(&format!("{e:#}"));
                if outcome.interrupt.is_none() {
                    outcome.interrupt = Some(Interrupt::new(Source::Error, Mode::Graceful, format!("cannot write the final checkpoint: {e:#}")));
                    outcome.status = Status::Interrupted;
                }
            }
        }
    }
    finish(&shared, &mut outcome);
    outcome.summary = outcome.summary_json(cfg);
    Ok(outcome)
}

/// The loop proper. Never fails: every problem becomes an interrupt.
async fn drive(pre: &AgentPre<HostState>, store: &mut Store<HostState>, ck: &mut Checkpointer) -> RunOutcome {
    let shared = store.data().shared.clone();
    let cfg = &shared.config;
    let mut outcome = RunOutcome {
        run_id: cfg.run_id.clone(),
        status: Status::Interrupted,
        interrupt: None,
        cycles_completed: 0,
        result: None,
        ledger: store.data().ledger().state(),
        fuel_used: 0,
        log: cfg.log.clone(),
        checkpoint: None,
        summary: serde_json::Value::Null,
    };
    let stop_with = |store: &mut Store<HostState>, i: Interrupt| {
        store.data_mut().raise(i);
        store.data().pending.clone()
    };

    let agent: Agent = match pre.instantiate_async(&mut *store).await {
        Ok(a) => a,
        Err(e) => {
            outcome.interrupt = stop_with(store, classify_trap(&e, store, "instantiation"));
            return outcome;
        }
    };
    let run = agent.budget_host_plugin_run();
    let (start, what) = match &cfg.resume {
        Some(r) => (r.checkpoint.cycle, "restore"),
        None => (0, "init"),
    };
    let started = match &cfg.resume {
        Some(r) => run.call_restore(&mut *store, &r.checkpoint.agent_state).await,
        None => run.call_init(&mut *store, &cfg.task).await,
    };
    match started {
        Ok(Ok(())) => {}
        Ok(Err(msg)) => {
            outcome.interrupt = stop_with(store, Interrupt::new(Source::Error, Mode::Graceful, format!("agent {what} failed: {msg}")));
            return outcome;
        }
        Err(e) => {
            outcome.interrupt = stop_with(store, classify_trap(&e, store, what));
            return outcome;
        }
    }
    outcome.cycles_completed = start;
    if let Err(i) = start_hooks(store).await {
        outcome.interrupt = stop_with(store, i);
        return outcome;
    }
    if let Err(i) = ck.take_snapshot(&run, store, what).await {
        outcome.interrupt = stop_with(store, i);
        return outcome;
    }

    // No cycle after u32::MAX (a forged checkpoint may claim it): that is the last.
    let mut next = start.checked_add(1);
    loop {
        if shared.audit_failed.load(Ordering::SeqCst) {
            store.data_mut().raise(Interrupt::new(Source::Error, Mode::Graceful, "the audit log cannot be written"));
        }
        if let Some(mode) = shared.stop.requested() {
            store.data_mut().raise(Interrupt::new(Source::Signal, mode, "stop requested by signal"));
        }
        if let Some(p) = store.data().pending.clone() {
            outcome.interrupt = Some(p);
            return outcome;
        }
        let Some(cycle) = next.filter(|c| *c <= cfg.max_cycles) else {
            outcome.status = Status::MaxCycles;
            return outcome;
        };
        store.data_mut().cycle = cycle;
        shared.console.progress.cycle(cycle, fuel_used(store));
        let step = run.call_step(&mut *store, cycle).await;
        match step {
            Ok(Ok(types::StepOutcome::Continue(progress))) => {
                console_cycle(&shared, cycle, &progress);
                if let Err(i) = ck.take_snapshot(&run, store, &format!("snapshot after step {cycle}")).await {
                    outcome.interrupt = stop_with(store, i);
                    return outcome;
                }
                outcome.cycles_completed = cycle;
                if cfg.checkpoint_every > 0 && cycle % cfg.checkpoint_every == 0 && store.data().pending.is_none() {
                    match ck.save(store, "periodic", None, cycle).await {
                        Ok(p) => outcome.checkpoint = Some(p),
                        Err(e) => {
                            store.data_mut().raise(Interrupt::new(Source::Error, Mode::Graceful, format!("cannot write a checkpoint: {e:#}")));
                        }
                    }
                }
            }
            Ok(Ok(types::StepOutcome::Done(result))) => {
                console_cycle(&shared, cycle, "done");
                if let Err(i) = ck.take_snapshot(&run, store, &format!("snapshot after step {cycle}")).await {
                    outcome.interrupt = stop_with(store, i);
                    return outcome;
                }
                outcome.cycles_completed = cycle;
                outcome.result = Some(result);
                outcome.interrupt = store.data().pending.clone();
                outcome.status = if outcome.interrupt.is_some() { Status::Interrupted } else { Status::Completed };
                return outcome;
            }
            Ok(Err(msg)) => {
                store.data_mut().raise(Interrupt::new(Source::Error, Mode::Graceful, format!("agent step {cycle} failed: {msg}")));
            }
            Err(e) => {
                let i = classify_trap(&e, store, &format!("step {cycle}"));
                outcome.interrupt = stop_with(store, i);
                return outcome;
            }
        }
        next = cycle.checked_add(1);
    }
}

/// Restore hook states on resume, then send every hook `on-start`.
async fn start_hooks(store: &mut Store<HostState>) -> Result<(), Interrupt> {
    if store.data().hooks.is_empty() {
        return Ok(());
    }
    let shared = store.data().shared.clone();
    let cfg = &shared.config;
    if let Some(r) = &cfg.resume {
        store.data_mut().hooks.restore(&r.checkpoint.hook_states).await.map_err(|m| Interrupt::new(Source::Hook, Mode::Graceful, m))?;
    }
    let (spent, limit) = {
        let l = store.data().ledger();
        (nanos_to_usd(l.spent()), nanos_to_usd(l.limit()))
    };
    let cycle = cfg.resume.as_ref().map(|r| r.checkpoint.cycle).unwrap_or(0);
    let event = |i: usize| types::StartEvent {
        agent: "agent".into(),
        task: cfg.task.clone(),
        config: cfg.hooks.get(i).map(|h| h.config.clone()).unwrap_or_default(),
        limit_usd: limit,
        spent_usd: spent,
        resumed: cfg.resume.is_some(),
        cycle,
    };
    store.data_mut().hooks.on_start(event, &shared).await.map_err(|f| Interrupt::new(Source::Hook, Mode::Graceful, f.message))
}

/// `on-interrupt` and `on-end` for the hooks; their failures are logged, the run is over anyway.
async fn tell_hooks_the_end(store: &mut Store<HostState>, outcome: &RunOutcome) {
    if store.data().hooks.is_empty() {
        return;
    }
    let shared = store.data().shared.clone();
    let (spent, limit, calls) = {
        let l = store.data().ledger();
        (nanos_to_usd(l.spent()), nanos_to_usd(l.limit()), l.calls())
    };
    if let Some(i) = &outcome.interrupt {
        let e = types::InterruptEvent {
            agent: "agent".into(),
            source: match i.source {
                Source::Budget => types::InterruptSource::Budget,
                Source::Fuel => types::InterruptSource::Fuel,
                Source::Timeout => types::InterruptSource::Timeout,
                Source::Signal => types::InterruptSource::Signal,
                Source::Hook => types::InterruptSource::Hook,
                Source::Error => types::InterruptSource::Error,
            },
            mode: match i.mode {
                Mode::Graceful => types::InterruptMode::Graceful,
                Mode::Immediate => types::InterruptMode::Immediate,
            },
            message: i.message.clone(),
            cycle: outcome.cycles_completed,
            spent_usd: spent,
            limit_usd: limit,
        };
        let _ = store.data_mut().hooks.on_interrupt(&e, &shared).await;
    }
    let status = match outcome.status {
        Status::Completed | Status::MaxCycles => "completed",
        Status::Interrupted if outcome.interrupt.as_ref().is_some_and(|i| i.source == Source::Error) => "failed",
        Status::Interrupted => "interrupted",
    };
    let e = types::EndEvent { agent: "agent".into(), status: status.into(), spent_usd: spent, limit_usd: limit, calls, cycles: outcome.cycles_completed };
    let _ = store.data_mut().hooks.on_end(&e, &shared).await;
}

/// Keeps the agent's state after the last completed cycle and writes checkpoints.
pub struct Checkpointer {
    agent: PluginRef,
    snapshot: Vec<u8>,
    last: Option<u32>,
}

impl Checkpointer {
    fn ready(&self) -> bool {
        self.last.is_some()
    }

    async fn take_snapshot(&mut self, run: &crate::bindings::agent::exports::budget_host::plugin::run::Guest, store: &mut Store<HostState>, what: &str) -> Result<(), Interrupt> {
        let cap = store.data().shared.config.max_snapshot_bytes.min(crate::checkpoint::MAX_SNAPSHOT);
        let over = |size: String| {
            Interrupt::new(
                Source::Error,
                Mode::Graceful,
                format!("agent snapshot of {size} bytes is over the limit of {cap} bytes (--max-snapshot-mb); the previous checkpoint is kept"),
            )
        };
        // wasmtime bounds what a guest hands the host in one call (128 MiB by
        // default): let a snapshot up to the cap through, and stop a bigger one
        // while it is copied, before the host holds all of it.
        let default_fuel = store.hostcall_fuel();
        store.set_hostcall_fuel(cap.saturating_add(SNAPSHOT_SLACK));
        let result = run.call_snapshot(&mut *store).await;
        store.set_hostcall_fuel(default_fuel);
        match result {
            Ok(bytes) if bytes.len() > cap => Err(over(bytes.len().to_string())),
            Ok(bytes) => {
                self.snapshot = bytes;
                self.last = Some(store.data().cycle);
                Ok(())
            }
            Err(e) if format!("{e:#}").contains(HOSTCALL_FUEL_EXHAUSTED) => Err(over(format!("more than {}", cap.saturating_add(SNAPSHOT_SLACK)))),
            Err(e) => Err(classify_trap(&e, store, what)),
        }
    }

    async fn save(&self, store: &mut Store<HostState>, reason: &str, interrupt: Option<Interrupt>, cycle: u32) -> Result<PathBuf> {
        let shared = store.data().shared.clone();
        let hook_states = store.data_mut().hooks.snapshots(&shared).await;
        let s = store.data();
        let cfg = &s.shared.config;
        let c = Checkpoint {
            header: Header {
                format: crate::checkpoint::FORMAT,
                run_id: cfg.run_id.clone(),
                created: crate::audit::timestamp(),
                reason: reason.into(),
                interrupt,
                agent: self.agent.clone(),
                hooks: s.hooks.refs(),
                host_version: env!("CARGO_PKG_VERSION").into(),
                settings: cfg.settings.clone(),
            },
            budget: BudgetRecord { ledger: s.ledger().state(), fuel_used: fuel_used(store), fuel_limit: cfg.fuel },
            cycle,
            agent_state: self.snapshot.clone(),
            hook_states,
        };
        let path = c.save(&cfg.checkpoint_dir).with_context(|| format!("cannot write a checkpoint in {}", cfg.checkpoint_dir.display()))?;
        let removed = crate::checkpoint::retain(&cfg.checkpoint_dir, cfg.retain.max(1)).unwrap_or_default();
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        s.shared.audit(|a| {
            a.event(
                "checkpoint_saved",
                json!({"path": path, "reason": reason, "cycle": cycle, "bytes": bytes, "spent_nanos": c.budget.ledger.spent, "removed": removed}),
            )
        });
        Ok(path)
    }
}

fn console_cycle(shared: &RunShared, cycle: u32, progress: &str) {
    let line = progress.lines().next().unwrap_or("");
    shared.console.out(&format!("CYCLE {cycle}: {line}"));
    shared.flush_warnings();
}

/// Print the end of the run and write `budget_monitoring_end`.
fn finish(shared: &RunShared, outcome: &mut RunOutcome) {
    shared.flush_warnings();
    let cfg = &shared.config;
    let l = &outcome.ledger;
    if let Some(i) = &outcome.interrupt {
        shared.audit(|a| {
            a.event(
                "interrupt",
                json!({"source": i.source, "mode": i.mode, "message": i.message, "interrupt_timestamp": i.timestamp,
                       "cycles_completed": outcome.cycles_completed, "total_cost": nanos_to_usd(l.spent), "total_cost_nanos": l.spent}),
            )
        });
    }
    let avg = if l.calls == 0 { 0.0 } else { nanos_to_usd(l.spent) / l.calls as f64 };
    shared.audit(|a| {
        a.event(
            "budget_monitoring_end",
            json!({
                "status": outcome.status, "stop_source": outcome.interrupt.as_ref().map(|i| i.source),
                "total_cost": nanos_to_usd(l.spent), "total_cost_nanos": l.spent,
                "budget_limit": nanos_to_usd(l.limit), "budget_limit_nanos": l.limit,
                "budget_remaining": nanos_to_usd(l.limit - l.spent), "budget_used_percentage": crate::report::percent(l.spent, l.limit),
                "operations": l.calls, "avg_cost_per_operation": avg,
                "cost_by_operation": crate::report::cost_by_operation_usd(l),
                "cost_by_operation_nanos": l.by_operation.iter().map(|(k, v)| (k.clone(), json!(v.cost))).collect::<serde_json::Map<_, _>>(),
                "cycles_completed": outcome.cycles_completed, "fuel_used": outcome.fuel_used,
            }),
        )
    });
    shared.audit(|a| a.sync());
    shared.console.ending(cfg, outcome);
}
