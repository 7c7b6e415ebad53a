//! Every audit event, as one serde enum shared by the writer (`run`, `hooks`)
//! and the reader (`report`). A line is `{"timestamp", "event", "run_id",
//! "agent_id", ...fields}`; the field names follow the seed's log, money
//! appears as USD floats for people and integer `*_nanos` for tools.
//!
//! Reading is lenient where logs differ by version: fields added later are
//! optional or default, so `host report` reads logs of earlier hosts (a
//! fixture keeps one). Strings borrow from the writer's values, so writing an
//! event allocates nothing of its own.

use crate::budget::Nanos;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

type Text<'a> = Cow<'a, str>;

/// One audit event (without the line's timestamp and identity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A process starts (or resumes) a run.
    BudgetMonitoringStart(Start<'a>),
    /// A call was answered and settled.
    LlmCall(Call<'a>),
    /// A call was refused before anything was reserved or spent.
    LlmCallRefused(Refused<'a>),
    /// The provider failed; `charged_nanos` says what was charged.
    LlmCallFailed(Failed<'a>),
    /// A call cut off by an immediate stop or timeout, charged its reservation.
    LlmCallCancelled(Cancelled<'a>),
    /// A warning threshold was crossed.
    BudgetWarning(Warning),
    /// A hook's answer to a call.
    HookDecision(HookDecision<'a>),
    /// A hook trapped, ran out of fuel or time, or answered nonsense.
    HookFailure(HookFailure<'a>),
    /// A plugin's `log.log` line.
    PluginLog(PluginLog<'a>),
    /// A plugin's `log.emit` event.
    PluginEvent(PluginEvent<'a>),
    /// A checkpoint was written.
    CheckpointSaved(CheckpointSaved<'a>),
    /// The run is stopping, and why.
    Interrupt(InterruptLine<'a>),
    /// The process's part of the run ended; the ledger's final figures.
    BudgetMonitoringEnd(End<'a>),
    /// Replay of a journal (or a tape) ended: the agent asked something else.
    ReplayEnded(ReplayEnded<'a>),
    /// An event this host does not know (a newer host wrote it).
    #[serde(other)]
    Unknown,
}

impl Event<'_> {
    /// The `event` field's value.
    pub fn name(&self) -> &'static str {
        match self {
            Event::BudgetMonitoringStart(_) => "budget_monitoring_start",
            Event::LlmCall(_) => "llm_call",
            Event::LlmCallRefused(_) => "llm_call_refused",
            Event::LlmCallFailed(_) => "llm_call_failed",
            Event::LlmCallCancelled(_) => "llm_call_cancelled",
            Event::BudgetWarning(_) => "budget_warning",
            Event::HookDecision(_) => "hook_decision",
            Event::HookFailure(_) => "hook_failure",
            Event::PluginLog(_) => "plugin_log",
            Event::PluginEvent(_) => "plugin_event",
            Event::CheckpointSaved(_) => "checkpoint_saved",
            Event::Interrupt(_) => "interrupt",
            Event::BudgetMonitoringEnd(_) => "budget_monitoring_end",
            Event::ReplayEnded(_) => "replay_ended",
            Event::Unknown => "unknown",
        }
    }
}

/// `budget_monitoring_start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Start<'a> {
    #[serde(default)]
    pub budget_limit: f64,
    #[serde(default)]
    pub budget_limit_nanos: Nanos,
    #[serde(default)]
    pub agent: Option<Text<'a>>,
    #[serde(default)]
    pub agent_sha256: Option<Text<'a>>,
    #[serde(default)]
    pub hooks: Vec<Text<'a>>,
    #[serde(default)]
    pub provider: Option<Text<'a>>,
    #[serde(default)]
    pub model: Option<Text<'a>>,
    #[serde(default)]
    pub task: Option<Text<'a>>,
    #[serde(default)]
    pub warn: Vec<f64>,
    #[serde(default)]
    pub fuel_limit: Option<u64>,
    #[serde(default)]
    pub max_cycles: Option<u32>,
    #[serde(default)]
    pub resumed_from: Option<Text<'a>>,
    #[serde(default)]
    pub resumed_cycle: Option<u32>,
    #[serde(default)]
    pub spent_before_nanos: Option<Nanos>,
}

/// `llm_call`: on every call's path, so it borrows everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Call<'a> {
    #[serde(default)]
    pub operation: Option<Text<'a>>,
    #[serde(default)]
    pub cycle: u32,
    #[serde(default)]
    pub provider: Option<Text<'a>>,
    #[serde(default)]
    pub model: Option<Text<'a>>,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_tokens_lowered: bool,
    #[serde(default)]
    pub input_tokens_bound: Option<u64>,
    #[serde(default)]
    pub reserved: f64,
    #[serde(default)]
    pub reserved_nanos: Option<Nanos>,
    #[serde(default)]
    pub cost: f64,
    #[serde(default)]
    pub cost_nanos: Nanos,
    #[serde(default)]
    pub cumulative: f64,
    #[serde(default)]
    pub cumulative_nanos: Option<Nanos>,
    #[serde(default)]
    pub budget_limit_nanos: Option<Nanos>,
    #[serde(default)]
    pub fuel: Option<u64>,
    #[serde(default)]
    pub fuel_delta: Option<u64>,
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub finish_reason: Option<Text<'a>>,
    #[serde(default)]
    pub anomalies: Vec<Text<'a>>,
    /// Billed past the reservation by this much (charged as billed; the run stopped, exit 8).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub over_reservation_nanos: Nanos,
    /// Answered from the call journal at $0 (a resumed run asking what it asked before a crash).
    #[serde(default, skip_serializing_if = "is_false")]
    pub replayed: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &Nanos) -> bool {
    *n == 0
}

/// `replay_ended`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ReplayEnded<'a> {
    #[serde(default)]
    pub cycle: u32,
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub detail: Text<'a>,
}

/// `llm_call_refused`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Refused<'a> {
    #[serde(default)]
    pub operation: Option<Text<'a>>,
    #[serde(default)]
    pub cycle: u32,
    /// `invalid_request`, `no_price`, `hook_denied`, `hook_failed`, `budget_exhausted`, `ledger_unavailable`, `stopping`.
    #[serde(default)]
    pub reason: Text<'a>,
    #[serde(default)]
    pub detail: Text<'a>,
}

/// `llm_call_failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Failed<'a> {
    #[serde(default)]
    pub operation: Option<Text<'a>>,
    #[serde(default)]
    pub cycle: u32,
    #[serde(default)]
    pub model: Option<Text<'a>>,
    #[serde(default)]
    pub error: Text<'a>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub charged: f64,
    #[serde(default)]
    pub charged_nanos: Nanos,
    #[serde(default)]
    pub reserved_nanos: Option<Nanos>,
    #[serde(default)]
    pub latency_ms: Option<u64>,
}

/// `llm_call_cancelled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Cancelled<'a> {
    #[serde(default)]
    pub operation: Option<Text<'a>>,
    #[serde(default)]
    pub cycle: u32,
    #[serde(default)]
    pub reason: Text<'a>,
    #[serde(default)]
    pub charged: f64,
    #[serde(default)]
    pub charged_nanos: Nanos,
    #[serde(default)]
    pub cumulative_nanos: Option<Nanos>,
}

/// `budget_warning`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Warning {
    #[serde(default)]
    pub threshold: f64,
    #[serde(default)]
    pub percentage: f64,
    #[serde(default)]
    pub total_cost: f64,
    #[serde(default)]
    pub total_cost_nanos: Nanos,
    #[serde(default)]
    pub budget_limit: f64,
    #[serde(default)]
    pub budget_limit_nanos: Nanos,
    #[serde(default)]
    pub cycle: Option<u32>,
}

/// `hook_decision`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HookDecision<'a> {
    #[serde(default)]
    pub hook: Text<'a>,
    #[serde(default)]
    pub hook_event: Text<'a>,
    #[serde(default)]
    pub operation: Text<'a>,
    #[serde(default)]
    pub cycle: u32,
    #[serde(default)]
    pub decision: Text<'a>,
}

/// `hook_failure`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HookFailure<'a> {
    #[serde(default)]
    pub hook: Text<'a>,
    #[serde(default)]
    pub message: Text<'a>,
    /// `closed` or `open`; absent where the policy does not apply (a snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Text<'a>>,
}

/// `plugin_log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PluginLog<'a> {
    #[serde(default)]
    pub plugin: Text<'a>,
    #[serde(default)]
    pub level: Text<'a>,
    #[serde(default)]
    pub message: Text<'a>,
}

/// `plugin_event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PluginEvent<'a> {
    #[serde(default)]
    pub plugin: Text<'a>,
    #[serde(default)]
    pub name: Text<'a>,
    /// A JSON object (anything else is kept as `{"invalid_data": ...}`).
    #[serde(default)]
    pub data: serde_json::Value,
}

/// `checkpoint_saved`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CheckpointSaved<'a> {
    #[serde(default)]
    pub path: Text<'a>,
    #[serde(default)]
    pub reason: Text<'a>,
    #[serde(default)]
    pub cycle: Option<u32>,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub spent_nanos: Nanos,
    #[serde(default)]
    pub removed: Vec<Text<'a>>,
}

/// `interrupt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InterruptLine<'a> {
    #[serde(default)]
    pub source: Text<'a>,
    #[serde(default)]
    pub mode: Text<'a>,
    #[serde(default)]
    pub message: Text<'a>,
    #[serde(default)]
    pub interrupt_timestamp: Text<'a>,
    #[serde(default)]
    pub cycles_completed: Option<u32>,
    #[serde(default)]
    pub total_cost: f64,
    #[serde(default)]
    pub total_cost_nanos: Nanos,
}

/// `budget_monitoring_end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct End<'a> {
    #[serde(default)]
    pub status: Option<Text<'a>>,
    #[serde(default)]
    pub stop_source: Option<Text<'a>>,
    #[serde(default)]
    pub total_cost: f64,
    #[serde(default)]
    pub total_cost_nanos: Nanos,
    #[serde(default)]
    pub budget_limit: f64,
    #[serde(default)]
    pub budget_limit_nanos: Option<Nanos>,
    #[serde(default)]
    pub budget_remaining: f64,
    #[serde(default)]
    pub budget_used_percentage: f64,
    #[serde(default)]
    pub operations: Option<u32>,
    #[serde(default)]
    pub avg_cost_per_operation: f64,
    #[serde(default)]
    pub cost_by_operation: IndexMap<String, f64>,
    #[serde(default)]
    pub cost_by_operation_nanos: IndexMap<String, Nanos>,
    #[serde(default)]
    pub cycles_completed: Option<u32>,
    #[serde(default)]
    pub fuel_used: Option<u64>,
    /// Billed past reservations, included in `total_cost_nanos` (exit 8).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub over_reservation_nanos: Nanos,
}

/// A whole line as read back: the identity and the event.
#[derive(Debug, Clone, Deserialize)]
pub struct Line<'a> {
    /// Local time with microseconds.
    #[serde(default)]
    pub timestamp: String,
    /// The run the line belongs to.
    pub run_id: String,
    /// The agent that wrote it (a team member's name, else the file stem).
    #[serde(default)]
    pub agent_id: String,
    /// What happened.
    #[serde(flatten)]
    pub event: Event<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_serde_tags() {
        let all = [
            Event::BudgetMonitoringStart(Start::default()),
            Event::LlmCall(Call::default()),
            Event::LlmCallRefused(Refused::default()),
            Event::LlmCallFailed(Failed::default()),
            Event::LlmCallCancelled(Cancelled::default()),
            Event::BudgetWarning(Warning::default()),
            Event::HookDecision(HookDecision::default()),
            Event::HookFailure(HookFailure::default()),
            Event::PluginLog(PluginLog::default()),
            Event::PluginEvent(PluginEvent::default()),
            Event::CheckpointSaved(CheckpointSaved::default()),
            Event::Interrupt(InterruptLine::default()),
            Event::BudgetMonitoringEnd(End::default()),
            Event::ReplayEnded(ReplayEnded::default()),
        ];
        for e in all {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(v["event"], e.name());
            let back: Event = serde_json::from_value(v).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn unknown_events_and_old_lines_read() {
        let l: Line = serde_json::from_str(r#"{"timestamp":"t","event":"from_the_future","run_id":"r","x":1}"#).unwrap();
        assert_eq!(l.event, Event::Unknown);
        // A line of an earlier host: fewer fields.
        let l: Line = serde_json::from_str(r#"{"timestamp":"t","event":"llm_call","run_id":"r","agent_id":"a","cost_nanos":5}"#).unwrap();
        match l.event {
            Event::LlmCall(c) => assert_eq!((c.cost_nanos, c.cumulative_nanos), (5, None)),
            other => panic!("{other:?}"),
        }
    }
}
