//! `host replay`: a tape -> the run it recorded, every call answered from
//! the tape at $0 with no provider and no network. Strict: the first request
//! that differs from the tape's next one stops the run (exit 9), and so does
//! a run that ends otherwise than the recording.
//!
//! The tape gives the agent's path (a file to read, checked against the
//! sha256 it records) and the settings that shape what the agent asks; the
//! invocation may name another agent (`--agent`) or task (`--task`), to see
//! whether it still asks the same. Where the log goes comes from the invocation, never the tape.

use crate::budget::PriceTable;
use crate::console::Console;
use crate::llm::offline::Offline;
use crate::spec::{PluginPin, RunSpec};
use crate::tape::Tape;
use crate::{BadInput, RunOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which tape to replay, with which agent.
#[derive(Debug, Clone, Default)]
pub struct ReplayRequest {
    /// The tape.
    pub tape: PathBuf,
    /// The agent to run instead of the tape's own.
    pub agent: Option<PathBuf>,
    /// The task to give instead of the tape's (what if the agent were asked this?).
    pub task: Option<String>,
    /// The key of the keyed seal, when set: the tape must carry a matching seal.
    pub seal_key: Option<Vec<u8>>,
}

/// The tape, verified, and the spec that replays it.
pub fn prepare(req: &ReplayRequest, console: &Console) -> Result<(RunSpec, Tape), BadInput> {
    let tape = Tape::load(&req.tape, req.seal_key.as_deref()).map_err(|e| BadInput(e.to_string()))?;
    let h = &tape.header;
    let pin = match &req.agent {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| BadInput(format!("cannot read agent {}: {e}", path.display())))?;
            if crate::engine::sha256_hex(&bytes) != h.agent.sha256 {
                console.note(&format!(
                    "🎞️  {} is not the agent the tape recorded ({}, sha256 {}…): the first request it asks differently stops the replay",
                    path.display(),
                    h.agent.path.display(),
                    &h.agent.sha256[..12]
                ));
            }
            PluginPin::file(path)
        }
        None => {
            if let Err(e) = std::fs::metadata(&h.agent.path) {
                return Err(BadInput(format!("the tape's agent {} cannot be read ({e}); name it with --agent FILE", h.agent.path.display())));
            }
            PluginPin { path: h.agent.path.clone(), sha256: Some(h.agent.sha256.clone()), by: Some(format!("the tape {}", req.tape.display())) }
        }
    };
    let s = &h.settings;
    // Nothing a replay answers is paid: the tape's model is priced $0 (the banner says FREE).
    let mut free = serde_json::Map::new();
    free.insert(s.model.clone(), serde_json::json!({"input": 0.0, "output": 0.0}));
    let prices = PriceTable::default()
        .with_overrides(&req.tape.display().to_string(), &serde_json::Value::Object(free).to_string())
        .map_err(|e| BadInput(format!("tape {}: its model cannot be priced: {e}", req.tape.display())))?;
    let mut spec = RunSpec::builder(&pin.path)
        .prices(prices)
        .task(req.task.as_deref().unwrap_or(&s.task))
        .model(&s.model)
        .budget_nanos(s.budget_nanos)
        .max_cycles(s.max_cycles)
        .max_tokens(s.max_tokens)
        .temperature(s.temperature)
        .fuel(s.fuel)
        .memory_mb((s.memory_bytes >> 20) as u64)
        .mode(s.mode)
        .checkpoints(0, 1, false)
        .build()
        .map_err(|e| BadInput(format!("tape {}: its settings cannot run: {e}", req.tape.display())))?;
    spec.agent = pin;
    Ok((spec, tape))
}

/// Options for replaying `tape` (read from `path`) with `spec`: the offline
/// provider, the recorded run id, the log under `.host/replays/<agent>`.
pub fn options(spec: &RunSpec, tape: Tape, path: &Path) -> RunOptions {
    let mut o = RunOptions::new(Arc::new(Offline::new(path))).checkpoint_dir(Path::new(".host/replays").join(&spec.agent_name));
    o.run_id = Some(tape.header.run_id.clone());
    o.replay = Some(tape);
    o
}
