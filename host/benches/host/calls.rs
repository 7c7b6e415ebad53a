//! Per-call host overhead through the full path: the real chaos agent
//! (`calls:<n>`) calls `llm.complete` n times in one step; each call crosses
//! the wasm import, is size-checked, priced, shown to the hooks, reserved,
//! sent to an instant in-process provider, settled, written to the audit log,
//! shown to the hooks again and returned to the guest.
//!
//! The provider reads the clocks at the first and the last call only, so the
//! figure is (last - first) / (n - 1): start-up, the final checkpoint and the
//! log's fsync are outside it, and nothing is subtracted or estimated.
//! Criterion gets the wall time; the CPU time of the thread that runs the
//! whole path is printed beside it and saved for `bench_report` (on a shared
//! machine it is the figure other processes do not inflate).

use crate::common::{config, host, plugin, results_dir, runtime, scratch, InstantProvider};
use criterion::{Criterion, SamplingMode};
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

pub fn bench(c: &mut Criterion) {
    let rt = runtime();
    let agent = plugin("chaos-agent");
    // Two real hooks: the seed's budget monitor (Rust) and a per-operation cap (C),
    // with a cap that is checked on every call but never reached.
    let hooks = [(plugin("budget-monitor"), ""), (plugin("hook-op-cap-c"), "*=1000")];
    let host = host();
    let mut g = c.benchmark_group("call");
    g.sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(4));
    // (name, hooks, audit log to a file, write-ahead journal)
    let variants: [(&str, &[(PathBuf, &str)], bool, bool); 4] = [
        ("full_2_hooks_log", &hooks, true, false),
        ("no_hooks_log", &[], true, false),
        ("no_hooks_log_journal", &[], true, true),
        ("no_hooks_no_log", &[], false, false),
    ];
    let mut cpu_results = serde_json::Map::new();
    for (name, hooks, log_to_file, journal) in variants {
        // (calls timed, CPU time) of every sample, warm-up included.
        let samples = RefCell::new(Vec::new());
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let dir = scratch("calls");
                // Calls 0..=iters: `iters` intervals between the two marks.
                let provider = InstantProvider::marking(0, iters);
                // Without the log: written to /dev/null (the host always writes one).
                let log = if log_to_file { dir.join("audit.jsonl") } else { PathBuf::from("/dev/null") };
                let (spec, opts) = config(agent.clone(), &format!("calls:{}", iters + 1), provider.clone(), &dir, log, hooks);
                // Two fsynced records a call (intent, result): the durability's price.
                let opts = if journal { opts.journal(&dir.join("calls.journal")).unwrap() } else { opts };
                let out = rt.block_on(host.run(spec, opts)).unwrap();
                assert!(out.interrupt.is_none(), "the run stopped: {:?}", out.interrupt);
                assert_eq!(out.ledger.calls as u64, iters + 1);
                let (wall, cpu) = provider.marked_span();
                samples.borrow_mut().push((iters, cpu));
                wall
            })
        });
        // Flat sampling: the measured samples all share one call count (the
        // most frequent one); the warm-up's doubling counts are left out.
        let samples = samples.into_inner();
        let mut counts = std::collections::HashMap::new();
        for s in &samples {
            *counts.entry(s.0).or_insert(0) += 1;
        }
        let most = counts.into_iter().max_by_key(|&(iters, n)| (n, iters)).map(|(iters, _)| iters).unwrap_or(0);
        let mut per_call: Vec<f64> = samples.iter().filter(|s| s.0 == most).map(|s| s.1.as_nanos() as f64 / s.0 as f64).collect();
        if per_call.is_empty() {
            continue;
        }
        per_call.sort_by(f64::total_cmp);
        let median = per_call[per_call.len() / 2];
        let mut dev: Vec<f64> = per_call.iter().map(|x| (x - median).abs()).collect();
        dev.sort_by(f64::total_cmp);
        let mad = dev[dev.len() / 2];
        println!("call/{name} CPU time of the calling thread: median {median:.0} ns/call, MAD {mad:.0} ns ({} samples of {most} calls)", per_call.len());
        cpu_results.insert(name.into(), serde_json::json!({"median_ns": median, "mad_ns": mad, "samples": per_call.len(), "calls_per_sample": most}));
    }
    g.finish();
    if !cpu_results.is_empty() {
        std::fs::write(results_dir().join("call_cpu.json"), serde_json::to_string_pretty(&cpu_results).unwrap()).unwrap();
    }
}
