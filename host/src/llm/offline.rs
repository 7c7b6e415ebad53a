//! The provider of a tape replay: none. Every call of a replay is answered
//! from the tape (or stops the run) before it could reach a provider, so this
//! one only refuses: no network, no model, nothing billed.

use super::{ChatRequest, ChatResponse, Provider, ProviderError};

/// A provider that refuses every call: a tape replay answers from the tape, never from a provider.
pub struct Offline {
    tape: String,
}

impl Offline {
    /// The stand-in provider of a replay of `tape` (named in the banner).
    pub fn new(tape: &std::path::Path) -> Offline {
        Offline { tape: tape.display().to_string() }
    }
}

#[async_trait::async_trait]
impl Provider for Offline {
    fn name(&self) -> &'static str {
        "tape"
    }
    fn describe(&self) -> String {
        format!("TAPE {} replayed offline (no provider, no network, $0)", self.tape)
    }
    fn is_paid(&self) -> bool {
        false
    }
    async fn complete(&self, _req: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        Err(ProviderError::Other("a tape replay has no provider: this call was not answered from the tape".into()))
    }
}
