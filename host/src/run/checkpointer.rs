//! Keeps the agent's state after the last completed cycle and writes
//! checkpoints of it (with the ledger, the hooks' states and the whole spec).

use super::guard::{self, classify_trap, fuel_used, HOSTCALL_FUEL_EXHAUSTED};
use super::state::AgentState;
use crate::audit::{events, Event};
use crate::checkpoint::{BudgetRecord, Checkpoint, Header};
use crate::interrupt::{Interrupt, Mode, Source};
use crate::spec::RunSpec;
use anyhow::{Context, Result};
use std::borrow::Cow;
use std::path::PathBuf;
use wasmtime::Store;

/// Bytes a snapshot may be copied beyond the cap, so one just over it gets an exact size.
const SNAPSHOT_SLACK: usize = 1 << 20;

/// The run's checkpoint writer.
pub struct Checkpointer {
    /// The spec as stored: every plugin pinned to the sha256 it was loaded with.
    spec: RunSpec,
    dir: PathBuf,
    key: Option<Vec<u8>>,
    snapshot: Vec<u8>,
    last: Option<u32>,
}

impl Checkpointer {
    /// Checkpoints of `spec` into `dir`, sealed with `key` when given.
    pub fn new(spec: RunSpec, dir: PathBuf, key: Option<Vec<u8>>) -> Checkpointer {
        Checkpointer { spec, dir, key, snapshot: Vec::new(), last: None }
    }

    /// Whether the run's policy writes any checkpoint at all.
    pub fn writes_any(&self) -> bool {
        let p = &self.spec.checkpoints;
        p.every > 0 || p.on_interrupt
    }

    /// Whether a snapshot was taken (there is something to save).
    pub fn ready(&self) -> bool {
        self.last.is_some()
    }

    /// Ask the agent for its state, under its limits.
    pub async fn take_snapshot(&mut self, run: &crate::bindings::agent::exports::budget_host::plugin::run::Guest, store: &mut Store<AgentState>, what: &str) -> Result<(), Interrupt> {
        let cap = store.data().ctx.spec.limits.max_snapshot_bytes.min(crate::checkpoint::MAX_SNAPSHOT);
        let over = |size: String| {
            Interrupt::new(
                Source::Error,
                Mode::Graceful,
                format!("agent snapshot of {size} bytes is over the limit of {cap} bytes (--max-snapshot-mb); the previous checkpoint is kept"),
            )
        };
        // wasmtime bounds what a guest hands the host in one call (128 MiB by
        // default): let a snapshot up to the cap through, and stop a bigger one
        // while it is copied, before the host holds all of it.
        let default_fuel = store.hostcall_fuel();
        store.set_hostcall_fuel(cap.saturating_add(SNAPSHOT_SLACK));
        let bounds = store.data().bounds.clone();
        let result = guard::enter(&bounds, what, run.call_snapshot(&mut *store)).await;
        store.set_hostcall_fuel(default_fuel);
        match result {
            Err(i) => Err(i),
            Ok(Ok(bytes)) if bytes.len() > cap => Err(over(bytes.len().to_string())),
            Ok(Ok(bytes)) => {
                self.snapshot = bytes;
                self.last = Some(store.data().cycle);
                Ok(())
            }
            Ok(Err(e)) if format!("{e:#}").contains(HOSTCALL_FUEL_EXHAUSTED) => Err(over(format!("more than {}", cap.saturating_add(SNAPSHOT_SLACK)))),
            Ok(Err(e)) => Err(classify_trap(&e, store, what)),
        }
    }

    /// Write a checkpoint of the last completed cycle, then apply retention.
    pub async fn save(&self, store: &mut Store<AgentState>, reason: &str, interrupt: Option<Interrupt>, cycle: u32) -> Result<PathBuf> {
        let hook_states = store.data_mut().hooks.snapshots().await;
        let fuel = fuel_used(store);
        let s = store.data();
        let c = Checkpoint {
            header: Header {
                format: crate::checkpoint::FORMAT,
                run_id: s.ctx.run_id.clone(),
                created: crate::audit::timestamp(),
                reason: reason.into(),
                interrupt,
                host_version: env!("CARGO_PKG_VERSION").into(),
                spec: self.spec.clone(),
                journal: Some(crate::checkpoint::JournalPosition { next_seq: s.seq }),
            },
            budget: BudgetRecord { ledger: s.account.ledger().state(), fuel_used: fuel, fuel_limit: self.spec.limits.fuel },
            cycle,
            agent_state: self.snapshot.clone(),
            hook_states,
        };
        let path = c.save(&self.dir, self.key.as_deref()).with_context(|| format!("cannot write a checkpoint in {}", self.dir.display()))?;
        let removed = crate::checkpoint::retain(&self.dir, &c.header.run_id, self.spec.checkpoints.retain.max(1) as usize).unwrap_or_default();
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let removed: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
        s.ctx.out.event(&Event::CheckpointSaved(events::CheckpointSaved {
            path: Cow::Owned(path.display().to_string()),
            reason: Cow::Borrowed(reason),
            cycle: Some(cycle),
            bytes,
            spent_nanos: c.budget.ledger.spent,
            removed: removed.iter().map(|r| Cow::Borrowed(r.as_str())).collect(),
        }));
        Ok(path)
    }
}
