//! Agent start, three ways, each ending with a live instance of the real
//! chaos agent in a store set up like `run_agent`'s:
//! `first_start_compile`: read + hash the wasm, compile with Cranelift (no
//!   cache), check the world, link, pre-instantiate, instantiate;
//! `start_from_cache`: the same with the compiled artifact read from the
//!   on-disk cache (checksum + `Component::deserialize`) instead of compiling;
//! `instantiate_from_template`: a new store and an instance from the
//!   pre-instantiated template (`InstancePre`) — the per-agent cost once the
//!   component is loaded; `instantiate_and_drop`: the same plus dropping it
//!   (unmapping its memory), the whole life of an idle agent.

use crate::common::{cache_dir, plugin, runtime, scratch, Standalone};
use budget_host::engine::{self, PluginFile};
use budget_host::spec::PluginPin;
use budget_host::Host;
use criterion::{black_box, BatchSize, Criterion};
use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a process does from the file to the instance: a new `Host` (so no
/// component is loaded yet), read + hash, compile or read the cache, check
/// the world, link, pre-instantiate, instantiate.
async fn start(engine: &wasmtime::Engine, cache: Option<PathBuf>, sa: &Standalone, path: &Path) {
    let host = Host::with_engine(engine.clone(), cache).unwrap();
    let pre = host.load_agent(&PluginPin::file(path)).unwrap().pre;
    let mut store = sa.store();
    black_box(pre.instantiate_async(&mut store).await.unwrap());
}

pub fn bench(c: &mut Criterion) {
    let rt = runtime();
    let path = plugin("chaos-agent");
    let engine = engine::new_engine().unwrap();
    // Built on first use: a filtered run does not pay for it.
    let sa = OnceCell::new();
    let sa = || sa.get_or_init(|| Standalone::new(engine.clone(), true, "chaos-agent", &scratch("instantiate")));
    let mut g = c.benchmark_group("start");

    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("first_start_compile", |b| b.iter(|| rt.block_on(start(&engine, None, sa(), &path))));

    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function("start_from_cache", |b| {
        // `Standalone::new` filled the cache for this engine: every start below is a hit.
        let sa = sa();
        let cached = engine::Compiler::new(engine.clone(), Some(cache_dir()));
        assert!(cached.load(&PluginFile::read(&path).unwrap()).unwrap().1, "the compiled artifact is not in the cache");
        b.iter(|| rt.block_on(start(&engine, Some(cache_dir()), sa, &path)))
    });

    // The target is the start: the agent (store, instance) is dropped outside
    // the timing, as `iter_batched` does. The second row adds its teardown.
    g.bench_function("instantiate_from_template", |b| {
        b.iter_batched(|| (), |()| rt.block_on(sa().instantiate()), BatchSize::PerIteration)
    });
    g.bench_function("instantiate_and_drop", |b| b.iter(|| black_box(rt.block_on(sa().instantiate()))));
    g.finish();
}
