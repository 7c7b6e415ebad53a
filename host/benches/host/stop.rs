//! Immediate-stop latency: the chaos agent spins forever in step 2
//! (`loop:2`); a stop is requested twice (the second request is immediate,
//! like a second Ctrl+C). Two figures from separate runs:
//! `to_trap`: request -> the guest is stopped (the interrupt's own timestamp,
//! taken when the trap is classified); `to_return`: request -> `run_agent`
//! returned, the hooks told, the checkpoint written and the log synced.

use crate::common::{config, host, plugin, runtime, scratch, InstantProvider};
use budget_host::interrupt::{Mode, Source, StopSignal};
use criterion::{Criterion, SamplingMode};
use std::time::{Duration, Instant};

/// Long enough for step 1 to return and step 2 to start spinning.
const SETTLE: Duration = Duration::from_millis(30);

pub fn bench(c: &mut Criterion) {
    let rt = runtime();
    let agent = plugin("chaos-agent");
    let host = host();
    let mut g = c.benchmark_group("stop");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(3));
    for to_trap in [true, false] {
        g.bench_function(if to_trap { "immediate_to_trap" } else { "immediate_to_return" }, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = scratch("stop");
                    let provider = InstantProvider::new();
                    let (tx, rx) = std::sync::mpsc::channel();
                    provider.notify_first_call(tx);
                    let (mut spec, opts) = config(agent.clone(), "loop:2", provider, &dir, dir.join("audit.jsonl"), &[]);
                    spec.limits.max_cycles = 10;
                    let stop = StopSignal::new();
                    let (host, opts) = (host.clone(), opts.stop(stop.clone()));
                    let run = rt.spawn(async move { host.run(spec, opts).await });
                    rx.recv_timeout(Duration::from_secs(60)).expect("the agent never called the provider");
                    std::thread::sleep(SETTLE);
                    let (t0, wall0) = (Instant::now(), chrono::Local::now().naive_local());
                    stop.request();
                    stop.request();
                    let out = rt.block_on(run).unwrap().unwrap();
                    let returned = t0.elapsed();
                    let i = out.interrupt.expect("the run was interrupted");
                    assert_eq!((i.source, i.mode, out.cycles_completed), (Source::Signal, Mode::Immediate, 1));
                    assert!(i.message.contains("step 2"), "the stop did not trap step 2: {}", i.message);
                    total += if to_trap {
                        let at = chrono::NaiveDateTime::parse_from_str(&i.timestamp, "%Y-%m-%dT%H:%M:%S%.6f").unwrap();
                        (at - wall0).to_std().unwrap_or_default()
                    } else {
                        returned
                    };
                }
                total
            })
        });
    }
    g.finish();
}
