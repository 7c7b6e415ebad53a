//! The host's benchmarks (issue 7, BENCHMARKS.md). One binary so wasmtime is
//! linked once; run a subset with a filter, e.g.
//! `cargo bench --profile dev -p host --bench host -- ledger`.
//!
//! Each benchmark prints criterion's estimate; `host/examples/bench_report.rs`
//! turns the saved estimates into the median/spread/target table.

mod calls;
mod checkpoint;
mod common;
mod fuel;
mod instantiate;
mod journal;
mod ledger;
mod stop;

use criterion::{criterion_group, criterion_main, Criterion};

fn config() -> Criterion {
    // Short warm-up and measurement: `make bench` must fit in 15 minutes on a
    // fresh 2-core machine, build included. Groups that need it set their own.
    Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = calls::bench, journal::bench, ledger::bench, instantiate::bench, checkpoint::bench, fuel::bench, stop::bench
}
criterion_main!(benches);
