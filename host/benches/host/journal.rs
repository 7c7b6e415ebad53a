//! The write-ahead journal's group commit: one record at a time from one
//! task (a write and an fsync each) against 1,000 agents appending at once
//! (whatever is waiting goes out in one write and one fsync). Criterion
//! times a round of appends; the figure to read is per record.

use crate::common::{runtime, scratch};
use budget_host::journal::{Journal, Record, FILE};
use criterion::{Criterion, SamplingMode, Throughput};
use std::time::Duration;

fn intent(run: usize, seq: u64) -> Record {
    Record::Intent {
        run_id: format!("agent-{run}"),
        seq,
        cycle: 1,
        index: 1,
        digest: "0".repeat(64),
        operation: "llm_call_cycle_1".into(),
        reserved_nanos: 1_000_000,
        hold: None,
    }
}

pub fn bench(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("journal");
    g.sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(4)).sample_size(10);
    let dir = scratch("journal");
    let journal = Journal::open(&dir.join(FILE)).unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_agent_per_record", |b| b.iter(|| rt.block_on(journal.append(&intent(0, 0))).unwrap()));
    const AGENTS: usize = 1000;
    g.throughput(Throughput::Elements(AGENTS as u64));
    g.bench_function("1000_agents_per_round", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..AGENTS)
                    .map(|a| {
                        let j = journal.clone();
                        tokio::spawn(async move { j.append(&intent(a, 1)).await })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap().unwrap();
                }
            })
        })
    });
    g.finish();
}
