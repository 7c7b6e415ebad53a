//! The `host` binary: parse flags once, run, map the outcome to an exit code.

use budget_host::cli::{Cli, Command};
use budget_host::engine::{self, Compiler, PluginFile};
use budget_host::interrupt::{exit, StopSignal};
use budget_host::BadInput;
use clap::Parser;
use std::sync::Arc;

fn main() {
    // Rust ignores SIGPIPE, so `host validate X | head` made println! panic; die quietly like other Unix tools.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::FAILURE);
        }
    };
    let code = rt.block_on(async {
        match run(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                if e.downcast_ref::<BadInput>().is_some() {
                    exit::USAGE
                } else {
                    exit::FAILURE
                }
            }
        }
    });
    // Don't wait for a provider call still in flight on another task.
    rt.shutdown_background();
    std::process::exit(code);
}

/// First Ctrl+C / SIGTERM: graceful; the second: immediate.
fn watch_signals(stop: Arc<StopSignal>, console: budget_host::run::Console) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            let term_fut = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term_fut => {}
            }
            let mode = stop.request();
            let msg = match mode {
                budget_host::interrupt::Mode::Graceful => "🛑 Stop requested: finishing the current cycle (send again to stop now)",
                budget_host::interrupt::Mode::Immediate => "🛑 Stopping now",
            };
            if console.json { eprintln!("{msg}") } else { console.progress.suspend(|| println!("\n{msg}")) }
        }
    });
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) if args.team.is_some() => {
            let stop = StopSignal::new();
            let console = budget_host::run::Console { json: args.json, quiet: args.quiet, ..Default::default() };
            watch_signals(stop.clone(), console);
            let team = args.team.clone().expect("checked");
            budget_host::team::run_team(&team, args, stop).await
        }
        Command::Run(args) => {
            let config = args.into_config()?;
            let stop = StopSignal::new();
            watch_signals(stop.clone(), config.console.clone());
            finish_run(config, stop).await
        }
        Command::Resume(args) if args.checkpoint.as_ref().is_some_and(|p| p.extension().is_some_and(|e| e == "json")) => {
            let stop = StopSignal::new();
            let console = budget_host::run::Console { json: args.json, quiet: args.quiet, ..Default::default() };
            watch_signals(stop.clone(), console);
            let total = match &args.budget {
                Some(b) => Some(budget_host::budget::parse_usd(b).map_err(|e| BadInput(format!("--budget: {e}")))?),
                None => None,
            };
            let manifest = args.checkpoint.clone().expect("checked");
            budget_host::team::resume_team(&manifest, total, args.force, args.json, stop).await
        }
        Command::Resume(args) => {
            let config = budget_host::resume::prepare(args)?;
            let stop = StopSignal::new();
            watch_signals(stop.clone(), config.console.clone());
            finish_run(config, stop).await
        }
        Command::Inspect { checkpoint, json } => {
            budget_host::resume::inspect(&checkpoint, json)?;
            Ok(exit::COMPLETED)
        }
        Command::Validate { file } => validate(&file),
        Command::Report(args) => {
            budget_host::report::command(&args.log, args.json, args.html.as_deref(), args.run.as_deref())?;
            Ok(exit::COMPLETED)
        }
        Command::Lock { plugins, output } => lock(&plugins, output.as_deref()),
        Command::Precompile { file, output } => {
            let plugin = PluginFile::read(&file).map_err(BadInput::from)?;
            let compiler = Compiler::new(engine::new_engine()?, engine::default_cache_dir());
            let (component, cached) = compiler.load(&plugin).map_err(BadInput::from)?;
            let world = engine::detect_world(compiler.engine(), &component)
                .ok_or_else(|| BadInput(format!("{} implements neither the agent nor the hook world", file.display())))?;
            if let Some(out) = output {
                compiler.precompile(&plugin, &out)?;
                println!("wrote {}", out.display());
            }
            println!(
                "{}: {} ({}), compiled artifact {} the cache (valid for this host build on this machine only)",
                file.display(),
                world.name(),
                &plugin.sha256[..12],
                if cached { "already in" } else { "written to" }
            );
            Ok(exit::COMPLETED)
        }
    }
}

/// `host lock`: hash each plugin (each must be a component) into a lock file.
fn lock(plugins: &[std::path::PathBuf], output: Option<&std::path::Path>) -> anyhow::Result<i32> {
    use budget_host::integrity;
    let mut pinned = Vec::new();
    for p in plugins {
        let plugin = PluginFile::read(p).map_err(BadInput::from)?;
        pinned.push((plugin.path, plugin.sha256));
    }
    let out = output.map(std::path::Path::to_path_buf).unwrap_or_else(|| std::path::PathBuf::from("host.lock"));
    let text = serde_json::to_string_pretty(&integrity::lock_for(&out, &pinned))? + "\n";
    match output {
        Some(o) => {
            engine::write_atomic(o, text.as_bytes())
                .map_err(|e| integrity::IntegrityError::WriteLock { path: o.display().to_string(), detail: format!("{e:#}") })?;
            eprintln!("wrote {} ({} plugin{})", o.display(), pinned.len(), if pinned.len() == 1 { "" } else { "s" });
        }
        None => print!("{text}"),
    }
    Ok(exit::COMPLETED)
}

async fn finish_run(config: budget_host::run::RunConfig, stop: Arc<StopSignal>) -> anyhow::Result<i32> {
    let json = config.console.json;
    let progress = config.console.progress.clone();
    let outcome = budget_host::run::run_agent(config, stop).await;
    // The live display never outlives the run, whatever way it ended.
    progress.finish();
    let outcome = outcome?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome.summary)?);
    }
    Ok(outcome.exit_code())
}

fn validate(file: &std::path::Path) -> anyhow::Result<i32> {
    let plugin = PluginFile::read(file).map_err(BadInput::from)?;
    let compiler = Compiler::new(engine::new_engine()?, engine::default_cache_dir());
    let (component, _) = compiler.load(&plugin).map_err(BadInput::from)?;
    let world = engine::detect_world(compiler.engine(), &component);
    let world = match world {
        Some(w) => w,
        None => {
            engine::check_world(compiler.engine(), &component, engine::World::Agent, file).map_err(BadInput::from)?;
            unreachable!("check_world fails when no world is detected")
        }
    };
    engine::check_world(compiler.engine(), &component, world, file).map_err(BadInput::from)?;
    let linker = budget_host::run::agent_linker(compiler.engine())?;
    let s = engine::surface(compiler.engine(), &component);
    println!("{}: {} component, WIT {}@{}", file.display(), world.name(), budget_host::bindings::WIT_PACKAGE, budget_host::bindings::WIT_VERSION);
    println!("sha256: {}", plugin.sha256);
    println!("imports:");
    for i in &s.imports {
        println!("  {i}");
    }
    println!("exports:");
    for e in &s.exports {
        println!("  {e}");
    }
    match world {
        engine::World::Agent => {
            linker
                .instantiate_pre(&component)
                .map_err(|e| BadInput(format!("{} needs imports this host does not grant: {e:#}", file.display())))?;
        }
        engine::World::Hook => {
            budget_host::hooks::prepare(&compiler, file)?;
        }
    }
    println!("ok: this host can run it");
    Ok(exit::COMPLETED)
}
