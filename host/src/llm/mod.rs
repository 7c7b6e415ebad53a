//! LLM providers behind one trait.
//!
//! A provider turns a `ChatRequest` into a `ChatResponse` and knows nothing of
//! budgets: pricing, reservations and retries' accounting live in `run`.
//! API keys stay inside the provider that holds them: they never reach a
//! guest, a log line, a checkpoint or an error message.

#[doc(hidden)]
pub mod http;
pub mod local;
pub mod offline;
pub mod ollama;
pub mod openai;
#[doc(hidden)]
pub mod retry;
pub mod scripted;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// Its name on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// A chat completion request, as the host sends it.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// The model asked for.
    pub model: String,
    /// Always explicit: the provider is never left to pick an output length.
    pub max_tokens: u32,
    /// Sampling temperature (`None`: the provider's default).
    pub temperature: Option<f32>,
    /// Calls settled so far in this run (survives resume); the scripted
    /// provider uses it to pick its response deterministically.
    pub call_index: u64,
    /// Sampling seed from the run id and the call number ([`call_seed`]), so a
    /// run, its resume and its replay sample the same text.
    pub seed: u64,
}

/// The sampling seed of call number `n` of run `run_id`.
pub fn call_seed(run_id: &str, n: u64) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::new().chain_update(run_id.as_bytes()).chain_update(n.to_le_bytes()).finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Tokens a provider reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from a cache.
    pub cached_tokens: u64,
}

/// A provider's answer.
#[derive(Debug, Clone)]
pub struct ChatResponse {
    /// The completion's text.
    pub text: String,
    /// The model that answered.
    pub model: String,
    /// None when the provider did not report usage: the host then charges the reservation.
    pub usage: Option<Usage>,
    /// Why it stopped (`stop`, `length`, ...).
    pub finish_reason: String,
}

/// Why a provider call failed; each says whether it may have been billed (see `maybe_billed`).
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant's #[error] message says what it is; its fields are what the message names
pub enum ProviderError {
    #[error("cannot connect to {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("cannot resolve the host of {url}: {detail}")]
    Resolve { url: String, detail: String },
    #[error("request to {url} timed out after {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url} answered HTTP {status}: {message}")]
    Status { url: String, status: u16, message: String, retry_after: Option<std::time::Duration> },
    #[error("{url} sent a malformed response: {detail}")]
    Malformed { url: String, detail: String },
    #[error("{url} sent a response larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("the connection to {url} broke while reading the response: {detail}")]
    Broken { url: String, detail: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Other(String),
}

impl ProviderError {
    /// Worth another try, and free to try again: a connection that never
    /// opened, a 429, a 5xx. Never after a timeout or a broken or unreadable
    /// answer: the provider may have processed and billed that request, and a
    /// second attempt could be billed again beyond the one reservation held.
    /// Never what cannot heal in seconds: a name that does not resolve, a
    /// 401 or 403 (a missing or wrong key), any other 4xx. A refused
    /// connection is retried: a local server (llama.cpp, vLLM) restarting
    /// heals within the backoff, and nothing was sent, so nothing is billed.
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::Connect { .. } => true,
            ProviderError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The request may have been processed (and billed) although we got no usable
    /// answer: the host charges the reservation rather than guess zero.
    pub fn maybe_billed(&self) -> bool {
        matches!(
            self,
            ProviderError::Timeout { .. } | ProviderError::Broken { .. } | ProviderError::Malformed { .. } | ProviderError::TooLarge { .. }
        )
    }
}

/// Where calls go: a model behind an API, in process, or a script.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// `openai`, `ollama`, `local`, `scripted`.
    fn name(&self) -> &'static str;
    /// A one-line description for the run banner (never includes a key).
    fn describe(&self) -> String;
    /// Whether a model without a price must be refused (paid APIs) or is free (local).
    fn is_paid(&self) -> bool;
    /// Upper bound on the request's input tokens; exact where the tokenizer is
    /// known. Async: a tokenizer runs on guest input, off the runtime's threads.
    async fn input_token_bound(&self, req: &ChatRequest) -> Result<u64, ProviderError> {
        Ok(crate::budget::tokens::input_token_bound(req.messages.iter().map(|m| m.content.as_str())))
    }
    /// Send one request (no retries here: the caller retries what may be retried).
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ProviderError>;
}

/// Where the providers are, from the invocation's flags and environment
/// (never from a stored file).
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// OpenAI-compatible base URL, including `/v1` (default: OpenAI's).
    pub base_url: Option<String>,
    /// Ollama's address.
    pub ollama_host: Option<String>,
    /// The GGUF file of the local model (default: [`llm_local::default_model_path`]).
    pub model_path: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The OpenAI key (`OPENAI_API_KEY`).
    pub openai_key: Option<String>,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints { base_url: None, ollama_host: None, model_path: None, timeout: Duration::from_secs(120), openai_key: None }
    }
}

/// The provider a spec names, at the invocation's endpoints. The scripted
/// provider's file is checked against the spec's pin, and pinned when it has none.
pub fn connect(spec: &mut crate::spec::RunSpec, e: &Endpoints) -> Result<Arc<dyn Provider>, String> {
    use crate::spec::ProviderKind;
    Ok(match spec.provider {
        ProviderKind::Local => {
            let path = e.model_path.clone().unwrap_or_else(llm_local::default_model_path);
            Arc::new(local::Local::load(&path).map_err(|e| e.to_string())?)
        }
        ProviderKind::Openai => {
            let base = e.base_url.clone().unwrap_or_else(|| openai::DEFAULT_BASE_URL.into());
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return Err(format!("--base-url '{base}' must start with http:// or https://"));
            }
            // Refused before the run: without a key every call fails (401), after the run started.
            if openai::needs_key(&base) && e.openai_key.as_deref().is_none_or(str::is_empty) {
                return Err(format!(
                    "--provider openai at {base} needs an API key: set OPENAI_API_KEY (a local server given with --base-url may need none)"
                ));
            }
            Arc::new(openai::OpenAi::new(&base, e.openai_key.clone(), e.timeout))
        }
        ProviderKind::Ollama => Arc::new(ollama::Ollama::new(e.ollama_host.as_deref().unwrap_or(ollama::DEFAULT_HOST), e.timeout)),
        ProviderKind::Scripted => {
            let pin = spec.script.as_mut().ok_or("the scripted provider needs --script FILE")?;
            let (s, sha) = scripted::Scripted::load_with_sha256(&pin.path.to_string_lossy())?;
            crate::integrity::check_pin(&pin.path, &sha, pin.sha256.as_deref(), Some("the run's pin")).map_err(|e| e.to_string())?;
            pin.sha256 = Some(sha);
            // The script names the model its answers are priced as, unless the run names one.
            if spec.model == ProviderKind::Scripted.default_model() {
                spec.model = s.model().to_string();
            }
            Arc::new(s)
        }
    })
}
