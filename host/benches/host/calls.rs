//! Per-call host overhead through the full path: the real chaos agent
//! (`calls:<n>`) calls `llm.complete` n times in one step; each call crosses
//! the wasm import, is size-checked, priced, shown to the hooks, reserved,
//! sent to an instant in-process provider, settled, written to the audit log,
//! shown to the hooks again and returned to the guest.
//!
//! The provider reads the clock at the first and the last call only, so the
//! figure is (last - first) / (n - 1): start-up, the final checkpoint and the
//! log's fsync are outside it, and nothing is subtracted or estimated.

use crate::common::{config, plugin, runtime, scratch, InstantProvider};
use budget_host::interrupt::StopSignal;
use budget_host::run::run_agent;
use criterion::{Criterion, SamplingMode};
use std::path::PathBuf;
use std::time::Duration;

pub fn bench(c: &mut Criterion) {
    let rt = runtime();
    let agent = plugin("chaos-agent");
    // Two real hooks: the seed's budget monitor (Rust) and a per-operation cap (C),
    // with a cap that is checked on every call but never reached.
    let hooks = [(plugin("budget-monitor"), ""), (plugin("hook-op-cap-c"), "*=1000")];
    let mut g = c.benchmark_group("call");
    g.sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(4));
    let variants: [(&str, &[(PathBuf, &str)], bool); 3] = [
        ("full_2_hooks_log", &hooks, true),
        ("no_hooks_log", &[], true),
        ("no_hooks_no_log", &[], false),
    ];
    for (name, hooks, log_to_file) in variants {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let dir = scratch("calls");
                // Calls 0..=iters: `iters` intervals between the two marks.
                let provider = InstantProvider::marking(0, iters);
                // Without the log: written to /dev/null (the host always writes one).
                let log = if log_to_file { dir.join("audit.jsonl") } else { PathBuf::from("/dev/null") };
                let cfg = config(agent.clone(), &format!("calls:{}", iters + 1), provider.clone(), &dir, log, hooks);
                let out = rt.block_on(run_agent(cfg, StopSignal::new())).unwrap();
                assert!(out.interrupt.is_none(), "the run stopped: {:?}", out.interrupt);
                assert_eq!(out.ledger.calls as u64, iters + 1);
                provider.marked_span()
            })
        });
    }
    g.finish();
}
