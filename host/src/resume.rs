//! `host resume` and `host inspect`: find and verify a checkpoint, restore
//! the run it holds, and refuse to guess when anything does not match.
//!
//! The checkpoint gives the whole [`RunSpec`] (its plugins pinned to the
//! sha256 they had); the resume gives only what may change: a higher budget,
//! more fuel or cycles, and `--force` past a changed plugin. Where output
//! goes, the provider's endpoint and keys come from the resume's own flags
//! and environment, never from the file.

use crate::budget::{fmt_usd, nanos_to_usd, Nanos};
use crate::checkpoint::{self, Checkpoint};
use crate::console::Console;
use crate::engine::sha256_hex;
use crate::run::ResumePoint;
use crate::spec::RunSpec;
use crate::BadInput;
use std::path::{Path, PathBuf};

/// Which checkpoint to resume and what may change.
#[derive(Debug, Clone, Default)]
pub struct ResumeRequest {
    /// A checkpoint file.
    pub checkpoint: Option<PathBuf>,
    /// Or the newest checkpoint in this directory.
    pub latest: Option<PathBuf>,
    /// With `latest`: skip a damaged newest file for the newest valid one.
    pub fallback: bool,
    /// A new total limit (at least what was spent).
    pub budget: Option<Nanos>,
    /// A new fuel limit for the whole run.
    pub fuel: Option<u64>,
    /// A new cycle limit.
    pub max_cycles: Option<u32>,
    /// Resume although a plugin changed since the checkpoint.
    pub force: bool,
    /// The key of the keyed seal, when set: the checkpoint must carry a matching seal.
    pub seal_key: Option<Vec<u8>>,
    /// The call journal to reconcile (default: `calls.journal` beside the checkpoint).
    pub journal: Option<PathBuf>,
}

/// The checkpoint to resume from: the one named, or the newest in a directory.
/// A damaged newest file is never skipped silently: without `fallback` this
/// fails, naming the damage and the older file it would use.
pub fn pick(req: &ResumeRequest, console: &Console) -> Result<(PathBuf, Checkpoint), BadInput> {
    let key = req.seal_key.as_deref();
    if let Some(p) = &req.checkpoint {
        let c = Checkpoint::load(p, key).map_err(|e| BadInput(e.to_string()))?;
        return Ok((p.clone(), c));
    }
    let dir = req.latest.as_ref().ok_or_else(|| BadInput("name a checkpoint or --latest DIR".into()))?;
    let files = checkpoint::list(dir).map_err(|e| BadInput(format!("cannot list checkpoints in {}: {e}", dir.display())))?;
    if files.is_empty() {
        return Err(BadInput(format!("no checkpoints in {}", dir.display())));
    }
    let mut damaged: Vec<String> = Vec::new();
    for f in &files {
        match Checkpoint::load(f, key) {
            Ok(c) if damaged.is_empty() => {
                console.out(&format!("Newest checkpoint in {}: {}", dir.display(), f.display()));
                return Ok((f.clone(), c));
            }
            Ok(c) => {
                let what = damaged.join("; ");
                if !req.fallback {
                    return Err(BadInput(format!(
                        "the newest checkpoint is damaged ({what}); the newest valid one is {}: pass --fallback to resume from it",
                        f.display()
                    )));
                }
                console.out(&format!("⚠️  Skipping damaged checkpoint(s): {what}"));
                console.out(&format!("   Resuming from the newest valid one: {}", f.display()));
                return Ok((f.clone(), c));
            }
            Err(e) => damaged.push(e.to_string()),
        }
    }
    Err(BadInput(format!("no valid checkpoint in {}: {}", dir.display(), damaged.join("; "))))
}

/// The run a checkpoint holds, with the request's changes: its spec and the
/// point to resume from. Every plugin must still be the binary that wrote it.
pub fn prepare(req: &ResumeRequest, console: &Console) -> Result<(RunSpec, ResumePoint), BadInput> {
    let (path, ck) = pick(req, console)?;
    let mut spec = ck.header.spec.clone();
    for p in spec.plugins() {
        let Some(want) = &p.sha256 else { continue };
        if p.by.is_some() {
            // The user's own pin: the host refuses a mismatch when it loads the file, naming it.
            continue;
        }
        let bytes = std::fs::read(&p.path).map_err(|e| BadInput(format!("cannot read {} named by the checkpoint: {e}", p.path.display())))?;
        let sha = sha256_hex(&bytes);
        if sha != *want {
            let msg = format!("{} changed since the checkpoint (sha256 {}… now, {}… then)", p.path.display(), &sha[..12], &want[..12.min(want.len())]);
            if !req.force {
                return Err(BadInput(format!("{msg}: refusing to resume; pass --force to resume anyway")));
            }
            console.note(&format!("⚠️  {msg}: resuming anyway (--force)"));
        }
    }
    // --force overrides the checkpoint's own record of a plugin, never the user's pin.
    if req.force {
        for p in std::iter::once(&mut spec.agent).chain(spec.hooks.iter_mut().map(|h| &mut h.plugin)) {
            if p.by.is_none() {
                p.sha256 = None;
            }
        }
    }
    let journal_path = req.journal.clone().unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).join(crate::journal::FILE));
    let (records, torn) = crate::journal::read(&journal_path).map_err(|e| BadInput(e.to_string()))?;
    if let Some(why) = torn {
        console.note(&format!("⚠️  {}: {why}", journal_path.display()));
    }
    let from = ck.header.journal.as_ref().map_or(0, |j| j.next_seq);
    let journal = crate::journal::reconcile::reconcile(&records, &ck.header.run_id, from);
    // Spent: the checkpoint's, and what the journal says was spent after it.
    let spent = ck.budget.ledger.spent.saturating_add(journal.spent());
    if let Some(n) = req.budget {
        if n < spent {
            return Err(BadInput(format!("--budget {} is below the {} this run already spent", fmt_usd(n), fmt_usd(spent))));
        }
        spec.budget = n;
    } else {
        spec.budget = ck.budget.ledger.limit.max(spent);
    }
    if req.fuel.is_some() {
        spec.limits.fuel = req.fuel;
    }
    if let Some(m) = req.max_cycles {
        spec.limits.max_cycles = m;
    }
    Ok((spec, ResumePoint { path, checkpoint: ck, journal }))
}

/// What `host inspect` shows: the checkpoint, and everything a resume would take from it.
pub fn inspect(path: &Path, json: bool, key: Option<&[u8]>) -> Result<(), BadInput> {
    let ck = Checkpoint::load(path, key).map_err(|e| BadInput(e.to_string()))?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let l = &ck.budget.ledger;
    let spec = &ck.header.spec;
    if json {
        let v = serde_json::json!({
            "path": path, "bytes": size, "format": ck.header.format, "run_id": ck.header.run_id,
            "created": ck.header.created, "reason": ck.header.reason, "interrupt": ck.header.interrupt,
            "cycle": ck.cycle, "spent_usd": nanos_to_usd(l.spent), "spent_nanos": l.spent,
            "limit_usd": nanos_to_usd(l.limit), "limit_nanos": l.limit, "calls": l.calls,
            "fuel_used": ck.budget.fuel_used, "fuel_limit": ck.budget.fuel_limit,
            "cost_by_operation": crate::report::operations_detail(l),
            "agent": spec.agent, "hooks": spec.hooks,
            "hook_states": ck.hook_states.iter().map(|(n, s)| serde_json::json!({"name": n, "bytes": s.len()})).collect::<Vec<_>>(),
            "agent_state_bytes": ck.agent_state.len(), "host_version": ck.header.host_version,
            "spec": spec, "sealed": key.is_some(),
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    println!("Checkpoint: {} ({size} bytes, format {})", path.display(), ck.header.format);
    println!("Run: {}", ck.header.run_id);
    println!("Created: {} by host {}", ck.header.created, ck.header.host_version);
    match &ck.header.interrupt {
        Some(i) => println!("Reason: {} ({} {}: {})", ck.header.reason, i.source.as_str(), i.mode.as_str(), i.message),
        None => println!("Reason: {}", ck.header.reason),
    }
    println!("Cycles completed: {}", ck.cycle);
    println!("Spent: {} / {} ({:.1}%), {} calls", fmt_usd(l.spent), fmt_usd(l.limit), crate::report::percent(l.spent, l.limit), l.calls);
    match ck.budget.fuel_limit {
        Some(f) => println!("Fuel: {} used of {f}", ck.budget.fuel_used),
        None => println!("Fuel: {} used", ck.budget.fuel_used),
    }
    println!("Agent state: {} bytes", ck.agent_state.len());
    println!();
    println!("A resume takes from this file (files to read, each checked against its sha256):");
    let pin = |p: &crate::spec::PluginPin| format!("{} (sha256 {})", p.path.display(), p.sha256.as_deref().unwrap_or("not pinned"));
    println!("  Agent: {} as '{}'", pin(&spec.agent), spec.agent_name);
    for (h, (_, s)) in spec.hooks.iter().zip(&ck.hook_states) {
        println!("  Hook '{}': {}, config {:?}, state {} bytes", h.name, pin(&h.plugin), h.config, s.len());
    }
    if let Some(s) = &spec.script {
        println!("  Script: {}", pin(s));
    }
    println!("  Provider: {} (its endpoint and key come from the resume's flags and environment)", spec.provider.as_str());
    println!("  Model: {}; task: {:?}", spec.model, spec.task);
    println!("  Limits: {} cycles, fuel {}, memory {} MiB, timeout {}", spec.limits.max_cycles, spec.limits.fuel.map_or("none".into(), |f| f.to_string()), spec.limits.memory_bytes >> 20, spec.limits.timeout.map_or("none".into(), |t| format!("{t:?}")));
    println!("  It names no endpoint, key, ledger URL or file to write: the log and checkpoints go to the checkpoint's directory unless the resume says otherwise.");
    println!(
        "  Integrity: sha256 trailer (detects damage, not a forger){}",
        if key.is_some() { "; keyed seal verified" } else { "; keyed seal not checked (set BUDGET_HOST_SEAL_KEY)" }
    );
    println!();
    println!("{}", crate::report::breakdown(l));
    Ok(())
}
