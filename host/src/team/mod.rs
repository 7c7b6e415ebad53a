//! Teams: several agents in one process and one [`Host`], each with its own
//! ledger (its share) under the team's shared total, run concurrently. A
//! first run and a resumed team take the same path ([`run_members`]), so both
//! hand a finished agent's unused share to the others when asked. Also budget
//! tiers (dev/staging/prod) from the same TOML file or a `host.toml` beside it.
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

mod members;

pub use members::{resume_team, run_team, Manifest, ManifestAgent, TeamOptions, MANIFEST, MANIFEST_FORMAT};

use crate::budget::{fmt_usd, usd_to_nanos, Nanos};
use crate::spec::{HookSpec, PluginPin, RunSpec};
use crate::BadInput;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// A budget tier: its budget and thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// USD.
    pub budget: f64,
    /// Warning thresholds, fractions of the budget.
    pub warn: Option<Vec<f64>>,
}

/// One `[[agents]]` entry of a team file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamAgent {
    /// The agent's name (letters, digits, `-`, `_`).
    pub name: String,
    /// Its component, relative to the team file.
    pub wasm: PathBuf,
    /// Its task (default: the run's).
    #[serde(default)]
    pub task: Option<String>,
    /// Its share of the total, a fraction.
    pub share: Option<f64>,
    /// Or its amount, in USD.
    pub amount: Option<f64>,
    /// Its own hooks, after the run's (`[NAME=]FILE.wasm[=CONFIG]`).
    #[serde(default)]
    pub hooks: Vec<String>,
    /// Its fuel limit.
    pub fuel: Option<u64>,
    /// Its cycle limit.
    pub max_cycles: Option<u32>,
}

/// A team file (or `host.toml`, for its tiers).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TeamFile {
    /// The team's total in USD (`--budget` and `--tier` win).
    pub total: Option<f64>,
    /// Hand a finished agent's unused share to the others.
    #[serde(default)]
    pub return_unused: bool,
    /// Budget tiers by name.
    #[serde(default)]
    pub tiers: BTreeMap<String, Tier>,
    /// The agents.
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

/// The tier named `name`, from `file`'s tiers or `host.toml`'s.
pub fn tier(name: &str, file: Option<&Path>) -> Result<Tier, BadInput> {
    let tiers = tiers(file)?;
    let tier = tiers.get(name).cloned().ok_or_else(|| {
        let known: Vec<&String> = tiers.keys().collect();
        BadInput(format!("--tier {name}: no such tier (known: {known:?}; define them under [tiers.<name>] in host.toml or the team file)"))
    })?;
    usd_to_nanos(tier.budget).map_err(|e| BadInput(format!("tier {name}: {e}")))?;
    Ok(tier)
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

/// A team, planned: each member's spec with its share as its budget.
pub struct TeamPlan {
    /// The team's name (the file stem).
    pub name: String,
    /// The hard total.
    pub total: Nanos,
    /// Hand a finished agent's unused share to the others.
    pub return_unused: bool,
    /// Name and spec of each agent, in file order.
    pub members: Vec<(String, RunSpec)>,
}

/// Plan a team from its file: `base` carries the settings every agent
/// shares (from the command line); `total` wins over the file's `total`.
pub fn plan(team_path: &Path, base: &RunSpec, total: Option<Nanos>) -> Result<TeamPlan, BadInput> {
    let team = read_toml(team_path)?;
    let total = match (total, team.total) {
        (Some(t), _) => t,
        (None, Some(t)) => usd_to_nanos(t).map_err(|e| BadInput(format!("total: {e}")))?,
        (None, None) => return Err(BadInput("a team needs a total: --budget, --tier, or `total =` in the team file".into())),
    };
    let limits = allocate(&team, total)?;
    let dir = team_path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { dir.join(p) };
    let mut members = Vec::new();
    for (a, limit) in team.agents.iter().zip(&limits) {
        let wasm = resolve(&a.wasm);
        if !wasm.exists() {
            return Err(BadInput(format!("agent '{}': {} does not exist", a.name, wasm.display())));
        }
        let mut spec = base.clone();
        spec.agent = PluginPin::file(wasm);
        spec.agent_name = a.name.clone();
        spec.budget = *limit;
        if let Some(t) = &a.task {
            spec.task = t.clone();
        }
        if a.fuel.is_some() {
            spec.limits.fuel = a.fuel;
        }
        if let Some(m) = a.max_cycles {
            spec.limits.max_cycles = m;
        }
        for h in &a.hooks {
            let mut hook = HookSpec::parse(h).map_err(|e| BadInput(format!("agent '{}': {e}", a.name)))?;
            hook.plugin.path = resolve(&hook.plugin.path);
            if spec.hooks.iter().any(|x| x.name == hook.name) {
                return Err(BadInput(format!("agent '{}': two hooks are named '{}'", a.name, hook.name)));
            }
            spec.hooks.push(hook);
        }
        members.push((a.name.clone(), spec));
    }
    let name = team_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "team".into());
    Ok(TeamPlan { name, total, return_unused: team.return_unused, members })
}

#[cfg(test)]
mod tests {
    use super::members::give_back;
    use super::*;
    use crate::budget::Ledger;
    use std::sync::{Arc, Mutex};

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
        give_back(40, &ledgers, &[0, 1], &[100, 300]);
        assert_eq!(ledgers[0].lock().unwrap().limit(), 110);
        assert_eq!(ledgers[1].lock().unwrap().limit(), 330);
    }
}
