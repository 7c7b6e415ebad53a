//! Budget hooks: sandboxed components (world `hook`) that watch every call.
//!
//! Each hook has its own store ([`store`]) with its own fuel, time and memory
//! limits per event. Decisions combine to the most restrictive: any deny
//! denies, the lowest max-tokens wins, any interrupt interrupts (immediate
//! over graceful). Hooks can only tighten: a max-tokens above the current one
//! is ignored. A hook that traps, runs out of fuel or time, or answers
//! nonsense is handled by the failure policy: fail-closed (default) denies
//! the call and stops the run, naming the hook; fail-open disables the hook
//! and goes on, logged. Hooks know nothing of the agent loop or of money
//! beyond the figures in their events.

pub mod store;

use crate::audit::{events, Event as Event_};
use crate::bindings::types;
use crate::output::Output;
use crate::spec::{FailurePolicy, HookLimits};
use std::borrow::Cow;
use std::sync::Arc;
pub use store::{HookState, HookStore};

/// One hook of the run, loaded.
struct Loaded {
    store: HookStore,
    sha256: String,
    disabled: bool,
}

/// The run's hooks, in priority order.
pub struct Hooks {
    hooks: Vec<Loaded>,
    policy: FailurePolicy,
    out: Option<Arc<Output>>,
}

/// Combined answer to `before-call`.
#[derive(Debug, Clone, PartialEq)]
pub enum Before {
    /// Every hook allowed the call.
    Allow,
    /// Lower max tokens to this (the hook that asked).
    Limit(u32, String),
    /// Refuse the call: the hook's name and its reason.
    Deny { hook: String, reason: String },
}

/// A hook failed and the policy is fail-closed: stop, naming it.
#[derive(Debug, Clone)]
pub struct HookFailure {
    /// One line naming the hook and what went wrong.
    pub message: String,
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

impl Hooks {
    /// No hooks.
    pub fn none() -> Hooks {
        Hooks { hooks: Vec::new(), policy: FailurePolicy::Closed, out: None }
    }

    /// Hooks already started, in priority order, with their sha256.
    pub fn new(started: Vec<(HookStore, String)>, policy: FailurePolicy, out: Arc<Output>) -> Hooks {
        Hooks { hooks: started.into_iter().map(|(store, sha256)| Loaded { store, sha256, disabled: false }).collect(), policy, out: Some(out) }
    }

    /// Whether the run has any hook.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Each hook's name and sha256, in order.
    pub fn names(&self) -> Vec<(String, String)> {
        self.hooks.iter().map(|h| (h.store.name.clone(), h.sha256.clone())).collect()
    }

    fn out(&self) -> &Output {
        self.out.as_deref().expect("hooks with members have an output")
    }

    /// Run one event on every enabled hook. Returns each hook's answer (or its
    /// failure message) in priority order.
    async fn each(&mut self, event: Event<'_>) -> Vec<(usize, Result<Answer, String>)> {
        let what = event.name();
        let mut out = Vec::new();
        for (i, h) in self.hooks.iter_mut().enumerate() {
            if h.disabled {
                continue;
            }
            let r = match &event {
                Event::Start(all) => {
                    let e = &all[i];
                    h.store.call(what, |k, s| async move { k.budget_host_plugin_policy().call_on_start(s, e).await.map(|_| Answer::Unit) }).await
                }
                Event::Before(e) => h.store.call(what, |k, s| async move { k.budget_host_plugin_policy().call_before_call(s, e).await.map(Answer::Before) }).await,
                Event::After(e) => h.store.call(what, |k, s| async move { k.budget_host_plugin_policy().call_after_call(s, e).await.map(Answer::After) }).await,
                Event::Threshold(e) => h.store.call(what, |k, s| async move { k.budget_host_plugin_policy().call_on_threshold(s, e).await.map(|_| Answer::Unit) }).await,
                Event::Interrupt(e) => h.store.call(what, |k, s| async move { k.budget_host_plugin_policy().call_on_interrupt(s, e).await.map(|_| Answer::Unit) }).await,
                Event::End(e) => h.store.call(what, |k, s| async move { k.budget_host_plugin_policy().call_on_end(s, e).await.map(|_| Answer::Unit) }).await,
            };
            out.push((i, r));
        }
        out
    }

    /// Handle a failed hook per the policy: `Some` means stop (fail-closed).
    fn failed(&mut self, i: usize, message: String) -> Option<HookFailure> {
        let policy = self.policy;
        let out = self.out.clone().expect("hooks with members have an output");
        let h = &mut self.hooks[i];
        let p = match policy {
            FailurePolicy::Closed => "closed",
            FailurePolicy::Open => "open",
        };
        out.event(&Event_::HookFailure(events::HookFailure { hook: Cow::Borrowed(&h.store.name), message: Cow::Borrowed(&message), policy: Some(Cow::Borrowed(p)) }));
        match policy {
            FailurePolicy::Closed => Some(HookFailure { message }),
            FailurePolicy::Open => {
                h.disabled = true;
                out.console.note(&format!("⚠️  {message}; the hook is disabled (--hook-failure open)"));
                None
            }
        }
    }

    fn decision(&self, hook: &str, hook_event: &str, operation: &str, cycle: u32, decision: &str) {
        self.out().event(&Event_::HookDecision(events::HookDecision {
            hook: Cow::Borrowed(hook),
            hook_event: Cow::Borrowed(hook_event),
            operation: Cow::Borrowed(operation),
            cycle,
            decision: Cow::Borrowed(decision),
        }));
    }

    /// `before-call` on every hook, combined to the most restrictive answer.
    pub async fn before_call(&mut self, e: &types::CallEvent) -> Result<Before, HookFailure> {
        let answers = self.each(Event::Before(e)).await;
        let mut combined = Before::Allow;
        for (i, a) in answers {
            let name = self.hooks[i].store.name.clone();
            let d = match a {
                Ok(Answer::Before(d)) => d,
                Ok(_) => continue,
                Err(msg) => match self.failed(i, msg) {
                    Some(f) => return Err(f),
                    None => continue,
                },
            };
            let (logged, next): (Cow<str>, _) = match d {
                types::CallDecision::Allow => ("allow".into(), None),
                types::CallDecision::Deny(reason) => (format!("deny: {reason}").into(), Some(Before::Deny { hook: name.clone(), reason })),
                types::CallDecision::Limit(0) => {
                    ("limit 0 (treated as deny)".into(), Some(Before::Deny { hook: name.clone(), reason: "allowed 0 output tokens".into() }))
                }
                types::CallDecision::Limit(n) if n >= e.max_tokens => (format!("limit {n} ignored: not below {}", e.max_tokens).into(), None),
                types::CallDecision::Limit(n) => (format!("limit {n}").into(), Some(Before::Limit(n, name.clone()))),
            };
            self.decision(&name, "before-call", &e.operation, e.cycle, &logged);
            combined = match (combined, next) {
                (c @ Before::Deny { .. }, _) => c,
                (_, Some(d @ Before::Deny { .. })) => d,
                (Before::Limit(a, an), Some(Before::Limit(b, bn))) => {
                    if b < a {
                        Before::Limit(b, bn)
                    } else {
                        Before::Limit(a, an)
                    }
                }
                (Before::Allow, Some(l)) => l,
                (c, _) => c,
            };
        }
        Ok(combined)
    }

    /// `Some((mode, reason))` when a hook asks to stop the run.
    pub async fn after_call(&mut self, e: &types::CostEvent) -> Result<Option<(types::InterruptMode, String)>, HookFailure> {
        let answers = self.each(Event::After(e)).await;
        let mut stop: Option<(types::InterruptMode, String)> = None;
        for (i, a) in answers {
            let name = self.hooks[i].store.name.clone();
            match a {
                Ok(Answer::After(types::AfterDecision::Interrupt(req))) => {
                    // The decision's text as earlier hosts wrote it (reports and tests read it).
                    let mode = match req.mode {
                        types::InterruptMode::Graceful => "Graceful",
                        types::InterruptMode::Immediate => "Immediate",
                    };
                    self.decision(&name, "after-call", &e.operation, e.cycle, &format!("interrupt ({mode}): {}", req.reason));
                    let reason = format!("hook '{name}': {}", req.reason);
                    stop = match stop {
                        Some((types::InterruptMode::Immediate, r)) => Some((types::InterruptMode::Immediate, r)),
                        Some((_, r)) if req.mode == types::InterruptMode::Graceful => Some((types::InterruptMode::Graceful, r)),
                        _ => Some((req.mode, reason)),
                    };
                }
                Ok(_) => {}
                Err(msg) => {
                    if let Some(f) = self.failed(i, msg) {
                        return Err(f);
                    }
                }
            }
        }
        Ok(stop)
    }

    /// `on-threshold`: failures follow the policy but never change a decision.
    pub async fn on_threshold(&mut self, e: &types::ThresholdEvent) -> Result<(), HookFailure> {
        let answers = self.each(Event::Threshold(e)).await;
        self.check_all(answers)
    }

    /// `on-interrupt`.
    pub async fn on_interrupt(&mut self, e: &types::InterruptEvent) -> Result<(), HookFailure> {
        let answers = self.each(Event::Interrupt(e)).await;
        self.check_all(answers)
    }

    /// `on-start`, with each hook's own event (its config).
    pub async fn on_start(&mut self, e_for: impl Fn(usize) -> types::StartEvent) -> Result<(), HookFailure> {
        let events: Vec<types::StartEvent> = (0..self.hooks.len()).map(e_for).collect();
        let answers = self.each(Event::Start(&events)).await;
        self.check_all(answers)
    }

    /// `on-end`.
    pub async fn on_end(&mut self, e: &types::EndEvent) -> Result<(), HookFailure> {
        let answers = self.each(Event::End(e)).await;
        let r = self.check_all(answers);
        for h in &self.hooks {
            h.store.flush_output();
        }
        r
    }

    fn check_all(&mut self, answers: Vec<(usize, Result<Answer, String>)>) -> Result<(), HookFailure> {
        for (i, a) in answers {
            if let Err(msg) = a {
                if let Some(f) = self.failed(i, msg) {
                    return Err(f);
                }
            }
        }
        Ok(())
    }

    /// Every hook's state by name, for a checkpoint. A hook that fails here
    /// keeps an empty state (logged): a checkpoint is never lost to a hook.
    pub async fn snapshots(&mut self) -> Vec<(String, Vec<u8>)> {
        let mut states = Vec::new();
        let mut failures = Vec::new();
        for h in self.hooks.iter_mut() {
            let r = h.store.call("snapshot", |k, s| async move { k.budget_host_plugin_policy().call_snapshot(s).await }).await;
            let state = match r {
                Ok(b) if b.len() <= crate::spec::MAX_SNAPSHOT_BYTES => b,
                Ok(b) => {
                    failures.push((h.store.name.clone(), format!("hook '{}' snapshot of {} bytes is over the limit", h.store.name, b.len())));
                    Vec::new()
                }
                Err(msg) => {
                    failures.push((h.store.name.clone(), msg));
                    Vec::new()
                }
            };
            states.push((h.store.name.clone(), state));
        }
        for (hook, message) in failures {
            self.out().event(&Event_::HookFailure(events::HookFailure { hook: Cow::Borrowed(&hook), message: Cow::Borrowed(&message), policy: None }));
        }
        states
    }

    /// Restore states from a checkpoint, by hook name. A hook without a saved
    /// state (added since) starts fresh.
    pub async fn restore(&mut self, states: &[(String, Vec<u8>)]) -> Result<(), String> {
        for h in self.hooks.iter_mut() {
            let Some((_, state)) = states.iter().find(|(n, _)| *n == h.store.name) else { continue };
            let name = h.store.name.clone();
            let r = h.store.call("restore", |k, s| async move { k.budget_host_plugin_policy().call_restore(s, state).await }).await?;
            if let Err(msg) = r {
                return Err(format!("hook '{name}' refused its checkpointed state: {msg}"));
            }
        }
        Ok(())
    }
}

/// Start every hook of a run in its own store, in priority order.
pub async fn start_all(
    engine: &wasmtime::Engine,
    hooks: &[(String, String, Arc<crate::bindings::hook::HookPre<HookState>>)],
    limits: HookLimits,
    policy: FailurePolicy,
    out: &Arc<Output>,
) -> anyhow::Result<Hooks> {
    let mut started = Vec::new();
    for (name, sha256, pre) in hooks {
        started.push((HookStore::start(engine, pre, name, limits, out).await?, sha256.clone()));
    }
    Ok(Hooks::new(started, policy, out.clone()))
}
