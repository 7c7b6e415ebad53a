//! Token choice: greedy at temperature 0, otherwise seeded sampling.
//!
//! Sampling uses llama.cpp's default filter chain (top-k 40, top-p 0.95, min-p 0.05,
//! then temperature), so a local run behaves like the llama.cpp server it stands in for.

/// llama.cpp's default temperature (`common_params_sampling::temp`).
pub const DEFAULT_TEMPERATURE: f32 = 0.8;

/// llama.cpp server defaults.
const TOP_K: usize = 40;
const TOP_P: f32 = 0.95;
const MIN_P: f32 = 0.05;

/// SplitMix64: tiny, seedable, and good enough to draw tokens.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Index of the largest logit; the first one on ties; NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// Picks the next token; `temperature <= 0` is greedy.
pub fn sample(logits: &[f32], temperature: f32, rng: &mut Rng) -> u32 {
    if temperature <= 0.0 || logits.is_empty() {
        return argmax(logits);
    }
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| (i as u32, v))
        .collect();
    if cand.is_empty() {
        return argmax(logits);
    }
    cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    cand.truncate(TOP_K);
    // Probabilities before temperature, as llama.cpp's top-p / min-p see them.
    let probs = softmax(cand.iter().map(|c| c.1));
    let mut keep = cand.len();
    let mut cum = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cum += p;
        if cum >= TOP_P {
            keep = i + 1;
            break;
        }
    }
    let floor = probs[0] * MIN_P;
    keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
    cand.truncate(keep);
    let probs = softmax(cand.iter().map(|c| c.1 / temperature));
    let r = rng.next_f32();
    let mut cum = 0.0;
    for (c, p) in cand.iter().zip(&probs) {
        cum += p;
        if r < cum {
            return c.0;
        }
    }
    cand.last().expect("non-empty").0
}

fn softmax(xs: impl Iterator<Item = f32> + Clone) -> Vec<f32> {
    let max = xs.clone().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = xs.map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 1);
        assert_eq!(sample(&[0.0, 5.0, 1.0], 0.0, &mut Rng::new(1)), 1);
    }

    #[test]
    fn sampling_is_seeded_and_filtered() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32) * 0.05).collect();
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| sample(&logits, 1.0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        // Only the top 40 can ever be drawn.
        assert!(draw(5).iter().all(|&t| t >= 60));
        // A dominant token survives min-p alone.
        let mut peaked = vec![0.0f32; 10];
        peaked[7] = 20.0;
        assert!((0..20).all(|s| sample(&peaked, 1.5, &mut Rng::new(s)) == 7));
    }
}
