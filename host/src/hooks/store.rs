//! One hook's store: its own state type, its limits per event, and the
//! `log` import it may call. Every entry into the hook (each event,
//! `snapshot`, `restore`) runs under fresh fuel, an epoch deadline and a
//! wall-clock timeout, so a hook that loops, sleeps in WASI or blocks ends
//! within its limit whatever it does.

use crate::bindings::hook::{budget_host::plugin as wit, HookPre};
use crate::bindings::types;
use crate::guest_io::GuestOutput;
use crate::output::Output;
use crate::spec::HookLimits;
use std::future::Future;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The host state of one hook's store.
pub struct HookState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// The hook's name, for its log lines.
    name: String,
    out: Arc<Output>,
    stdout: GuestOutput,
}

impl WasiView for HookState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for HookState {}

impl wit::log::Host for HookState {
    async fn log(&mut self, level: types::Level, message: String) -> wasmtime::Result<()> {
        crate::output::plugin_log(&self.out, &self.name, level, &message);
        Ok(())
    }

    async fn emit(&mut self, event: String, data: String) -> wasmtime::Result<()> {
        crate::output::plugin_event(&self.out, &self.name, &event, &data);
        Ok(())
    }
}

/// The linker for hooks: WASI (nothing granted but capped output, clocks and random) and `log`.
pub fn linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<HookState>> {
    let mut linker: Linker<HookState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wit::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Per-store limits on what a guest can make the host keep: one instance,
/// a few memories and tables, and bounded table growth besides the memory cap.
pub fn store_limits(memory_bytes: usize) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(memory_bytes)
        .table_elements(TABLE_ELEMENTS)
        .instances(MAX_INSTANCES)
        .tables(MAX_TABLES)
        .memories(MAX_MEMORIES)
        .trap_on_grow_failure(true)
        .build()
}

/// Most elements in one table (function references a guest keeps).
pub const TABLE_ELEMENTS: usize = 1 << 20;
/// Core instances in one store (a component instantiates several).
pub const MAX_INSTANCES: usize = 64;
/// Tables in one store.
pub const MAX_TABLES: usize = 64;
/// Linear memories in one store.
pub const MAX_MEMORIES: usize = 16;

/// A loaded hook: its store and instance.
pub struct HookStore {
    pub(crate) name: String,
    store: Store<HookState>,
    hook: crate::bindings::hook::Hook,
    limits: HookLimits,
}

/// Why a hook entry failed, one line naming the hook.
pub type Failure = String;

impl HookStore {
    /// Instantiate `pre` in a fresh store under `limits`.
    pub async fn start(engine: &wasmtime::Engine, pre: &HookPre<HookState>, name: &str, limits: HookLimits, out: &Arc<Output>) -> anyhow::Result<HookStore> {
        // Seeded by the hook's name: a hook's draws are the same run after run.
        let random = crate::guest_io::GuestRandom::new(&[b"hook", name.as_bytes()]);
        let (wasi, stdout) = crate::guest_io::wasi_for(name, &out.console, crate::guest_io::DEFAULT_OUTPUT_CAP, &random);
        let state = HookState { wasi, table: ResourceTable::new(), limits: store_limits(limits.memory_bytes), name: name.into(), out: out.clone(), stdout };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_fuel(limits.fuel_per_event)?;
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(limits));
        let hook = tokio::time::timeout(limits.time_per_event, pre.instantiate_async(&mut store))
            .await
            .map_err(|_| anyhow::anyhow!("hook '{name}' did not start within {} ms", limits.time_per_event.as_millis()))??;
        Ok(HookStore { name: name.into(), store, hook, limits })
    }

    /// Run one entry (`what` names it in messages) with fresh fuel and time.
    pub async fn call<'s, T, F, Fut>(&'s mut self, what: &str, f: F) -> Result<T, Failure>
    where
        F: FnOnce(&'s crate::bindings::hook::Hook, &'s mut Store<HookState>) -> Fut,
        Fut: Future<Output = wasmtime::Result<T>> + 's,
    {
        let limits = self.limits;
        let name = self.name.clone();
        let _ = self.store.set_fuel(limits.fuel_per_event);
        self.store.set_epoch_deadline(ticks(limits));
        let r = tokio::time::timeout(limits.time_per_event, f(&self.hook, &mut self.store)).await;
        let why = match r {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => describe_trap(&e, what, &limits),
            // Dropping the call cancels a guest blocked in a host call (a WASI sleep).
            Err(_) => format!("ran over its time limit ({} ms) in {what}", limits.time_per_event.as_millis()),
        };
        Err(format!("hook '{name}' {why}"))
    }

    /// Print what is left of a half-written output line.
    pub fn flush_output(&self) {
        self.store.data().stdout.flush_partial();
    }
}

fn ticks(limits: HookLimits) -> u64 {
    (limits.time_per_event.as_millis() as u64 / crate::engine::EPOCH_TICK.as_millis() as u64).max(1)
}

fn describe_trap(e: &wasmtime::Error, what: &str, limits: &HookLimits) -> String {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => format!("ran out of fuel ({} instructions) in {what}", limits.fuel_per_event),
        Some(Trap::Interrupt) => format!("ran over its time limit ({} ms) in {what}", limits.time_per_event.as_millis()),
        _ => {
            let t = format!("{e:#}");
            if t.contains("forcing trap when growing memory") {
                format!("exceeded its memory limit of {} MiB in {what}", limits.memory_bytes >> 20)
            } else if t.contains("cannot enter component instance") {
                format!("is unusable after an earlier failure ({what})")
            } else {
                format!("trapped in {what}: {}", crate::engine::trap_reason(&t))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest that grows a table takes host memory: the store's limits stop it.
    #[test]
    fn table_growth_is_bounded() {
        let engine = crate::engine::new_engine().unwrap();
        let wat = r#"(module
            (table 0 funcref)
            (memory 1)
            (func (export "grow") (param i32) (result i32) ref.null func local.get 0 table.grow 0))"#;
        let module = wasmtime::Module::new(&engine, wat::parse_str(wat).unwrap()).unwrap();
        let mut store = Store::new(&engine, store_limits(64 << 20));
        store.limiter(|s| s);
        store.set_fuel(u64::MAX / 2).unwrap();
        store.set_epoch_deadline(100);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let grow = instance.get_typed_func::<i32, i32>(&mut store, "grow").unwrap();
        assert_eq!(grow.call(&mut store, 1000).unwrap(), 0, "a modest table is fine");
        let e = grow.call(&mut store, TABLE_ELEMENTS as i32).unwrap_err();
        assert!(format!("{e:#}").contains("forcing trap when growing table"), "{e:#}");
    }
}
