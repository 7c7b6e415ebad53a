//! The llama forward pass over plain f32 buffers, with weights shared and caches per call.
//!
//! Follows candle-transformers' `quantized_llama` (and llama.cpp): RMS norm, rotary
//! embeddings on interleaved pairs, grouped-query attention, SwiGLU, tied or separate
//! output head. candle parses the GGUF and handles any weight type we have no kernel
//! for, but the pass itself is our own loop: per decode step it replaces ~750 small
//! candle ops (each allocating, several synchronising candle's thread pool) with a few
//! reused buffers, and all parallel work goes through [`crate::pool`]. Projections that
//! read the same input (q/k/v, gate/up) are fused into one matmul when their types agree.

use std::borrow::Cow;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::kernels::{self, BlockQ4_1, BlockQ8_0, QWeights};
use crate::pool::{self, Pool};

pub type Result<T> = std::result::Result<T, String>;

/// Hyper-parameters read from `llama.*` metadata.
#[derive(Debug, Clone)]
pub struct Config {
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub context_length: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
}

impl Config {
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self> {
        let u = |key: &str| -> Result<usize> {
            let v = ct
                .metadata
                .get(key)
                .ok_or_else(|| format!("metadata {key} is missing"))?;
            v.to_u64()
                .map(|x| x as usize)
                .map_err(|e| format!("metadata {key}: {e}"))
        };
        let f = |key: &str, default: Option<f32>| -> Result<f32> {
            match (ct.metadata.get(key), default) {
                (Some(v), _) => v.to_f32().map_err(|e| format!("metadata {key}: {e}")),
                (None, Some(d)) => Ok(d),
                (None, None) => Err(format!("metadata {key} is missing")),
            }
        };
        let n_embd = u("llama.embedding_length")?;
        let n_head = u("llama.attention.head_count")?;
        let n_kv_head = match ct.metadata.get("llama.attention.head_count_kv") {
            Some(_) => u("llama.attention.head_count_kv")?,
            None => n_head,
        };
        if n_head == 0 || n_kv_head == 0 || n_embd % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(format!(
                "unsupported head layout: embedding {n_embd}, heads {n_head}, kv heads {n_kv_head}"
            ));
        }
        let head_dim = n_embd / n_head;
        if head_dim % 2 != 0 {
            return Err(format!("odd head dimension {head_dim}"));
        }
        if let Some(rope_dim) = ct.metadata.get("llama.rope.dimension_count") {
            let rope_dim = rope_dim.to_u64().map_err(|e| e.to_string())? as usize;
            if rope_dim != head_dim {
                return Err(format!(
                    "partial rotary embeddings (rope dim {rope_dim} of head dim {head_dim}) are not supported"
                ));
            }
        }
        let context_length = u("llama.context_length")?;
        if context_length == 0 {
            return Err("llama.context_length is 0".into());
        }
        Ok(Self {
            n_embd,
            n_layer: u("llama.block_count")?,
            n_head,
            n_kv_head,
            head_dim,
            n_ff: u("llama.feed_forward_length")?,
            context_length,
            rms_eps: f("llama.attention.layer_norm_rms_epsilon", None)?,
            rope_base: f("llama.rope.freq_base", Some(10_000.0))?,
        })
    }
}

/// A weight matrix of `n` rows by `k` inputs.
enum Matrix {
    Q4_1(Vec<BlockQ4_1>),
    Q8_0(Vec<BlockQ8_0>),
    /// Any other type: candle's own matmul.
    Candle(QMatMul),
}

struct Linear {
    w: Matrix,
    n: usize,
    k: usize,
    /// Our SIMD kernels (true) or candle's (false), for comparisons.
    simd: bool,
}

impl Linear {
    /// `out` (m, n) = `x` (m, k) times the matrix transposed.
    fn forward(&self, x: &[f32], m: usize, out: &mut Vec<f32>, pool: &Pool) -> Result<()> {
        out.clear();
        out.resize(m * self.n, 0.0);
        let mkn = (m, self.k, self.n);
        match &self.w {
            Matrix::Q4_1(b) => kernels::matmul(QWeights::Q4_1(b), mkn, x, out, pool, self.simd),
            Matrix::Q8_0(b) => kernels::matmul(QWeights::Q8_0(b), mkn, x, out, pool, self.simd),
            Matrix::Candle(mm) => {
                let t = Tensor::from_slice(x, (m, self.k), &Device::Cpu)
                    .and_then(|t| mm.forward(&t))
                    .and_then(|y| y.flatten_all()?.to_vec1::<f32>())
                    .map_err(|e| e.to_string())?;
                out.copy_from_slice(&t);
                Ok(())
            }
        }
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// q, k and v rows stacked: one matmul.
    qkv: Linear,
    wo: Linear,
    ffn_norm: Vec<f32>,
    /// gate and up rows stacked: one matmul.
    gate_up: Linear,
    down: Linear,
}

/// Immutable weights, shared by every generation.
pub struct Weights {
    pub cfg: Config,
    embed: QTensor,
    vocab: usize,
    output: Linear,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    /// cos / sin of position p and pair i at `p * head_dim / 2 + i`.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// Reads tensors out of the whole file kept in memory; extents were checked at load.
pub struct TensorSource<'a> {
    pub ct: &'a gguf_file::Content,
    pub data: &'a [u8],
    pub simd: bool,
}

impl TensorSource<'_> {
    fn raw(&self, name: &str) -> Result<(&[u8], GgmlDType, Vec<usize>)> {
        let info = self
            .ct
            .tensor_infos
            .get(name)
            .ok_or_else(|| format!("tensor {name} is missing"))?;
        let dims = info.shape.dims().to_vec();
        let elems: usize = dims.iter().product();
        let blk = info.ggml_dtype.block_size();
        if elems % blk != 0 {
            return Err(format!(
                "tensor {name}: {elems} elements are not whole blocks"
            ));
        }
        let size = elems / blk * info.ggml_dtype.type_size();
        let start = (self.ct.tensor_data_offset + info.offset) as usize;
        let bytes = self
            .data
            .get(start..start + size)
            .ok_or_else(|| format!("tensor {name} lies outside the file"))?;
        Ok((bytes, info.ggml_dtype, dims))
    }

    fn qtensor(name: &str, bytes: &[u8], dtype: GgmlDType, dims: Vec<usize>) -> Result<QTensor> {
        QStorage::from_data(Cow::Borrowed(bytes), &Device::Cpu, dtype)
            .and_then(|s| QTensor::new(s, dims))
            .map_err(|e| format!("tensor {name}: {e}"))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let (bytes, dtype, dims) = self.raw(name)?;
        if dims != [len] {
            return Err(format!(
                "tensor {name} has shape {dims:?}, expected [{len}]"
            ));
        }
        Self::qtensor(name, bytes, dtype, dims)?
            .dequantize(&Device::Cpu)
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| format!("tensor {name}: {e}"))
    }

    /// Matrices with `k` inputs, stacked into one (rows concatenated); their types
    /// must agree, as they do in llama GGUFs from llama.cpp's converter.
    fn linear(&self, names: &[&str], rows: &[usize], k: usize) -> Result<Linear> {
        let mut bytes: Vec<u8> = Vec::new();
        let mut dtype = None;
        for (name, &r) in names.iter().zip(rows) {
            let (b, t, dims) = self.raw(name)?;
            if dims != [r, k] {
                return Err(format!(
                    "tensor {name} has shape {dims:?}, expected [{r}, {k}]"
                ));
            }
            if *dtype.get_or_insert(t) != t {
                return Err(format!("tensor {name} is {t:?}, unlike {}", names[0]));
            }
            bytes.extend_from_slice(b);
        }
        let dtype = dtype.ok_or("no tensor named")?;
        let n: usize = rows.iter().sum();
        let bad = || format!("tensor {}: byte size does not fit {dtype:?}", names[0]);
        let w = match dtype {
            GgmlDType::Q4_1 if self.simd => Matrix::Q4_1(BlockQ4_1::parse(&bytes).ok_or_else(bad)?),
            GgmlDType::Q8_0 if self.simd => Matrix::Q8_0(BlockQ8_0::parse(&bytes).ok_or_else(bad)?),
            _ => Matrix::Candle(
                QMatMul::from_qtensor(Self::qtensor(names[0], &bytes, dtype, vec![n, k])?)
                    .map_err(|e| format!("tensor {}: {e}", names[0]))?,
            ),
        };
        Ok(Linear {
            w,
            n,
            k,
            simd: self.simd,
        })
    }
}

/// RoPE tables as llama.cpp builds them: theta advanced by repeated multiplication.
fn rope_tables(cfg: &Config) -> (Vec<f32>, Vec<f32>) {
    let half = cfg.head_dim / 2;
    let scale = cfg.rope_base.powf(-2.0 / cfg.head_dim as f32);
    let mut cos = Vec::with_capacity(cfg.context_length * half);
    let mut sin = Vec::with_capacity(cfg.context_length * half);
    for p in 0..cfg.context_length {
        let mut theta = p as f32;
        for _ in 0..half {
            cos.push(theta.cos());
            sin.push(theta.sin());
            theta *= scale;
        }
    }
    (cos, sin)
}

impl Weights {
    pub fn load(src: &TensorSource, cfg: Config) -> Result<Self> {
        let (e, kv, ff) = (cfg.n_embd, cfg.n_kv_head * cfg.head_dim, cfg.n_ff);
        let (bytes, dtype, dims) = src.raw("token_embd.weight")?;
        let vocab = match dims[..] {
            [v, w] if w == e => v,
            _ => {
                return Err(format!(
                    "token_embd.weight has shape {dims:?}, width {e} expected"
                ))
            }
        };
        let embed = TensorSource::qtensor("token_embd.weight", bytes, dtype, dims)?;
        // Models with tied embeddings (SmolLM2) have no output.weight.
        let head = if src.ct.tensor_infos.contains_key("output.weight") {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        let output = src.linear(&[head], &[vocab], e)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: src.vector(&p("attn_norm"), e)?,
                qkv: src.linear(&[&p("attn_q"), &p("attn_k"), &p("attn_v")], &[e, kv, kv], e)?,
                wo: src.linear(&[&p("attn_output")], &[e], e)?,
                ffn_norm: src.vector(&p("ffn_norm"), e)?,
                gate_up: src.linear(&[&p("ffn_gate"), &p("ffn_up")], &[ff, ff], e)?,
                down: src.linear(&[&p("ffn_down")], &[e], ff)?,
            });
        }
        let (cos, sin) = rope_tables(&cfg);
        Ok(Self {
            output_norm: src.vector("output_norm.weight", e)?,
            embed,
            vocab,
            output,
            layers,
            cos,
            sin,
            cfg,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// A fresh cache for up to `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> Cache {
        let kv = self.cfg.n_kv_head * self.cfg.head_dim;
        let capacity = capacity.min(self.cfg.context_length);
        Cache {
            k: (0..self.cfg.n_layer)
                .map(|_| Vec::with_capacity(capacity * kv))
                .collect(),
            v: (0..self.cfg.n_layer)
                .map(|_| Vec::with_capacity(capacity * kv))
                .collect(),
            pos: 0,
            buf: Buffers::default(),
        }
    }

    /// Runs `tokens` after the cache's positions; returns the last position's logits.
    pub fn forward(&self, tokens: &[u32], cache: &mut Cache) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let pool = pool::global();
        let seq = tokens.len();
        let pos = cache.pos;
        if seq == 0 || pos + seq > cfg.context_length {
            return Err(format!(
                "positions {pos}..{} do not fit the context of {}",
                pos + seq,
                cfg.context_length
            ));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.vocab
            ));
        }
        let (e, hd) = (cfg.n_embd, cfg.head_dim);
        let kv = cfg.n_kv_head * hd;
        let b = &mut cache.buf;
        b.x = self
            .embed
            .embedding(&Tensor::new(tokens, &Device::Cpu).map_err(|e| e.to_string())?)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        for (l, layer) in self.layers.iter().enumerate() {
            rms_norm(&b.x, &layer.attn_norm, cfg.rms_eps, &mut b.h);
            layer.qkv.forward(&b.h, seq, &mut b.qkv, pool)?;
            let width = e + 2 * kv;
            for (i, row) in b.qkv.chunks_exact_mut(width).enumerate() {
                let (cos, sin) = self.rope_at(pos + i);
                let (q, rest) = row.split_at_mut(e);
                let (k, v) = rest.split_at_mut(kv);
                rope(q, hd, cos, sin);
                rope(k, hd, cos, sin);
                cache.k[l].extend_from_slice(k);
                cache.v[l].extend_from_slice(v);
            }
            attention(
                cfg,
                &b.qkv,
                seq,
                pos,
                &cache.k[l],
                &cache.v[l],
                &mut b.attn,
                pool,
            );
            layer.wo.forward(&b.attn, seq, &mut b.o, pool)?;
            add(&mut b.x, &b.o);
            rms_norm(&b.x, &layer.ffn_norm, cfg.rms_eps, &mut b.h);
            layer.gate_up.forward(&b.h, seq, &mut b.gu, pool)?;
            b.act.clear();
            for row in b.gu.chunks_exact(2 * cfg.n_ff) {
                let (g, u) = row.split_at(cfg.n_ff);
                b.act.extend(g.iter().zip(u).map(|(&g, &u)| silu(g) * u));
            }
            layer.down.forward(&b.act, seq, &mut b.o, pool)?;
            add(&mut b.x, &b.o);
        }
        cache.pos += seq;
        let last = &b.x[(seq - 1) * e..];
        rms_norm(last, &self.output_norm, cfg.rms_eps, &mut b.h);
        let mut logits = Vec::new();
        self.output.forward(&b.h, 1, &mut logits, pool)?;
        Ok(logits)
    }

    fn rope_at(&self, pos: usize) -> (&[f32], &[f32]) {
        let half = self.cfg.head_dim / 2;
        let r = pos * half..(pos + 1) * half;
        (&self.cos[r.clone()], &self.sin[r])
    }
}

/// Per-generation state: the KV cache of every layer, the next position, scratch space.
pub struct Cache {
    /// Per layer: position-major rows of `n_kv_head * head_dim`.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    pos: usize,
    buf: Buffers,
}

#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
}

/// `out` = each row of `x` scaled to unit RMS, times `w`, as llama.cpp's `rms_norm`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut Vec<f32>) {
    out.clear();
    for row in x.chunks_exact(w.len()) {
        let mean = row.iter().map(|&v| v * v).sum::<f32>() / w.len() as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(&v, &g)| v * scale * g));
    }
}

/// Rotates interleaved pairs (x[2i], x[2i+1]) of every head (llama.cpp's mode 0).
fn rope(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (pair, (&c, &s)) in head.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
            let (x0, x1) = (pair[0], pair[1]);
            pair[0] = x0 * c - x1 * s;
            pair[1] = x0 * s + x1 * c;
        }
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Causal grouped-query attention of `seq` new rows (q inside `qkv` rows) over the
/// cache, which already holds them; output rows of `n_embd` in `out`.
#[allow(clippy::too_many_arguments)]
fn attention(
    cfg: &Config,
    qkv: &[f32],
    seq: usize,
    pos: usize,
    k: &[f32],
    v: &[f32],
    out: &mut Vec<f32>,
    pool: &Pool,
) {
    let (e, hd) = (cfg.n_embd, cfg.head_dim);
    let kv = cfg.n_kv_head * hd;
    let group = cfg.n_head / cfg.n_kv_head;
    let width = e + 2 * kv;
    let scale = 1.0 / (hd as f32).sqrt();
    out.clear();
    out.resize(seq * e, 0.0);
    let out_addr = out.as_mut_ptr() as usize;
    let simd = crate::kernels::simd_available();
    // One item is one (row, head); each writes its own head_dim slice of `out`.
    let work = |items: std::ops::Range<usize>| {
        let mut scores = Vec::new();
        for item in items {
            let (i, h) = (item / cfg.n_head, item % cfg.n_head);
            let q = &qkv[i * width + h * hd..][..hd];
            let kvh = (h / group) * hd;
            let len = pos + i + 1;
            // SAFETY: (i, h) owns out[i*e + h*hd ..][..hd]; items are disjoint.
            let o = unsafe {
                std::slice::from_raw_parts_mut((out_addr as *mut f32).add(i * e + h * hd), hd)
            };
            let head = Head {
                q,
                k,
                v,
                stride: kv,
                offset: kvh,
                len,
                scale,
            };
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: avx2 and fma were detected.
                unsafe { head.attend_avx2(&mut scores, o) };
                continue;
            }
            let _ = simd;
            head.attend(&mut scores, o);
        }
    };
    let items = seq * cfg.n_head;
    // Short contexts: spreading costs more than it saves.
    if items * (pos + seq) < 16 * 1024 {
        work(0..items);
    } else {
        pool.run(items, 1, &work);
    }
}

/// One query head against its cached keys and values.
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    /// Distance between positions in `k` / `v`, and this head's offset in a position.
    stride: usize,
    offset: usize,
    len: usize,
    scale: f32,
}

impl Head<'_> {
    /// Softmax(q . k_j * scale) weighted sum of v_j, added into `o` (zeroed).
    #[inline(always)]
    fn attend(&self, scores: &mut Vec<f32>, o: &mut [f32]) {
        let hd = self.q.len();
        scores.clear();
        scores.extend(
            (0..self.len)
                .map(|j| dot(self.q, &self.k[j * self.stride + self.offset..][..hd]) * self.scale),
        );
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let mut sum = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        for (j, &p) in scores.iter().enumerate() {
            let p = p / sum;
            let vj = &self.v[j * self.stride + self.offset..][..hd];
            for (o, &x) in o.iter_mut().zip(vj) {
                *o += p * x;
            }
        }
    }

    /// The same code, compiled for AVX2 (8 lanes instead of 4).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn attend_avx2(&self, scores: &mut Vec<f32>, o: &mut [f32]) {
        self.attend(scores, o)
    }
}

/// Dot product with eight partial sums, so the compiler can vectorise it (a plain
/// `sum()` must add in order and stays scalar).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..67).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..67).map(|i| 1.0 - i as f32 * 0.25).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() <= 1e-3 * plain.abs());
    }

    #[test]
    fn rms_norm_and_rope_basics() {
        let mut out = Vec::new();
        rms_norm(&[3.0, 4.0, 0.0, 0.0], &[1.0, 2.0, 1.0, 1.0], 0.0, &mut out);
        let s = 1.0 / (25.0f32 / 4.0).sqrt();
        assert_eq!(out, vec![3.0 * s, 8.0 * s, 0.0, 0.0]);
        // A quarter turn maps (1, 0) to (0, 1) in every pair.
        let mut x = vec![1.0, 0.0, 1.0, 0.0];
        rope(&mut x, 4, &[0.0, 0.0], &[1.0, 1.0]);
        assert_eq!(x, vec![0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn attention_of_one_position_returns_its_value() {
        let cfg = Config {
            n_embd: 4,
            n_layer: 1,
            n_head: 2,
            n_kv_head: 1,
            head_dim: 2,
            n_ff: 4,
            context_length: 8,
            rms_eps: 1e-5,
            rope_base: 10_000.0,
        };
        let qkv = vec![
            1.0, 2.0, 3.0, 4.0, /* k */ 0.5, 0.5, /* v */ 7.0, -1.0,
        ];
        let mut out = Vec::new();
        attention(
            &cfg,
            &qkv,
            1,
            0,
            &qkv[4..6],
            &qkv[6..8],
            &mut out,
            &Pool::new(1),
        );
        assert_eq!(out, vec![7.0, -1.0, 7.0, -1.0]);
    }
}
