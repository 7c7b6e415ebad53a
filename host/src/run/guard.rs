//! Every entry into the agent (`instantiate`, `init`, `step`, `snapshot`,
//! `restore`) is bounded in wall time, whatever the guest does: epoch
//! interruption stops wasm code, and the host awaits the entry under the
//! run's deadline, the entry's own time limit and the stop signal, so a guest
//! blocked in a WASI host call (a sleep) is cancelled by dropping the call.
//! A call into `llm.complete` in flight settles its own money first (it sees
//! the same stop and deadline), then the entry is dropped.
//! Also: why a trapped entry stopped.

use super::context::sleep_until;
use super::state::AgentState;
use crate::interrupt::{Interrupt, Mode, Source};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Store, Trap};

/// How long a cancelled entry waits for an `llm.complete` in flight to settle its money.
const SETTLE_GRACE: Duration = Duration::from_secs(5);

/// wasmtime's message when a guest hands the host more data than the store's hostcall fuel.
pub const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// What stops an entry from outside: the stop signal and two deadlines.
#[derive(Clone)]
pub struct Bounds {
    pub stop: Arc<crate::interrupt::StopSignal>,
    pub run_deadline: Option<Instant>,
    pub run_timeout: Option<Duration>,
    pub entry_deadline: Option<Instant>,
    pub entry_timeout: Option<Duration>,
    /// Set while the guest is inside `llm.complete`.
    pub in_call: Arc<AtomicBool>,
}

impl Bounds {
    /// The earlier of the two deadlines (what `llm.complete` and the epoch callback watch).
    pub fn deadline(&self) -> Option<Instant> {
        match (self.run_deadline, self.entry_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn why(&self, what: &str) -> Interrupt {
        if self.stop.immediate() {
            return Interrupt::new(Source::Signal, Mode::Immediate, format!("interrupted in {what} by a second signal"));
        }
        if self.run_deadline.is_some_and(|d| Instant::now() >= d) {
            return Interrupt::new(Source::Timeout, Mode::Immediate, format!("timeout of {:?} reached in {what}", self.run_timeout.unwrap_or_default()));
        }
        Interrupt::new(Source::Timeout, Mode::Immediate, format!("{what} ran over its time limit of {:?} (--step-timeout)", self.entry_timeout.unwrap_or_default()))
    }

    async fn tripped(&self) {
        tokio::select! {
            _ = self.stop.wait_immediate() => {}
            _ = sleep_until(self.deadline()) => {}
        }
        // Let a call in flight charge its reservation and log it first.
        let grace = Instant::now() + SETTLE_GRACE;
        while self.in_call.load(Ordering::SeqCst) && Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Await one entry under `bounds`: `Err` when it was cut off from outside.
pub async fn enter<T>(bounds: &Bounds, what: &str, entry: impl Future<Output = wasmtime::Result<T>>) -> Result<wasmtime::Result<T>, Interrupt> {
    tokio::select! {
        biased;
        r = entry => Ok(r),
        _ = bounds.tripped() => Err(bounds.why(what)),
    }
}

/// Fuel the run has used, this process and before.
pub fn fuel_used(store: &Store<AgentState>) -> u64 {
    let s = store.data();
    s.fuel_before.saturating_add(s.fuel_budget.saturating_sub(store.get_fuel().unwrap_or(0)))
}

/// Why a trapped entry stopped.
pub fn classify_trap(e: &wasmtime::Error, store: &Store<AgentState>, what: &str) -> Interrupt {
    let s = store.data();
    if let Some(p) = &s.pending {
        if e.downcast_ref::<super::call::Cancelled>().is_some() {
            return p.clone();
        }
    }
    let limits = &s.ctx.spec.limits;
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Interrupt::new(
            Source::Fuel,
            Mode::Immediate,
            format!("fuel exhausted in {what}: {} instructions used of the limit of {}", fuel_used(store), limits.fuel.unwrap_or(0)),
        ),
        Some(Trap::Interrupt) => s.bounds.why(what),
        Some(Trap::StackOverflow) => Interrupt::new(Source::Error, Mode::Immediate, format!("agent overflowed its stack in {what}")),
        _ => {
            let text = format!("{e:#}");
            if text.contains("forcing trap when growing memory") {
                Interrupt::new(Source::Error, Mode::Immediate, format!("agent exceeded its memory limit of {} MiB in {what}", limits.memory_bytes >> 20))
            } else if text.contains("forcing trap when growing table") || text.contains("table") && text.contains("limit") {
                Interrupt::new(Source::Error, Mode::Immediate, format!("agent exceeded its table limit of {} elements in {what}", crate::hooks::store::TABLE_ELEMENTS))
            } else if text.contains(HOSTCALL_FUEL_EXHAUSTED) {
                Interrupt::new(Source::Error, Mode::Immediate, format!("agent passed the host more data than allowed in {what}"))
            } else {
                let mut msg = format!("agent trapped in {what}: {}", crate::engine::trap_reason(&text));
                if let Some(last) = s.stdout.last_error_line() {
                    msg.push_str(&format!(" (its last error output: {last})"));
                }
                Interrupt::new(Source::Error, Mode::Immediate, msg)
            }
        }
    }
}
