//! Tapes in the call path. Recording keeps what each call asked, in full,
//! and what the agent got back (answer or error, its cost, the stop it
//! raised); the tape is written at the end of the run. A replay answers
//! every call from the tape, in order, before hooks, reservation or any
//! provider, at $0, and raises the stops the recording raised; it is strict:
//! the first request that differs from the tape's next one (or comes past
//! its end), or a run that ends otherwise than the recording, stops with
//! [`Source::Diverged`] (exit 9), saying where and how.

use super::call::{Cancelled, CallResult, MAX_OPERATION_LABEL};
use super::state::AgentState;
use super::{RunOutcome, Status};
use crate::audit::{events, Event};
use crate::bindings::types;
use crate::interrupt::{Interrupt, Mode, Source};
use crate::journal::Answer;
use crate::tape::{self, diff, Call, ErrorKind, Outcome, Request, Stop, Tape};
use std::borrow::Cow;
use std::collections::VecDeque;

/// What the run does with a tape.
pub enum Taping {
    /// Keep every call for the tape written at the end.
    Record { header: Box<tape::Header>, calls: Vec<Call> },
    /// Answer every call from the tape.
    Replay(Player),
}

/// A tape being replayed.
pub struct Player {
    calls: VecDeque<Call>,
    total: usize,
    end: tape::End,
}

impl Player {
    pub fn new(t: Tape) -> Player {
        Player { total: t.calls.len(), calls: t.calls.into(), end: t.end }
    }

    fn played(&self) -> usize {
        self.total - self.calls.len()
    }
}

fn role(r: types::Role) -> crate::llm::Role {
    match r {
        types::Role::System => crate::llm::Role::System,
        types::Role::User => crate::llm::Role::User,
        types::Role::Assistant => crate::llm::Role::Assistant,
    }
}

/// The guest's request as a tape holds it.
fn request_of(req: &types::CompletionRequest) -> Request {
    Request {
        messages: req.messages.iter().map(|m| tape::Message { role: role(m.role), content: m.content.clone() }).collect(),
        model: req.model.clone(),
        max_tokens: req.max_tokens,
        temperature: req.temperature,
    }
}

fn stop_of(i: &Interrupt) -> Stop {
    Stop { source: i.source, mode: i.mode, message: i.message.clone() }
}

fn outcome_of(r: &CallResult) -> Outcome {
    match r {
        Ok(Ok(c)) => Outcome::Answer(Answer {
            text: c.text.clone(),
            model: c.model.clone(),
            finish_reason: c.finish_reason.clone(),
            input_tokens: c.usage.input_tokens.into(),
            output_tokens: c.usage.output_tokens.into(),
            cached_tokens: c.usage.cached_tokens.into(),
            max_tokens: c.max_tokens,
        }),
        Ok(Err(e)) => {
            let (kind, message) = match e {
                types::LlmError::BudgetExhausted(_) => (ErrorKind::BudgetExhausted, "not even a minimal answer fit what was left of the budget".into()),
                types::LlmError::Denied(m) => (ErrorKind::Denied, m.clone()),
                types::LlmError::Provider(m) => (ErrorKind::Provider, m.clone()),
                types::LlmError::InvalidRequest(m) => (ErrorKind::InvalidRequest, m.clone()),
            };
            Outcome::Error { kind, message }
        }
        Err(_) => Outcome::Cancelled,
    }
}

/// `completed`, `max_cycles` or `interrupted`, as the summary says it.
fn status_name(s: Status) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// The end of a run as a tape records it.
pub fn end_of(o: &RunOutcome) -> tape::End {
    tape::End { status: status_name(o.status), stop: o.interrupt.as_ref().map(stop_of), cycles: o.cycles_completed, result: o.result.clone(), spent_nanos: o.ledger.spent }
}

impl AgentState {
    /// The operation label a request is charged under (as `prepare` names it).
    fn label_of(&self, req: &types::CompletionRequest) -> String {
        match req.operation.as_deref().filter(|o| !o.is_empty() && o.len() <= MAX_OPERATION_LABEL) {
            Some(l) => l.to_string(),
            None => format!("llm_call_cycle_{}", self.cycle),
        }
    }

    pub(super) fn recording(&self) -> bool {
        matches!(self.tape, Some(Taping::Record { .. }))
    }

    pub(super) fn replaying(&self) -> bool {
        matches!(self.tape, Some(Taping::Replay(_)))
    }

    /// What a recorded call asked, before the call consumes the request.
    pub(super) fn tape_request(&self, req: &types::CompletionRequest) -> (Request, String) {
        (request_of(req), self.label_of(req))
    }

    /// Keep a call for the tape: what it asked, what the agent got, what it cost
    /// (the ledger's growth over the call) and the stop it raised.
    pub(super) fn tape_call(&mut self, (request, operation): (Request, String), spent_before: u64, r: &CallResult) {
        let cost = self.account.ledger().spent().saturating_sub(spent_before);
        let call = Call {
            cycle: self.cycle,
            index: self.call_in_step,
            operation,
            digest: request.digest(),
            request,
            outcome: outcome_of(r),
            cost_nanos: cost,
            stop: self.pending.as_ref().map(stop_of),
        };
        if let Some(Taping::Record { calls, .. }) = &mut self.tape {
            calls.push(call);
        }
    }

    /// Answer a call from the tape, or stop the run where it diverges.
    pub(super) fn play(&mut self, req: &types::CompletionRequest, fuel_total: u64) -> CallResult {
        let asked = request_of(req);
        let operation = self.label_of(req);
        let (cycle, index) = (self.cycle, self.call_in_step);
        let Some(Taping::Replay(p)) = &mut self.tape else { return Err(Cancelled("not replaying").into()) };
        let n = p.played() + 1;
        let Some(next) = p.calls.front() else {
            let msg = format!("at call {n}: the agent asks for call {index} of cycle {cycle} ({operation}), past the end of the tape ({} calls)", p.total);
            return self.diverge(msg);
        };
        if (next.cycle, next.index, next.digest.as_str()) != (cycle, index, asked.digest().as_str()) {
            let mut why = Vec::new();
            if (next.cycle, next.index) != (cycle, index) {
                why.push(format!("the tape made it as call {} of cycle {}, the agent now asks as call {index} of cycle {cycle}", next.index, next.cycle));
            }
            let d = diff::explain(&next.request, &asked);
            if !d.is_empty() {
                why.push(d);
            }
            let msg = format!("at call {n} of the tape (cycle {}, call {} of its step, operation {}): {}", next.cycle, next.index, next.operation, why.join("; "));
            return self.diverge(msg);
        }
        let call = p.calls.pop_front().expect("checked above");
        if let Some(s) = &call.stop {
            self.raise(Interrupt::new(s.source, s.mode, s.message.clone()));
        }
        match call.outcome {
            Outcome::Answer(a) => Ok(Ok(self.replayed_answer(&call.operation, a, fuel_total))),
            Outcome::Error { kind, message } => {
                self.refuse_replayed(&call.operation, kind, &message);
                Ok(Err(match kind {
                    ErrorKind::BudgetExhausted => types::LlmError::BudgetExhausted(self.status(fuel_total)),
                    ErrorKind::Denied => types::LlmError::Denied(message),
                    ErrorKind::Provider => types::LlmError::Provider(message),
                    ErrorKind::InvalidRequest => types::LlmError::InvalidRequest(message),
                }))
            }
            Outcome::Cancelled => Err(Cancelled("the recording stopped during this call").into()),
        }
    }

    /// The recorded answer at $0: counted as a call of its operation, logged as replayed.
    fn replayed_answer(&mut self, operation: &str, a: Answer, fuel_total: u64) -> types::Completion {
        self.account.ledger().charge(0, operation);
        self.answer_replayed("tape", operation, a, fuel_total)
    }

    fn refuse_replayed(&self, operation: &str, kind: ErrorKind, message: &str) {
        let reason = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(|s| format!("replayed_{s}"))).unwrap_or_default();
        self.ctx.out.event(&Event::LlmCallRefused(events::Refused {
            operation: Some(Cow::Borrowed(operation)),
            cycle: self.cycle,
            reason: Cow::Owned(reason),
            detail: Cow::Borrowed(message),
        }));
    }

    /// Stop the run at once: the agent asked what the tape did not record.
    fn diverge(&mut self, detail: String) -> CallResult {
        let msg = format!("replay diverged {detail}");
        self.ctx.out.event(&Event::ReplayEnded(events::ReplayEnded { cycle: self.cycle, index: self.call_in_step, detail: Cow::Borrowed(&msg) }));
        self.raise(Interrupt::new(Source::Diverged, Mode::Immediate, msg));
        Err(Cancelled("replay diverged").into())
    }

    /// After a replay: a run that made fewer calls than the tape, or ended
    /// otherwise than the recording, diverged too. Not judged when the replay
    /// was cut short by something of its own (a signal, a timeout).
    pub(super) fn replay_end(&self, o: &RunOutcome) -> Option<Interrupt> {
        let Some(Taping::Replay(p)) = &self.tape else { return None };
        if o.interrupt.as_ref().is_some_and(|i| matches!(i.source, Source::Signal | Source::Timeout | Source::Diverged)) {
            return None;
        }
        let diverged = |detail: String| Some(Interrupt::new(Source::Diverged, Mode::Graceful, format!("replay diverged at the end of the run: {detail}")));
        if let Some(next) = p.calls.front() {
            return diverged(format!(
                "it made {} of the tape's {} calls; the next was call {} of cycle {} ({})",
                p.played(),
                p.total,
                next.index,
                next.cycle,
                next.operation
            ));
        }
        let (want, got) = (&p.end, end_of(o));
        if want.status != got.status || want.stop.as_ref().map(|s| s.source) != got.stop.as_ref().map(|s| s.source) {
            let how = |e: &tape::End| match &e.stop {
                Some(s) => format!("{} ({})", e.status, s.source.as_str()),
                None => e.status.clone(),
            };
            return diverged(format!("the recording ended {}, the replay {}", how(want), how(&got)));
        }
        if want.result != got.result {
            let d = diff::text(want.result.as_deref().unwrap_or(""), got.result.as_deref().unwrap_or("")).unwrap_or_else(|| "one has none".into());
            return diverged(format!("the result {d}"));
        }
        None
    }

    /// The recorded tape, once the run has ended (`None` unless recording).
    pub(super) fn take_tape(&mut self, o: &RunOutcome) -> Option<Tape> {
        match self.tape.take() {
            Some(Taping::Record { header, calls }) => Some(Tape { header: *header, calls, end: end_of(o) }),
            other => {
                self.tape = other;
                None
            }
        }
    }
}
