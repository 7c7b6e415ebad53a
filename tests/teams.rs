//! Teams in one process: shares of one hard total, agents stopping alone,
//! unused shares returned, tiers, bad team files, and resuming a team.

use crate::util::*;
use std::path::{Path, PathBuf};

fn team_file(dir: &Path, agents: &[(&str, &str)], extra: &str) -> PathBuf {
    let essay = plugin("essay-agent");
    let mut t = format!("{extra}\n[tiers.dev]\nbudget = 0.2\nwarn = [0.5, 0.9]\n[tiers.prod]\nbudget = 100.0\n");
    for (name, alloc) in agents {
        t.push_str(&format!("[[agents]]\nname = \"{name}\"\nwasm = \"{}\"\n{alloc}\n", essay.display()));
    }
    let p = dir.join("team.toml");
    std::fs::write(&p, t).unwrap();
    p
}

fn team(dir: &Path, file: &Path) -> std::process::Command {
    let mut c = host();
    c.arg("run").arg("--team").arg(file).arg("--checkpoint-dir").arg(dir.join("ck"));
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-gpt4o.json")).args(["--max-tokens", "2000", "--json"]);
    c
}

const SEED: [(&str, &str); 4] = [("supervisor", "share = 0.2"), ("worker1", "share = 0.3"), ("worker2", "share = 0.3"), ("worker3", "share = 0.2")];

#[test]
fn the_seeds_split_holds_the_team_total() {
    let dir = tempdir();
    let f = team_file(dir.path(), &SEED, "");
    let r = run(team(dir.path(), &f).args(["--budget", "0.2"]));
    r.assert_code(BUDGET);
    let s = r.json();
    let agents = s["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 4);
    let limits: Vec<u64> = agents.iter().map(|a| a["limit_nanos"].as_u64().unwrap()).collect();
    assert_eq!(limits, vec![40_000_000, 60_000_000, 60_000_000, 40_000_000]);
    let sum: u64 = agents.iter().map(|a| a["spent_nanos"].as_u64().unwrap()).sum();
    assert_eq!(s["spent_nanos"].as_u64().unwrap(), sum, "the pool and the agents agree");
    assert!(sum <= 200_000_000);
    for a in agents {
        assert!(a["spent_nanos"].as_u64().unwrap() <= a["limit_nanos"].as_u64().unwrap());
    }
    // One log for the team, each line naming its agent.
    let log = read_log(&dir.path().join("ck/budget_monitoring.jsonl"));
    let names: std::collections::HashSet<&str> = events(&log, "llm_call").iter().map(|e| e["agent_id"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 4);
    assert!(r.stderr.contains("[worker2] CYCLE 1:"));
    assert!(r.stderr.contains("TOTAL: $0.1"));
}

#[test]
fn an_agent_out_of_share_stops_alone_and_returns_nothing_twice() {
    let dir = tempdir();
    // The supervisor's tiny share runs out; the workers have plenty and finish.
    let f = team_file(dir.path(), &[("supervisor", "amount = 0.03"), ("worker1", "share = 0.4"), ("worker2", "share = 0.4")], "return_unused = true");
    let r = run(team(dir.path(), &f).args(["--budget", "1.0"]));
    r.assert_code(BUDGET);
    let s = r.json();
    let a = s["agents"].as_array().unwrap();
    assert_eq!(a[0]["stop_reason"]["source"], "budget");
    assert_eq!(a[1]["status"], "completed");
    assert_eq!(a[2]["status"], "completed");
    assert!(dir.path().join("ck/supervisor").read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("checkpoint_")));
}

#[test]
fn unused_shares_flow_to_running_agents() {
    let dir = tempdir();
    let f = team_file(dir.path(), &SEED, "return_unused = true");
    let r = run(team(dir.path(), &f).args(["--budget", "0.2"]));
    let s = r.json();
    let limits: u64 = s["agents"].as_array().unwrap().iter().map(|a| a["limit_nanos"].as_u64().unwrap()).sum();
    assert!(limits > 200_000_000, "some agent's limit grew from another's unused share");
    assert!(s["spent_nanos"].as_u64().unwrap() <= 200_000_000, "but the team total still holds");
}

#[test]
fn tiers_set_the_budget_and_an_explicit_budget_wins() {
    let dir = tempdir();
    let f = team_file(dir.path(), &SEED, "");
    let s = run(team(dir.path(), &f).args(["--tier", "dev"])).json();
    assert_eq!(s["total_nanos"], 200_000_000);
    let s = run(team(dir.path(), &f).args(["--tier", "dev", "--budget", "0.3"])).json();
    assert_eq!(s["total_nanos"], 300_000_000);
    let r = run(team(dir.path(), &f).args(["--tier", "nope"]));
    r.assert_code(USAGE);
    assert!(r.stderr.contains("no such tier"), "{}", r.stderr);
    // A single agent picks tiers from host.toml in the working directory.
    std::fs::write(dir.path().join("host.toml"), "[tiers.staging]\nbudget = 0.05\n").unwrap();
    let mut c = host();
    c.current_dir(dir.path()).arg("run").arg(plugin("essay-agent")).args(["--tier", "staging", "--provider", "scripted", "--script"]);
    c.arg(fixture("essay-mini.json")).arg("--checkpoint-dir").arg(dir.path().join("single")).arg("--json");
    assert_eq!(run(&mut c).json()["limit_nanos"], 50_000_000);
}

#[test]
fn bad_team_files_are_refused() {
    for (agents, want) in [
        (vec![("a", "share = 0.7"), ("b", "share = 0.7")], "more than 100%"),
        (vec![("a", "share = -0.2")], "must be a fraction"),
        (vec![("a", "share = nan")], "must be a fraction"),
        (vec![("a", "share = 0.2"), ("a", "share = 0.2")], "appears twice"),
    ] {
        let dir = tempdir();
        let f = team_file(dir.path(), &agents, "");
        let r = run(team(dir.path(), &f).args(["--budget", "1"]));
        r.assert_code(USAGE);
        assert!(r.stderr.contains(want), "{want}: {}", r.stderr);
    }
    let dir = tempdir();
    let f = dir.path().join("t.toml");
    std::fs::write(&f, "[[agents]]\nname = \"a\"\nwasm = \"missing.wasm\"\nshare = 0.5\n").unwrap();
    let r = run(team(dir.path(), &f).args(["--budget", "1"]));
    r.assert_code(USAGE);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
}

#[test]
fn a_team_resumes_every_unfinished_agent() {
    let dir = tempdir();
    let f = team_file(dir.path(), &SEED, "");
    let first = run(team(dir.path(), &f).args(["--budget", "0.2"]));
    first.assert_code(BUDGET);
    let spent_before = first.json()["spent_nanos"].as_u64().unwrap();
    let mut c = host();
    c.arg("resume").arg(dir.path().join("ck/team_manifest.json")).args(["--budget", "1.0", "--json"]);
    let r = run(&mut c);
    r.assert_code(0);
    let s = r.json();
    assert!(s["agents"].as_array().unwrap().iter().all(|a| a["status"] == "completed"));
    let spent = s["spent_nanos"].as_u64().unwrap();
    assert!(spent > spent_before && spent <= 1_000_000_000);
}

/// One Ctrl+C reaches every agent of a team: each finishes the step it is in
/// and checkpoints, the manifest lists them as interrupted, and resuming the
/// manifest runs them all to the end within the new total.
#[test]
fn ctrl_c_stops_every_agent_and_the_team_resumes() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let server = Server::start(vec![Canned::from_fixture(&shared_fixture("response-basic.http")).delayed(300)]);
    let dir = tempdir();
    let f = team_file(dir.path(), &[("alpha", "share = 0.5"), ("beta", "share = 0.5")], "");
    let mut c = host();
    c.arg("run").arg("--team").arg(&f).arg("--checkpoint-dir").arg(dir.path().join("ck"));
    c.args(["--provider", "openai", "--base-url"]).arg(format!("{}/v1", server.url)).args(["--budget", "1", "--json"]);
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Both agents are under way (each call takes 300 ms): then one SIGINT.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.requests().len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(SIGNAL), "stderr:\n{stderr}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let agents = s["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    for a in agents {
        assert_eq!(a["stop_reason"]["source"], "signal", "{a}");
        assert_eq!(a["stop_reason"]["mode"], "graceful", "{a}");
        let cycles = a["cycles"].as_u64().unwrap();
        assert!((1..10).contains(&cycles), "stopped after a finished step, before the end: {a}");
        assert!(a["checkpoint"].as_str().is_some_and(|p| std::path::Path::new(p).exists()), "{a}");
    }
    let manifest = dir.path().join("ck/team_manifest.json");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert!(m["agents"].as_array().unwrap().iter().all(|a| a["status"] == "interrupted"), "{m}");
    let spent_before = s["spent_nanos"].as_u64().unwrap();

    // Endpoints come from the resume's own flags, never from the files it reads.
    let r = run(host().arg("resume").arg(&manifest).args(["--budget", "1", "--json", "--base-url"]).arg(format!("{}/v1", server.url)));
    r.assert_code(0);
    let s = r.json();
    for a in s["agents"].as_array().unwrap() {
        assert_eq!(a["status"], "completed", "{a}");
    }
    let spent = s["spent_nanos"].as_u64().unwrap();
    assert!(spent > spent_before && spent <= 1_000_000_000, "{spent_before} then {spent}");
}
