//! Interrupt sources and modes: timeout, fuel, signals (graceful, then
//! immediate), guest traps, and the adversarial chaos agent.

use crate::basics::essay;
use crate::util::*;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn chaos(dir: &Path, task: &str) -> std::process::Command {
    let mut c = host();
    c.arg("run").arg(plugin("chaos-agent")).arg("--checkpoint-dir").arg(dir).args(["--task", task]);
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-mini.json")).args(["--budget", "1", "--json"]);
    // A safety net: no misbehaving guest may hang the suite.
    c.args(["--timeout", "60s"]);
    c
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
}

fn finish(child: Child) -> Run {
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn checkpoint_cycle(path: &str) -> u64 {
    let mut c = host();
    c.args(["inspect", path, "--json"]);
    let r = run(&mut c);
    r.assert_code(0);
    r.json()["cycle"].as_u64().unwrap()
}

#[test]
fn timeout_stops_a_runaway_guest_keeping_the_last_cycle() {
    let dir = tempdir();
    let started = Instant::now();
    let r = run(chaos(dir.path(), "loop:3").args(["--timeout", "700ms"]));
    r.assert_code(TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(20));
    let s = r.json();
    assert_eq!(s["stop_reason"]["source"], "timeout");
    assert_eq!(s["stop_reason"]["mode"], "immediate");
    assert_eq!(s["cycles"], 2);
    assert_eq!(checkpoint_cycle(s["checkpoint"].as_str().unwrap()), 2);
}

#[test]
fn timeout_cancels_a_slow_provider_call() {
    let server = Server::start(vec![Canned::from_fixture(&shared_fixture("response-basic.http")).delayed(30_000)]);
    let dir = tempdir();
    let started = Instant::now();
    let r = run(essay(dir.path())
        .args(["--provider", "openai", "--base-url"])
        .arg(format!("{}/v1", server.url))
        .args(["--budget", "1", "--timeout", "500ms", "--json"]));
    r.assert_code(TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(20), "did not wait for the 30 s answer");
    let s = r.json();
    assert_eq!(s["stop_reason"]["source"], "timeout");
    // The call in flight was charged its reservation: never less than it might have cost,
    // and the log says so.
    assert!(s["spent_nanos"].as_u64().unwrap() > 0);
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let cancelled = events(&log, "llm_call_cancelled");
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["charged_nanos"], s["spent_nanos"]);
}

#[test]
fn fuel_stops_an_infinite_loop() {
    let dir = tempdir();
    let r = run(chaos(dir.path(), "loop:2").args(["--fuel", "50000000"]));
    r.assert_code(FUEL);
    let s = r.json();
    assert_eq!(s["stop_reason"]["source"], "fuel");
    assert_eq!(s["cycles"], 1);
}

#[test]
fn first_signal_is_graceful() {
    let server = Server::start(vec![Canned::from_fixture(&shared_fixture("response-basic.http")).delayed(600)]);
    let dir = tempdir();
    let child = essay(dir.path())
        .args(["--provider", "openai", "--base-url"])
        .arg(format!("{}/v1", server.url))
        .args(["--budget", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the second call is in flight, then ask to stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.requests().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "-INT");
    let r = finish(child);
    r.assert_code(SIGNAL);
    let s = r.json();
    assert_eq!(s["stop_reason"]["source"], "signal");
    assert_eq!(s["stop_reason"]["mode"], "graceful");
    assert_eq!(s["cycles"], 2, "the cycle in progress finished");
    assert_eq!(s["calls"], 2);
    assert_eq!(checkpoint_cycle(s["checkpoint"].as_str().unwrap()), 2);
    assert!(r.stderr.contains("Stop requested"));
}

#[test]
fn second_signal_is_immediate_even_in_an_infinite_loop() {
    let dir = tempdir();
    let child = chaos(dir.path(), "loop:2").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Let it reach the loop in cycle 2.
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "-INT");
    std::thread::sleep(Duration::from_millis(100));
    let asked = Instant::now();
    signal(&child, "-INT");
    let r = finish(child);
    // The requirement is 100 ms; a shared CI machine gets slack here, the
    // benchmark measures the real figure.
    assert!(asked.elapsed() < Duration::from_secs(3), "took {:?}", asked.elapsed());
    r.assert_code(SIGNAL);
    let s = r.json();
    assert_eq!(s["stop_reason"]["mode"], "immediate");
    assert_eq!(s["cycles"], 1);
    assert_eq!(checkpoint_cycle(s["checkpoint"].as_str().unwrap()), 1);
}

#[test]
fn guest_traps_are_errors_with_the_last_cycle_kept() {
    let dir = tempdir();
    let r = run(&mut chaos(dir.path(), "trap:3"));
    r.assert_code(FAILURE);
    let s = r.json();
    assert_eq!(s["stop_reason"]["source"], "error");
    assert!(s["stop_reason"]["message"].as_str().unwrap().contains("agent trapped in step 3"), "{s}");
    assert_eq!(checkpoint_cycle(s["checkpoint"].as_str().unwrap()), 2);
}

#[test]
fn memory_bomb_hits_its_limit() {
    let dir = tempdir();
    let r = run(chaos(dir.path(), "alloc:1").args(["--memory-mb", "32"]));
    r.assert_code(FAILURE);
    let msg = r.json()["stop_reason"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("exceeded its memory limit of 32 MiB"), "{msg}");
}

#[test]
fn unbounded_recursion_is_a_stack_overflow_trap() {
    let dir = tempdir();
    let r = run(&mut chaos(dir.path(), "recurse:1"));
    r.assert_code(FAILURE);
    let msg = r.json()["stop_reason"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("overflowed its stack") || msg.contains("trapped"), "{msg}");
}

#[test]
fn guests_get_no_files_env_or_sockets() {
    let dir = tempdir();
    let r = run(chaos(dir.path(), "files:1").env("SECRET_TOKEN", "hunter2"));
    r.assert_code(0);
    let result = r.json()["result"].as_str().unwrap().to_string();
    assert!(result.contains("file=denied"), "{result}");
    assert!(result.contains("env_vars=0"), "{result}");
    assert!(result.contains("HOME=unset"), "{result}");
    assert!(result.contains("socket=denied"), "{result}");
}

#[test]
fn oversized_requests_are_refused_before_any_reservation() {
    for (task, want) in [("big-prompt:1", "bytes is over the limit"), ("many-messages:1", "messages is over the limit")] {
        let dir = tempdir();
        let r = run(&mut chaos(dir.path(), task));
        r.assert_code(0);
        let s = r.json();
        assert!(s["result"].as_str().unwrap().contains(want), "{task}: {s}");
        assert_eq!(s["spent_nanos"], 0);
        let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
        assert_eq!(events(&log, "llm_call_refused")[0]["reason"], "invalid_request");
    }
}

#[test]
fn a_trap_in_snapshot_keeps_the_previous_state() {
    let dir = tempdir();
    let r = run(&mut chaos(dir.path(), "trap-snapshot:3"));
    r.assert_code(FAILURE);
    let s = r.json();
    assert!(s["stop_reason"]["message"].as_str().unwrap().contains("snapshot after step 3"), "{s}");
    assert_eq!(checkpoint_cycle(s["checkpoint"].as_str().unwrap()), 2);
}

#[test]
fn a_trap_in_restore_is_reported() {
    let dir = tempdir();
    let r = run(chaos(dir.path(), "trap-restore:9").args(["--max-cycles", "2"]));
    r.assert_code(0);
    let ck = r.json()["checkpoint"].as_str().unwrap().to_string();
    let mut c = host();
    c.args(["resume", &ck, "--json"]);
    let r = run(&mut c);
    r.assert_code(FAILURE);
    assert!(r.json()["stop_reason"]["message"].as_str().unwrap().contains("restore"));
}
