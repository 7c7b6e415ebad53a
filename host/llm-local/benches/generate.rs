//! Generation speed of the local model, compared with llama.cpp's 46.7 tok/s.
//!
//! Run from the workspace root: `cargo bench -p llm-local --profile dev --bench generate`
//! (the dev profile is the one the host binary ships with here). It prints a summary
//! first (load time, decode and end-to-end tokens/s as medians, the ratio to llama.cpp,
//! and the same for the scalar reference kernels), then criterion's measurements.
//! Decode speed excludes the prompt: the time of a 1-token call is subtracted from a
//! 65-token call, leaving 64 decode steps, which is what llama.cpp's tok/s counts.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use llm_local::{
    default_model_path, how_to_get_model, ChatMessage, GenOptions, LoadOptions, LocalModel, Role,
};

const LLAMA_CPP_TOK_S: f64 = 46.7;
const DECODE_TOKENS: u32 = 64;

/// The prompt of tests/fixtures/openai-compatible/request-length.json (36 tokens with
/// the default system prompt); greedy decoding runs well past 65 tokens on it.
fn prompt() -> Vec<ChatMessage> {
    vec![ChatMessage::new(
        Role::User,
        "Explain machine learning in detail.",
    )]
}

fn greedy(max_tokens: u32) -> GenOptions {
    GenOptions::greedy(max_tokens)
}

fn load(opts: LoadOptions) -> LocalModel {
    let path = default_model_path();
    LocalModel::load_with(&path, &opts).unwrap_or_else(|e| {
        panic!(
            "cannot load {}: {e}\n{}",
            path.display(),
            how_to_get_model()
        )
    })
}

/// Time of 64 decode steps: a 65-token call minus a 1-token call (same prompt).
fn decode_time(m: &LocalModel) -> Duration {
    let t = Instant::now();
    let one = m.generate(&prompt(), &greedy(1)).unwrap();
    let prefill = t.elapsed();
    let t = Instant::now();
    let g = m.generate(&prompt(), &greedy(DECODE_TOKENS + 1)).unwrap();
    let full = t.elapsed();
    assert_eq!(one.completion_tokens, 1);
    assert_eq!(
        g.completion_tokens,
        DECODE_TOKENS + 1,
        "the model stopped early"
    );
    full.saturating_sub(prefill)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn summary(label: &str, opts: LoadOptions, runs: usize) {
    let loads: Vec<f64> = (0..3)
        .map(|_| load(opts).info().load_time.as_secs_f64())
        .collect();
    let m = load(opts);
    m.generate(&prompt(), &greedy(8)).unwrap(); // warm up the pool and caches
    let decode: Vec<f64> = (0..runs)
        .map(|_| DECODE_TOKENS as f64 / decode_time(&m).as_secs_f64())
        .collect();
    let e2e: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let g = m.generate(&prompt(), &greedy(DECODE_TOKENS)).unwrap();
            g.completion_tokens as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    let d = median(decode);
    println!(
        "{label}: load {:.3} s (median of 3), decode {d:.1} tok/s (median of {runs}), \
         end-to-end incl. 36-token prompt {:.1} tok/s, ratio to llama.cpp {LLAMA_CPP_TOK_S} tok/s: {:.2}",
        median(loads),
        median(e2e),
        d / LLAMA_CPP_TOK_S,
    );
}

fn main() {
    println!(
        "threads: {}, avx2+fma+f16c: {}",
        llm_local::pool::global().threads(),
        llm_local::kernels::simd_available()
    );
    summary("llm-local (simd kernels)", LoadOptions::default(), 9);
    if std::env::var_os("LLM_LOCAL_BENCH_SKIP_STOCK").is_none() {
        summary(
            "scalar kernels        ",
            LoadOptions {
                simd_kernels: false,
            },
            3,
        );
    }

    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .configure_from_args();
    let m = load(LoadOptions::default());
    let mut g = c.benchmark_group("generate");
    g.throughput(Throughput::Elements(DECODE_TOKENS as u64));
    g.bench_function("decode_64_tokens_greedy", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| decode_time(&m)).sum())
    });
    g.bench_function("end_to_end_64_tokens_greedy", |b| {
        b.iter(|| m.generate(&prompt(), &greedy(DECODE_TOKENS)).unwrap())
    });
    g.finish();
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.bench_function("load_gguf", |b| b.iter(|| load(LoadOptions::default())));
    g.finish();
    c.final_summary();
}
