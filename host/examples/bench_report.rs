//! Print the benchmark table (BENCHMARKS.md) from what the last `make bench`
//! saved: criterion's estimates under `target/criterion` and the idle-agent
//! RSS figures. Every number it prints comes from those files; the targets
//! are the issue's.
//!
//! `cargo run --profile dev -p host --example bench_report`

#[allow(dead_code)]
#[path = "../benches/host/common.rs"]
mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};

struct Estimate {
    median: f64,
    mad: f64,
    lo: f64,
    hi: f64,
    date: std::time::SystemTime,
}

fn criterion_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d).join("criterion"),
        None => common::repo().join("target").join("criterion"),
    }
}

/// Criterion's saved estimate for `group/function`, in ns per iteration.
fn estimate(id: &str) -> Option<Estimate> {
    let path = criterion_dir().join(id).join("new").join("estimates.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    let date = std::fs::metadata(&path).ok()?.modified().ok()?;
    let f = |k: &str, sub: &str| v[k][sub].as_f64();
    Some(Estimate {
        median: f("median", "point_estimate")?,
        mad: f("median_abs_dev", "point_estimate")?,
        lo: v["median"]["confidence_interval"]["lower_bound"].as_f64()?,
        hi: v["median"]["confidence_interval"]["upper_bound"].as_f64()?,
        date,
    })
}

fn human(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn main() {
    // (criterion id, what, target in ns if any, peer note)
    let ck = |what: &str, size: &str| format!("checkpoint_gzip{}/{what}/{size}", budget_host::checkpoint::GZIP_LEVEL);
    let rows: Vec<(String, &str, Option<f64>, &str)> = vec![
        ("call/full_2_hooks_log".into(), "per call: wasm import + 2 wasm hooks + reserve/settle + audit line", Some(2_000.0), "seed Python: 2.1–2.7 µs bookkeeping only"),
        ("call/no_hooks_log".into(), "per call: same, no hooks", None, ""),
        ("call/no_hooks_no_log".into(), "per call: same, no hooks, log to /dev/null", None, ""),
        ("ledger/reserve_settle".into(), "ledger reserve+settle, 1 thread", None, ""),
        ("ledger/reserve_settle_8_threads".into(), "ledger reserve+settle, 8 threads contending (wall/op)", None, ""),
        ("start/first_start_compile".into(), "first start: compile + link + instantiate", None, ""),
        ("start/start_from_cache".into(), "start from compiled cache: load + link + instantiate", None, ""),
        ("start/instantiate_from_template".into(), "instantiate from template (InstancePre)", Some(50_000.0), ""),
        ("start/instantiate_and_drop".into(), "instantiate from template, then drop the agent", None, ""),
        (ck("encode", "100KiB"), "checkpoint encode 100 KiB (no file)", None, ""),
        (ck("save_durable", "100KiB"), "checkpoint save 100 KiB, durable", Some(2e6), "seed: 22–27 ms"),
        (ck("load_verify", "100KiB"), "checkpoint load+verify 100 KiB", Some(0.5e6), ""),
        (ck("encode", "1MiB"), "checkpoint encode 1 MiB (no file)", None, ""),
        (ck("save_durable", "1MiB"), "checkpoint save 1 MiB, durable", None, ""),
        (ck("load_verify", "1MiB"), "checkpoint load+verify 1 MiB", None, ""),
        (ck("encode", "10MiB"), "checkpoint encode 10 MiB (no file)", None, ""),
        (ck("save_durable", "10MiB"), "checkpoint save 10 MiB, durable", None, ""),
        (ck("load_verify", "10MiB"), "checkpoint load+verify 10 MiB", None, ""),
        ("fuel/slow_step_fuel_on".into(), "compute-heavy step, fuel on", None, ""),
        ("fuel/slow_step_fuel_off".into(), "compute-heavy step, fuel off", None, ""),
        ("stop/immediate_to_trap".into(), "immediate stop: request -> guest trapped", Some(100e6), ""),
        ("stop/immediate_to_return".into(), "immediate stop: request -> run_agent returned", Some(100e6), ""),
    ];
    println!("| benchmark | median | spread (MAD) | 95% CI of median | target | ratio | verdict |");
    println!("|---|---|---|---|---|---|---|");
    let mut dates = Vec::new();
    for (id, what, target, peer) in &rows {
        let Some(e) = estimate(id) else {
            println!("| {what} (`{id}`) | not run | | | | | |");
            continue;
        };
        dates.push(e.date);
        let (t, ratio, v) = match target {
            Some(t) => (human(*t), format!("{:.2}x", e.median / t), verdict(e.median <= *t).to_string()),
            None => ("—".into(), "".into(), "".into()),
        };
        let peer = if peer.is_empty() { String::new() } else { format!(" ({peer})") };
        println!("| {what} (`{id}`) | {} | ±{} | {}–{} | {t}{peer} | {ratio} | {v} |", human(e.median), human(e.mad), human(e.lo), human(e.hi));
    }
    // The calls' CPU time (saved by the `call` benches beside criterion's wall time).
    let cpu: Option<Value> = std::fs::read_to_string(common::results_dir().join("call_cpu.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    for (name, what) in [
        ("full_2_hooks_log", "per call, CPU time of the calling thread: full path"),
        ("no_hooks_log", "per call, CPU time: no hooks"),
        ("no_hooks_no_log", "per call, CPU time: no hooks, log to /dev/null"),
    ] {
        if let Some(v) = cpu.as_ref().and_then(|c| c.get(name)) {
            let (m, mad) = (v["median_ns"].as_f64().unwrap_or(f64::NAN), v["mad_ns"].as_f64().unwrap_or(f64::NAN));
            let target = if name == "full_2_hooks_log" {
                format!("2.00 µs | {:.2}x | {} |", m / 2000.0, verdict(m <= 2000.0))
            } else {
                "— | | |".into()
            };
            println!("| {what} (`call/{name}`, {} samples) | {} | ±{} | | {target}", v["samples"], human(m), human(mad));
        }
    }
    // Derived rows: each from two medians above.
    let pair = |a: &str, b: &str| Some((estimate(a)?.median, estimate(b)?.median));
    if let Some((on, off)) = pair("fuel/slow_step_fuel_on".into(), "fuel/slow_step_fuel_off") {
        let r = on / off;
        println!("| fuel overhead (fuel on / fuel off medians) | {r:.3}x | | | 1.5x | {:.2} | {} |", r / 1.5, verdict(r <= 1.5));
    }
    if let Some((full, bare)) = pair("call/full_2_hooks_log".into(), "call/no_hooks_log") {
        println!("| per call: cost of the 2 hooks (full − no hooks) | {} | | | | | |", human(full - bare));
    }
    if let Some((with, without)) = pair("call/no_hooks_log".into(), "call/no_hooks_no_log") {
        println!("| per call: cost of writing the call's log lines to a file, one write (log − /dev/null) | {} | | | | | |", human(with - without));
    }
    if let Some(e) = estimate("call/full_2_hooks_log") {
        println!("| seed's Python bookkeeping (2.1–2.7 µs) / our full path, per call | {:.2}–{:.2} (above 1: we are faster) | | | | | |", 2100.0 / e.median, 2700.0 / e.median);
    }
    if let Some(e) = estimate(&ck("save_durable", "100KiB")) {
        println!("| the seed's checkpoint save (22–27 ms) / ours, 100 KiB | {:.1}–{:.1} (above 1: we are faster) | | | | | |", 22e6 / e.median, 27e6 / e.median);
    }
    for n in [1000, 10000] {
        let p = common::results_dir().join(format!("idle_agents_{n}.json"));
        match std::fs::read_to_string(&p).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
            Some(v) => {
                let kib = v["per_agent_kib"].as_f64().unwrap_or(f64::NAN);
                println!(
                    "| idle agents: RSS per agent at {n} ({}; {:.0} MiB total) | {kib:.1} KiB | | | 1 MiB | {:.3}x | {} |",
                    v["agent"].as_str().unwrap_or("?"),
                    v["rss_after_kib"].as_f64().unwrap_or(0.0) / 1024.0,
                    kib / 1024.0,
                    verdict(kib <= 1024.0)
                );
                if let Some(date) = std::fs::metadata(&p).ok().and_then(|m| m.modified().ok()) {
                    dates.push(date);
                }
            }
            None => println!("| idle agents at {n} | not run (`idle_agents {n}`) | | | 1 MiB | | |"),
        }
    }
    if let (Some(first), Some(last)) = (dates.iter().min(), dates.iter().max()) {
        let fmt = |t: &std::time::SystemTime| chrono::DateTime::<chrono::Local>::from(*t).format("%Y-%m-%d %H:%M").to_string();
        println!("\nResults saved between {} and {} in {}.", fmt(first), fmt(last), display(&criterion_dir()));
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
