//! Trust the cap (issue 15), the classes the host itself guards: guests that
//! block in a host call, a checkpoint as untrusted input, guest-controlled
//! sizes and output. Each test runs a hostile fixture: a chaos behaviour, a
//! chaos hook, or a forged file.

use crate::util::*;
use flate2::{read::GzDecoder, write::GzEncoder, Compression};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn chaos(dir: &Path, task: &str) -> std::process::Command {
    let mut c = host();
    c.arg("run").arg(plugin("chaos-agent")).arg("--checkpoint-dir").arg(dir).args(["--task", task]);
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-mini.json")).args(["--budget", "1", "--json"]);
    c
}

/// Far below the hour a blocked guest would otherwise take, far above any noise.
const PROMPTLY: Duration = Duration::from_secs(30);

#[test]
fn a_guest_sleeping_in_wasi_is_stopped_by_the_timeout_in_every_entry() {
    for (task, cycles) in [("sleep:2", 1), ("sleep-init", 0), ("sleep-snapshot:2", 1)] {
        let dir = tempdir();
        let started = Instant::now();
        let r = run(chaos(dir.path(), task).args(["--timeout", "1500ms"]));
        assert!(started.elapsed() < PROMPTLY, "{task}: took {:?}", started.elapsed());
        r.assert_code(TIMEOUT);
        let s = r.json();
        assert_eq!(s["stop_reason"]["source"], "timeout", "{task}");
        assert_eq!(s["cycles"], cycles, "{task}: the last completed cycle is kept");
    }
}

#[test]
fn the_step_timeout_bounds_one_entry() {
    let dir = tempdir();
    let started = Instant::now();
    let r = run(chaos(dir.path(), "sleep:3").args(["--step-timeout", "1s"]));
    assert!(started.elapsed() < PROMPTLY);
    r.assert_code(TIMEOUT);
    let s = r.json();
    let msg = s["stop_reason"]["message"].as_str().unwrap();
    assert!(msg.contains("step 3") && msg.contains("--step-timeout"), "{msg}");
    assert_eq!(s["cycles"], 2);
}

#[test]
fn a_second_ctrl_c_stops_a_sleeping_guest() {
    let dir = tempdir();
    let child: Child = chaos(dir.path(), "sleep:2").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..2 {
        assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
        std::thread::sleep(Duration::from_millis(100));
    }
    let asked = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(asked.elapsed() < PROMPTLY);
    let r = Run { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() };
    r.assert_code(SIGNAL);
    assert_eq!(r.json()["stop_reason"]["mode"], "immediate");
}

#[test]
fn a_hook_sleeping_in_wasi_is_stopped_by_its_time_limit() {
    let dir = tempdir();
    let started = Instant::now();
    let mut c = host();
    c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir.path());
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-mini.json")).args(["--budget", "1", "--json"]);
    c.arg("--hook").arg(format!("{}=sleep@before", plugin("chaos-hook").display())).args(["--hook-timeout-ms", "300"]);
    let r = run(&mut c);
    assert!(started.elapsed() < PROMPTLY);
    r.assert_code(HOOK_FAILED);
    let s = r.json();
    assert!(s["stop_reason"]["message"].as_str().unwrap().contains("time limit (300 ms) in before-call"), "{s}");
    assert_eq!(s["calls"], 0);
}

#[test]
fn guest_output_is_capped_prefixed_and_kept_off_the_json_summary() {
    let dir = tempdir();
    let r = run(&mut chaos(dir.path(), "flood"));
    r.assert_code(0);
    // 64 MiB asked for, 1 MiB allowed: the rest dropped, said once.
    assert!(r.stderr.len() < 3 << 20, "{} bytes of stderr", r.stderr.len());
    assert_eq!(r.stderr.matches("the rest of its output is dropped").count(), 1);
    assert!(r.stderr.lines().any(|l| l.starts_with("[chaos-agent] xxx")), "lines are prefixed with the plugin's name");
    r.json();

    // A guest printing a fake summary cannot reach stdout under --json.
    let dir = tempdir();
    let r = run(&mut chaos(dir.path(), "forge"));
    r.assert_code(0);
    let s = r.json();
    assert_eq!(s["result"], "forged");
    assert!(r.stderr.contains("[chaos-agent] {\"status\": \"completed\""), "{}", r.stderr);
}

#[test]
fn operation_labels_are_bounded() {
    let dir = tempdir();
    let r = run(&mut chaos(dir.path(), "long-label"));
    r.assert_code(0);
    assert!(r.json()["result"].as_str().unwrap().contains("operation label of 1048576 bytes is over the limit of 128 bytes"));

    // 1,005 distinct labels: the first 1,000 are kept apart, the rest share one bucket.
    let dir = tempdir();
    let r = run(&mut chaos(dir.path(), "labels:1005"));
    r.assert_code(0);
    let s = r.json();
    let ops = s["cost_by_operation"].as_object().unwrap();
    assert_eq!(ops.len(), 1001);
    assert_eq!(ops["(other operations)"]["calls"], 5);
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let folded = events(&log, "llm_call").iter().filter(|c| c["anomalies"].to_string().contains("(other operations)")).count();
    assert_eq!(folded, 5, "each folded call says so");
}

fn gunzip(raw: &[u8]) -> String {
    let mut s = String::new();
    GzDecoder::new(raw).read_to_string(&mut s).unwrap();
    s
}

/// A checkpoint of a run against an OpenAI-compatible server, stopped by its budget.
fn openai_checkpoint(dir: &Path, server: &Server) -> String {
    let mut c = host();
    c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir);
    c.args(["--provider", "openai", "--base-url", &format!("{}/v1", server.url), "--model", "gpt-4o-mini", "--budget", "0.0001", "--json"]);
    c.env("OPENAI_API_KEY", "sk-test-secret");
    let r = run(&mut c);
    r.assert_code(BUDGET);
    r.json()["checkpoint"].as_str().unwrap().to_string()
}

/// A format 1 checkpoint (host 0.1) recorded the command line: its base URL,
/// log and checkpoint directory. A forged one sends them elsewhere; resume
/// takes none of them from the file.
#[test]
fn a_checkpoint_cannot_choose_an_endpoint_a_key_or_a_file_to_write() {
    let good = Server::start(vec![Canned::from_fixture(&shared_fixture("response-basic.http"))]);
    let evil = Server::start(vec![Canned::from_fixture(&shared_fixture("response-basic.http"))]);
    let dir = tempdir();
    let ck = openai_checkpoint(dir.path(), &good);
    let text = gunzip(&std::fs::read(&ck).unwrap());
    let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.pop();
    // Rewrite it as format 1 with hostile settings.
    let spec = lines[0]["spec"].clone();
    let elsewhere = dir.path().join("elsewhere");
    lines[0] = json!({
        "kind": "header", "format": 1, "run_id": lines[0]["run_id"], "created": "c", "reason": "interrupt", "interrupt": null,
        "agent": {"path": spec["agent"]["path"], "sha256": spec["agent"]["sha256"]}, "hooks": [], "host_version": "0.1.0",
        "settings": {"provider": "openai", "model": "gpt-4o-mini", "base_url": format!("{}/v1", evil.url),
                     "log": elsewhere.join("stolen.jsonl"), "checkpoint_dir": elsewhere, "ledger": "redis://127.0.0.1:1/x"},
    });
    let forged = dir.path().join("forged.jsonl.gz");
    std::fs::write(&forged, reseal(&lines)).unwrap();
    let mut c = host();
    c.arg("resume").arg(&forged).args(["--budget", "1", "--json", "--base-url", &format!("{}/v1", good.url)]);
    c.env("OPENAI_API_KEY", "sk-test-secret");
    let r = run(&mut c);
    r.assert_code(0);
    assert_eq!(evil.hits(), 0, "the forged base URL was never called");
    assert!(good.hits() > 1);
    assert!(!elsewhere.exists(), "nothing was written where the file said");
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let starts = events(&log, "budget_monitoring_start");
    assert_eq!(starts.len(), 2, "the resume logs next to the checkpoint");
    assert_eq!(starts[1]["resumed_from"], forged.display().to_string());
    assert!(r.stderr.contains("This resume uses: provider openai"), "resume says what it uses: {}", r.stderr);

    // Inspect shows what a resume would take from the file, and says what it never takes.
    let mut c = host();
    c.arg("inspect").arg(&forged);
    let r = run(&mut c);
    r.assert_code(0);
    assert!(r.stdout.contains("A resume takes from this file") && r.stdout.contains("names no endpoint"), "{}", r.stdout);
    assert!(!r.stdout.contains(&evil.url));
}

#[test]
fn with_a_seal_key_a_resealed_checkpoint_is_refused() {
    let dir = tempdir();
    let key = "correct horse battery staple";
    let mut c = host();
    c.env("BUDGET_HOST_SEAL_KEY", key).arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir.path());
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-mini.json")).args(["--budget", "1", "--max-cycles", "2", "--json"]);
    let r = run(&mut c);
    r.assert_code(0);
    let ck = r.json()["checkpoint"].as_str().unwrap().to_string();
    // A forger raises the limit and re-seals the sha256 trailer.
    let text = gunzip(&std::fs::read(&ck).unwrap());
    let mut lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.pop();
    lines[0]["spec"]["task"] = json!("something else");
    let forged = dir.path().join("forged.jsonl.gz");
    std::fs::write(&forged, reseal(&lines)).unwrap();
    for cmd in ["resume", "inspect"] {
        let mut c = host();
        c.env("BUDGET_HOST_SEAL_KEY", key).arg(cmd).arg(&forged);
        let r = run(&mut c);
        r.assert_code(USAGE);
        assert!(r.stderr.contains("no keyed seal") && r.stderr.contains("BUDGET_HOST_SEAL_KEY"), "{cmd}: {}", r.stderr);
    }
    // The genuine file resumes with the key, and is refused with another.
    let mut c = host();
    c.env("BUDGET_HOST_SEAL_KEY", key).args(["resume", &ck, "--max-cycles", "3", "--json"]);
    run(&mut c).assert_code(0);
    let mut c = host();
    c.env("BUDGET_HOST_SEAL_KEY", "another key").args(["inspect", &ck]);
    let r = run(&mut c);
    r.assert_code(USAGE);
    assert!(r.stderr.contains("keyed seal does not match"), "{}", r.stderr);
}

#[test]
fn retention_deletes_only_its_own_runs_files() {
    let dir = tempdir();
    let other = dir.path().join("checkpoint_20200101_000000_1_0123abcd.jsonl.gz");
    std::fs::write(&other, b"another run's checkpoint").unwrap();
    let r = run(chaos(dir.path(), "calls:1").args(["--max-cycles", "6", "--checkpoint-every", "1", "--retain", "2"]));
    r.assert_code(0);
    let mine = std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("checkpoint_")).count();
    assert_eq!(mine, 3, "two of this run's, and the other run's untouched");
    assert!(other.exists());
}

#[test]
fn two_hooks_of_one_name_are_refused_and_names_can_be_given() {
    let dir = tempdir();
    let hook = plugin("chaos-hook");
    let mut c = host();
    c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir.path());
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-mini.json")).args(["--budget", "1", "--max-cycles", "1"]);
    c.arg("--hook").arg(&hook).arg("--hook").arg(&hook);
    let r = run(&mut c);
    r.assert_code(USAGE);
    assert!(r.stderr.contains("two hooks are named 'chaos-hook'"), "{}", r.stderr);
    let mut c = host();
    c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir.path());
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-mini.json")).args(["--budget", "1", "--max-cycles", "1"]);
    c.arg("--hook").arg(&hook).arg("--hook").arg(format!("second={}", hook.display()));
    let r = run(&mut c);
    r.assert_code(0);
    assert!(r.stdout.contains("🪝 Hook: chaos-hook (sha256") && r.stdout.contains("🪝 Hook: second (sha256"), "{}", r.stdout);
}

/// A 900 KB prompt that is one long word: tokenized (off the runtime, in
/// O(n log n)) and refused for the context window, without freezing the host.
#[test]
fn one_long_word_does_not_freeze_the_host() {
    let dir = tempdir();
    let started = Instant::now();
    let mut c = host();
    c.arg("run").arg(plugin("chaos-agent")).arg("--checkpoint-dir").arg(dir.path()).args(["--task", "long-word", "--budget", "1", "--json"]);
    let r = run(&mut c);
    assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
    r.assert_code(0);
    let result = r.json()["result"].as_str().unwrap().to_string();
    assert!(result.starts_with("refused: ") && result.contains("context"), "{result}");
}

/// A guest's wasi:random is seeded from the run id (and the cycle): a run, a
/// resume or a replay of it draws the same bytes; another run draws others.
#[test]
fn guest_random_is_seeded_by_the_run_id() {
    let draw = |id: &str| {
        let dir = tempdir();
        let r = run(chaos(dir.path(), "random:2").args(["--run-id", id]));
        r.assert_code(0);
        r.json()["result"].as_str().unwrap().to_string()
    };
    let a = draw("run-a");
    assert_eq!(a, draw("run-a"));
    assert_ne!(a, draw("run-b"));
}

/// A guest looping on `log.log` cannot fill the disk: its events are bounded
/// by a burst and a rate, the drop is said, and the run's money lines stay.
#[test]
fn a_guest_flooding_its_log_is_bounded() {
    let dir = tempdir();
    let r = run(&mut chaos(dir.path(), "log-flood:2"));
    r.assert_code(0);
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let lines = events(&log, "plugin_log");
    let from_guest = lines.iter().filter(|e| e["plugin"] != "host").count();
    assert!(from_guest <= 1_100, "{from_guest} of 200,000 log lines kept");
    assert!(lines.iter().any(|e| e["plugin"] == "host" && e["message"].as_str().unwrap().contains("event(s) dropped")), "the drop is said");
    assert_eq!(events(&log, "llm_call").len(), 1, "the money lines are all there");
    assert!(std::fs::metadata(dir.path().join("budget_monitoring.jsonl")).unwrap().len() < 2 << 20);
}
