//! Checkpoints: encode alone (no file), durable save (encode, gzip at `GZIP_LEVEL`, temp file, fsync,
//! rename, fsync of the directory) and load + verify (read, gunzip, trailer
//! sha256, records, state sha256) for agent states of 100 KiB, 1 MiB, 10 MiB.
//!
//! The state is text-like (words from a small vocabulary, the shape of an
//! essay agent's JSON state), so gzip does real work: neither incompressible
//! noise nor zeros. Two small hook states ride along, as with two hooks.

use crate::common::{scratch, BUDGET_NANOS};
use budget_host::budget::Ledger;
use budget_host::checkpoint::{BudgetRecord, Checkpoint, Header, GZIP_LEVEL};
use budget_host::spec::{HookSpec, RunSpec};
use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use std::cell::OnceCell;
use std::time::Duration;

/// Deterministic text of `len` bytes.
fn text_state(len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the", "budget", "agent", "model", "token", "network", "learning", "history", "neural", "language", "paragraph", "essay",
        "cost", "limit", "deep", "vision", "speech", "safety", "future", "introduction", "conclusion", "field", "machine", "research",
    ];
    let mut out = Vec::with_capacity(len + 16);
    out.extend_from_slice(b"{\"task\":\"essay\",\"sections\":[\"");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < len - 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
        out.push(if x % 11 == 0 { b'.' } else { b' ' });
    }
    out.truncate(len - 2);
    out.extend_from_slice(b"\"]");
    out
}

fn checkpoint(state_len: usize) -> Checkpoint {
    let mut ledger = Ledger::new(BUDGET_NANOS).unwrap().with_thresholds(&[0.5, 0.8, 0.9]);
    for i in 0..10 {
        let r = ledger.reserve(23_100).unwrap();
        let _ = ledger.settle(r, 3_000, &format!("llm_call_cycle_{i}"), 12, 2);
    }
    let mut spec = RunSpec::builder("plugins/essay-agent/essay-agent.wasm")
        .budget_nanos(BUDGET_NANOS)
        .model("gpt-4o-mini")
        .hook(HookSpec::parse("plugins/budget-monitor/budget-monitor.wasm").unwrap())
        .hook(HookSpec::parse("plugins/hook-op-cap-c/hook-op-cap-c.wasm=*=1").unwrap())
        .build()
        .unwrap();
    for p in std::iter::once(&mut spec.agent).chain(spec.hooks.iter_mut().map(|h| &mut h.plugin)) {
        p.sha256 = Some("ab".repeat(32));
    }
    Checkpoint {
        header: Header {
            format: budget_host::checkpoint::FORMAT,
            run_id: "bench".into(),
            created: budget_host::audit::timestamp(),
            reason: "periodic".into(),
            interrupt: None,
            host_version: env!("CARGO_PKG_VERSION").into(),
            spec,
            journal: None,
        },
        budget: BudgetRecord { ledger: ledger.state(), fuel_used: 123_456_789, fuel_limit: None },
        cycle: 10,
        agent_state: text_state(state_len),
        hook_states: vec![
            ("budget-monitor".into(), text_state(300)),
            ("hook-op-cap-c".into(), br#"{"version":1,"denied":0,"spent":{"llm_call_cycle_3":12000000}}"#.to_vec()),
        ],
    }
}

pub fn bench(c: &mut Criterion) {
    let dir = OnceCell::new();
    let dir = dir.get_or_init(|| scratch("checkpoint"));
    let mut g = c.benchmark_group(format!("checkpoint_gzip{GZIP_LEVEL}"));
    for (label, len) in [("100KiB", 100 << 10), ("1MiB", 1 << 20), ("10MiB", 10 << 20)] {
        // Built on first use: a filtered run does not pay for it.
        let ck = OnceCell::new();
        let ck = || ck.get_or_init(|| checkpoint(len));
        g.throughput(Throughput::Bytes(len as u64));
        if len >= 10 << 20 {
            g.sample_size(10).measurement_time(Duration::from_secs(6));
        } else {
            g.sample_size(20).measurement_time(Duration::from_secs(3));
        }
        let sub = dir.join(label);
        // The CPU part of a save (JSON lines, base64, sha256, gzip) without the file.
        g.bench_function(BenchmarkId::new("encode", label), |b| b.iter(|| black_box(ck().encode(None).unwrap())));
        g.bench_function(BenchmarkId::new("save_durable", label), |b| b.iter(|| ck().save(&sub, None).unwrap()));
        let saved = OnceCell::new();
        g.bench_function(BenchmarkId::new("load_verify", label), |b| {
            let path = saved.get_or_init(|| {
                let path = ck().save(&sub, None).unwrap();
                let size = std::fs::metadata(&path).unwrap().len();
                eprintln!("checkpoint of a {label} state: {size} bytes on disk (gzip level {GZIP_LEVEL})");
                path
            });
            b.iter(|| {
                let back = Checkpoint::load(path, None).unwrap();
                assert_eq!(back.agent_state.len(), len);
                black_box(back)
            })
        });
    }
    g.finish();
}
