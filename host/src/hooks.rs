//! Budget hooks: sandboxed components (world `hook`) that watch every call.
//!
//! Each hook has its own store with its own fuel, time and memory limits per
//! event. Decisions combine to the most restrictive: any deny denies, the
//! lowest max-tokens wins, any interrupt interrupts (immediate over graceful).
//! Hooks can only tighten: a max-tokens above the current one is ignored.
//! A hook that traps, runs out of fuel or time, or answers nonsense is handled
//! by the failure policy: fail-closed (default) denies the call and stops the
//! run with source `hook`, naming the hook; fail-open disables the hook and
//! goes on, logged.

use crate::bindings::hook::{budget_host::plugin as wit, Hook as HookWorld, HookPre};
use crate::bindings::types;
use crate::engine::{self, Compiler, PluginFile, World};
use crate::run::state::HostState;
use crate::BadInput;
use anyhow::Result;
use serde_json::json;
use std::borrow::Cow;
use std::path::PathBuf;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Store, Trap};

/// Limits for one hook event.
#[derive(Debug, Clone, Copy)]
pub struct HookLimits {
    pub fuel_per_event: u64,
    /// In epoch ticks (10 ms each).
    pub ticks_per_event: u64,
    pub memory_bytes: usize,
}

impl Default for HookLimits {
    fn default() -> Self {
        HookLimits { fuel_per_event: 50_000_000, ticks_per_event: 100, memory_bytes: 64 << 20 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Deny the call and stop the run (source `hook`).
    Closed,
    /// Log the failure, disable the hook, go on.
    Open,
}

/// A hook given on the command line: `FILE.wasm` or `FILE.wasm=CONFIG`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HookSpec {
    pub path: PathBuf,
    pub config: String,
}

impl HookSpec {
    pub fn parse(text: &str) -> HookSpec {
        match text.split_once(".wasm=") {
            Some((p, c)) => HookSpec { path: PathBuf::from(format!("{p}.wasm")), config: c.to_string() },
            None => HookSpec { path: PathBuf::from(text), config: String::new() },
        }
    }
}

struct Loaded {
    name: String,
    sha256: String,
    path: PathBuf,
    store: Store<HostState>,
    hook: HookWorld,
    disabled: bool,
}

/// The run's hooks, in priority order.
pub struct Hooks {
    hooks: Vec<Loaded>,
    limits: HookLimits,
    policy: FailurePolicy,
}

/// Combined answer to `before-call`.
#[derive(Debug, Clone, PartialEq)]
pub enum Before {
    Allow,
    /// Lower max tokens to this.
    Limit(u32, String),
    Deny(String),
}

/// One event for every hook (`Start` carries one event per hook: configs differ).
enum Event<'e> {
    Start(&'e [types::StartEvent]),
    Before(&'e types::CallEvent),
    After(&'e types::CostEvent),
    Threshold(&'e types::ThresholdEvent),
    Interrupt(&'e types::InterruptEvent),
    End(&'e types::EndEvent),
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::Start(_) => "on-start",
            Event::Before(_) => "before-call",
            Event::After(_) => "after-call",
            Event::Threshold(_) => "on-threshold",
            Event::Interrupt(_) => "on-interrupt",
            Event::End(_) => "on-end",
        }
    }
}

enum Answer {
    Unit,
    Before(types::CallDecision),
    After(types::AfterDecision),
}

/// A `hook_decision` audit line. One per hook on every call's `before-call`,
/// so it is written straight from this struct, not through a JSON map
/// (BENCHMARKS.md, per-call overhead); the keys are those of the other lines.
#[derive(serde::Serialize)]
struct DecisionLine<'a> {
    hook: &'a str,
    hook_event: &'a str,
    operation: &'a str,
    cycle: u32,
    decision: &'a str,
}

/// A hook failed and the policy is fail-closed: stop, naming it.
#[derive(Debug, Clone)]
pub struct HookFailure {
    pub message: String,
}

fn hook_linker(engine: &wasmtime::Engine) -> Result<Linker<HostState>> {
    let mut linker: Linker<HostState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wit::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Compile and check a hook file; used by `validate` and by `load`.
pub fn prepare(compiler: &Compiler, path: &std::path::Path) -> Result<(PluginFile, HookPre<HostState>), BadInput> {
    let plugin = PluginFile::read(path).map_err(BadInput::from)?;
    let (component, _) = compiler.load(&plugin).map_err(BadInput::from)?;
    engine::check_world(compiler.engine(), &component, World::Hook, path).map_err(BadInput::from)?;
    let linker = hook_linker(compiler.engine()).map_err(|e| BadInput(format!("{e:#}")))?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| BadInput(format!("hook {} needs imports this host does not grant: {e:#}", path.display())))?;
    let pre = HookPre::new(pre).map_err(|e| BadInput(format!("hook {}: {e:#}", path.display())))?;
    Ok((plugin, pre))
}

impl Hooks {
    pub fn none() -> Hooks {
        Hooks { hooks: Vec::new(), limits: HookLimits::default(), policy: FailurePolicy::Closed }
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Load every hook into its own store. `make_state` builds a fresh host
    /// state (no WASI grants) for each.
    pub async fn load(
        compiler: &Compiler,
        specs: &[HookSpec],
        limits: HookLimits,
        policy: FailurePolicy,
        mut make_state: impl FnMut(&str) -> HostState,
    ) -> Result<Hooks, BadInput> {
        let mut hooks = Vec::new();
        for spec in specs {
            let (plugin, pre) = prepare(compiler, &spec.path)?;
            let name = spec.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "hook".into());
            let mut state = make_state(&name);
            state.limits = wasmtime::StoreLimitsBuilder::new().memory_size(limits.memory_bytes).trap_on_grow_failure(true).build();
            let mut store = Store::new(compiler.engine(), state);
            store.limiter(|s| &mut s.limits);
            store.set_fuel(limits.fuel_per_event).map_err(|e| BadInput(format!("{e:#}")))?;
            store.epoch_deadline_trap();
            store.set_epoch_deadline(limits.ticks_per_event);
            let hook = pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| BadInput(format!("hook {} failed to start: {e:#}", spec.path.display())))?;
            hooks.push(Loaded { name, sha256: plugin.sha256, path: spec.path.clone(), store, hook, disabled: false });
        }
        Ok(Hooks { hooks, limits, policy })
    }

    pub fn refs(&self) -> Vec<crate::checkpoint::PluginRef> {
        self.hooks.iter().map(|h| crate::checkpoint::PluginRef { path: h.path.clone(), sha256: h.sha256.clone() }).collect()
    }

    /// Run one event on every enabled hook, with fresh per-event limits.
    /// Returns each hook's answer (or its failure message) in priority order.
    async fn each(&mut self, event: Event<'_>) -> Vec<(usize, Result<Answer, String>)> {
        let name = event.name();
        let mut out = Vec::new();
        for (i, h) in self.hooks.iter_mut().enumerate() {
            if h.disabled {
                continue;
            }
            let _ = h.store.set_fuel(self.limits.fuel_per_event);
            h.store.set_epoch_deadline(self.limits.ticks_per_event);
            let p = h.hook.budget_host_plugin_policy();
            let s = &mut h.store;
            let r = match &event {
                Event::Start(all) => p.call_on_start(s, &all[i]).await.map(|_| Answer::Unit),
                Event::Before(e) => p.call_before_call(s, e).await.map(Answer::Before),
                Event::After(e) => p.call_after_call(s, e).await.map(Answer::After),
                Event::Threshold(e) => p.call_on_threshold(s, e).await.map(|_| Answer::Unit),
                Event::Interrupt(e) => p.call_on_interrupt(s, e).await.map(|_| Answer::Unit),
                Event::End(e) => p.call_on_end(s, e).await.map(|_| Answer::Unit),
            };
            let r = r.map_err(|e| {
                let why = match e.downcast_ref::<Trap>() {
                    Some(Trap::OutOfFuel) => format!("ran out of fuel ({} instructions) in {name}", self.limits.fuel_per_event),
                    Some(Trap::Interrupt) => format!("ran over its time limit ({} ms) in {name}", self.limits.ticks_per_event * 10),
                    _ => {
                        let t = format!("{e:#}");
                        if t.contains("forcing trap when growing memory") {
                            format!("exceeded its memory limit of {} MiB in {name}", self.limits.memory_bytes >> 20)
                        } else if t.contains("cannot enter component instance") {
                            format!("is unusable after an earlier failure ({name})")
                        } else {
                            format!("trapped in {name}: {}", t.lines().next().unwrap_or(""))
                        }
                    }
                };
                format!("hook '{}' {why}", h.name)
            });
            out.push((i, r));
        }
        out
    }

    /// Handle a failed hook per the policy: `Some` means stop (fail-closed).
    fn failed(&mut self, i: usize, message: String, shared: &crate::run::RunShared) -> Option<HookFailure> {
        let h = &mut self.hooks[i];
        shared.audit(|a| a.event("hook_failure", json!({"hook": h.name, "message": message, "policy": self.policy})));
        match self.policy {
            FailurePolicy::Closed => Some(HookFailure { message }),
            FailurePolicy::Open => {
                h.disabled = true;
                shared.console.note(&format!("⚠️  {message}; the hook is disabled (--hook-failure open)"));
                None
            }
        }
    }

    pub async fn before_call(&mut self, e: &types::CallEvent, shared: &crate::run::RunShared) -> Result<Before, HookFailure> {
        let answers = self.each(Event::Before(e)).await;
        let mut combined = Before::Allow;
        for (i, a) in answers {
            let name = self.hooks[i].name.clone();
            let d = match a {
                Ok(Answer::Before(d)) => d,
                Ok(_) => continue,
                Err(msg) => match self.failed(i, msg, shared) {
                    Some(f) => return Err(f),
                    None => continue,
                },
            };
            let (logged, next): (Cow<str>, _) = match d {
                types::CallDecision::Allow => ("allow".into(), None),
                types::CallDecision::Deny(reason) => (format!("deny: {reason}").into(), Some(Before::Deny(format!("hook '{name}': {reason}")))),
                types::CallDecision::Limit(0) => {
                    ("limit 0 (treated as deny)".into(), Some(Before::Deny(format!("hook '{name}' allowed 0 output tokens"))))
                }
                types::CallDecision::Limit(n) if n >= e.max_tokens => (format!("limit {n} ignored: not below {}", e.max_tokens).into(), None),
                types::CallDecision::Limit(n) => (format!("limit {n}").into(), Some(Before::Limit(n, name.clone()))),
            };
            let line = DecisionLine { hook: &name, hook_event: "before-call", operation: &e.operation, cycle: e.cycle, decision: &logged };
            shared.audit(|a| a.event_of("hook_decision", &line));
            combined = match (combined, next) {
                (c @ Before::Deny(_), _) => c,
                (_, Some(d @ Before::Deny(_))) => d,
                (Before::Limit(a, an), Some(Before::Limit(b, bn))) => if b < a { Before::Limit(b, bn) } else { Before::Limit(a, an) },
                (Before::Allow, Some(l)) => l,
                (c, _) => c,
            };
        }
        Ok(combined)
    }

    /// `Some((mode, reason))` when a hook asks to stop the run.
    pub async fn after_call(&mut self, e: &types::CostEvent, shared: &crate::run::RunShared) -> Result<Option<(types::InterruptMode, String)>, HookFailure> {
        let answers = self.each(Event::After(e)).await;
        let mut stop: Option<(types::InterruptMode, String)> = None;
        for (i, a) in answers {
            let name = self.hooks[i].name.clone();
            match a {
                Ok(Answer::After(types::AfterDecision::Interrupt(req))) => {
                    shared.audit(|a| a.event("hook_decision", json!({"hook": name, "hook_event": "after-call", "operation": e.operation, "cycle": e.cycle,
                        "decision": format!("interrupt ({:?}): {}", req.mode, req.reason)})));
                    let reason = format!("hook '{name}': {}", req.reason);
                    stop = match stop {
                        Some((types::InterruptMode::Immediate, r)) => Some((types::InterruptMode::Immediate, r)),
                        Some((_, r)) if req.mode == types::InterruptMode::Graceful => Some((types::InterruptMode::Graceful, r)),
                        _ => Some((req.mode, reason)),
                    };
                }
                Ok(_) => {}
                Err(msg) => {
                    if let Some(f) = self.failed(i, msg, shared) {
                        return Err(f);
                    }
                }
            }
        }
        Ok(stop)
    }

    /// Notifications: failures follow the policy but never change a decision.
    pub async fn on_threshold(&mut self, e: &types::ThresholdEvent, shared: &crate::run::RunShared) -> Result<(), HookFailure> {
        let answers = self.each(Event::Threshold(e)).await;
        self.check_all(answers, shared)
    }

    pub async fn on_interrupt(&mut self, e: &types::InterruptEvent, shared: &crate::run::RunShared) -> Result<(), HookFailure> {
        let answers = self.each(Event::Interrupt(e)).await;
        self.check_all(answers, shared)
    }

    pub async fn on_start(&mut self, e_for: impl Fn(usize) -> types::StartEvent, shared: &crate::run::RunShared) -> Result<(), HookFailure> {
        let events: Vec<types::StartEvent> = (0..self.hooks.len()).map(e_for).collect();
        let answers = self.each(Event::Start(&events)).await;
        self.check_all(answers, shared)
    }

    pub async fn on_end(&mut self, e: &types::EndEvent, shared: &crate::run::RunShared) -> Result<(), HookFailure> {
        let answers = self.each(Event::End(e)).await;
        self.check_all(answers, shared)
    }

    fn check_all(&mut self, answers: Vec<(usize, Result<Answer, String>)>, shared: &crate::run::RunShared) -> Result<(), HookFailure> {
        for (i, a) in answers {
            if let Err(msg) = a {
                if let Some(f) = self.failed(i, msg, shared) {
                    return Err(f);
                }
            }
        }
        Ok(())
    }

    /// Every hook's state, for a checkpoint. A hook that fails here keeps an
    /// empty state (logged): a checkpoint is never lost to a hook.
    pub async fn snapshots(&mut self, shared: &crate::run::RunShared) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for h in self.hooks.iter_mut() {
            let _ = h.store.set_fuel(self.limits.fuel_per_event);
            h.store.set_epoch_deadline(self.limits.ticks_per_event);
            match h.hook.budget_host_plugin_policy().call_snapshot(&mut h.store).await {
                Ok(b) if b.len() <= crate::checkpoint::MAX_SNAPSHOT => out.push(b),
                Ok(b) => {
                    let msg = format!("hook '{}' snapshot of {} bytes is over the limit", h.name, b.len());
                    shared.audit(|a| a.event("hook_failure", json!({"hook": h.name, "message": msg})));
                    out.push(Vec::new());
                }
                Err(e) => {
                    let msg = format!("hook '{}' trapped in snapshot: {e:#}", h.name);
                    shared.audit(|a| a.event("hook_failure", json!({"hook": h.name, "message": msg})));
                    out.push(Vec::new());
                }
            }
        }
        out
    }

    /// Restore states from a checkpoint (same order as the hooks).
    pub async fn restore(&mut self, states: &[Vec<u8>]) -> Result<(), String> {
        for (h, s) in self.hooks.iter_mut().zip(states) {
            let _ = h.store.set_fuel(self.limits.fuel_per_event);
            h.store.set_epoch_deadline(self.limits.ticks_per_event);
            match h.hook.budget_host_plugin_policy().call_restore(&mut h.store, s).await {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => return Err(format!("hook '{}' refused its checkpointed state: {msg}", h.name)),
                Err(e) => return Err(format!("hook '{}' trapped in restore: {e:#}", h.name)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_specs() {
        assert_eq!(HookSpec::parse("a/b.wasm"), HookSpec { path: "a/b.wasm".into(), config: String::new() });
        assert_eq!(HookSpec::parse("b.wasm=x=1,y=2"), HookSpec { path: "b.wasm".into(), config: "x=1,y=2".into() });
    }
}
