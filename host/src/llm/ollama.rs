//! Ollama's native `/api/chat` (non-streaming). `OLLAMA_HOST` may omit the scheme.

use super::{http, ChatRequest, ChatResponse, Provider, ProviderError, Usage};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// Where Ollama listens unless told otherwise.
pub const DEFAULT_HOST: &str = "http://127.0.0.1:11434";

/// An Ollama server's `/api/chat`.
pub struct Ollama {
    url: String,
    client: reqwest::Client,
    timeout: Duration,
}

impl Ollama {
    /// A client of the server at `host` (`http://` assumed without a scheme).
    pub fn new(host: &str, timeout: Duration) -> Self {
        let host = host.trim_end_matches('/');
        let host = if host.contains("://") { host.to_string() } else { format!("http://{host}") };
        Ollama { url: format!("{host}/api/chat"), client: http::client(timeout), timeout }
    }
}

#[derive(Deserialize)]
struct Resp {
    model: Option<String>,
    message: Option<RespMessage>,
    done_reason: Option<String>,
    prompt_eval_count: Option<i64>,
    eval_count: Option<i64>,
}
#[derive(Deserialize)]
struct RespMessage {
    content: String,
}

/// Ollama may leave out `prompt_eval_count` (prompt cached) or both counts:
/// a missing count makes usage missing, and the host charges the reservation.
pub fn parse_response(url: &str, model: &str, body: &[u8]) -> Result<ChatResponse, ProviderError> {
    let malformed = |detail: String| ProviderError::Malformed { url: url.into(), detail };
    if body.is_empty() {
        return Err(malformed("empty body".into()));
    }
    let r: Resp = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    let message = r.message.ok_or_else(|| malformed("no message".into()))?;
    let usage = match (r.prompt_eval_count, r.eval_count) {
        (Some(p), Some(e)) if p >= 0 && e >= 0 => Some(Usage { input_tokens: p as u64, output_tokens: e as u64, cached_tokens: 0 }),
        _ => None,
    };
    Ok(ChatResponse {
        text: message.content,
        model: r.model.unwrap_or_else(|| model.to_string()),
        usage,
        finish_reason: r.done_reason.unwrap_or_else(|| "unknown".into()),
    })
}

#[async_trait::async_trait]
impl Provider for Ollama {
    fn name(&self) -> &'static str {
        "ollama"
    }
    fn describe(&self) -> String {
        format!("ollama at {}", self.url.trim_end_matches("/api/chat"))
    }
    fn is_paid(&self) -> bool {
        false
    }
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let mut options = json!({ "num_predict": req.max_tokens });
        if let Some(t) = req.temperature {
            options["temperature"] = json!(t);
        }
        let body = json!({ "model": req.model, "messages": req.messages, "stream": false, "options": options });
        let (status, retry_after, bytes) = http::post_json(&self.client, &self.url, None, &body, self.timeout).await?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or_else(|| http::excerpt(&bytes));
            return Err(ProviderError::Status { url: self.url.clone(), status, message, retry_after });
        }
        parse_response(&self.url, &req.model, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_missing_counts() {
        let body = br#"{"model":"llama3.1","message":{"role":"assistant","content":"Hi"},"done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":3}"#;
        let r = parse_response("u", "m", body).unwrap();
        assert_eq!(r.usage, Some(Usage { input_tokens: 26, output_tokens: 3, cached_tokens: 0 }));
        let body = br#"{"model":"llama3.1","message":{"role":"assistant","content":"Hi"},"done":true,"eval_count":3}"#;
        assert_eq!(parse_response("u", "m", body).unwrap().usage, None);
        assert!(parse_response("u", "m", b"{\"done\":true}").is_err());
    }

    #[test]
    fn host_without_scheme() {
        assert_eq!(Ollama::new("127.0.0.1:9", Duration::from_secs(1)).url, "http://127.0.0.1:9/api/chat");
    }
}
