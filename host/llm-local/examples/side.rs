//! The Rust side of `make bench-llamacpp` (scripts/bench_llamacpp.py drives it):
//!
//! * `side speed N ID,ID,...`: greedy decoding of a fresh prompt (no prefix cache), as the
//!   bench's decode figure: the time of an (N+1)-token call minus a 1-token call. Prints
//!   `load_ms prefill_ms decode_tok_s tokens threads`.
//! * `side top1 FROM ID,ID,...`: this model's greedy choice before each id from position
//!   FROM on, the ids fed whatever it chose (teacher forcing). Prints the ids.

use std::time::Instant;

use llm_local::{default_model_path, GenOptions, LoadOptions, LocalModel, Prompt};

fn ids(arg: &str) -> Vec<u32> {
    arg.split(',')
        .map(|t| t.trim().parse().expect("token ids, comma-separated"))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = LoadOptions {
        prefix_cache_bytes: 0,
        ..LoadOptions::default()
    };
    let t = Instant::now();
    let model = LocalModel::load_with(&default_model_path(), &opts).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let load = t.elapsed();
    match args.first().map(String::as_str) {
        Some("speed") => {
            let n: u32 = args[1].parse().expect("N");
            let prompt = Prompt::from_ids(ids(&args[2]));
            // Warm-up (page the weights in, start the pool), not measured.
            model
                .generate_from(&prompt, &GenOptions::greedy(4))
                .unwrap();
            let t = Instant::now();
            model
                .generate_from(&prompt, &GenOptions::greedy(1))
                .unwrap();
            let one = t.elapsed();
            let t = Instant::now();
            let g = model
                .generate_from(&prompt, &GenOptions::greedy(n + 1))
                .unwrap();
            let all = t.elapsed();
            let decode = (g.completion_tokens - 1) as f64 / (all - one).as_secs_f64();
            println!(
                "{:.1} {:.1} {decode:.2} {} {}",
                load.as_secs_f64() * 1e3,
                one.as_secs_f64() * 1e3,
                g.completion_tokens,
                llm_local::pool::free_threads()
            );
        }
        Some("top1") => {
            let from: usize = args[1].parse().expect("FROM");
            let out = model.greedy_choices(&ids(&args[2]), from).unwrap();
            let text: Vec<String> = out.iter().map(u32::to_string).collect();
            println!("{}", text.join(","));
        }
        _ => {
            eprintln!("usage: side speed N IDS | side top1 FROM IDS");
            std::process::exit(2);
        }
    }
}
