//! Prices in integer nano-USD per million tokens, and what a call costs.
//!
//! The built-in table covers common paid models and the local model ($0);
//! a JSON file (`--prices`) overrides and extends it. A paid provider with a
//! model that has no price is refused before any call, never priced at $0.

use super::{usd_to_nanos, BudgetError, Nanos, NANOS_PER_USD};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Nano-USD per 1M tokens (so 0.15 USD / 1M = 150_000_000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Nano-USD per 1M input tokens.
    pub input: u64,
    /// Nano-USD per 1M output tokens.
    pub output: u64,
    /// Nano-USD per 1M input tokens read from a cache.
    pub cache_read: u64,
}

fn ceil_div_million(x: u128) -> Nanos {
    x.div_ceil(1_000_000).min(u64::MAX as u128) as Nanos
}

impl Price {
    /// A free model.
    pub const FREE: Price = Price { input: 0, output: 0, cache_read: 0 };

    fn usd(input: f64, output: f64, cache_read: f64) -> Price {
        let n = |usd: f64| (usd * NANOS_PER_USD as f64).round() as u64;
        Price { input: n(input), output: n(output), cache_read: n(cache_read) }
    }

    /// Whether every rate is zero.
    pub fn is_free(&self) -> bool {
        *self == Price::FREE
    }

    /// Worst case for a call: every input token at the input price, every
    /// allowed output token at the output price. Rounded up.
    pub fn worst_case(&self, input_tokens: u64, max_output: u64) -> Nanos {
        ceil_div_million(input_tokens as u128 * self.input as u128 + max_output as u128 * self.output as u128)
    }

    /// Real cost: `(prompt - cached) x in + cached x cache_read + completion x out`. Rounded up.
    pub fn cost(&self, prompt: u64, cached: u64, completion: u64) -> Nanos {
        let cached = cached.min(prompt);
        ceil_div_million(
            (prompt - cached) as u128 * self.input as u128
                + cached as u128 * self.cache_read as u128
                + completion as u128 * self.output as u128,
        )
    }

    /// Output tokens that fit in `budget` after the input's worst case.
    pub fn output_tokens_within(&self, input_tokens: u64, budget: Nanos) -> u64 {
        // In u128 throughout: `worst_case` saturates at u64::MAX, which hid an
        // input cost above a u64::MAX budget and underflowed below (tests/fuzz.rs).
        let in_part = input_tokens as u128 * self.input as u128;
        let cap = budget as u128 * 1_000_000;
        if in_part > cap {
            return 0;
        }
        if self.output == 0 {
            return u64::MAX;
        }
        // Largest t with ceil((in_part + t*out)/1e6) <= budget.
        let room = cap - in_part;
        (room / self.output as u128).min(u64::MAX as u128) as u64
    }
}

/// Why a price file was refused; each names the file.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant's #[error] message says what it is; its fields are what the message names
pub enum PriceError {
    #[error("cannot read price file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("price file {path} is not valid: {detail}")]
    Invalid { path: String, detail: String },
    #[error("price file {path}: model '{model}': {field} {problem}")]
    BadValue { path: String, model: String, field: &'static str, problem: String },
}

/// One entry of a price file: USD per 1M tokens.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceEntry {
    input: f64,
    output: f64,
    cache_read: Option<f64>,
}

/// Prices by model name; stored by value in a run's spec (a resume prices as the run did).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

/// USD per 1M tokens: (model, input, output, cache read). Public list prices
/// from the OpenAI and Anthropic pricing pages (late 2025). Names are exact: a
/// dated snapshot has its own row, since it may list at another price than
/// the name that points at the newest one (`gpt-4o-2024-05-13` at $5/$15,
/// `gpt-4o` at $2.50/$10).
const BUILT_IN: &[(&str, f64, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60, 0.075),
    ("gpt-4o-mini-2024-07-18", 0.15, 0.60, 0.075),
    ("gpt-4o", 2.50, 10.00, 1.25),
    ("gpt-4o-2024-11-20", 2.50, 10.00, 1.25),
    ("gpt-4o-2024-08-06", 2.50, 10.00, 1.25),
    // The first gpt-4o snapshot has no cached-input discount.
    ("gpt-4o-2024-05-13", 5.00, 15.00, 5.00),
    ("gpt-4.1", 2.00, 8.00, 0.50),
    ("gpt-4.1-2025-04-14", 2.00, 8.00, 0.50),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10),
    ("gpt-4.1-mini-2025-04-14", 0.40, 1.60, 0.10),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025),
    ("gpt-4.1-nano-2025-04-14", 0.10, 0.40, 0.025),
    ("claude-haiku-4-5", 1.00, 5.00, 0.10),
    ("claude-haiku-4-5-20251001", 1.00, 5.00, 0.10),
    ("claude-sonnet-4-5", 3.00, 15.00, 0.30),
    ("claude-sonnet-4-5-20250929", 3.00, 15.00, 0.30),
    ("claude-opus-4-5", 5.00, 25.00, 0.50),
    ("claude-opus-4-5-20251101", 5.00, 25.00, 0.50),
    // Local models run on the user's machine: free unless a price file says otherwise.
    ("smollm2-135m-instruct", 0.0, 0.0, 0.0),
    ("smollm2", 0.0, 0.0, 0.0),
];

impl Default for PriceTable {
    fn default() -> Self {
        let prices = BUILT_IN
            .iter()
            .map(|(m, i, o, c)| (m.to_string(), Price::usd(*i, *o, *c)))
            .collect();
        PriceTable { prices }
    }
}

fn price_field(path: &str, model: &str, field: &'static str, usd: f64) -> Result<u64, PriceError> {
    let bad = |problem: String| PriceError::BadValue { path: path.into(), model: model.into(), field, problem };
    if !usd.is_finite() {
        return Err(bad(format!("is not a finite number ({usd})")));
    }
    if usd < 0.0 {
        return Err(bad(format!("is negative ({usd})")));
    }
    if usd == 0.0 {
        return Ok(0);
    }
    usd_to_nanos(usd).map_err(|e| match e {
        BudgetError::TooLarge(_) => bad(format!("{usd} USD per 1M tokens is absurdly large")),
        BudgetError::NotPositive(_) => bad(format!("{usd} USD per 1M tokens rounds to zero nano-USD (write 0 for a free model)")),
        other => bad(other.to_string()),
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A JSON object's entries in file order with duplicates kept (a map keeps
/// only one of them, silently).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    v.push(entry);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// LiteLLM's `model_prices_and_context_window.json` is told apart by its fields.
fn is_litellm(entries: &[(String, serde_json::Value)]) -> bool {
    entries.iter().any(|(_, v)| v.get("input_cost_per_token").is_some() || v.get("output_cost_per_token").is_some())
}

impl PriceTable {
    /// Built-in prices overridden and extended by a JSON object, ours
    /// `{"model": {"input": 0.15, "output": 0.6, "cache_read": 0.075}}` (USD
    /// per 1M tokens) or LiteLLM's model prices (USD per token).
    pub fn with_overrides(mut self, path: &str, text: &str) -> Result<Self, PriceError> {
        let Entries(entries) = serde_json::from_str(text)
            .map_err(|e| PriceError::Invalid { path: path.into(), detail: format!("{e} (expected an object of model -> {{input, output, cache_read}})") })?;
        if is_litellm(&entries) {
            return self.with_litellm(path, entries);
        }
        // Names are case-insensitive: two spellings of one model would leave its price to chance.
        let mut seen = std::collections::HashSet::new();
        for (model, value) in entries {
            if !seen.insert(model.to_lowercase()) {
                return Err(PriceError::Invalid { path: path.into(), detail: format!("model '{model}' is listed twice (model names are case-insensitive)") });
            }
            // serde would also take a positional array ([input, output, cache_read]):
            // too easy to write in the wrong order, so only the named form.
            if !value.is_object() {
                return Err(PriceError::Invalid { path: path.into(), detail: format!("model '{model}': expected an object {{\"input\": ..., \"output\": ...}}, got {}", json_kind(&value)) });
            }
            let e: PriceEntry = serde_json::from_value(value)
                .map_err(|err| PriceError::Invalid { path: path.into(), detail: format!("model '{model}': {err}") })?;
            let input = price_field(path, &model, "input", e.input)?;
            let output = price_field(path, &model, "output", e.output)?;
            let cache_read = match e.cache_read {
                Some(c) => price_field(path, &model, "cache_read", c)?,
                None => input,
            };
            self.prices.insert(model.to_lowercase(), Price { input, output, cache_read });
        }
        Ok(self)
    }

    /// LiteLLM's format: `{"model": {"input_cost_per_token": 1.5e-7,
    /// "output_cost_per_token": 6e-7, "cache_read_input_token_cost": 7.5e-8}}`.
    /// Entries not priced per token (images, audio, `sample_spec`) are left
    /// out, so those models stay unpriced (refused for paid providers). A
    /// name listed twice must say the same price.
    fn with_litellm(mut self, path: &str, entries: Vec<(String, serde_json::Value)>) -> Result<Self, PriceError> {
        let mut seen = std::collections::HashMap::new();
        for (model, value) in entries {
            if model == "sample_spec" {
                continue;
            }
            let (Some(input), Some(output)) = (value.get("input_cost_per_token"), value.get("output_cost_per_token")) else { continue };
            let per_million = |field: &'static str, v: &serde_json::Value| -> Result<u64, PriceError> {
                let usd = v.as_f64().ok_or_else(|| PriceError::BadValue { path: path.into(), model: model.clone(), field, problem: format!("is {}, not a number", json_kind(v)) })?;
                price_field(path, &model, field, usd * 1e6)
            };
            let input = per_million("input_cost_per_token", input)?;
            let output = per_million("output_cost_per_token", output)?;
            let cache_read = match value.get("cache_read_input_token_cost") {
                Some(c) if !c.is_null() => per_million("cache_read_input_token_cost", c)?,
                _ => input,
            };
            let price = Price { input, output, cache_read };
            let key = model.to_lowercase();
            match seen.insert(key.clone(), price) {
                Some(before) if before != price => {
                    return Err(PriceError::Invalid { path: path.into(), detail: format!("model '{model}' is listed twice with different prices (model names are case-insensitive)") });
                }
                _ => {}
            }
            self.prices.insert(key, price);
        }
        Ok(self)
    }

    /// Read a price file (ours or LiteLLM's format) over the built-in table.
    pub fn load(path: &str) -> Result<Self, PriceError> {
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Read { path: path.into(), source })?;
        PriceTable::default().with_overrides(path, &text)
    }

    /// The exact name (case-insensitive). The one alias is Ollama's own:
    /// `name:latest` is `name`. No other name is guessed from a shorter one: a
    /// dated snapshot or a fine-tune is not priced as its base model.
    pub fn get(&self, model: &str) -> Option<Price> {
        let m = model.to_lowercase();
        if let Some(p) = self.prices.get(&m) {
            return Some(*p);
        }
        m.strip_suffix(":latest").and_then(|base| self.prices.get(base).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_round_up_in_nanos() {
        let p = PriceTable::default().get("gpt-4o-mini").unwrap();
        assert_eq!(p.input, 150_000_000);
        // 35 in, 48 out: 35*0.15 + 48*0.6 per 1M = 34.05 micro-USD
        assert_eq!(p.cost(35, 0, 48), 34_050);
        assert_eq!(p.cost(1, 0, 0), 150);
        // cached tokens at the cache-read price
        assert_eq!(p.cost(100, 100, 0), 7_500);
        assert_eq!(p.worst_case(35, 48), 34_050);
    }

    #[test]
    fn output_tokens_within_is_tight() {
        let p = PriceTable::default().get("gpt-4o").unwrap();
        for budget in [0u64, 1, 2_500, 10_000, 123_456_789] {
            let t = p.output_tokens_within(40, budget);
            if t > 0 {
                assert!(p.worst_case(40, t) <= budget);
            }
            assert!(p.worst_case(40, t + 1) > budget || p.worst_case(40, 0) > budget);
        }
    }

    #[test]
    fn lookup_is_exact() {
        let t = PriceTable::default();
        assert_eq!(t.get("GPT-4o-mini-2024-07-18"), t.get("gpt-4o-mini"));
        // A dated snapshot at its own price, never its base model's.
        let old = t.get("gpt-4o-2024-05-13").unwrap();
        assert_eq!((old.input, old.output), (5_000_000_000, 15_000_000_000));
        assert_eq!(t.get("gpt-4o").unwrap().input, 2_500_000_000);
        // Unknown snapshots and fine-tunes stay unpriced (refused for paid providers).
        for unknown in ["gpt-4o-mini-20240718", "gpt-4o-2099-01-01", "ft:gpt-4o-mini:acme::x", "gpt-4o:ft", "no-such-model"] {
            assert!(t.get(unknown).is_none(), "{unknown}");
        }
        assert!(t.get("smollm2:latest").is_some());
        assert!(t.get("smollm2:1.7b").is_none());
    }

    /// A sample of LiteLLM's model_prices_and_context_window.json.
    #[test]
    fn reads_litellm_model_prices() {
        let sample = r#"{
            "sample_spec": {"max_tokens": "LEGACY parameter", "input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "litellm_provider": "one of https://docs.litellm.ai/docs/providers", "mode": "one of: chat, embedding"},
            "gpt-4o-2024-05-13": {"max_tokens": 4096, "input_cost_per_token": 5e-06, "output_cost_per_token": 1.5e-05, "litellm_provider": "openai", "mode": "chat"},
            "my-gpt-4o-mini": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07, "cache_read_input_token_cost": 7.5e-08, "mode": "chat", "supports_vision": true},
            "dall-e-3": {"input_cost_per_pixel": 1e-07, "output_cost_per_pixel": 0.0, "mode": "image_generation"},
            "ollama/llama3.1": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "mode": "chat"}
        }"#;
        let t = PriceTable::default().with_overrides("litellm.json", sample).unwrap();
        assert_eq!(t.get("my-gpt-4o-mini"), Some(Price { input: 150_000_000, output: 600_000_000, cache_read: 75_000_000 }));
        assert_eq!(t.get("gpt-4o-2024-05-13"), Some(Price { input: 5_000_000_000, output: 15_000_000_000, cache_read: 5_000_000_000 }));
        assert!(t.get("ollama/llama3.1").unwrap().is_free());
        assert!(t.get("dall-e-3").is_none() && t.get("sample_spec").is_none());
        assert!(t.get("gpt-4o").is_some(), "the built-in table is extended, not replaced");
        for bad in [
            r#"{"m": {"input_cost_per_token": "5e-06", "output_cost_per_token": 1e-05}}"#,
            r#"{"m": {"input_cost_per_token": -1e-06, "output_cost_per_token": 1e-05}}"#,
            r#"{"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-05}, "M": {"input_cost_per_token": 2e-06, "output_cost_per_token": 1e-05}}"#,
        ] {
            let e = PriceTable::default().with_overrides("litellm.json", bad).unwrap_err().to_string();
            assert!(e.contains("litellm.json") && (e.contains("'m'") || e.contains("'M'")), "{e}");
        }
    }

    #[test]
    fn overrides_and_bad_files() {
        let t = PriceTable::default()
            .with_overrides("p.json", r#"{"smollm2-135m-instruct": {"input": 1.0, "output": 2.0}}"#)
            .unwrap();
        let p = t.get("smollm2-135m-instruct").unwrap();
        assert_eq!((p.input, p.output, p.cache_read), (1_000_000_000, 2_000_000_000, 1_000_000_000));
        for bad in [
            "not json",
            "[]",
            r#"{"m": {"input": 1.0}}"#,
            r#"{"m": {"input": "1", "output": 1}}"#,
            r#"{"m": {"input": -1, "output": 1}}"#,
            r#"{"m": {"input": 1e300, "output": 1}}"#,
            r#"{"m": {"input": 1, "output": 1, "extra": 2}}"#,
            r#"{"m": {"input": 1e-12, "output": 1}}"#,
            r#"{"m": {"input": 1, "output": 1}, "M": {"input": 2, "output": 2}}"#,
            r#"{"m": {"input": 1, "output": 1}, "m": {"input": 2, "output": 2}}"#,
        ] {
            let e = PriceTable::default().with_overrides("p.json", bad);
            assert!(e.is_err(), "{bad} accepted");
            assert!(e.unwrap_err().to_string().contains("p.json"));
        }
    }
}
