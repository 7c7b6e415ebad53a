//! One LLM call, step by step (DESIGN.md "One LLM call"): check sizes, plan
//! and reserve the worst case, call the provider, settle, log, warn, return.

use super::state::HostState;
use crate::bindings::types;
use crate::budget::{nanos_to_usd, pricing::Price, Nanos};
use crate::hooks::Before;
use crate::interrupt::{Interrupt, Mode, Source};
use crate::llm::{ChatRequest, ChatResponse, Message, ProviderError, Role, Usage};
use serde_json::json;
use std::time::Instant;

/// Outcome of the host side of `llm.complete`: a guest-visible result, or a
/// trap (immediate interrupt) that cancels the guest.
pub type CallResult = wasmtime::Result<Result<types::Completion, types::LlmError>>;

/// Marker error: the guest was cancelled on purpose (the loop reads `pending`).
#[derive(Debug, thiserror::Error)]
#[error("run interrupted ({0})")]
pub struct Cancelled(pub &'static str);

fn role(r: types::Role) -> Role {
    match r {
        types::Role::System => Role::System,
        types::Role::User => Role::User,
        types::Role::Assistant => Role::Assistant,
    }
}

/// The `llm_call` audit line. It is on every call's path, so it is written
/// straight from this struct rather than through a JSON map (which cost more
/// than the rest of the call; BENCHMARKS.md). Same keys and values as the
/// other events' `json!` objects.
#[derive(serde::Serialize)]
struct LlmCallLine<'a> {
    operation: &'a str,
    cycle: u32,
    provider: &'a str,
    model: &'a str,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    max_tokens: u32,
    max_tokens_lowered: bool,
    input_tokens_bound: u64,
    reserved: f64,
    reserved_nanos: Nanos,
    cost: f64,
    cost_nanos: Nanos,
    cumulative: f64,
    cumulative_nanos: Nanos,
    budget_limit_nanos: Nanos,
    fuel: u64,
    fuel_delta: u64,
    latency_ms: u64,
    attempts: u32,
    finish_reason: &'a str,
    anomalies: &'a [String],
}

/// The plan for a call that fits: its max tokens and the worst case to reserve.
#[derive(Debug, PartialEq)]
pub struct Plan {
    pub max_tokens: u32,
    pub reserve: Nanos,
    pub lowered: bool,
}

/// Fit a call into what is available: lower max tokens if needed, refuse if
/// not even `min_output` tokens fit. Pure, so it is unit-tested on its own.
pub fn plan(price: &Price, input_bound: u64, max_tokens: u32, min_output: u32, available: Nanos) -> Option<Plan> {
    let worst = price.worst_case(input_bound, max_tokens as u64);
    if worst <= available {
        return Some(Plan { max_tokens, reserve: worst, lowered: false });
    }
    let fit = price.output_tokens_within(input_bound, available).min(max_tokens as u64) as u32;
    if fit < min_output.min(max_tokens).max(1) {
        return None;
    }
    Some(Plan { max_tokens: fit, reserve: price.worst_case(input_bound, fit as u64), lowered: true })
}

/// Money held for one call: in the agent's ledger and, when there is one, the pool.
pub struct Held {
    local: crate::budget::Reservation,
    pool: Option<crate::pool::Hold>,
}

/// Why a call could not be reserved.
enum Refusal {
    Budget(String),
    Pool(String),
}

impl HostState {
    /// Plan against what both the agent's ledger and the pool have left, then
    /// hold the money in both. A pool that lost a race says how much it has:
    /// plan once more against that.
    async fn reserve_call(&mut self, price: &Price, input_bound: u64, max_tokens: u32, operation: &str) -> Result<(Plan, Held), Refusal> {
        let min_output = self.shared.config.min_output_tokens;
        let mut pool_available = match &self.pool {
            Some(p) => Some(p.status().await.map_err(|e| Refusal::Pool(e.to_string()))?.available()),
            None => None,
        };
        for _ in 0..3 {
            let (local_available, spent, limit) = {
                let l = self.ledger();
                (l.available(), l.spent(), l.limit())
            };
            let available = pool_available.map_or(local_available, |p| p.min(local_available));
            let Some(p) = plan(price, input_bound, max_tokens, min_output, available) else {
                let need = price.worst_case(input_bound, min_output.min(max_tokens) as u64);
                let whose = if pool_available.is_some_and(|p| p < local_available) { "shared budget" } else { "budget" };
                return Err(Refusal::Budget(format!(
                    "{whose} limit reached: {} of {} spent by this agent; the next call needs up to {} (at least {} output tokens), {} left",
                    crate::budget::fmt_usd(spent),
                    crate::budget::fmt_usd(limit),
                    crate::budget::fmt_usd(need),
                    min_output.min(max_tokens),
                    crate::budget::fmt_usd(available)
                )));
            };
            let local = self.ledger().reserve(p.reserve).map_err(|e| Refusal::Budget(e.to_string()))?;
            let Some(pool) = self.pool.clone() else {
                return Ok((p, Held { local, pool: None }));
            };
            match pool.reserve(p.reserve).await {
                Ok(h) => return Ok((p, Held { local, pool: Some(h) })),
                Err(crate::pool::PoolError::Exhausted { available }) => {
                    self.ledger().release(local);
                    pool_available = Some(available);
                }
                Err(e) => {
                    self.ledger().release(local);
                    return Err(Refusal::Pool(format!("{e} (call {operation} refused, nothing spent)")));
                }
            }
        }
        Err(Refusal::Budget("the shared budget kept shrinking under other hosts' calls".into()))
    }

    /// Charge a call in the agent's ledger and the pool (never more than held).
    async fn settle_held(&mut self, held: Held, cost: Nanos, operation: &str, input_tokens: u64, output_tokens: u64) -> crate::budget::Settlement {
        let s = self.ledger().settle(held.local, cost, operation, input_tokens, output_tokens);
        if let (Some(pool), Some(h)) = (self.pool.clone(), held.pool) {
            if let Err(e) = pool.settle(h, s.charged).await {
                self.raise(Interrupt::new(
                    Source::Error,
                    Mode::Graceful,
                    format!("{e}: the cost of {operation} is recorded here but may be missing from the shared ledger"),
                ));
            }
        }
        s
    }

    /// A call cut off by an immediate stop may have been billed: charge its
    /// reservation (never more) and say so in the log.
    async fn cancel_call(&mut self, held: Held, reserve: Nanos, operation: &str, input_bound: u64, max_tokens: u32, why: &str) {
        let s = self.settle_held(held, reserve, operation, input_bound, max_tokens as u64).await;
        let (cycle, spent) = (self.cycle, self.ledger().spent());
        self.shared.audit(|a| {
            a.event(
                "llm_call_cancelled",
                json!({"operation": operation, "cycle": cycle, "reason": why, "charged": nanos_to_usd(s.charged),
                       "charged_nanos": s.charged, "cumulative_nanos": spent}),
            )
        });
    }

    async fn release_held(&mut self, held: Held) {
        self.ledger().release(held.local);
        if let (Some(pool), Some(h)) = (self.pool.clone(), held.pool) {
            if let Err(e) = pool.release(h).await {
                // An unreleased hold only over-reserves until its lease expires: safe.
                self.raise(Interrupt::new(Source::Error, Mode::Graceful, e.to_string()));
            }
        }
    }

    fn exhausted(&mut self, fuel_used: u64, message: String) -> CallResult {
        let mode = self.shared.config.mode;
        self.raise(Interrupt::new(Source::Budget, mode, message));
        if mode == Mode::Immediate {
            return Err(Cancelled("budget").into());
        }
        Ok(Err(types::LlmError::BudgetExhausted(self.status(fuel_used))))
    }

    fn refuse(&mut self, operation: &str, reason: &str, detail: &str) {
        let cycle = self.cycle;
        self.shared.audit(|a| a.event("llm_call_refused", json!({"operation": operation, "cycle": cycle, "reason": reason, "detail": detail})));
    }

    /// `llm.complete`: the call's log lines (hook decisions, the call, its
    /// warnings) are held and written together when it returns, whatever the path.
    pub async fn complete(&mut self, req: types::CompletionRequest, fuel_used: u64) -> CallResult {
        self.shared.audit(|a| {
            a.hold();
            Ok(())
        });
        let r = self.complete_held(req, fuel_used).await;
        self.shared.audit(|a| a.release());
        r
    }

    async fn complete_held(&mut self, req: types::CompletionRequest, fuel_used: u64) -> CallResult {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let fuel_delta = fuel_used.saturating_sub(self.fuel_at_last_call);
        self.fuel_at_last_call = fuel_used;
        let fuel_total = self.fuel_before.saturating_add(fuel_used);
        let operation = req.operation.clone().filter(|o| !o.is_empty()).unwrap_or_else(|| format!("llm_call_cycle_{}", self.cycle));

        // A pending stop refuses further spending inside the same step.
        if let Some(p) = &self.pending {
            let msg = format!("run is stopping ({}): {}", p.source.as_str(), p.message);
            self.refuse(&operation, "stopping", &msg);
            return Ok(Err(types::LlmError::BudgetExhausted(self.status(fuel_total))));
        }

        // 1. Bounded input, checked before anything is reserved.
        let bytes: usize = req.messages.iter().map(|m| m.content.len()).sum();
        let invalid = if req.messages.is_empty() {
            Some("a request needs at least one message".to_string())
        } else if req.messages.len() > cfg.max_messages {
            Some(format!("{} messages is over the limit of {}", req.messages.len(), cfg.max_messages))
        } else if bytes > cfg.max_request_bytes {
            Some(format!("request of {bytes} bytes is over the limit of {} bytes", cfg.max_request_bytes))
        } else if req.max_tokens == Some(0) {
            Some("max-tokens must be at least 1".to_string())
        } else if req.temperature.is_some_and(|t| !t.is_finite() || !(0.0..=2.0).contains(&t)) {
            Some(format!("temperature {} is outside 0..=2", req.temperature.unwrap_or_default()))
        } else {
            None
        };
        if let Some(msg) = invalid {
            self.refuse(&operation, "invalid_request", &msg);
            return Ok(Err(types::LlmError::InvalidRequest(msg)));
        }

        let model = req.model.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| cfg.model.clone());
        let price = match shared.price_for(&model) {
            Ok(p) => p,
            Err(msg) => {
                self.refuse(&operation, "no_price", &msg);
                return Ok(Err(types::LlmError::InvalidRequest(msg)));
            }
        };
        let max_tokens = req.max_tokens.unwrap_or(cfg.default_max_tokens).min(cfg.max_tokens_cap);
        let mut chat = ChatRequest {
            messages: req.messages.iter().map(|m| Message { role: role(m.role), content: m.content.clone() }).collect(),
            model: model.clone(),
            max_tokens,
            temperature: req.temperature.or(cfg.temperature),
            call_index: self.ledger().calls() as u64,
        };
        let input_bound = match shared.provider.input_token_bound(&chat) {
            Ok(b) => b,
            Err(e) => {
                let msg = e.to_string();
                self.refuse(&operation, "invalid_request", &msg);
                return Ok(Err(types::LlmError::InvalidRequest(msg)));
            }
        };

        // 2. Hooks before the call: allow, deny, or lower max tokens.
        if !self.hooks.is_empty() {
            let (spent, limit, calls) = {
                let l = self.ledger();
                (l.spent(), l.limit(), l.calls())
            };
            let event = types::CallEvent {
                agent: self.who.clone(),
                operation: operation.clone(),
                model: model.clone(),
                cycle: self.cycle,
                messages: chat.messages.len() as u32,
                request_bytes: bytes as u64,
                input_tokens_bound: input_bound.min(u32::MAX as u64) as u32,
                max_tokens: chat.max_tokens,
                reserve_usd: nanos_to_usd(price.worst_case(input_bound, chat.max_tokens as u64)),
                spent_usd: nanos_to_usd(spent),
                limit_usd: nanos_to_usd(limit),
                fuel_used: fuel_total,
                calls,
            };
            match self.hooks.before_call(&event, &shared).await {
                Ok(Before::Allow) => {}
                Ok(Before::Limit(n, by)) => {
                    chat.max_tokens = n;
                    shared.console.note(&format!("🪝 hook '{by}' lowered max tokens of {operation} to {n}"));
                }
                Ok(Before::Deny(reason)) => {
                    self.refuse(&operation, "hook_denied", &reason);
                    return Ok(Err(types::LlmError::Denied(reason)));
                }
                Err(f) => {
                    self.refuse(&operation, "hook_failed", &f.message);
                    self.raise(Interrupt::new(Source::Hook, Mode::Graceful, f.message.clone()));
                    return Ok(Err(types::LlmError::Denied(f.message)));
                }
            }
        }

        // 3. Reserve the worst case in the agent's ledger and the pool, lowering max tokens to fit.
        let (plan, held) = match self.reserve_call(&price, input_bound, chat.max_tokens, &operation).await {
            Ok(x) => x,
            Err(Refusal::Budget(msg)) => {
                self.refuse(&operation, "budget_exhausted", &msg);
                return self.exhausted(fuel_total, msg);
            }
            Err(Refusal::Pool(msg)) => {
                self.refuse(&operation, "ledger_unavailable", &msg);
                self.raise(Interrupt::new(Source::Error, Mode::Graceful, msg));
                return Ok(Err(types::LlmError::BudgetExhausted(self.status(fuel_total))));
            }
        };
        chat.max_tokens = plan.max_tokens;

        // 4. The provider, with bounded retries; an immediate stop or the timeout cancels it.
        let started = Instant::now();
        let provider = shared.provider.clone();
        let call = shared.retry.run(|| provider.complete(&chat));
        let (result, attempts) = tokio::select! {
            r = call => r,
            _ = shared.stop.wait_immediate() => {
                self.cancel_call(held, plan.reserve, &operation, input_bound, chat.max_tokens, "signal").await;
                self.raise(Interrupt::new(Source::Signal, Mode::Immediate, "interrupted during an LLM call; its reservation was charged"));
                return Err(Cancelled("signal").into());
            }
            _ = super::sleep_until(shared.deadline) => {
                self.cancel_call(held, plan.reserve, &operation, input_bound, chat.max_tokens, "timeout").await;
                self.raise(Interrupt::new(Source::Timeout, Mode::Immediate, "timed out during an LLM call; its reservation was charged"));
                return Err(Cancelled("timeout").into());
            }
        };
        let latency_ms = started.elapsed().as_millis() as u64;

        let resp: ChatResponse = match result {
            Ok(r) => r,
            Err(e) => return Ok(Err(self.provider_failed(e, held, &plan, &operation, &model, input_bound, attempts, latency_ms).await)),
        };

        // 5. Settle the real cost; anomalies are charged conservatively and logged.
        let mut anomalies = Vec::new();
        let usage = match resp.usage {
            Some(u) => {
                if u.output_tokens > chat.max_tokens as u64 {
                    anomalies.push(format!("provider reported {} output tokens, {} were allowed", u.output_tokens, chat.max_tokens));
                }
                if u.input_tokens > input_bound {
                    anomalies.push(format!("provider reported {} input tokens, above the bound of {input_bound}", u.input_tokens));
                }
                u
            }
            None => {
                anomalies.push("provider reported no usage: charged the whole reservation".into());
                Usage { input_tokens: input_bound, output_tokens: chat.max_tokens as u64, cached_tokens: 0 }
            }
        };
        let cost = if resp.usage.is_some() { price.cost(usage.input_tokens, usage.cached_tokens, usage.output_tokens) } else { plan.reserve };
        // Counts past u32 (the WIT usage type) are nonsense already flagged above:
        // record them clamped so no total downstream can overflow.
        let clamp = |t: u64| t.min(u32::MAX as u64);
        let usage = Usage { input_tokens: clamp(usage.input_tokens), output_tokens: clamp(usage.output_tokens), cached_tokens: clamp(usage.cached_tokens) };
        let settled = self.settle_held(held, cost, &operation, usage.input_tokens, usage.output_tokens).await;
        let (spent, limit) = {
            let l = self.ledger();
            (l.spent(), l.limit())
        };
        if settled.over_reservation {
            anomalies.push(format!("cost {cost} nano-USD exceeded the reservation; charged the reservation"));
        }

        // 6. Audit line, then warnings for thresholds crossed.
        let cycle = self.cycle;
        shared.audit(|a| {
            a.event_of(
                "llm_call",
                &LlmCallLine {
                    operation: &operation,
                    cycle,
                    provider: provider.name(),
                    model: &resp.model,
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    cached_tokens: usage.cached_tokens,
                    max_tokens: chat.max_tokens,
                    max_tokens_lowered: plan.lowered,
                    input_tokens_bound: input_bound,
                    reserved: nanos_to_usd(plan.reserve),
                    reserved_nanos: plan.reserve,
                    cost: nanos_to_usd(settled.charged),
                    cost_nanos: settled.charged,
                    cumulative: nanos_to_usd(spent),
                    cumulative_nanos: spent,
                    budget_limit_nanos: limit,
                    fuel: fuel_total,
                    fuel_delta,
                    latency_ms,
                    attempts,
                    finish_reason: &resp.finish_reason,
                    anomalies: &anomalies,
                },
            )
        });
        let calls = self.ledger().calls();
        let (input_tokens, output_tokens) = (usage.input_tokens, usage.output_tokens);
        shared.console.progress.call(crate::progress::CallFigures { spent, limit, calls, cost: settled.charged, input_tokens, output_tokens, fuel: fuel_total });
        for a in &anomalies {
            shared.console.note(&format!("⚠️  {operation}: {a}"));
        }
        for t in &settled.crossed {
            shared.warn_threshold(*t, spent, limit, cycle);
            if !self.hooks.is_empty() {
                let e = types::ThresholdEvent { agent: self.who.clone(), threshold: *t, spent_usd: nanos_to_usd(spent), limit_usd: nanos_to_usd(limit), cycle };
                if let Err(f) = self.hooks.on_threshold(&e, &shared).await {
                    self.raise(Interrupt::new(Source::Hook, Mode::Graceful, f.message));
                }
            }
        }

        // 7. Hooks after the call: continue, or interrupt.
        if !self.hooks.is_empty() {
            let calls = self.ledger().calls();
            let e = types::CostEvent {
                agent: self.who.clone(),
                operation: operation.clone(),
                model: resp.model.clone(),
                cycle,
                usage: types::Usage {
                    input_tokens: usage.input_tokens.min(u32::MAX as u64) as u32,
                    output_tokens: usage.output_tokens.min(u32::MAX as u64) as u32,
                    cached_tokens: usage.cached_tokens.min(u32::MAX as u64) as u32,
                },
                reserved_usd: nanos_to_usd(plan.reserve),
                cost_usd: nanos_to_usd(settled.charged),
                spent_usd: nanos_to_usd(spent),
                limit_usd: nanos_to_usd(limit),
                fuel_used: fuel_total,
                calls,
                latency_ms,
            };
            match self.hooks.after_call(&e, &shared).await {
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
                Err(f) => self.raise(Interrupt::new(Source::Hook, Mode::Graceful, f.message)),
            }
        }

        // 8. Back to the guest.
        Ok(Ok(types::Completion {
            text: resp.text,
            model: resp.model,
            usage: types::Usage {
                input_tokens: usage.input_tokens.min(u32::MAX as u64) as u32,
                output_tokens: usage.output_tokens.min(u32::MAX as u64) as u32,
                cached_tokens: usage.cached_tokens.min(u32::MAX as u64) as u32,
            },
            cost_usd: nanos_to_usd(settled.charged),
            max_tokens: chat.max_tokens,
            finish_reason: resp.finish_reason,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    async fn provider_failed(
        &mut self,
        e: ProviderError,
        held: Held,
        plan: &Plan,
        operation: &str,
        model: &str,
        input_bound: u64,
        attempts: u32,
        latency_ms: u64,
    ) -> types::LlmError {
        // Billed-or-not is unknowable after a timeout or a broken body: charge the
        // reservation (never more). A clean error status is not billed: release it.
        let charged = if e.maybe_billed() {
            self.settle_held(held, plan.reserve, operation, input_bound, plan.max_tokens as u64).await.charged
        } else {
            self.release_held(held).await;
            0
        };
        // The request itself was wrong: the guest's mistake, not the provider's failure.
        if let ProviderError::InvalidRequest(m) = &e {
            let cycle = self.cycle;
            let m = m.clone();
            self.shared.audit(|a| a.event("llm_call_refused", json!({"operation": operation, "cycle": cycle, "reason": "invalid_request", "detail": m})));
            return types::LlmError::InvalidRequest(m);
        }
        let msg = format!("{e} (after {attempts} attempt{})", if attempts == 1 { "" } else { "s" });
        let cycle = self.cycle;
        self.shared.audit(|a| {
            a.event(
                "llm_call_failed",
                json!({"operation": operation, "cycle": cycle, "model": model, "error": msg, "attempts": attempts,
                       "charged": nanos_to_usd(charged), "charged_nanos": charged, "reserved_nanos": plan.reserve, "latency_ms": latency_ms}),
            )
        });
        self.raise(Interrupt::new(Source::Error, Mode::Graceful, format!("provider failed: {msg}")));
        types::LlmError::Provider(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICE: Price = Price { input: 2_500_000_000, output: 10_000_000_000, cache_read: 1_250_000_000 };

    #[test]
    fn plan_fits_lowers_or_refuses() {
        // 100 input tokens at $2.50/M = 250_000 nanos; 1000 output at $10/M = 10_000_000 nanos.
        assert_eq!(plan(&PRICE, 100, 1000, 16, 20_000_000), Some(Plan { max_tokens: 1000, reserve: 10_250_000, lowered: false }));
        let p = plan(&PRICE, 100, 1000, 16, 5_250_000).unwrap();
        assert_eq!((p.max_tokens, p.reserve, p.lowered), (500, 5_250_000, true));
        // 16 output tokens need 160_000 nanos on top of the input's 250_000.
        assert_eq!(plan(&PRICE, 100, 1000, 16, 409_999), None);
        assert_eq!(plan(&PRICE, 100, 1000, 16, 410_000).map(|p| p.max_tokens), Some(16));
        // Free models always fit.
        assert!(plan(&Price::FREE, 10_000, 1000, 16, 0).is_some());
    }
}
