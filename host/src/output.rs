//! A run's output: its audit log and its console, shared by the agent's
//! store, its hooks' stores and the loop. An audit line that cannot be
//! written is reported once and stops the run (an unaudited spend is not
//! acceptable); warnings raised inside a step wait for its `CYCLE n:` line.

use crate::audit::{AuditLog, Event};
use crate::console::Console;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The audit log and console of one run.
pub struct Output {
    audit: Mutex<AuditLog>,
    failed: AtomicBool,
    /// Human output.
    pub console: Console,
    deferred: Mutex<Vec<String>>,
}

impl Output {
    /// Output to an open log and a console.
    pub fn new(audit: AuditLog, console: Console) -> Output {
        Output { audit: Mutex::new(audit), failed: AtomicBool::new(false), console, deferred: Mutex::new(Vec::new()) }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, AuditLog> {
        self.audit.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, r: anyhow::Result<()>) {
        if let Err(e) = r {
            if !self.failed.swap(true, Ordering::SeqCst) {
                self.console.error(&format!("{e:#}"));
            }
        }
    }

    /// Append one event.
    pub fn event(&self, e: &Event<'_>) {
        let r = self.log().write(e);
        self.check(r);
    }

    /// Hold the following events until [`Output::release`] (one call's lines, one write).
    pub fn hold(&self) {
        self.log().hold();
    }

    /// Write what was held.
    pub fn release(&self) {
        let r = self.log().release();
        self.check(r);
    }

    /// Make the log durable.
    pub fn sync(&self) {
        let r = self.log().sync();
        self.check(r);
    }

    /// Whether an audit line could not be written (the run must stop).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// A warning printed after the current cycle's line.
    pub fn defer_warning(&self, line: String) {
        self.deferred.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }

    /// Print the warnings a step raised.
    pub fn flush_warnings(&self) {
        for line in self.deferred.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            self.console.warn(&line);
        }
    }
}

/// Longest plugin log message or event kept; the rest is cut (guests are strangers).
pub const MAX_LOG_MESSAGE: usize = 4096;

fn clip(s: &str) -> &str {
    if s.len() <= MAX_LOG_MESSAGE {
        return s;
    }
    let mut end = MAX_LOG_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A plugin's `log.log`: to the console (not debug) and the audit log.
pub fn plugin_log(out: &Output, who: &str, level: crate::bindings::types::Level, message: &str) {
    use crate::bindings::types::Level;
    let level = match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    };
    let message = clip(message);
    if level != "debug" {
        out.console.note(&format!("[{who}] {level}: {message}"));
    }
    out.event(&Event::PluginLog(crate::audit::events::PluginLog { plugin: who.into(), level: level.into(), message: message.into() }));
}

/// A plugin's `log.emit`: a JSON object for the audit log (anything else is kept as text).
pub fn plugin_event(out: &Output, who: &str, event: &str, data: &str) {
    let data = match serde_json::from_str::<serde_json::Value>(clip(data)) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => serde_json::json!({"invalid_data": clip(data)}),
    };
    out.event(&Event::PluginEvent(crate::audit::events::PluginEvent { plugin: who.into(), name: clip(event).into(), data }));
}
