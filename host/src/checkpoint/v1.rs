//! Format 1 checkpoints (host 0.1): the header held the command line's
//! settings (`RunArgs` as JSON) instead of a `RunSpec`. They are read and
//! migrated: what defines the run is taken over; what a stored file may not
//! choose (provider URL, Ollama host, model file, log, checkpoint directory,
//! ledger URL, lock file, price file) is dropped, so the resume takes it from
//! its own flags and environment.

use super::{BudgetRecord, Header};
use crate::spec::{HookSpec, PluginPin, ProviderKind, RunSpec};
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginRef {
    path: PathBuf,
    sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderV1 {
    #[allow(dead_code)]
    kind: String,
    #[allow(dead_code)]
    format: u32,
    run_id: String,
    created: String,
    reason: String,
    interrupt: Option<crate::interrupt::Interrupt>,
    agent: PluginRef,
    hooks: Vec<PluginRef>,
    host_version: String,
    settings: Value,
}

fn text<'v>(s: &'v Value, k: &str) -> Option<&'v str> {
    s.get(k).and_then(Value::as_str)
}

fn num(s: &Value, k: &str) -> Option<u64> {
    s.get(k).and_then(Value::as_u64)
}

/// The format 2 header of a format 1 file, and its hooks' names by position.
pub fn header(line: &[u8], budget: &BudgetRecord) -> Result<(Header, Vec<String>), String> {
    let h: HeaderV1 = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let s = &h.settings;
    let bad = |what: &str, e: String| format!("format 1 settings: {what}: {e}");
    let mut b = RunSpec::builder(h.agent.path.clone()).budget_nanos(budget.ledger.limit);
    if let Some(t) = text(s, "task") {
        b = b.task(t);
    }
    if let Some(n) = num(s, "max_cycles") {
        b = b.max_cycles(n.min(u32::MAX as u64) as u32);
    }
    let provider = match text(s, "provider").unwrap_or("local") {
        "local" => ProviderKind::Local,
        "openai" => ProviderKind::Openai,
        "ollama" => ProviderKind::Ollama,
        "scripted" => ProviderKind::Scripted,
        other => return Err(bad("provider", format!("'{other}' is not known"))),
    };
    b = b.provider(provider);
    if let Some(m) = text(s, "model") {
        b = b.model(m);
    }
    if let Some(p) = text(s, "script") {
        b = b.script(p);
    }
    b = b.warn(&ledger_thresholds(budget));
    b = b.fuel(num(s, "fuel"));
    if let Some(mb) = num(s, "memory_mb") {
        b = b.memory_mb(mb);
    }
    if let Some(t) = text(s, "timeout") {
        b = b.timeout(Some(crate::spec::parse_duration(t).map_err(|e| bad("timeout", e.0))?));
    }
    if text(s, "mode") == Some("immediate") {
        b = b.mode(crate::interrupt::Mode::Immediate);
    }
    if let Some(n) = num(s, "max_tokens") {
        b = b.max_tokens(n.min(u32::MAX as u64) as u32);
    }
    if let Some(n) = num(s, "min_output_tokens") {
        b = b.min_output_tokens(n.min(u32::MAX as u64) as u32);
    }
    b = b.temperature(s.get("temperature").and_then(Value::as_f64).map(|t| t as f32));
    b = b.request_limits(
        num(s, "max_request_bytes").map_or(crate::spec::DEFAULT_MAX_REQUEST_BYTES, |n| n as usize),
        num(s, "max_messages").map_or(crate::spec::DEFAULT_MAX_MESSAGES, |n| n as usize),
    );
    if let Some(mb) = num(s, "max_snapshot_mb") {
        b = b.max_snapshot_mb(mb);
    }
    b = b.checkpoints(
        num(s, "checkpoint_every").unwrap_or(5).min(u32::MAX as u64) as u32,
        num(s, "retain").unwrap_or(20).clamp(1, u32::MAX as u64) as u32,
        !s.get("no_checkpoint_on_interrupt").and_then(Value::as_bool).unwrap_or(false),
    );
    b = b.hook_limits(
        num(s, "hook_fuel").unwrap_or(50_000_000),
        std::time::Duration::from_millis(num(s, "hook_timeout_ms").unwrap_or(1000)),
        num(s, "hook_memory_mb").unwrap_or(64),
    );
    if text(s, "hook_failure") == Some("open") {
        b = b.hook_failure(crate::spec::FailurePolicy::Open);
    }
    if let Some(l) = text(s, "lease") {
        b = b.lease(crate::spec::parse_duration(l).map_err(|e| bad("lease", e.0))?);
    }
    // Hooks: the settings gave `FILE[=CONFIG]` in order, the header their pins.
    let configs: Vec<String> = s.get("hooks").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect()).unwrap_or_default();
    let mut names = Vec::new();
    for (i, pin) in h.hooks.iter().enumerate() {
        let config = configs.get(i).and_then(|c| c.split_once(".wasm=").map(|(_, c)| c.to_string())).unwrap_or_default();
        let stem = crate::spec::stem(&pin.path);
        // Format 1 named hooks by file stem; two of one stem get a number.
        let mut name = stem.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{stem}-{n}");
            n += 1;
        }
        names.push(name.clone());
        b = b.hook(HookSpec { name, plugin: PluginPin { path: pin.path.clone(), sha256: Some(pin.sha256.clone()), by: None }, config });
    }
    let mut spec = b.build().map_err(|e| bad("run", e.0))?;
    spec.agent.sha256 = Some(h.agent.sha256);
    let header = Header {
        format: 1,
        run_id: h.run_id,
        created: h.created,
        reason: h.reason,
        interrupt: h.interrupt,
        host_version: h.host_version,
        spec,
        journal: None,
    };
    Ok((header, names))
}

/// The warning thresholds a format 1 ledger recorded.
fn ledger_thresholds(budget: &BudgetRecord) -> Vec<f64> {
    budget.ledger.thresholds.iter().copied().filter(|t| t.is_finite() && *t > 0.0 && *t <= 1.0).collect()
}
