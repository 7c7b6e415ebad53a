//! `host replay`: a tape -> its run, answered from the tape offline at $0.

use super::signals;
use budget_host::replay::ReplayRequest;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The tape (`host run --record TAPE`).
    pub tape: PathBuf,
    /// Run this agent instead of the tape's (which is checked against the sha256 the tape records).
    #[arg(long, value_name = "X.wasm")]
    pub agent: Option<PathBuf>,
    /// Give the agent this task instead of the tape's (the first request it changes stops the replay).
    #[arg(long)]
    pub task: Option<String>,
    /// Audit log (JSON lines) [default: .host/replays/<agent>/budget_monitoring.jsonl].
    #[arg(long)]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub shown: super::run::ConsoleArgs,
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<i32> {
    let console = args.shown.console();
    let req = ReplayRequest { tape: args.tape.clone(), agent: args.agent.clone(), task: args.task.clone(), seal_key: budget_host::checkpoint::seal_key_from_env() };
    let (spec, tape) = budget_host::replay::prepare(&req, &console)?;
    let host = super::host(args.shown.no_cache)?;
    let stop = budget_host::interrupt::StopSignal::new();
    let mut opts = budget_host::replay::options(&spec, tape, &args.tape).console(console.clone()).stop(stop.clone());
    opts.log = args.log.clone();
    signals::watch(stop, console);
    super::run::finish(&host, spec, opts, &[]).await
}
