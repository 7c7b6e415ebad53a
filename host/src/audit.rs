//! The audit log: one JSON object per line, complete on disk once written.
//!
//! Field names follow the seed's log (`timestamp`, `event`, `budget_limit`,
//! `agent_id`, `total_cost`, ...). Money appears twice: as USD floats for
//! people and as integer `*_nanos` for tools that must agree to the nano-dollar.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct AuditLog {
    file: File,
    path: PathBuf,
    /// `,"run_id":"..","agent_id":".."`, encoded once.
    identity: Vec<u8>,
    /// The line being written, reused: an event costs no allocation of its own.
    line: Vec<u8>,
    /// Whole lines held back by [`AuditLog::hold`], written by one `write`.
    held: Vec<u8>,
    holding: bool,
}

/// The keys every line starts with; an event's fields never overwrite them.
const IDENTITY_KEYS: [&str; 4] = ["timestamp", "event", "run_id", "agent_id"];

/// Local time with microseconds, `2025-01-31T12:34:56.789012`.
pub fn timestamp() -> String {
    let mut s = String::with_capacity(26);
    write_timestamp(&mut s);
    s
}

/// Formats the digits directly: `chrono`'s `format()` parses its pattern on
/// every call, which cost more than the rest of an audit line.
fn write_timestamp(out: &mut impl std::fmt::Write) {
    use chrono::{Datelike, Timelike};
    let now = chrono::Local::now().naive_local();
    let (d, t) = (now.date(), now.time());
    // chrono holds a leap second as nanoseconds past 1e9: keep six digits.
    let micros = (t.nanosecond() % 1_000_000_000) / 1000;
    let _ = write!(out, "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}", d.year(), d.month(), d.day(), t.hour(), t.minute(), t.second());
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
        Ok(AuditLog { file, path: path.to_path_buf(), identity, line: Vec::with_capacity(1024), held: Vec::new(), holding: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `{"timestamp":..,"event":..,"run_id":..,"agent_id":..` into the line buffer.
    fn start_line(&mut self, event: &str) -> Result<()> {
        let mut ts = String::with_capacity(26);
        write_timestamp(&mut ts);
        self.line.clear();
        self.line.extend_from_slice(b"{\"timestamp\":\"");
        self.line.extend_from_slice(ts.as_bytes());
        self.line.extend_from_slice(b"\",\"event\":");
        serde_json::to_writer(&mut self.line, event)?;
        self.line.extend_from_slice(&self.identity);
        Ok(())
    }

    /// Close the line and write it (or hold it). One `write` per line or per
    /// held group, so a crash leaves at worst missing lines, never half of one.
    fn finish_line(&mut self) -> Result<()> {
        self.line.extend_from_slice(b"}\n");
        if self.holding {
            self.held.extend_from_slice(&self.line);
            return Ok(());
        }
        self.file.write_all(&self.line).with_context(|| format!("cannot write audit log {}", self.path.display()))
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

    /// Append one event. `fields` must be a JSON object; its keys follow the
    /// line's identity (`timestamp`, `event`, `run_id`, `agent_id`), which a
    /// field of the same name can never overwrite.
    pub fn event(&mut self, event: &str, fields: Value) -> Result<()> {
        self.start_line(event)?;
        if let Value::Object(m) = &fields {
            for (k, v) in m.iter().filter(|(k, _)| !IDENTITY_KEYS.contains(&k.as_str())) {
                self.line.push(b',');
                serde_json::to_writer(&mut self.line, k)?;
                self.line.push(b':');
                serde_json::to_writer(&mut self.line, v)?;
            }
        }
        self.finish_line()
    }

    /// Append one event whose fields are a struct (the per-call line): written
    /// straight from it, no JSON map in between. `T` must serialise to an
    /// object whose keys are not the identity keys (the host's own structs, tested).
    pub fn event_of<T: Serialize>(&mut self, event: &str, fields: &T) -> Result<()> {
        self.start_line(event)?;
        let at = self.line.len();
        serde_json::to_writer(&mut self.line, fields)?;
        match self.line.get(at..) {
            Some(b"{}") => self.line.truncate(at),
            Some([b'{', ..]) => self.line[at] = b',',
            _ => anyhow::bail!("audit event {event}: fields must be a JSON object"),
        }
        // Drop the struct's closing brace: `finish_line` closes the whole line.
        if self.line.last() == Some(&b'}') && self.line.len() > at {
            self.line.pop();
        }
        self.finish_line()
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
    use super::*;

    #[test]
    fn appends_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/log.jsonl");
        let mut log = AuditLog::open(&p, "r1", "essay").unwrap();
        log.event("budget_monitoring_start", serde_json::json!({"budget_limit": 0.1})).unwrap();
        drop(log);
        let mut log = AuditLog::open(&p, "r2", "essay").unwrap();
        log.event("llm_call", serde_json::json!({"cost": 0.01, "event": "spoofed", "run_id": "x"})).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "budget_monitoring_start");
        assert_eq!(lines[1]["run_id"], "r2");
        assert_eq!(lines[1]["event"], "llm_call", "fields cannot overwrite the event name");
        assert_eq!(lines[1]["agent_id"], "essay");
    }

    #[test]
    fn struct_events_are_the_same_json() {
        #[derive(serde::Serialize)]
        struct Call<'a> {
            operation: &'a str,
            cost_nanos: u64,
            cost: f64,
            anomalies: &'a [String],
        }
        #[derive(serde::Serialize)]
        struct Nothing {}
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        let mut log = AuditLog::open(&p, "r\"1", "essay").unwrap();
        log.event_of("llm_call", &Call { operation: "op \"quoted\"", cost_nanos: 3000, cost: 3e-6, anomalies: &["a".into()] }).unwrap();
        log.event_of("empty", &Nothing {}).unwrap();
        assert!(log.event_of("bad", &[1, 2]).is_err());
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            serde_json::json!({"timestamp": lines[0]["timestamp"], "event": "llm_call", "run_id": "r\"1", "agent_id": "essay",
                               "operation": "op \"quoted\"", "cost_nanos": 3000, "cost": 3e-6, "anomalies": ["a"]})
        );
        assert_eq!(lines[1].as_object().unwrap().len(), 4);
        assert!(text.starts_with("{\"timestamp\":\""), "identity first: {text}");
    }

    #[test]
    fn held_lines_are_written_together_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        let mut log = AuditLog::open(&p, "r", "a").unwrap();
        log.event("first", serde_json::json!({})).unwrap();
        log.hold();
        log.event("decision", serde_json::json!({"n": 1})).unwrap();
        log.event("call", serde_json::json!({"n": 2})).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 1, "held lines wait");
        log.release().unwrap();
        log.event("after", serde_json::json!({})).unwrap();
        log.hold();
        log.event("at-drop", serde_json::json!({})).unwrap();
        drop(log);
        let names: Vec<String> = std::fs::read_to_string(&p).unwrap().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].as_str().unwrap().to_string()).collect();
        assert_eq!(names, ["first", "decision", "call", "after", "at-drop"], "dropping the log writes what it held");
    }

    #[test]
    fn a_log_to_dev_null_syncs() {
        let mut log = AuditLog::open(Path::new("/dev/null"), "r", "a").unwrap();
        log.event("x", serde_json::json!({})).unwrap();
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
