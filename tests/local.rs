//! The embedded local model as the default provider: real generation,
//! offline, $0 by default, priced when a price file says so.

use crate::util::*;
use std::path::Path;

fn local(dir: &Path, budget: &str) -> std::process::Command {
    let mut c = host();
    c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir).args(["--budget", budget, "--max-tokens", "24"]);
    c.env("BUDGET_HOST_MODEL", root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    c
}

#[test]
fn the_default_provider_writes_the_essay_for_free() {
    let dir = tempdir();
    let r = run(&mut local(dir.path(), "1.0"));
    r.assert_code(0);
    assert!(r.stdout.contains("🔧 LLM: local/smollm2-135m-instruct (FREE)"), "{}", r.stdout);
    assert!(r.stdout.contains("CYCLE 10: done"));
    assert!(r.stdout.contains("Cost: $0.0000 / $1.0000"));
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let calls = events(&log, "llm_call");
    assert_eq!(calls.len(), 10);
    for c in &calls {
        assert_eq!(c["cost_nanos"], 0);
        assert!(c["output_tokens"].as_u64().unwrap() >= 1 && c["output_tokens"].as_u64().unwrap() <= 24);
        // Exact counts: the reservation's input bound is the real prompt size.
        assert_eq!(c["input_tokens"], c["input_tokens_bound"]);
    }
}

#[test]
fn temperature_zero_is_deterministic() {
    let (da, db) = (tempdir(), tempdir());
    let a = run(local(da.path(), "1").args(["--max-cycles", "2", "--temperature", "0", "--json"])).json();
    let b = run(local(db.path(), "1").args(["--max-cycles", "2", "--temperature", "0", "--json"])).json();
    assert_eq!(a["input_tokens"], b["input_tokens"]);
    assert_eq!(a["output_tokens"], b["output_tokens"]);
    assert!(a["output_tokens"].as_u64().unwrap() > 0);
    // The essay itself is in the final checkpoint: identical bytes.
    let state = |s: &serde_json::Value| {
        let mut c = host();
        c.args(["inspect", s["checkpoint"].as_str().unwrap(), "--json"]);
        run(&mut c).json()["agent_state_bytes"].clone()
    };
    assert_eq!(state(&a), state(&b));
}

#[test]
fn a_priced_local_model_is_stopped_by_its_budget() {
    let dir = tempdir();
    let prices = dir.path().join("prices.json");
    std::fs::write(&prices, r#"{"smollm2-135m-instruct": {"input": 50.0, "output": 200.0}}"#).unwrap();
    let r = run(local(dir.path(), "0.02").arg("--prices").arg(&prices).arg("--json"));
    r.assert_code(BUDGET);
    let s = r.json();
    assert!(s["spent_nanos"].as_u64().unwrap() <= 20_000_000);
    assert!(s["spent_nanos"].as_u64().unwrap() > 0);
    assert_eq!(s["stop_reason"]["source"], "budget");
}

#[test]
fn missing_or_bad_model_files_say_what_to_do() {
    let dir = tempdir();
    let r = run(local(dir.path(), "1").args(["--model-path", "/nonexistent/model.gguf"]));
    r.assert_code(USAGE);
    assert!(r.stderr.contains("make model"), "{}", r.stderr);
    let text = dir.path().join("not.gguf");
    std::fs::write(&text, "hello").unwrap();
    let r = run(local(dir.path(), "1").arg("--model-path").arg(&text));
    r.assert_code(USAGE);
    assert!(r.stderr.contains("not a gguf"), "{}", r.stderr);
}

#[test]
fn a_prompt_over_the_context_window_is_an_invalid_request() {
    let dir = tempdir();
    let mut c = host();
    c.arg("run").arg(plugin("chaos-agent")).arg("--checkpoint-dir").arg(dir.path()).args(["--task", "long-prompt:1", "--budget", "1", "--json"]);
    c.env("BUDGET_HOST_MODEL", root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let r = run(&mut c);
    r.assert_code(0);
    let result = r.json()["result"].as_str().unwrap().to_string();
    assert!(result.contains("invalid request") && result.contains("context window"), "{result}");
}

/// llama.cpp's default sampling, seeded from the run id and the call number:
/// a run stopped and resumed writes the same essay as one that ran straight through.
#[test]
fn sampling_is_seeded_by_run_and_call_so_a_resume_says_the_same() {
    let (da, db) = (tempdir(), tempdir());
    let straight = run(local(da.path(), "1").args(["--run-id", "essay-seeded", "--max-cycles", "3", "--json"]));
    straight.assert_code(0);
    let first = run(local(db.path(), "1").args(["--run-id", "essay-seeded", "--max-cycles", "2", "--json"]));
    first.assert_code(0);
    let ck = first.json()["checkpoint"].as_str().unwrap().to_string();
    let mut c = host();
    c.args(["resume", &ck, "--max-cycles", "3", "--json"]);
    let resumed = run(&mut c);
    resumed.assert_code(0);
    let (a, b) = (straight.json(), resumed.json());
    assert_eq!(a["output_tokens"], b["output_tokens"]);
    let state = |s: &serde_json::Value| {
        let mut c = host();
        c.args(["inspect", s["checkpoint"].as_str().unwrap(), "--json"]);
        run(&mut c).json()["agent_state_bytes"].clone()
    };
    assert_eq!(state(&a), state(&b), "the same essay, byte for byte");
}
