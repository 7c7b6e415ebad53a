//! Byte-level BPE tokenizer built from the GGUF's own vocabulary, matching llama.cpp.
//!
//! candle's GGUF tokenizer has no case for `tokenizer.ggml.pre = "smollm"` and adds a
//! prefix space, so its counts are off by one. This one follows llama.cpp's
//! `llm_tokenizer_bpe`: special (CONTROL / USER_DEFINED) tokens are cut out whole first,
//! the rest is pre-tokenized (smollm: every digit alone, then the GPT-2 split, no prefix
//! space), and each piece is merged by rank, lowest rank and then leftmost first.
//!
//! Everything is linear or O(n log n) in the input, so a prompt that is one 900 KB word
//! cannot stall the host: the GPT-2 split is hand-written (as llama.cpp's
//! `unicode_regex_split_custom_gpt2`), not a backtracking regex with a lookahead, and the
//! merges run over a linked list of symbols with a heap of candidate pairs by rank (as
//! Hugging Face tokenizers' `Word::merge_all`), not a rescan per merge.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use unicode_general_category::{get_general_category, GeneralCategory};

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub const TOKEN_TYPE_NORMAL: i32 = 1;
pub const TOKEN_TYPE_CONTROL: i32 = 3;
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;

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
        Ok(Self {
            tokens,
            token_types,
            by_text,
            merges: merge_map,
            specials,
            pre,
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
            split_gpt2(part, &mut pieces);
        }
        pieces
    }

    /// Merges one pre-tokenized piece and appends its ids; returns the number of heap
    /// operations (pushes and pops): at most n - 1 first pushes and two per merge (at
    /// most n - 1 merges), each popped once, so under 6 per byte of the piece.
    fn bpe(&self, piece: &str, out: &mut Vec<u32>) -> usize {
        // Symbols are ids of the byte-level characters, NONE when a character is no token.
        let mut syms: Vec<Symbol> = piece
            .bytes()
            .enumerate()
            .map(|(i, b)| {
                let mut buf = [0u8; 4];
                let id = self
                    .by_text
                    .get(self.byte_to_char[b as usize].encode_utf8(&mut buf) as &str)
                    .copied()
                    .unwrap_or(NONE);
                Symbol {
                    id,
                    prev: i.wrapping_sub(1),
                    next: i + 1,
                }
            })
            .collect();
        let n = syms.len();
        // Candidate pairs as (rank, left position): the lowest rank wins, then the leftmost.
        let mut heap = BinaryHeap::with_capacity(n);
        let mut ops = 0;
        let pair = |syms: &[Symbol], left: usize| -> Option<Reverse<(u32, usize, u32)>> {
            let right = syms[left].next;
            let (l, r) = (syms[left].id, syms.get(right)?.id);
            let &(rank, merged) = self.merges.get(&(l, r))?;
            Some(Reverse((rank, left, merged)))
        };
        for i in 0..n.saturating_sub(1) {
            if let Some(p) = pair(&syms, i) {
                heap.push(p);
                ops += 1;
            }
        }
        while let Some(Reverse((rank, left, merged))) = heap.pop() {
            ops += 1;
            // Stale entries: the left symbol was merged away, or the pair changed since.
            if syms[left].id == NONE || pair(&syms, left) != Some(Reverse((rank, left, merged))) {
                continue;
            }
            let right = syms[left].next;
            let after = syms[right].next;
            syms[left].id = merged;
            syms[left].next = after;
            syms[right].id = NONE;
            if after < n {
                syms[after].prev = left;
            }
            let before = syms[left].prev;
            for p in [before, left] {
                if p < n && syms[p].id != NONE {
                    if let Some(c) = pair(&syms, p) {
                        heap.push(c);
                        ops += 1;
                    }
                }
            }
        }
        // Walk the list: merged-away symbols are skipped, so are characters that are no
        // token (llama.cpp drops them; a byte-level vocabulary has all 256).
        let mut i = 0;
        while i < n {
            if syms[i].id != NONE {
                out.push(syms[i].id);
            }
            i = syms[i].next;
        }
        ops
    }
}

/// A symbol of a piece being merged, linked to its live neighbours by position.
#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: usize,
    next: usize,
}

/// Id of a removed symbol or of a character that is no token.
const NONE: u32 = u32::MAX;

/// Character classes of the GPT-2 split (`\p{L}`, `\p{N}`, `\s`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    use GeneralCategory::*;
    if c.is_whitespace() {
        return Class::Space;
    }
    match get_general_category(c) {
        UppercaseLetter | LowercaseLetter | TitlecaseLetter | ModifierLetter | OtherLetter => {
            Class::Letter
        }
        DecimalNumber | LetterNumber | OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

/// OpenAI's GPT-2 split, `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
/// hand-written in one forward pass as llama.cpp's `unicode_regex_split_custom_gpt2`.
fn split_gpt2<'a>(text: &'a str, pieces: &mut Vec<&'a str>) {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let byte = |i: usize| chars.get(i).map_or(text.len(), |c| c.0);
    let ch = |i: usize| chars.get(i).map(|c| c.1);
    let cls = |i: usize| chars.get(i).map(|c| class(c.1));
    let mut start = 0;
    let mut pos = 0;
    while pos < n {
        let c = chars[pos].1;
        // 's 't 're 've 'm 'll 'd
        if c == '\'' {
            let (a, b) = (ch(pos + 1), ch(pos + 2));
            let len = match (a, b) {
                (Some('s' | 't' | 'm' | 'd'), _) => 2,
                (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => 3,
                _ => 0,
            };
            if len > 0 {
                pos += len;
                pieces.push(&text[byte(start)..byte(pos)]);
                start = pos;
                continue;
            }
        }
        // An optional space, then a run of one class (letters, numbers, or other).
        let lead = usize::from(c == ' ');
        if let Some(k) = cls(pos + lead).filter(|&k| k != Class::Space) {
            if lead == 0 || cls(pos + 1).is_some() {
                pos += lead;
                while cls(pos) == Some(k) {
                    pos += 1;
                }
                pieces.push(&text[byte(start)..byte(pos)]);
                start = pos;
                continue;
            }
        }
        let mut spaces = 0;
        while cls(pos + spaces) == Some(Class::Space) {
            spaces += 1;
        }
        // \s+(?!\S): whitespace before a non-space leaves its last character to it.
        pos += if spaces > 1 && pos + spaces < n {
            spaces - 1
        } else {
            spaces.max(1)
        };
        pieces.push(&text[byte(start)..byte(pos)]);
        start = pos;
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
pub(crate) mod tests {
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

    /// The GPT-2 split as OpenAI wrote it; fancy-regex backtracks, so it is only an oracle.
    fn regex_split(text: &str) -> Vec<&str> {
        let re = fancy_regex::Regex::new(
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
        )
        .unwrap();
        let mut out = Vec::new();
        let mut last = 0;
        for m in re.find_iter(text).map(Result::unwrap) {
            if m.start() > last {
                out.push(&text[last..m.start()]);
            }
            out.push(m.as_str());
            last = m.end();
        }
        if last < text.len() {
            out.push(&text[last..]);
        }
        out
    }

    /// SplitMix64 for test data.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn hand_written_split_equals_the_gpt2_regex() {
        // Letters, numbers of all kinds, spaces of all kinds, marks, symbols, contractions.
        let alphabet: Vec<char> = " \n\t\r\u{a0}\u{3000}\u{85}'srtvelmdSaZé中Ⅳ²1٣.!☕\u{301}-_"
            .chars()
            .collect();
        let mut seed = 11u64;
        for _ in 0..3000 {
            let len = (splitmix(&mut seed) % 24) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(splitmix(&mut seed) % alphabet.len() as u64) as usize])
                .collect();
            let mut ours = Vec::new();
            split_gpt2(&s, &mut ours);
            assert_eq!(ours, regex_split(&s), "split of {s:?}");
        }
        for s in [
            "", " ", "  ", "a", " a", "  a", "'", "'l", "'ll", "x'VE", "a\n\n b",
        ] {
            let mut ours = Vec::new();
            split_gpt2(s, &mut ours);
            assert_eq!(ours, regex_split(s), "split of {s:?}");
        }
    }

    /// The merge loop this file had before the heap: a scan and a `Vec::remove` per
    /// merge, quadratic, but plainly the definition. The heap version must agree.
    fn bpe_by_rescan(t: &Tokenizer, piece: &str) -> Vec<u32> {
        let mut syms: Vec<Option<u32>> = piece
            .bytes()
            .map(|b| t.token_id(&t.byte_to_char[b as usize].to_string()))
            .collect();
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let (Some(l), Some(r)) = (syms[i], syms[i + 1]) {
                    if let Some(&(rank, merged)) = t.merges.get(&(l, r)) {
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
        syms.into_iter().flatten().collect()
    }

    /// The whole pipeline as it was before (regex split, rescan merges), for comparisons
    /// on the real vocabulary.
    pub(crate) fn encode_reference(t: &Tokenizer, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        for frag in t.partition_special(text) {
            match frag {
                Fragment::Special(id) => out.push(id),
                Fragment::Text(text) => {
                    let first = match t.pre {
                        PreTokenizer::DigitsThenGpt2 => split_digits(text),
                        PreTokenizer::Gpt2 => vec![text],
                    };
                    for part in first {
                        for piece in regex_split(part) {
                            out.extend(bpe_by_rescan(t, piece));
                        }
                    }
                }
            }
        }
        out
    }

    /// A vocabulary whose merges build runs of `a` and `b` of every power-of-two length.
    fn runs() -> Tokenizer {
        let mut tokens: Vec<String> = bytes_to_unicode().iter().map(|c| c.to_string()).collect();
        let mut merges = Vec::new();
        for c in ["a", "b"] {
            let mut len = 1;
            while len < 1 << 12 {
                merges.push(format!("{} {}", c.repeat(len), c.repeat(len)));
                len *= 2;
                tokens.push(c.repeat(len));
            }
        }
        merges.push("a b".into());
        tokens.push("ab".into());
        let types = vec![TOKEN_TYPE_NORMAL; tokens.len()];
        Tokenizer::new(tokens, types, &merges, PreTokenizer::Gpt2).unwrap()
    }

    #[test]
    fn heap_merges_equal_the_rescan_definition() {
        let mut seed = 5u64;
        for t in [toy(), runs()] {
            for _ in 0..400 {
                let len = (splitmix(&mut seed) % 40) as usize;
                let piece: String = (0..len)
                    .map(|_| {
                        ['a', 'b', 'h', 'e', 'l', 'o', 'Ġ', 'w', '1', '2']
                            [(splitmix(&mut seed) % 10) as usize]
                    })
                    .collect();
                let mut ours = Vec::new();
                t.bpe(&piece, &mut ours);
                assert_eq!(ours, bpe_by_rescan(&t, &piece), "piece {piece:?}");
            }
        }
    }

    /// Not a timed test: the merge loop's heap work is counted. Each merge removes a
    /// symbol and pushes at most two pairs, so pushes and pops stay under 6 per byte,
    /// and each costs O(log n): O(n log n) in all, where the rescan loop is O(n^2).
    #[test]
    fn merging_one_long_word_is_n_log_n() {
        let t = runs();
        for n in [1usize << 10, 1 << 14, 1 << 18, 900_000] {
            let word = "ab".repeat(n / 2) + &"a".repeat(n % 2);
            let mut out = Vec::new();
            let ops = t.bpe(&word, &mut out);
            assert!(
                ops < 6 * word.len(),
                "{ops} heap operations for {} bytes",
                word.len()
            );
            assert_eq!(out.len(), word.len() / 2 + word.len() % 2);
            let word = "a".repeat(n);
            out.clear();
            let ops = t.bpe(&word, &mut out);
            assert!(ops < 6 * n, "{ops} heap operations for {n} bytes");
            // Runs of 4096 and the binary digits of the rest.
            assert_eq!(t.decode(&out), word);
            assert_eq!(out.len(), n / 4096 + (n % 4096).count_ones() as usize);
        }
    }

    #[test]
    fn inconsistent_vocab_is_an_error() {
        let err = Tokenizer::new(vec!["a".into()], vec![], &[], PreTokenizer::Gpt2).unwrap_err();
        assert!(err.contains("token_type"), "{err}");
    }
}
