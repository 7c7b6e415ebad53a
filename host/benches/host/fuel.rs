//! Fuel metering overhead: the chaos agent's compute-heavy `slow` step
//! (50 million loop iterations, no LLM call) on the host's engine (fuel and
//! epoch interruption on) and on the same engine with fuel off.

use crate::common::{engine_without_fuel, runtime, scratch, Standalone};
use budget_host::bindings::types::StepOutcome;
use budget_host::engine;
use criterion::Criterion;
use std::time::Duration;

pub fn bench(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("fuel");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (name, engine, fuel) in [("slow_step_fuel_on", engine::new_engine().unwrap(), true), ("slow_step_fuel_off", engine_without_fuel(), false)] {
        let sa = Standalone::new(engine, fuel, "chaos-agent", &scratch("fuel"));
        let (mut store, agent) = rt.block_on(sa.instantiate());
        let run = agent.budget_host_plugin_run();
        rt.block_on(run.call_init(&mut store, "slow")).unwrap().unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                // `slow` finishes in the step it starts: it can run again and again.
                match rt.block_on(run.call_step(&mut store, 1)).unwrap().unwrap() {
                    StepOutcome::Done(x) => x,
                    StepOutcome::Continue(p) => panic!("slow did not finish: {p}"),
                }
            })
        });
    }
    g.finish();
}
