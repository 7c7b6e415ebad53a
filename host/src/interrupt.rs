//! Why a run stops, how, and the exit code each reason maps to.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// What stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The budget: the next call could pass the limit.
    Budget,
    /// Guest fuel ran out.
    Fuel,
    /// A wall-clock limit passed.
    Timeout,
    /// Ctrl+C or SIGTERM.
    Signal,
    /// A hook denied a call the agent could not do without, or asked to stop.
    Hook,
    /// A hook failed (trap, loop, bad answer) under the fail-closed policy.
    HookFailed,
    /// A provider billed past the call's reservation.
    Overrun,
    /// A tape replay: the agent asked something the tape did not record.
    #[serde(rename = "replay_diverged")]
    Diverged,
    /// Anything else that failed (a trap, a provider, a checkpoint that cannot be written).
    Error,
}

/// How a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Finish the current step; no call passes the limit.
    #[default]
    Graceful,
    /// Cancel the guest now (an epoch trap, a dropped call).
    Immediate,
}

impl Source {
    /// Its name in the log and the stop block.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Budget => "budget",
            Source::Fuel => "fuel",
            Source::Timeout => "timeout",
            Source::Signal => "signal",
            Source::Hook => "hook",
            Source::HookFailed => "hook_failed",
            Source::Overrun => "overrun",
            Source::Diverged => "replay_diverged",
            Source::Error => "error",
        }
    }

    /// Documented in the README; scripts rely on them.
    pub fn exit_code(&self) -> i32 {
        match self {
            Source::Error => exit::FAILURE,
            Source::Budget => exit::BUDGET,
            Source::Fuel => exit::FUEL,
            Source::Timeout => exit::TIMEOUT,
            Source::Hook => exit::HOOK,
            Source::HookFailed => exit::HOOK_FAILED,
            Source::Overrun => exit::OVERRUN,
            Source::Diverged => exit::REPLAY_DIVERGED,
            Source::Signal => exit::SIGNAL,
        }
    }
}

impl Mode {
    /// Its name in the log and the stop block.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Graceful => "graceful",
            Mode::Immediate => "immediate",
        }
    }
}

/// The process exit codes (the README's table).
pub mod exit {
    /// Completed, or stopped at `--max-cycles`.
    pub const COMPLETED: i32 = 0;
    /// A runtime failure.
    pub const FAILURE: i32 = 1;
    /// Bad usage or input.
    pub const USAGE: i32 = 2;
    /// The budget stopped the run.
    pub const BUDGET: i32 = 3;
    /// Fuel ran out.
    pub const FUEL: i32 = 4;
    /// A timeout.
    pub const TIMEOUT: i32 = 5;
    /// A hook stopped the run.
    pub const HOOK: i32 = 6;
    /// A hook failed.
    pub const HOOK_FAILED: i32 = 7;
    /// A provider billed past a call's reservation.
    pub const OVERRUN: i32 = 8;
    /// A tape replay diverged.
    pub const REPLAY_DIVERGED: i32 = 9;
    /// Ctrl+C or SIGTERM.
    pub const SIGNAL: i32 = 130;
}

/// A request to stop the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interrupt {
    /// What stopped it.
    pub source: Source,
    /// How.
    pub mode: Mode,
    /// Why, in words.
    pub message: String,
    /// When (local time).
    pub timestamp: String,
}

impl Interrupt {
    /// A stop of `source`, `mode`, with `message`, timestamped now.
    pub fn new(source: Source, mode: Mode, message: impl Into<String>) -> Self {
        Interrupt { source, mode, message: message.into(), timestamp: crate::audit::timestamp() }
    }
}

/// Requests from outside the guest (signals): graceful first, then immediate.
/// Shared by every agent of a process.
#[derive(Default)]
pub struct StopSignal {
    level: AtomicU8,
    notify: Notify,
}

impl StopSignal {
    /// A signal no one has raised yet.
    pub fn new() -> Arc<Self> {
        Arc::new(StopSignal::default())
    }
    /// Escalates: the first request is graceful, any further one immediate.
    pub fn request(&self) -> Mode {
        let prev = self.level.fetch_add(1, Ordering::SeqCst);
        let mode = if prev == 0 { Mode::Graceful } else { Mode::Immediate };
        if mode == Mode::Immediate {
            self.notify.notify_waiters();
        }
        mode
    }
    /// The strongest stop asked for, if any.
    pub fn requested(&self) -> Option<Mode> {
        match self.level.load(Ordering::SeqCst) {
            0 => None,
            1 => Some(Mode::Graceful),
            _ => Some(Mode::Immediate),
        }
    }
    /// Whether an immediate stop was asked for.
    pub fn immediate(&self) -> bool {
        self.level.load(Ordering::SeqCst) >= 2
    }
    /// Resolves once an immediate stop is requested.
    pub async fn wait_immediate(&self) {
        loop {
            let notified = self.notify.notified();
            if self.immediate() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_escalate() {
        let s = StopSignal::new();
        assert_eq!(s.requested(), None);
        assert_eq!(s.request(), Mode::Graceful);
        assert!(!s.immediate());
        assert_eq!(s.request(), Mode::Immediate);
        assert!(s.immediate());
    }

    #[test]
    fn exit_codes_are_distinct() {
        let codes: std::collections::HashSet<_> =
            [Source::Budget, Source::Fuel, Source::Timeout, Source::Signal, Source::Hook, Source::HookFailed, Source::Overrun, Source::Diverged, Source::Error]
                .iter()
                .map(|s| s.exit_code())
                .collect();
        assert_eq!(codes.len(), 9);
    }
}
