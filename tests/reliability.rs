//! Reliability: provider faults, hostile numbers and files, huge snapshots,
//! plugin integrity. Every case checks the books: each request the server saw
//! is an attempt of exactly one logged call, each call is charged once, at
//! most its reservation unless marked billed past it (then the run stopped
//! there), spent <= limit + that one excess, and a stopped run leaves a
//! checkpoint that holds the same money. RELIABILITY.md lists every case and its test.

use crate::basics::essay;
use crate::util::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers

/// The essay agent against an OpenAI-compatible server at `server`.
fn openai(dir: &Path, server: &Server, budget: &str) -> std::process::Command {
    let mut c = essay(dir);
    c.args(["--provider", "openai", "--base-url"]).arg(format!("{}/v1", server.url));
    c.args(["--model", "gpt-4o-mini", "--budget", budget, "--json", "--provider-timeout", "2s"]);
    c
}

/// The chaos agent against an OpenAI-compatible server.
fn chaos_openai(dir: &Path, server: &Server, task: &str, budget: &str) -> std::process::Command {
    let mut c = host();
    c.arg("run").arg(plugin("chaos-agent")).arg("--checkpoint-dir").arg(dir).args(["--task", task]);
    c.args(["--provider", "openai", "--base-url"]).arg(format!("{}/v1", server.url));
    c.args(["--model", "gpt-4o-mini", "--budget", budget, "--json", "--provider-timeout", "2s"]);
    c
}

/// A chat completion body with the given usage JSON (`""`: none at all).
/// The chaos agent on the scripted mini essay, $1, `--json`.
fn chaos_scripted(dir: &Path, task: &str) -> std::process::Command {
    let mut c = host();
    c.arg("run").arg(plugin("chaos-agent")).arg("--checkpoint-dir").arg(dir).args(["--task", task]);
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-mini.json")).args(["--budget", "1", "--json"]);
    c
}

fn completion(usage: &str) -> String {
    let usage = if usage.is_empty() { String::new() } else { format!(r#","usage":{usage}"#) };
    format!(r#"{{"model":"gpt-4o-mini","choices":[{{"message":{{"role":"assistant","content":"A paragraph."}},"finish_reason":"stop"}}]{usage}}}"#)
}

fn good() -> Canned {
    Canned::from_fixture(&shared_fixture("response-basic.http"))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The books balance. Returns the log.
///
/// - every request the server saw is an attempt of one `llm_call` or `llm_call_failed` line;
/// - every call is charged once: at most its reservation, or marked with its
///   excess (the last call: the run stopped there, exit 8); a failed one all or nothing;
/// - spent = the sum of the charges <= limit + that one excess, in the
///   summary and in the ledger's call count.
fn books(dir: &Path, s: &Value, server: Option<&Server>) -> Vec<Value> {
    let log = read_log(&dir.join("budget_monitoring.jsonl"));
    let ok = events(&log, "llm_call");
    let failed = events(&log, "llm_call_failed");
    if let Some(server) = server {
        let attempts: u64 = ok.iter().chain(&failed).map(|e| n(&e["attempts"])).sum();
        assert_eq!(attempts as usize, server.hits(), "requests seen by the server vs attempts in the log: {log:#?}");
    }
    let (mut charged, mut over) = (0, 0);
    for (i, c) in ok.iter().enumerate() {
        let (cost, reserved) = (n(&c["cost_nanos"]), n(&c["reserved_nanos"]));
        let excess = c.get("over_reservation_nanos").map_or(0, n);
        assert_eq!(excess, cost.saturating_sub(reserved), "a call over its reservation is marked with its excess: {c}");
        if excess > 0 {
            assert_eq!(i + 1, ok.len(), "no call after one billed past its reservation: {log:#?}");
            assert_eq!(s["stop_reason"]["source"], "overrun", "{s}");
        }
        charged += cost;
        over += excess;
    }
    let mut charged_failures = 0;
    for f in &failed {
        let (ch, res) = (n(&f["charged_nanos"]), n(&f["reserved_nanos"]));
        assert!(ch == 0 || ch == res, "a failed call is charged nothing or its reservation: {f}");
        charged += ch;
        charged_failures += (ch > 0) as u64;
    }
    let spent = n(&s["spent_nanos"]);
    assert_eq!(charged, spent, "spent is the sum of what each call was charged");
    assert_eq!(n(&s["over_reservation_nanos"]), over, "the summary shows the overrun as it is");
    assert!(spent <= n(&s["limit_nanos"]).saturating_add(over), "overspent past one call's excess: {s}");
    assert_eq!(n(&s["calls"]), ok.len() as u64 + charged_failures, "each call is charged once");
    let end = events(&log, "budget_monitoring_end");
    assert_eq!(end.len(), 1);
    assert_eq!(n(&end[0]["total_cost_nanos"]), spent);
    assert_eq!(end[0].get("over_reservation_nanos").map_or(0, n), over);
    log
}

/// `host inspect --json` of a checkpoint.
fn inspect(path: &str) -> Value {
    let mut c = host();
    c.args(["inspect", path, "--json"]);
    let r = run(&mut c);
    r.assert_code(0);
    r.json()
}

/// A stopped run left a checkpoint holding the same money and cycles as its summary.
fn checkpoint_agrees(s: &Value) -> Value {
    let path = s["checkpoint"].as_str().unwrap_or_else(|| panic!("no checkpoint: {s}"));
    let ck = inspect(path);
    assert_eq!(ck["spent_nanos"], s["spent_nanos"], "checkpoint money");
    assert_eq!(ck["cycle"], s["cycles"], "checkpoint cycle");
    ck
}

fn stop_message(s: &Value) -> String {
    s["stop_reason"]["message"].as_str().unwrap_or_default().to_string()
}

/// A provider failure stopped the run: exit 1, source error, the message names the problem.
fn failed_with(r: &Run, want: &str) -> Value {
    r.assert_code(FAILURE);
    let s = r.json();
    assert_eq!(s["stop_reason"]["source"], "error", "{s}");
    let msg = stop_message(&s);
    assert!(msg.contains("provider failed") && msg.contains(want), "want '{want}' in: {msg}");
    s
}

// ---------------------------------------------------------------------------
// Provider faults

#[test]
fn provider_that_never_answers_times_out_charged_once_not_retried() {
    let server = Server::start(vec![good(), Canned::silent()]);
    let dir = tempdir();
    let started = Instant::now();
    let r = run(openai(dir.path(), &server, "1").args(["--provider-timeout", "1s"]));
    assert!(started.elapsed() < Duration::from_secs(60), "hung");
    let s = failed_with(&r, "timed out");
    // The request may have been processed and billed: charge its reservation,
    // and never send it again (a second bill would not be covered).
    assert_eq!(server.hits(), 2);
    let log = books(dir.path(), &s, Some(&server));
    let f = events(&log, "llm_call_failed")[0];
    assert_eq!(f["attempts"], 1);
    assert_eq!(f["charged_nanos"], f["reserved_nanos"]);
    checkpoint_agrees(&s);
}

#[test]
fn http_429_with_retry_after_is_honoured_and_charged_once() {
    let busy = Canned::json(429, r#"{"error":{"message":"Rate limit reached"}}"#).header("retry-after", "1");
    let server = Server::start(vec![busy, good()]);
    let dir = tempdir();
    let started = Instant::now();
    let r = run(openai(dir.path(), &server, "1").args(["--max-cycles", "2"]));
    let waited = started.elapsed();
    r.assert_code(0);
    let s = r.json();
    assert!(waited >= Duration::from_secs(1), "Retry-After: 1 not honoured ({waited:?})");
    let log = books(dir.path(), &s, Some(&server));
    let calls = events(&log, "llm_call");
    assert_eq!(calls[0]["attempts"], 2);
    assert_eq!(calls[1]["attempts"], 1);
    assert_eq!(server.hits(), 3);
    assert_eq!(s["spent_nanos"], 2 * 34_050, "two calls, each charged once");
    assert_eq!(server.bill(150_000_000, 600_000_000), vec![34_050; 2], "the provider's bill");
    assert_no_anomalies(&log);
}

#[test]
fn http_429_without_retry_after_backs_off_then_gives_up_uncharged() {
    let server = Server::start(vec![Canned::json(429, r#"{"error":{"message":"Rate limit reached"}}"#)]);
    let dir = tempdir();
    let started = Instant::now();
    let r = run(&mut openai(dir.path(), &server, "1"));
    // 0.25 + 0.5 + 1 s of backoff between the four attempts.
    assert!(started.elapsed() >= Duration::from_millis(1750), "no backoff");
    let s = failed_with(&r, "HTTP 429");
    assert!(stop_message(&s).contains("Rate limit reached") && stop_message(&s).contains("after 4 attempts"));
    assert_eq!(server.hits(), 4, "bounded: 1 attempt + 3 retries");
    let log = books(dir.path(), &s, Some(&server));
    assert_eq!(events(&log, "llm_call_failed")[0]["charged_nanos"], 0, "a clean refusal is not billed");
    assert_eq!(s["spent_nanos"], 0);
    checkpoint_agrees(&s);
}

#[test]
fn http_500_is_retried_then_recovers_or_stops() {
    // Two 500s, then answers: the call succeeds on its third attempt, charged once.
    let err = Canned::json(500, r#"{"error":{"message":"internal error"}}"#);
    let server = Server::start(vec![err.clone(), err.clone(), good()]);
    let dir = tempdir();
    let r = run(openai(dir.path(), &server, "1").args(["--max-cycles", "1"]));
    r.assert_code(0);
    let s = r.json();
    let log = books(dir.path(), &s, Some(&server));
    assert_eq!(events(&log, "llm_call")[0]["attempts"], 3);
    assert_eq!(s["spent_nanos"], 34_050);

    // A 500 every time: four attempts, nothing charged, the run stops with a checkpoint.
    let server = Server::start(vec![good(), err]);
    let dir = tempdir();
    let r = run(&mut openai(dir.path(), &server, "1"));
    let s = failed_with(&r, "HTTP 500");
    assert_eq!(server.hits(), 5);
    books(dir.path(), &s, Some(&server));
    assert_eq!(s["spent_nanos"], 34_050);
    assert_eq!(checkpoint_agrees(&s)["cycle"], 1);
}

#[test]
fn connection_reset_mid_body_is_charged_once_not_retried() {
    let server = Server::start(vec![good(), good().with_fault(Fault::ResetMidBody)]);
    let dir = tempdir();
    let r = run(&mut openai(dir.path(), &server, "1"));
    let s = failed_with(&r, "broke while reading the response");
    assert_eq!(server.hits(), 2);
    let log = books(dir.path(), &s, Some(&server));
    let f = events(&log, "llm_call_failed")[0];
    assert_eq!(f["charged_nanos"], f["reserved_nanos"]);
    assert_eq!(checkpoint_agrees(&s)["cycle"], 1);
}

#[test]
fn connection_closed_mid_body_is_charged_once_not_retried() {
    let server = Server::start(vec![good().with_fault(Fault::CloseMidBody)]);
    let dir = tempdir();
    let r = run(&mut openai(dir.path(), &server, "1"));
    let s = failed_with(&r, "broke while reading the response");
    assert_eq!(server.hits(), 1);
    let log = books(dir.path(), &s, Some(&server));
    let f = events(&log, "llm_call_failed")[0];
    assert_eq!(f["charged_nanos"], f["reserved_nanos"]);
    checkpoint_agrees(&s);
}

#[test]
fn connection_reset_after_the_request_was_sent_is_charged_once_not_retried() {
    // The request reached the server, no answer came back: it may have been billed.
    let server = Server::start(vec![good().with_fault(Fault::ResetBeforeAnswer)]);
    let dir = tempdir();
    let r = run(&mut openai(dir.path(), &server, "1"));
    let s = failed_with(&r, "");
    assert_eq!(server.hits(), 1, "a request that reached the server is not sent again");
    let log = books(dir.path(), &s, Some(&server));
    let f = events(&log, "llm_call_failed")[0];
    assert_eq!(f["charged_nanos"], f["reserved_nanos"], "charged, not released: {f}");
    checkpoint_agrees(&s);
}

#[test]
fn malformed_and_empty_bodies_are_charged_once_not_retried() {
    for (name, canned) in [
        ("malformed", Canned::json(200, r#"{"choices": [{"message": "#)),
        ("not json", Canned::json(200, "<html>502 Bad Gateway</html>")),
        ("empty", Canned::empty()),
        ("no choices", Canned::json(200, r#"{"choices": []}"#)),
    ] {
        let server = Server::start(vec![canned]);
        let dir = tempdir();
        let r = run(&mut openai(dir.path(), &server, "1"));
        let s = failed_with(&r, "malformed response");
        assert_eq!(server.hits(), 1, "{name}");
        let log = books(dir.path(), &s, Some(&server));
        let f = events(&log, "llm_call_failed")[0];
        assert_eq!(f["charged_nanos"], f["reserved_nanos"], "{name}");
        checkpoint_agrees(&s);
    }
}

#[test]
fn hundred_megabyte_bodies_are_cut_at_the_cap() {
    for declare_length in [true, false] {
        let server = Server::start(vec![Canned::huge(100 << 20, declare_length)]);
        let dir = tempdir();
        let started = Instant::now();
        let r = run(&mut openai(dir.path(), &server, "1"));
        assert!(started.elapsed() < Duration::from_secs(60), "hung");
        let s = failed_with(&r, "larger than 16777216 bytes");
        assert_eq!(server.hits(), 1, "declare_length {declare_length}");
        let log = books(dir.path(), &s, Some(&server));
        let f = events(&log, "llm_call_failed")[0];
        assert_eq!(f["charged_nanos"], f["reserved_nanos"]);
        checkpoint_agrees(&s);
    }
}

#[test]
fn provider_faults_never_overspend_a_tight_budget() {
    // A budget that holds about two reservations: the faulty call's charge
    // (its reservation) still fits, by construction, and the run stops there.
    for fault in [Fault::ResetMidBody, Fault::CloseMidBody, Fault::ResetBeforeAnswer] {
        let server = Server::start(vec![good(), good().with_fault(fault.clone())]);
        let dir = tempdir();
        let r = run(&mut openai(dir.path(), &server, "0.0008"));
        let s = failed_with(&r, "");
        books(dir.path(), &s, Some(&server));
        assert!(n(&s["spent_nanos"]) <= 800_000, "{fault:?}: {s}");
        checkpoint_agrees(&s);
    }
}

// ---------------------------------------------------------------------------
// Hostile token counts from the provider

#[test]
fn negative_token_counts_are_treated_as_missing_and_charge_the_reservation() {
    let server = Server::start(vec![Canned::json(200, &completion(r#"{"prompt_tokens":-5,"completion_tokens":-1}"#))]);
    let dir = tempdir();
    let r = run(openai(dir.path(), &server, "1").args(["--max-cycles", "3"]));
    r.assert_code(0);
    let s = r.json();
    let log = books(dir.path(), &s, Some(&server));
    for c in events(&log, "llm_call") {
        assert_eq!(c["cost_nanos"], c["reserved_nanos"]);
        assert!(c["anomalies"][0].as_str().unwrap().contains("no usage"), "{c}");
    }
}

#[test]
fn missing_usage_charges_the_reservation() {
    let server = Server::start(vec![Canned::json(200, &completion(""))]);
    let dir = tempdir();
    let r = run(openai(dir.path(), &server, "1").args(["--max-cycles", "2"]));
    r.assert_code(0);
    let s = r.json();
    let log = books(dir.path(), &s, Some(&server));
    for c in events(&log, "llm_call") {
        assert_eq!(c["cost_nanos"], c["reserved_nanos"]);
        assert!(c["anomalies"][0].as_str().unwrap().contains("no usage"));
    }
}

#[test]
fn huge_token_counts_are_charged_as_billed_and_stop_the_run() {
    let max = i64::MAX;
    let body = completion(&format!(r#"{{"prompt_tokens":{max},"completion_tokens":{max},"prompt_tokens_details":{{"cached_tokens":{max}}}}}"#));
    let server = Server::start(vec![Canned::json(200, &body)]);
    let dir = tempdir();
    let r = run(&mut openai(dir.path(), &server, "0.002"));
    r.assert_code(OVERRUN);
    let s = r.json();
    let log = books(dir.path(), &s, Some(&server));
    let calls = events(&log, "llm_call");
    assert_eq!(calls.len(), 1, "the run stops at the first call billed past its reservation");
    let c = calls[0];
    // i64::MAX tokens at any price is past u64 nano-USD: the books saturate, never wrap.
    assert_eq!(n(&c["cost_nanos"]), u64::MAX);
    let a = c["anomalies"].to_string();
    assert!(a.contains("past its reservation") && a.contains("were allowed") && a.contains("above the bound"), "{a}");
    assert_eq!(n(&s["spent_nanos"]), u64::MAX);
    checkpoint_agrees(&s);
}

/// A prompt reported over the host's bound is an anomaly in the log, not a
/// stop: the bill decides, and here it stays inside the reservation.
#[test]
fn a_prompt_over_its_bound_is_an_anomaly_not_a_stop() {
    let server = Server::start(vec![Canned::json(200, &completion(r#"{"prompt_tokens":2000,"completion_tokens":1}"#))]);
    let dir = tempdir();
    let r = run(openai(dir.path(), &server, "1").args(["--max-cycles", "2"]));
    r.assert_code(0);
    let s = r.json();
    let log = books(dir.path(), &s, Some(&server));
    let calls = events(&log, "llm_call");
    assert_eq!(calls.len(), 2);
    for c in calls {
        assert!(n(&c["input_tokens_bound"]) < 2000, "{c}");
        assert!(c["anomalies"].to_string().contains("2000 input tokens, above the bound"), "{c}");
        assert!(c.get("over_reservation_nanos").is_none(), "{c}");
    }
    assert_eq!(n(&s["spent_nanos"]), server.bill(150_000_000, 600_000_000).iter().sum::<u64>());
}

#[test]
fn huge_token_counts_on_one_operation_do_not_overflow_its_totals() {
    // Two calls per cycle under one operation label: per-operation token totals
    // add up. A free model, so the huge counts cost nothing and the run goes on.
    let max = i64::MAX;
    let body = completion(&format!(r#"{{"prompt_tokens":{max},"completion_tokens":{max}}}"#));
    let server = Server::start(vec![Canned::json(200, &body)]);
    let dir = tempdir();
    let prices = dir.path().join("prices.json");
    std::fs::write(&prices, r#"{"gpt-4o-mini": {"input": 0, "output": 0}}"#).unwrap();
    let r = run(chaos_openai(dir.path(), &server, "calls:2", "1").args(["--max-cycles", "2", "--prices"]).arg(&prices));
    r.assert_code(0);
    let s = r.json();
    books(dir.path(), &s, Some(&server));
    assert_eq!(s["calls"], 4);
    assert_eq!(s["spent_nanos"], 0);
    checkpoint_agrees(&s);
}

/// Chaos provider: it ignores `max_tokens` and bills 2000 completion tokens
/// past it. Money is counted from the provider's side (its answers' usage at
/// gpt-4o-mini's list price), not from the host's books.
#[test]
fn a_provider_billing_past_max_tokens_stops_the_run_with_the_books_equal_to_the_bill() {
    // gpt-4o-mini: $0.15 / $0.60 per 1M tokens.
    let (input, output) = (150_000_000, 600_000_000);
    let server = Server::start(vec![good(), Canned::over_bill(35, 2000)]);
    let dir = tempdir();
    let r = run(openai(dir.path(), &server, "0.0008").args(["--max-tokens", "64"]));
    r.assert_code(OVERRUN);
    let s = r.json();
    assert_eq!(s["stop_reason"]["source"], "overrun");
    assert_eq!(s["stop_reason"]["mode"], "immediate");
    let log = books(dir.path(), &s, Some(&server));
    assert_eq!(server.hits(), 2, "not one call after the overrun");
    let bill = server.bill(input, output);
    assert_eq!(bill.len(), 2);
    let billed: u64 = bill.iter().sum();
    assert_eq!(n(&s["spent_nanos"]), billed, "the books equal the bill");
    // The overrun, as it is, in the call's line, the summary and the end line.
    let calls = events(&log, "llm_call");
    let last = calls[1];
    assert_eq!(n(&last["output_tokens"]), 64 + 2000);
    assert_eq!(n(&last["cost_nanos"]), bill[1]);
    let excess = n(&last["over_reservation_nanos"]);
    assert_eq!(excess, bill[1] - n(&last["reserved_nanos"]));
    assert_eq!(n(&s["over_reservation_nanos"]), excess);
    assert!(last["anomalies"].to_string().contains("2064 output tokens, 64 were allowed"), "{last}");
    assert_eq!(events(&log, "interrupt")[0]["source"], "overrun");
    // Past the limit, by at most that one call's excess.
    let (spent, limit) = (n(&s["spent_nanos"]), n(&s["limit_nanos"]));
    assert!(spent > limit, "the case passes the limit: {s}");
    assert!(spent - limit <= excess, "over the limit by more than one call's excess: {s}");
    assert!(calls[0].get("over_reservation_nanos").is_none());
    checkpoint_agrees(&s);
    // `host report` reads the overrun back from the log and says so.
    let r = run(host().arg("report").arg(dir.path().join("budget_monitoring.jsonl")).arg("--json"));
    r.assert_code(0);
    let notes = r.json()["runs"][0]["notes"].to_string();
    assert!(notes.contains("llm_call_cycle_2 (cycle 2) was billed") && notes.contains("past its reservation"), "{notes}");

    // The stop block says it too.
    let server = Server::start(vec![good(), Canned::over_bill(35, 2000)]);
    let dir = tempdir();
    let mut c = essay(dir.path());
    c.args(["--provider", "openai", "--base-url"]).arg(format!("{}/v1", server.url));
    c.args(["--model", "gpt-4o-mini", "--budget", "0.0008", "--max-tokens", "64"]);
    let r = run(&mut c);
    r.assert_code(OVERRUN);
    assert!(r.stdout.contains("🚨 Billed past the reservation") && r.stdout.contains("Source: OVERRUN"), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("Over the reservation: ${:.4} ({excess} nano-USD)", excess as f64 / 1e9)), "{}", r.stdout);
}

#[test]
fn token_counts_of_the_wrong_type_are_a_malformed_answer_charged_once() {
    for usage in [
        r#"{"prompt_tokens":"12","completion_tokens":3}"#,
        r#"{"prompt_tokens":12.5,"completion_tokens":3}"#,
        r#"{"prompt_tokens":1e30,"completion_tokens":3}"#,
        r#"{"prompt_tokens":18446744073709551616,"completion_tokens":3}"#,
        r#"{"prompt_tokens":null,"completion_tokens":3}"#,
        r#"[1,2,3]"#,
    ] {
        let server = Server::start(vec![Canned::json(200, &completion(usage))]);
        let dir = tempdir();
        let r = run(&mut openai(dir.path(), &server, "1"));
        let s = failed_with(&r, "malformed response");
        assert_eq!(server.hits(), 1, "{usage}");
        let log = books(dir.path(), &s, Some(&server));
        let f = events(&log, "llm_call_failed")[0];
        assert_eq!(f["charged_nanos"], f["reserved_nanos"], "{usage}");
    }
}

#[test]
fn ollama_negative_counts_charge_the_reservation() {
    let body = r#"{"model":"llama3.1","message":{"role":"assistant","content":"ok"},"done":true,"prompt_eval_count":-3,"eval_count":-9}"#;
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
    let log = books(dir.path(), &s, Some(&server));
    for c in events(&log, "llm_call") {
        assert!(n(&c["cost_nanos"]) > 0);
        assert_eq!(c["cost_nanos"], c["reserved_nanos"]);
    }
}

// ---------------------------------------------------------------------------
// Hostile numbers and files from the user

fn scripted_essay(dir: &Path) -> std::process::Command {
    let mut c = essay(dir);
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-mini.json"));
    c
}

/// Refused before anything runs: exit 2, one line naming the flag or file.
fn refused(r: &Run, want: &str, case: &str) {
    assert_eq!(r.code, USAGE, "{case}: exit code\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains(want), "{case}: want '{want}' in: {}", r.stderr);
    assert!(!r.stdout.contains("CYCLE"), "{case}: it ran");
}

#[test]
fn hostile_budgets_are_refused_by_name() {
    let dir = tempdir();
    for b in [
        "NaN", "nan", "-NaN", "inf", "-inf", "Infinity", "+inf", "-1", "-0", "0", "0.0", "-0.000001", "1e300", "1e7", "1000000.01",
        "1e-12", "0.0000000001", "abc", "", " ", "$", "0x10", "1,5", "1_000", "1e", "--1", "1.0.0", "١",
    ] {
        let r = run(scripted_essay(dir.path()).args(["--budget", b]));
        refused(&r, "error: --budget", &format!("--budget {b:?}"));
        assert_eq!(r.stderr.lines().count(), 1, "{b:?}: one line: {}", r.stderr);
    }
}

#[test]
fn hostile_numeric_flags_are_refused() {
    let dir = tempdir();
    for (flag, value, want) in [
        ("--warn", "NaN", "--warn"),
        ("--warn", "inf", "--warn"),
        ("--warn", "-0.5", "--warn"),
        ("--warn", "1.5", "--warn"),
        ("--fuel", "0", "--fuel"),
        ("--fuel", "-1", "--fuel"),
        ("--fuel", "1e3", "--fuel"),
        ("--memory-mb", "0", "--memory-mb"),
        ("--memory-mb", "99999999", "--memory-mb"),
        ("--max-tokens", "0", "--max-tokens"),
        ("--max-tokens", "4294967296", "--max-tokens"),
        ("--temperature", "NaN", "--temperature"),
        ("--temperature", "-1", "--temperature"),
        ("--temperature", "1e30", "--temperature"),
        ("--timeout", "NaN", "not a duration"),
        ("--timeout", "0s", "not a duration"),
        ("--timeout", "-1s", "not a duration"),
        ("--timeout", "1e400s", "not a duration"),
        ("--timeout", "99999999h", "not a duration"),
        ("--provider-timeout", "0ms", "not a duration"),
        ("--retain", "0", "--retain"),
        ("--max-cycles", "-1", "--max-cycles"),
    ] {
        let r = run(scripted_essay(dir.path()).args(["--budget", "1"]).arg(format!("{flag}={value}")));
        refused(&r, want, &format!("{flag} {value}"));
    }
}

#[test]
fn hostile_price_files_are_refused_naming_the_file_and_model() {
    let dir = tempdir();
    let cases = [
        ("nan.json", r#"{"gpt-4o": {"input": NaN, "output": 1}}"#, "not valid"),
        ("infinity.json", r#"{"gpt-4o": {"input": Infinity, "output": 1}}"#, "not valid"),
        ("negative.json", r#"{"gpt-4o": {"input": -2.5, "output": 10}}"#, "is negative"),
        ("negzero-out.json", r#"{"gpt-4o": {"input": 1, "output": -1e-9}}"#, "is negative"),
        ("absurd.json", r#"{"gpt-4o": {"input": 1e300, "output": 10}}"#, "absurdly large"),
        ("overflow.json", r#"{"gpt-4o": {"input": 1e400, "output": 10}}"#, "not valid"),
        ("tiny.json", r#"{"gpt-4o": {"input": 1e-12, "output": 10}}"#, "rounds to zero"),
        ("string.json", r#"{"gpt-4o": {"input": "2.5", "output": 10}}"#, "model 'gpt-4o'"),
        ("null.json", r#"{"gpt-4o": {"input": null, "output": 10}}"#, "model 'gpt-4o'"),
        ("bool.json", r#"{"gpt-4o": {"input": true, "output": 10}}"#, "model 'gpt-4o'"),
        ("nested.json", r#"{"gpt-4o": {"input": {"usd": 1}, "output": 10}}"#, "model 'gpt-4o'"),
        ("missing.json", r#"{"gpt-4o": {"input": 2.5}}"#, "missing field `output`"),
        ("extra.json", r#"{"gpt-4o": {"input": 2.5, "output": 10, "discount": 0.5}}"#, "unknown field"),
        ("not-object.json", r#"{"gpt-4o": [2.5, 10]}"#, "model 'gpt-4o'"),
        ("positional.json", r#"{"gpt-4o": [2.5, 10, 1.25]}"#, "expected an object"),
        ("array.json", r#"[{"gpt-4o": {"input": 2.5, "output": 10}}]"#, "not valid"),
        ("empty.json", "", "not valid"),
        ("garbage.json", "\u{0}\u{1}\u{2}binary", "not valid"),
        ("duplicate.json", r#"{"gpt-4o": {"input": 2.5, "output": 10}, "gpt-4o": {"input": 0, "output": 0}}"#, "listed twice"),
        ("case-duplicate.json", r#"{"GPT-4o": {"input": 2.5, "output": 10}, "gpt-4o": {"input": 0, "output": 0}}"#, "listed twice"),
    ];
    for (name, text, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let r = run(scripted_essay(dir.path()).args(["--budget", "1"]).arg("--prices").arg(&p));
        refused(&r, want, name);
        assert!(r.stderr.contains(name), "{name}: names the file: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{name}: one line: {}", r.stderr);
    }
    // A directory, a missing file.
    for p in [dir.path().to_path_buf(), dir.path().join("does-not-exist.json")] {
        let r = run(scripted_essay(dir.path()).args(["--budget", "1"]).arg("--prices").arg(&p));
        refused(&r, "cannot read price file", &p.display().to_string());
    }
}

#[test]
fn a_zero_price_is_a_free_model_and_spends_nothing() {
    // The control for the refusals above: 0 is a legitimate price (a local model).
    let dir = tempdir();
    let p = dir.path().join("free.json");
    std::fs::write(&p, r#"{"gpt-4o-mini": {"input": 0, "output": 0, "cache_read": 0}}"#).unwrap();
    let r = run(scripted_essay(dir.path()).args(["--budget", "0.000001", "--max-cycles", "3", "--json"]).arg("--prices").arg(&p));
    r.assert_code(0);
    let s = r.json();
    assert_eq!(s["spent_nanos"], 0);
    assert_eq!(s["calls"], 3);
    books(dir.path(), &s, None);
}

#[test]
fn resume_refuses_hostile_budgets() {
    let dir = tempdir();
    let r = run(scripted_essay(dir.path()).args(["--budget", "1", "--max-cycles", "1", "--json"]));
    r.assert_code(0);
    let ck = r.json()["checkpoint"].as_str().unwrap().to_string();
    for b in ["NaN", "inf", "-1", "0", "1e300", "abc"] {
        let mut c = host();
        c.args(["resume", &ck, "--budget", b]);
        let r = run(&mut c);
        refused(&r, "--budget", &format!("resume --budget {b}"));
    }
}

// ---------------------------------------------------------------------------
// Huge snapshots

#[test]
fn a_snapshot_over_the_cap_stops_the_run_keeping_the_previous_checkpoint() {
    // The chaos agent's state grows to 64 MiB at cycle 3 (128 MiB as JSON).
    // The cap is lowered to 16 MiB so the test needs no gigabyte: a 1 GB
    // snapshot takes the same path against the default 256 MiB cap.
    let dir = tempdir();
    let mut c = chaos_scripted(dir.path(), "big-snapshot:3");
    c.args(["--memory-mb", "1024", "--max-snapshot-mb", "16", "--checkpoint-every", "1"]);
    let r = run(&mut c);
    r.assert_code(FAILURE);
    let s = r.json();
    let msg = stop_message(&s);
    assert!(msg.contains("agent snapshot of") && msg.contains("over the limit of 16777216 bytes") && msg.contains("previous checkpoint is kept"), "{msg}");
    assert_eq!(s["cycles"], 2, "cycle 3's state was not kept");
    let ck = checkpoint_agrees(&s);
    assert_eq!(ck["cycle"], 2);
    assert!(n(&ck["agent_state_bytes"]) < 1 << 20, "the small state of cycle 2: {ck}");
    books(dir.path(), &s, None);
    // Every checkpoint on disk loads; the newest is cycle 2's.
    let mut c = host();
    c.arg("resume").arg("--latest").arg(dir.path()).args(["--max-cycles", "2", "--json"]);
    let r = run(&mut c);
    r.assert_code(0);
    assert_eq!(r.json()["cycles"], 2);
}

/// Regression: wasmtime copies at most 128 MiB from a guest per call by
/// default, so any snapshot over that trapped ("too much data is being
/// copied") although the documented cap is 256 MiB.
#[test]
fn a_snapshot_over_128_mib_within_the_cap_is_kept() {
    let dir = tempdir();
    let mut c = chaos_scripted(dir.path(), "big-snapshot:2");
    c.args(["--memory-mb", "1024", "--max-cycles", "2"]);
    let r = run(&mut c);
    r.assert_code(0);
    let s = r.json();
    let ck = checkpoint_agrees(&s);
    assert_eq!(ck["cycle"], 2);
    assert!(n(&ck["agent_state_bytes"]) > 128 << 20, "{ck}");
}

#[test]
fn snapshot_cap_flag_is_bounded() {
    let dir = tempdir();
    for bad in ["0", "257", "-1", "1e3"] {
        let r = run(scripted_essay(dir.path()).args(["--budget", "1"]).arg(format!("--max-snapshot-mb={bad}")));
        refused(&r, "--max-snapshot-mb", bad);
    }
}

// ---------------------------------------------------------------------------
// Plugin integrity

fn sha256_file(p: &Path) -> String {
    budget_host::engine::sha256_hex(&std::fs::read(p).unwrap())
}

/// Append a custom section: still a valid component, different bytes.
fn tamper(p: &Path) {
    let mut bytes = std::fs::read(p).unwrap();
    bytes.extend_from_slice(b"\x00\x05\x04evil");
    std::fs::write(p, bytes).unwrap();
}

/// Artifacts in a compiled-artifact cache directory (none if it does not exist).
fn cached(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn pinned_run(dir: &Path, agent: &Path, cache: &Path) -> std::process::Command {
    let mut c = host();
    c.env("BUDGET_HOST_CACHE", cache);
    c.arg("run").arg(agent).arg("--checkpoint-dir").arg(dir.join("ck"));
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-mini.json"));
    c.args(["--budget", "1", "--max-cycles", "1", "--json"]);
    c
}

#[test]
fn expect_sha256_refuses_changed_bytes_before_compiling() {
    let dir = tempdir();
    let agent = dir.path().join("agent.wasm");
    std::fs::copy(plugin("essay-agent"), &agent).unwrap();
    let sha = sha256_file(&agent);

    // The right hash (any case, with or without a `sha256:` prefix) runs; the agent gets compiled and cached.
    let cache = dir.path().join("cache-ok");
    for pin in [sha.clone(), sha.to_uppercase(), format!("sha256:{sha}")] {
        run(pinned_run(dir.path(), &agent, &cache).args(["--expect-sha256", &pin])).assert_code(0);
    }
    assert_eq!(cached(&cache), 1);

    // Changed bytes: refused, exit 2, nothing compiled or cached, no run started.
    tamper(&agent);
    std::fs::remove_dir_all(dir.path().join("ck")).unwrap();
    let cache = dir.path().join("cache-refused");
    let r = run(pinned_run(dir.path(), &agent, &cache).args(["--expect-sha256", &sha]));
    refused(&r, "nothing was compiled", "tampered");
    assert!(r.stderr.contains(&sha) && r.stderr.contains(&sha256_file(&agent)) && r.stderr.contains("--expect-sha256"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert_eq!(cached(&cache), 0, "compiled anyway");
    assert!(!dir.path().join("ck/budget_monitoring.jsonl").exists(), "the run started");

    // Bytes Cranelift would reject: the pin is checked first, so the refusal is the pin's.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x0d\0\x01\0 definitely not a component").unwrap();
    let r = run(pinned_run(dir.path(), &junk, &cache).args(["--expect-sha256", &sha]));
    refused(&r, "nothing was compiled", "junk with a pin");
    let r = run(pinned_run(dir.path(), &junk, &cache).args(["--expect-sha256", &sha256_file(&junk)]));
    refused(&r, "not a valid component", "junk with its own hash");

    for bad in ["", "abc", "NaN", &sha[..63], &format!("{sha}0"), &sha.replace(|c: char| c.is_ascii_digit(), "z")] {
        let r = run(pinned_run(dir.path(), &agent, &cache).args(["--expect-sha256", bad]));
        refused(&r, "is not a sha256", &format!("--expect-sha256 {bad:?}"));
    }
}

#[test]
fn a_lock_file_pins_the_agent_and_every_hook() {
    let dir = tempdir();
    let p = dir.path().join("plugins");
    std::fs::create_dir(&p).unwrap();
    let (agent, hook, stray) = (p.join("agent.wasm"), p.join("monitor.wasm"), p.join("chaos-hook.wasm"));
    std::fs::copy(plugin("essay-agent"), &agent).unwrap();
    std::fs::copy(plugin("budget-monitor"), &hook).unwrap();
    std::fs::copy(plugin("chaos-hook"), &stray).unwrap();
    let lock = dir.path().join("host.lock");
    let mut c = host();
    c.arg("lock").arg(&agent).arg(&hook).arg("-o").arg(&lock);
    run(&mut c).assert_code(0);
    let text = std::fs::read_to_string(&lock).unwrap();
    let l: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(l["version"], 1);
    assert_eq!(l["plugins"]["plugins/agent.wasm"], sha256_file(&agent), "{text}");
    assert_eq!(l["plugins"]["plugins/monitor.wasm"], sha256_file(&hook), "{text}");

    let cache = dir.path().join("cache");
    let with = |hook: &Path| {
        let mut c = pinned_run(dir.path(), &agent, &cache);
        c.arg("--lock").arg(&lock).arg("--hook").arg(format!("{}=warn=0.5", hook.display()));
        c
    };
    run(&mut with(&hook)).assert_code(0);

    // A hook not in the lock, a changed hook, a changed agent: refused by name, exit 2.
    let r = run(&mut with(&stray));
    refused(&r, "not listed in lock file", "stray hook");
    assert!(r.stderr.contains("chaos-hook.wasm"), "{}", r.stderr);
    tamper(&hook);
    let r = run(&mut with(&hook));
    refused(&r, "nothing was compiled", "changed hook");
    assert!(r.stderr.contains("monitor.wasm") && r.stderr.contains("host.lock"), "{}", r.stderr);
    tamper(&agent);
    let mut c = pinned_run(dir.path(), &agent, &cache);
    let r = run(c.arg("--lock").arg(&lock));
    refused(&r, "agent.wasm", "changed agent");

    // A damaged lock file is refused, not ignored.
    std::fs::write(&lock, &text[..text.len() / 2]).unwrap();
    let mut c = pinned_run(dir.path(), &agent, &cache);
    let r = run(c.arg("--lock").arg(&lock));
    refused(&r, "lock file", "damaged lock");
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

#[test]
fn host_lock_refuses_what_is_not_a_component() {
    let dir = tempdir();
    let text = dir.path().join("x.wasm");
    std::fs::write(&text, "hello").unwrap();
    let mut c = host();
    c.arg("lock").arg(&text).arg(dir.path().join("missing.wasm"));
    let r = run(&mut c);
    refused(&r, "not a WebAssembly file", "lock of a text file");
}

#[test]
fn a_pinned_run_is_pinned_on_resume_too() {
    let dir = tempdir();
    let agent = dir.path().join("agent.wasm");
    std::fs::copy(plugin("essay-agent"), &agent).unwrap();
    let sha = sha256_file(&agent);
    let cache = dir.path().join("cache");
    let r = run(pinned_run(dir.path(), &agent, &cache).args(["--expect-sha256", &sha]));
    r.assert_code(0);
    let ck = r.json()["checkpoint"].as_str().unwrap().to_string();
    tamper(&agent);
    // --force overrides the checkpoint's own record of the agent, not the user's pin.
    let mut c = host();
    c.env("BUDGET_HOST_CACHE", &cache).args(["resume", &ck, "--force", "--max-cycles", "2"]);
    let r = run(&mut c);
    refused(&r, "--expect-sha256", "resume of a pinned run");
    assert!(r.stderr.contains("nothing was compiled"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------
// Adversarial guests: whatever the guest does at cycle 3, cycle 2 is kept

#[test]
fn every_adversarial_guest_leaves_the_last_completed_cycle_resumable() {
    let cases: &[(&str, &[&str], i32, &str)] = &[
        ("loop:3", &["--fuel", "200000000"], FUEL, "fuel"),
        ("loop:3", &["--timeout", "2s"], TIMEOUT, "timeout"),
        ("alloc:3", &["--memory-mb", "32"], FAILURE, "memory limit of 32 MiB"),
        ("recurse:3", &[], FAILURE, "step 3"),
        ("trap:3", &[], FAILURE, "agent trapped in step 3"),
        ("trap-snapshot:3", &[], FAILURE, "snapshot after step 3"),
        ("big-snapshot:3", &["--memory-mb", "1024", "--max-snapshot-mb", "8"], FAILURE, "over the limit"),
    ];
    for (task, extra, code, want) in cases {
        let dir = tempdir();
        let mut c = chaos_scripted(dir.path(), task);
        c.args(["--checkpoint-every", "1"]).args(*extra);
        let started = Instant::now();
        let r = run(&mut c);
        assert!(started.elapsed() < Duration::from_secs(120), "{task}: hung");
        assert_eq!(r.code, *code, "{task} {extra:?}\n{}\n{}", r.stdout, r.stderr);
        let s = r.json();
        assert!(stop_message(&s).contains(want), "{task}: want '{want}' in {}", stop_message(&s));
        assert_eq!(s["cycles"], 2, "{task}");
        books(dir.path(), &s, None);
        assert_eq!(checkpoint_agrees(&s)["cycle"], 2, "{task}");
        // The kept state is a good one: resume loads it and runs no further than asked
        // (the fuel burnt by the runaway cycle stays used: a fuel stop resumes with more).
        let mut c = host();
        c.arg("resume").arg(s["checkpoint"].as_str().unwrap()).args(["--max-cycles", "2", "--json"]);
        if *code == FUEL {
            c.args(["--fuel", "400000000"]);
        }
        let r = run(&mut c);
        assert_eq!(r.code, 0, "{task}: resume\n{}", r.stderr);
        assert_eq!(r.json()["spent_nanos"], s["spent_nanos"], "{task}: resume spent nothing more");
    }
}

// ---------------------------------------------------------------------------
// RELIABILITY.md tells the truth

/// Every test RELIABILITY.md names exists, and its totals are the counts of its table.
#[test]
fn reliability_md_is_true() {
    let text = std::fs::read_to_string(root().join("RELIABILITY.md")).unwrap();
    let (mut rows, mut money, mut checkpoints) = (0, 0, 0);
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| # | case | what | proof | $ | ck |"
        let Some(n) = cells.get(1).and_then(|c| c.parse::<usize>().ok()) else { continue };
        assert_eq!(cells.len(), 8, "row {n} has six cells: {line}");
        rows += 1;
        assert_eq!(n, rows, "rows are numbered in order");
        let tests: Vec<&str> = cells[4].split('`').skip(1).step_by(2).collect();
        assert!(!tests.is_empty(), "row {n} names no test");
        for t in tests {
            let (place, name) = t.rsplit_once("::").unwrap_or_else(|| panic!("row {n}: '{t}' is not module::test"));
            let file = if place.ends_with(".rs") { root().join("host").join(place) } else { root().join("tests").join(format!("{place}.rs")) };
            let source = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("row {n}: {}: {e}", file.display()));
            assert!(source.contains(&format!("fn {name}(")), "row {n}: no test {name} in {}", file.display());
        }
        match cells[5] {
            "$" => money += 1,
            "" => {}
            other => panic!("row {n}: money column '{other}'"),
        }
        match cells[6] {
            "ck" => checkpoints += 1,
            "" => {}
            other => panic!("row {n}: checkpoint column '{other}'"),
        }
    }
    let stated = |label: &str| -> usize {
        let line = text.lines().find(|l| l.contains(label)).unwrap_or_else(|| panic!("no '{label}' line"));
        line.split("**").nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no **count** in: {line}"))
    };
    assert_eq!(stated("Cases tried:"), rows);
    assert_eq!(stated("Cases that check the money:"), money);
    assert_eq!(stated("Cases that check the checkpoint:"), checkpoints);
    assert!(text.contains("worst overrun possible: **one call's excess**") && text.contains("money overspent otherwise: **$0**"));
    assert!(text.contains("checkpoints lost: **0**"));
}
