//! Teams: several agents in one process, each with its own ledger (its share)
//! nested in the team's pool (the hard total), run concurrently on one
//! runtime. Also budget tiers (dev/staging/prod) from the same TOML file or a
//! `host.toml` beside it.
//!
//! ```toml
//! total = 100.0            # optional: --budget or --tier give it too
//! return_unused = true     # a finished agent's unused share goes to the others
//! [tiers.dev]
//! budget = 1.0
//! warn = [0.5, 0.8, 0.9]
//! [[agents]]
//! name = "supervisor"
//! wasm = "../plugins/essay-agent/essay-agent.wasm"   # relative to this file
//! task = "Plan the essay"
//! share = 0.2              # of the total; or `amount = 20.0` (USD)
//! hooks = ["../plugins/budget-monitor/budget-monitor.wasm=warn=0.8"]
//! fuel = 100000000
//! max_cycles = 10
//! ```

use crate::budget::{fmt_usd, nanos_to_usd, usd_to_nanos, Ledger, Nanos};
use crate::cli::RunArgs;
use crate::interrupt::{exit, StopSignal};
use crate::pool::{LocalPool, Pool};
use crate::run::{run_agent, RunOutcome, Status};
use crate::BadInput;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub budget: f64,
    pub warn: Option<Vec<f64>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamAgent {
    pub name: String,
    pub wasm: PathBuf,
    #[serde(default)]
    pub task: Option<String>,
    pub share: Option<f64>,
    pub amount: Option<f64>,
    #[serde(default)]
    pub hooks: Vec<String>,
    pub fuel: Option<u64>,
    pub max_cycles: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TeamFile {
    pub total: Option<f64>,
    #[serde(default)]
    pub return_unused: bool,
    #[serde(default)]
    pub tiers: BTreeMap<String, Tier>,
    #[serde(default)]
    pub agents: Vec<TeamAgent>,
}

fn read_toml(path: &Path) -> Result<TeamFile, BadInput> {
    let text = std::fs::read_to_string(path).map_err(|e| BadInput(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| BadInput(format!("{} is not valid: {}", path.display(), e.to_string().lines().collect::<Vec<_>>().join(" "))))
}

/// Tiers from `file` (a team file) or else `host.toml` beside it (or in the current directory).
pub fn tiers(file: Option<&Path>) -> Result<BTreeMap<String, Tier>, BadInput> {
    let mut tiers = BTreeMap::new();
    let dir = file.and_then(|f| f.parent()).map(Path::to_path_buf).unwrap_or_default();
    let host_toml = dir.join("host.toml");
    if host_toml.exists() {
        tiers.extend(read_toml(&host_toml)?.tiers);
    }
    if let Some(f) = file {
        tiers.extend(read_toml(f)?.tiers);
    }
    Ok(tiers)
}

/// Resolve `--tier`: its budget and thresholds (an explicit `--budget` wins for the budget).
pub fn apply_tier(args: &mut RunArgs, file: Option<&Path>) -> Result<(), BadInput> {
    let Some(name) = args.tier.clone() else { return Ok(()) };
    let tiers = tiers(file)?;
    let tier = tiers.get(&name).ok_or_else(|| {
        let known: Vec<&String> = tiers.keys().collect();
        BadInput(format!("--tier {name}: no such tier (known: {known:?}; define them under [tiers.<name>] in host.toml or the team file)"))
    })?;
    usd_to_nanos(tier.budget).map_err(|e| BadInput(format!("tier {name}: {e}")))?;
    if args.budget.is_none() {
        args.budget = Some(format!("{}", tier.budget));
    }
    if let Some(w) = &tier.warn {
        args.warn = w.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    }
    Ok(())
}

/// Each agent's limit, checked: names unique, shares finite and positive, the sum within the total.
pub fn allocate(team: &TeamFile, total: Nanos) -> Result<Vec<Nanos>, BadInput> {
    if team.agents.is_empty() {
        return Err(BadInput("the team file lists no [[agents]]".into()));
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for a in &team.agents {
        if a.name.trim().is_empty() || !a.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(BadInput(format!("agent name '{}' must be letters, digits, - or _", a.name)));
        }
        if !names.insert(a.name.clone()) {
            return Err(BadInput(format!("agent name '{}' appears twice", a.name)));
        }
        let n = match (a.share, a.amount) {
            (Some(s), None) => {
                if !s.is_finite() || s <= 0.0 || s > 1.0 {
                    return Err(BadInput(format!("agent '{}': share {s} must be a fraction in (0, 1]", a.name)));
                }
                (total as f64 * s).floor() as Nanos
            }
            (None, Some(usd)) => usd_to_nanos(usd).map_err(|e| BadInput(format!("agent '{}': amount: {e}", a.name)))?,
            _ => return Err(BadInput(format!("agent '{}' needs exactly one of share or amount", a.name))),
        };
        if n == 0 {
            return Err(BadInput(format!("agent '{}' gets nothing of {}", a.name, fmt_usd(total))));
        }
        out.push(n);
    }
    let sum: u128 = out.iter().map(|n| *n as u128).sum();
    if sum > total as u128 {
        return Err(BadInput(format!(
            "the agents' shares add up to {} ({:.1}% of the total {}): more than 100%",
            fmt_usd(sum.min(u64::MAX as u128) as u64),
            sum as f64 * 100.0 / total as f64,
            fmt_usd(total)
        )));
    }
    Ok(out)
}

/// Where a team's agents were when it stopped: `host resume` of this file continues the unfinished ones.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub team_file: PathBuf,
    pub total_nanos: Nanos,
    pub agents: Vec<ManifestAgent>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestAgent {
    pub name: String,
    pub status: String,
    pub spent_nanos: Nanos,
    pub limit_nanos: Nanos,
    pub checkpoint: Option<PathBuf>,
    pub exit_code: i32,
}

pub const MANIFEST: &str = "team_manifest.json";

/// Run a team. `base` carries the flags shared by every agent.
pub async fn run_team(team_path: &Path, mut base: RunArgs, stop: Arc<StopSignal>) -> anyhow::Result<i32> {
    let team = read_toml(team_path)?;
    apply_tier(&mut base, Some(team_path))?;
    // Applied once here: the agents get its budget and thresholds, not the name.
    base.tier = None;
    if base.budget.is_none() {
        if let Some(t) = team.total {
            base.budget = Some(format!("{t}"));
        }
    }
    let total = match &base.budget {
        Some(b) => crate::budget::parse_usd(b).map_err(|e| BadInput(format!("--budget: {e}")))?,
        None => return Err(BadInput("a team needs a total: --budget, --tier, or `total =` in the team file".into()).into()),
    };
    let limits = allocate(&team, total)?;
    let dir = team_path.parent().unwrap_or(Path::new("."));
    let team_name = team_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "team".into());
    let team_dir = base.checkpoint_dir.clone().unwrap_or_else(|| PathBuf::from(".host/checkpoints").join(&team_name));
    let pool: Arc<dyn Pool> = Arc::new(LocalPool::new(total)?);
    let json = base.json;
    base.json = false; // each agent's own summary is collected, not printed

    let mut handles = Vec::new();
    let mut ledgers = Vec::new();
    let mut configs = Vec::new();
    for (a, limit) in team.agents.iter().zip(&limits) {
        let wasm = if a.wasm.is_absolute() { a.wasm.clone() } else { dir.join(&a.wasm) };
        if !wasm.exists() {
            return Err(BadInput(format!("agent '{}': {} does not exist", a.name, wasm.display())).into());
        }
        let mut args = base.clone();
        args.agent = Some(wasm);
        args.budget = Some(format!("{}", nanos_to_usd(*limit)));
        args.checkpoint_dir = Some(team_dir.join(&a.name));
        args.log = Some(base.log.clone().unwrap_or_else(|| team_dir.join("budget_monitoring.jsonl")));
        if let Some(t) = &a.task {
            args.task = t.clone();
        }
        args.hooks.extend(a.hooks.iter().map(|h| if Path::new(h.split('=').next().unwrap_or(h)).is_absolute() { h.clone() } else { dir.join(h).display().to_string() }));
        if a.fuel.is_some() {
            args.fuel = a.fuel;
        }
        if let Some(m) = a.max_cycles {
            args.max_cycles = m;
        }
        let mut cfg = args.into_config()?;
        cfg.budget = *limit;
        cfg.agent_name = Some(a.name.clone());
        cfg.run_id = format!("{team_name}-{}", cfg.run_id);
        cfg.console.prefix = format!("[{}] ", a.name);
        cfg.console.json = json; // human lines to stderr under --json
        cfg.pool = Some(pool.clone());
        let ledger = Arc::new(Mutex::new(Ledger::new(*limit)?.with_thresholds(&cfg.warn)));
        cfg.agent_ledger = Some(ledger.clone());
        ledgers.push(ledger);
        configs.push(a.name.clone());
        let stop = stop.clone();
        handles.push(tokio::spawn(async move { run_agent(cfg, stop).await }));
    }

    // Collect as they finish; hand a finished agent's unused share to the others.
    let mut outcomes: Vec<Option<anyhow::Result<RunOutcome>>> = (0..handles.len()).map(|_| None).collect();
    let mut pending: Vec<(usize, tokio::task::JoinHandle<anyhow::Result<RunOutcome>>)> = handles.into_iter().enumerate().collect();
    while !pending.is_empty() {
        let (res, idx, rest) = futures_select(pending).await;
        pending = rest;
        let out = res.unwrap_or_else(|e| Err(anyhow::anyhow!("agent task failed: {e}")));
        if team.return_unused {
            if let Ok(o) = &out {
                let unused = o.ledger.limit - o.ledger.spent;
                give_back(unused, idx, &ledgers, &pending.iter().map(|(i, _)| *i).collect::<Vec<_>>(), &limits);
            }
        }
        outcomes[idx] = Some(out);
    }

    let outcomes: Vec<anyhow::Result<RunOutcome>> = outcomes.into_iter().map(|o| o.expect("every agent finished")).collect();
    summarize(&team_name, team_path, &team_dir, total, pool.as_ref(), configs, outcomes, json).await
}

/// Print the per-agent and total breakdown, write the manifest, return the exit code:
/// 0 when every agent completed, else the code of the first that did not.
#[allow(clippy::too_many_arguments)]
async fn summarize(
    team_name: &str,
    team_path: &Path,
    team_dir: &Path,
    total: Nanos,
    pool: &dyn Pool,
    names: Vec<String>,
    outcomes: Vec<anyhow::Result<RunOutcome>>,
    json: bool,
) -> anyhow::Result<i32> {
    let status = pool.status().await?;
    let mut rows = Vec::new();
    let mut manifest = Manifest { format: 1, team_file: team_path.to_path_buf(), total_nanos: total, agents: Vec::new() };
    let mut code = exit::COMPLETED;
    println_team(json, "");
    println_team(json, "============================================================");
    println_team(json, &format!("👥 TEAM {team_name}: {} of {} spent by {} agents", fmt_usd(status.spent), fmt_usd(total), names.len()));
    println_team(json, "============================================================");
    for (name, outcome) in names.iter().zip(outcomes) {
        match outcome {
            Ok(o) => {
                let c = o.exit_code();
                if code == exit::COMPLETED && c != exit::COMPLETED {
                    code = c;
                }
                println_team(
                    json,
                    &format!(
                        "  {name}: {} of {} ({:.1}%), {} calls, {} cycles, {}",
                        fmt_usd(o.ledger.spent),
                        fmt_usd(o.ledger.limit),
                        crate::report::percent(o.ledger.spent, o.ledger.limit),
                        o.ledger.calls,
                        o.cycles_completed,
                        match &o.interrupt {
                            Some(i) => format!("stopped: {}", i.source.as_str()),
                            None => "completed".into(),
                        }
                    ),
                );
                manifest.agents.push(ManifestAgent {
                    name: name.clone(),
                    status: if o.status == Status::Interrupted { "interrupted".into() } else { "completed".into() },
                    spent_nanos: o.ledger.spent,
                    limit_nanos: o.ledger.limit,
                    checkpoint: o.checkpoint.clone(),
                    exit_code: c,
                });
                let mut s = o.summary.clone();
                s["agent"] = json!(name);
                rows.push(s);
            }
            Err(e) => {
                code = if e.downcast_ref::<BadInput>().is_some() { exit::USAGE } else { exit::FAILURE };
                println_team(json, &format!("  {name}: failed to start: {e:#}"));
                rows.push(json!({"agent": name, "error": format!("{e:#}")}));
            }
        }
    }
    println_team(json, &format!("  TOTAL: {} of {} ({:.1}%)", fmt_usd(status.spent), fmt_usd(total), crate::report::percent(status.spent, total)));
    println_team(json, "============================================================");
    let manifest_path = team_dir.join(MANIFEST);
    crate::durable::write_atomic(&manifest_path, serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    println_team(json, &format!("📋 Team manifest: {} (host resume it to continue unfinished agents)", manifest_path.display()));
    if json {
        let v = json!({"team": team_name, "total_nanos": total, "total_usd": nanos_to_usd(total), "spent_nanos": status.spent,
                       "spent_usd": nanos_to_usd(status.spent), "exit_code": code, "manifest": manifest_path, "agents": rows});
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(code)
}

/// `host resume team_manifest.json`: continue every unfinished agent from its
/// checkpoint, sharing a pool that already holds what the team spent. A larger
/// `--budget` is split over the unfinished agents in proportion to their limits.
pub async fn resume_team(manifest_path: &Path, new_total: Option<Nanos>, force: bool, json: bool, stop: Arc<StopSignal>) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(manifest_path).map_err(|e| BadInput(format!("cannot read {}: {e}", manifest_path.display())))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| BadInput(format!("{} is not a team manifest: {e}", manifest_path.display())))?;
    let spent: Nanos = m.agents.iter().map(|a| a.spent_nanos).sum();
    let total = new_total.unwrap_or(m.total_nanos);
    if total < spent {
        return Err(BadInput(format!("--budget {} is below the {} this team already spent", fmt_usd(total), fmt_usd(spent))).into());
    }
    let pool = Arc::new(LocalPool::new(total)?);
    if spent > 0 {
        let h = pool.reserve(spent).await?;
        pool.settle(h, spent).await?;
    }
    let unfinished: Vec<&ManifestAgent> = m.agents.iter().filter(|a| a.status != "completed").collect();
    if unfinished.is_empty() {
        return Err(BadInput(format!("every agent of {} already completed", manifest_path.display())).into());
    }
    let extra = total - m.total_nanos.min(total);
    let weight: u128 = unfinished.iter().map(|a| a.limit_nanos as u128).sum::<u128>().max(1);
    let team_dir = manifest_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let team_name = m.team_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "team".into());
    let mut names = Vec::new();
    let mut handles = Vec::new();
    for a in &unfinished {
        let ck = a.checkpoint.clone().ok_or_else(|| BadInput(format!("agent '{}' stopped without a checkpoint: it cannot be resumed", a.name)))?;
        let limit = a.limit_nanos + (extra as u128 * a.limit_nanos as u128 / weight) as Nanos;
        let args = crate::cli::ResumeArgs {
            checkpoint: Some(ck),
            latest: None,
            fallback: false,
            budget: Some(format!("{}", nanos_to_usd(limit))),
            fuel: None,
            max_cycles: None,
            force,
            json: false,
            quiet: false,
            no_progress: true,
        };
        let mut cfg = crate::resume::prepare(args)?;
        cfg.budget = limit;
        cfg.agent_name = Some(a.name.clone());
        cfg.console.prefix = format!("[{}] ", a.name);
        cfg.console.json = json;
        cfg.pool = Some(pool.clone());
        names.push(a.name.clone());
        let stop = stop.clone();
        handles.push(tokio::spawn(async move { run_agent(cfg, stop).await }));
    }
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.await.unwrap_or_else(|e| Err(anyhow::anyhow!("agent task failed: {e}"))));
    }
    // Completed agents keep their line in the new manifest.
    let mut all_names = Vec::new();
    let mut all = Vec::new();
    let mut resumed = names.into_iter().zip(outcomes);
    for a in &m.agents {
        if a.status == "completed" {
            continue;
        }
        if let Some((n, o)) = resumed.next() {
            all_names.push(n);
            all.push(o);
        }
    }
    summarize(&team_name, &m.team_file, &team_dir, total, pool.as_ref(), all_names, all, json).await
}

fn println_team(json: bool, line: &str) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// Split `unused` among the still-running agents, in proportion to their limits.
fn give_back(unused: Nanos, _from: usize, ledgers: &[Arc<Mutex<Ledger>>], running: &[usize], limits: &[Nanos]) {
    let weight: u128 = running.iter().map(|i| limits[*i] as u128).sum();
    if unused == 0 || weight == 0 {
        return;
    }
    for i in running {
        let extra = (unused as u128 * limits[*i] as u128 / weight) as Nanos;
        let mut l = ledgers[*i].lock().unwrap_or_else(|p| p.into_inner());
        let new = l.limit() + extra;
        let _ = l.set_limit(new);
    }
}

/// Wait for whichever agent finishes first.
async fn futures_select(
    pending: Vec<(usize, tokio::task::JoinHandle<anyhow::Result<RunOutcome>>)>,
) -> (Result<anyhow::Result<RunOutcome>, tokio::task::JoinError>, usize, Vec<(usize, tokio::task::JoinHandle<anyhow::Result<RunOutcome>>)>) {
    let (idx, handles): (Vec<usize>, Vec<_>) = pending.into_iter().unzip();
    let (res, pos, rest) = select_all(handles).await;
    let i = idx[pos];
    let rest_idx: Vec<usize> = idx.iter().enumerate().filter(|(p, _)| *p != pos).map(|(_, i)| *i).collect();
    (res, i, rest_idx.into_iter().zip(rest).collect())
}

async fn select_all<F: std::future::Future + Unpin>(mut futs: Vec<F>) -> (F::Output, usize, Vec<F>) {
    let (out, pos) = std::future::poll_fn(|cx| {
        for (i, f) in futs.iter_mut().enumerate() {
            if let std::task::Poll::Ready(o) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready((o, i));
            }
        }
        std::task::Poll::Pending
    })
    .await;
    futs.remove(pos);
    (out, pos, futs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team(text: &str) -> TeamFile {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn allocates_the_seeds_split() {
        let t = team(
            r#"
            [[agents]]
            name = "supervisor"
            wasm = "a.wasm"
            share = 0.2
            [[agents]]
            name = "w1"
            wasm = "a.wasm"
            share = 0.3
            [[agents]]
            name = "w2"
            wasm = "a.wasm"
            share = 0.3
            [[agents]]
            name = "w3"
            wasm = "a.wasm"
            amount = 20.0
        "#,
        );
        let l = allocate(&t, 100_000_000_000).unwrap();
        assert_eq!(l, vec![20_000_000_000, 30_000_000_000, 30_000_000_000, 20_000_000_000]);
    }

    #[test]
    fn refuses_bad_teams() {
        let base = |extra: &str| format!("[[agents]]\nname = \"a\"\nwasm = \"a.wasm\"\nshare = 0.6\n{extra}");
        for (text, want) in [
            (base("[[agents]]\nname = \"b\"\nwasm = \"a.wasm\"\nshare = 0.6\n"), "more than 100%"),
            (base("[[agents]]\nname = \"a\"\nwasm = \"a.wasm\"\nshare = 0.1\n"), "appears twice"),
            (base("[[agents]]\nname = \"b\"\nwasm = \"a.wasm\"\nshare = -0.1\n"), "must be a fraction"),
            (base("[[agents]]\nname = \"b\"\nwasm = \"a.wasm\"\nshare = nan\n"), "must be a fraction"),
            (base("[[agents]]\nname = \"b\"\nwasm = \"a.wasm\"\n"), "exactly one of share or amount"),
        ] {
            let e = allocate(&team(&text), 1_000_000_000).unwrap_err().0;
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn unused_share_goes_to_the_running_agents() {
        let ledgers: Vec<_> = [100u64, 300].iter().map(|l| Arc::new(Mutex::new(Ledger::new(*l).unwrap()))).collect();
        give_back(40, 2, &ledgers, &[0, 1], &[100, 300]);
        assert_eq!(ledgers[0].lock().unwrap().limit(), 110);
        assert_eq!(ledgers[1].lock().unwrap().limit(), 330);
    }
}
