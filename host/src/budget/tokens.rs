//! Upper bounds on input tokens, for reservations.
//!
//! A byte-level BPE never produces more tokens than the UTF-8 bytes it encodes,
//! so bytes plus a per-message allowance for the chat template's special tokens
//! (and a server's default system prompt) is a safe bound for any such model.
//! Providers that know the exact tokenizer (the local model) give exact counts.

/// Allowance per message for role markers and separators.
pub const PER_MESSAGE: u64 = 8;
/// Allowance per request for a template's default system prompt and generation prompt.
pub const PER_REQUEST: u64 = 64;

/// An upper bound on the tokens any byte-level BPE makes of these message
/// contents: their bytes, plus the per-message and per-request allowances.
pub fn input_token_bound<'a>(contents: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut total = PER_REQUEST;
    for c in contents {
        total += c.len() as u64 + PER_MESSAGE;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_covers_llama_cpp_counts() {
        // tests/fixtures/openai-compatible: llama.cpp counted 35 and 36 prompt tokens for these.
        let basic = ["You are a concise essay writer.", "Write one short introduction sentence for an essay about the history of AI."];
        assert!(input_token_bound(basic) >= 35);
        assert!(input_token_bound(["Explain machine learning in detail."]) >= 36);
    }
}
