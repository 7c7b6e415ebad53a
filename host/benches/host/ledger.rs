//! The ledger alone: one reserve + settle, single-threaded and with 8 threads
//! contending for the same `Arc<Mutex<Ledger>>` (how the host shares it).

use crate::common::BUDGET_NANOS;
use budget_host::budget::Ledger;
use criterion::{black_box, Criterion};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const OPERATION: &str = "llm_call_cycle_3";
/// A gpt-4o-mini call's worst case and its real cost, in nano-USD.
const RESERVE: u64 = 23_100;
const COST: u64 = 3_000;

fn one(l: &mut Ledger) {
    let r = l.reserve(black_box(RESERVE)).unwrap();
    black_box(l.settle(r, black_box(COST), OPERATION, 12, 2));
}

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger");
    g.bench_function("reserve_settle", |b| {
        let mut l = Ledger::new(BUDGET_NANOS).unwrap().with_thresholds(&[0.5, 0.8, 0.9]);
        b.iter(|| one(&mut l))
    });
    // `iters` operations split over 8 threads released together; the figure is
    // wall time / operations, i.e. the cost of one operation under contention.
    const THREADS: u64 = 8;
    g.bench_function("reserve_settle_8_threads", |b| {
        b.iter_custom(|iters| {
            let ledger = Arc::new(Mutex::new(Ledger::new(BUDGET_NANOS).unwrap().with_thresholds(&[0.5, 0.8, 0.9])));
            let per = iters.div_ceil(THREADS);
            let start = Arc::new(Barrier::new(THREADS as usize + 1));
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (ledger, start) = (ledger.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        for _ in 0..per {
                            one(&mut ledger.lock().unwrap());
                        }
                    })
                })
                .collect();
            start.wait();
            let t = Instant::now();
            for w in workers {
                w.join().unwrap();
            }
            let elapsed = t.elapsed();
            assert_eq!(ledger.lock().unwrap().calls() as u64, per * THREADS);
            Duration::from_secs_f64(elapsed.as_secs_f64() * iters as f64 / (per * THREADS) as f64)
        })
    });
    g.finish();
}
