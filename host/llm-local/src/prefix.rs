//! Prompt-prefix KV cache: keys and values of past generations, reused by later ones.
//!
//! Agents resend their growing history on every call. As llama.cpp's server does with
//! its slots, a generation starts from the stored entry that shares the longest token
//! prefix with its prompt and computes only the rest. One cache per loaded model, so
//! per process; entries are immutable `Arc`s (a lookup copies rows outside the lock),
//! the least recently used go first when the total passes the byte budget. Reuse is
//! exact: every key / value row depends only on the tokens before it, so a cached
//! continuation is bit-identical to a cold one (tests check it).

use std::sync::{Arc, Mutex};

/// Keys and values of the first `tokens.len()` positions, per layer.
pub struct Entry {
    pub tokens: Vec<u32>,
    pub k: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl Entry {
    pub fn bytes(&self) -> usize {
        let floats: usize = self.k.iter().chain(&self.v).map(Vec::len).sum();
        floats * 4 + self.tokens.len() * 4
    }
}

pub struct PrefixCache {
    budget: usize,
    /// Least recently used first.
    entries: Mutex<Vec<Arc<Entry>>>,
}

/// Environment variable: the cache's budget in MB (default 256; 0 turns it off).
pub const BUDGET_ENV: &str = "LLM_LOCAL_PREFIX_CACHE_MB";

/// The budget from `LLM_LOCAL_PREFIX_CACHE_MB`, else 256 MB (~5,700 positions of
/// SmolLM2-135M, whose keys and values take 46 KB per position in f32).
pub fn default_budget() -> usize {
    std::env::var(BUDGET_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(256)
        .saturating_mul(1 << 20)
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            entries: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry sharing the longest prefix with `ids`, and that length (at least 1).
    pub fn lookup(&self, ids: &[u32]) -> Option<(Arc<Entry>, usize)> {
        let mut entries = self.lock();
        let (i, n) = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, ids)))
            .max_by_key(|&(i, n)| (n, i))?;
        if n == 0 {
            return None;
        }
        let e = entries.remove(i);
        entries.push(e.clone());
        Some((e, n))
    }

    /// Stores an entry, dropping entries it extends and the least recently used ones
    /// past the budget; an entry larger than the whole budget is not stored.
    pub fn insert(&self, entry: Entry) {
        let size = entry.bytes();
        if size > self.budget || entry.tokens.is_empty() {
            return;
        }
        let mut entries = self.lock();
        entries.retain(|e| !entry.tokens.starts_with(&e.tokens));
        let mut total: usize = entries.iter().map(|e| e.bytes()).sum::<usize>() + size;
        while total > self.budget {
            total -= entries.remove(0).bytes();
        }
        entries.push(Arc::new(entry));
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().iter().map(|e| e.bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tokens: &[u32]) -> Entry {
        Entry {
            tokens: tokens.to_vec(),
            k: vec![vec![0.5; tokens.len() * 2]],
            v: vec![vec![0.5; tokens.len() * 2]],
        }
    }

    #[test]
    fn longest_prefix_wins_and_extended_entries_go() {
        let c = PrefixCache::new(1 << 20);
        c.insert(entry(&[1, 2, 3]));
        c.insert(entry(&[1, 9]));
        let (e, n) = c.lookup(&[1, 2, 3, 4]).unwrap();
        assert_eq!((e.tokens.as_slice(), n), (&[1, 2, 3][..], 3));
        assert_eq!(c.lookup(&[1, 9, 9]).unwrap().1, 2);
        assert!(c.lookup(&[7]).is_none());
        // [1, 2, 3, 4, 5] extends [1, 2, 3]: the shorter one is dropped.
        c.insert(entry(&[1, 2, 3, 4, 5]));
        assert_eq!(c.lock().len(), 2);
        assert_eq!(c.bytes(), (5 * 4 * 4 + 5 * 4) + (2 * 4 * 4 + 2 * 4));
    }

    #[test]
    fn the_least_recently_used_go_past_the_budget() {
        let one = entry(&[0; 10]).bytes();
        let c = PrefixCache::new(2 * one);
        c.insert(entry(&[1; 10]));
        c.insert(entry(&[2; 10]));
        c.lookup(&[1]).unwrap(); // 1 is now the most recently used
        c.insert(entry(&[3; 10]));
        assert!(c.lookup(&[2]).is_none());
        assert!(c.lookup(&[1]).is_some() && c.lookup(&[3]).is_some());
        assert!(c.bytes() <= 2 * one);
        // Larger than the budget: not stored; an empty budget stores nothing.
        c.insert(entry(&[4; 30]));
        assert!(c.lookup(&[4]).is_none());
        let off = PrefixCache::new(0);
        off.insert(entry(&[1]));
        assert!(off.lookup(&[1]).is_none());
    }
}
