//! The llama forward pass over plain f32 buffers, with weights shared and caches per call.
//!
//! Follows llama.cpp's llama graph: RMS norm, rotary embeddings on interleaved pairs,
//! grouped-query attention, SwiGLU, tied or separate output head. Weights stay in the
//! memory-mapped GGUF (never copied): matrices are Q4_1 or Q8_0 blocks read in place by
//! [`crate::kernels`], norms and the embedding rows are dequantized as needed. Any other
//! tensor type is refused at load, naming the tensor and the type. Projections that read
//! the same input (q/k/v, gate/up) are one matmul over several parts of the file.

use std::ops::Range;
use std::sync::Arc;

use half::f16;
use memmap2::Mmap;

use crate::gguf::{GgmlType, Gguf, TensorInfo};
use crate::kernels::{self, BlockQ4_1, BlockQ8_0, QWeights, QK};
use crate::pool::{self, Pool};
use crate::prefix::Entry;

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
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let u = |key: &str| -> Result<usize> {
            let v = g
                .get(key)
                .ok_or_else(|| format!("metadata {key} is missing"))?;
            v.as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| format!("metadata {key} is {v:?}, not an unsigned integer"))
        };
        let f = |key: &str, default: Option<f32>| -> Result<f32> {
            match (g.get(key), default) {
                (Some(v), _) => v
                    .as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| format!("metadata {key} is {v:?}, not a float")),
                (None, Some(d)) => Ok(d),
                (None, None) => Err(format!("metadata {key} is missing")),
            }
        };
        let n_embd = u("llama.embedding_length")?;
        let n_head = u("llama.attention.head_count")?;
        let n_kv_head = match g.get("llama.attention.head_count_kv") {
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
        if g.get("llama.rope.dimension_count").is_some() {
            let rope_dim = u("llama.rope.dimension_count")?;
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

/// Block types of the matrices we have kernels for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quant {
    Q4_1,
    Q8_0,
}

/// A weight matrix of `n` rows by `k` inputs: byte ranges of the file, rows stacked.
struct Linear {
    quant: Quant,
    parts: Vec<Range<usize>>,
    n: usize,
    k: usize,
    /// Our SIMD kernels (true) or the scalar references (false), for comparisons.
    simd: bool,
}

/// Rows of a prompt slice per matmul call: `stop` is asked between calls, so a long
/// prefill step (up to 256 rows) does not delay a cancellation.
const ROWS_PER_CHECK: usize = 64;

impl Linear {
    /// `out` (m, n) = `x` (m, k) times the matrix transposed; false when `stop` said so.
    fn forward(
        &self,
        file: &[u8],
        x: &[f32],
        m: usize,
        out: &mut Vec<f32>,
        pool: &Pool,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<bool> {
        let (k, n) = (self.k, self.n);
        out.clear();
        out.resize(m * n, 0.0);
        // Ranges were cast once at load, so these casts cannot fail.
        let (mut q41, mut q80) = (Vec::new(), Vec::new());
        for r in &self.parts {
            match self.quant {
                Quant::Q4_1 => q41
                    .push(kernels::blocks::<BlockQ4_1>(&file[r.clone()]).expect("checked at load")),
                Quant::Q8_0 => q80
                    .push(kernels::blocks::<BlockQ8_0>(&file[r.clone()]).expect("checked at load")),
            }
        }
        for r0 in (0..m).step_by(ROWS_PER_CHECK) {
            if r0 > 0 && stop() {
                return Ok(false);
            }
            let rows = ROWS_PER_CHECK.min(m - r0);
            let w = match self.quant {
                Quant::Q4_1 => QWeights::Q4_1(&q41),
                Quant::Q8_0 => QWeights::Q8_0(&q80),
            };
            let (xs, dst) = (
                &x[r0 * k..(r0 + rows) * k],
                &mut out[r0 * n..(r0 + rows) * n],
            );
            kernels::matmul(w, (rows, k, n), xs, dst, pool, self.simd)?;
        }
        Ok(true)
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

/// The token embedding: rows of `n_embd` values of type `ty`, read and dequantized per token.
struct Embedding {
    ty: GgmlType,
    range: Range<usize>,
    row_bytes: usize,
}

/// Types whose rows [`dequantize_row`] reads.
const ROW_TYPES: [GgmlType; 4] = [GgmlType::F32, GgmlType::F16, GgmlType::Q4_1, GgmlType::Q8_0];

/// Appends the values of one row stored as `ty` (a type of [`ROW_TYPES`]).
fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut Vec<f32>) {
    match ty {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
        ),
        GgmlType::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        GgmlType::Q4_1 => {
            for b in kernels::blocks::<BlockQ4_1>(bytes).expect("checked at load") {
                let at = out.len();
                out.resize(at + QK, 0.0);
                b.dequantize(&mut out[at..]);
            }
        }
        GgmlType::Q8_0 => {
            for b in kernels::blocks::<BlockQ8_0>(bytes).expect("checked at load") {
                let at = out.len();
                out.resize(at + QK, 0.0);
                b.dequantize(&mut out[at..]);
            }
        }
        other => unreachable!("row type {} was refused at load", other.name()),
    }
}

/// Immutable weights, shared by every generation.
pub struct Weights {
    pub cfg: Config,
    file: Arc<Mmap>,
    embed: Embedding,
    vocab: usize,
    output: Linear,
    output_norm: Vec<f32>,
    layers: Vec<Layer>,
    /// cos / sin of position p and pair i at `p * head_dim / 2 + i`.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// Finds tensors in the header; their extents were checked against the file at load.
pub struct TensorSource<'a> {
    pub g: &'a Gguf<'a>,
    pub file: &'a [u8],
    pub simd: bool,
}

impl TensorSource<'_> {
    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.g
            .tensors
            .get(name)
            .ok_or_else(|| format!("tensor {name} is missing"))
    }

    /// Byte range of a tensor of shape `dims` (ggml order) and one of the types `allowed`.
    fn range(
        &self,
        name: &str,
        dims: &[usize],
        allowed: &[GgmlType],
    ) -> Result<(Range<usize>, GgmlType)> {
        let info = self.info(name)?;
        if !allowed.contains(&info.ty) {
            let names: Vec<String> = allowed.iter().map(|t| t.name()).collect();
            return Err(format!(
                "tensor {name} has type {}, which this model runner does not support (supported here: {})",
                info.ty.name(),
                names.join(", ")
            ));
        }
        if info
            .dims
            .iter()
            .map(|&d| d as usize)
            .ne(dims.iter().copied())
        {
            return Err(format!(
                "tensor {name} has shape {:?}, expected {dims:?}",
                info.dims
            ));
        }
        let r = self.g.range(info).ok_or_else(|| {
            format!(
                "tensor {name}: {} elements are not whole blocks",
                info.elements()
            )
        })?;
        let r = r.start as usize..r.end as usize;
        if r.end > self.file.len() {
            return Err(format!("tensor {name} lies outside the file"));
        }
        // Blocks are read in place (f16 fields): GGUF's 32-byte alignment ensures this.
        if r.start % 2 != 0 {
            return Err(format!("tensor {name} starts at odd byte {}", r.start));
        }
        Ok((r, info.ty))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let (r, ty) = self.range(name, &[len], &[GgmlType::F32, GgmlType::F16])?;
        let mut out = Vec::with_capacity(len);
        dequantize_row(ty, &self.file[r], &mut out);
        Ok(out)
    }

    /// Matrices with `k` inputs, stacked (rows concatenated); their types must agree,
    /// as they do in llama GGUFs from llama.cpp's converter.
    fn linear(&self, names: &[&str], rows: &[usize], k: usize) -> Result<Linear> {
        let mut parts = Vec::new();
        let mut quant = None;
        for (name, &r) in names.iter().zip(rows) {
            let (range, ty) = self.range(name, &[k, r], &[GgmlType::Q4_1, GgmlType::Q8_0])?;
            let q = if ty == GgmlType::Q4_1 {
                Quant::Q4_1
            } else {
                Quant::Q8_0
            };
            if *quant.get_or_insert(q) != q {
                return Err(format!(
                    "tensor {name} is {}, unlike {}",
                    ty.name(),
                    names[0]
                ));
            }
            let ok = match q {
                Quant::Q4_1 => kernels::blocks::<BlockQ4_1>(&self.file[range.clone()]).is_some(),
                Quant::Q8_0 => kernels::blocks::<BlockQ8_0>(&self.file[range.clone()]).is_some(),
            };
            if !ok || !k.is_multiple_of(QK) {
                return Err(format!(
                    "tensor {name}: rows of {k} are not whole {} blocks",
                    ty.name()
                ));
            }
            parts.push(range);
        }
        Ok(Linear {
            quant: quant.ok_or("no tensor named")?,
            parts,
            n: rows.iter().sum(),
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
    /// Builds the layout from the header; `file` is the mapping `src.file` points into.
    pub fn load(src: &TensorSource, file: Arc<Mmap>, cfg: Config) -> Result<Self> {
        let (e, kv, ff) = (cfg.n_embd, cfg.n_kv_head * cfg.head_dim, cfg.n_ff);
        let info = src.info("token_embd.weight")?;
        let vocab = match info.dims[..] {
            [w, v] if w as usize == e => v as usize,
            _ => {
                return Err(format!(
                    "token_embd.weight has shape {:?}, width {e} expected",
                    info.dims
                ))
            }
        };
        let (range, ty) = src.range("token_embd.weight", &[e, vocab], &ROW_TYPES)?;
        let embed = Embedding {
            ty,
            row_bytes: range.len() / vocab,
            range,
        };
        // Models with tied embeddings (SmolLM2) have no output.weight.
        let head = if src.g.tensors.contains_key("output.weight") {
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
            file,
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

    /// A cache for up to `capacity` positions holding the first `reuse` positions of
    /// `entry` (the caller checked that its tokens are the prompt's).
    pub fn cache_from(&self, entry: &Entry, reuse: usize, capacity: usize) -> Cache {
        let kv = self.cfg.n_kv_head * self.cfg.head_dim;
        let mut c = self.new_cache(capacity.max(reuse));
        for (dst, src) in c.k.iter_mut().zip(&entry.k) {
            dst.extend_from_slice(&src[..reuse * kv]);
        }
        for (dst, src) in c.v.iter_mut().zip(&entry.v) {
            dst.extend_from_slice(&src[..reuse * kv]);
        }
        c.pos = reuse;
        c
    }

    /// Runs `tokens` after the cache's positions; returns the last position's logits, or
    /// `None` when `stop` said so (asked between steps of each layer; the cache is then
    /// unusable). Each step of a 256-token slice takes milliseconds, so a stop is quick.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut Cache,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<Vec<f32>>> {
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
        let file: &[u8] = &self.file;
        b.x.clear();
        for &t in tokens {
            let at = self.embed.range.start + t as usize * self.embed.row_bytes;
            dequantize_row(
                self.embed.ty,
                &file[at..at + self.embed.row_bytes],
                &mut b.x,
            );
        }
        for (l, layer) in self.layers.iter().enumerate() {
            if stop() {
                return Ok(None);
            }
            rms_norm(&b.x, &layer.attn_norm, cfg.rms_eps, &mut b.h);
            if !layer.qkv.forward(file, &b.h, seq, &mut b.qkv, pool, stop)? {
                return Ok(None);
            }
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
                stop,
            );
            if stop() {
                return Ok(None);
            }
            if !layer.wo.forward(file, &b.attn, seq, &mut b.o, pool, stop)? {
                return Ok(None);
            }
            add(&mut b.x, &b.o);
            rms_norm(&b.x, &layer.ffn_norm, cfg.rms_eps, &mut b.h);
            if !layer
                .gate_up
                .forward(file, &b.h, seq, &mut b.gu, pool, stop)?
            {
                return Ok(None);
            }
            if stop() {
                return Ok(None);
            }
            b.act.clear();
            for row in b.gu.chunks_exact(2 * cfg.n_ff) {
                let (g, u) = row.split_at(cfg.n_ff);
                b.act.extend(g.iter().zip(u).map(|(&g, &u)| silu(g) * u));
            }
            if !layer
                .down
                .forward(file, &b.act, seq, &mut b.o, pool, stop)?
            {
                return Ok(None);
            }
            add(&mut b.x, &b.o);
        }
        cache.pos += seq;
        let last = &b.x[(seq - 1) * e..];
        rms_norm(last, &self.output_norm, cfg.rms_eps, &mut b.h);
        let mut logits = Vec::new();
        self.output
            .forward(file, &b.h, 1, &mut logits, pool, stop)?;
        Ok(Some(logits))
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

impl Cache {
    /// Positions computed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The keys and values of `tokens` (the tokens of positions `0..pos`), for
    /// [`crate::prefix::PrefixCache`]; scratch space is dropped.
    pub fn into_entry(self, tokens: Vec<u32>) -> Entry {
        debug_assert_eq!(tokens.len(), self.pos);
        let fit = |mut v: Vec<Vec<f32>>| {
            v.iter_mut().for_each(Vec::shrink_to_fit);
            v
        };
        Entry {
            tokens,
            k: fit(self.k),
            v: fit(self.v),
        }
    }
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

/// `out` = each row of `x` scaled to unit RMS, times `w`, as ggml's `rms_norm` (its sum of
/// squares accumulates in f64) followed by its `mul`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut Vec<f32>) {
    out.clear();
    for row in x.chunks_exact(w.len()) {
        let sum: f64 = row.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / w.len() as f64) as f32;
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
    stop: &(dyn Fn() -> bool + Sync),
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
            // Long contexts make one layer's attention long: give up early on a stop
            // (the output is then garbage, and the caller checks `stop` next).
            if item % cfg.n_head == 0 && pos > 1024 && stop() {
                return;
            }
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

    /// Tensor types without a kernel or dequantizer are refused by name, not misread.
    #[test]
    fn unsupported_tensor_types_are_named() {
        use crate::gguf::write::{gguf, W};
        let file = gguf(
            &[("general.architecture", W::Str("llama"))],
            &[
                ("q4k", vec![256, 2], 12, vec![0; 2 * 144]),
                ("q41", vec![32, 2], 3, vec![0; 40]),
                ("norm", vec![4], 1, vec![0; 8]),
            ],
        );
        let g = Gguf::read(&file).unwrap();
        let src = TensorSource {
            g: &g,
            file: &file,
            simd: true,
        };
        let err = src.linear(&["q4k"], &[2], 256).err().unwrap();
        assert!(
            err.contains("type q4_K") && err.contains("does not support"),
            "{err}"
        );
        assert!(err.contains("q4_1, q8_0"), "{err}");
        let err = src.vector("q41", 64).err().unwrap();
        assert!(err.contains("type q4_1"), "{err}");
        assert_eq!(src.vector("norm", 4).unwrap(), vec![0.0; 4]);
        let l = src.linear(&["q41"], &[2], 32).unwrap();
        assert_eq!((l.n, l.k, l.quant), (2, 32, Quant::Q4_1));
        let err = src.linear(&["q41"], &[3], 32).err().unwrap();
        assert!(err.contains("shape"), "{err}");
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
            &|| false,
        );
        assert_eq!(out, vec![7.0, -1.0, 7.0, -1.0]);
    }
}
