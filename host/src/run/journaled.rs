//! The call path's journal steps: replay an answer journaled before a crash
//! (matched by cycle, place in the step and request digest, before hooks and
//! reservation, at $0), write the intent before the provider is called, and
//! the result before the guest sees the answer.

use super::call::{Prepared, Settled};
use super::state::AgentState;
use crate::account::{Held, Plan};
use crate::audit::{events, Event};
use crate::bindings::types;
use crate::interrupt::{Interrupt, Mode, Source};
use crate::journal::{Answer, Record};
use std::borrow::Cow;

fn role(r: types::Role) -> &'static str {
    match r {
        types::Role::System => "system",
        types::Role::User => "user",
        types::Role::Assistant => "assistant",
    }
}

/// sha256 of what the guest asked for (not of what the host made of it).
pub(super) fn digest(req: &types::CompletionRequest) -> String {
    let messages: Vec<(&str, &str)> = req.messages.iter().map(|m| (role(m.role), m.content.as_str())).collect();
    crate::journal::request_digest(req.model.as_deref().unwrap_or(""), req.max_tokens, req.temperature, &messages)
}

impl AgentState {
    /// The journaled answer, when this call is the next one the crashed run made.
    /// The first call that differs ends replay, said in the log.
    pub(super) fn try_replay(&mut self, req: &types::CompletionRequest, fuel_total: u64) -> Option<types::Completion> {
        let front = self.replay.front()?;
        let d = digest(req);
        if (front.cycle, front.index, front.digest.as_str()) != (self.cycle, self.call_in_step, d.as_str()) {
            let left = self.replay.len();
            self.replay.clear();
            let detail = format!("call {} of cycle {} asks something else than the journal recorded; {left} journaled answer(s) not replayed, the calls are made anew", self.call_in_step, self.cycle);
            self.ctx.out.event(&Event::ReplayEnded(events::ReplayEnded { cycle: self.cycle, index: self.call_in_step, detail: Cow::Owned(detail) }));
            return None;
        }
        let s = self.replay.pop_front()?;
        let a = s.answer?;
        Some(self.answer_replayed("journal", &s.operation, a, fuel_total))
    }

    /// A recorded answer given to the guest at $0 (from the journal or a
    /// tape, named by `source`), logged as a replayed call.
    pub(super) fn answer_replayed(&mut self, source: &'static str, operation: &str, a: Answer, fuel_total: u64) -> types::Completion {
        let (spent, limit) = {
            let l = self.account.ledger();
            (l.spent(), l.limit())
        };
        self.ctx.out.event(&Event::LlmCall(events::Call {
            operation: Some(Cow::Borrowed(operation)),
            cycle: self.cycle,
            provider: Some(Cow::Borrowed(source)),
            model: Some(Cow::Borrowed(&a.model)),
            input_tokens: a.input_tokens,
            output_tokens: a.output_tokens,
            cached_tokens: a.cached_tokens,
            max_tokens: Some(a.max_tokens),
            cumulative: crate::budget::nanos_to_usd(spent),
            cumulative_nanos: Some(spent),
            budget_limit_nanos: Some(limit),
            fuel: Some(fuel_total),
            finish_reason: Some(Cow::Borrowed(&a.finish_reason)),
            replayed: true,
            ..Default::default()
        }));
        let clamp = |t: u64| t.min(u32::MAX as u64) as u32;
        types::Completion {
            text: a.text,
            model: a.model,
            usage: types::Usage { input_tokens: clamp(a.input_tokens), output_tokens: clamp(a.output_tokens), cached_tokens: clamp(a.cached_tokens) },
            cost_usd: 0.0,
            max_tokens: a.max_tokens,
            finish_reason: a.finish_reason,
        }
    }

    /// Write the call's intent durably (when there is a journal) and number it.
    /// `Err` refuses the call: its money is released, nothing was sent.
    pub(super) async fn journal_intent(&mut self, call: &Prepared, plan: &Plan, held: Held) -> Result<(Option<u64>, Held), types::LlmError> {
        let Some(journal) = self.journal.clone() else { return Ok((None, held)) };
        let seq = self.seq;
        let rec = Record::Intent {
            run_id: self.ctx.run_id.clone(),
            seq,
            cycle: self.cycle,
            index: self.call_in_step,
            digest: call.digest.clone(),
            operation: call.operation.clone(),
            reserved_nanos: plan.reserve,
            hold: held.hold_id().map(String::from),
        };
        match journal.append(&rec).await {
            Ok(()) => {
                self.seq += 1;
                crate::crash::point("after-intent");
                Ok((Some(seq), held))
            }
            Err(e) => {
                let msg = format!("{e}: call {} refused, nothing spent", call.operation);
                let _ = self.account.release(held).await;
                self.ctx.out.event(&Event::LlmCallRefused(events::Refused {
                    operation: Some(Cow::Borrowed(&call.operation)),
                    cycle: self.cycle,
                    reason: Cow::Borrowed("journal_failed"),
                    detail: Cow::Borrowed(&msg),
                }));
                self.raise(Interrupt::new(Source::Error, Mode::Graceful, msg.clone()));
                Err(types::LlmError::Provider(msg))
            }
        }
    }

    /// Write the call's result durably: what it cost and, when answered, the
    /// answer. `Err` withholds the answer from the guest and stops the run.
    pub(super) async fn journal_result(&mut self, seq: Option<u64>, cost: u64, settled: Option<&Settled>, max_tokens: u32) -> Result<(), types::LlmError> {
        let (Some(journal), Some(seq)) = (self.journal.clone(), seq) else { return Ok(()) };
        let answer = settled.map(|s| Answer {
            text: s.resp.text.clone(),
            model: s.resp.model.clone(),
            finish_reason: s.resp.finish_reason.clone(),
            input_tokens: s.usage.input_tokens,
            output_tokens: s.usage.output_tokens,
            cached_tokens: s.usage.cached_tokens,
            max_tokens,
        });
        let rec = Record::Result { run_id: self.ctx.run_id.clone(), seq, cost_nanos: cost, answer };
        journal.append(&rec).await.map_err(|e| {
            let msg = format!("{e}: the answer is withheld and the run stops (its cost is recorded)");
            self.raise(Interrupt::new(Source::Error, Mode::Graceful, msg.clone()));
            types::LlmError::Provider(msg)
        })
    }
}
