//! `host resume`: a checkpoint (or a team manifest) -> the run it holds, with
//! this invocation's endpoints, keys and output places.

use super::run::{EndpointArgs, OutputArgs};
use super::signals;
use budget_host::budget::parse_usd;
use budget_host::resume::ResumeRequest;
use budget_host::{BadInput, RunOptions};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// The checkpoint to continue from (.jsonl.gz), or a team's manifest (team_manifest.json).
    #[arg(required_unless_present = "latest", conflicts_with = "latest")]
    pub checkpoint: Option<PathBuf>,
    /// Pick the newest checkpoint in this directory.
    #[arg(long, value_name = "DIR")]
    pub latest: Option<PathBuf>,
    /// With --latest: if the newest checkpoint is damaged, use the newest valid older one.
    #[arg(long, requires = "latest")]
    pub fallback: bool,
    /// New total limit in USD (must be at least what was already spent); default: the old limit.
    #[arg(long, allow_hyphen_values = true)]
    pub budget: Option<String>,
    /// New fuel limit for the whole run (must be above what was already used).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// New --max-cycles.
    #[arg(long)]
    pub max_cycles: Option<u32>,
    /// Resume even though a plugin's bytes changed since the checkpoint.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn resume(args: ResumeArgs) -> anyhow::Result<i32> {
    let budget = args.budget.as_deref().map(parse_usd).transpose().map_err(|e| BadInput(format!("--budget: {e}")))?;
    let seal_key = budget_host::checkpoint::seal_key_from_env();
    let console = args.output.console();
    let stop = budget_host::interrupt::StopSignal::new();
    if let Some(manifest) = args.checkpoint.as_ref().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        return resume_team(&args, manifest, budget, seal_key).await;
    }
    let req = ResumeRequest {
        checkpoint: args.checkpoint.clone(),
        latest: args.latest.clone(),
        fallback: args.fallback,
        budget,
        fuel: args.fuel,
        max_cycles: args.max_cycles,
        force: args.force,
        seal_key: seal_key.clone(),
        journal: None,
    };
    let (mut spec, point) = budget_host::resume::prepare(&req, &console)?;
    let endpoints = args.endpoints.endpoints()?;
    let provider = budget_host::llm::connect(&mut spec, &endpoints).map_err(BadInput)?;
    // Output goes next to the checkpoint unless this invocation says otherwise.
    let dir = args.output.checkpoint_dir.clone().unwrap_or_else(|| point.path.parent().map(PathBuf::from).unwrap_or_default());
    let log = args.output.log.clone().unwrap_or_else(|| dir.join("budget_monitoring.jsonl"));
    console.note(&format!(
        "↩️  This resume uses: provider {} ({}), log {}, checkpoints in {}",
        spec.provider.as_str(),
        provider.describe(),
        log.display(),
        dir.display()
    ));
    let host = super::host(args.output.shown.no_cache)?;
    let journal = args.output.journal(&dir)?;
    let mut opts = RunOptions::new(provider).console(console.clone()).stop(stop.clone()).checkpoint_dir(dir).log(log);
    opts.journal = journal;
    opts.seal_key = seal_key;
    opts.shared = super::run::shared_ledger(args.output.ledger.as_deref(), spec.budget, spec.lease).await?;
    opts.resume = Some(point);
    signals::watch(stop, console);
    super::run::finish(&host, spec, opts, &[]).await
}

async fn resume_team(args: &ResumeArgs, manifest: &std::path::Path, budget: Option<u64>, seal_key: Option<Vec<u8>>) -> anyhow::Result<i32> {
    let console = args.output.console();
    let stop = budget_host::interrupt::StopSignal::new();
    let dir = args.output.checkpoint_dir.clone().unwrap_or_else(|| manifest.parent().map(PathBuf::from).unwrap_or_default());
    // The provider is the team's: connect it for the spec of any member (they share it).
    let endpoints = args.endpoints.endpoints()?;
    let text = std::fs::read_to_string(manifest).map_err(|e| BadInput(format!("cannot read {}: {e}", manifest.display())))?;
    let first_ck: PathBuf = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["agents"].as_array()?.iter().find_map(|a| a["checkpoint"].as_str().map(PathBuf::from)))
        .ok_or_else(|| BadInput(format!("{} names no checkpoint to resume from", manifest.display())))?;
    let mut spec = budget_host::checkpoint::Checkpoint::load(&first_ck, seal_key.as_deref()).map_err(|e| BadInput(e.to_string()))?.header.spec;
    let provider = budget_host::llm::connect(&mut spec, &endpoints).map_err(BadInput)?;
    let mut base = RunOptions::new(provider).console(console.clone()).stop(stop.clone());
    base.seal_key = seal_key;
    base.journal = args.output.journal(&dir)?;
    signals::watch(stop, console);
    let host = super::host(args.output.shown.no_cache)?;
    let shared = match budget {
        Some(total) => super::run::shared_ledger(args.output.ledger.as_deref(), total, spec.lease).await?,
        None => None,
    };
    let opts = budget_host::team::TeamOptions { base, dir, log: args.output.log.clone(), shared, json: args.output.shown.json };
    budget_host::team::resume_team(&host, manifest, budget, args.force, opts).await
}
