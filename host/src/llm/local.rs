//! The embedded local model: the free, offline default provider.
//!
//! A GGUF chat model runs inside the host process (crate `llm-local`: the
//! memory-mapped GGUF, SIMD kernels, the GGUF's own tokenizer and chat
//! template). The model loads once per process and is shared by every agent;
//! token counts are exact, so reservations are exact too.

use super::{ChatRequest, ChatResponse, Provider, ProviderError, Role, Usage};
use llm_local::{ChatMessage, GenOptions, LocalError, LocalModel, Prompt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The model name used for pricing (the built-in table prices it at $0).
pub const MODEL_NAME: &str = "smollm2-135m-instruct";

/// The embedded model as a provider: in process, free unless priced.
pub struct Local {
    model: Arc<LocalModel>,
    path: PathBuf,
    /// The last prompt counted for a reservation, so `complete` does not tokenize it again.
    counted: Mutex<Option<(Vec<ChatMessage>, Prompt)>>,
}

/// Stops the generation when the call is dropped (timeout, stop signal).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Process-wide: one loaded model per file, whatever the number of agents.
fn loaded() -> &'static Mutex<HashMap<PathBuf, Arc<LocalModel>>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<LocalModel>>>> = OnceLock::new();
    LOADED.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Local {
    /// Load (or share, if this process already has it) the GGUF model at `path`.
    pub fn load(path: &Path) -> Result<Local, LocalError> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut map = loaded().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = map.get(&key) {
            return Ok(Local { model: m.clone(), path: key, counted: Mutex::new(None) });
        }
        let m = Arc::new(LocalModel::load(path)?);
        map.insert(key.clone(), m.clone());
        Ok(Local { model: m, path: key, counted: Mutex::new(None) })
    }
}

fn messages(req: &ChatRequest) -> Vec<ChatMessage> {
    req.messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => llm_local::Role::System,
                Role::User => llm_local::Role::User,
                Role::Assistant => llm_local::Role::Assistant,
            };
            ChatMessage::new(role, m.content.clone())
        })
        .collect()
}

fn to_provider_error(e: LocalError) -> ProviderError {
    match e {
        LocalError::PromptTooLong { .. } | LocalError::InvalidRequest(_) => ProviderError::InvalidRequest(e.to_string()),
        other => ProviderError::Other(format!("local model: {other}")),
    }
}

#[async_trait::async_trait]
impl Provider for Local {
    fn name(&self) -> &'static str {
        "local"
    }
    fn describe(&self) -> String {
        let i = self.model.info();
        format!(
            "in-process {} ({}, {} MB, loaded in {} ms, context {} tokens)",
            i.name,
            self.path.display(),
            i.file_bytes / 1_000_000,
            i.load_time.as_millis(),
            i.context_length
        )
    }
    fn is_paid(&self) -> bool {
        false
    }
    /// Exact: the GGUF's tokenizer and chat template, run off the async workers
    /// (guest input can be a megabyte). The tokens are kept for `complete`.
    async fn input_token_bound(&self, req: &ChatRequest) -> Result<u64, ProviderError> {
        let msgs = messages(req);
        let (model, m) = (self.model.clone(), msgs.clone());
        let prompt = tokio::task::spawn_blocking(move || model.tokenize_prompt(&m))
            .await
            .map_err(|e| ProviderError::Other(format!("local tokenizer task failed: {e}")))?
            .map_err(to_provider_error)?;
        let (tokens, context) = (prompt.len(), self.model.info().context_length);
        if tokens >= context {
            return Err(to_provider_error(LocalError::PromptTooLong { tokens, context }));
        }
        *self.counted.lock().unwrap_or_else(|p| p.into_inner()) = Some((msgs, prompt));
        Ok(u64::from(tokens))
    }
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let model = self.model.clone();
        let msgs = messages(req);
        let counted = self.counted.lock().unwrap_or_else(|p| p.into_inner()).take();
        let prompt = counted.filter(|(m, _)| *m == msgs).map(|(_, p)| p);
        let cancel = Arc::new(AtomicBool::new(false));
        let _stop_on_drop = CancelOnDrop(cancel.clone());
        // temperature None is llama.cpp's default sampling (0.8); the seed makes a run,
        // its resume and its replay say the same.
        let opts = GenOptions {
            max_tokens: req.max_tokens,
            temperature: req.temperature,
            seed: req.seed,
            cancel: Some(cancel),
        };
        // Tokenizing and inference are CPU-bound: keep them off the async workers.
        let g = tokio::task::spawn_blocking(move || {
            let prompt = match prompt {
                Some(p) => p,
                None => model.tokenize_prompt(&msgs)?,
            };
            model.generate_from(&prompt, &opts)
        })
        .await
        .map_err(|e| ProviderError::Other(format!("local model task failed: {e}")))?
        .map_err(to_provider_error)?;
        Ok(ChatResponse {
            text: g.text,
            model: MODEL_NAME.into(),
            usage: Some(Usage {
                input_tokens: g.prompt_tokens as u64,
                output_tokens: g.completion_tokens as u64,
                cached_tokens: g.cached_tokens as u64,
            }),
            finish_reason: g.finish_reason.as_str().into(),
        })
    }
}
