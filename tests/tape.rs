//! Record and replay (issue 16): record a run against the in-test provider,
//! then replay it offline at $0. Requests are counted at the provider, which
//! is told nothing of the replay: it would see any call that leaked.

use crate::util::*;
use std::path::{Path, PathBuf};

fn server() -> Server {
    Server::start(vec![Canned::from_fixture(&shared_fixture("response-basic.http"))])
}

/// The essay agent's ten calls on gpt-4o-mini, recorded into `tape`.
fn record(dir: &Path, server: &Server, tape: &Path) -> Run {
    let mut c = host();
    c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir);
    c.args(["--provider", "openai", "--model", "gpt-4o-mini", "--base-url", &format!("{}/v1", server.url)]);
    c.args(["--budget", "1", "--temperature", "0", "--run-id", "essay-recorded", "--json", "--record"]).arg(tape);
    run(&mut c)
}

/// `host replay TAPE --json`, its log in `dir`; the provider's address in the
/// environment, where `host run` would find it.
fn replay(tape: &Path, dir: &Path, url: &str) -> std::process::Command {
    let mut c = host();
    c.arg("replay").arg(tape).arg("--log").arg(dir.join("replay.jsonl")).arg("--json");
    c.env("OPENAI_BASE_URL", format!("{url}/v1"));
    c
}

/// A recorded tape, its run's summary and the provider's address and request count.
struct Recorded {
    dir: tempfile::TempDir,
    tape: PathBuf,
    summary: serde_json::Value,
    url: String,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn recorded(name: &str) -> Recorded {
    let dir = tempdir();
    let tape = dir.path().join(name);
    let provider = server();
    let r = record(&dir.path().join("ck"), &provider, &tape);
    r.assert_code(0);
    assert!(r.stderr.contains("Tape of 10 call(s) written to"), "{}", r.stderr);
    assert_eq!(provider.hits(), 10);
    let Server { url, hits, .. } = provider;
    Recorded { summary: r.json(), dir, tape, url, hits }
}

fn hits(r: &Recorded) -> usize {
    r.hits.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn a_replay_gives_the_same_result_offline_at_zero_cost() {
    let rec = recorded("essay.tape");
    let text = std::fs::read_to_string(&rec.tape).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((lines[0]["kind"].as_str(), lines[0]["format"].as_str(), lines[0]["version"].as_u64()), (Some("header"), Some("budget-host-tape"), Some(1)));
    assert_eq!(lines[0]["settings"]["model"], "gpt-4o-mini");
    assert_eq!(lines[0]["run_id"], "essay-recorded");
    assert_eq!(lines.iter().filter(|l| l["kind"] == "call").count(), 10);
    assert_eq!(lines[1]["request"]["messages"][0]["content"], "You are a concise essay writer.");
    assert_eq!(lines[1]["cost_nanos"], 34_050);
    assert_eq!(lines.last().unwrap()["kind"], "trailer");
    // Nothing of where the provider is, nor of where output went.
    assert!(!text.contains(&rec.url) && !text.contains("127.0.0.1") && !text.contains(&*rec.dir.path().to_string_lossy()), "{text}");

    let before = hits(&rec);
    let r = run(&mut replay(&rec.tape, rec.dir.path(), &rec.url));
    r.assert_code(0);
    assert_eq!(hits(&rec), before, "the replay reached the provider");
    let s = r.json();
    assert_eq!(s["status"], "completed");
    assert_eq!(s["result"], rec.summary["result"], "the same result as the recording");
    assert_eq!((s["spent_nanos"].as_u64(), s["calls"].as_u64()), (Some(0), Some(10)), "ten calls, $0");
    assert_eq!(s["provider"], "tape");
    let log = read_log(&rec.dir.path().join("replay.jsonl"));
    let calls = events(&log, "llm_call");
    assert_eq!(calls.len(), 10);
    assert!(calls.iter().all(|c| c["replayed"] == true && c["cost_nanos"] == 0));
}

#[test]
fn another_agent_or_task_diverges_with_exit_9_naming_the_call() {
    let rec = recorded("essay.tape");
    let before = hits(&rec);

    let r = run(replay(&rec.tape, rec.dir.path(), &rec.url).arg("--agent").arg(plugin("chaos-agent")));
    r.assert_code(REPLAY_DIVERGED);
    assert!(r.stderr.contains("is not the agent the tape recorded"), "{}", r.stderr);
    let s = r.json();
    assert_eq!(s["stop_reason"]["source"], "replay_diverged");
    let why = s["stop_reason"]["message"].as_str().unwrap();
    assert!(why.starts_with("replay diverged at call 1 of the tape (cycle 1, call 1 of its step, operation llm_call_cycle_1): "), "{why}");
    assert!(why.contains("max tokens: tape (default), now 16") && why.contains("2 message(s) on the tape, 1 now"), "{why}");
    assert!(why.contains("message 1 role: tape system, now user"), "{why}");
    assert!(r.stderr.contains("Replay diverged from the tape"), "{}", r.stderr);

    let r = run(replay(&rec.tape, rec.dir.path(), &rec.url).args(["--task", "Write a short essay about cats."]));
    r.assert_code(REPLAY_DIVERGED);
    let why = r.json()["stop_reason"]["message"].as_str().unwrap().to_string();
    assert!(why.contains("at call 1 of the tape (cycle 1, call 1 of its step, operation llm_call_cycle_1)"), "{why}");
    assert!(why.contains("message 2 (user) differs at character 33: tape \"…"), "{why}");
    assert!(why.contains("about the history") && why.contains("about cats."), "{why}");
    assert_eq!(hits(&rec), before, "a diverged replay asks no provider either");
}

#[test]
fn a_run_stopped_by_its_budget_records_what_was_made_and_replays_the_stop() {
    let dir = tempdir();
    let tape = dir.path().join("stopped.tape.gz");
    let mut c = host();
    c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir.path().join("ck"));
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-gpt4o.json"));
    c.args(["--budget", "0.10", "--max-tokens", "2000", "--json", "--record"]).arg(&tape);
    let r = run(&mut c);
    r.assert_code(BUDGET);
    let want = r.json();
    let raw = std::fs::read(&tape).unwrap();
    assert_eq!(&raw[..2], &[0x1f, 0x8b], "a .gz tape is gzipped");

    let r = run(replay(&tape, dir.path(), &refused_url()).arg("--quiet"));
    r.assert_code(BUDGET);
    let s = r.json();
    assert_eq!(s["stop_reason"]["source"], "budget");
    assert_eq!(s["cycles"], want["cycles"]);
    assert_eq!(s["calls"], want["calls"]);
    assert_eq!(s["spent_nanos"], 0);
}

#[test]
fn a_truncated_tampered_or_foreign_tape_is_refused_naming_the_problem() {
    let rec = recorded("essay.tape");
    let raw = std::fs::read_to_string(&rec.tape).unwrap();
    let dir = rec.dir.path();
    let refused = |name: &str, bytes: &[u8], problem: &str| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let r = run(&mut replay(&p, dir, &rec.url));
        r.assert_code(USAGE);
        assert!(r.stderr.contains(problem), "{name}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{name}: no run, no summary");
    };
    refused("truncated.tape", &raw.as_bytes()[..raw.len() / 2], "is truncated");
    refused("tampered.tape", raw.replacen("artificial intelligence", "artificial stupidity", 1).as_bytes(), "was tampered with or damaged: its sha256 does not match");
    refused("foreign.tape", &std::fs::read(rec.dir.path().join("ck/budget_monitoring.jsonl")).unwrap(), "foreign.tape is not a tape");
    refused("future.tape", raw.replacen("\"version\":1", "\"version\":2", 1).as_bytes(), "has format version 2; this host reads version 1");
    refused("empty.tape", b"", "is empty");
    let agentless = raw.replacen(&*plugin("essay-agent").to_string_lossy(), "/nonexistent/essay.wasm", 1);
    let resealed = reseal(&agentless, None);
    refused("agentless.tape", resealed.as_bytes(), "the tape's agent /nonexistent/essay.wasm cannot be read");
    assert_eq!(hits(&rec), 10);
}

/// A tape's lines with the trailer recomputed over them, as a forger without the key would.
fn reseal(tape: &str, hmac: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let body: String = tape.lines().filter(|l| !l.starts_with("{\"kind\":\"trailer\"")).map(|l| format!("{l}\n")).collect();
    let lines = body.lines().count();
    let mut trailer = serde_json::json!({"kind": "trailer", "lines": lines, "sha256": hex::encode(Sha256::digest(body.as_bytes()))});
    if let Some(h) = hmac {
        trailer["hmac"] = h.into();
    }
    format!("{body}{trailer}\n")
}

#[test]
fn with_a_seal_key_a_tape_resealed_without_it_is_refused() {
    const KEY: &str = "tape-seal-key-of-the-ci-secrets";
    let dir = tempdir();
    let tape = dir.path().join("sealed.tape");
    let provider = server();
    let r = run(host().env("BUDGET_HOST_SEAL_KEY", KEY).arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir.path().join("ck")).args([
        "--provider",
        "openai",
        "--model",
        "gpt-4o-mini",
        "--base-url",
        &format!("{}/v1", provider.url),
        "--budget",
        "1",
        "--max-cycles",
        "3",
        "--record",
        tape.to_str().unwrap(),
    ]));
    r.assert_code(0);
    let raw = std::fs::read_to_string(&tape).unwrap();
    let trailer: serde_json::Value = serde_json::from_str(raw.lines().last().unwrap()).unwrap();
    let hmac = trailer["hmac"].as_str().expect("a sealed tape carries an HMAC").to_string();

    let with_key = |p: &Path| run(replay(p, dir.path(), &provider.url).env("BUDGET_HOST_SEAL_KEY", KEY));
    with_key(&tape).assert_code(0);
    // An answer edited and the sha256 recomputed: without a seal, or with the old one.
    let forged = raw.replacen("artificial intelligence", "artificial stupidity", 1);
    for (name, hmac, problem) in [("unsealed.tape", None, "has no keyed seal, but BUDGET_HOST_SEAL_KEY is set"), ("resealed.tape", Some(hmac.as_str()), "its keyed seal does not match")] {
        let p = dir.path().join(name);
        std::fs::write(&p, reseal(&forged, hmac)).unwrap();
        let r = with_key(&p);
        r.assert_code(USAGE);
        assert!(r.stderr.contains(problem), "{name}: {}", r.stderr);
    }
    // A tape recorded without the key is refused too once the key is set.
    let p = dir.path().join("plain.tape");
    std::fs::write(&p, reseal(&raw, None)).unwrap();
    assert!(with_key(&p).stderr.contains("has no keyed seal"));
    assert_eq!(provider.hits(), 3, "no replay asked the provider");
}

#[test]
fn a_replay_past_the_tape_short_of_it_or_ending_otherwise_diverges() {
    let rec = recorded("essay.tape");
    let raw = std::fs::read_to_string(&rec.tape).unwrap();
    let lines: Vec<serde_json::Value> = raw.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let calls: Vec<usize> = (0..lines.len()).filter(|i| lines[*i]["kind"] == "call").collect();
    let rewritten = |edit: &dyn Fn(&mut Vec<serde_json::Value>)| {
        let mut l = lines.clone();
        edit(&mut l);
        reseal(&l.iter().map(|v| format!("{v}\n")).collect::<String>(), None)
    };
    let last = *calls.last().unwrap();
    let cases: [(&str, String, &str); 3] = [
        ("short.tape", rewritten(&|l| drop(l.remove(last))), "at call 10: the agent asks for call 1 of cycle 10 (llm_call_cycle_10), past the end of the tape (9 calls)"),
        (
            "long.tape",
            rewritten(&|l| {
                let mut extra = l[last].clone();
                extra["cycle"] = 11.into();
                l.insert(last + 1, extra);
            }),
            "replay diverged at the end of the run: it made 10 of the tape's 11 calls; the next was call 1 of cycle 11 (llm_call_cycle_10)",
        ),
        (
            "ending.tape",
            rewritten(&|l| {
                let end = l.len() - 2;
                l[end]["result"] = "another essay".into();
            }),
            "replay diverged at the end of the run: the result differs at character 1: tape \"another essay\"",
        ),
    ];
    for (name, tape, why) in cases {
        let p = rec.dir.path().join(name);
        std::fs::write(&p, tape).unwrap();
        let r = run(&mut replay(&p, rec.dir.path(), &rec.url));
        r.assert_code(REPLAY_DIVERGED);
        let msg = r.json()["stop_reason"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(why), "{name}: {msg}");
    }
    assert_eq!(hits(&rec), 10);
}
