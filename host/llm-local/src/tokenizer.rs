//! Byte-level BPE tokenizer built from the GGUF's own vocabulary, matching llama.cpp.
//!
//! candle's GGUF tokenizer has no case for `tokenizer.ggml.pre = "smollm"` and adds a
//! prefix space, so its counts are off by one. This one follows llama.cpp's
//! `llm_tokenizer_bpe`: special (CONTROL / USER_DEFINED) tokens are cut out whole first,
//! the rest is pre-tokenized (smollm: every digit alone, then the GPT-2 split, no prefix
//! space), and each piece is merged by rank, lowest rank and then leftmost first.

use std::collections::HashMap;

use fancy_regex::Regex;

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub const TOKEN_TYPE_NORMAL: i32 = 1;
pub const TOKEN_TYPE_CONTROL: i32 = 3;
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// OpenAI's GPT-2 split. llama.cpp writes it without the final `|\s+`, but keeps every
/// unmatched span as a piece of its own, which gives the same pieces.
const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Pre-tokenizers this tokenizer implements, named as in `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `smollm` (also starcoder, refact, command-r, codeshell): digits alone, then GPT-2.
    DigitsThenGpt2,
    /// `gpt2` / `default`: the GPT-2 split only.
    Gpt2,
}

impl PreTokenizer {
    pub fn from_gguf_name(name: &str) -> Option<Self> {
        match name {
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" => {
                Some(Self::DigitsThenGpt2)
            }
            "gpt2" | "default" => Some(Self::Gpt2),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Tokenizer {
    /// Byte-level token text (e.g. "Ġthe") of each id.
    tokens: Vec<String>,
    token_types: Vec<i32>,
    by_text: HashMap<String, u32>,
    /// (left id, right id) -> (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Special tokens, longest first, as llama.cpp partitions them.
    specials: Vec<(String, u32)>,
    pre: PreTokenizer,
    split: Regex,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
}

/// A fragment of the input: either plain text or one special token.
#[derive(Debug, PartialEq)]
enum Fragment<'a> {
    Text(&'a str),
    Special(u32),
}

impl Tokenizer {
    /// Builds the tokenizer; `Err` names what is inconsistent in the vocabulary.
    pub fn new(
        tokens: Vec<String>,
        token_types: Vec<i32>,
        merges: &[String],
        pre: PreTokenizer,
    ) -> Result<Self, String> {
        if tokens.is_empty() {
            return Err("tokenizer.ggml.tokens is empty".into());
        }
        if token_types.len() != tokens.len() {
            return Err(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                token_types.len(),
                tokens.len()
            ));
        }
        let by_text: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let Some((l, r)) = m.split_once(' ') else {
                return Err(format!("merge {rank} ({m:?}) has no space"));
            };
            // A merge whose parts or result are not tokens can never apply to id symbols.
            let (Some(&li), Some(&ri), Some(&mi)) = (
                by_text.get(l),
                by_text.get(r),
                by_text.get(&format!("{l}{r}")),
            ) else {
                continue;
            };
            merge_map.entry((li, ri)).or_insert((rank as u32, mi));
        }
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .zip(&token_types)
            .enumerate()
            .filter(|(_, (t, &ty))| {
                (ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED) && !t.is_empty()
            })
            .map(|(i, (t, _))| (t.clone(), i as u32))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let byte_to_char = bytes_to_unicode();
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        let split = Regex::new(GPT2_SPLIT).map_err(|e| format!("split regex: {e}"))?;
        Ok(Self {
            tokens,
            token_types,
            by_text,
            merges: merge_map,
            specials,
            pre,
            split,
            byte_to_char,
            char_to_byte,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    #[cfg(test)]
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.by_text.get(text).copied()
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.token_types.get(id as usize) == Some(&TOKEN_TYPE_CONTROL)
    }

    /// Tokenizes `text`, matching special tokens whole (llama.cpp's `parse_special = true`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for frag in self.partition_special(text) {
            match frag {
                Fragment::Special(id) => out.push(id),
                Fragment::Text(t) => {
                    for piece in self.pre_tokenize(t) {
                        self.bpe(piece, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Bytes of the given tokens; control tokens render as nothing (llama.cpp's default).
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &id in ids {
            let Some(text) = self.tokens.get(id as usize) else {
                continue;
            };
            match self.token_types[id as usize] {
                TOKEN_TYPE_CONTROL => {}
                TOKEN_TYPE_USER_DEFINED => out.extend_from_slice(text.as_bytes()),
                _ => {
                    for c in text.chars() {
                        match self.char_to_byte.get(&c) {
                            Some(&b) => out.push(b),
                            // Not byte-level encoded: emit as is.
                            None => {
                                let mut buf = [0u8; 4];
                                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            }
                        }
                    }
                }
            }
        }
        out
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }

    /// Cuts out special tokens, longest first, as llama.cpp's `tokenizer_st_partition`.
    fn partition_special<'a>(&self, text: &'a str) -> Vec<Fragment<'a>> {
        let mut frags = vec![Fragment::Text(text)];
        for (special, id) in &self.specials {
            let mut next = Vec::with_capacity(frags.len());
            for frag in frags {
                let Fragment::Text(mut rest) = frag else {
                    next.push(frag);
                    continue;
                };
                while let Some(pos) = rest.find(special.as_str()) {
                    if pos > 0 {
                        next.push(Fragment::Text(&rest[..pos]));
                    }
                    next.push(Fragment::Special(*id));
                    rest = &rest[pos + special.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            frags = next;
        }
        frags
    }

    /// Splits plain text into the pieces BPE works on.
    fn pre_tokenize<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let first: Vec<&str> = match self.pre {
            PreTokenizer::DigitsThenGpt2 => split_digits(text),
            PreTokenizer::Gpt2 => vec![text],
        };
        let mut pieces = Vec::new();
        for part in first {
            let mut last = 0;
            // The pattern has no catastrophic backtracking; an error could only come from
            // fancy-regex's backtrack limit, and then the unmatched rest stays one piece.
            for m in self.split.find_iter(part).map_while(Result::ok) {
                if m.start() > last {
                    pieces.push(&part[last..m.start()]);
                }
                pieces.push(m.as_str());
                last = m.end();
            }
            if last < part.len() {
                pieces.push(&part[last..]);
            }
        }
        pieces
    }

    /// Merges one pre-tokenized piece and appends its ids.
    fn bpe(&self, piece: &str, out: &mut Vec<u32>) {
        // Symbols are ids of the byte-level characters, None when a character is no token.
        let mut syms: Vec<Option<u32>> = piece
            .bytes()
            .map(|b| {
                let mut buf = [0u8; 4];
                self.by_text
                    .get(self.byte_to_char[b as usize].encode_utf8(&mut buf) as &str)
                    .copied()
            })
            .collect();
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let (Some(l), Some(r)) = (syms[i], syms[i + 1]) {
                    if let Some(&(rank, merged)) = self.merges.get(&(l, r)) {
                        if best.is_none_or(|(br, _, _)| rank < br) {
                            best = Some((rank, i, merged));
                        }
                    }
                }
            }
            let Some((_, i, merged)) = best else { break };
            syms[i] = Some(merged);
            syms.remove(i + 1);
        }
        // llama.cpp drops characters that are not tokens; a byte-level vocabulary has all 256.
        out.extend(syms.into_iter().flatten());
    }
}

/// llama.cpp's `\p{N}` split: each numeric character is a piece, text between stays whole.
fn split_digits(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c.is_numeric() {
            if i > start {
                out.push(&text[start..i]);
            }
            out.push(&text[i..i + c.len_utf8()]);
            start = i + c.len_utf8();
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// GPT-2's reversible byte -> printable character map.
fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid code point")
        };
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny byte-level vocabulary: all 256 byte characters, a few merges, two specials.
    fn toy() -> Tokenizer {
        let b2u = bytes_to_unicode();
        let mut tokens: Vec<String> = vec!["<|im_start|>".into(), "<|im_end|>".into()];
        let mut types = vec![TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL];
        for c in b2u {
            tokens.push(c.to_string());
            types.push(TOKEN_TYPE_NORMAL);
        }
        let merges: Vec<String> = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "1 2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for m in &merges {
            tokens.push(m.replace(' ', ""));
            types.push(TOKEN_TYPE_NORMAL);
        }
        Tokenizer::new(tokens, types, &merges, PreTokenizer::DigitsThenGpt2).unwrap()
    }

    fn texts(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| t.token_text(i).unwrap().to_string())
            .collect()
    }

    #[test]
    fn digits_are_split_one_by_one() {
        assert_eq!(split_digits("ab12 c3"), vec!["ab", "1", "2", " c", "3"]);
        let t = toy();
        // "12" would merge by the "1 2" rule if digits were not split first.
        assert_eq!(texts(&t, &t.encode("12")), vec!["1", "2"]);
        assert_eq!(
            t.pre_tokenize("in 2024!"),
            vec!["in", " ", "2", "0", "2", "4", "!"]
        );
    }

    #[test]
    fn gpt2_split_without_prefix_space() {
        let t = toy();
        assert_eq!(
            t.pre_tokenize("hello world's  end\n"),
            vec!["hello", " world", "'s", " ", " end", "\n"]
        );
        assert_eq!(texts(&t, &t.encode("hello wo")), vec!["hello", "Ġwo"]);
    }

    #[test]
    fn merges_apply_by_rank() {
        let t = toy();
        // "he" (rank 0) and "ll" (rank 1) first, then "hell", then "hello".
        assert_eq!(texts(&t, &t.encode("hello")), vec!["hello"]);
        assert_eq!(texts(&t, &t.encode("hel")), vec!["he", "l"]);
    }

    #[test]
    fn special_tokens_are_matched_whole() {
        let t = toy();
        let ids = t.encode("<|im_start|>user\nhi<|im_end|>\n");
        assert_eq!(ids[0], 0);
        assert_eq!(texts(&t, &ids[1..5]), vec!["u", "s", "e", "r"]);
        assert_eq!(ids[ids.len() - 2], 1);
        // A broken special token is plain text.
        assert!(!t.encode("<|im_end").contains(&1));
        // Control tokens decode to nothing.
        assert_eq!(t.decode(&ids), "user\nhi\n");
    }

    #[test]
    fn byte_level_round_trip() {
        let t = toy();
        for s in [
            "hello world",
            "naïve café ☕ 123\t\r\n  x",
            "\u{0}\u{7f}é",
            "",
        ] {
            assert_eq!(t.decode(&t.encode(s)), s, "round trip of {s:?}");
        }
        // Every byte maps to a distinct printable character.
        let map = bytes_to_unicode();
        let mut seen: Vec<char> = map.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(map[b' ' as usize], 'Ġ');
        assert_eq!(map[b'\n' as usize], 'Ċ');
    }

    #[test]
    fn inconsistent_vocab_is_an_error() {
        let err = Tokenizer::new(vec!["a".into()], vec![], &[], PreTokenizer::Gpt2).unwrap_err();
        assert!(err.contains("token_type"), "{err}");
    }
}
