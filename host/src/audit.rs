//! The audit log: one JSON object per line, complete on disk once written.
//!
//! Field names follow the seed's log (`timestamp`, `event`, `budget_limit`,
//! `agent_id`, `total_cost`, ...). Money appears twice: as USD floats for
//! people and as integer `*_nanos` for tools that must agree to the nano-dollar.

use anyhow::{Context, Result};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct AuditLog {
    file: File,
    path: PathBuf,
    run_id: String,
    agent_id: String,
}

pub fn timestamp() -> String {
    chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
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
        Ok(AuditLog { file, path: path.to_path_buf(), run_id: run_id.into(), agent_id: agent_id.into() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one event. `fields` must be a JSON object. One `write` per line,
    /// so a crash leaves at worst a missing line, never half of one followed by more.
    pub fn event(&mut self, event: &str, fields: Value) -> Result<()> {
        let mut line = Map::new();
        if let Value::Object(m) = fields {
            line.extend(m);
        }
        // Inserted last: a field can never overwrite the line's identity.
        line.insert("timestamp".into(), Value::String(timestamp()));
        line.insert("event".into(), Value::String(event.into()));
        line.insert("run_id".into(), Value::String(self.run_id.clone()));
        line.insert("agent_id".into(), Value::String(self.agent_id.clone()));
        let mut text = serde_json::to_string(&Value::Object(line))?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .with_context(|| format!("cannot write audit log {}", self.path.display()))
    }

    /// Make everything written so far durable (at the end and on interrupts).
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().with_context(|| format!("cannot sync audit log {}", self.path.display()))
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
}
