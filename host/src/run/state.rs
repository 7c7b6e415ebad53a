//! Per-store host state and the generated import traits it implements
//! (`budget`, `log`; `llm.complete` lives in `call`).

use super::RunShared;
use crate::bindings::agent::budget_host::plugin::{budget, log, types};
use crate::budget::{nanos_to_usd, Ledger};
use crate::interrupt::Interrupt;
use serde_json::json;
use std::sync::{Arc, Mutex};
use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Longest guest log message kept; the rest is cut (guests are strangers).
const MAX_LOG_MESSAGE: usize = 4096;

pub struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    pub shared: Arc<RunShared>,
    pub ledger: Arc<Mutex<Ledger>>,
    /// The cycle being run (for operation labels and events).
    pub cycle: u32,
    /// Fuel the store started with; fuel used = this minus what is left.
    pub fuel_budget: u64,
    /// Fuel already used before this process (a resumed run).
    pub fuel_before: u64,
    /// Fuel used at the previous call, to report each call's share.
    pub fuel_at_last_call: u64,
    /// Raised during a step; the loop stops before the next cycle.
    pub pending: Option<Interrupt>,
    /// The name the plugin is known by in logs (`agent`, or a hook's file stem).
    pub who: String,
    /// The run's hooks (empty in a hook's own state).
    pub hooks: crate::hooks::Hooks,
    /// Money shared beyond this agent (a team's total, a Redis ledger).
    pub pool: Option<Arc<dyn crate::pool::Pool>>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HostState {
    pub fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A poisoned ledger means a panic mid-update elsewhere: the state is still
        // consistent (every update is a few integer ops), so keep going.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self, fuel_used: u64) -> types::BudgetStatus {
        let l = self.ledger();
        types::BudgetStatus {
            limit_usd: nanos_to_usd(l.limit()),
            spent_usd: nanos_to_usd(l.spent()),
            reserved_usd: nanos_to_usd(l.reserved()),
            remaining_usd: nanos_to_usd(l.remaining()),
            fuel_used,
            fuel_limit: self.shared.config.fuel,
            calls: l.calls(),
            cycle: self.cycle,
        }
    }

    /// Raise an interrupt unless one is already pending (the first reason wins,
    /// but an immediate request upgrades a graceful one).
    pub fn raise(&mut self, i: Interrupt) {
        match &self.pending {
            None => self.pending = Some(i),
            Some(p) if p.mode == crate::interrupt::Mode::Graceful && i.mode == crate::interrupt::Mode::Immediate => {
                self.pending = Some(Interrupt { mode: i.mode, ..p.clone() })
            }
            Some(_) => {}
        }
    }
}

impl types::Host for HostState {}

impl budget::Host for HostState {
    async fn status(&mut self) -> wasmtime::Result<types::BudgetStatus> {
        // Fuel is read by the loop between calls; here we report the last known figure.
        Ok(HostState::status(self, self.fuel_before.saturating_add(self.fuel_at_last_call)))
    }
}

fn level_str(l: types::Level) -> &'static str {
    match l {
        types::Level::Debug => "debug",
        types::Level::Info => "info",
        types::Level::Warn => "warn",
        types::Level::Error => "error",
    }
}

fn clip(s: &str) -> &str {
    if s.len() <= MAX_LOG_MESSAGE {
        return s;
    }
    let mut end = MAX_LOG_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl log::Host for HostState {
    async fn log(&mut self, level: types::Level, message: String) -> wasmtime::Result<()> {
        let message = clip(&message);
        if !matches!(level, types::Level::Debug) {
            self.shared.console.note(&format!("[{}] {}: {message}", self.who, level_str(level)));
        }
        self.shared.audit(|a| a.event("plugin_log", json!({"plugin": self.who, "level": level_str(level), "message": message})));
        Ok(())
    }

    async fn emit(&mut self, event: String, data: String) -> wasmtime::Result<()> {
        let data = match serde_json::from_str::<serde_json::Value>(clip(&data)) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => json!({"invalid_data": clip(&data)}),
        };
        let event = clip(&event).to_string();
        self.shared.audit(|a| a.event("plugin_event", json!({"plugin": self.who, "name": event, "data": data})));
        Ok(())
    }
}
