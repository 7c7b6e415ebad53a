//! The loop proper: instantiate, `init` or `restore`, start the hooks, then
//! `step` cycle by cycle with a snapshot after each, until the agent is done
//! or something stops it. Never fails: every problem becomes an interrupt.
//! Then the end: the hooks are told, the last checkpoint, the end event.

use super::checkpointer::Checkpointer;
use super::context::RunCtx;
use super::guard::{self, classify_trap};
use super::state::AgentState;
use super::{ResumePoint, RunOutcome, Status};
use crate::audit::{events, Event};
use crate::bindings::agent::AgentPre;
use crate::bindings::types;
use crate::budget::nanos_to_usd;
use crate::interrupt::{Interrupt, Mode, Source};
use std::borrow::Cow;
use std::time::Instant;
use wasmtime::Store;

/// The bounds of an entry into the agent that starts now (its own deadline starts now).
fn bounds(store: &mut Store<AgentState>) -> guard::Bounds {
    let b = &mut store.data_mut().bounds;
    b.entry_deadline = b.entry_timeout.map(|t| Instant::now() + t);
    b.clone()
}

fn stop_with(store: &mut Store<AgentState>, i: Interrupt) -> Option<Interrupt> {
    store.data_mut().raise(i);
    store.data().pending.clone()
}

pub(super) async fn drive(pre: &AgentPre<AgentState>, store: &mut Store<AgentState>, ck: &mut Checkpointer, resume: Option<&ResumePoint>) -> RunOutcome {
    let ctx = store.data().ctx.clone();
    let mut outcome = RunOutcome {
        run_id: ctx.run_id.clone(),
        status: Status::Interrupted,
        interrupt: None,
        cycles_completed: 0,
        result: None,
        ledger: store.data().account.ledger().state(),
        fuel_used: 0,
        log: Default::default(),
        checkpoint: None,
        summary: serde_json::Value::Null,
    };
    let b = bounds(store);
    let agent = match guard::enter(&b, "instantiation", pre.instantiate_async(&mut *store)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            outcome.interrupt = stop_with(store, classify_trap(&e, store, "instantiation"));
            return outcome;
        }
        Err(i) => {
            outcome.interrupt = stop_with(store, i);
            return outcome;
        }
    };
    let run = agent.budget_host_plugin_run();
    let (start, what) = match resume {
        Some(r) => (r.checkpoint.cycle, "restore"),
        None => (0, "init"),
    };
    let b = bounds(store);
    let started = match resume {
        Some(r) => guard::enter(&b, what, run.call_restore(&mut *store, &r.checkpoint.agent_state)).await,
        None => guard::enter(&b, what, run.call_init(&mut *store, &ctx.spec.task)).await,
    };
    match started {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(msg))) => {
            outcome.interrupt = stop_with(store, Interrupt::new(Source::Error, Mode::Graceful, format!("agent {what} failed: {msg}")));
            return outcome;
        }
        Ok(Err(e)) => {
            outcome.interrupt = stop_with(store, classify_trap(&e, store, what));
            return outcome;
        }
        Err(i) => {
            outcome.interrupt = stop_with(store, i);
            return outcome;
        }
    }
    outcome.cycles_completed = start;
    if let Err(i) = start_hooks(store, resume).await {
        outcome.interrupt = stop_with(store, i);
        return outcome;
    }
    store.data_mut().cycle = start;
    if let Err(i) = ck.take_snapshot(run, store, what).await {
        outcome.interrupt = stop_with(store, i);
        return outcome;
    }
    // A fresh journaled run checkpoints its start: a crash before the first
    // periodic checkpoint still resumes (from here, plus the journal). Not
    // when the user turned checkpoints off altogether.
    if resume.is_none() && store.data().journal.is_some() && ck.writes_any() {
        match ck.save(store, "start", None, start).await {
            Ok(p) => outcome.checkpoint = Some(p),
            Err(e) => store.data_mut().raise(Interrupt::new(Source::Error, Mode::Graceful, format!("cannot write a checkpoint: {e:#}"))),
        }
    }

    // No cycle after u32::MAX (a forged checkpoint may claim it): that is the last.
    let mut next = start.checked_add(1);
    loop {
        if ctx.out.failed() {
            store.data_mut().raise(Interrupt::new(Source::Error, Mode::Graceful, "the audit log cannot be written"));
        }
        if let Some(mode) = ctx.stop.requested() {
            store.data_mut().raise(Interrupt::new(Source::Signal, mode, "stop requested by signal"));
        }
        if let Some(p) = store.data().pending.clone() {
            outcome.interrupt = Some(p);
            return outcome;
        }
        let Some(cycle) = next.filter(|c| *c <= ctx.spec.limits.max_cycles) else {
            outcome.status = Status::MaxCycles;
            return outcome;
        };
        {
            let s = store.data_mut();
            s.cycle = cycle;
            s.call_in_step = 0;
            s.denied = None;
            // A step re-run on resume draws the same random bytes as the first time.
            s.random.reseed(&[ctx.run_id.as_bytes(), &cycle.to_le_bytes()]);
        }
        ctx.out.console.progress.cycle(cycle, guard::fuel_used(store));
        let what = format!("step {cycle}");
        let b = bounds(store);
        let step = guard::enter(&b, &what, run.call_step(&mut *store, cycle)).await;
        match step {
            Ok(Ok(Ok(types::StepOutcome::Continue(progress)))) => {
                console_cycle(&ctx, cycle, &progress);
                crate::crash::point("after-step");
                if let Err(i) = ck.take_snapshot(run, store, &format!("snapshot after step {cycle}")).await {
                    outcome.interrupt = stop_with(store, i);
                    return outcome;
                }
                outcome.cycles_completed = cycle;
                let every = ctx.spec.checkpoints.every;
                if every > 0 && cycle % every == 0 && store.data().pending.is_none() {
                    match ck.save(store, "periodic", None, cycle).await {
                        Ok(p) => outcome.checkpoint = Some(p),
                        Err(e) => store.data_mut().raise(Interrupt::new(Source::Error, Mode::Graceful, format!("cannot write a checkpoint: {e:#}"))),
                    }
                }
            }
            Ok(Ok(Ok(types::StepOutcome::Done(result)))) => {
                console_cycle(&ctx, cycle, "done");
                if let Err(i) = ck.take_snapshot(run, store, &format!("snapshot after step {cycle}")).await {
                    outcome.interrupt = stop_with(store, i);
                    return outcome;
                }
                outcome.cycles_completed = cycle;
                outcome.result = Some(result);
                outcome.interrupt = store.data().pending.clone();
                outcome.status = if outcome.interrupt.is_some() { Status::Interrupted } else { Status::Completed };
                return outcome;
            }
            Ok(Ok(Err(msg))) => {
                // A step that fails right after a hook denied a call was stopped by that hook.
                let i = match store.data().denied.clone() {
                    Some((hook, reason)) => Interrupt::new(
                        Source::Hook,
                        Mode::Graceful,
                        format!("hook '{hook}' denied a call: {reason}; the agent's step {cycle} then failed: {msg}"),
                    ),
                    None => Interrupt::new(Source::Error, Mode::Graceful, format!("agent step {cycle} failed: {msg}")),
                };
                store.data_mut().raise(i);
            }
            Ok(Err(e)) => {
                let i = classify_trap(&e, store, &what);
                outcome.interrupt = stop_with(store, i);
                return outcome;
            }
            Err(i) => {
                outcome.interrupt = stop_with(store, i);
                return outcome;
            }
        }
        next = cycle.checked_add(1);
    }
}

/// Restore hook states on resume, then send every hook `on-start`.
async fn start_hooks(store: &mut Store<AgentState>, resume: Option<&ResumePoint>) -> Result<(), Interrupt> {
    if store.data().hooks.is_empty() {
        return Ok(());
    }
    let ctx = store.data().ctx.clone();
    if let Some(r) = resume {
        store.data_mut().hooks.restore(&r.checkpoint.hook_states).await.map_err(|m| Interrupt::new(Source::HookFailed, Mode::Graceful, m))?;
    }
    let (spent, limit) = {
        let l = store.data().account.ledger();
        (nanos_to_usd(l.spent()), nanos_to_usd(l.limit()))
    };
    let cycle = resume.map(|r| r.checkpoint.cycle).unwrap_or(0);
    let spec = &ctx.spec;
    let event = |i: usize| types::StartEvent {
        agent: spec.agent_name.clone(),
        task: spec.task.clone(),
        config: spec.hooks.get(i).map(|h| h.config.clone()).unwrap_or_default(),
        limit_usd: limit,
        spent_usd: spent,
        resumed: resume.is_some(),
        cycle,
    };
    store.data_mut().hooks.on_start(event).await.map_err(|f| Interrupt::new(Source::HookFailed, Mode::Graceful, f.message))
}

/// `on-interrupt` and `on-end` for the hooks; their failures are logged, the run is over anyway.
pub(super) async fn tell_hooks_the_end(store: &mut Store<AgentState>, outcome: &RunOutcome) {
    if store.data().hooks.is_empty() {
        return;
    }
    let agent = store.data().ctx.spec.agent_name.clone();
    let (spent, limit, calls) = {
        let l = store.data().account.ledger();
        (nanos_to_usd(l.spent()), nanos_to_usd(l.limit()), l.calls())
    };
    if let Some(i) = &outcome.interrupt {
        let e = types::InterruptEvent {
            agent: agent.clone(),
            source: match i.source {
                Source::Budget | Source::Overrun => types::InterruptSource::Budget,
                Source::Fuel => types::InterruptSource::Fuel,
                Source::Timeout => types::InterruptSource::Timeout,
                Source::Signal => types::InterruptSource::Signal,
                Source::Hook | Source::HookFailed => types::InterruptSource::Hook,
                Source::Error | Source::Diverged => types::InterruptSource::Error,
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
        let _ = store.data_mut().hooks.on_interrupt(&e).await;
    }
    let status = match outcome.status {
        Status::Completed | Status::MaxCycles => "completed",
        Status::Interrupted if outcome.interrupt.as_ref().is_some_and(|i| i.source == Source::Error) => "failed",
        Status::Interrupted => "interrupted",
    };
    let e = types::EndEvent { agent, status: status.into(), spent_usd: spent, limit_usd: limit, calls, cycles: outcome.cycles_completed };
    let _ = store.data_mut().hooks.on_end(&e).await;
}

/// Interrupts and the end get a checkpoint of the last completed cycle.
pub(super) async fn final_checkpoint(store: &mut Store<AgentState>, ck: &Checkpointer, outcome: &mut RunOutcome) {
    let on_interrupt = store.data().ctx.spec.checkpoints.on_interrupt;
    let reason = match &outcome.interrupt {
        Some(_) if !on_interrupt => return,
        Some(_) => "interrupt",
        None => "final",
    };
    if !ck.ready() {
        return;
    }
    match ck.save(store, reason, outcome.interrupt.clone(), outcome.cycles_completed).await {
        Ok(p) => outcome.checkpoint = Some(p),
        Err(e) => {
            store.data().ctx.out.console.error(&format!("{e:#}"));
            if outcome.interrupt.is_none() {
                outcome.interrupt = Some(Interrupt::new(Source::Error, Mode::Graceful, format!("cannot write the final checkpoint: {e:#}")));
                outcome.status = Status::Interrupted;
            }
        }
    }
}

fn console_cycle(ctx: &RunCtx, cycle: u32, progress: &str) {
    let line = progress.lines().next().unwrap_or("");
    ctx.out.console.out(&format!("CYCLE {cycle}: {line}"));
    ctx.out.flush_warnings();
}

/// Print the end of the run and write the `interrupt` and `budget_monitoring_end` events.
pub(super) fn finish(ctx: &RunCtx, outcome: &mut RunOutcome) {
    ctx.out.flush_warnings();
    let l = &outcome.ledger;
    if let Some(i) = &outcome.interrupt {
        ctx.out.event(&Event::Interrupt(events::InterruptLine {
            source: Cow::Borrowed(i.source.as_str()),
            mode: Cow::Borrowed(i.mode.as_str()),
            message: Cow::Borrowed(&i.message),
            interrupt_timestamp: Cow::Borrowed(&i.timestamp),
            cycles_completed: Some(outcome.cycles_completed),
            total_cost: nanos_to_usd(l.spent),
            total_cost_nanos: l.spent,
        }));
    }
    let avg = if l.calls == 0 { 0.0 } else { nanos_to_usd(l.spent) / l.calls as f64 };
    let status = serde_json::to_value(outcome.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    ctx.out.event(&Event::BudgetMonitoringEnd(events::End {
        status: Some(Cow::Owned(status)),
        stop_source: outcome.interrupt.as_ref().map(|i| Cow::Borrowed(i.source.as_str())),
        total_cost: nanos_to_usd(l.spent),
        total_cost_nanos: l.spent,
        budget_limit: nanos_to_usd(l.limit),
        budget_limit_nanos: Some(l.limit),
        budget_remaining: nanos_to_usd(l.limit.saturating_sub(l.spent)),
        budget_used_percentage: crate::report::percent(l.spent, l.limit),
        operations: Some(l.calls),
        avg_cost_per_operation: avg,
        cost_by_operation: l.by_operation.iter().map(|(k, v)| (k.clone(), nanos_to_usd(v.cost))).collect(),
        cost_by_operation_nanos: l.by_operation.iter().map(|(k, v)| (k.clone(), v.cost)).collect(),
        cycles_completed: Some(outcome.cycles_completed),
        fuel_used: Some(outcome.fuel_used),
        over_reservation_nanos: l.overrun,
    }));
    ctx.out.sync();
    super::banner::ending(&ctx.out.console, &ctx.spec, outcome);
}
