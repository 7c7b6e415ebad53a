//! The audit log: one JSON object per line, complete on disk once written.
//!
//! Every line is an [`events::Event`] (the one enum the reader in `report`
//! uses too) behind `timestamp`, `event`, `run_id` and `agent_id`. Field names
//! follow the seed's log; money appears twice: as USD floats for people and
//! as integer `*_nanos` for tools that must agree to the nano-dollar.

pub mod events;

use anyhow::{Context, Result};
pub use events::Event;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct AuditLog {
    file: File,
    path: PathBuf,
    /// `,"run_id":"..","agent_id":".."`, encoded once.
    identity: Vec<u8>,
    /// The line being written and the event's own JSON, reused: an event
    /// costs no allocation of its own.
    line: Vec<u8>,
    scratch: Vec<u8>,
    /// Whole lines held back by [`AuditLog::hold`], written by one `write`.
    held: Vec<u8>,
    holding: bool,
}

/// Local time with microseconds, `2025-01-31T12:34:56.789012`.
pub fn timestamp() -> String {
    let mut s = String::with_capacity(26);
    write_timestamp(&mut s);
    s
}

/// Formats the digits directly: `chrono`'s `format()` parses its pattern on
/// every call, which cost more than the rest of an audit line.
fn write_timestamp(out: &mut impl TimestampSink) {
    use chrono::{Datelike, Timelike};
    let now = chrono::Local::now().naive_local();
    let (d, t) = (now.date(), now.time());
    // chrono holds a leap second as nanoseconds past 1e9: keep six digits.
    let micros = (t.nanosecond() % 1_000_000_000) / 1000;
    let _ = out.put(format_args!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}", d.year(), d.month(), d.day(), t.hour(), t.minute(), t.second()));
}

/// Where a timestamp is written: a `String` or a line's bytes.
trait TimestampSink {
    fn put(&mut self, args: std::fmt::Arguments<'_>) -> std::fmt::Result;
}

impl TimestampSink for String {
    fn put(&mut self, args: std::fmt::Arguments<'_>) -> std::fmt::Result {
        std::fmt::Write::write_fmt(self, args)
    }
}

impl TimestampSink for Vec<u8> {
    fn put(&mut self, args: std::fmt::Arguments<'_>) -> std::fmt::Result {
        std::io::Write::write_fmt(self, args).map_err(|_| std::fmt::Error)
    }
}

/// Where `{"event":"name"` ends in an event's JSON.
fn tag_end(json: &[u8]) -> Option<usize> {
    const OPEN: &[u8] = b"{\"event\":\"";
    let rest = json.strip_prefix(OPEN)?;
    let close = memchr::memchr(b'"', rest)?;
    Some(OPEN.len() + close + 1)
}

impl AuditLog {
    /// Open for appending: a resumed run continues the same log.
    pub fn open(path: &Path, run_id: &str, agent_id: &str) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create log directory {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open audit log {}", path.display()))?;
        let mut identity = Vec::new();
        for (k, v) in [("run_id", run_id), ("agent_id", agent_id)] {
            identity.push(b',');
            serde_json::to_writer(&mut identity, k)?;
            identity.push(b':');
            serde_json::to_writer(&mut identity, v)?;
        }
        Ok(AuditLog { file, path: path.to_path_buf(), identity, line: Vec::with_capacity(1024), scratch: Vec::with_capacity(1024), held: Vec::new(), holding: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hold the following lines in memory until [`AuditLog::release`]: one LLM
    /// call's lines (its hooks' decisions and its own line) go to the file in
    /// one `write`, which is most of the log's cost per call (BENCHMARKS.md).
    /// A crash in between loses that call's lines, as it would its own line.
    pub fn hold(&mut self) {
        self.holding = true;
    }

    /// Write what was held, in one `write`, and stop holding.
    pub fn release(&mut self) -> Result<()> {
        self.holding = false;
        if self.held.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.held).with_context(|| format!("cannot write audit log {}", self.path.display()));
        self.held.clear();
        r
    }

    /// Append one event: `{"timestamp":..,"event":..,"run_id":..,"agent_id":..,fields}`.
    pub fn write(&mut self, event: &Event<'_>) -> Result<()> {
        // serde writes `{"event":"name"` first for the tagged enum: the line is
        // the timestamp, that tag, the identity, then the rest of the fields.
        self.scratch.clear();
        serde_json::to_writer(&mut self.scratch, event)?;
        let tag_end = tag_end(&self.scratch).context("audit event: serde wrote no tag first")?;
        self.line.clear();
        self.line.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(&mut self.line);
        self.line.extend_from_slice(b"\",");
        self.line.extend_from_slice(&self.scratch[1..tag_end]);
        self.line.extend_from_slice(&self.identity);
        // The rest: `,fields}` or `}`.
        self.line.extend_from_slice(&self.scratch[tag_end..]);
        self.line.push(b'\n');
        if self.holding {
            self.held.extend_from_slice(&self.line);
            return Ok(());
        }
        self.file.write_all(&self.line).with_context(|| format!("cannot write audit log {}", self.path.display()))
    }

    /// Make everything written so far durable (at the end and on interrupts).
    pub fn sync(&mut self) -> Result<()> {
        self.release()?;
        match self.file.sync_data() {
            // `--log /dev/null` (or another device): there is nothing to make durable.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput && !self.file.metadata().map(|m| m.is_file()).unwrap_or(true) => Ok(()),
            r => r.with_context(|| format!("cannot sync audit log {}", self.path.display())),
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::events::*;
    use super::*;
    use serde_json::Value;
    use std::borrow::Cow;

    fn warning(cycle: u32) -> Event<'static> {
        Event::BudgetWarning(Warning { threshold: 0.5, cycle: Some(cycle), ..Default::default() })
    }

    fn names(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn appends_complete_lines_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/log.jsonl");
        let mut log = AuditLog::open(&p, "r1", "essay").unwrap();
        log.write(&Event::BudgetMonitoringStart(Start { budget_limit: 0.1, budget_limit_nanos: 100_000_000, ..Default::default() })).unwrap();
        drop(log);
        let mut log = AuditLog::open(&p, "r\"2", "essay").unwrap();
        let call = Event::LlmCall(Call { operation: Some(Cow::Borrowed("op \"quoted\"")), cost_nanos: 3000, cost: 3e-6, anomalies: vec!["a".into()], ..Default::default() });
        log.write(&call).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("{\"timestamp\":\""), "{text}");
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        let raw = text.lines().nth(1).unwrap();
        let at: Vec<usize> = ["\"timestamp\"", "\"event\"", "\"run_id\"", "\"agent_id\"", "\"operation\""].iter().map(|k| raw.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "identity first, in order: {raw}");
        assert_eq!((lines[1]["event"].as_str(), lines[1]["run_id"].as_str(), lines[1]["cost_nanos"].as_u64()), (Some("llm_call"), Some("r\"2"), Some(3000)));
        let back: Line = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!((back.run_id.as_str(), back.agent_id.as_str()), ("r\"2", "essay"));
        assert_eq!(back.event, call);
    }

    #[test]
    fn held_lines_are_written_together_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        let mut log = AuditLog::open(&p, "r", "a").unwrap();
        log.write(&warning(1)).unwrap();
        log.hold();
        log.write(&Event::HookDecision(HookDecision::default())).unwrap();
        log.write(&Event::LlmCall(Call::default())).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 1, "held lines wait");
        log.release().unwrap();
        log.write(&warning(2)).unwrap();
        log.hold();
        log.write(&Event::Interrupt(InterruptLine::default())).unwrap();
        drop(log);
        assert_eq!(names(&p), ["budget_warning", "hook_decision", "llm_call", "budget_warning", "interrupt"], "dropping the log writes what it held");
    }

    #[test]
    fn a_log_to_dev_null_syncs() {
        let mut log = AuditLog::open(Path::new("/dev/null"), "r", "a").unwrap();
        log.write(&warning(1)).unwrap();
        log.sync().unwrap();
    }

    #[test]
    fn timestamps_look_like_chrono_formatted_them() {
        let t = timestamp();
        assert_eq!(t.len(), 26, "{t}");
        let parsed = chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.6f").unwrap();
        assert_eq!(parsed.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(), t);
        let now = chrono::Local::now().naive_local();
        assert!((now - parsed).num_seconds().abs() < 5);
    }
}
