//! Replays a JSON script of responses with their usage: reproducible demos and
//! tests, priced like the model it names. Output is labelled as scripted.
//!
//! Response `i` answers the run's call number `i` (modulo the script length),
//! so a resumed run continues the script exactly where it stopped.

use super::{ChatRequest, ChatResponse, Provider, ProviderError, Usage};
use serde::Deserialize;

/// A script file: the model it is priced as and its responses, in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The model the responses are priced as (e.g. "gpt-4o").
    pub model: String,
    /// Answers, one per call, in order.
    pub responses: Vec<ScriptedResponse>,
}

/// One scripted answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedResponse {
    /// The completion's text.
    pub text: String,
    /// Absent: input tokens are the request's byte-level bound's real part
    /// (content bytes / 4, at least 1); given, at most the request's bound.
    /// Output tokens are required (at most the request's max tokens).
    pub prompt_tokens: Option<u64>,
    /// Output tokens reported.
    pub completion_tokens: u64,
    /// Cached input tokens reported.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Replays a provider that reports no usage.
    #[serde(default)]
    pub omit_usage: bool,
}

/// A provider that replays a script: offline, for demos and tests.
pub struct Scripted {
    path: String,
    script: Script,
}

impl Scripted {
    /// Read a script file.
    pub fn load(path: &str) -> Result<Self, String> {
        Ok(Scripted::load_with_sha256(path)?.0)
    }

    /// Read a script file and the sha256 of its bytes (a checkpoint pins it).
    pub fn load_with_sha256(path: &str) -> Result<(Self, String), String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read script {path}: {e}"))?;
        let sha = crate::engine::sha256_hex(&bytes);
        let text = String::from_utf8(bytes).map_err(|_| format!("script {path} is not UTF-8 text"))?;
        let script: Script = serde_json::from_str(&text).map_err(|e| format!("script {path} is not valid: {e}"))?;
        if script.responses.is_empty() {
            return Err(format!("script {path} has no responses"));
        }
        Ok((Scripted { path: path.into(), script }, sha))
    }

    /// The model the script is priced as.
    pub fn model(&self) -> &str {
        &self.script.model
    }
}

#[async_trait::async_trait]
impl Provider for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn describe(&self) -> String {
        format!("SCRIPTED responses replayed from {} (no real model)", self.path)
    }
    fn is_paid(&self) -> bool {
        true
    }
    async fn complete(&self, req: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let n = self.script.responses.len() as u64;
        let r = &self.script.responses[(req.call_index % n) as usize];
        // A prompt has no more tokens than the host's bound for it: a script
        // written for a longer prompt must not make a well-behaved run look
        // like a provider over-reporting (that is an anomaly, and may stop the run).
        let bound = crate::budget::tokens::input_token_bound(req.messages.iter().map(|m| m.content.as_str()));
        let prompt = r.prompt_tokens.map(|p| p.min(bound)).unwrap_or_else(|| {
            let bytes: usize = req.messages.iter().map(|m| m.content.len()).sum();
            (bytes as u64 / 4).max(1)
        });
        // Honour max_tokens as a real server would: cut the text, finish "length".
        let (text, completion, finish) = if r.completion_tokens > req.max_tokens as u64 {
            let keep = (r.text.chars().count() as u64 * req.max_tokens as u64 / r.completion_tokens.max(1)) as usize;
            (r.text.chars().take(keep).collect(), req.max_tokens as u64, "length")
        } else {
            (r.text.clone(), r.completion_tokens, "stop")
        };
        let usage = (!r.omit_usage).then_some(Usage { input_tokens: prompt, output_tokens: completion, cached_tokens: r.cached_tokens });
        Ok(ChatResponse { text, model: self.script.model.clone(), usage, finish_reason: finish.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Message, Role};

    /// A script written for a long prompt, replayed under a short one, reports
    /// no more prompt tokens than the host's bound: a well-behaved provider.
    #[tokio::test]
    async fn prompt_tokens_stay_within_the_bound() {
        let script = Script { model: "gpt-4o-mini".into(), responses: vec![ScriptedResponse { text: "x".into(), prompt_tokens: Some(10_000), completion_tokens: 1, cached_tokens: 0, omit_usage: false }] };
        let s = Scripted { path: "s.json".into(), script };
        let req = ChatRequest { messages: vec![Message { role: Role::User, content: "hi".into() }], model: "gpt-4o-mini".into(), max_tokens: 8, temperature: None, call_index: 0, seed: 0 };
        let bound = s.input_token_bound(&req).await.unwrap();
        let usage = s.complete(&req).await.unwrap().usage.unwrap();
        assert_eq!(usage.input_tokens, bound);
        assert!(bound < 10_000);
    }
}
