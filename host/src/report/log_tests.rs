//! Tests of the log reader and the totals.

use super::*;

fn line(v: serde_json::Value) -> String {
    format!("{v}\n")
}

fn start(run: &str, limit: u64, before: Option<u64>, from: Option<&str>, ts: &str) -> String {
    line(serde_json::json!({"timestamp": ts, "event": "budget_monitoring_start", "run_id": run, "agent_id": "a",
        "budget_limit_nanos": limit, "spent_before_nanos": before, "resumed_from": from, "resumed_cycle": from.map(|_| 2), "warn": [0.5, 0.8]}))
}

fn call(run: &str, cycle: u32, cost: u64, cum: u64, limit: u64, ts: &str) -> String {
    line(serde_json::json!({"timestamp": ts, "event": "llm_call", "run_id": run, "agent_id": "a", "operation": format!("op_{cycle}"),
        "cycle": cycle, "model": "m", "input_tokens": 10, "output_tokens": 20, "cached_tokens": 0, "cost_nanos": cost,
        "cumulative_nanos": cum, "budget_limit_nanos": limit}))
}

fn end(run: &str, total: u64, limit: u64, ops: u32, ts: &str) -> String {
    line(serde_json::json!({"timestamp": ts, "event": "budget_monitoring_end", "run_id": run, "agent_id": "a",
        "total_cost_nanos": total, "budget_limit_nanos": limit, "operations": ops, "status": "completed", "cycles_completed": 3}))
}

fn parse(text: &str) -> Log {
    Log::parse(text.as_bytes(), Path::new("log.jsonl")).unwrap()
}

#[test]
fn exact_dollars() {
    assert_eq!(fmt_exact(0), "$0.0000");
    assert_eq!(fmt_exact(14_500_000), "$0.0145");
    assert_eq!(fmt_exact(13_180_000), "$0.01318");
    assert_eq!(fmt_exact(1), "$0.000000001");
    assert_eq!(fmt_exact(12_345_678_901), "$12.345678901");
}

#[test]
fn one_run_adds_up() {
    let t0 = "2026-01-01T10:00:00.000000";
    let text = [
        start("r", 100, None, None, t0),
        call("r", 1, 30, 30, 100, "2026-01-01T10:00:01.500000"),
        call("r", 2, 25, 55, 100, "2026-01-01T10:00:03.000000"),
        end("r", 55, 100, 2, "2026-01-01T10:00:04.000000"),
    ]
    .concat();
    let log = parse(&text);
    assert!(log.skipped.is_empty());
    assert_eq!(log.runs.len(), 1);
    let r = &log.runs[0];
    assert_eq!(r.calls.iter().map(|c| c.t).collect::<Vec<_>>(), vec![Some(1.5), Some(3.0)]);
    let t = r.totals();
    assert_eq!((t.spent_nanos, t.ledger_spent_nanos, t.limit_nanos, t.calls, t.unlogged_nanos), (55, 55, 100, 2, 0));
    assert_eq!(t.by_operation["op_1"].cost, 30);
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    assert_eq!(t.ledger_state().fired, vec![true, false]);
}

#[test]
fn resume_from_the_latest_checkpoint_continues_the_ledger() {
    let text = [
        start("r", 100, None, None, "2026-01-01T10:00:00.0"),
        call("r", 1, 30, 30, 100, "2026-01-01T10:00:01.0"),
        end("r", 30, 100, 1, "2026-01-01T10:00:02.0"),
        start("r", 1000, Some(30), Some("ck.gz"), "2026-01-01T11:00:00.0"),
        call("r", 3, 40, 70, 1000, "2026-01-01T11:00:01.0"),
        end("r", 70, 1000, 2, "2026-01-01T11:00:02.0"),
    ]
    .concat();
    let r = &parse(&text).runs[0];
    assert_eq!(r.segments.len(), 2);
    let t = r.totals();
    assert_eq!((t.spent_nanos, t.ledger_spent_nanos, t.limit_nanos, t.calls), (70, 70, 1000, 2));
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    let resume: Vec<_> = r.markers.iter().filter(|m| m.kind == MarkerKind::Resume).collect();
    assert_eq!(resume.len(), 1);
    assert_eq!((resume[0].spent_nanos, resume[0].cycle), (30, Some(2)));
    assert_eq!(r.calls[1].spent_nanos, 70);
}

#[test]
fn resume_from_an_older_checkpoint_counts_the_abandoned_spend() {
    let text = [
        start("r", 100, None, None, "2026-01-01T10:00:00.0"),
        call("r", 1, 30, 30, 100, "2026-01-01T10:00:01.0"),
        call("r", 2, 20, 50, 100, "2026-01-01T10:00:01.5"),
        end("r", 50, 100, 2, "2026-01-01T10:00:02.0"),
        // Resumed from the checkpoint after cycle 1 (30 spent): cycle 2's 20 is paid but forgotten.
        start("r", 100, Some(30), Some("ck1.gz"), "2026-01-01T11:00:00.0"),
        call("r", 2, 25, 55, 100, "2026-01-01T11:00:01.0"),
        end("r", 55, 100, 2, "2026-01-01T11:00:02.0"),
    ]
    .concat();
    let r = &parse(&text).runs[0];
    let t = r.totals();
    assert_eq!((t.spent_nanos, t.ledger_spent_nanos, t.calls), (75, 55, 3));
    assert_eq!(r.calls.iter().map(|c| c.spent_nanos).collect::<Vec<_>>(), vec![30, 50, 75]);
    assert_eq!(t.notes.len(), 1, "{:?}", t.notes);
    assert!(t.notes[0].contains("$0.00000002 spent in between"), "{}", t.notes[0]);
}

#[test]
fn unlogged_charges_come_from_the_end_line() {
    let text = [start("r", 100, None, None, "2026-01-01T10:00:00.0"), call("r", 1, 30, 30, 100, "2026-01-01T10:00:01.0"), end("r", 42, 100, 2, "2026-01-01T10:00:02.0")].concat();
    let t = parse(&text).runs[0].totals();
    assert_eq!((t.spent_nanos, t.unlogged_nanos, t.calls), (42, 12, 2));
    assert_eq!(t.by_operation[UNLOGGED].cost, 12);
    assert_eq!(t.by_operation[UNLOGGED].calls, 1);
    assert_eq!(t.by_operation.values().map(|o| o.cost).sum::<u64>(), t.spent_nanos);
}

#[test]
fn runs_and_agents_are_kept_apart() {
    let text = [
        start("r1", 100, None, None, "2026-01-01T10:00:00.0"),
        start("r2", 200, None, None, "2026-01-01T10:00:00.1"),
        call("r1", 1, 30, 30, 100, "2026-01-01T10:00:01.0"),
        call("r2", 1, 7, 7, 200, "2026-01-01T10:00:01.0"),
        call("r2", 2, 8, 15, 200, "2026-01-01T10:00:01.0"),
    ]
    .concat();
    let log = parse(&text);
    let spent: Vec<_> = log.runs.iter().map(|r| (r.run_id.clone(), r.totals().spent_nanos)).collect();
    assert_eq!(spent, vec![("r1".to_string(), 30), ("r2".to_string(), 15)]);
    assert_eq!(log.runs[1].totals().status.as_deref(), Some("unfinished"));
}

#[test]
fn a_torn_last_line_and_garbage_are_skipped_with_a_note() {
    let full = [start("r", 100, None, None, "2026-01-01T10:00:00.0"), call("r", 1, 30, 30, 100, "2026-01-01T10:00:01.0")].concat();
    let torn = call("r", 2, 25, 55, 100, "2026-01-01T10:00:02.0");
    let text = format!("{full}not json at all\n\n{}", &torn[..torn.len() / 2]);
    let log = parse(&text);
    assert_eq!(log.runs[0].calls.len(), 1);
    assert_eq!(log.lines, 4);
    assert_eq!(log.skipped.iter().map(|s| s.line).collect::<Vec<_>>(), vec![3, 5]);
    assert!(log.skipped[1].reason.contains("ends mid-line"));
    let note = log.skipped_note().unwrap();
    assert!(note.starts_with("note: skipped 2 of 4 lines in log.jsonl: line 3"), "{note}");
    assert!(!note.contains('\n'));
    // Invalid UTF-8 is just another bad line.
    let mut bytes = full.into_bytes();
    bytes.extend_from_slice(b"\xff\xfe{\n");
    let log = Log::parse(&bytes, Path::new("x")).unwrap();
    assert!(log.skipped[0].reason.contains("UTF-8"));
}

#[test]
fn not_a_log_is_an_error() {
    let p = Path::new("x.jsonl");
    assert!(matches!(Log::parse(b"", p), Err(LogError::Empty(_))));
    assert!(matches!(Log::parse(b"\n  \n", p), Err(LogError::Empty(_))));
    let e = Log::parse(b"hello\nworld\n", p).unwrap_err();
    assert!(e.to_string().starts_with("x.jsonl is not an audit log"), "{e}");
    assert!(e.to_string().contains("line 1 is not JSON"), "{e}");
    assert!(matches!(Log::parse(b"{\"a\": 1}\n[1,2]\n", p), Err(LogError::NotAuditLog { .. })));
    let e = Log::read(Path::new("/nonexistent/log.jsonl")).unwrap_err();
    assert!(e.to_string().starts_with("cannot read audit log /nonexistent/log.jsonl"), "{e}");
}

#[test]
fn a_log_cut_at_the_front_gets_an_implicit_segment() {
    let text = [call("r", 5, 10, 60, 100, "2026-01-01T10:00:01.0"), call("r", 6, 10, 70, 100, "2026-01-01T10:00:02.0")].concat();
    let r = &parse(&text).runs[0];
    assert!(r.segments[0].implicit_start);
    assert_eq!(r.segments[0].spent_before_nanos, 50);
    let t = r.totals();
    assert_eq!((t.spent_nanos, t.limit_nanos), (20, 100));
    assert!(t.notes.iter().any(|n| n.contains("already spent")), "{:?}", t.notes);
}

#[test]
fn a_bill_past_the_reservation_is_a_note_and_the_overrun() {
    let t0 = "2026-01-01T10:00:00.000000";
    let mut over: serde_json::Value = serde_json::from_str(&call("r", 2, 130, 160, 100, "2026-01-01T10:00:02.000000")).unwrap();
    over["reserved_nanos"] = 40.into();
    over["over_reservation_nanos"] = 90.into();
    let text = [start("r", 100, None, None, t0), call("r", 1, 30, 30, 100, "2026-01-01T10:00:01.000000"), line(over), end("r", 160, 100, 2, "2026-01-01T10:00:03.000000")].concat();
    let t = parse(&text).runs[0].totals();
    assert_eq!((t.spent_nanos, t.overrun_nanos), (160, 90));
    assert_eq!(t.notes.len(), 1, "{:?}", t.notes);
    assert!(t.notes[0].contains("op_2 (cycle 2) was billed $0.00000009 past its reservation"), "{:?}", t.notes);
    assert_eq!(t.ledger_state().overrun, 90);
}
