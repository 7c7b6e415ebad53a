//! Components written in JavaScript, Python and C (built by `make plugins` through
//! plugins/polyglot.mk) on the real host: the three hooks' policies taking effect on
//! the Rust essay agent, the Python essay agent under a budget, and `validate`.

use crate::basics::scripted;
use crate::util::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

const TOKEN_CAP_JS: &str = "hook-token-cap-js";
const SPEND_RATE_PY: &str = "hook-spend-rate-py";
const OP_CAP_C: &str = "hook-op-cap-c";
const ESSAY_PY: &str = "essay-agent-py";

/// `plugin(name)`, compiled into the shared cache first. These components take up to a
/// minute each to compile: the first test to need one compiles it (`host validate`) while
/// the others wait, rather than all compiling it at once on a cold cache.
fn compiled(name: &str) -> PathBuf {
    static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let path = plugin(name);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if !done.iter().any(|n| n == name) {
        let mut c = host();
        c.arg("validate").arg(&path);
        run(&mut c).assert_code(0);
        done.push(name.to_string());
    }
    path
}

/// `--hook FILE.wasm=CONFIG`
fn hook_arg(name: &str, config: &str) -> String {
    format!("{}={config}", compiled(name).display())
}

/// The Rust essay agent on a script, with `--json` and the given hooks (in priority order).
fn essay_with(dir: &Path, script: &str, budget: &str, hooks: &[(&str, &str)]) -> Command {
    let mut c = scripted(dir, script, budget);
    for (name, config) in hooks {
        c.args(["--hook", &hook_arg(name, config)]);
    }
    c.arg("--json");
    c
}

/// The Python essay agent on a script, with `--json`.
fn essay_py(dir: &Path, script: &str, budget: &str) -> Command {
    let mut c = host();
    c.arg("run").arg(compiled(ESSAY_PY)).arg("--checkpoint-dir").arg(dir);
    c.args(["--provider", "scripted", "--script"]).arg(fixture(script)).args(["--budget", budget, "--json"]);
    c
}

fn resume(checkpoint: &Value, budget: &str) -> Run {
    let mut c = host();
    c.args(["resume", checkpoint.as_str().expect("the summary names a checkpoint"), "--budget", budget, "--json"]);
    run(&mut c)
}

fn log_in(dir: &Path) -> Vec<Value> {
    read_log(&dir.join("budget_monitoring.jsonl"))
}

/// The log lines written by the last process that appended to the log (a resume appends).
fn last_segment(log: &[Value]) -> &[Value] {
    let start = log.iter().rposition(|e| e["event"] == "budget_monitoring_start").expect("a start line");
    &log[start..]
}

/// The `data` of the `plugin_event`s a hook emitted under `name`.
fn emitted<'a>(log: &'a [Value], hook: &str, name: &str) -> Vec<&'a Value> {
    log.iter().filter(|e| e["event"] == "plugin_event" && e["plugin"] == hook && e["name"] == name).map(|e| &e["data"]).collect()
}

fn decisions<'a>(log: &'a [Value], hook: &str, hook_event: &str) -> Vec<&'a str> {
    events(log, "hook_decision")
        .into_iter()
        .filter(|d| d["hook"] == hook && d["hook_event"] == hook_event)
        .map(|d| d["decision"].as_str().unwrap())
        .collect()
}

fn operations(log: &[Value]) -> Vec<String> {
    events(log, "llm_call").iter().map(|c| c["operation"].as_str().unwrap().to_string()).collect()
}

fn cycle_ops(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|n| format!("llm_call_cycle_{n}")).collect()
}

fn nanos(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

fn sum_cost(log: &[Value]) -> u64 {
    events(log, "llm_call").iter().map(|c| nanos(&c["cost_nanos"])).sum()
}

fn message(s: &Value) -> &str {
    s["stop_reason"]["message"].as_str().unwrap_or_else(|| panic!("no stop message: {s}"))
}

/// JavaScript: the seed's exhaustion case (about $0.0169 a call against $0.10) runs to
/// the end once the hook caps gpt-4o at 300 output tokens; a cheap model is left alone,
/// and from the 50% threshold the hook sees, every model is capped.
#[test]
fn js_token_cap_lowers_max_tokens_on_an_expensive_model() {
    // Without the hook this run stops at the budget (exit 3)...
    let dir = tempdir();
    let r = run(essay_with(dir.path(), "essay-gpt4o.json", "0.10", &[]).args(["--max-tokens", "2000"]));
    r.assert_code(BUDGET);

    // ...with it, every call runs at 300 tokens and the essay is finished.
    let dir = tempdir();
    let r = run(essay_with(dir.path(), "essay-gpt4o.json", "0.10", &[(TOKEN_CAP_JS, "max-tokens=300")]).args(["--max-tokens", "2000"]));
    r.assert_code(0);
    let s = r.json();
    assert_eq!(s["status"], "completed");
    assert_eq!(s["calls"], 10);
    let log = log_in(dir.path());
    assert_eq!(operations(&log), cycle_ops(1..=10));
    for c in events(&log, "llm_call") {
        assert_eq!(c["max_tokens"], 300, "{c}");
        assert!(nanos(&c["output_tokens"]) <= 300, "{c}");
    }
    assert_eq!(decisions(&log, TOKEN_CAP_JS, "before-call"), vec!["limit 300"; 10]);
    assert_eq!(sum_cost(&log), nanos(&s["spent_nanos"]));
    assert!(nanos(&s["spent_nanos"]) < 100_000_000);
    let summary = emitted(&log, TOKEN_CAP_JS, "token_cap_summary");
    assert_eq!(summary.len(), 1);
    assert_eq!((summary[0]["calls"].as_u64(), summary[0]["limited"].as_u64(), summary[0]["denied"].as_u64()), (Some(10), Some(10), Some(0)));

    // gpt-4o-mini is not on the expensive list: the host's 512 stands until the run
    // crosses 50% of its budget; from then on the hook caps every model.
    let dir = tempdir();
    let r = run(&mut essay_with(dir.path(), "essay-mini.json", "0.001", &[(TOKEN_CAP_JS, "max-tokens=64;tighten-at=0.5")]));
    r.assert_code(0);
    let log = log_in(dir.path());
    let calls = events(&log, "llm_call");
    assert_eq!(calls.len(), 10);
    let half = calls.iter().position(|c| nanos(&c["cumulative_nanos"]) >= 500_000).expect("the run crosses 50%");
    assert!(half < 9, "the 50% threshold must come before the last call");
    for (i, c) in calls.iter().enumerate() {
        let want = if i <= half { 512 } else { 64 };
        assert_eq!(c["max_tokens"], want, "call {}: {c}", i + 1);
    }
    let d = decisions(&log, TOKEN_CAP_JS, "before-call");
    assert_eq!(d.len(), 10);
    assert!(d[..=half].iter().all(|d| *d == "allow") && d[half + 1..].iter().all(|d| *d == "limit 64"), "{d:?}");
    assert_eq!(emitted(&log, TOKEN_CAP_JS, "token_cap_summary")[0]["tightened"], true);
}

/// JavaScript: a call to a deny-listed model is refused before it is made or charged.
#[test]
fn js_token_cap_denies_a_deny_listed_model() {
    let dir = tempdir();
    let r = run(essay_with(dir.path(), "essay-mini.json", "1", &[(TOKEN_CAP_JS, "deny=claude-opus*")]).args(["--model", "claude-opus-4-5"]));
    // The Rust essay agent's step fails on the denied call: the hook stopped the run.
    r.assert_code(HOOK);
    let s = r.json();
    assert_eq!((s["calls"].as_u64(), s["spent_nanos"].as_u64()), (Some(0), Some(0)));
    assert_eq!(s["stop_reason"]["source"], "hook");
    assert!(message(&s).contains("hook 'hook-token-cap-js'") && message(&s).contains("claude-opus-4-5 is deny-listed"), "{s}");
    let log = log_in(dir.path());
    assert!(events(&log, "llm_call").is_empty());
    let refused = events(&log, "llm_call_refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["reason"], "hook_denied");
    assert_eq!(refused[0]["operation"], "llm_call_cycle_1");
    assert!(refused[0]["detail"].as_str().unwrap().starts_with("hook 'hook-token-cap-js': "), "{}", refused[0]);
    assert_eq!(decisions(&log, TOKEN_CAP_JS, "before-call"), ["deny: token-cap: model claude-opus-4-5 is deny-listed"]);
    assert_eq!(events(&log, "interrupt")[0]["source"], "hook");
    assert_eq!(emitted(&log, TOKEN_CAP_JS, "token_cap_summary")[0]["denied"], 1);

    // The same hook lets a model that is not on the list through.
    let dir = tempdir();
    let r = run(&mut essay_with(dir.path(), "essay-mini.json", "1", &[(TOKEN_CAP_JS, "deny=claude-opus*")]));
    r.assert_code(0);
    assert_eq!(r.json()["calls"], 10);
    assert!(events(&log_in(dir.path()), "llm_call_refused").is_empty());
}

/// Python: more than $0.02 in a 10-minute window stops the run (source `hook`, exit 6).
/// The window is hook state: it goes into the checkpoint, so after `host resume` the
/// spending from before the stop still counts and the first new call trips the limit
/// again (a fresh limiter would allow two calls).
#[test]
fn py_spend_rate_interrupts_and_its_window_survives_resume() {
    let dir = tempdir();
    let rate = "usd-per-minute=0.002;window-s=600";
    let r = run(essay_with(dir.path(), "essay-gpt4o.json", "1.0", &[(SPEND_RATE_PY, rate)]).args(["--max-tokens", "2000"]));
    r.assert_code(HOOK);
    let s = r.json();
    assert_eq!(s["status"], "interrupted");
    assert_eq!(s["stop_reason"]["source"], "hook");
    assert_eq!(s["stop_reason"]["mode"], "graceful");
    assert!(message(&s).starts_with("hook 'hook-spend-rate-py': spend-rate: ") && message(&s).contains("exceeds $0.020000"), "{s}");
    // $0.0145 + $0.0167: the second call crosses $0.02; graceful lets its cycle finish.
    assert_eq!((s["calls"].as_u64(), s["cycles"].as_u64()), (Some(2), Some(2)));
    let spent = nanos(&s["spent_nanos"]);
    assert!(spent > 20_000_000);
    let log = log_in(dir.path());
    assert_eq!(sum_cost(&log), spent);
    let after = decisions(&log, SPEND_RATE_PY, "after-call");
    assert_eq!(after.len(), 1, "one interrupt request: {after:?}");
    assert!(after[0].starts_with("interrupt (") && after[0].contains("Graceful"), "{after:?}");
    let interrupt = events(&log, "interrupt");
    assert_eq!(interrupt.len(), 1);
    assert_eq!(interrupt[0]["source"], "hook");
    assert_eq!(events(&log, "checkpoint_saved").last().unwrap()["reason"], "interrupt");
    assert_eq!(emitted(&log, SPEND_RATE_PY, "spend_rate_summary")[0]["interrupts"], 1);

    let r = resume(&s["checkpoint"], "1.0");
    r.assert_code(HOOK);
    let s2 = r.json();
    assert_eq!(s2["stop_reason"]["source"], "hook");
    let log = log_in(dir.path());
    let seg = last_segment(&log);
    // One call, and the window held all three.
    assert_eq!(operations(seg), ["llm_call_cycle_3"]);
    let total = nanos(&s2["spent_nanos"]);
    assert_eq!(total, sum_cost(&log));
    let summary = emitted(seg, SPEND_RATE_PY, "spend_rate_summary");
    assert_eq!(summary[0]["interrupts"], 2, "the interrupt count came back from the checkpoint");
    let window = (summary[0]["window_spent_usd"].as_f64().unwrap() * 1e9).round() as u64;
    assert_eq!(window, total, "the window holds the calls of both processes");
    assert_eq!(events(seg, "interrupt")[0]["source"], "hook");
}

/// C: a per-operation cap refuses a call. A cap of 0 refuses the operation outright; a
/// spending cap refuses an operation that has already spent it, and that spending is
/// hook state carried through a checkpoint into `host resume`.
#[test]
fn c_op_cap_denies_a_call_over_its_operation_cap() {
    let dir = tempdir();
    let r = run(&mut essay_with(dir.path(), "essay-mini.json", "1", &[(OP_CAP_C, "llm_call_cycle_3=0")]));
    // A deliberate deny that stops the run reads as the hook's, not as a crash.
    r.assert_code(HOOK);
    let s = r.json();
    assert_eq!(s["calls"], 2);
    assert_eq!(s["stop_reason"]["source"], "hook");
    assert!(message(&s).contains("hook 'hook-op-cap-c' denied a call: op-cap: "), "{s}");
    let log = log_in(dir.path());
    assert_eq!(operations(&log), cycle_ops(1..=2));
    let refused = events(&log, "llm_call_refused");
    assert_eq!(refused.len(), 1);
    assert_eq!((&refused[0]["operation"], &refused[0]["reason"]), (&Value::from("llm_call_cycle_3"), &Value::from("hook_denied")));
    let d = decisions(&log, OP_CAP_C, "before-call");
    assert_eq!(d.len(), 3);
    assert!(d[..2].iter().all(|d| *d == "allow") && d[2].starts_with("deny: op-cap: "), "{d:?}");
    assert_eq!(emitted(&log, OP_CAP_C, "op_cap_summary")[0]["denied"], 1);

    // Every operation may spend $0.01. The spend-rate hook stops the run immediately after
    // the second call ($0.0167 for llm_call_cycle_2), inside its cycle: the agent never saw
    // the answer, so on resume it asks for section 2 again, and the C hook, its ledger
    // restored from the checkpoint, refuses: that operation has spent its cap.
    let dir = tempdir();
    let hooks = [(SPEND_RATE_PY, "usd-per-minute=0.002;window-s=600;mode=immediate"), (OP_CAP_C, "*=0.01")];
    let r = run(essay_with(dir.path(), "essay-gpt4o.json", "1.0", &hooks).args(["--max-tokens", "2000"]));
    r.assert_code(HOOK);
    let s = r.json();
    assert_eq!(s["stop_reason"]["mode"], "immediate");
    assert_eq!((s["calls"].as_u64(), s["cycles"].as_u64()), (Some(2), Some(1)));
    let log = log_in(dir.path());
    assert_eq!(decisions(&log, OP_CAP_C, "before-call"), ["allow", "allow"]);
    let spent = &emitted(&log, OP_CAP_C, "op_cap_summary")[0]["spent_usd"];
    assert!(spent["llm_call_cycle_2"].as_f64().unwrap() > 0.01, "{spent}");

    let r = resume(&s["checkpoint"], "1.0");
    // The deny stopped the run (the agent's step failed on it): the hook's stop, exit 6.
    r.assert_code(HOOK);
    let log = log_in(dir.path());
    let seg = last_segment(&log);
    assert!(operations(seg).is_empty(), "no call after the resume: {:?}", operations(seg));
    let refused = events(seg, "llm_call_refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["operation"], "llm_call_cycle_2");
    assert_eq!(refused[0]["reason"], "hook_denied");
    assert_eq!(refused[0]["detail"], "hook 'hook-op-cap-c': op-cap: operation llm_call_cycle_2 has spent $0.016700 of its $0.010000 cap");
    assert_eq!(emitted(seg, OP_CAP_C, "op_cap_summary")[0]["denied"], 1);
    assert_eq!(nanos(&r.json()["spent_nanos"]), sum_cost(&log), "nothing was charged after the resume");
}

/// The Python essay agent writes all ten sections within a budget.
#[test]
fn python_essay_agent_completes_within_budget() {
    let dir = tempdir();
    let r = run(&mut essay_py(dir.path(), "essay-mini.json", "1.0"));
    r.assert_code(0);
    let s = r.json();
    assert_eq!(s["status"], "completed");
    assert_eq!((s["calls"].as_u64(), s["cycles"].as_u64()), (Some(10), Some(10)));
    let sections: Vec<&str> = s["result"].as_str().unwrap().split("\n\n").collect();
    assert_eq!(sections.len(), 10, "{}", s["result"]);
    assert!(sections.iter().all(|p| !p.trim().is_empty()));
    // Human output goes to stderr with --json: the agent's progress lines.
    assert!(r.stderr.contains("CYCLE 1: Writing introduction paragraph...") && r.stderr.contains("CYCLE 10: done"), "{}", r.stderr);
    let log = log_in(dir.path());
    assert_eq!(operations(&log), cycle_ops(1..=10));
    let end = events(&log, "budget_monitoring_end");
    assert_eq!(end.len(), 1);
    assert_eq!(nanos(&end[0]["total_cost_nanos"]), nanos(&s["spent_nanos"]));
    assert_eq!(sum_cost(&log), nanos(&s["spent_nanos"]));
    assert_eq!(end[0]["status"], "completed");
}

/// The Rust agent's exhaustion case, with the Python agent: it stops with spent <= $0.10
/// (exit 3), keeps its essay in the checkpoint, and `host resume --budget 1.0` writes
/// exactly the missing sections.
#[test]
fn python_essay_agent_stops_at_the_budget_and_resume_finishes() {
    let dir = tempdir();
    let r = run(essay_py(dir.path(), "essay-gpt4o.json", "0.10").args(["--max-tokens", "2000"]));
    r.assert_code(BUDGET);
    let s = r.json();
    let spent = nanos(&s["spent_nanos"]);
    assert!(spent <= 100_000_000, "overspent: {spent}");
    assert!(spent >= 90_000_000, "stopped too early: {spent}");
    assert_eq!(s["stop_reason"]["source"], "budget");
    let log = log_in(dir.path());
    assert_eq!(sum_cost(&log), spent);
    let done = operations(&log);
    assert!((4..10).contains(&done.len()), "{done:?}");
    assert_eq!(done, cycle_ops(1..=done.len() as u32));
    let refused = events(&log, "llm_call_refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["reason"], "budget_exhausted");
    assert_eq!(events(&log, "interrupt")[0]["source"], "budget");
    assert_eq!(events(&log, "checkpoint_saved").last().unwrap()["reason"], "interrupt");
    for c in events(&log, "llm_call") {
        assert!(nanos(&c["cost_nanos"]) <= nanos(&c["reserved_nanos"]), "{c}");
    }

    let r = resume(&s["checkpoint"], "1.0");
    r.assert_code(0);
    let s2 = r.json();
    assert_eq!(s2["status"], "completed");
    let log = log_in(dir.path());
    // Each section written once, over both processes, in order; the resume starts at the
    // section the budget refused.
    assert_eq!(operations(&log), cycle_ops(1..=10));
    assert_eq!(operations(last_segment(&log))[0], refused[0]["operation"].as_str().unwrap());
    assert_eq!(nanos(&s2["spent_nanos"]), sum_cost(&log));
    assert_eq!(s2["result"].as_str().unwrap().split("\n\n").count(), 10);
    assert_eq!(events(&log, "budget_monitoring_end").last().unwrap()["status"], "completed");
}

#[test]
fn validate_recognises_the_polyglot_components() {
    for (name, world) in [(TOKEN_CAP_JS, "hook"), (SPEND_RATE_PY, "hook"), (OP_CAP_C, "hook"), (ESSAY_PY, "agent")] {
        let mut c = host();
        c.arg("validate").arg(compiled(name));
        let r = run(&mut c);
        r.assert_code(0);
        let first = r.stdout.lines().next().unwrap_or_default();
        assert!(first.ends_with(&format!("{name}.wasm: {world} component, WIT budget-host:plugin@0.1.0")), "{name}: {}", r.stdout);
        assert!(r.stdout.contains("  budget-host:plugin/log@0.1.0\n"), "{name}: {}", r.stdout);
        let export = if world == "hook" { "  budget-host:plugin/policy@0.1.0\n" } else { "  budget-host:plugin/run@0.1.0\n" };
        assert!(r.stdout.contains(export), "{name}: {}", r.stdout);
        assert!(r.stdout.ends_with("ok: this host can run it\n"), "{name}: {}", r.stdout);
    }
}

/// `host validate X | head`: once the reader is gone the host dies of SIGPIPE, quietly,
/// like other Unix tools, instead of panicking in println! (exit 101).
#[test]
fn validate_into_a_closed_pipe_dies_quietly_of_sigpipe() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = host().arg("validate").arg(plugin("essay-agent")).stdout(writer).stderr(std::process::Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}\n{stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
