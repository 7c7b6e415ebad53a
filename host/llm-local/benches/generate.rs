//! Generation speed of the local model, compared with llama.cpp's 46.7 tok/s.
//!
//! Run from the workspace root: `cargo bench -p llm-local --profile dev --bench generate`
//! (the dev profile is the one the host binary ships with here). It prints a summary
//! first (load time, decode and end-to-end tokens/s as medians, the ratio to llama.cpp,
//! and the same for the scalar reference kernels), then how soon a cancelled generation
//! returns, then the prefix cache's speed-up on a growing conversation, then criterion's
//! measurements. `LLM_LOCAL_BENCH=summary,cancel,prefix,criterion` picks sections.
//! Decode speed excludes the prompt: the time of a 1-token call is subtracted from a
//! 65-token call, leaving 64 decode steps, which is what llama.cpp's tok/s counts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use llm_local::{
    default_model_path, how_to_get_model, ChatMessage, GenOptions, LoadOptions, LocalError,
    LocalModel, Role,
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

/// Fresh prompts every call: the prefix cache is off unless asked for.
fn no_cache() -> LoadOptions {
    LoadOptions {
        prefix_cache_bytes: 0,
        ..LoadOptions::default()
    }
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

/// Sets the cancel flag `delay` into a generation and returns how long after that the
/// generation returned (it must return `Cancelled`).
fn cancel_latency(m: &LocalModel, msgs: &[ChatMessage], delay: Duration) -> Duration {
    let flag = Arc::new(AtomicBool::new(false));
    let opts = GenOptions {
        cancel: Some(flag.clone()),
        ..greedy(2000)
    };
    m.clear_prefix_cache();
    std::thread::scope(|s| {
        let setter = s.spawn(|| {
            std::thread::sleep(delay);
            flag.store(true, Ordering::Relaxed);
            Instant::now()
        });
        let r = m.generate(msgs, &opts);
        let back = Instant::now();
        let set = setter.join().unwrap();
        assert!(matches!(r, Err(LocalError::Cancelled)), "{r:?}");
        back.saturating_duration_since(set)
    })
}

fn cancel_section(m: &LocalModel) {
    // ~7,000 prompt tokens: slices of 256 run late in a long context, the slowest steps.
    let long = [ChatMessage::new(
        Role::User,
        "The cat sat on the mat. ".repeat(1000),
    )];
    let short = prompt();
    let mut gaps = Vec::new();
    for ms in [50u64, 400, 1500, 4000, 9000, 14000] {
        gaps.push((
            ms,
            "prefill of 7k tokens",
            cancel_latency(m, &long, Duration::from_millis(ms)),
        ));
    }
    for ms in [300u64, 900, 1700] {
        gaps.push((
            ms,
            "decode",
            cancel_latency(m, &short, Duration::from_millis(ms)),
        ));
    }
    for (ms, what, d) in &gaps {
        println!(
            "cancel at {ms} ms into {what}: returned {:.1} ms after the flag",
            d.as_secs_f64() * 1e3
        );
    }
    let worst = gaps.iter().map(|g| g.2).max().unwrap();
    println!(
        "cancel: worst {:.1} ms over {} cancellations",
        worst.as_secs_f64() * 1e3,
        gaps.len()
    );
}

/// An agent's growing history: six turns of a question (~60 words) and a 32-token
/// greedy reply, each call resending everything before it.
fn conversation(m: &LocalModel) -> (Duration, u32, u32) {
    let mut history = vec![ChatMessage::new(
        Role::System,
        "You are a concise essay writer.",
    )];
    let (mut total, mut prompt_tokens, mut cached) = (Duration::ZERO, 0, 0);
    for turn in 0..6 {
        history.push(ChatMessage::new(
            Role::User,
            format!("Turn {turn}. Write the next paragraph of an essay on the history of artificial intelligence, covering the period that follows the previous paragraph, with names, dates and one concrete example of a program or machine that mattered at the time, and keep it short."),
        ));
        let t = Instant::now();
        let g = m.generate(&history, &greedy(32)).unwrap();
        total += t.elapsed();
        prompt_tokens += g.prompt_tokens;
        cached += g.cached_tokens;
        history.push(ChatMessage::new(Role::Assistant, g.text));
    }
    (total, prompt_tokens, cached)
}

fn prefix_section() {
    let warm = load(LoadOptions::default());
    let cold = load(no_cache());
    conversation(&cold); // page the weights in
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let mut stats = (0, 0);
    for _ in 0..3 {
        warm.clear_prefix_cache();
        let (t, p, c) = conversation(&warm);
        with.push(t.as_secs_f64());
        stats = (p, c);
        without.push(conversation(&cold).0.as_secs_f64());
    }
    let (w, wo) = (median(with), median(without));
    println!(
        "prefix cache, 6-turn conversation ({} prompt tokens in all, {} from the cache): {:.2} s with, {:.2} s without (medians of 3, alternated): {:.2}x",
        stats.0, stats.1, w, wo, wo / w
    );
}

fn main() {
    let sections = std::env::var("LLM_LOCAL_BENCH")
        .unwrap_or_else(|_| "summary,cancel,prefix,criterion".into());
    let on = |s: &str| sections.split(',').any(|x| x.trim() == s);
    println!(
        "threads: up to {}, free now {}, avx2+fma+f16c: {}",
        llm_local::pool::global().threads(),
        llm_local::pool::free_threads(),
        llm_local::kernels::simd_available()
    );
    if on("summary") {
        summary("llm-local (simd kernels)", no_cache(), 9);
        if std::env::var_os("LLM_LOCAL_BENCH_SKIP_STOCK").is_none() {
            summary(
                "scalar kernels        ",
                LoadOptions {
                    simd_kernels: false,
                    ..no_cache()
                },
                3,
            );
        }
    }
    if on("cancel") {
        cancel_section(&load(no_cache()));
    }
    if on("prefix") {
        prefix_section();
    }
    if !on("criterion") {
        return;
    }

    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .configure_from_args();
    let m = load(no_cache());
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
