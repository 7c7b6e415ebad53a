//! Budget hooks as components: policies taking effect, state through
//! checkpoints, the fail-closed policy for every fault, validate/precompile.

use crate::basics::scripted;
use crate::util::*;
use std::path::Path;

fn with_hook(dir: &Path, script: &str, budget: &str, hook: &str, config: &str) -> std::process::Command {
    let mut c = scripted(dir, script, budget);
    let spec = if config.is_empty() { plugin(hook).display().to_string() } else { format!("{}={config}", plugin(hook).display()) };
    c.args(["--hook", &spec, "--json"]);
    c
}

#[test]
fn budget_monitor_tracks_and_reports_through_the_log() {
    let dir = tempdir();
    let r = run(with_hook(dir.path(), "essay-gpt4o.json", "0.10", "budget-monitor", "warn=0.3,0.6").args(["--max-tokens", "2000"]));
    r.assert_code(BUDGET);
    let spent = r.json()["spent_nanos"].as_u64().unwrap() as f64 / 1e9;
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let ev: Vec<_> = log.iter().filter(|e| e["event"] == "plugin_event").collect();
    let names: Vec<&str> = ev.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| **n == "budget_monitor_warning").count(), 2, "{names:?}");
    let b = &ev.iter().find(|e| e["name"] == "budget_monitor_breakdown").unwrap()["data"];
    assert!((b["total_cost"].as_f64().unwrap() - spent).abs() < 1e-9, "{b}");
    assert_eq!(b["operations"], r.json()["calls"]);
    assert_eq!(b["host_thresholds_seen"].as_array().unwrap().len(), 3, "the hook saw the host's 50/80/90% thresholds");
    assert!(b["avg_cost_per_operation"].as_f64().unwrap() > 0.0);
    assert!(ev.iter().any(|e| e["name"] == "budget_monitor_interrupt"));
}

#[test]
fn hook_state_survives_checkpoint_and_resume() {
    let dir = tempdir();
    let r = run(with_hook(dir.path(), "essay-gpt4o.json", "0.10", "budget-monitor", "").args(["--max-tokens", "2000", "--min-output-tokens", "2000"]));
    r.assert_code(BUDGET);
    let first_calls = r.json()["calls"].as_u64().unwrap();
    let ck = r.json()["checkpoint"].as_str().unwrap().to_string();
    let mut c = host();
    c.args(["resume", &ck, "--budget", "1", "--json"]);
    let r = run(&mut c);
    r.assert_code(0);
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let last = log.iter().filter(|e| e["event"] == "plugin_event" && e["data"]["operations"].is_u64()).last().unwrap();
    // The hook counted the calls of both processes: its state came back.
    assert_eq!(last["data"]["operations"], r.json()["calls"]);
    assert!(r.json()["calls"].as_u64().unwrap() > first_calls);
}

#[test]
fn hooks_deny_lower_and_interrupt() {
    // deny from the 3rd call: the agent gets `denied`, the step fails, the run stops.
    let dir = tempdir();
    let r = run(&mut with_hook(dir.path(), "essay-mini.json", "1", "chaos-hook", "deny:over quota@before#3"));
    let s = r.json();
    assert_eq!(s["calls"], 2);
    assert!(s["stop_reason"]["message"].as_str().unwrap().contains("over quota"), "{s}");
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    assert_eq!(events(&log, "llm_call_refused")[0]["reason"], "hook_denied");

    // limit: lowers max tokens; a limit above the current one is ignored.
    let dir = tempdir();
    let r = run(with_hook(dir.path(), "essay-mini.json", "1", "chaos-hook", "limit:20@before").args(["--max-cycles", "2"]));
    r.assert_code(0);
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    assert!(events(&log, "llm_call").iter().all(|c| c["max_tokens"] == 20));
    let dir = tempdir();
    let r = run(with_hook(dir.path(), "essay-mini.json", "1", "chaos-hook", "limit:99999@before").args(["--max-cycles", "2"]));
    r.assert_code(0);
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    assert!(events(&log, "llm_call").iter().all(|c| c["max_tokens"] == 512));
    assert!(events(&log, "hook_decision").iter().any(|d| d["decision"].as_str().unwrap().contains("ignored")));

    // limit 0 is a deny.
    let dir = tempdir();
    let r = run(&mut with_hook(dir.path(), "essay-mini.json", "1", "chaos-hook", "limit:0@before"));
    assert_eq!(r.json()["calls"], 0);

    // interrupt after the 2nd call: source hook, exit 6.
    let dir = tempdir();
    let r = run(&mut with_hook(dir.path(), "essay-mini.json", "1", "chaos-hook", "interrupt:graceful@after#2"));
    r.assert_code(HOOK);
    let s = r.json();
    assert_eq!(s["stop_reason"]["source"], "hook");
    assert_eq!(s["cycles"], 2);
    assert!(s["stop_reason"]["message"].as_str().unwrap().contains("chaos-hook"));
}

#[test]
fn faulty_hooks_fail_closed_naming_the_hook() {
    for (config, want, fuel) in [
        ("trap@before", "trapped in before-call", "50000000"),
        ("trap@after", "trapped in after-call", "50000000"),
        ("trap@start", "trapped in on-start", "50000000"),
        ("loop@before", "ran out of fuel", "50000000"),
        // Enough fuel that the memory limit is what stops it.
        ("alloc@before", "exceeded its memory limit of 64 MiB", "100000000000"),
    ] {
        let dir = tempdir();
        let r = run(with_hook(dir.path(), "essay-mini.json", "1", "chaos-hook", config).args(["--hook-fuel", fuel]));
        r.assert_code(HOOK_FAILED);
        let s = r.json();
        let msg = s["stop_reason"]["message"].as_str().unwrap();
        assert!(msg.contains("hook 'chaos-hook'") && msg.contains(want), "{config}: {msg}");
        assert_eq!(s["stop_reason"]["source"], "hook_failed", "{config}: a failure, not a policy");
        assert!(s["calls"].as_u64().unwrap() <= 1, "{config}: no spending after the failure");
        let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
        assert!(!events(&log, "hook_failure").is_empty());
    }
}

#[test]
fn a_looping_hook_is_stopped_by_its_time_limit() {
    let dir = tempdir();
    let r = run(with_hook(dir.path(), "essay-mini.json", "1", "chaos-hook", "loop@before").args(["--hook-fuel", "100000000000", "--hook-timeout-ms", "200"]));
    r.assert_code(HOOK_FAILED);
    assert!(r.json()["stop_reason"]["message"].as_str().unwrap().contains("time limit"));
}

#[test]
fn fail_open_disables_the_hook_and_goes_on() {
    let dir = tempdir();
    let r = run(with_hook(dir.path(), "essay-mini.json", "1", "chaos-hook", "trap@before").args(["--hook-failure", "open"]));
    r.assert_code(0);
    assert_eq!(r.json()["calls"], 10);
    assert!(r.stderr.contains("the hook is disabled"));
}

#[test]
fn wrong_world_and_other_major_version_are_refused() {
    let dir = tempdir();
    // An agent given as a hook.
    let r = run(scripted(dir.path(), "essay-mini.json", "1").arg("--hook").arg(plugin("essay-agent")));
    r.assert_code(USAGE);
    assert!(r.stderr.contains("does not implement the hook world") && r.stderr.contains("it is a agent") || r.stderr.contains("not an hook"), "{}", r.stderr);
    // A hook built for WIT 0.2.
    let other = dir.path().join("v2.wasm");
    std::fs::write(&other, wat::parse_str(r#"(component (instance $i) (export "budget-host:plugin/policy@0.2.0" (instance $i)))"#).unwrap()).unwrap();
    let r = run(scripted(dir.path(), "essay-mini.json", "1").arg("--hook").arg(&other));
    r.assert_code(USAGE);
    assert!(r.stderr.contains("budget-host:plugin@0.2.0"), "{}", r.stderr);
}

#[test]
fn validate_and_precompile() {
    let mut c = host();
    c.arg("validate").arg(plugin("essay-agent"));
    let r = run(&mut c);
    r.assert_code(0);
    assert!(r.stdout.contains("agent component, WIT budget-host:plugin@0.1.0"), "{}", r.stdout);
    assert!(r.stdout.contains("budget-host:plugin/llm@0.1.0"));
    let mut c = host();
    c.arg("validate").arg(plugin("budget-monitor"));
    let r = run(&mut c);
    r.assert_code(0);
    assert!(r.stdout.contains("hook component"));
    let dir = tempdir();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    let mut c = host();
    c.arg("validate").arg(&core);
    run(&mut c).assert_code(USAGE);
    // Precompiling fills the sealed cache only: there is no artifact file to
    // hand around (loading one would be loading native code).
    let cache = dir.path().join("cache");
    let mut c = host();
    c.env("BUDGET_HOST_CACHE", &cache).arg("precompile").arg(plugin("essay-agent"));
    let r = run(&mut c);
    r.assert_code(0);
    assert!(r.stdout.contains("compiled into the cache"), "{}", r.stdout);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1, "one sealed entry");
    let mut c = host();
    c.arg("precompile").arg(plugin("essay-agent")).arg("-o").arg(dir.path().join("agent.cwasm"));
    run(&mut c).assert_code(USAGE);
}
