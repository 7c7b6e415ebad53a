//! The agent's store state and the imports it answers: `budget`, `log` and
//! (in `call`) `llm.complete`. Its linker lives here too.

use super::context::RunCtx;
use crate::account::Account;
use crate::bindings::agent::budget_host::plugin::{budget, log, types};
use crate::bindings::types as t;
use crate::budget::nanos_to_usd;
use crate::guest_io::GuestOutput;
use crate::hooks::Hooks;
use crate::interrupt::Interrupt;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{StoreContextMut, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The host state of an agent's store.
pub struct AgentState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) ctx: Arc<RunCtx>,
    pub(crate) account: Account,
    /// The cycle being run (for operation labels and events).
    pub(crate) cycle: u32,
    /// Calls made in the current step (replay matches on it).
    pub(crate) call_in_step: u32,
    /// Fuel the store started with; fuel used = this minus what is left.
    pub(crate) fuel_budget: u64,
    /// Fuel already used before this process (a resumed run).
    pub(crate) fuel_before: u64,
    /// Fuel used at the previous call, to report each call's share.
    pub(crate) fuel_at_last_call: u64,
    /// Raised during a step; the loop stops before the next cycle.
    pub(crate) pending: Option<Interrupt>,
    /// A hook denied a call in this step: if the step then fails, the hook stopped the run.
    pub(crate) denied: Option<(String, String)>,
    /// The run's hooks.
    pub(crate) hooks: Hooks,
    /// Distinct operation labels seen; past the cap, labels fold into one bucket.
    pub(crate) operations: std::collections::HashSet<String>,
    pub(crate) stdout: GuestOutput,
    /// The guest's `wasi:random`, reseeded from the run id and the cycle at each step.
    pub(crate) random: crate::guest_io::GuestRandom,
    /// What cuts an entry off from outside (stop signal, deadlines).
    pub(crate) bounds: super::guard::Bounds,
    /// Warning thresholds the last settle crossed, for `record`.
    pub(crate) crossed: Vec<f64>,
    /// The write-ahead call journal.
    pub(crate) journal: Option<crate::journal::Journal>,
    /// The number of the run's next call (across resumes).
    pub(crate) seq: u64,
    /// Answers journaled before a crash, replayed at $0 while the guest asks the same.
    pub(crate) replay: std::collections::VecDeque<crate::journal::reconcile::Settled>,
    /// Recording the run's calls for a tape, or replaying one.
    pub(crate) tape: Option<super::taped::Taping>,
}

impl WasiView for AgentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl AgentState {
    /// The agent's budget as the guest sees it.
    pub fn status(&self, fuel_used: u64) -> types::BudgetStatus {
        let l = self.account.ledger();
        types::BudgetStatus {
            limit_usd: nanos_to_usd(l.limit()),
            spent_usd: nanos_to_usd(l.spent()),
            reserved_usd: nanos_to_usd(l.reserved()),
            remaining_usd: nanos_to_usd(l.remaining()),
            fuel_used,
            fuel_limit: self.ctx.spec.limits.fuel,
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

impl types::Host for AgentState {}

impl budget::Host for AgentState {
    async fn status(&mut self) -> wasmtime::Result<types::BudgetStatus> {
        // Fuel is read by the loop between calls; here we report the last known figure.
        Ok(AgentState::status(self, self.fuel_before.saturating_add(self.fuel_at_last_call)))
    }
}

impl log::Host for AgentState {
    async fn log(&mut self, level: t::Level, message: String) -> wasmtime::Result<()> {
        crate::output::plugin_log(&self.ctx.out, &self.ctx.spec.agent_name, level, &message);
        Ok(())
    }

    async fn emit(&mut self, event: String, data: String) -> wasmtime::Result<()> {
        crate::output::plugin_event(&self.ctx.out, &self.ctx.spec.agent_name, &event, &data);
        Ok(())
    }
}

/// One `Linker` for agents: WASI (nothing granted but capped output, clocks
/// and random), `budget`, `log`, and `llm` by hand because it needs the store's fuel.
pub fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<AgentState>> {
    let mut linker: Linker<AgentState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    budget::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    let mut llm = linker.instance(&format!("{}/llm@{}", crate::bindings::WIT_PACKAGE, crate::bindings::WIT_VERSION))?;
    llm.func_wrap_async("complete", |mut store: StoreContextMut<'_, AgentState>, (req,): (t::CompletionRequest,)| {
        Box::new(async move {
            let left = store.get_fuel().unwrap_or(0);
            let used = store.data().fuel_budget.saturating_sub(left);
            let r = store.data_mut().complete(req, used).await?;
            Ok((r,))
        })
    })?;
    Ok(linker)
}
