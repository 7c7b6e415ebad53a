//! A run's output: its audit log and its console, shared by the agent's
//! store, its hooks' stores and the loop. An audit line that cannot be
//! written is reported once and stops the run (an unaudited spend is not
//! acceptable); warnings raised inside a step wait for its `CYCLE n:` line.

use crate::audit::{AuditLog, Event};
use crate::console::Console;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Bytes of `log.log` / `log.emit` one plugin may put in the audit log per run.
pub const PLUGIN_LOG_BYTES: u64 = 4 << 20;
/// Its sustained rate, events per second, after a burst of [`PLUGIN_LOG_BURST`].
pub const PLUGIN_LOG_RATE: f64 = 100.0;
/// The burst allowed before the rate applies.
pub const PLUGIN_LOG_BURST: f64 = 1000.0;

/// One plugin's allowance of log events: a byte budget for the run and a
/// token bucket for the rate. A guest looping on `log.log` cannot fill the
/// disk or drown the money lines.
struct Allowance {
    bytes_left: u64,
    tokens: f64,
    at: Instant,
    dropped: u64,
}

impl Allowance {
    fn new() -> Allowance {
        Allowance { bytes_left: PLUGIN_LOG_BYTES, tokens: PLUGIN_LOG_BURST, at: Instant::now(), dropped: 0 }
    }

    /// Whether an event of `bytes` may be written now.
    fn take(&mut self, bytes: u64, now: Instant) -> bool {
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * PLUGIN_LOG_RATE).min(PLUGIN_LOG_BURST);
        self.at = now;
        if self.tokens < 1.0 || bytes > self.bytes_left {
            self.dropped += 1;
            return false;
        }
        self.tokens -= 1.0;
        self.bytes_left -= bytes;
        true
    }
}

/// The audit log and console of one run.
pub struct Output {
    audit: Mutex<AuditLog>,
    failed: AtomicBool,
    /// Human output.
    pub console: Console,
    deferred: Mutex<Vec<String>>,
    allowances: Mutex<HashMap<String, Allowance>>,
}

impl Output {
    /// Output to an open log and a console.
    pub fn new(audit: AuditLog, console: Console) -> Output {
        Output { audit: Mutex::new(audit), failed: AtomicBool::new(false), console, deferred: Mutex::new(Vec::new()), allowances: Mutex::new(HashMap::new()) }
    }

    /// Whether `who` may log an event of `bytes` now. The first refusal, and
    /// every 1000th after it, says so in the log and on the console.
    fn allow_plugin(&self, who: &str, bytes: u64) -> bool {
        let (ok, dropped) = {
            let mut map = self.allowances.lock().unwrap_or_else(|p| p.into_inner());
            let a = map.entry(who.to_string()).or_insert_with(Allowance::new);
            (a.take(bytes, Instant::now()), a.dropped)
        };
        if !ok && dropped % 1000 == 1 {
            let message = format!(
                "{who} logs past its allowance ({} events a second after a burst of {}, {} MiB a run): {dropped} event(s) dropped so far",
                PLUGIN_LOG_RATE, PLUGIN_LOG_BURST, PLUGIN_LOG_BYTES >> 20
            );
            self.console.note(&format!("⚠️  {message}"));
            self.event(&Event::PluginLog(crate::audit::events::PluginLog { plugin: "host".into(), level: "warn".into(), message: message.into() }));
        }
        ok
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
    if !out.allow_plugin(who, message.len() as u64) {
        return;
    }
    if level != "debug" {
        out.console.note(&format!("[{who}] {level}: {message}"));
    }
    out.event(&Event::PluginLog(crate::audit::events::PluginLog { plugin: who.into(), level: level.into(), message: message.into() }));
}

/// A plugin's `log.emit`: a JSON object for the audit log (anything else is kept as text).
pub fn plugin_event(out: &Output, who: &str, event: &str, data: &str) {
    if !out.allow_plugin(who, (clip(event).len() + clip(data).len()) as u64) {
        return;
    }
    let data = match serde_json::from_str::<serde_json::Value>(clip(data)) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => serde_json::json!({"invalid_data": clip(data)}),
    };
    out.event(&Event::PluginEvent(crate::audit::events::PluginEvent { plugin: who.into(), name: clip(event).into(), data }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_plugins_log_is_bounded_in_rate_and_bytes() {
        let t0 = Instant::now();
        let mut a = Allowance::new();
        let burst = (0..5000).filter(|_| a.take(10, t0)).count();
        assert_eq!(burst, PLUGIN_LOG_BURST as usize, "a burst, then nothing at the same instant");
        assert!(a.take(10, t0 + Duration::from_millis(20)), "the rate refills");
        let mut a = Allowance::new();
        let big = MAX_LOG_MESSAGE as u64;
        let mut t = t0;
        let mut kept = 0u64;
        for _ in 0..100_000 {
            t += Duration::from_millis(10);
            if a.take(big, t) {
                kept += big;
            }
        }
        assert!(kept <= PLUGIN_LOG_BYTES, "{kept}");
        assert!(kept > PLUGIN_LOG_BYTES - big, "the byte budget is used, not wasted: {kept}");
    }
}
