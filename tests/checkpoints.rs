//! Checkpoints: periodic, on interrupt and final; retention; exact resume;
//! inspect; and every kind of damaged checkpoint refused by name.

use crate::basics::scripted;
use crate::util::*;
use flate2::{read::GzDecoder, write::GzEncoder, Compression};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("checkpoint_"))
        .collect();
    v.sort();
    v
}

/// The seed's exhaustion case, with calls never shortened (a shortened answer
/// is a different answer): refused at the limit, so resume is exact.
fn exact(dir: &Path, budget: &str) -> std::process::Command {
    let mut c = scripted(dir, "essay-gpt4o.json", budget);
    c.args(["--max-tokens", "2000", "--min-output-tokens", "2000", "--json"]);
    c
}

#[test]
fn periodic_interrupt_and_final_checkpoints_with_retention() {
    let dir = tempdir();
    let r = run(scripted(dir.path(), "essay-mini.json", "1").args(["--checkpoint-every", "2", "--retain", "3", "--json"]));
    r.assert_code(0);
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    let saved = events(&log, "checkpoint_saved");
    let reasons: Vec<&str> = saved.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    // A journaled run starts with a checkpoint its journal can be replayed
    // onto; cycle 10 finishes the task: its checkpoint is the final one.
    assert_eq!(reasons, ["start", "periodic", "periodic", "periodic", "periodic", "final"]);
    let cycles: Vec<u64> = saved.iter().map(|e| e["cycle"].as_u64().unwrap()).collect();
    assert_eq!(cycles, [0, 2, 4, 6, 8, 10]);
    let left = checkpoints(dir.path());
    assert!(left.len() <= 3, "retention keeps 3: {left:?}");
    let s = r.json();
    assert!(Path::new(s["checkpoint"].as_str().unwrap()).exists());

    // An interrupt writes one too, and the stop block names it.
    let dir = tempdir();
    let r = run(scripted(dir.path(), "essay-gpt4o.json", "0.10").args(["--max-tokens", "2000"]));
    r.assert_code(BUDGET);
    let line = r.stdout.lines().find(|l| l.contains("Checkpoint: ")).unwrap();
    let path = line.split("Checkpoint: ").nth(1).unwrap().trim();
    assert!(Path::new(path).exists(), "{path}");
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    assert_eq!(events(&log, "checkpoint_saved").last().unwrap()["reason"], "interrupt");

    // --no-checkpoint-on-interrupt writes none on the stop.
    let dir = tempdir();
    let r = run(scripted(dir.path(), "essay-gpt4o.json", "0.10").args(["--max-tokens", "2000", "--checkpoint-every", "0", "--no-checkpoint-on-interrupt"]));
    r.assert_code(BUDGET);
    assert!(checkpoints(dir.path()).is_empty());
    assert!(r.stdout.contains("Checkpoint: none written"));
}

#[test]
fn resume_after_budget_stop_is_exact() {
    let whole = tempdir();
    let full = run(&mut exact(whole.path(), "1.0"));
    full.assert_code(0);
    let full = full.json();

    let dir = tempdir();
    let part = run(&mut exact(dir.path(), "0.10"));
    part.assert_code(BUDGET);
    let part = part.json();
    assert!(part["spent_nanos"].as_u64().unwrap() <= 100_000_000);
    let ck = part["checkpoint"].as_str().unwrap().to_string();

    let mut c = host();
    c.args(["resume", &ck, "--budget", "1.0", "--json"]);
    let resumed = run(&mut c);
    resumed.assert_code(0);
    let resumed = resumed.json();
    assert_eq!(resumed["result"], full["result"], "same final output");
    assert_eq!(resumed["spent_nanos"], full["spent_nanos"], "same total cost");
    assert_eq!(resumed["input_tokens"], full["input_tokens"]);
    assert_eq!(resumed["output_tokens"], full["output_tokens"]);
    assert_eq!(resumed["calls"], full["calls"]);
    assert_eq!(resumed["cost_by_operation"], full["cost_by_operation"]);
    assert_eq!(resumed["run_id"], part["run_id"], "a resume continues the same run");
    // The resumed run appended to the same log.
    let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
    assert_eq!(events(&log, "budget_monitoring_start").len(), 2);
    assert!(events(&log, "budget_monitoring_start")[1]["resumed_from"].is_string());
}

#[test]
fn resume_keeps_the_old_limit_and_refuses_a_lower_one() {
    let dir = tempdir();
    let part = run(&mut exact(dir.path(), "0.10")).json();
    let ck = part["checkpoint"].as_str().unwrap().to_string();
    let mut c = host();
    c.args(["resume", &ck, "--budget", "0.01"]);
    let r = run(&mut c);
    r.assert_code(USAGE);
    assert!(r.stderr.contains("below the $0.0"), "{}", r.stderr);
    // Without --budget the old limit stands: the next call still does not fit.
    let mut c = host();
    c.args(["resume", &ck, "--json"]);
    let r = run(&mut c);
    r.assert_code(BUDGET);
    assert_eq!(r.json()["limit_nanos"], 100_000_000);
    assert_eq!(r.json()["spent_nanos"], part["spent_nanos"]);
}

#[test]
fn inspect_shows_a_checkpoint() {
    let dir = tempdir();
    let part = run(&mut exact(dir.path(), "0.10")).json();
    let ck = part["checkpoint"].as_str().unwrap().to_string();
    let mut c = host();
    c.args(["inspect", &ck]);
    let r = run(&mut c);
    r.assert_code(0);
    assert!(r.stdout.contains("Reason: interrupt (budget graceful"), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("Run: {}", part["run_id"].as_str().unwrap())));
    assert!(r.stdout.contains("💰 COST BREAKDOWN"));
    let mut c = host();
    c.args(["inspect", &ck, "--json"]);
    let j: Value = serde_json::from_str(&run(&mut c).stdout).unwrap();
    assert_eq!(j["spent_nanos"], part["spent_nanos"]);
    assert_eq!(j["cycle"], part["cycles"]);
    assert_eq!(j["reason"], "interrupt");
}

fn gunzip(raw: &[u8]) -> String {
    let mut s = String::new();
    GzDecoder::new(raw).read_to_string(&mut s).unwrap();
    s
}

fn gzip(text: &str) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

#[test]
fn damaged_checkpoints_are_refused_by_name() {
    let dir = tempdir();
    let part = run(&mut exact(dir.path(), "0.10")).json();
    let good = std::fs::read(part["checkpoint"].as_str().unwrap()).unwrap();
    let body = gunzip(&good);
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() * 2 / 3].to_vec(), "truncated or corrupt"),
        ("bitflip", flipped, "corrupt"),
        ("empty", Vec::new(), "is empty"),
        ("notgzip", b"just some text".to_vec(), "not gzip"),
        ("wrongjson", gzip("{\"hello\": 1}\n[1,2,3]\n"), "no trailer"),
        ("tampered", gzip(&body.replacen("\"calls\":", "\"calls\":1", 1)), "tampered"),
    ];
    for (name, bytes, want) in cases {
        let p = dir.path().join(format!("{name}.jsonl.gz"));
        std::fs::write(&p, bytes).unwrap();
        for cmd in ["resume", "inspect"] {
            let mut c = host();
            c.arg(cmd).arg(&p);
            let r = run(&mut c);
            r.assert_code(USAGE);
            assert!(r.stderr.contains(want), "{name}/{cmd}: want '{want}', got: {}", r.stderr);
            assert_eq!(r.stderr.lines().count(), 1, "{name}: one line: {}", r.stderr);
        }
    }
}

#[test]
fn resume_refuses_a_changed_agent_unless_forced() {
    let dir = tempdir();
    let agent = dir.path().join("essay-copy.wasm");
    std::fs::copy(plugin("essay-agent"), &agent).unwrap();
    let mut c = host();
    c.arg("run").arg(&agent).arg("--checkpoint-dir").arg(dir.path());
    c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-gpt4o.json"));
    c.args(["--budget", "0.10", "--max-tokens", "2000", "--min-output-tokens", "2000", "--json"]);
    let part = run(&mut c).json();
    let ck = part["checkpoint"].as_str().unwrap().to_string();
    // Append a custom section: still a valid component, different bytes.
    let mut bytes = std::fs::read(&agent).unwrap();
    bytes.extend_from_slice(b"\x00\x05\x04test");
    std::fs::write(&agent, bytes).unwrap();
    let mut c = host();
    c.args(["resume", &ck, "--budget", "1"]);
    let r = run(&mut c);
    r.assert_code(USAGE);
    assert!(r.stderr.contains("changed since the checkpoint"), "{}", r.stderr);
    assert!(r.stderr.contains("--force"));
    let mut c = host();
    c.args(["resume", &ck, "--budget", "1", "--force"]);
    let r = run(&mut c);
    r.assert_code(0);
    assert!(r.stderr.contains("resuming anyway"));
}

#[test]
fn latest_never_skips_a_damaged_newest_silently() {
    let dir = tempdir();
    let r = run(&mut exact(dir.path(), "0.10"));
    r.assert_code(BUDGET);
    let valid = checkpoints(dir.path());
    assert!(!valid.is_empty());
    // A newer, damaged checkpoint.
    let newest = dir.path().join("checkpoint_29991231_235959_99.jsonl.gz");
    std::fs::write(&newest, b"\x1f\x8b garbage").unwrap();
    let mut c = host();
    c.arg("resume").arg("--latest").arg(dir.path()).args(["--budget", "1"]);
    let r = run(&mut c);
    r.assert_code(USAGE);
    assert!(r.stderr.contains("newest checkpoint is damaged"), "{}", r.stderr);
    assert!(r.stderr.contains("--fallback"));
    let mut c = host();
    c.arg("resume").arg("--latest").arg(dir.path()).args(["--budget", "1", "--fallback"]);
    let r = run(&mut c);
    r.assert_code(0);
    assert!(r.stdout.contains("Skipping damaged checkpoint"), "{}", r.stdout);
}

#[test]
fn kill_9_while_checkpointing_leaves_a_resumable_checkpoint() {
    // Checkpoint every cycle and kill the host at spread-out moments: whatever
    // the moment, every file under a checkpoint name is whole and loads.
    let dir = tempdir();
    for i in 0..12u64 {
        let mut c = scripted(dir.path(), "essay-mini.json", "1");
        c.args(["--checkpoint-every", "1", "--quiet"]);
        let mut child = c.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5 + i * 9));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        for p in checkpoints(dir.path()) {
            let mut c = host();
            c.arg("inspect").arg(&p);
            let r = run(&mut c);
            assert_eq!(r.code, 0, "{} is damaged after kill -9: {}", p.display(), r.stderr);
        }
    }
    assert!(!checkpoints(dir.path()).is_empty(), "some run got far enough to checkpoint");
    let mut c = host();
    c.arg("resume").arg("--latest").arg(dir.path()).args(["--budget", "1", "--json"]);
    let r = run(&mut c);
    r.assert_code(0);
}

#[test]
fn unwritable_checkpoint_dir_is_a_clear_error_and_the_log_stays_complete() {
    let dir = tempdir();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"file").unwrap();
    let log = dir.path().join("audit.jsonl");
    let cmd = |journal: bool| {
        let mut c = host();
        c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(blocker.join("ck")).arg("--log").arg(&log);
        c.args(["--provider", "scripted", "--script"]).arg(fixture("essay-mini.json")).args(["--budget", "1", "--json"]);
        if !journal {
            c.arg("--no-journal");
        }
        c
    };
    // With the call journal (the default) the directory is needed before
    // the first call: refused before any money is spent.
    let r = run(&mut cmd(true));
    r.assert_code(2);
    assert!(r.stderr.contains("call journal") && r.stderr.contains("not-a-dir"), "{}", r.stderr);
    assert!(!log.exists() || events(&read_log(&log), "llm_call").is_empty());

    // Without it, the first periodic checkpoint fails and stops the run cleanly.
    let _ = std::fs::remove_file(&log);
    let r = run(&mut cmd(false));
    r.assert_code(FAILURE);
    let s = r.json();
    assert!(s["stop_reason"]["message"].as_str().unwrap().contains("cannot write a checkpoint"), "{s}");
    assert_eq!(s["cycles"], 5, "stopped at the first periodic checkpoint");
    let lines = read_log(&log);
    assert_eq!(lines.last().unwrap()["event"], "budget_monitoring_end");
    assert_eq!(events(&lines, "llm_call").len(), 5);
}

/// A checkpoint written by host 0.1 (format 1: the command line's settings in
/// its header) resumes on this host: migrated to a spec, its ledger and agent
/// state intact. The plugin it names was built on another machine, so the
/// file is pointed at this checkout's agent (and re-sealed) and resumed with --force.
#[test]
fn a_format_1_checkpoint_of_host_0_1_resumes() {
    use flate2::{read::GzDecoder, write::GzEncoder, Compression};
    use sha2::{Digest, Sha256};
    use std::io::{Read, Write};
    let mut text = String::new();
    GzDecoder::new(std::fs::File::open(fixture("host-0.1/checkpoint-budget-stop.jsonl.gz")).unwrap()).read_to_string(&mut text).unwrap();
    let mut lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.pop();
    assert_eq!(lines[0]["format"], 1);
    lines[0]["agent"]["path"] = serde_json::json!(plugin("essay-agent"));
    lines[0]["hooks"][0]["path"] = serde_json::json!(plugin("budget-monitor"));
    let mut body = Vec::new();
    for l in &lines {
        serde_json::to_writer(&mut body, l).unwrap();
        body.push(b'\n');
    }
    let trailer = serde_json::json!({"kind": "trailer", "sha256": hex::encode(Sha256::digest(&body)), "lines": lines.len()});
    serde_json::to_writer(&mut body, &trailer).unwrap();
    body.push(b'\n');
    let dir = tempdir();
    let ck = dir.path().join("checkpoint_20261202_081528_7.jsonl.gz");
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&body).unwrap();
    std::fs::write(&ck, gz.finish().unwrap()).unwrap();

    let r = run(host().arg("inspect").arg(&ck));
    r.assert_code(0);
    assert!(r.stdout.contains("format 1") && r.stdout.contains("Hook 'budget-monitor'") && r.stdout.contains("$0.0983 / $0.1000"), "{}", r.stdout);
    // Without --force the changed plugins are refused, naming them.
    let r = run(host().arg("resume").arg(&ck).args(["--budget", "0.2"]));
    r.assert_code(USAGE);
    assert!(r.stderr.contains("changed since the checkpoint"), "{}", r.stderr);
    let r = run(host().arg("resume").arg(&ck).args(["--budget", "0.2", "--force", "--json"]));
    r.assert_code(0);
    let s = r.json();
    assert_eq!(s["status"], "completed");
    // The old run stopped at $0.0983 after 6 calls; the resume adds four more, as host 0.1 did.
    assert_eq!((s["calls"].as_u64(), s["spent_nanos"].as_u64()), (Some(10), Some(161_280_000)));
    assert_eq!(s["run_id"], "essay-agent-20261202_081527-5519");
}
