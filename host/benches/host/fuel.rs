//! Fuel metering overhead: the chaos agent's compute-heavy `slow` step
//! (50 million loop iterations, no LLM call) on the host's engine (fuel and
//! epoch interruption on) and on the same engine with fuel off.

use crate::common::{engine_without_fuel, runtime, scratch, Standalone};
use budget_host::bindings::types::StepOutcome;
use budget_host::engine;
use criterion::Criterion;
use std::cell::RefCell;
use std::time::Duration;

pub fn bench(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("fuel");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (name, fuel) in [("slow_step_fuel_on", true), ("slow_step_fuel_off", false)] {
        // Built on first use: a filtered run does not pay for it.
        let setup = RefCell::new(None);
        g.bench_function(name, |b| {
            let mut setup = setup.borrow_mut();
            let (store, agent) = setup.get_or_insert_with(|| {
                let engine = if fuel { engine::new_engine().unwrap() } else { engine_without_fuel() };
                let sa = Standalone::new(engine, fuel, "chaos-agent", &scratch("fuel"));
                let (mut store, agent) = rt.block_on(sa.instantiate());
                rt.block_on(agent.budget_host_plugin_run().call_init(&mut store, "slow")).unwrap().unwrap();
                (store, agent)
            });
            let run = agent.budget_host_plugin_run();
            b.iter(|| {
                // `slow` finishes in the step it starts: it can run again and again.
                match rt.block_on(run.call_step(&mut *store, 1)).unwrap().unwrap() {
                    StepOutcome::Done(x) => x,
                    StepOutcome::Continue(p) => panic!("slow did not finish: {p}"),
                }
            })
        });
    }
    g.finish();
}
