//! Reading an audit log back into runs, calls and markers.
//!
//! A log holds one run, a run and its resumes (same `run_id`, a new
//! `budget_monitoring_start` with `resumed_from` for each), or several runs
//! and agents; each `(run_id, agent_id)` is one [`Run`]. Money is summed from
//! the integer `*_nanos` fields only, and checked against the ledger's own
//! figures (`cumulative_nanos`, the end line): whatever disagrees becomes a note.
//!
//! A crash can leave the last line half written: the reader keeps every
//! complete line and says what it skipped, it never fails on a bad line.
//! Lines are read as the same typed events the run writes (`audit::events`).

use crate::audit::events::{Event, Line};
use crate::budget::Nanos;
use indexmap::IndexMap;
use std::path::{Path, PathBuf};
pub use super::totals::Totals;

/// The operation that holds money the ledger charged without a call line
/// (a call cancelled by an immediate stop is settled at its reservation).
pub const UNLOGGED: &str = "(charged without a call line)";

/// Why a file cannot be read as an audit log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file cannot be read.
    #[error("cannot read audit log {path}: {source}")]
    Read {
        /// The log file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file holds no line.
    #[error("audit log {0} is empty")]
    Empty(PathBuf),
    /// The first line is not an audit event.
    #[error("{path} is not an audit log (JSON lines with \"event\" and \"run_id\"): {first}")]
    NotAuditLog {
        /// The file.
        path: PathBuf,
        /// Its first line, cut short.
        first: String,
    },
}

/// A line the reader could not use.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Skipped {
    /// 1-based line number.
    pub line: usize,
    /// Its length in bytes.
    pub bytes: usize,
    /// Why it was skipped.
    pub reason: String,
}

/// How a charged call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// `llm_call`: the provider answered and the call was settled.
    Ok,
    /// `llm_call_failed` that was charged (billed-or-not unknowable).
    Failed,
}

/// One charged call, in log order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Call {
    /// 1-based across the run, resumes included.
    pub seq: usize,
    /// Index into `Run::segments`.
    pub segment: usize,
    /// Answered or failed.
    pub kind: CallKind,
    /// When it was logged.
    pub timestamp: String,
    /// Seconds since the run's first line.
    pub t: Option<f64>,
    /// The agent's cycle.
    pub cycle: u32,
    /// The guest's operation label.
    pub operation: String,
    /// The model that answered (or was asked).
    pub model: String,
    /// Input tokens billed.
    pub input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
    /// Input tokens read from the provider's cache.
    pub cached_tokens: u64,
    /// The output limit the call ran with.
    pub max_tokens: Option<u64>,
    /// What was reserved before the call.
    pub reserved_nanos: Option<Nanos>,
    /// What it was charged.
    pub cost_nanos: Nanos,
    /// The run's ledger after the call, as logged.
    pub cumulative_nanos: Option<Nanos>,
    /// Money spent by the run up to and including this call, every segment counted.
    pub spent_nanos: Nanos,
    /// The run's limit at the time.
    pub limit_nanos: Option<Nanos>,
    /// The provider's time to answer.
    pub latency_ms: Option<u64>,
    /// Guest fuel used by the run so far.
    pub fuel: Option<u64>,
    /// Why the answer stopped.
    pub finish_reason: Option<String>,
    /// How many anomalies the host logged for it.
    pub anomalies: usize,
    /// Billed past its reservation by this much (the run stopped there, exit 8).
    pub over_reservation_nanos: Nanos,
    /// The failure, for a failed call.
    pub error: Option<String>,
}

/// What a marker marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerKind {
    /// A budget threshold crossed.
    Warning,
    /// A stop.
    Interrupt,
    /// A checkpoint written.
    Checkpoint,
    /// A resume started.
    Resume,
}

impl MarkerKind {
    /// Its name in JSON and on the page.
    pub fn as_str(self) -> &'static str {
        match self {
            MarkerKind::Warning => "warning",
            MarkerKind::Interrupt => "interrupt",
            MarkerKind::Checkpoint => "checkpoint",
            MarkerKind::Resume => "resume",
        }
    }
}

/// Something that happened during the run, placed on the charts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Marker {
    /// What happened.
    pub kind: MarkerKind,
    /// When.
    pub timestamp: String,
    /// Seconds since the run's first line.
    pub t: Option<f64>,
    /// The agent's cycle, when known.
    pub cycle: Option<u32>,
    /// Money spent by the run at that moment (every segment counted).
    pub spent_nanos: Nanos,
    /// Short text: `50%`, `periodic`, `budget graceful`, `from cycle 7`.
    pub label: String,
    /// The event's own words.
    pub detail: String,
}

/// The `budget_monitoring_end` line of a segment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct End {
    /// When the segment ended.
    pub timestamp: String,
    /// `completed`, `interrupted`, `max_cycles`, ...
    pub status: Option<String>,
    /// What stopped it, if something did.
    pub stop_source: Option<String>,
    /// The ledger's spend at the end.
    pub total_cost_nanos: Nanos,
    /// The limit at the end.
    pub budget_limit_nanos: Option<Nanos>,
    /// Calls the ledger counted.
    pub operations: Option<u32>,
    /// Cycles completed.
    pub cycles_completed: Option<u32>,
    /// Guest fuel used.
    pub fuel_used: Option<u64>,
    /// The ledger's cost per operation.
    pub cost_by_operation_nanos: IndexMap<String, Nanos>,
}

/// One process's part of a run: from a `budget_monitoring_start` to its end line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Segment {
    /// When it started.
    pub timestamp: String,
    /// Seconds since the run's first line.
    pub t: Option<f64>,
    /// The log does not hold this segment's start line (cut off or skipped).
    pub implicit_start: bool,
    /// The limit it ran under.
    pub limit_nanos: Nanos,
    /// What the ledger held when the segment started (a resume's checkpoint).
    pub spent_before_nanos: Nanos,
    /// The checkpoint a resume started from.
    pub resumed_from: Option<String>,
    /// The cycle that checkpoint held.
    pub resumed_cycle: Option<u32>,
    /// Warning thresholds (fractions of the limit).
    pub thresholds: Vec<f64>,
    /// Money charged by this segment's call lines.
    pub logged_nanos: Nanos,
    /// Charged calls in it.
    pub calls: u32,
    /// Its end line, unless it was cut off.
    pub end: Option<End>,
}

/// One `(run_id, agent_id)` of the log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    /// The run's id.
    pub run_id: String,
    /// The agent's name (a team member's name).
    pub agent_id: String,
    /// The agent's file, as logged.
    pub agent: Option<String>,
    /// The provider, as logged.
    pub provider: Option<String>,
    /// The model, as logged.
    pub model: Option<String>,
    /// Its first line's time.
    pub first_timestamp: String,
    /// The run and each resume of it.
    pub segments: Vec<Segment>,
    /// Every charged call, in order.
    pub calls: Vec<Call>,
    /// Warnings, stops, checkpoints and resumes.
    pub markers: Vec<Marker>,
    /// `llm_call_refused` lines (never charged).
    pub refused: u32,
    /// `llm_call_failed` lines that charged nothing.
    pub failed_uncharged: u32,
    #[serde(skip)]
    start_time: Option<chrono::NaiveDateTime>,
}

/// A whole log file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Log {
    /// The file read.
    pub path: PathBuf,
    /// Lines read, including skipped ones (blank lines not counted).
    pub lines: usize,
    /// Lines that could not be used, and why.
    pub skipped: Vec<Skipped>,
    /// Each run and agent in it, in order of first appearance.
    pub runs: Vec<Run>,
}

fn opt(c: &Option<std::borrow::Cow<'_, str>>) -> Option<String> {
    c.as_deref().map(String::from)
}

fn parse_time(ts: &str) -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.f").ok()
}

/// `line 17 is not JSON (...)` style reasons, clipped for a one-line note.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

impl Log {
    /// Read and parse `path`. Bad lines are skipped (see `skipped`); only an
    /// unreadable file, an empty one, or one with no audit event at all fails.
    pub fn read(path: &Path) -> Result<Log, LogError> {
        let bytes = std::fs::read(path).map_err(|source| LogError::Read { path: path.to_path_buf(), source })?;
        Log::parse(&bytes, path)
    }

    /// Parse a log's bytes (`path` names it in messages).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Log, LogError> {
        let mut log = Log { path: path.to_path_buf(), lines: 0, skipped: Vec::new(), runs: Vec::new() };
        let mut index: IndexMap<(String, String), usize> = IndexMap::new();
        let mut events = 0usize;
        let mut first_bad: Option<String> = None;
        let pieces: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        let last = pieces.len() - 1;
        for (i, raw) in pieces.iter().enumerate() {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            log.lines += 1;
            let line = i + 1;
            // The piece after the last newline is an unfinished write.
            let complete = i < last;
            let parsed = std::str::from_utf8(raw)
                .map_err(|e| format!("is not UTF-8 ({e})"))
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).map_err(|e| format!("is not JSON ({e})")))
                .and_then(|v| match (&v["event"], &v["run_id"]) {
                    (serde_json::Value::String(_), serde_json::Value::String(_)) => Ok(v),
                    _ => Err("is not an audit event (no \"event\" and \"run_id\")".to_string()),
                })
                .and_then(|v| {
                    let name = v["event"].as_str().unwrap_or_default().to_string();
                    serde_json::from_value::<Line>(v).map_err(|e| format!("is not a valid {name} event ({e})"))
                });
            match parsed {
                Ok(l) => {
                    events += 1;
                    log.add(&mut index, l);
                }
                Err(reason) => {
                    let reason = if complete { reason } else { "is incomplete: the log ends mid-line".to_string() };
                    if first_bad.is_none() {
                        first_bad = Some(format!("line {line} {}", clip(&reason, 120)));
                    }
                    log.skipped.push(Skipped { line, bytes: raw.len(), reason });
                }
            }
        }
        if log.lines == 0 {
            return Err(LogError::Empty(path.to_path_buf()));
        }
        if events == 0 {
            return Err(LogError::NotAuditLog { path: path.to_path_buf(), first: first_bad.unwrap_or_default() });
        }
        Ok(log)
    }

    /// One line for the console, or `None` when nothing was skipped.
    pub fn skipped_note(&self) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        let shown: Vec<String> =
            self.skipped.iter().take(3).map(|s| format!("line {} ({} bytes) {}", s.line, s.bytes, clip(&s.reason, 80))).collect();
        let more = self.skipped.len().saturating_sub(3);
        Some(format!(
            "note: skipped {} of {} lines in {}: {}{}",
            self.skipped.len(),
            self.lines,
            self.path.display(),
            shown.join("; "),
            if more > 0 { format!("; and {more} more") } else { String::new() }
        ))
    }

    fn add(&mut self, index: &mut IndexMap<(String, String), usize>, l: Line<'_>) {
        let (run_id, agent_id, ts) = (l.run_id, l.agent_id, l.timestamp);
        let time = parse_time(&ts);
        let n = self.runs.len();
        let i = *index.entry((run_id.clone(), agent_id.clone())).or_insert(n);
        if i == n {
            self.runs.push(Run {
                run_id,
                agent_id,
                agent: None,
                provider: None,
                model: None,
                first_timestamp: ts.clone(),
                segments: Vec::new(),
                calls: Vec::new(),
                markers: Vec::new(),
                refused: 0,
                failed_uncharged: 0,
                start_time: time,
            });
        }
        self.runs[i].add(l.event, ts, time);
    }
}

/// What a call line (answered or failed) says, for `Run::push_call`.
struct CallLine {
    cycle: u32,
    operation: Option<String>,
    model: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    cached_tokens: u64,
    max_tokens: Option<u64>,
    reserved_nanos: Option<Nanos>,
    cost_nanos: Nanos,
    cumulative_nanos: Option<Nanos>,
    limit_nanos: Option<Nanos>,
    latency_ms: Option<u64>,
    fuel: Option<u64>,
    finish_reason: Option<String>,
    anomalies: usize,
    over_reservation_nanos: Nanos,
    error: Option<String>,
}

impl Run {
    fn since_start(&self, time: Option<chrono::NaiveDateTime>) -> Option<f64> {
        let d = time? - self.start_time?;
        Some(d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6)
    }

    /// Money the run has spent so far, every segment counted.
    fn spent_so_far(&self) -> Nanos {
        self.calls.last().map(|c| c.spent_nanos).unwrap_or(0).saturating_add(self.unlogged_so_far())
    }

    fn unlogged_so_far(&self) -> Nanos {
        self.segments
            .iter()
            .filter_map(|s| s.end.as_ref().map(|e| e.total_cost_nanos.saturating_sub(s.spent_before_nanos.saturating_add(s.logged_nanos))))
            .fold(0, Nanos::saturating_add)
    }

    /// The segment a line belongs to; a log cut off at the front gets an
    /// implicit one, starting at `before` spent under `limit`.
    fn segment(&mut self, limit: Nanos, before: Nanos, ts: &str, t: Option<f64>) -> usize {
        let open = self.segments.last().is_some_and(|s| s.end.is_none());
        if !open {
            self.segments.push(Segment {
                timestamp: ts.to_string(),
                t,
                implicit_start: true,
                limit_nanos: limit,
                spent_before_nanos: before,
                resumed_from: None,
                resumed_cycle: None,
                thresholds: Vec::new(),
                logged_nanos: 0,
                calls: 0,
                end: None,
            });
        }
        self.segments.len() - 1
    }

    fn add(&mut self, event: Event<'_>, ts: String, time: Option<chrono::NaiveDateTime>) {
        let t = self.since_start(time);
        match event {
            Event::BudgetMonitoringStart(v) => {
                self.agent = opt(&v.agent).or(self.agent.take());
                self.provider = opt(&v.provider).or(self.provider.take());
                self.model = opt(&v.model).or(self.model.take());
                let resumed_from = opt(&v.resumed_from);
                let spent_before = v.spent_before_nanos.unwrap_or(0);
                if let Some(from) = &resumed_from {
                    let label = match v.resumed_cycle {
                        Some(c) => format!("resumed from cycle {c}"),
                        None => "resumed".into(),
                    };
                    self.markers.push(Marker {
                        kind: MarkerKind::Resume,
                        timestamp: ts.clone(),
                        t,
                        cycle: v.resumed_cycle,
                        spent_nanos: self.spent_so_far(),
                        label,
                        detail: format!("from {from}, the ledger at {}", crate::budget::fmt_usd(spent_before)),
                    });
                }
                // A start without an end before it: the previous process died without its end line.
                self.segments.push(Segment {
                    timestamp: ts,
                    t,
                    implicit_start: false,
                    limit_nanos: v.budget_limit_nanos,
                    spent_before_nanos: spent_before,
                    resumed_from,
                    resumed_cycle: v.resumed_cycle,
                    thresholds: v.warn,
                    logged_nanos: 0,
                    calls: 0,
                    end: None,
                });
            }
            // A replayed answer cost nothing and settled nothing: not a call of the books.
            Event::LlmCall(c) if c.replayed => {}
            Event::LlmCall(c) => {
                let before = c.cumulative_nanos.map(|cum| cum.saturating_sub(c.cost_nanos)).unwrap_or(0);
                let seg = self.segment(c.budget_limit_nanos.unwrap_or(0), before, &ts, t);
                self.push_call(seg, CallKind::Ok, ts, t, CallLine {
                    cycle: c.cycle,
                    operation: opt(&c.operation),
                    model: opt(&c.model),
                    input_tokens: c.input_tokens,
                    output_tokens: c.output_tokens,
                    cached_tokens: c.cached_tokens,
                    max_tokens: c.max_tokens.map(u64::from),
                    reserved_nanos: c.reserved_nanos,
                    cost_nanos: c.cost_nanos,
                    cumulative_nanos: c.cumulative_nanos,
                    limit_nanos: c.budget_limit_nanos,
                    latency_ms: c.latency_ms,
                    fuel: c.fuel,
                    finish_reason: opt(&c.finish_reason),
                    anomalies: c.anomalies.len(),
                    over_reservation_nanos: c.over_reservation_nanos,
                    error: None,
                });
            }
            Event::LlmCallFailed(f) => {
                if f.charged_nanos == 0 {
                    self.failed_uncharged = self.failed_uncharged.saturating_add(1);
                    return;
                }
                let seg = self.segment(0, 0, &ts, t);
                self.push_call(seg, CallKind::Failed, ts, t, CallLine {
                    cycle: f.cycle,
                    operation: opt(&f.operation),
                    model: opt(&f.model),
                    input_tokens: 0,
                    output_tokens: 0,
                    cached_tokens: 0,
                    max_tokens: None,
                    reserved_nanos: f.reserved_nanos,
                    cost_nanos: f.charged_nanos,
                    cumulative_nanos: None,
                    limit_nanos: None,
                    latency_ms: f.latency_ms,
                    fuel: None,
                    finish_reason: None,
                    anomalies: 0,
                    over_reservation_nanos: 0,
                    error: Some(f.error.into_owned()),
                });
            }
            Event::LlmCallRefused(_) => self.refused = self.refused.saturating_add(1),
            Event::BudgetWarning(w) => self.markers.push(Marker {
                kind: MarkerKind::Warning,
                timestamp: ts,
                t,
                cycle: w.cycle,
                spent_nanos: self.spent_so_far(),
                label: format!("{:.0}%", w.threshold * 100.0),
                detail: format!("{:.1}% used", w.percentage),
            }),
            Event::CheckpointSaved(c) => self.markers.push(Marker {
                kind: MarkerKind::Checkpoint,
                timestamp: ts,
                t,
                cycle: c.cycle,
                spent_nanos: self.spent_so_far(),
                label: if c.reason.is_empty() { "checkpoint".into() } else { c.reason.into_owned() },
                detail: c.path.into_owned(),
            }),
            Event::Interrupt(i) => self.markers.push(Marker {
                kind: MarkerKind::Interrupt,
                timestamp: ts,
                t,
                cycle: i.cycles_completed,
                spent_nanos: self.spent_so_far(),
                label: format!("{} {}", i.source, i.mode).trim().to_string(),
                detail: i.message.into_owned(),
            }),
            Event::BudgetMonitoringEnd(e) => {
                let seg = self.segment(e.budget_limit_nanos.unwrap_or(0), e.total_cost_nanos, &ts, t);
                if let Some(l) = e.budget_limit_nanos {
                    self.segments[seg].limit_nanos = l;
                }
                self.segments[seg].end = Some(End {
                    timestamp: ts,
                    status: opt(&e.status),
                    stop_source: opt(&e.stop_source),
                    total_cost_nanos: e.total_cost_nanos,
                    budget_limit_nanos: e.budget_limit_nanos,
                    operations: e.operations,
                    cycles_completed: e.cycles_completed,
                    fuel_used: e.fuel_used,
                    cost_by_operation_nanos: e.cost_by_operation_nanos,
                });
            }
            Event::LlmCallCancelled(_) | Event::ReplayEnded(_) | Event::HookDecision(_) | Event::HookFailure(_) | Event::PluginLog(_) | Event::PluginEvent(_) | Event::Unknown => {}
        }
    }

    fn push_call(&mut self, seg: usize, kind: CallKind, ts: String, t: Option<f64>, c: CallLine) {
        let sg = &mut self.segments[seg];
        sg.logged_nanos = sg.logged_nanos.saturating_add(c.cost_nanos);
        sg.calls = sg.calls.saturating_add(1);
        if self.model.is_none() {
            self.model = c.model.clone();
        }
        let spent = self.spent_so_far().saturating_add(c.cost_nanos);
        self.calls.push(Call {
            seq: self.calls.len() + 1,
            segment: seg,
            kind,
            timestamp: ts,
            t,
            cycle: c.cycle,
            operation: c.operation.unwrap_or_else(|| "(unnamed)".into()),
            model: c.model.unwrap_or_default(),
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            cached_tokens: c.cached_tokens,
            max_tokens: c.max_tokens,
            reserved_nanos: c.reserved_nanos,
            cost_nanos: c.cost_nanos,
            cumulative_nanos: c.cumulative_nanos,
            spent_nanos: spent,
            limit_nanos: c.limit_nanos,
            latency_ms: c.latency_ms,
            fuel: c.fuel,
            finish_reason: c.finish_reason,
            anomalies: c.anomalies,
            over_reservation_nanos: c.over_reservation_nanos,
            error: c.error,
        });
    }
}

/// Exact dollars from nanos: at least four decimals, no float rounding.
pub fn fmt_exact(n: Nanos) -> String {
    let whole = n / crate::budget::NANOS_PER_USD;
    let frac = format!("{:09}", n % crate::budget::NANOS_PER_USD);
    let trimmed = frac.trim_end_matches('0');
    let digits = if trimmed.len() < 4 { &frac[..4] } else { trimmed };
    format!("${whole}.{digits}")
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
