//! The foundation: a run under a budget, providers, the log, bad input.

use crate::util::*;
use serde_json::Value;
use std::path::Path;


pub fn essay(dir: &Path) -> std::process::Command {
    let mut c = host();
    c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir);
    c
}

pub fn scripted(dir: &Path, script: &str, budget: &str) -> std::process::Command {
    let mut c = essay(dir);
    c.args(["--provider", "scripted", "--script"]).arg(fixture(script)).args(["--budget", budget]);
    c
}

fn sum_nanos(log: &[Value], event: &str, field: &str) -> u64 {
    events(log, event).iter().map(|e| e[field].as_u64().unwrap()).sum()
}

#[test]
fn completes_within_budget_with_breakdown() {
    let dir = tempdir();
    let r = run(&mut scripted(dir.path(), "essay-mini.json", "1.0"));
    r.assert_code(0);
    for n in 1..=10 {
        assert!(r.stdout.contains(&format!("CYCLE {n}: ")), "no CYCLE {n}:\n{}", r.stdout);
    }
    assert!(r.stdout.contains("✅ Task completed within budget!"));
    assert!(r.stdout.contains("💰 COST BREAKDOWN"));
    assert!(r.stdout.contains("  Total: 10\n"));
    assert!(r.stdout.contains("  llm_call_cycle_10: $"));
    assert!(r.stdout.contains("SCRIPTED"), "scripted output must say so");
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    assert_eq!(log.first().unwrap()["event"], "budget_monitoring_start");
    assert_eq!(log.last().unwrap()["event"], "budget_monitoring_end");
    assert_eq!(events(&log, "llm_call").len(), 10);
    let end = log.last().unwrap();
    assert_eq!(end["operations"], 10);
    assert_eq!(end["total_cost_nanos"].as_u64().unwrap(), sum_nanos(&log, "llm_call", "cost_nanos"));
    assert_eq!(end["cost_by_operation"].as_object().unwrap().len(), 10);
    assert_no_anomalies(&log);
}

/// The seed's exhaustion case: about $0.0169 a call against $0.10. The seed
/// overshoots to $0.1015; we stop with spent <= $0.10, and the log, the
/// breakdown and the JSON summary agree to the nano-dollar.
#[test]
fn budget_exhaustion_never_overspends() {
    let dir = tempdir();
    let r = run(scripted(dir.path(), "essay-gpt4o.json", "0.10").args(["--max-tokens", "2000", "--json"]));
    r.assert_code(BUDGET);
    let s = r.json();
    let spent = s["spent_nanos"].as_u64().unwrap();
    assert!(spent <= 100_000_000, "overspent: {spent}");
    assert!(spent >= 90_000_000, "stopped too early: {spent}");
    assert_eq!(s["status"], "interrupted");
    assert_eq!(s["stop_reason"]["source"], "budget");
    assert_eq!(s["stop_reason"]["mode"], "graceful");
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let calls = events(&log, "llm_call");
    assert_no_anomalies(&log);
    assert_eq!(sum_nanos(&log, "llm_call", "cost_nanos"), spent);
    assert_eq!(calls.last().unwrap()["cumulative_nanos"].as_u64().unwrap(), spent);
    let end = events(&log, "budget_monitoring_end")[0];
    assert_eq!(end["total_cost_nanos"].as_u64().unwrap(), spent);
    let by_op: u64 = s["cost_by_operation"].as_object().unwrap().values().map(|v| v["cost_nanos"].as_u64().unwrap()).sum();
    assert_eq!(by_op, spent);
    // The last call that ran was shortened to fit; the next one was refused.
    assert!(calls.iter().any(|c| c["max_tokens_lowered"] == true));
    assert_eq!(events(&log, "llm_call_refused").len(), 1);
    assert_eq!(events(&log, "interrupt")[0]["source"], "budget");
    // Every call's reservation fitted what was left: no call could overspend.
    for c in &calls {
        assert!(c["cost_nanos"].as_u64().unwrap() <= c["reserved_nanos"].as_u64().unwrap());
    }
}

#[test]
fn human_output_for_exhaustion_has_stop_block_and_warnings_once() {
    let dir = tempdir();
    let r = run(scripted(dir.path(), "essay-gpt4o.json", "0.10").args(["--max-tokens", "2000"]));
    r.assert_code(BUDGET);
    let out = &r.stdout;
    assert!(out.contains("💰 Budget limit reached: $0.09"), "{out}");
    assert!(out.contains("   Source: BUDGET\n   Mode: GRACEFUL\n"));
    assert!(out.contains("   Cycles completed: "));
    for pct in ["Budget warning: 6", "Budget warning: 85", "Budget warning: 9"] {
        assert_eq!(out.matches(pct).count(), 1, "{pct} not exactly once:\n{out}");
    }
    assert_eq!(out.matches("⚠️  Budget warning:").count(), 3);
    // Warnings come between cycles, in order.
    let w50 = out.find("Budget warning: 6").unwrap();
    assert!(out.find("CYCLE 4:").unwrap() < w50 && w50 < out.find("CYCLE 5:").unwrap());
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let thresholds: Vec<f64> = events(&log, "budget_warning").iter().map(|e| e["threshold"].as_f64().unwrap()).collect();
    assert_eq!(thresholds, vec![0.5, 0.8, 0.9]);
    // The breakdown's total equals the log's, printed the seed's way.
    let spent = events(&log, "budget_monitoring_end")[0]["total_cost"].as_f64().unwrap();
    assert!(out.contains(&format!("Total Cost: ${spent:.4}\n")));
}

#[test]
fn immediate_mode_stops_in_the_step() {
    let dir = tempdir();
    let r = run(scripted(dir.path(), "essay-gpt4o.json", "0.10").args(["--max-tokens", "2000", "--mode", "immediate", "--json"]));
    r.assert_code(BUDGET);
    let s = r.json();
    assert_eq!(s["stop_reason"]["mode"], "immediate");
    assert!(s["spent_nanos"].as_u64().unwrap() <= 100_000_000);
}

#[test]
fn missing_usage_charges_the_reservation() {
    let dir = tempdir();
    let r = run(scripted(dir.path(), "no-usage.json", "1.0").args(["--max-cycles", "2", "--json"]));
    r.assert_code(0);
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    for c in events(&log, "llm_call") {
        assert_eq!(c["cost_nanos"], c["reserved_nanos"]);
        assert!(c["anomalies"][0].as_str().unwrap().contains("no usage"));
    }
    assert_eq!(r.json()["status"], "max_cycles");
}

#[test]
fn openai_provider_against_recorded_server() {
    let server = Server::start(vec![Canned::from_fixture(&shared_fixture("response-basic.http"))]);
    let dir = tempdir();
    let r = run(essay(dir.path())
        .args(["--provider", "openai", "--base-url"])
        .arg(format!("{}/v1", server.url))
        .args(["--model", "gpt-4o-mini", "--budget", "0.10", "--max-cycles", "3", "--json"])
        .env("OPENAI_API_KEY", "sk-test-secret-key"));
    r.assert_code(0);
    let s = r.json();
    assert_eq!(s["calls"], 3);
    // 35 prompt + 48 completion tokens at gpt-4o-mini prices: 34_050 nano-USD a call.
    assert_eq!(s["spent_nanos"], 3 * 34_050);
    assert_eq!(s["input_tokens"], 3 * 35);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0]["model"], "gpt-4o-mini");
    assert!(reqs[0]["max_tokens"].as_u64().unwrap() > 0, "max_tokens always sent");
    assert_eq!(reqs[0]["messages"][0]["role"], "system");
    let log = std::fs::read_to_string(dir.path().join("budget_monitoring.jsonl")).unwrap();
    assert!(!log.contains("sk-test-secret-key") && !r.stdout.contains("sk-test") && !r.stderr.contains("sk-test"));
    assert!(log.contains("\"finish_reason\":\"length\""));
    assert_no_anomalies(&read_log(&dir.path().join("budget_monitoring.jsonl")));
}

/// OpenAI's reasoning models reject `max_tokens`: they get `max_completion_tokens`.
#[test]
fn reasoning_models_are_sent_max_completion_tokens() {
    let server = Server::start(vec![Canned::from_fixture(&shared_fixture("response-basic.http"))]);
    let dir = tempdir();
    let prices = dir.path().join("prices.json");
    std::fs::write(&prices, r#"{"o4-mini": {"input": 1.1, "output": 4.4}}"#).unwrap();
    let r = run(essay(dir.path())
        .args(["--provider", "openai", "--base-url"])
        .arg(format!("{}/v1", server.url))
        .args(["--model", "o4-mini", "--budget", "0.10", "--max-cycles", "1", "--max-tokens", "300", "--json", "--prices"])
        .arg(&prices));
    r.assert_code(0);
    let req = &server.requests()[0];
    assert_eq!(req["max_completion_tokens"], 300, "{req}");
    assert!(req.get("max_tokens").is_none(), "{req}");
}

#[test]
fn openai_length_fixture_and_server_error() {
    // finish_reason length with 5 tokens, then a 500 every time: the run stops with a clear error.
    let server = Server::start(vec![
        Canned::from_fixture(&shared_fixture("response-length.http")),
        Canned::from_fixture(&shared_fixture("response-bad-request.http")),
    ]);
    let dir = tempdir();
    let r = run(essay(dir.path())
        .args(["--provider", "openai", "--base-url"])
        .arg(format!("{}/v1", server.url))
        .args(["--model", "gpt-4o-mini", "--budget", "0.10"]));
    r.assert_code(FAILURE);
    assert!(r.stdout.contains("HTTP 500"), "{}", r.stdout);
    assert!(r.stdout.contains("1 validation error"));
    assert!(r.stdout.contains("Source: ERROR"));
    // 1 good call + 4 attempts at the failing one (3 retries).
    assert_eq!(server.requests().len(), 5);
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    assert_eq!(events(&log, "llm_call").len(), 1);
    assert_eq!(events(&log, "llm_call")[0]["output_tokens"], 5);
    assert_no_anomalies(&log);
    let failed = events(&log, "llm_call_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["charged_nanos"], 0, "an HTTP error is not charged");
    assert_eq!(events(&log, "budget_monitoring_end").len(), 1);
}

#[test]
fn ollama_provider_against_server() {
    let body = r#"{"model":"llama3.1","created_at":"2026-11-29T20:00:00Z","message":{"role":"assistant","content":"AI began with a question."},"done":true,"done_reason":"stop","total_duration":1,"prompt_eval_count":31,"eval_count":7}"#;
    let server = Server::start(vec![Canned::json(200, body)]);
    let dir = tempdir();
    let prices = dir.path().join("prices.json");
    std::fs::write(&prices, r#"{"llama3.1": {"input": 1.0, "output": 2.0}}"#).unwrap();
    let r = run(essay(dir.path())
        .args(["--provider", "ollama", "--ollama-host"])
        .arg(&server.url)
        .arg("--prices")
        .arg(&prices)
        .args(["--budget", "1", "--max-cycles", "2", "--json"]));
    r.assert_code(0);
    let s = r.json();
    assert_eq!(s["calls"], 2);
    assert_eq!(s["spent_nanos"], 2 * (31 * 1000 + 7 * 2000));
    let reqs = server.requests();
    assert_eq!(reqs[0]["stream"], false);
    assert!(reqs[0]["options"]["num_predict"].as_u64().unwrap() > 0);
}

#[test]
fn ollama_without_counts_charges_reservation_free_model() {
    let body = r#"{"model":"llama3.1","message":{"role":"assistant","content":"ok"},"done":true}"#;
    let server = Server::start(vec![Canned::json(200, body)]);
    let dir = tempdir();
    let r = run(essay(dir.path()).args(["--provider", "ollama", "--ollama-host"]).arg(&server.url).args(["--budget", "1", "--max-cycles", "1", "--json"]));
    r.assert_code(0);
    assert_eq!(r.json()["spent_nanos"], 0, "an unpriced local ollama model is free");
}

#[test]
fn refused_connection_is_a_clear_error() {
    let dir = tempdir();
    let r = run(essay(dir.path()).args(["--provider", "openai", "--base-url"]).arg(format!("{}/v1", refused_url())).args(["--budget", "1"]));
    r.assert_code(FAILURE);
    assert!(r.stdout.contains("cannot connect to"), "{}", r.stdout);
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    assert_eq!(events(&log, "llm_call_failed").len(), 1);
}

/// OpenAI's own API refuses every call without a key: refused before the run,
/// nothing written, no request sent. A name that does not resolve will not
/// heal either: one attempt, a clear error.
#[test]
fn openai_without_a_key_is_refused_before_the_run_and_dns_failures_are_not_retried() {
    let dir = tempdir();
    let r = run(essay(dir.path()).args(["--provider", "openai", "--model", "gpt-4o-mini", "--budget", "1"]));
    r.assert_code(USAGE);
    assert!(r.stderr.contains("needs an API key: set OPENAI_API_KEY"), "{}", r.stderr);
    assert!(!dir.path().join("budget_monitoring.jsonl").exists(), "the run never started");

    let dir = tempdir();
    let r = run(essay(dir.path()).args(["--provider", "openai", "--base-url", "http://budget-host-test.invalid/v1", "--budget", "1", "--json"]));
    r.assert_code(FAILURE);
    let s = r.json();
    let msg = s["stop_reason"]["message"].as_str().unwrap();
    assert!(msg.contains("cannot resolve the host") && msg.contains("after 1 attempt"), "{msg}");
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let f = events(&log, "llm_call_failed")[0];
    assert_eq!((f["attempts"].as_u64(), f["charged_nanos"].as_u64()), (Some(1), Some(0)));
}

#[test]
fn malformed_json_from_provider() {
    let server = Server::start(vec![Canned::json(200, "{\"choices\": [")]);
    let dir = tempdir();
    let r = run(essay(dir.path()).args(["--provider", "openai", "--base-url"]).arg(format!("{}/v1", server.url)).args(["--budget", "1", "--json"]));
    r.assert_code(FAILURE);
    let s = r.json();
    assert!(s["stop_reason"]["message"].as_str().unwrap().contains("malformed response"));
    // A 200 with a broken body may have been billed: the reservation is charged, never more.
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let f = events(&log, "llm_call_failed")[0];
    assert!(f["charged_nanos"].as_u64().unwrap() > 0);
    assert_eq!(s["spent_nanos"], f["charged_nanos"]);
}

#[test]
fn bad_budgets_are_refused() {
    for b in ["0", "-1", "NaN", "inf", "abc", "1e12"] {
        let dir = tempdir();
        let r = run(&mut scripted(dir.path(), "essay-mini.json", b));
        r.assert_code(USAGE);
        assert!(r.stderr.starts_with("error: --budget"), "{b}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
    }
}

#[test]
fn bad_price_files_are_refused() {
    let dir = tempdir();
    for (name, text) in [("a.json", "{not json"), ("b.json", r#"{"gpt-4o": {"input": "x", "output": 1}}"#), ("c.json", r#"{"gpt-4o": {"input": -1, "output": 1}}"#)] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let r = run(scripted(dir.path(), "essay-mini.json", "1").arg("--prices").arg(&p));
        r.assert_code(USAGE);
        assert!(r.stderr.contains(name), "{}", r.stderr);
    }
}

#[test]
fn unpriced_paid_model_is_refused_before_any_call() {
    let server = Server::start(vec![Canned::from_fixture(&shared_fixture("response-basic.http"))]);
    let dir = tempdir();
    let r = run(essay(dir.path()).args(["--provider", "openai", "--base-url"]).arg(format!("{}/v1", server.url)).args(["--model", "mystery-model", "--budget", "1"]));
    r.assert_code(USAGE);
    assert!(r.stderr.contains("no price for model 'mystery-model'"));
    assert!(server.requests().is_empty());
}

#[test]
fn bad_agent_files_are_refused() {
    let dir = tempdir();
    let missing = dir.path().join("nope.wasm");
    let text = dir.path().join("text.wasm");
    std::fs::write(&text, "hello").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    for (file, want) in [(&missing, "cannot read"), (&text, "not a WebAssembly file"), (&core, "core wasm module, not a component")] {
        let mut c = host();
        c.arg("run").arg(file).args(["--budget", "1", "--provider", "scripted", "--script"]).arg(fixture("essay-mini.json"));
        let r = run(&mut c);
        r.assert_code(USAGE);
        assert!(r.stderr.contains(want), "{want}: {}", r.stderr);
    }
}

#[test]
fn a_component_of_the_wrong_world_is_refused() {
    let dir = tempdir();
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, wat::parse_str("(component)").unwrap()).unwrap();
    let mut c = host();
    c.arg("run").arg(&empty).args(["--budget", "1", "--provider", "scripted", "--script"]).arg(fixture("essay-mini.json"));
    let r = run(&mut c);
    r.assert_code(USAGE);
    assert!(r.stderr.contains("does not implement the agent world: it must export budget-host:plugin/run@0.1.0"), "{}", r.stderr);
}

#[test]
fn fuel_limit_stops_the_run() {
    let dir = tempdir();
    let r = run(scripted(dir.path(), "essay-mini.json", "1").args(["--fuel", "200000", "--json"]));
    r.assert_code(4);
    let s = r.json();
    assert_eq!(s["stop_reason"]["source"], "fuel");
    assert!(s["fuel_used"].as_u64().unwrap() >= 200_000);
}

#[test]
fn fuel_is_recorded_per_call_and_in_total() {
    let dir = tempdir();
    let r = run(scripted(dir.path(), "essay-mini.json", "1").args(["--max-cycles", "3", "--json"]));
    let s = r.json();
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let calls = events(&log, "llm_call");
    let fuel: Vec<u64> = calls.iter().map(|c| c["fuel"].as_u64().unwrap()).collect();
    assert!(fuel.windows(2).all(|w| w[0] < w[1]), "fuel grows call by call: {fuel:?}");
    assert!(s["fuel_used"].as_u64().unwrap() >= *fuel.last().unwrap());
}

/// `--compare MODEL` prices the run's own tokens at another model's rates.
#[test]
fn compare_says_what_the_same_calls_would_cost_on_another_model() {
    let dir = tempdir();
    let r = run(scripted(dir.path(), "essay-gpt4o.json", "1.0").args(["--compare", "gpt-4o", "--compare", "gpt-4o-mini", "--json"]));
    r.assert_code(0);
    let s = r.json();
    let spent = s["spent_nanos"].as_u64().unwrap();
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let (input, output) = events(&log, "llm_call").iter().fold((0, 0), |(i, o), e| (i + e["input_tokens"].as_u64().unwrap(), o + e["output_tokens"].as_u64().unwrap()));
    // Its own model: the run's spend (per-call rounding up at most a nano a call apart).
    let same = s["compare"]["gpt-4o"]["cost_nanos"].as_u64().unwrap();
    assert!(same <= spent && spent - same <= 10, "{same} vs {spent}");
    // gpt-4o-mini at $0.15 / $0.60 per 1M, from the log's own token counts.
    let mini = s["compare"]["gpt-4o-mini"]["cost_nanos"].as_u64().unwrap();
    let want = input * 150 + output * 600;
    assert!(mini.abs_diff(want) <= 10, "{mini} vs {want} ({input} in, {output} out)");
    assert!(r.stderr.contains("on gpt-4o-mini would have cost"), "{}", r.stderr);

    let r = run(scripted(dir.path(), "essay-gpt4o.json", "1.0").args(["--compare", "no-such-model"]));
    r.assert_code(2);
    assert!(r.stderr.contains("--compare no-such-model: no price"), "{}", r.stderr);
}
