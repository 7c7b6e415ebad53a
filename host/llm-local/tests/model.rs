//! Tests on the real model file (`make model` fetches it) and on broken model files.
//!
//! Tests that need the model fail, not skip, when it is missing: the panic message is
//! the how-to-get-it line. Expected counts and texts come from llama.cpp's server on the
//! same file: tests/fixtures/openai-compatible/{request,response}-{basic,length}.*

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use llm_local::{
    default_model_path, how_to_get_model, ChatMessage, FinishReason, GenOptions, Generation,
    LoadOptions, LocalError, LocalModel, Prompt, Role,
};

fn model() -> Arc<LocalModel> {
    static MODEL: OnceLock<Arc<LocalModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = default_model_path();
            match LocalModel::load(&path) {
                Ok(m) => Arc::new(m),
                Err(e) => panic!(
                    "cannot load {}: {e}\n{}",
                    path.display(),
                    how_to_get_model()
                ),
            }
        })
        .clone()
}

fn basic() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "You are a concise essay writer."),
        ChatMessage::new(
            Role::User,
            "Write one short introduction sentence for an essay about the history of AI.",
        ),
    ]
}

fn length() -> Vec<ChatMessage> {
    vec![ChatMessage::new(
        Role::User,
        "Explain machine learning in detail.",
    )]
}

fn greedy(max_tokens: u32) -> GenOptions {
    GenOptions::greedy(max_tokens)
}

/// A generation without its cache statistic, which depends on earlier calls.
fn plain(g: Generation) -> Generation {
    Generation {
        cached_tokens: 0,
        ..g
    }
}

#[test]
fn model_info_describes_the_file() {
    let m = model();
    let info = m.info();
    assert_eq!(info.architecture, "llama");
    assert_eq!(info.context_length, 8192);
    assert_eq!(info.vocab_size, 49152);
    assert_eq!(info.file_bytes, 98_362_432);
    assert!(info.load_time.as_secs_f64() > 0.0);
    eprintln!("{} loaded in {:?}", info.name, info.load_time);
}

#[test]
fn prompt_token_counts_equal_llama_cpp() {
    let m = model();
    assert_eq!(m.count_prompt_tokens(&basic()).unwrap(), 35);
    // The default system prompt of the template is part of the count.
    assert_eq!(m.count_prompt_tokens(&length()).unwrap(), 36);
}

#[test]
fn default_system_prompt_comes_from_the_gguf_template() {
    let text = model().render_prompt(&length()).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nExplain machine learning in detail.<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn greedy_output_matches_llama_cpp() {
    let m = model();
    let g = m.generate(&length(), &greedy(5)).unwrap();
    assert_eq!(g.prompt_tokens, 36);
    assert_eq!(g.completion_tokens, 5);
    assert_eq!(g.finish_reason, FinishReason::Length);
    assert_eq!(g.text, "Machine learning is a subset");

    let g = m.generate(&basic(), &greedy(48)).unwrap();
    assert_eq!(g.prompt_tokens, 35);
    let llama_cpp = "The rapid advancement of artificial intelligence (AI) has transformed the world, from personal assistants to advanced technologies like AI-powered chatbots and self-driving cars. As we continue to explore this transformative landscape, it is crucial that we examine the";
    eprintln!("ours:      {:?}\nllama.cpp: {llama_cpp:?}", g.text);
    // The first 14 tokens agree. The 15th is a near tie (" with" 25.23 vs " from" 25.22
    // in our logits), so llama.cpp's f16 KV cache and our f32 one may pick either.
    let prefix = "The rapid advancement of artificial intelligence (AI) has transformed the world,";
    assert!(
        g.text.starts_with(prefix),
        "greedy text diverged early: {:?}",
        g.text
    );
}

#[test]
fn greedy_is_deterministic() {
    let m = model();
    let a = m.generate(&basic(), &greedy(24)).unwrap();
    let b = m.generate(&basic(), &greedy(24)).unwrap();
    assert_eq!(plain(a), plain(b));
}

#[test]
fn sampling_follows_the_seed() {
    let m = model();
    let opts = |seed| GenOptions {
        temperature: Some(1.0),
        ..GenOptions::sampled(24, seed)
    };
    let a = m.generate(&basic(), &opts(1)).unwrap();
    let b = m.generate(&basic(), &opts(1)).unwrap();
    let c = m.generate(&basic(), &opts(2)).unwrap();
    assert_eq!(plain(a.clone()), plain(b));
    assert_ne!(a.text, c.text);
}

/// The demo's first call (plugins/essay-agent with the host's default task).
fn essay_intro() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new(Role::System, "You are a concise essay writer."),
        ChatMessage::new(
            Role::User,
            "Task: Write a short essay about the history of artificial intelligence.\nWrite one paragraph: an introduction to the topic.",
        ),
    ]
}

/// A run of 8 words that occurs twice: how a looping model repeats a sentence.
fn repeated_run(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    words
        .windows(8)
        .map(|w| w.join(" "))
        .find(|run| !seen.insert(run.clone()))
}

#[test]
fn default_sampling_does_not_repeat_itself_and_follows_the_seed() {
    let m = model();
    // Greedy decoding loops on this prompt: the check below does catch it.
    let greedy_text = m.generate(&essay_intro(), &greedy(200)).unwrap().text;
    assert!(repeated_run(&greedy_text).is_some(), "{greedy_text}");
    for seed in 0..4 {
        // The demo's settings: 96 tokens, llama.cpp's default sampling.
        let opts = GenOptions::sampled(96, seed);
        assert_eq!(opts.temperature, None);
        let g = m.generate(&essay_intro(), &opts).unwrap();
        assert_eq!(repeated_run(&g.text), None, "seed {seed}: {}", g.text);
        let again = m.generate(&essay_intro(), &opts).unwrap();
        assert_eq!(plain(g.clone()), plain(again), "seed {seed}");
        eprintln!("seed {seed}: {}", g.text);
    }
    let a = m
        .generate(&essay_intro(), &GenOptions::sampled(24, 1))
        .unwrap();
    let b = m
        .generate(&essay_intro(), &GenOptions::sampled(24, 2))
        .unwrap();
    assert_ne!(a.text, b.text);
}

#[test]
fn max_tokens_is_honoured() {
    let m = model();
    for max in [1, 3, 17] {
        let g = m.generate(&length(), &greedy(max)).unwrap();
        assert_eq!(g.completion_tokens, max);
        assert_eq!(g.finish_reason, FinishReason::Length);
    }
}

#[test]
fn stops_at_end_of_turn() {
    let m = model();
    let msgs = [ChatMessage::new(Role::User, "Say hello.")];
    let g = m.generate(&msgs, &greedy(200)).unwrap();
    assert_eq!(g.finish_reason, FinishReason::Stop, "{g:?}");
    assert!(g.completion_tokens < 200);
    assert!(!g.text.is_empty());
    assert!(!g.text.contains("<|im_end|>"), "{:?}", g.text);
    eprintln!("{g:?}");
}

#[test]
fn concurrent_generations_are_independent() {
    let m = model();
    let alone = plain(m.generate(&basic(), &greedy(12)).unwrap());
    let other = plain(m.generate(&length(), &greedy(12)).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let m = m.clone();
            std::thread::spawn(move || {
                let msgs = if i % 2 == 0 { basic() } else { length() };
                (i, m.generate(&msgs, &greedy(12)).unwrap())
            })
        })
        .collect();
    for t in threads {
        let (i, g) = t.join().unwrap();
        assert_eq!(
            plain(g),
            if i % 2 == 0 {
                alone.clone()
            } else {
                other.clone()
            }
        );
    }
}

#[test]
fn bad_requests_are_errors() {
    let m = model();
    let err = m.generate(&basic(), &greedy(0)).unwrap_err();
    assert!(matches!(err, LocalError::InvalidRequest(_)), "{err:?}");
    assert!(err.to_string().contains("max_tokens"), "{err}");
    let err = m
        .generate(
            &basic(),
            &GenOptions {
                temperature: Some(f32::NAN),
                ..greedy(4)
            },
        )
        .unwrap_err();
    assert!(matches!(err, LocalError::InvalidRequest(_)), "{err:?}");
    let err = m.generate(&[], &greedy(4)).unwrap_err();
    assert!(matches!(err, LocalError::InvalidRequest(_)), "{err:?}");
    assert!(m.count_prompt_tokens(&[]).is_err());
}

#[test]
fn prompt_over_the_context_is_refused() {
    let m = model();
    let long = [ChatMessage::new(Role::User, "hello ".repeat(9000))];
    let n = m.count_prompt_tokens(&long).unwrap();
    assert!(n > 8192, "{n}");
    match m.generate(&long, &greedy(4)) {
        Err(LocalError::PromptTooLong { tokens, context }) => {
            assert_eq!((tokens, context), (n, 8192));
        }
        other => panic!("expected PromptTooLong, got {other:?}"),
    }
}

#[test]
fn a_prompt_tokenized_once_generates_the_same() {
    let m = model();
    let p = m.tokenize_prompt(&length()).unwrap();
    assert_eq!(p.len(), m.count_prompt_tokens(&length()).unwrap());
    let a = plain(m.generate_from(&p, &greedy(6)).unwrap());
    assert_eq!(a, plain(m.generate(&length(), &greedy(6)).unwrap()));
    // Ids given from elsewhere work too; ids outside the vocabulary are refused.
    let b = m
        .generate_from(&Prompt::from_ids(p.ids().to_vec()), &greedy(6))
        .unwrap();
    assert_eq!(a, plain(b));
    let err = m
        .generate_from(&Prompt::from_ids(vec![1, 49152]), &greedy(1))
        .unwrap_err();
    assert!(matches!(err, LocalError::Inference(_)), "{err:?}");
    let err = m
        .generate_from(&Prompt::from_ids(vec![]), &greedy(1))
        .unwrap_err();
    assert!(matches!(err, LocalError::InvalidRequest(_)), "{err:?}");
}

/// Teacher forcing (for comparisons with llama.cpp): fed its own greedy choices, the
/// model returns exactly them.
#[test]
fn greedy_choices_are_consistent_with_themselves() {
    let m = model();
    let p = m.tokenize_prompt(&length()).unwrap();
    let mut seq = p.ids().to_vec();
    for _ in 0..5 {
        let next = m
            .greedy_choices(&[&seq[..], &[0]].concat(), seq.len())
            .unwrap();
        seq.push(next[0]);
    }
    let all = m.greedy_choices(&seq, p.ids().len()).unwrap();
    assert_eq!(all, &seq[p.ids().len()..]);
    assert!(m.greedy_choices(&seq, 0).is_err());
}

/// The 900 KB one-word prompt of issue 15: tokenized whole (the BPE merges and the
/// split are O(n log n) and linear; a rescan per merge would need ~10^11 steps here).
#[test]
fn a_900_kb_word_is_tokenized() {
    let m = model();
    let word: String = "abcdefghijklmnopqrstuvwxyz".repeat(900_000 / 26);
    let t = Instant::now();
    let n = m
        .count_prompt_tokens(&[ChatMessage::new(Role::User, word)])
        .unwrap();
    eprintln!("{n} tokens in {:?}", t.elapsed());
    assert!(n > 100_000, "{n}");
}

#[test]
fn cancel_before_the_start_is_immediate() {
    let m = model();
    let flag = Arc::new(AtomicBool::new(true));
    let opts = GenOptions {
        cancel: Some(flag),
        ..greedy(8)
    };
    let err = m.generate(&length(), &opts).unwrap_err();
    assert!(matches!(err, LocalError::Cancelled), "{err:?}");
    assert_eq!(err.to_string(), "generation cancelled");
}

/// A flag set during a long prefill stops it: the run would take seconds otherwise.
/// How fast it stops is measured by the bench (`cancel_latency`), not asserted here.
#[test]
fn cancel_during_the_prompt_stops_the_generation() {
    let m = model();
    let long = [ChatMessage::new(Role::User, "hello world ".repeat(3000))];
    let flag = Arc::new(AtomicBool::new(false));
    let opts = GenOptions {
        cancel: Some(flag.clone()),
        ..greedy(64)
    };
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        flag.store(true, Ordering::Relaxed);
        Instant::now()
    });
    let err = m.generate(&long, &opts).unwrap_err();
    let returned = Instant::now();
    let set = setter.join().unwrap();
    assert!(matches!(err, LocalError::Cancelled), "{err:?}");
    eprintln!(
        "returned {:?} after the flag was set",
        returned.saturating_duration_since(set)
    );
}

/// An agent's growing history: each call resends the last one plus the reply and a new
/// question. With the prefix cache, later calls compute only their new tokens, and the
/// replies are exactly those of a model without the cache.
#[test]
fn prefix_cache_reuses_history_and_changes_nothing() {
    let cached = LocalModel::load(&default_model_path()).unwrap();
    let cold = LocalModel::load_with(
        &default_model_path(),
        &LoadOptions {
            prefix_cache_bytes: 0,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let mut history = vec![ChatMessage::new(
        Role::System,
        "You are a concise essay writer.",
    )];
    for (turn, q) in ["Name one early AI program.", "Who wrote it?", "When?"]
        .iter()
        .enumerate()
    {
        history.push(ChatMessage::new(Role::User, *q));
        let a = cached.generate(&history, &greedy(24)).unwrap();
        let b = cold.generate(&history, &greedy(24)).unwrap();
        assert_eq!(
            (&a.text, a.prompt_tokens),
            (&b.text, b.prompt_tokens),
            "turn {turn}"
        );
        assert_eq!(b.cached_tokens, 0);
        if turn > 0 {
            assert!(
                a.cached_tokens > 20 && a.cached_tokens < a.prompt_tokens,
                "{a:?}"
            );
        }
        history.push(ChatMessage::new(Role::Assistant, a.text));
    }
    assert!(cached.prefix_cache_bytes() > 0);
    assert_eq!(cold.prefix_cache_bytes(), 0);
    // The last prompt again reuses all but its last token.
    history.pop();
    let again = cached.generate(&history, &greedy(4)).unwrap();
    assert_eq!(again.cached_tokens, again.prompt_tokens - 1);
    cached.clear_prefix_cache();
    assert_eq!(cached.prefix_cache_bytes(), 0);
}

#[test]
fn missing_file_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.gguf");
    let err = LocalModel::load(&path)
        .err()
        .expect("missing file must fail");
    assert!(
        matches!(&err, LocalError::ModelMissing { path: p } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("make model"), "{err}");
}

#[test]
fn truncated_copies_are_reported() {
    let real = std::fs::read(default_model_path())
        .unwrap_or_else(|e| panic!("{e}: {}", how_to_get_model()));
    let dir = tempfile::tempdir().unwrap();
    // Cut in the tensor data, and cut inside the metadata.
    for len in [real.len() / 2, real.len() - 1, 1000] {
        let path = dir.path().join(format!("cut-{len}.gguf"));
        std::fs::write(&path, &real[..len]).unwrap();
        let err = LocalModel::load(&path)
            .err()
            .expect("truncated file must fail");
        assert!(
            matches!(err, LocalError::Truncated { .. }),
            "len {len}: {err:?}"
        );
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}

#[test]
fn non_gguf_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("text.gguf", &b"hello, this is not a model\n"[..]),
        ("empty.gguf", &b""[..]),
        ("ggml.bin", &b"lmgg\x01\x00\x00\x00"[..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = LocalModel::load(&path).err().expect("non-gguf must fail");
        assert!(matches!(err, LocalError::NotGguf { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains("not a gguf"), "{err}");
    }
}

/// A real (tiny) GGUF of a state-space model: valid file, architecture we do not run.
/// Written by hand after ggml's docs/gguf.md (version 3, little-endian).
fn write_mamba_gguf(path: &Path) {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    let mut f = b"GGUF".to_vec();
    f.extend(3u32.to_le_bytes()); // version
    f.extend(1u64.to_le_bytes()); // tensors
    f.extend(2u64.to_le_bytes()); // metadata pairs
    string(&mut f, "general.architecture");
    f.extend(8u32.to_le_bytes()); // string
    string(&mut f, "mamba");
    string(&mut f, "mamba.context_length");
    f.extend(4u32.to_le_bytes()); // u32
    f.extend(16u32.to_le_bytes());
    string(&mut f, "blk.0.ssm_conv1d.weight");
    f.extend(2u32.to_le_bytes()); // dims
    f.extend(32u64.to_le_bytes());
    f.extend(4u64.to_le_bytes());
    f.extend(0u32.to_le_bytes()); // f32
    f.extend(0u64.to_le_bytes()); // offset
    f.resize(f.len().div_ceil(32) * 32, 0);
    f.extend(vec![0u8; 4 * 32 * 4]);
    std::fs::write(path, f).unwrap();
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mamba.gguf");
    write_mamba_gguf(&path);
    let err = LocalModel::load(&path)
        .err()
        .expect("mamba must be refused");
    assert!(
        matches!(&err, LocalError::UnsupportedArchitecture(a) if a == "mamba"),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"mamba\""), "{err}");
}
