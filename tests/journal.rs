//! The write-ahead call journal (issue 16): a crash at any moment, then
//! resume. Money is counted from the provider's side (the in-test server's
//! requests), never from the host's own books.

use crate::util::*;
use std::path::Path;

/// gpt-4o-mini ($0.15 / $0.60 per 1M) for the recorded answer's 35 + 48 tokens.
const PER_CALL: u64 = 34_050;
const CYCLES: u64 = 6;

fn essay(dir: &Path, server: &Server) -> std::process::Command {
    let mut c = host();
    c.arg("run").arg(plugin("essay-agent")).arg("--checkpoint-dir").arg(dir);
    c.args(["--provider", "openai", "--model", "gpt-4o-mini", "--base-url", &format!("{}/v1", server.url)]);
    c.args(["--budget", "1", "--max-cycles", &CYCLES.to_string(), "--checkpoint-every", "3", "--temperature", "0", "--json"]);
    c
}

fn resume(dir: &Path, server: &Server) -> Run {
    let mut c = host();
    c.arg("resume").arg("--latest").arg(dir).args(["--base-url", &format!("{}/v1", server.url), "--json"]);
    run(&mut c)
}

fn server() -> Server {
    Server::start(vec![Canned::from_fixture(&shared_fixture("response-basic.http"))])
}

/// (crash point, at its n-th visit, provider calls a crash there may repeat,
/// whether a journaled intent was left without its result: charged in full)
const CRASHES: &[(&str, u32, u64, bool)] = &[
    ("after-intent", 1, 0, true),   // the intent is durable, the provider never heard of the call
    ("after-intent", 5, 0, true),
    ("after-provider", 2, 1, true), // the provider answered (and billed); the result was not journaled
    ("after-provider", 5, 1, true),
    ("after-result", 1, 0, false),  // answered and journaled: replayed at $0
    ("after-result", 4, 0, false),
    ("after-result", 6, 0, false),
    ("mid-journal", 3, 0, false),   // the 2nd call's intent torn: never sent
    ("mid-journal", 8, 1, true),    // the 4th call's result torn: answered, billed, not journaled
    ("mid-checkpoint", 2, 0, false), // the periodic checkpoint at cycle 3 torn: the start one and the journal remain
    ("after-step", 4, 0, false),
    ("after-step", 6, 0, false),
];

#[test]
fn a_crash_at_any_moment_forgets_no_money_and_pays_no_answered_call_twice() {
    let reference = server();
    let dir = tempdir();
    let r = run(&mut essay(dir.path(), &reference));
    r.assert_code(0);
    let want = r.json();
    assert_eq!(reference.hits() as u64, CYCLES);
    for (point, n, may_repeat, unknown) in CRASHES {
        let case = format!("{point}:{n}");
        let provider = server();
        let dir = tempdir();
        let crashed = run(essay(dir.path(), &provider).env("BUDGET_HOST_CRASH_AT", &case));
        assert_ne!(crashed.code, 0, "{case}: it did not crash");
        assert!(crashed.stderr.contains(&format!("crash point {case} reached")), "{case}: {}", crashed.stderr);
        let r = resume(dir.path(), &provider);
        r.assert_code(0);
        let s = r.json();
        assert_eq!(s["status"], want["status"], "{case}");
        assert_eq!(s["result"], want["result"], "{case}: the same result as an uninterrupted run");
        // The provider's bill: every request it answered, over both processes.
        let hits = provider.hits() as u64;
        assert!(hits >= CYCLES && hits <= CYCLES + may_repeat, "{case}: the provider was asked {hits} times for {CYCLES} answers");
        let bill = hits * PER_CALL;
        let books = s["spent_nanos"].as_u64().unwrap();
        assert!(books >= bill, "{case}: the books ({books}) forget part of the bill ({bill})");
        assert!(books <= s["limit_nanos"].as_u64().unwrap());
        if *unknown {
            // The call in flight is charged its whole reservation: more than any bill for it.
            assert!(books > bill, "{case}: the call in flight was not charged");
            let log = read_log(&dir.path().join("budget_monitoring.jsonl"));
            assert!(events(&log, "llm_call_cancelled").iter().any(|e| e["reason"].as_str().unwrap().contains("in flight at a crash")), "{case}: the log says so");
        } else {
            assert_eq!(books, bill, "{case}: nothing was in flight, the books equal the bill");
        }
    }
}

#[test]
fn a_torn_journal_is_read_to_its_last_whole_record() {
    let provider = server();
    let dir = tempdir();
    let crashed = run(essay(dir.path(), &provider).env("BUDGET_HOST_CRASH_AT", "mid-journal:8"));
    assert_ne!(crashed.code, 0);
    let r = resume(dir.path(), &provider);
    r.assert_code(0);
    assert!(r.stderr.contains("calls.journal: record") && r.stderr.contains("cut off"), "{}", r.stderr);
    assert!(r.stderr.contains("📒 The call journal after the checkpoint"), "{}", r.stderr);
}

/// The journal keeps only what the retained checkpoints need: a run's
/// records from its oldest retained checkpoint on; the rest go when the
/// journal is next opened with no other process on it.
#[test]
fn the_journal_is_trimmed_to_the_oldest_retained_checkpoint() {
    let provider = server();
    let dir = tempdir();
    let journal = dir.path().join("calls.journal");
    let seqs = |run: &str| -> Vec<u64> {
        std::fs::read_to_string(&journal)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["rec"].clone())
            .filter(|r| r["run_id"] == run)
            .map(|r| r["seq"].as_u64().unwrap())
            .collect()
    };
    let first = run(essay(dir.path(), &provider).args(["--run-id", "first", "--checkpoint-every", "1", "--retain", "2"]));
    first.assert_code(0);
    assert_eq!(seqs("first").len(), 2 * CYCLES as usize, "an intent and a result per call");
    let second = run(essay(dir.path(), &provider).args(["--run-id", "second", "--checkpoint-every", "1", "--retain", "2"]));
    second.assert_code(0);
    let kept = seqs("first");
    assert!(!kept.is_empty() && kept.len() < 2 * CYCLES as usize, "trimmed: {kept:?}");
    assert!(kept.iter().all(|s| *s >= 4), "only what its two newest checkpoints need: {kept:?}");
    assert_eq!(seqs("second").len(), 2 * CYCLES as usize);
}

/// A resume that itself crashes mid-write, then resumes again: the torn line
/// of each crash is skipped, the records after it kept, and the money holds.
#[test]
fn two_torn_crashes_in_a_row_still_forget_no_money() {
    let reference = server();
    let want = run(&mut essay(tempdir().path(), &reference)).json();
    let provider = server();
    let dir = tempdir();
    assert_ne!(run(essay(dir.path(), &provider).env("BUDGET_HOST_CRASH_AT", "mid-journal:4")).code, 0);
    let mut again = host();
    again.arg("resume").arg("--latest").arg(dir.path()).args(["--base-url", &format!("{}/v1", provider.url), "--json"]);
    assert_ne!(run(again.env("BUDGET_HOST_CRASH_AT", "mid-journal:3")).code, 0);
    let r = resume(dir.path(), &provider);
    r.assert_code(0);
    let s = r.json();
    assert_eq!(s["result"], want["result"]);
    let bill = provider.hits() as u64 * PER_CALL;
    let books = s["spent_nanos"].as_u64().unwrap();
    assert!(books >= bill, "the books ({books}) forget part of the bill ({bill})");
    assert!(provider.hits() as u64 <= CYCLES + 2, "at most the two calls in flight were sent again: {}", provider.hits());
}

/// `--latest --fallback` past a damaged newest checkpoint: the journal from
/// the older checkpoint on is reconciled and replayed, so no money is
/// forgotten and no answered call is paid twice.
#[test]
fn a_fallback_to_an_older_checkpoint_reconciles_the_journal_from_there() {
    let reference = server();
    let want = run(&mut essay(tempdir().path(), &reference)).json();
    let provider = server();
    let dir = tempdir();
    assert_ne!(run(essay(dir.path(), &provider).env("BUDGET_HOST_CRASH_AT", "after-step:5")).code, 0);
    // Damage the newest checkpoint (the periodic one at cycle 3 is newer than the start one).
    let mut cks: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().ends_with(".jsonl.gz")).collect();
    cks.sort();
    std::fs::write(cks.last().unwrap(), b"\x1f\x8b damaged").unwrap();
    let mut c = host();
    c.arg("resume").arg("--latest").arg(dir.path()).arg("--fallback").args(["--base-url", &format!("{}/v1", provider.url), "--json"]);
    let r = run(&mut c);
    r.assert_code(0);
    let s = r.json();
    assert_eq!(s["result"], want["result"]);
    assert_eq!(provider.hits() as u64, CYCLES, "every answered call replayed from the journal, none paid twice");
    assert_eq!(s["spent_nanos"].as_u64().unwrap(), CYCLES * PER_CALL, "the books equal the bill");
}
