//! A team's members run concurrently in one process (a `JoinSet`), collected
//! as they finish; the manifest says where each stopped. A first run and a
//! resumed team take the same path, so both hand unused shares back.

use super::TeamPlan;
use crate::budget::{fmt_usd, nanos_to_usd, Ledger, Nanos};
use crate::host::Host;
use crate::interrupt::exit;
use crate::run::{ResumePoint, RunOptions, RunOutcome, Status};
use crate::shared_ledger::{SharedLedger, TeamLedger};
use crate::spec::RunSpec;
use crate::BadInput;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a team's agents were when it stopped: `host resume` of this file continues the unfinished ones.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest format (2).
    pub format: u32,
    /// The team's name.
    pub team: String,
    /// The team's total.
    pub total_nanos: Nanos,
    /// Whether a finished agent's unused share goes to the others.
    #[serde(default)]
    pub return_unused: bool,
    /// Each agent, in the team file's order.
    pub agents: Vec<ManifestAgent>,
}

/// One agent of a manifest.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestAgent {
    /// The agent's name in the team.
    pub name: String,
    /// `completed` or `interrupted`.
    pub status: String,
    /// What it spent.
    pub spent_nanos: Nanos,
    /// Its limit at the end.
    pub limit_nanos: Nanos,
    /// Its last checkpoint (a file to read, checked against `checkpoint_sha256`).
    pub checkpoint: Option<PathBuf>,
    /// The sha256 of that checkpoint file.
    pub checkpoint_sha256: Option<String>,
    /// Its exit code.
    pub exit_code: i32,
}

/// The manifest's file name, in the team's checkpoint directory.
pub const MANIFEST: &str = "team_manifest.json";
/// The manifest format this host writes (format 1 files are read too).
pub const MANIFEST_FORMAT: u32 = 2;

/// How the team's agents run: the options every member shares.
pub struct TeamOptions {
    /// Provider, console, stop signal, seal key: cloned for each member.
    pub base: RunOptions,
    /// The team's directory: each member's checkpoints go to `<dir>/<name>`.
    pub dir: PathBuf,
    /// One audit log for the team (default `<dir>/budget_monitoring.jsonl`).
    pub log: Option<PathBuf>,
    /// The team's total lives here (default: in process).
    pub shared: Option<Arc<dyn SharedLedger>>,
    /// Print the JSON summary on stdout.
    pub json: bool,
}

/// One member ready to run.
struct Member {
    name: String,
    spec: RunSpec,
    ledger: Arc<Mutex<Ledger>>,
    resume: Option<ResumePoint>,
    run_id: String,
}

/// Run a planned team.
pub async fn run_team(host: &Host, plan: TeamPlan, opts: TeamOptions) -> anyhow::Result<i32> {
    let shared = match &opts.shared {
        Some(s) => s.clone(),
        None => Arc::new(TeamLedger::new(plan.total)?) as Arc<dyn SharedLedger>,
    };
    let mut members = Vec::new();
    for (name, spec) in plan.members {
        // Load (and check) every plugin before any agent starts spending.
        host.components(&spec)?;
        let ledger = Arc::new(Mutex::new(Ledger::new(spec.budget)?.with_thresholds(&spec.warn)));
        let run_id = format!("{}-{}", plan.name, crate::run::new_run_id(&name));
        members.push(Member { name, spec, ledger, resume: None, run_id });
    }
    run_members(host, &plan.name, plan.total, plan.return_unused, members, shared, &opts).await
}

/// `host resume team_manifest.json`: continue every unfinished agent from its
/// checkpoint, under a total that already holds what the team spent. A larger
/// total is split over the unfinished agents in proportion to their limits.
pub async fn resume_team(host: &Host, manifest_path: &Path, new_total: Option<Nanos>, force: bool, opts: TeamOptions) -> anyhow::Result<i32> {
    let m = read_manifest(manifest_path)?;
    let spent: Nanos = m.agents.iter().map(|a| a.spent_nanos).sum();
    let total = new_total.unwrap_or(m.total_nanos);
    if total < spent {
        return Err(BadInput(format!("--budget {} is below the {} this team already spent", fmt_usd(total), fmt_usd(spent))).into());
    }
    let shared = match &opts.shared {
        Some(s) => s.clone(),
        None => {
            let pool = Arc::new(TeamLedger::new(total)?);
            if spent > 0 {
                let h = pool.reserve(spent).await?;
                pool.settle(h, spent).await?;
            }
            pool as Arc<dyn SharedLedger>
        }
    };
    let unfinished: Vec<&ManifestAgent> = m.agents.iter().filter(|a| a.status != "completed").collect();
    if unfinished.is_empty() {
        return Err(BadInput(format!("every agent of {} already completed", manifest_path.display())).into());
    }
    let extra = total - m.total_nanos.min(total);
    let weight: u128 = unfinished.iter().map(|a| a.limit_nanos as u128).sum::<u128>().max(1);
    let mut members = Vec::new();
    for a in unfinished {
        let ck = a.checkpoint.clone().ok_or_else(|| BadInput(format!("agent '{}' stopped without a checkpoint: it cannot be resumed", a.name)))?;
        let bytes = std::fs::read(&ck).map_err(|e| BadInput(format!("agent '{}': cannot read {}: {e}", a.name, ck.display())))?;
        if let Some(want) = &a.checkpoint_sha256 {
            if crate::engine::sha256_hex(&bytes) != *want {
                return Err(BadInput(format!("agent '{}': {} is not the checkpoint the manifest recorded (its sha256 differs)", a.name, ck.display())).into());
            }
        }
        let limit = a.limit_nanos + (extra as u128 * a.limit_nanos as u128 / weight) as Nanos;
        let req = crate::resume::ResumeRequest {
            checkpoint: Some(ck),
            budget: Some(limit),
            force,
            seal_key: opts.base.seal_key.clone(),
            journal: opts.base.journal.as_ref().map(|j| j.path().to_path_buf()),
            ..Default::default()
        };
        let (spec, point) = crate::resume::prepare(&req, &opts.base.console)?;
        host.components(&spec)?;
        let mut ledger = Ledger::from_state(&point.checkpoint.budget.ledger)?;
        for c in &point.journal.settled {
            ledger.charge(c.cost, &c.operation);
        }
        for u in &point.journal.unknown {
            ledger.charge(u.reserved, &u.operation);
        }
        ledger.set_limit(limit)?;
        let run_id = point.checkpoint.header.run_id.clone();
        members.push(Member { name: a.name.clone(), spec, ledger: Arc::new(Mutex::new(ledger)), resume: Some(point), run_id });
    }
    run_members(host, &m.team, total, m.return_unused, members, shared, &opts).await
}

fn read_manifest(path: &Path) -> Result<Manifest, BadInput> {
    let text = std::fs::read_to_string(path).map_err(|e| BadInput(format!("cannot read {}: {e}", path.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| BadInput(format!("{} is not a team manifest: {e}", path.display())))?;
    let not = |e: String| BadInput(format!("{} is not a team manifest: {e}", path.display()));
    match v.get("format").and_then(|f| f.as_u64()) {
        Some(1) => {
            // Format 1 named the team file; its agents' lines are the same but for the sha256.
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct V1 {
                #[allow(dead_code)]
                format: u32,
                team_file: PathBuf,
                total_nanos: Nanos,
                agents: Vec<ManifestAgent>,
            }
            let old: V1 = serde_json::from_value(v).map_err(|e| not(e.to_string()))?;
            let team = old.team_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "team".into());
            Ok(Manifest { format: 1, team, total_nanos: old.total_nanos, return_unused: false, agents: old.agents })
        }
        Some(2) => serde_json::from_value(v).map_err(|e| not(e.to_string())),
        Some(f) => Err(not(format!("format {f} (this host reads 1 and {MANIFEST_FORMAT})"))),
        None => Err(not("no format".into())),
    }
}

/// Run members concurrently (one task each, collected as they finish), hand
/// a finished member's unused share to those still running when asked, then
/// print the breakdown and write the manifest.
async fn run_members(host: &Host, team: &str, total: Nanos, return_unused: bool, members: Vec<Member>, shared: Arc<dyn SharedLedger>, opts: &TeamOptions) -> anyhow::Result<i32> {
    let log = opts.log.clone().unwrap_or_else(|| opts.dir.join("budget_monitoring.jsonl"));
    let ledgers: Vec<Arc<Mutex<Ledger>>> = members.iter().map(|m| m.ledger.clone()).collect();
    let limits: Vec<Nanos> = members.iter().map(|m| m.spec.budget).collect();
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, m) in members.into_iter().enumerate() {
        let mut o = opts.base.clone();
        o.checkpoint_dir = Some(opts.dir.join(&m.name));
        o.log = Some(log.clone());
        o.shared = Some(shared.clone());
        o.ledger = Some(m.ledger);
        o.run_id = Some(m.run_id);
        o.resume = m.resume;
        o.console.prefix = format!("[{}] ", m.name);
        // A bar of its own under the team's display.
        o.console.progress = opts.base.console.progress.sibling();
        o.console.json = opts.json; // human lines to stderr under --json
        let host = host.clone();
        tasks.spawn(async move { (i, host.run(m.spec, o).await) });
    }
    let mut outcomes: Vec<Option<anyhow::Result<RunOutcome>>> = (0..names.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, out) = joined.map_err(|e| anyhow::anyhow!("an agent's task failed: {e}"))?;
        if return_unused {
            if let Ok(o) = &out {
                let running: Vec<usize> = (0..names.len()).filter(|j| *j != i && outcomes[*j].is_none()).collect();
                give_back(o.ledger.limit.saturating_sub(o.ledger.spent), &ledgers, &running, &limits);
            }
        }
        outcomes[i] = Some(out);
    }
    let outcomes = outcomes.into_iter().map(|o| o.expect("every agent finished")).collect();
    summarize(team, &opts.dir, total, return_unused, shared.as_ref(), names, outcomes, opts.json).await
}

/// Print the per-agent and total breakdown, write the manifest, return the exit code:
/// 0 when every agent completed, else the code of the first that did not.
#[allow(clippy::too_many_arguments)]
async fn summarize(
    team: &str,
    dir: &Path,
    total: Nanos,
    return_unused: bool,
    shared: &dyn SharedLedger,
    names: Vec<String>,
    outcomes: Vec<anyhow::Result<RunOutcome>>,
    json: bool,
) -> anyhow::Result<i32> {
    let status = shared.status().await?;
    let mut rows = Vec::new();
    let mut manifest = Manifest { format: MANIFEST_FORMAT, team: team.into(), total_nanos: total, return_unused, agents: Vec::new() };
    let mut code = exit::COMPLETED;
    let say = |line: &str| if json { eprintln!("{line}") } else { println!("{line}") };
    say("");
    say("============================================================");
    say(&format!("👥 TEAM {team}: {} of {} spent by {} agents", fmt_usd(status.spent), fmt_usd(total), names.len()));
    say("============================================================");
    for (name, outcome) in names.iter().zip(outcomes) {
        match outcome {
            Ok(o) => {
                let c = o.exit_code();
                // The first stop names the team's code, but a bill past a reservation is never hidden.
                if (code == exit::COMPLETED && c != exit::COMPLETED) || c == exit::OVERRUN {
                    code = c;
                }
                let how = match &o.interrupt {
                    Some(i) => format!("stopped: {}", i.source.as_str()),
                    None => "completed".into(),
                };
                let l = &o.ledger;
                say(&format!(
                    "  {name}: {} of {} ({:.1}%), {} calls, {} cycles, {how}",
                    fmt_usd(l.spent),
                    fmt_usd(l.limit),
                    crate::report::percent(l.spent, l.limit),
                    l.calls,
                    o.cycles_completed
                ));
                let sha = o.checkpoint.as_ref().and_then(|p| std::fs::read(p).ok()).map(|b| crate::engine::sha256_hex(&b));
                manifest.agents.push(ManifestAgent {
                    name: name.clone(),
                    status: if o.status == Status::Interrupted { "interrupted".into() } else { "completed".into() },
                    spent_nanos: l.spent,
                    limit_nanos: l.limit,
                    checkpoint: o.checkpoint.clone(),
                    checkpoint_sha256: sha,
                    exit_code: c,
                });
                let mut s = o.summary.clone();
                s["agent"] = json!(name);
                rows.push(s);
            }
            Err(e) => {
                code = if e.downcast_ref::<BadInput>().is_some() { exit::USAGE } else { exit::FAILURE };
                say(&format!("  {name}: failed to start: {e:#}"));
                rows.push(json!({"agent": name, "error": format!("{e:#}")}));
            }
        }
    }
    say(&format!("  TOTAL: {} of {} ({:.1}%)", fmt_usd(status.spent), fmt_usd(total), crate::report::percent(status.spent, total)));
    say("============================================================");
    let manifest_path = dir.join(MANIFEST);
    crate::durable::write_atomic(&manifest_path, serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    say(&format!("📋 Team manifest: {} (host resume it to continue unfinished agents)", manifest_path.display()));
    if json {
        let v = json!({"team": team, "total_nanos": total, "total_usd": nanos_to_usd(total), "spent_nanos": status.spent,
                       "spent_usd": nanos_to_usd(status.spent), "exit_code": code, "manifest": manifest_path, "agents": rows});
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(code)
}

/// Split `unused` among the still-running agents, in proportion to their limits.
pub(super) fn give_back(unused: Nanos, ledgers: &[Arc<Mutex<Ledger>>], running: &[usize], limits: &[Nanos]) {
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

