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

use crate::budget::{LedgerState, Nanos, OpStat};
use indexmap::IndexMap;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The operation that holds money the ledger charged without a call line
/// (a call cancelled by an immediate stop is settled at its reservation).
pub const UNLOGGED: &str = "(charged without a call line)";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read audit log {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("audit log {0} is empty")]
    Empty(PathBuf),
    #[error("{path} is not an audit log (JSON lines with \"event\" and \"run_id\"): {first}")]
    NotAuditLog { path: PathBuf, first: String },
}

/// A line the reader could not use.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Skipped {
    /// 1-based line number.
    pub line: usize,
    pub bytes: usize,
    pub reason: String,
}

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
    pub kind: CallKind,
    pub timestamp: String,
    /// Seconds since the run's first line.
    pub t: Option<f64>,
    pub cycle: u32,
    pub operation: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub max_tokens: Option<u64>,
    pub reserved_nanos: Option<Nanos>,
    pub cost_nanos: Nanos,
    /// The run's ledger after the call, as logged.
    pub cumulative_nanos: Option<Nanos>,
    /// Money spent by the run up to and including this call, every segment counted.
    pub spent_nanos: Nanos,
    pub limit_nanos: Option<Nanos>,
    pub latency_ms: Option<u64>,
    pub fuel: Option<u64>,
    pub finish_reason: Option<String>,
    pub anomalies: usize,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerKind {
    Warning,
    Interrupt,
    Checkpoint,
    Resume,
}

impl MarkerKind {
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
    pub kind: MarkerKind,
    pub timestamp: String,
    pub t: Option<f64>,
    pub cycle: Option<u32>,
    /// Money spent by the run at that moment (every segment counted).
    pub spent_nanos: Nanos,
    /// Short text: `50%`, `periodic`, `budget graceful`, `from cycle 7`.
    pub label: String,
    pub detail: String,
}

/// The `budget_monitoring_end` line of a segment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct End {
    pub timestamp: String,
    pub status: Option<String>,
    pub stop_source: Option<String>,
    pub total_cost_nanos: Nanos,
    pub budget_limit_nanos: Option<Nanos>,
    pub operations: Option<u32>,
    pub cycles_completed: Option<u32>,
    pub fuel_used: Option<u64>,
    pub cost_by_operation_nanos: IndexMap<String, Nanos>,
}

/// One process's part of a run: from a `budget_monitoring_start` to its end line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Segment {
    pub timestamp: String,
    pub t: Option<f64>,
    /// The log does not hold this segment's start line (cut off or skipped).
    pub implicit_start: bool,
    pub limit_nanos: Nanos,
    /// What the ledger held when the segment started (a resume's checkpoint).
    pub spent_before_nanos: Nanos,
    pub resumed_from: Option<String>,
    pub resumed_cycle: Option<u32>,
    pub thresholds: Vec<f64>,
    /// Money charged by this segment's call lines.
    pub logged_nanos: Nanos,
    pub calls: u32,
    pub end: Option<End>,
}

/// One `(run_id, agent_id)` of the log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub run_id: String,
    pub agent_id: String,
    pub agent: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub first_timestamp: String,
    pub segments: Vec<Segment>,
    pub calls: Vec<Call>,
    pub markers: Vec<Marker>,
    /// `llm_call_refused` lines (never charged).
    pub refused: u32,
    /// `llm_call_failed` lines that charged nothing.
    pub failed_uncharged: u32,
    #[serde(skip)]
    start_time: Option<chrono::NaiveDateTime>,
}

/// A run's figures for the breakdown, the JSON and the page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Totals {
    /// The limit in force at the end (a resume may raise it).
    pub limit_nanos: Nanos,
    /// Every nano-dollar the run's lines account for, all segments.
    pub spent_nanos: Nanos,
    /// What the run's own ledger holds at the end.
    pub ledger_spent_nanos: Nanos,
    pub calls: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub unlogged_nanos: Nanos,
    pub by_operation: IndexMap<String, OpStat>,
    pub thresholds: Vec<f64>,
    pub status: Option<String>,
    pub stop_source: Option<String>,
    pub cycles_completed: Option<u32>,
    pub fuel_used: Option<u64>,
    /// Disagreements and gaps, one sentence each.
    pub notes: Vec<String>,
}

impl Totals {
    /// The figures as the ledger's state, for `report::breakdown`.
    pub fn ledger_state(&self) -> LedgerState {
        let fired = self
            .thresholds
            .iter()
            .map(|t| (self.spent_nanos as u128) * 1_000_000 >= ((*t * 1e6).round() as u128).saturating_mul(self.limit_nanos as u128))
            .collect();
        LedgerState {
            limit: self.limit_nanos,
            spent: self.spent_nanos,
            calls: self.calls,
            by_operation: self.by_operation.clone(),
            thresholds: self.thresholds.clone(),
            fired,
        }
    }
}

/// A whole log file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Log {
    pub path: PathBuf,
    /// Lines read, including skipped ones (blank lines not counted).
    pub lines: usize,
    pub skipped: Vec<Skipped>,
    pub runs: Vec<Run>,
}

fn nanos(v: &Value, key: &str) -> Option<Nanos> {
    v.get(key).and_then(Value::as_u64)
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
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
                .and_then(|s| serde_json::from_str::<Value>(s).map_err(|e| format!("is not JSON ({e})")))
                .and_then(|v| match (&v["event"], &v["run_id"]) {
                    (Value::String(_), Value::String(_)) => Ok(v),
                    _ => Err("is not an audit event (no \"event\" and \"run_id\")".to_string()),
                });
            match parsed {
                Ok(v) => {
                    events += 1;
                    log.add(&mut index, &v);
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

    fn add(&mut self, index: &mut IndexMap<(String, String), usize>, v: &Value) {
        let run_id = text(v, "run_id").unwrap_or_default();
        let agent_id = text(v, "agent_id").unwrap_or_default();
        let ts = text(v, "timestamp").unwrap_or_default();
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
        self.runs[i].add(v, ts, time);
    }
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

    /// The segment a line belongs to; a log cut off at the front gets an implicit one.
    fn segment(&mut self, v: &Value, ts: &str, t: Option<f64>) -> usize {
        let open = self.segments.last().is_some_and(|s| s.end.is_none());
        if !open {
            let limit = nanos(v, "budget_limit_nanos").unwrap_or(0);
            let before = match (nanos(v, "cumulative_nanos"), nanos(v, "cost_nanos")) {
                (Some(c), Some(x)) => c.saturating_sub(x),
                _ => nanos(v, "total_cost_nanos").unwrap_or(0),
            };
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

    fn add(&mut self, v: &Value, ts: String, time: Option<chrono::NaiveDateTime>) {
        let t = self.since_start(time);
        let event = v["event"].as_str().unwrap_or_default();
        match event {
            "budget_monitoring_start" => {
                self.agent = text(v, "agent").or(self.agent.take());
                self.provider = text(v, "provider").or(self.provider.take());
                self.model = text(v, "model").or(self.model.take());
                let resumed_from = text(v, "resumed_from");
                let resumed_cycle = v["resumed_cycle"].as_u64().map(|c| c as u32);
                let spent_before = nanos(v, "spent_before_nanos").unwrap_or(0);
                if let Some(from) = &resumed_from {
                    let label = match resumed_cycle {
                        Some(c) => format!("resumed from cycle {c}"),
                        None => "resumed".into(),
                    };
                    self.markers.push(Marker {
                        kind: MarkerKind::Resume,
                        timestamp: ts.clone(),
                        t,
                        cycle: resumed_cycle,
                        spent_nanos: self.spent_so_far(),
                        label,
                        detail: format!("from {from}, the ledger at {}", crate::budget::fmt_usd(spent_before)),
                    });
                }
                let thresholds = v["warn"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
                // A start without an end before it: the previous process died without its end line.
                self.segments.push(Segment {
                    timestamp: ts,
                    t,
                    implicit_start: false,
                    limit_nanos: nanos(v, "budget_limit_nanos").unwrap_or(0),
                    spent_before_nanos: spent_before,
                    resumed_from,
                    resumed_cycle,
                    thresholds,
                    logged_nanos: 0,
                    calls: 0,
                    end: None,
                });
            }
            "llm_call" | "llm_call_failed" => {
                let failed = event == "llm_call_failed";
                let cost = if failed { nanos(v, "charged_nanos").unwrap_or(0) } else { nanos(v, "cost_nanos").unwrap_or(0) };
                if failed && cost == 0 {
                    self.failed_uncharged = self.failed_uncharged.saturating_add(1);
                    return;
                }
                let seg = self.segment(v, &ts, t);
                let sg = &mut self.segments[seg];
                sg.logged_nanos = sg.logged_nanos.saturating_add(cost);
                sg.calls = sg.calls.saturating_add(1);
                if self.model.is_none() {
                    self.model = text(v, "model");
                }
                let spent = self.spent_so_far().saturating_add(cost);
                self.calls.push(Call {
                    seq: self.calls.len() + 1,
                    segment: seg,
                    kind: if failed { CallKind::Failed } else { CallKind::Ok },
                    timestamp: ts,
                    t,
                    cycle: v["cycle"].as_u64().unwrap_or(0) as u32,
                    operation: text(v, "operation").unwrap_or_else(|| "(unnamed)".into()),
                    model: text(v, "model").unwrap_or_default(),
                    input_tokens: nanos(v, "input_tokens").unwrap_or(0),
                    output_tokens: nanos(v, "output_tokens").unwrap_or(0),
                    cached_tokens: nanos(v, "cached_tokens").unwrap_or(0),
                    max_tokens: nanos(v, "max_tokens"),
                    reserved_nanos: nanos(v, "reserved_nanos"),
                    cost_nanos: cost,
                    cumulative_nanos: nanos(v, "cumulative_nanos"),
                    spent_nanos: spent,
                    limit_nanos: nanos(v, "budget_limit_nanos"),
                    latency_ms: nanos(v, "latency_ms"),
                    fuel: nanos(v, "fuel"),
                    finish_reason: text(v, "finish_reason"),
                    anomalies: v["anomalies"].as_array().map(Vec::len).unwrap_or(0),
                    error: text(v, "error"),
                });
            }
            "llm_call_refused" => self.refused = self.refused.saturating_add(1),
            "budget_warning" => {
                let pct = v["threshold"].as_f64().map(|t| format!("{:.0}%", t * 100.0)).unwrap_or_else(|| "?".into());
                let used = v["percentage"].as_f64().map(|p| format!("{p:.1}% used")).unwrap_or_default();
                self.markers.push(Marker {
                    kind: MarkerKind::Warning,
                    timestamp: ts,
                    t,
                    cycle: v["cycle"].as_u64().map(|c| c as u32),
                    spent_nanos: self.spent_so_far(),
                    label: pct,
                    detail: used,
                });
            }
            "checkpoint_saved" => self.markers.push(Marker {
                kind: MarkerKind::Checkpoint,
                timestamp: ts,
                t,
                cycle: v["cycle"].as_u64().map(|c| c as u32),
                spent_nanos: self.spent_so_far(),
                label: text(v, "reason").unwrap_or_else(|| "checkpoint".into()),
                detail: text(v, "path").unwrap_or_default(),
            }),
            "interrupt" => self.markers.push(Marker {
                kind: MarkerKind::Interrupt,
                timestamp: ts,
                t,
                cycle: v["cycles_completed"].as_u64().map(|c| c as u32),
                spent_nanos: self.spent_so_far(),
                label: format!("{} {}", text(v, "source").unwrap_or_default(), text(v, "mode").unwrap_or_default()).trim().to_string(),
                detail: text(v, "message").unwrap_or_default(),
            }),
            "budget_monitoring_end" => {
                let seg = self.segment(v, &ts, t);
                let by_op = v["cost_by_operation_nanos"]
                    .as_object()
                    .map(|m| m.iter().filter_map(|(k, x)| x.as_u64().map(|n| (k.clone(), n))).collect())
                    .unwrap_or_default();
                self.segments[seg].end = Some(End {
                    timestamp: ts,
                    status: text(v, "status"),
                    stop_source: text(v, "stop_source"),
                    total_cost_nanos: nanos(v, "total_cost_nanos").unwrap_or(0),
                    budget_limit_nanos: nanos(v, "budget_limit_nanos"),
                    operations: v["operations"].as_u64().map(|c| c as u32),
                    cycles_completed: v["cycles_completed"].as_u64().map(|c| c as u32),
                    fuel_used: nanos(v, "fuel_used"),
                    cost_by_operation_nanos: by_op,
                });
                if let Some(l) = nanos(v, "budget_limit_nanos") {
                    self.segments[seg].limit_nanos = l;
                }
            }
            _ => {}
        }
    }

    /// The run's figures, every segment added up and checked against the
    /// ledger's own numbers.
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            limit_nanos: 0,
            spent_nanos: 0,
            ledger_spent_nanos: 0,
            calls: 0,
            input_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            unlogged_nanos: 0,
            by_operation: IndexMap::new(),
            thresholds: Vec::new(),
            status: None,
            stop_source: None,
            cycles_completed: None,
            fuel_used: None,
            notes: Vec::new(),
        };
        for c in &self.calls {
            let op = t.by_operation.entry(c.operation.clone()).or_default();
            // A log is input: hostile figures saturate, they never overflow.
            op.cost = op.cost.saturating_add(c.cost_nanos);
            op.calls = op.calls.saturating_add(1);
            op.input_tokens = op.input_tokens.saturating_add(c.input_tokens);
            op.output_tokens = op.output_tokens.saturating_add(c.output_tokens);
            t.calls = t.calls.saturating_add(1);
            t.input_tokens = t.input_tokens.saturating_add(c.input_tokens);
            t.output_tokens = t.output_tokens.saturating_add(c.output_tokens);
            t.cached_tokens = t.cached_tokens.saturating_add(c.cached_tokens);
            t.spent_nanos = t.spent_nanos.saturating_add(c.cost_nanos);
        }
        // Check each call's logged ledger figure against the running sum.
        let mut ledger_calls_before: Option<u32> = Some(0);
        let mut prev_ledger: Option<(Nanos, Option<u32>)> = None;
        for (k, s) in self.segments.iter().enumerate() {
            if let Some((prev_spent, prev_calls)) = prev_ledger {
                if s.implicit_start {
                    ledger_calls_before = None;
                } else if s.spent_before_nanos < prev_spent {
                    let lost = prev_spent - s.spent_before_nanos;
                    t.notes.push(format!(
                        "segment {} resumed from a checkpoint at {} after {} had been spent: the {} spent in between is counted here, the run's own ledger no longer counts it",
                        k + 1,
                        fmt_exact(s.spent_before_nanos),
                        fmt_exact(prev_spent),
                        fmt_exact(lost)
                    ));
                    ledger_calls_before = None;
                } else if s.spent_before_nanos > prev_spent {
                    t.notes.push(format!(
                        "segment {} starts with {} spent, {} more than the log accounts for before it",
                        k + 1,
                        fmt_exact(s.spent_before_nanos),
                        fmt_exact(s.spent_before_nanos - prev_spent)
                    ));
                    ledger_calls_before = None;
                } else {
                    ledger_calls_before = prev_calls;
                }
            } else if s.implicit_start || s.spent_before_nanos > 0 {
                // The log starts mid-run: what came before is not in it.
                if s.spent_before_nanos > 0 {
                    t.notes.push(format!("the log starts with {} already spent that no line in it accounts for", fmt_exact(s.spent_before_nanos)));
                }
                ledger_calls_before = None;
            }
            let mut running = s.spent_before_nanos;
            let mut mismatch = None;
            for c in self.calls.iter().filter(|c| c.segment == k) {
                running = running.saturating_add(c.cost_nanos);
                if let Some(cum) = c.cumulative_nanos {
                    if cum != running && mismatch.is_none() {
                        mismatch = Some((c.seq, cum, running));
                    }
                    running = cum.max(running);
                }
            }
            if let Some((seq, cum, expect)) = mismatch {
                t.notes.push(format!("call {seq}: the ledger logged {} spent, the call lines before it add up to {}", fmt_exact(cum), fmt_exact(expect)));
            }
            let ledger_end = match &s.end {
                Some(e) => {
                    let expect = s.spent_before_nanos.saturating_add(s.logged_nanos);
                    if e.total_cost_nanos > expect {
                        let gap = e.total_cost_nanos - expect;
                        t.unlogged_nanos = t.unlogged_nanos.saturating_add(gap);
                        t.spent_nanos = t.spent_nanos.saturating_add(gap);
                        let unlogged_calls = match (ledger_calls_before, e.operations) {
                            (Some(b), Some(ops)) => ops.saturating_sub(b.saturating_add(s.calls)),
                            _ => 0,
                        };
                        let op = t.by_operation.entry(UNLOGGED.into()).or_default();
                        op.cost = op.cost.saturating_add(gap);
                        op.calls = op.calls.saturating_add(unlogged_calls);
                        t.calls = t.calls.saturating_add(unlogged_calls);
                        t.notes.push(format!(
                            "segment {}: its end line records {} spent, {} more than its call lines (a call cancelled by an immediate stop is charged its reservation)",
                            k + 1,
                            fmt_exact(e.total_cost_nanos),
                            fmt_exact(gap)
                        ));
                    } else if e.total_cost_nanos < expect {
                        t.notes.push(format!(
                            "segment {}: its end line records {} spent, less than the {} its call lines add up to",
                            k + 1,
                            fmt_exact(e.total_cost_nanos),
                            fmt_exact(expect)
                        ));
                    }
                    prev_ledger = Some((e.total_cost_nanos, e.operations));
                    e.total_cost_nanos
                }
                None => {
                    let spent = running.max(s.spent_before_nanos.saturating_add(s.logged_nanos));
                    let calls = ledger_calls_before.map(|b| b.saturating_add(s.calls));
                    prev_ledger = Some((spent, calls));
                    if k + 1 < self.segments.len() {
                        t.notes.push(format!("segment {} has no end line (the process stopped without finishing)", k + 1));
                    }
                    spent
                }
            };
            t.ledger_spent_nanos = ledger_end;
            let limit = s.end.as_ref().and_then(|e| e.budget_limit_nanos).unwrap_or(s.limit_nanos);
            if limit > 0 {
                t.limit_nanos = limit;
            }
            if !s.thresholds.is_empty() {
                t.thresholds = s.thresholds.clone();
            }
        }
        if t.limit_nanos == 0 {
            t.limit_nanos = self.calls.iter().rev().find_map(|c| c.limit_nanos).unwrap_or(0);
        }
        match self.segments.last().and_then(|s| s.end.as_ref()) {
            Some(e) => {
                t.status = e.status.clone();
                t.stop_source = e.stop_source.clone();
                t.cycles_completed = e.cycles_completed;
                t.fuel_used = e.fuel_used;
            }
            None => {
                t.status = Some("unfinished".into());
                t.cycles_completed = self.calls.iter().map(|c| c.cycle).max();
                t.fuel_used = self.calls.iter().filter_map(|c| c.fuel).max();
                if !self.segments.is_empty() {
                    t.notes.push("the log has no end line for the last segment: the run is still going, or its process died".into());
                }
            }
        }
        t
    }

    /// The limit in force at each segment's start: `(seconds, cycle, limit)`.
    pub fn limit_steps(&self) -> Vec<(Option<f64>, Option<u32>, Nanos)> {
        self.segments
            .iter()
            .map(|s| (s.t, s.resumed_cycle, s.end.as_ref().and_then(|e| e.budget_limit_nanos).unwrap_or(s.limit_nanos)))
            .collect()
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
mod tests {
    use super::*;

    fn line(v: serde_json::Value) -> String {
        format!("{v}\n")
    }

    fn start(run: &str, limit: u64, before: Option<u64>, from: Option<&str>, ts: &str) -> String {
        line(serde_json::json!({"timestamp": ts, "event": "budget_monitoring_start", "run_id": run, "agent_id": "a",
            "budget_limit_nanos": limit, "spent_before_nanos": before, "resumed_from": from, "resumed_cycle": from.map(|_| 2), "warn": [0.5, 0.8]}))
    }

    fn call(run: &str, cycle: u32, cost: u64, cum: u64, limit: u64, ts: &str) -> String {
        line(serde_json::json!({"timestamp": ts, "event": "llm_call", "run_id": run, "agent_id": "a", "operation": format!("op_{cycle}"),
            "cycle": cycle, "model": "m", "input_tokens": 10, "output_tokens": 20, "cached_tokens": 0, "cost_nanos": cost,
            "cumulative_nanos": cum, "budget_limit_nanos": limit}))
    }

    fn end(run: &str, total: u64, limit: u64, ops: u32, ts: &str) -> String {
        line(serde_json::json!({"timestamp": ts, "event": "budget_monitoring_end", "run_id": run, "agent_id": "a",
            "total_cost_nanos": total, "budget_limit_nanos": limit, "operations": ops, "status": "completed", "cycles_completed": 3}))
    }

    fn parse(text: &str) -> Log {
        Log::parse(text.as_bytes(), Path::new("log.jsonl")).unwrap()
    }

    #[test]
    fn exact_dollars() {
        assert_eq!(fmt_exact(0), "$0.0000");
        assert_eq!(fmt_exact(14_500_000), "$0.0145");
        assert_eq!(fmt_exact(13_180_000), "$0.01318");
        assert_eq!(fmt_exact(1), "$0.000000001");
        assert_eq!(fmt_exact(12_345_678_901), "$12.345678901");
    }

    #[test]
    fn one_run_adds_up() {
        let t0 = "2026-01-01T10:00:00.000000";
        let text = [
            start("r", 100, None, None, t0),
            call("r", 1, 30, 30, 100, "2026-01-01T10:00:01.500000"),
            call("r", 2, 25, 55, 100, "2026-01-01T10:00:03.000000"),
            end("r", 55, 100, 2, "2026-01-01T10:00:04.000000"),
        ]
        .concat();
        let log = parse(&text);
        assert!(log.skipped.is_empty());
        assert_eq!(log.runs.len(), 1);
        let r = &log.runs[0];
        assert_eq!(r.calls.iter().map(|c| c.t).collect::<Vec<_>>(), vec![Some(1.5), Some(3.0)]);
        let t = r.totals();
        assert_eq!((t.spent_nanos, t.ledger_spent_nanos, t.limit_nanos, t.calls, t.unlogged_nanos), (55, 55, 100, 2, 0));
        assert_eq!(t.by_operation["op_1"].cost, 30);
        assert!(t.notes.is_empty(), "{:?}", t.notes);
        assert_eq!(t.ledger_state().fired, vec![true, false]);
    }

    #[test]
    fn resume_from_the_latest_checkpoint_continues_the_ledger() {
        let text = [
            start("r", 100, None, None, "2026-01-01T10:00:00.0"),
            call("r", 1, 30, 30, 100, "2026-01-01T10:00:01.0"),
            end("r", 30, 100, 1, "2026-01-01T10:00:02.0"),
            start("r", 1000, Some(30), Some("ck.gz"), "2026-01-01T11:00:00.0"),
            call("r", 3, 40, 70, 1000, "2026-01-01T11:00:01.0"),
            end("r", 70, 1000, 2, "2026-01-01T11:00:02.0"),
        ]
        .concat();
        let r = &parse(&text).runs[0];
        assert_eq!(r.segments.len(), 2);
        let t = r.totals();
        assert_eq!((t.spent_nanos, t.ledger_spent_nanos, t.limit_nanos, t.calls), (70, 70, 1000, 2));
        assert!(t.notes.is_empty(), "{:?}", t.notes);
        let resume: Vec<_> = r.markers.iter().filter(|m| m.kind == MarkerKind::Resume).collect();
        assert_eq!(resume.len(), 1);
        assert_eq!((resume[0].spent_nanos, resume[0].cycle), (30, Some(2)));
        assert_eq!(r.calls[1].spent_nanos, 70);
    }

    #[test]
    fn resume_from_an_older_checkpoint_counts_the_abandoned_spend() {
        let text = [
            start("r", 100, None, None, "2026-01-01T10:00:00.0"),
            call("r", 1, 30, 30, 100, "2026-01-01T10:00:01.0"),
            call("r", 2, 20, 50, 100, "2026-01-01T10:00:01.5"),
            end("r", 50, 100, 2, "2026-01-01T10:00:02.0"),
            // Resumed from the checkpoint after cycle 1 (30 spent): cycle 2's 20 is paid but forgotten.
            start("r", 100, Some(30), Some("ck1.gz"), "2026-01-01T11:00:00.0"),
            call("r", 2, 25, 55, 100, "2026-01-01T11:00:01.0"),
            end("r", 55, 100, 2, "2026-01-01T11:00:02.0"),
        ]
        .concat();
        let r = &parse(&text).runs[0];
        let t = r.totals();
        assert_eq!((t.spent_nanos, t.ledger_spent_nanos, t.calls), (75, 55, 3));
        assert_eq!(r.calls.iter().map(|c| c.spent_nanos).collect::<Vec<_>>(), vec![30, 50, 75]);
        assert_eq!(t.notes.len(), 1, "{:?}", t.notes);
        assert!(t.notes[0].contains("$0.00000002 spent in between"), "{}", t.notes[0]);
    }

    #[test]
    fn unlogged_charges_come_from_the_end_line() {
        let text = [start("r", 100, None, None, "2026-01-01T10:00:00.0"), call("r", 1, 30, 30, 100, "2026-01-01T10:00:01.0"), end("r", 42, 100, 2, "2026-01-01T10:00:02.0")].concat();
        let t = parse(&text).runs[0].totals();
        assert_eq!((t.spent_nanos, t.unlogged_nanos, t.calls), (42, 12, 2));
        assert_eq!(t.by_operation[UNLOGGED].cost, 12);
        assert_eq!(t.by_operation[UNLOGGED].calls, 1);
        assert_eq!(t.by_operation.values().map(|o| o.cost).sum::<u64>(), t.spent_nanos);
    }

    #[test]
    fn runs_and_agents_are_kept_apart() {
        let text = [
            start("r1", 100, None, None, "2026-01-01T10:00:00.0"),
            start("r2", 200, None, None, "2026-01-01T10:00:00.1"),
            call("r1", 1, 30, 30, 100, "2026-01-01T10:00:01.0"),
            call("r2", 1, 7, 7, 200, "2026-01-01T10:00:01.0"),
            call("r2", 2, 8, 15, 200, "2026-01-01T10:00:01.0"),
        ]
        .concat();
        let log = parse(&text);
        let spent: Vec<_> = log.runs.iter().map(|r| (r.run_id.clone(), r.totals().spent_nanos)).collect();
        assert_eq!(spent, vec![("r1".to_string(), 30), ("r2".to_string(), 15)]);
        assert_eq!(log.runs[1].totals().status.as_deref(), Some("unfinished"));
    }

    #[test]
    fn a_torn_last_line_and_garbage_are_skipped_with_a_note() {
        let full = [start("r", 100, None, None, "2026-01-01T10:00:00.0"), call("r", 1, 30, 30, 100, "2026-01-01T10:00:01.0")].concat();
        let torn = call("r", 2, 25, 55, 100, "2026-01-01T10:00:02.0");
        let text = format!("{full}not json at all\n\n{}", &torn[..torn.len() / 2]);
        let log = parse(&text);
        assert_eq!(log.runs[0].calls.len(), 1);
        assert_eq!(log.lines, 4);
        assert_eq!(log.skipped.iter().map(|s| s.line).collect::<Vec<_>>(), vec![3, 5]);
        assert!(log.skipped[1].reason.contains("ends mid-line"));
        let note = log.skipped_note().unwrap();
        assert!(note.starts_with("note: skipped 2 of 4 lines in log.jsonl: line 3"), "{note}");
        assert!(!note.contains('\n'));
        // Invalid UTF-8 is just another bad line.
        let mut bytes = full.into_bytes();
        bytes.extend_from_slice(b"\xff\xfe{\n");
        let log = Log::parse(&bytes, Path::new("x")).unwrap();
        assert!(log.skipped[0].reason.contains("UTF-8"));
    }

    #[test]
    fn not_a_log_is_an_error() {
        let p = Path::new("x.jsonl");
        assert!(matches!(Log::parse(b"", p), Err(LogError::Empty(_))));
        assert!(matches!(Log::parse(b"\n  \n", p), Err(LogError::Empty(_))));
        let e = Log::parse(b"hello\nworld\n", p).unwrap_err();
        assert!(e.to_string().starts_with("x.jsonl is not an audit log"), "{e}");
        assert!(e.to_string().contains("line 1 is not JSON"), "{e}");
        assert!(matches!(Log::parse(b"{\"a\": 1}\n[1,2]\n", p), Err(LogError::NotAuditLog { .. })));
        let e = Log::read(Path::new("/nonexistent/log.jsonl")).unwrap_err();
        assert!(e.to_string().starts_with("cannot read audit log /nonexistent/log.jsonl"), "{e}");
    }

    #[test]
    fn a_log_cut_at_the_front_gets_an_implicit_segment() {
        let text = [call("r", 5, 10, 60, 100, "2026-01-01T10:00:01.0"), call("r", 6, 10, 70, 100, "2026-01-01T10:00:02.0")].concat();
        let r = &parse(&text).runs[0];
        assert!(r.segments[0].implicit_start);
        assert_eq!(r.segments[0].spent_before_nanos, 50);
        let t = r.totals();
        assert_eq!((t.spent_nanos, t.limit_nanos), (20, 100));
        assert!(t.notes.iter().any(|n| n.contains("already spent")), "{:?}", t.notes);
    }
}
