//! What wasmtime's pooling allocator would do to agent instantiation: the
//! host's engine (on-demand allocation) against the same engine with a
//! pooling allocator, instantiating the chaos agent from its template 6,000
//! times each. A probe for a possible change, not the host's configuration
//! (BENCHMARKS.md, "instantiate from template").
//!
//! `cargo run --profile dev -p host --example pooling_probe`

#[allow(dead_code)]
#[path = "../benches/host/common.rs"]
mod common;

use std::time::Instant;

fn main() {
    let rt = common::runtime();
    for pooling in [false, true] {
        let mut cfg = budget_host::engine::engine_config();
        if pooling {
            let mut p = wasmtime::PoolingAllocationConfig::default();
            p.total_memories(200).total_tables(400).total_core_instances(400).total_component_instances(200).max_memory_size(256 << 20);
            cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(p));
        }
        let engine = budget_host::engine::engine_from(&cfg).unwrap();
        let sa = common::Standalone::new(engine, true, "chaos-agent", &common::scratch("pooling_probe"));
        rt.block_on(async {
            for _ in 0..50 {
                drop(sa.instantiate().await);
            }
            let mut v = Vec::new();
            for _ in 0..6000 {
                let t = Instant::now();
                let x = sa.instantiate().await;
                v.push(t.elapsed());
                drop(x);
            }
            v.sort();
            let what = if pooling { "pooling allocator" } else { "on-demand (the host's)" };
            println!("instantiate from template, {what}: median {:?}, p10 {:?}, p90 {:?}", v[v.len() / 2], v[v.len() / 10], v[v.len() * 9 / 10]);
        });
    }
}
