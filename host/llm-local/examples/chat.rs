//! Runs one chat completion on the local model: `cargo run -p llm-local --example chat --
//! [--max N] [--temp T] [--seed S] [--system TEXT] USER_MESSAGE`. Without `--temp`,
//! llama.cpp's default sampling (temperature 0.8); `--temp 0` is greedy.

use llm_local::{default_model_path, ChatMessage, GenOptions, LocalModel, Role};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut opts = GenOptions::sampled(128, 0);
    let mut messages = Vec::new();
    let mut user = None;
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("flag needs a value");
        match a.as_str() {
            "--max" => opts.max_tokens = val().parse().expect("--max N"),
            "--temp" => opts.temperature = Some(val().parse().expect("--temp T")),
            "--seed" => opts.seed = val().parse().expect("--seed S"),
            "--system" => messages.push(ChatMessage::new(Role::System, val())),
            _ => user = Some(a),
        }
    }
    messages.push(ChatMessage::new(
        Role::User,
        user.unwrap_or_else(|| "Say hello.".into()),
    ));
    let model = match LocalModel::load(&default_model_path()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    eprintln!("{:?}", model.info());
    let t = std::time::Instant::now();
    let g = model.generate(&messages, &opts).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    let secs = t.elapsed().as_secs_f64();
    println!("{}", g.text);
    eprintln!(
        "prompt {} completion {} finish {} in {secs:.2} s ({:.1} tok/s end to end)",
        g.prompt_tokens,
        g.completion_tokens,
        g.finish_reason.as_str(),
        g.completion_tokens as f64 / secs
    );
}
