//! `host resume` and `host inspect`: find and verify a checkpoint, rebuild the
//! run it came from, and refuse to guess when anything does not match.

use crate::budget::{fmt_usd, nanos_to_usd, parse_usd};
use crate::checkpoint::{self, Checkpoint};
use crate::cli::{ResumeArgs, RunArgs};
use crate::engine::sha256_hex;
use crate::run::{Console, RunConfig};
use crate::BadInput;
use std::path::{Path, PathBuf};

/// The checkpoint to resume from: the one named, or the newest in a directory.
/// A damaged newest file is never skipped silently: without `--fallback` this
/// fails, naming the damage and the older file it would use.
pub fn pick(args: &ResumeArgs, console: &Console) -> Result<(PathBuf, Checkpoint), BadInput> {
    if let Some(p) = &args.checkpoint {
        let c = Checkpoint::load(p).map_err(|e| BadInput(e.to_string()))?;
        return Ok((p.clone(), c));
    }
    let dir = args.latest.as_ref().expect("clap requires a checkpoint or --latest");
    let files = checkpoint::list(dir).map_err(|e| BadInput(format!("cannot list checkpoints in {}: {e}", dir.display())))?;
    if files.is_empty() {
        return Err(BadInput(format!("no checkpoints in {}", dir.display())));
    }
    let mut damaged: Vec<String> = Vec::new();
    for f in &files {
        match Checkpoint::load(f) {
            Ok(c) if damaged.is_empty() => {
                console.out(&format!("Newest checkpoint in {}: {}", dir.display(), f.display()));
                return Ok((f.clone(), c));
            }
            Ok(c) => {
                let what = damaged.join("; ");
                if !args.fallback {
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

/// Rebuild the run's config from the checkpoint's recorded settings plus the
/// resume command's overrides, after checking the agent is the same binary.
pub fn prepare(args: ResumeArgs) -> Result<RunConfig, BadInput> {
    let console = Console { json: args.json, quiet: args.quiet, ..Default::default() };
    let (path, ck) = pick(&args, &console)?;
    let mut run: RunArgs = serde_json::from_value(ck.header.settings.clone())
        .map_err(|e| BadInput(format!("checkpoint {} records settings this host cannot read: {e}", path.display())))?;

    // Every plugin must be the same binary that wrote the checkpoint.
    let plugins = std::iter::once(("agent", &ck.header.agent)).chain(ck.header.hooks.iter().map(|h| ("hook", h)));
    for (kind, p) in plugins {
        let bytes = std::fs::read(&p.path)
            .map_err(|e| BadInput(format!("cannot read the {kind} {} named by the checkpoint: {e}", p.path.display())))?;
        let sha = sha256_hex(&bytes);
        if sha != p.sha256 {
            let msg = format!(
                "the {kind} {} changed since the checkpoint (sha256 {}… now, {}… then)",
                p.path.display(),
                &sha[..12],
                &p.sha256[..12.min(p.sha256.len())]
            );
            if !args.force {
                return Err(BadInput(format!("{msg}: refusing to resume; pass --force to resume anyway")));
            }
            console.note(&format!("⚠️  {msg}: resuming anyway (--force)"));
        }
    }

    let spent = ck.budget.ledger.spent;
    let limit = match &args.budget {
        Some(b) => {
            let n = parse_usd(b).map_err(|e| BadInput(format!("--budget: {e}")))?;
            if n < spent {
                return Err(BadInput(format!("--budget {} is below the {} this run already spent", fmt_usd(n), fmt_usd(spent))));
            }
            n
        }
        None => ck.budget.ledger.limit,
    };
    run.budget = Some(format!("{}", nanos_to_usd(limit)));
    run.tier = None;
    if let Some(f) = args.fuel {
        run.fuel = Some(f);
    }
    if let Some(m) = args.max_cycles {
        run.max_cycles = m;
    }
    run.json = args.json;
    run.quiet = args.quiet;
    run.no_progress = args.no_progress;
    let mut cfg = run.into_config()?;
    // Exact nanos, not the decimal round trip of the flag.
    cfg.budget = limit;
    cfg.run_id = ck.header.run_id.clone();
    cfg.resume = Some(crate::run::Resume { path, checkpoint: ck });
    Ok(cfg)
}

pub fn inspect(path: &Path, json: bool) -> Result<(), BadInput> {
    let ck = Checkpoint::load(path).map_err(|e| BadInput(e.to_string()))?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let l = &ck.budget.ledger;
    if json {
        let v = serde_json::json!({
            "path": path, "bytes": size, "format": ck.header.format, "run_id": ck.header.run_id,
            "created": ck.header.created, "reason": ck.header.reason, "interrupt": ck.header.interrupt,
            "cycle": ck.cycle, "spent_usd": nanos_to_usd(l.spent), "spent_nanos": l.spent,
            "limit_usd": nanos_to_usd(l.limit), "limit_nanos": l.limit, "calls": l.calls,
            "fuel_used": ck.budget.fuel_used, "fuel_limit": ck.budget.fuel_limit,
            "cost_by_operation": crate::report::operations_detail(l),
            "agent": ck.header.agent, "hooks": ck.header.hooks,
            "agent_state_bytes": ck.agent_state.len(), "host_version": ck.header.host_version,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    println!("Checkpoint: {} ({size} bytes, format {})", path.display(), ck.header.format);
    println!("Run: {}", ck.header.run_id);
    println!("Created: {}", ck.header.created);
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
    println!("Agent: {} (sha256 {})", ck.header.agent.path.display(), ck.header.agent.sha256);
    println!("Agent state: {} bytes", ck.agent_state.len());
    for (h, s) in ck.header.hooks.iter().zip(&ck.hook_states) {
        println!("Hook: {} (sha256 {}…), state {} bytes", h.path.display(), &h.sha256[..12.min(h.sha256.len())], s.len());
    }
    println!();
    println!("{}", crate::report::breakdown(l));
    Ok(())
}
