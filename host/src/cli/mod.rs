//! The command line: the only clap code, the top of the house. Flags are
//! turned once into the library's types (`RunSpec`, `RunOptions`,
//! `ResumeRequest`, `ReplayRequest`); the verbs below never see clap.

mod replay;
mod resume;
mod run;
mod signals;

use budget_host::interrupt::exit;
use budget_host::{BadInput, Host};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "host", version, about = "Run WebAssembly LLM agents under a hard USD budget", args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an agent component under a budget.
    Run(run::RunArgs),
    /// Say whether a .wasm is an agent or a hook, and whether this host can run it.
    Validate { file: PathBuf },
    /// Continue a run from a checkpoint (or a team from its manifest).
    Resume(resume::ResumeArgs),
    /// Run an agent offline against a tape (`run --record`): every call answered from it at $0; exit 9 where it diverges.
    Replay(replay::ReplayArgs),
    /// Show what a checkpoint holds, and what a resume would take from it.
    Inspect {
        checkpoint: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the cost breakdown of an audit log (a run, its resumes, several runs); --html writes a page with charts.
    Report(ReportArgs),
    /// Write a lock file of the plugins' sha256, for `run --lock` (refuses any plugin whose bytes change).
    Lock {
        /// The plugin components (.wasm) to pin.
        #[arg(required = true)]
        plugins: Vec<PathBuf>,
        /// Write the lock here (paths in it relative to its directory) instead of printing it.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Compile a component ahead of time into the cache (tied to this host build and machine).
    Precompile { file: PathBuf },
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The audit log (JSON lines), e.g. .host/checkpoints/<agent>/budget_monitoring.jsonl.
    pub log: PathBuf,
    /// Print the numbers as JSON (money also in exact nano-USD).
    #[arg(long)]
    pub json: bool,
    /// Write a self-contained HTML page with charts and every call.
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
    /// Only the run with this id.
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
}

/// A host with the cache in its default place, or none.
fn host(no_cache: bool) -> anyhow::Result<Host> {
    if no_cache {
        Host::with_cache_dir(None)
    } else {
        Host::new()
    }
}

/// Run the command; the exit code for `main`.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => run::run(args).await,
        Command::Resume(args) => resume::resume(args).await,
        Command::Replay(args) => replay::replay(args).await,
        Command::Inspect { checkpoint, json } => {
            budget_host::resume::inspect(&checkpoint, json, budget_host::checkpoint::seal_key_from_env().as_deref())?;
            Ok(exit::COMPLETED)
        }
        Command::Validate { file } => {
            budget_host::tools::validate(&host(false)?, &file)?;
            Ok(exit::COMPLETED)
        }
        Command::Report(a) => {
            budget_host::report::command(&a.log, a.json, a.html.as_deref(), a.run.as_deref())?;
            Ok(exit::COMPLETED)
        }
        Command::Lock { plugins, output } => {
            budget_host::tools::lock(&plugins, output.as_deref())?;
            Ok(exit::COMPLETED)
        }
        Command::Precompile { file } => {
            budget_host::tools::precompile(&host(false)?, &file)?;
            Ok(exit::COMPLETED)
        }
    }
}

/// Map an error to its exit code: bad input is 2, anything else 1.
pub fn error_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<BadInput>().is_some() || e.downcast_ref::<budget_host::spec::SpecError>().is_some() {
        exit::USAGE
    } else {
        exit::FAILURE
    }
}
