//! The agent loop, host-driven: `init` (or `restore`), then `step(cycle)`
//! until done or interrupted; every LLM call goes through `call`. Turns
//! outcomes into console lines, audit events and a [`RunOutcome`] with its
//! exit code. The run receives its components compiled and pre-instantiated
//! (by [`crate::Host`]): it knows nothing of files, caches or the CLI.

pub mod banner;
pub mod call;
pub mod checkpointer;
pub mod context;
mod drive;
pub mod guard;
mod journaled;
pub mod state;
mod taped;

use crate::account::Account;
use crate::audit::{events, AuditLog, Event};
use crate::bindings::agent::AgentPre;
use crate::bindings::hook::HookPre;
use crate::budget::{fmt_usd, nanos_to_usd, Ledger, LedgerState};
use crate::checkpoint::Checkpoint;
use crate::console::Console;
use crate::hooks::HookState;
use crate::interrupt::{exit, Interrupt, StopSignal};
use crate::llm::Provider;
use crate::output::Output;
use crate::shared_ledger::SharedLedger;
use crate::spec::RunSpec;
use crate::BadInput;
use anyhow::Result;
pub use context::RunCtx;
pub use state::AgentState;
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::{Store, UpdateDeadline};

/// Where a run's output goes and what it talks to: everything about a run
/// that is not stored in its checkpoints. Build with [`RunOptions::new`].
#[derive(Clone)]
pub struct RunOptions {
    /// Who answers the calls.
    pub provider: Arc<dyn Provider>,
    /// Checkpoint directory (default `.host/checkpoints/<agent name>`).
    pub checkpoint_dir: Option<PathBuf>,
    /// Audit log (default `<checkpoint dir>/budget_monitoring.jsonl`).
    pub log: Option<PathBuf>,
    /// Human output.
    pub console: Console,
    /// Stop requests (Ctrl+C), shared by every run of the process.
    pub stop: Arc<StopSignal>,
    /// A budget shared beyond this agent (a team's total, a Redis ledger).
    pub shared: Option<Arc<dyn SharedLedger>>,
    /// The agent's ledger when its owner (a team) keeps a handle on it.
    pub ledger: Option<Arc<Mutex<Ledger>>>,
    /// The run's id (default: generated from the agent's name and the time).
    pub run_id: Option<String>,
    /// Continue from this checkpoint instead of calling `init`.
    pub resume: Option<ResumePoint>,
    /// Key of the checkpoints' keyed seal.
    pub seal_key: Option<Vec<u8>>,
    /// The write-ahead call journal (shared by the agents of a process).
    pub journal: Option<crate::journal::Journal>,
    /// Record the run's calls into a tape written here at its end.
    pub record: Option<PathBuf>,
    /// Answer every call from this tape, strictly (`host replay`).
    pub replay: Option<crate::tape::Tape>,
}

impl RunOptions {
    /// Options for a run answered by `provider`: quiet console, default
    /// directories, its own stop signal, no shared ledger.
    pub fn new(provider: Arc<dyn Provider>) -> RunOptions {
        RunOptions {
            provider,
            checkpoint_dir: None,
            log: None,
            console: Console { quiet: true, ..Default::default() },
            stop: StopSignal::new(),
            shared: None,
            ledger: None,
            run_id: None,
            resume: None,
            seal_key: None,
            journal: None,
            record: None,
            replay: None,
        }
    }

    /// Write checkpoints (and by default the log) here.
    pub fn checkpoint_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.checkpoint_dir = Some(dir.into());
        self
    }

    /// Write the audit log here.
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Print to this console.
    pub fn console(mut self, console: Console) -> Self {
        self.console = console;
        self
    }

    /// Stop when this signal asks.
    pub fn stop(mut self, stop: Arc<StopSignal>) -> Self {
        self.stop = stop;
        self
    }

    /// Share a budget beyond this agent.
    pub fn shared(mut self, shared: Arc<dyn SharedLedger>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Journal every call (write-ahead) to the file at `path`.
    pub fn journal(mut self, path: &std::path::Path) -> Result<Self, crate::journal::JournalError> {
        self.journal = Some(crate::journal::Journal::open(path)?);
        Ok(self)
    }

    /// The checkpoint directory for `spec`: the one given, else `.host/checkpoints/<agent name>`.
    pub fn checkpoint_dir_for(&self, spec: &RunSpec) -> PathBuf {
        self.checkpoint_dir.clone().unwrap_or_else(|| PathBuf::from(".host/checkpoints").join(&spec.agent_name))
    }
}

/// A checkpoint to continue from, and where it was read.
#[derive(Clone)]
pub struct ResumePoint {
    /// The file.
    pub path: PathBuf,
    /// What it holds, verified.
    pub checkpoint: Checkpoint,
    /// What the call journal says happened after it (spent money, answers to replay).
    pub journal: crate::journal::reconcile::Reconciled,
}

impl ResumePoint {
    /// The number of the run's next call.
    pub fn next_seq(&self) -> u64 {
        let from = self.checkpoint.header.journal.as_ref().map_or(0, |j| j.next_seq);
        self.journal.next_seq.max(from)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The agent said it was done.
    Completed,
    /// Stopped at `--max-cycles` without the agent saying it was done.
    MaxCycles,
    /// Stopped early; `RunOutcome::interrupt` says why.
    Interrupted,
}

/// The result of a run.
pub struct RunOutcome {
    /// Its id in logs and checkpoints.
    pub run_id: String,
    /// How it ended.
    pub status: Status,
    /// Why it stopped early, if it did.
    pub interrupt: Option<Interrupt>,
    /// The last cycle completed.
    pub cycles_completed: u32,
    /// The agent's result, when it finished.
    pub result: Option<String>,
    /// The agent's ledger at the end.
    pub ledger: LedgerState,
    /// Fuel used by the run, resumes included.
    pub fuel_used: u64,
    /// The audit log.
    pub log: PathBuf,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// The `--json` summary.
    pub summary: serde_json::Value,
}

impl RunOutcome {
    /// The process exit code for this outcome (documented in the README).
    pub fn exit_code(&self) -> i32 {
        match &self.interrupt {
            Some(i) => i.source.exit_code(),
            None => exit::COMPLETED,
        }
    }
}

/// The components of a run, compiled and pre-instantiated.
pub struct Components {
    pub engine: wasmtime::Engine,
    pub agent: Arc<AgentPre<AgentState>>,
    pub agent_sha256: String,
    pub cached: bool,
    pub compile_time: Duration,
    /// Each hook: name, sha256, its template.
    pub hooks: Vec<(String, String, Arc<HookPre<HookState>>)>,
}

/// A run id: the agent's name, the local time and a nonce.
pub fn new_run_id(agent: &str) -> String {
    let now = chrono::Local::now().format("%Y%m%d_%H%M%S");
    let nonce: u32 = std::process::id() ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos());
    format!("{agent}-{now}-{:04x}", nonce & 0xffff)
}

/// The agent's ledger: restored from the checkpoint (with the spec's limit),
/// handed over by a team, or new.
fn ledger_for(spec: &RunSpec, opts: &RunOptions) -> Result<(Arc<Mutex<Ledger>>, u64), BadInput> {
    if let Some(l) = &opts.ledger {
        let fuel = opts.resume.as_ref().map(|r| r.checkpoint.budget.fuel_used).unwrap_or(0);
        return Ok((l.clone(), fuel));
    }
    let (ledger, fuel) = match &opts.resume {
        Some(r) => {
            let mut l = Ledger::from_state(&r.checkpoint.budget.ledger).map_err(|e| BadInput(e.to_string()))?;
            // Money the journal says was spent after the checkpoint (settled, or in flight at a crash).
            for c in &r.journal.settled {
                l.charge(c.cost, &c.operation);
            }
            for u in &r.journal.unknown {
                l.charge(u.reserved, &u.operation);
            }
            l.set_limit(spec.budget).map_err(|_| {
                BadInput(format!("--budget {} is below the {} already spent by this run", fmt_usd(spec.budget), fmt_usd(r.checkpoint.budget.ledger.spent)))
            })?;
            (l, r.checkpoint.budget.fuel_used)
        }
        None => (Ledger::new(spec.budget).map_err(|e| BadInput(e.to_string()))?.with_thresholds(&spec.warn), 0),
    };
    Ok((Arc::new(Mutex::new(ledger)), fuel))
}

/// Run one agent to its end. `Err` is a failure before the run started (bad
/// input is wrapped in `BadInput`); a started run always returns an outcome.
pub async fn run_agent(components: Components, spec: RunSpec, opts: RunOptions) -> Result<RunOutcome> {
    let spec = Arc::new(spec);
    // A paid provider never runs a model it cannot price.
    if opts.provider.is_paid() && spec.prices.get(&spec.model).is_none() {
        let model = &spec.model;
        return Err(BadInput(format!(
            "no price for model '{model}' with the {} provider: add it to a --prices file (USD per 1M tokens), e.g. {{\"{model}\": {{\"input\": 0.15, \"output\": 0.6}}}}",
            opts.provider.name()
        ))
        .into());
    }
    let (ledger, fuel_before) = ledger_for(&spec, &opts)?;
    if let Some(limit) = spec.limits.fuel {
        if fuel_before >= limit {
            return Err(BadInput(format!("--fuel {limit} is not above the {fuel_before} instructions this run already used")).into());
        }
    }
    let run_id = opts.run_id.clone().or_else(|| opts.resume.as_ref().map(|r| r.checkpoint.header.run_id.clone())).unwrap_or_else(|| new_run_id(&spec.agent_name));
    let checkpoint_dir = opts.checkpoint_dir_for(&spec);
    let log = opts.log.clone().unwrap_or_else(|| checkpoint_dir.join("budget_monitoring.jsonl"));
    let out = Arc::new(Output::new(AuditLog::open(&log, &run_id, &spec.agent_name)?, opts.console.clone()));
    let ctx = Arc::new(RunCtx {
        spec: spec.clone(),
        run_id: run_id.clone(),
        provider: opts.provider.clone(),
        out: out.clone(),
        stop: opts.stop.clone(),
        deadline: spec.limits.timeout.map(|t| Instant::now() + t),
        retry: Default::default(),
    });
    announce(&ctx, &components, &checkpoint_dir, &opts);

    let hooks = crate::hooks::start_all(&components.engine, &components.hooks, spec.hook_limits, spec.hook_failure, &out).await?;
    // The stored spec pins every plugin to what was loaded.
    let mut stored = (*spec).clone();
    stored.agent.sha256 = Some(components.agent_sha256.clone());
    for (h, (_, sha, _)) in stored.hooks.iter_mut().zip(&components.hooks) {
        h.plugin.sha256 = Some(sha.clone());
    }
    let mut ck = checkpointer::Checkpointer::new(stored, checkpoint_dir, opts.seal_key.clone());
    let mut store = new_store(&components.engine, &ctx, Account::new(ledger, opts.shared.clone()), hooks, fuel_before)?;
    {
        let s = store.data_mut();
        s.journal = opts.journal.clone();
        if let Some(r) = &opts.resume {
            s.seq = r.next_seq();
            s.replay = r.journal.replay();
        }
        s.tape = match (&opts.replay, &opts.record) {
            (Some(t), _) => Some(taped::Taping::Replay(taped::Player::new(t.clone()))),
            (None, Some(_)) => Some(taped::Taping::Record { header: Box::new(tape_header(&spec, &components, &run_id, opts.provider.name())), calls: Vec::new() }),
            (None, None) => None,
        };
    }
    if let Some(r) = &opts.resume {
        say_what_the_journal_restored(&ctx, r);
        settle_crashed_holds(&ctx, opts.shared.as_deref(), r).await;
    }

    let resume = opts.resume.as_ref();
    let start_cycle = resume.map(|r| r.checkpoint.cycle).unwrap_or(0);
    out.console.progress.start(&store.data().account.ledger().state(), fuel_before, start_cycle, &out.console.prefix);
    let mut outcome = drive::drive(&components.agent, &mut store, &mut ck, resume).await;
    outcome.log = log;
    outcome.fuel_used = guard::fuel_used(&store);
    if let Some(i) = store.data().replay_end(&outcome) {
        outcome.interrupt = Some(i);
        outcome.status = Status::Interrupted;
    }
    drive::tell_hooks_the_end(&mut store, &outcome).await;
    // The ledger's durable view after everything settled.
    outcome.ledger = store.data().account.ledger().state();
    // A replay writes nothing but its log: its state is the tape's.
    if opts.replay.is_none() {
        drive::final_checkpoint(&mut store, &ck, &mut outcome).await;
    }
    if let (Some(path), Some(t)) = (&opts.record, store.data_mut().take_tape(&outcome)) {
        save_tape(&ctx, &t, path, opts.seal_key.as_deref(), &mut outcome);
    }
    store.data().stdout.flush_partial();
    drive::finish(&ctx, &mut outcome);
    outcome.summary = banner::summary(&spec, opts.provider.as_ref(), &outcome);
    Ok(outcome)
}

/// A recording's tape header: the agent pinned to what was loaded, the settings that shape its requests.
fn tape_header(spec: &RunSpec, c: &Components, run_id: &str, provider: &str) -> crate::tape::Header {
    use crate::tape::{AgentPin, Header, Settings, FORMAT, VERSION};
    Header {
        format: FORMAT.into(),
        version: VERSION,
        host_version: env!("CARGO_PKG_VERSION").into(),
        created: crate::audit::timestamp(),
        run_id: run_id.into(),
        provider: provider.into(),
        agent: AgentPin { name: spec.agent_name.clone(), path: spec.agent.path.clone(), sha256: c.agent_sha256.clone() },
        hooks: c.hooks.iter().map(|(name, sha, _)| (name.clone(), sha.clone())).collect(),
        settings: Settings {
            task: spec.task.clone(),
            model: spec.model.clone(),
            budget_nanos: spec.budget,
            max_cycles: spec.limits.max_cycles,
            max_tokens: spec.limits.default_max_tokens,
            temperature: spec.temperature,
            fuel: spec.limits.fuel,
            memory_bytes: spec.limits.memory_bytes,
            mode: spec.mode,
        },
    }
}

/// Write the recorded tape durably; a run whose tape cannot be written failed.
fn save_tape(ctx: &RunCtx, t: &crate::tape::Tape, path: &std::path::Path, key: Option<&[u8]>, outcome: &mut RunOutcome) {
    match t.save(path, key) {
        Ok(()) => ctx.out.console.note(&format!("🎞️  Tape of {} call(s) written to {}", t.calls.len(), path.display())),
        Err(e) => {
            let msg = format!("cannot write the tape: {e:#}");
            ctx.out.console.error(&msg);
            if outcome.interrupt.is_none() {
                outcome.interrupt = Some(Interrupt::new(crate::interrupt::Source::Error, crate::interrupt::Mode::Graceful, msg));
                outcome.status = Status::Interrupted;
            }
        }
    }
}

/// The banner, the resume line and the start event.
fn announce(ctx: &RunCtx, c: &Components, checkpoint_dir: &std::path::Path, opts: &RunOptions) {
    let spec = &ctx.spec;
    let console = &ctx.out.console;
    let hooks = spec.hooks.iter().zip(&c.hooks).map(|(h, (_, sha, _))| (h.name.as_str(), sha.as_str(), h.config.as_str())).collect();
    let load = banner::LoadInfo { sha256: &c.agent_sha256, cached: c.cached, compile_time: c.compile_time, hooks };
    banner::banner(console, spec, ctx.provider.as_ref(), checkpoint_dir, &load);
    let resume = opts.resume.as_ref();
    if let Some(r) = resume {
        let ck = &r.checkpoint;
        console.out(&format!(
            "↩️  Resuming {} from {} (cycle {}, {} of {} spent)",
            ck.header.run_id,
            r.path.display(),
            ck.cycle,
            fmt_usd(ck.budget.ledger.spent),
            fmt_usd(spec.budget)
        ));
        console.out("");
    }
    let agent = spec.agent.path.display().to_string();
    let resumed_from = resume.map(|r| r.path.display().to_string());
    ctx.out.event(&Event::BudgetMonitoringStart(events::Start {
        budget_limit: nanos_to_usd(spec.budget),
        budget_limit_nanos: spec.budget,
        agent: Some(Cow::Borrowed(&agent)),
        agent_sha256: Some(Cow::Borrowed(&c.agent_sha256)),
        hooks: spec.hooks.iter().map(|h| Cow::Borrowed(h.name.as_str())).collect(),
        provider: Some(Cow::Borrowed(ctx.provider.name())),
        model: Some(Cow::Borrowed(&spec.model)),
        task: Some(Cow::Borrowed(&spec.task)),
        warn: spec.warn.clone(),
        fuel_limit: spec.limits.fuel,
        max_cycles: Some(spec.limits.max_cycles),
        resumed_from: resumed_from.as_deref().map(Cow::Borrowed),
        resumed_cycle: resume.map(|r| r.checkpoint.cycle),
        spent_before_nanos: resume.map(|r| r.checkpoint.budget.ledger.spent),
    }));
}

/// The agent's store: limits, fuel, and an epoch callback that interrupts
/// wasm code on an immediate stop or a passed deadline.
fn new_store(engine: &wasmtime::Engine, ctx: &Arc<RunCtx>, account: Account, hooks: crate::hooks::Hooks, fuel_before: u64) -> Result<Store<AgentState>> {
    let spec = &ctx.spec;
    let fuel_budget = spec.limits.fuel.map(|f| f - fuel_before).unwrap_or(u64::MAX);
    let random = crate::guest_io::GuestRandom::new(&[ctx.run_id.as_bytes(), b"init"]);
    let (wasi, stdout) = crate::guest_io::wasi_for(&spec.agent_name, &ctx.out.console, crate::guest_io::DEFAULT_OUTPUT_CAP, &random);
    let bounds = guard::Bounds {
        stop: ctx.stop.clone(),
        run_deadline: ctx.deadline,
        run_timeout: spec.limits.timeout,
        entry_deadline: None,
        entry_timeout: spec.limits.step_timeout,
        in_call: Arc::new(AtomicBool::new(false)),
    };
    let state = AgentState {
        wasi,
        table: wasmtime::component::ResourceTable::new(),
        limits: crate::hooks::store::store_limits(spec.limits.memory_bytes),
        ctx: ctx.clone(),
        account,
        cycle: 0,
        call_in_step: 0,
        fuel_budget,
        fuel_before,
        fuel_at_last_call: 0,
        pending: None,
        denied: None,
        hooks,
        operations: Default::default(),
        stdout,
        random,
        bounds,
        crossed: Vec::new(),
        journal: None,
        seq: 0,
        replay: Default::default(),
        tape: None,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    // An engine without fuel metering (a benchmark's) has none to set: fine unless the run has a fuel limit.
    if let Err(e) = store.set_fuel(fuel_budget) {
        if spec.limits.fuel.is_some() {
            return Err(e.into());
        }
    }
    store.epoch_deadline_callback(|cx| {
        let b = &cx.data().bounds;
        if b.stop.immediate() || b.deadline().is_some_and(|d| Instant::now() >= d) {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);
    Ok(store)
}

/// A store set up as [`run_agent`] sets up the agent's (limits, fuel, epoch
/// callback, no hooks), for embedders and benchmarks that drive instances
/// themselves. Its audit log and console are those of `opts`.
pub fn standalone_store(engine: &wasmtime::Engine, spec: RunSpec, opts: &RunOptions) -> Result<Store<AgentState>> {
    let spec = Arc::new(spec);
    let (ledger, fuel_before) = ledger_for(&spec, opts)?;
    let run_id = opts.run_id.clone().unwrap_or_else(|| new_run_id(&spec.agent_name));
    let log = opts.log.clone().unwrap_or_else(|| PathBuf::from("/dev/null"));
    let out = Arc::new(Output::new(AuditLog::open(&log, &run_id, &spec.agent_name)?, opts.console.clone()));
    let ctx = Arc::new(RunCtx {
        spec: spec.clone(),
        run_id,
        provider: opts.provider.clone(),
        out,
        stop: opts.stop.clone(),
        deadline: spec.limits.timeout.map(|t| Instant::now() + t),
        retry: Default::default(),
    });
    new_store(engine, &ctx, Account::new(ledger, opts.shared.clone()), crate::hooks::Hooks::none(), fuel_before)
}

/// A call in flight at a crash held money on the shared ledger too: settle
/// each such hold by its id at its whole reservation, as the agent's own
/// ledger does. Idempotent on the ledger's side: a hold settled before (by
/// an earlier resume) is not charged twice; one that expired was charged in
/// full already and stays so.
async fn settle_crashed_holds(ctx: &RunCtx, shared: Option<&dyn crate::shared_ledger::SharedLedger>, r: &ResumePoint) {
    // Only a ledger that outlives the process (leased holds: Redis) still has them.
    let Some(shared) = shared.filter(|s| s.lease().is_some()) else { return };
    for u in &r.journal.unknown {
        let Some(id) = &u.hold else { continue };
        let hold = crate::shared_ledger::Hold { id: id.clone(), amount: u.reserved };
        if let Err(e) = shared.settle(hold, u.reserved).await {
            ctx.out.console.note(&format!("⚠️  {}: could not settle the crashed call's hold {id} ({e}); it expires and is charged in full", shared.describe()));
        }
    }
}

/// The calls a crash left after the checkpoint, as the journal tells them: in the log and on the console.
fn say_what_the_journal_restored(ctx: &RunCtx, r: &ResumePoint) {
    let j = &r.journal;
    if j.settled.is_empty() && j.unknown.is_empty() {
        return;
    }
    for u in &j.unknown {
        ctx.out.event(&Event::LlmCallCancelled(events::Cancelled {
            operation: Some(Cow::Borrowed(&u.operation)),
            cycle: 0,
            reason: Cow::Borrowed("in flight at a crash (journaled intent, no result): its outcome is unknown, so its whole reservation is charged"),
            charged: nanos_to_usd(u.reserved),
            charged_nanos: u.reserved,
            cumulative_nanos: None,
        }));
    }
    ctx.out.console.note(&format!(
        "📒 The call journal after the checkpoint: {} call(s) settled ({} to replay at $0), {} in flight at the crash charged in full; {} counted in all",
        j.settled.len(),
        j.settled.iter().filter(|s| s.answer.is_some()).count(),
        j.unknown.len(),
        fmt_usd(j.spent())
    ));
}
