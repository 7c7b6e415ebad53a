//! One LLM call, step by step (DESIGN.md "One LLM call"): check sizes, ask
//! the hooks, plan and reserve the worst case, call the provider, settle,
//! log, warn, ask the hooks again, return. Each step is its own function;
//! `complete_held` only chains them.

use super::context::sleep_until;
use super::state::AgentState;
use crate::account::{Held, Plan, Refusal};
use crate::audit::{events, Event};
use crate::bindings::types;
use crate::budget::{nanos_to_usd, pricing::Price};
use crate::hooks::Before;
use crate::interrupt::{Interrupt, Mode, Source};
use crate::llm::{ChatRequest, ChatResponse, Message, ProviderError, Role, Usage};
use std::borrow::Cow;
use std::time::Instant;

/// Outcome of the host side of `llm.complete`: a guest-visible result, or a
/// trap (immediate interrupt) that cancels the guest.
pub type CallResult = wasmtime::Result<Result<types::Completion, types::LlmError>>;

/// Marker error: the guest was cancelled on purpose (the loop reads `pending`).
#[derive(Debug, thiserror::Error)]
#[error("run interrupted ({0})")]
pub struct Cancelled(pub &'static str);

/// Longest operation label a guest may send.
pub const MAX_OPERATION_LABEL: usize = 128;
/// Longest model name a guest may ask for.
pub const MAX_MODEL_LABEL: usize = 256;
/// Distinct operation labels kept apart in one run; the rest share [`OTHER_OPERATIONS`].
pub const MAX_OPERATIONS: usize = 1000;
/// The bucket for labels past [`MAX_OPERATIONS`].
pub const OTHER_OPERATIONS: &str = "(other operations)";

fn role(r: types::Role) -> Role {
    match r {
        types::Role::System => Role::System,
        types::Role::User => Role::User,
        types::Role::Assistant => Role::Assistant,
    }
}

fn clamp32(t: u64) -> u32 {
    t.min(u32::MAX as u64) as u32
}

fn wit_usage(u: &Usage) -> types::Usage {
    types::Usage { input_tokens: clamp32(u.input_tokens), output_tokens: clamp32(u.output_tokens), cached_tokens: clamp32(u.cached_tokens) }
}

/// One call as prepared: what is asked, of which model, at what price.
pub(super) struct Prepared {
    pub(super) operation: String,
    pub(super) chat: ChatRequest,
    price: Price,
    pub(super) input_bound: u64,
    request_bytes: usize,
    fuel_total: u64,
    fuel_delta: u64,
    /// sha256 of the guest's request, for the journal and replay.
    pub(super) digest: String,
    /// Said on the call's line (a folded label).
    anomalies: Vec<String>,
}

/// What the provider answered, settled.
pub(super) struct Settled {
    pub(super) resp: ChatResponse,
    pub(super) usage: Usage,
    pub(super) charged: u64,
    /// Billed past the reservation (0: within it); the run stops.
    over_reservation: u64,
    anomalies: Vec<String>,
}

impl AgentState {
    /// `llm.complete`: the call's log lines (hook decisions, the call, its
    /// warnings) are held and written together when it returns, whatever the path.
    pub async fn complete(&mut self, req: types::CompletionRequest, fuel_used: u64) -> CallResult {
        let in_call = self.bounds.in_call.clone();
        in_call.store(true, std::sync::atomic::Ordering::SeqCst);
        self.ctx.out.hold();
        let r = self.complete_held(req, fuel_used).await;
        self.ctx.out.release();
        in_call.store(false, std::sync::atomic::Ordering::SeqCst);
        r
    }

    async fn complete_held(&mut self, req: types::CompletionRequest, fuel_used: u64) -> CallResult {
        let fuel_delta = fuel_used.saturating_sub(self.fuel_at_last_call);
        self.fuel_at_last_call = fuel_used;
        let fuel_total = self.fuel_before.saturating_add(fuel_used);
        self.call_in_step = self.call_in_step.saturating_add(1);

        // A pending stop refuses further spending inside the same step.
        if let Some(p) = &self.pending {
            let msg = format!("run is stopping ({}): {}", p.source.as_str(), p.message);
            let op = self.default_operation();
            self.refuse(&op, "stopping", &msg);
            return Ok(Err(types::LlmError::BudgetExhausted(self.status(fuel_total))));
        }
        // 0. A tape replay answers every call from the tape; a recording keeps what each asked and got.
        if self.replaying() {
            return self.play(&req, fuel_total);
        }
        if self.recording() {
            let asked = self.tape_request(&req);
            let spent = self.account.ledger().spent();
            let r = self.complete_call(req, fuel_total, fuel_delta).await;
            self.tape_call(asked, spent, &r);
            return r;
        }
        self.complete_call(req, fuel_total, fuel_delta).await
    }

    /// The call proper, from the journal's replay to the hooks after it.
    async fn complete_call(&mut self, req: types::CompletionRequest, fuel_total: u64, fuel_delta: u64) -> CallResult {
        // A call that asks what the journal answered before a crash gets that answer at $0.
        if let Some(done) = self.try_replay(&req, fuel_total) {
            return Ok(Ok(done));
        }
        let mut call = match self.prepare(req, fuel_total, fuel_delta).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(refused) = self.ask_hooks_before(&mut call).await {
            return Ok(Err(refused));
        }
        let (plan, held) = match self.reserve(&call).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        call.chat.max_tokens = plan.max_tokens;
        // The intent is durable before the provider hears of the call.
        let (seq, held) = match self.journal_intent(&call, &plan, held).await {
            Ok(x) => x,
            Err(refused) => return Ok(Err(refused)),
        };
        let started = Instant::now();
        let (result, attempts) = self.send(&call, &plan, held, seq).await?;
        let latency_ms = started.elapsed().as_millis() as u64;
        let (resp, held) = match result {
            Ok(r) => {
                crate::crash::point("after-provider");
                r
            }
            Err((e, held)) => return Ok(Err(self.provider_failed(e, held, &plan, &call, attempts, latency_ms, seq).await)),
        };
        let settled = self.settle(&call, &plan, held, resp).await;
        // The result is durable before the guest sees the answer.
        let journaled = self.journal_result(seq, settled.charged, Some(&settled), call.chat.max_tokens).await;
        self.record(&call, &plan, &settled, attempts, latency_ms).await;
        if let Err(refused) = journaled {
            return Ok(Err(refused));
        }
        crate::crash::point("after-result");
        // Billed past the reservation: the books hold the bill, and not one more call is made.
        if settled.over_reservation > 0 {
            return Err(Cancelled("overrun").into());
        }
        self.ask_hooks_after(&call, &plan, &settled, latency_ms).await?;
        Ok(Ok(types::Completion {
            text: settled.resp.text,
            model: settled.resp.model,
            usage: wit_usage(&settled.usage),
            cost_usd: nanos_to_usd(settled.charged),
            max_tokens: call.chat.max_tokens,
            finish_reason: settled.resp.finish_reason,
        }))
    }

    fn default_operation(&self) -> String {
        format!("llm_call_cycle_{}", self.cycle)
    }

    fn refuse(&self, operation: &str, reason: &str, detail: &str) {
        self.ctx.out.event(&Event::LlmCallRefused(events::Refused {
            operation: Some(Cow::Borrowed(operation)),
            cycle: self.cycle,
            reason: Cow::Borrowed(reason),
            detail: Cow::Borrowed(detail),
        }));
    }

    /// 1. Bounded input, checked before anything is reserved; the price and the token bound.
    async fn prepare(&mut self, req: types::CompletionRequest, fuel_total: u64, fuel_delta: u64) -> Result<Prepared, types::LlmError> {
        let ctx = self.ctx.clone();
        let limits = &ctx.spec.limits;
        let mut anomalies = Vec::new();
        let label = req.operation.as_deref().filter(|o| !o.is_empty());
        let mut operation = match label {
            Some(l) if l.len() > MAX_OPERATION_LABEL => {
                let op = self.default_operation();
                let msg = format!("operation label of {} bytes is over the limit of {MAX_OPERATION_LABEL} bytes", l.len());
                self.refuse(&op, "invalid_request", &msg);
                return Err(types::LlmError::InvalidRequest(msg));
            }
            Some(l) => l.to_string(),
            None => self.default_operation(),
        };
        if !self.operations.contains(&operation) {
            if self.operations.len() >= MAX_OPERATIONS {
                anomalies.push(format!("operation '{operation}' counted under '{OTHER_OPERATIONS}': the run has {MAX_OPERATIONS} distinct labels already"));
                operation = OTHER_OPERATIONS.into();
            } else {
                self.operations.insert(operation.clone());
            }
        }
        let bytes: usize = req.messages.iter().map(|m| m.content.len()).sum();
        let digest = super::journaled::digest(&req);
        let model = req.model.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| ctx.spec.model.clone());
        let invalid = if req.messages.is_empty() {
            Some("a request needs at least one message".to_string())
        } else if req.messages.len() > limits.max_messages {
            Some(format!("{} messages is over the limit of {}", req.messages.len(), limits.max_messages))
        } else if bytes > limits.max_request_bytes {
            Some(format!("request of {bytes} bytes is over the limit of {} bytes", limits.max_request_bytes))
        } else if model.len() > MAX_MODEL_LABEL {
            Some(format!("model name of {} bytes is over the limit of {MAX_MODEL_LABEL} bytes", model.len()))
        } else if req.max_tokens == Some(0) {
            Some("max-tokens must be at least 1".to_string())
        } else if req.temperature.is_some_and(|t| !t.is_finite() || !(0.0..=2.0).contains(&t)) {
            Some(format!("temperature {} is outside 0..=2", req.temperature.unwrap_or_default()))
        } else {
            None
        };
        if let Some(msg) = invalid {
            self.refuse(&operation, "invalid_request", &msg);
            return Err(types::LlmError::InvalidRequest(msg));
        }
        let price = ctx.price_for(&model).map_err(|msg| {
            self.refuse(&operation, "no_price", &msg);
            types::LlmError::InvalidRequest(msg)
        })?;
        // One lock, read once: a second `ledger()` in the same expression would deadlock.
        let calls = self.account.ledger().calls() as u64;
        let chat = ChatRequest {
            messages: req.messages.into_iter().map(|m| Message { role: role(m.role), content: m.content }).collect(),
            model,
            max_tokens: req.max_tokens.unwrap_or(limits.default_max_tokens).min(limits.max_tokens_cap),
            temperature: req.temperature.or(ctx.spec.temperature),
            call_index: calls,
            seed: crate::llm::call_seed(&ctx.run_id, calls),
        };
        let input_bound = match ctx.provider.input_token_bound(&chat).await {
            Ok(b) => b,
            Err(e) => {
                let msg = e.to_string();
                self.refuse(&operation, "invalid_request", &msg);
                return Err(types::LlmError::InvalidRequest(msg));
            }
        };
        Ok(Prepared { operation, chat, price, input_bound, request_bytes: bytes, fuel_total, fuel_delta, digest, anomalies })
    }

    /// 2. Hooks before the call: allow, deny, or lower max tokens. `Some` refuses the call.
    async fn ask_hooks_before(&mut self, call: &mut Prepared) -> Option<types::LlmError> {
        if self.hooks.is_empty() {
            return None;
        }
        let (spent, limit, calls) = {
            let l = self.account.ledger();
            (l.spent(), l.limit(), l.calls())
        };
        let event = types::CallEvent {
            agent: self.ctx.spec.agent_name.clone(),
            operation: call.operation.clone(),
            model: call.chat.model.clone(),
            cycle: self.cycle,
            messages: call.chat.messages.len() as u32,
            request_bytes: call.request_bytes as u64,
            input_tokens_bound: clamp32(call.input_bound),
            max_tokens: call.chat.max_tokens,
            reserve_usd: nanos_to_usd(call.price.worst_case(call.input_bound, call.chat.max_tokens as u64)),
            spent_usd: nanos_to_usd(spent),
            limit_usd: nanos_to_usd(limit),
            fuel_used: call.fuel_total,
            calls,
        };
        match self.hooks.before_call(&event).await {
            Ok(Before::Allow) => None,
            Ok(Before::Limit(n, by)) => {
                call.chat.max_tokens = n;
                self.ctx.out.console.note(&format!("🪝 hook '{by}' lowered max tokens of {} to {n}", call.operation));
                None
            }
            Ok(Before::Deny { hook, reason }) => {
                let msg = format!("hook '{hook}': {reason}");
                self.refuse(&call.operation, "hook_denied", &msg);
                self.denied = Some((hook, reason));
                Some(types::LlmError::Denied(msg))
            }
            Err(f) => {
                self.refuse(&call.operation, "hook_failed", &f.message);
                self.raise(Interrupt::new(Source::HookFailed, Mode::Graceful, f.message.clone()));
                Some(types::LlmError::Denied(f.message))
            }
        }
    }

    /// 3. Reserve the worst case in the agent's ledger and the shared one, lowering max tokens to fit.
    async fn reserve(&mut self, call: &Prepared) -> Result<(Plan, Held), CallResult> {
        let min_output = self.ctx.spec.limits.min_output_tokens;
        match self.account.reserve(&call.price, call.input_bound, call.chat.max_tokens, min_output, &call.operation).await {
            Ok(x) => Ok(x),
            Err(Refusal::Budget(msg)) => {
                self.refuse(&call.operation, "budget_exhausted", &msg);
                let mode = self.ctx.spec.mode;
                self.raise(Interrupt::new(Source::Budget, mode, msg));
                if mode == Mode::Immediate {
                    return Err(Err(Cancelled("budget").into()));
                }
                Err(Ok(Err(types::LlmError::BudgetExhausted(self.status(call.fuel_total)))))
            }
            Err(Refusal::Unavailable(msg)) => {
                self.refuse(&call.operation, "ledger_unavailable", &msg);
                self.raise(Interrupt::new(Source::Error, Mode::Graceful, msg));
                Err(Ok(Err(types::LlmError::BudgetExhausted(self.status(call.fuel_total)))))
            }
        }
    }

    /// 4. The provider, with bounded retries; an immediate stop or the timeout
    /// cancels it, charging the reservation (the provider may bill the cut call).
    #[allow(clippy::type_complexity)]
    async fn send(&mut self, call: &Prepared, plan: &Plan, held: Held, seq: Option<u64>) -> wasmtime::Result<(Result<(ChatResponse, Held), (ProviderError, Held)>, u32)> {
        let ctx = self.ctx.clone();
        let deadline = self.bounds.deadline();
        let provider = ctx.provider.clone();
        let attempt = ctx.retry.run(|| provider.complete(&call.chat));
        let keep_alive = self.account.keep_alive(&held);
        let (result, attempts) = tokio::select! {
            r = attempt => r,
            never = keep_alive => match never {},
            _ = ctx.stop.wait_immediate() => {
                self.cancel(held, plan, call, "signal", seq).await;
                self.raise(Interrupt::new(Source::Signal, Mode::Immediate, "interrupted during an LLM call; its reservation was charged"));
                return Err(Cancelled("signal").into());
            }
            _ = sleep_until(deadline) => {
                self.cancel(held, plan, call, "timeout", seq).await;
                self.raise(Interrupt::new(Source::Timeout, Mode::Immediate, "timed out during an LLM call; its reservation was charged"));
                return Err(Cancelled("timeout").into());
            }
        };
        let result = match result {
            Ok(r) => Ok((r, held)),
            Err(e) => Err((e, held)),
        };
        Ok((result, attempts))
    }

    /// A call cut off by an immediate stop may have been billed: charge its
    /// reservation (never more) and say so in the log.
    async fn cancel(&mut self, held: Held, plan: &Plan, call: &Prepared, why: &str, seq: Option<u64>) {
        let s = self.charge(held, plan.reserve, &call.operation, call.input_bound, plan.max_tokens as u64).await;
        let _ = self.journal_result(seq, s, None, plan.max_tokens).await;
        let spent = self.account.ledger().spent();
        self.ctx.out.event(&Event::LlmCallCancelled(events::Cancelled {
            operation: Some(Cow::Borrowed(&call.operation)),
            cycle: self.cycle,
            reason: Cow::Borrowed(why),
            charged: nanos_to_usd(s),
            charged_nanos: s,
            cumulative_nanos: Some(spent),
        }));
    }

    /// Settle in both ledgers; a shared ledger that cannot record it stops the run.
    async fn charge(&mut self, held: Held, cost: u64, operation: &str, input_tokens: u64, output_tokens: u64) -> u64 {
        match self.account.settle(held, cost, operation, input_tokens, output_tokens).await {
            Ok(s) => s.charged,
            Err((s, msg)) => {
                self.raise(Interrupt::new(Source::Error, Mode::Graceful, msg));
                s.charged
            }
        }
    }

    /// 5. Settle the real cost; anomalies are charged conservatively and logged.
    async fn settle(&mut self, call: &Prepared, plan: &Plan, held: Held, resp: ChatResponse) -> Settled {
        let mut anomalies = call.anomalies.clone();
        let max_tokens = call.chat.max_tokens;
        let usage = match resp.usage {
            Some(u) => {
                if u.output_tokens > max_tokens as u64 {
                    anomalies.push(format!("provider reported {} output tokens, {max_tokens} were allowed", u.output_tokens));
                }
                if u.input_tokens > call.input_bound {
                    anomalies.push(format!("provider reported {} input tokens, above the bound of {}", u.input_tokens, call.input_bound));
                }
                u
            }
            None => {
                anomalies.push("provider reported no usage: charged the whole reservation".into());
                Usage { input_tokens: call.input_bound, output_tokens: max_tokens as u64, cached_tokens: 0 }
            }
        };
        let cost = if resp.usage.is_some() { call.price.cost(usage.input_tokens, usage.cached_tokens, usage.output_tokens) } else { plan.reserve };
        // Counts past u32 (the WIT usage type) are nonsense already flagged above:
        // record them clamped so no total downstream can overflow.
        let clamp = |t: u64| t.min(u32::MAX as u64);
        let usage = Usage { input_tokens: clamp(usage.input_tokens), output_tokens: clamp(usage.output_tokens), cached_tokens: clamp(usage.cached_tokens) };
        let (s, failed) = match self.account.settle(held, cost, &call.operation, usage.input_tokens, usage.output_tokens).await {
            Ok(s) => (s, None),
            Err((s, msg)) => (s, Some(msg)),
        };
        // The overrun is raised first: it is why the run stops, whatever else failed.
        if s.over_reservation > 0 {
            let msg = format!(
                "{} was billed {} nano-USD, {} past its reservation of {}; charged as billed, the run stops",
                call.operation, s.charged, s.over_reservation, plan.reserve
            );
            anomalies.push(msg.clone());
            self.raise(Interrupt::new(Source::Overrun, Mode::Immediate, msg));
        }
        if let Some(msg) = failed {
            self.raise(Interrupt::new(Source::Error, Mode::Graceful, msg));
        }
        self.crossed = s.crossed;
        Settled { resp, usage, charged: s.charged, over_reservation: s.over_reservation, anomalies }
    }

    /// 6. The call's audit line, the live display, then warnings for thresholds crossed.
    async fn record(&mut self, call: &Prepared, plan: &Plan, s: &Settled, attempts: u32, latency_ms: u64) {
        let ctx = self.ctx.clone();
        let (spent, limit, calls) = {
            let l = self.account.ledger();
            (l.spent(), l.limit(), l.calls())
        };
        ctx.out.event(&Event::LlmCall(events::Call {
            operation: Some(Cow::Borrowed(&call.operation)),
            cycle: self.cycle,
            provider: Some(Cow::Borrowed(ctx.provider.name())),
            model: Some(Cow::Borrowed(&s.resp.model)),
            input_tokens: s.usage.input_tokens,
            output_tokens: s.usage.output_tokens,
            cached_tokens: s.usage.cached_tokens,
            max_tokens: Some(call.chat.max_tokens),
            max_tokens_lowered: plan.lowered,
            input_tokens_bound: Some(call.input_bound),
            reserved: nanos_to_usd(plan.reserve),
            reserved_nanos: Some(plan.reserve),
            cost: nanos_to_usd(s.charged),
            cost_nanos: s.charged,
            cumulative: nanos_to_usd(spent),
            cumulative_nanos: Some(spent),
            budget_limit_nanos: Some(limit),
            fuel: Some(call.fuel_total),
            fuel_delta: Some(call.fuel_delta),
            latency_ms: Some(latency_ms),
            attempts: Some(attempts),
            finish_reason: Some(Cow::Borrowed(&s.resp.finish_reason)),
            anomalies: s.anomalies.iter().map(|a| Cow::Borrowed(a.as_str())).collect(),
            over_reservation_nanos: s.over_reservation,
            replayed: false,
        }));
        ctx.out.console.progress.call(crate::progress::CallFigures {
            spent,
            limit,
            calls,
            cost: s.charged,
            input_tokens: s.usage.input_tokens,
            output_tokens: s.usage.output_tokens,
            fuel: call.fuel_total,
        });
        for a in &s.anomalies {
            ctx.out.console.note(&format!("⚠️  {}: {a}", call.operation));
        }
        let crossed = std::mem::take(&mut self.crossed);
        for (i, &t) in crossed.iter().enumerate() {
            ctx.warn_threshold(t, spent, limit, self.cycle, i + 1 < crossed.len());
            if !self.hooks.is_empty() {
                let e = types::ThresholdEvent {
                    agent: ctx.spec.agent_name.clone(),
                    threshold: t,
                    spent_usd: nanos_to_usd(spent),
                    limit_usd: nanos_to_usd(limit),
                    cycle: self.cycle,
                };
                if let Err(f) = self.hooks.on_threshold(&e).await {
                    self.raise(Interrupt::new(Source::HookFailed, Mode::Graceful, f.message));
                }
            }
        }
    }

    /// 7. Hooks after the call: continue, or interrupt (an immediate one cancels the guest).
    async fn ask_hooks_after(&mut self, call: &Prepared, plan: &Plan, s: &Settled, latency_ms: u64) -> wasmtime::Result<()> {
        if self.hooks.is_empty() {
            return Ok(());
        }
        let (spent, limit, calls) = {
            let l = self.account.ledger();
            (l.spent(), l.limit(), l.calls())
        };
        let e = types::CostEvent {
            agent: self.ctx.spec.agent_name.clone(),
            operation: call.operation.clone(),
            model: s.resp.model.clone(),
            cycle: self.cycle,
            usage: wit_usage(&s.usage),
            reserved_usd: nanos_to_usd(plan.reserve),
            cost_usd: nanos_to_usd(s.charged),
            spent_usd: nanos_to_usd(spent),
            limit_usd: nanos_to_usd(limit),
            fuel_used: call.fuel_total,
            calls,
            latency_ms,
        };
        match self.hooks.after_call(&e).await {
            Ok(None) => {}
            Ok(Some((mode, reason))) => {
                let mode = match mode {
                    types::InterruptMode::Graceful => Mode::Graceful,
                    types::InterruptMode::Immediate => Mode::Immediate,
                };
                self.raise(Interrupt::new(Source::Hook, mode, reason));
                if mode == Mode::Immediate {
                    return Err(Cancelled("hook").into());
                }
            }
            Err(f) => self.raise(Interrupt::new(Source::HookFailed, Mode::Graceful, f.message)),
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn provider_failed(&mut self, e: ProviderError, held: Held, plan: &Plan, call: &Prepared, attempts: u32, latency_ms: u64, seq: Option<u64>) -> types::LlmError {
        // Billed-or-not is unknowable after a timeout or a broken body: charge the
        // reservation (never more). A clean error status is not billed: release it.
        let charged = if e.maybe_billed() {
            self.charge(held, plan.reserve, &call.operation, call.input_bound, plan.max_tokens as u64).await
        } else {
            if let Err(msg) = self.account.release(held).await {
                // An unreleased hold only over-reserves until its lease expires: safe.
                self.raise(Interrupt::new(Source::Error, Mode::Graceful, msg));
            }
            0
        };
        let _ = self.journal_result(seq, charged, None, plan.max_tokens).await;
        // The request itself was wrong: the guest's mistake, not the provider's failure.
        if let ProviderError::InvalidRequest(m) = &e {
            self.refuse(&call.operation, "invalid_request", m);
            return types::LlmError::InvalidRequest(m.clone());
        }
        let msg = format!("{e} (after {attempts} attempt{})", if attempts == 1 { "" } else { "s" });
        self.ctx.out.event(&Event::LlmCallFailed(events::Failed {
            operation: Some(Cow::Borrowed(&call.operation)),
            cycle: self.cycle,
            model: Some(Cow::Borrowed(&call.chat.model)),
            error: Cow::Borrowed(&msg),
            attempts,
            charged: nanos_to_usd(charged),
            charged_nanos: charged,
            reserved_nanos: Some(plan.reserve),
            latency_ms: Some(latency_ms),
        }));
        self.raise(Interrupt::new(Source::Error, Mode::Graceful, format!("provider failed: {msg}")));
        types::LlmError::Provider(msg)
    }
}
