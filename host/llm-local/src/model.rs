//! The llama forward pass on candle tensors, with weights shared and caches per call.
//!
//! Adapted from candle-transformers' `quantized_llama` with three changes: the weights
//! are immutable and shared (every `generate` call brings its own [`Cache`], so calls
//! can run concurrently), Q4_1 weights use [`crate::q4_1`]'s kernel, and projections
//! that read the same input (q/k/v, gate/up) are fused into one matmul when their
//! types agree, which halves the number of pool dispatches per layer.

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::attention::{flash_attn, AttnMask};
use candle_nn::kv_cache::KvCache;
use std::borrow::Cow;

use crate::q4_1;

pub type Result<T> = std::result::Result<T, String>;

/// Hyper-parameters read from `llama.*` metadata.
#[derive(Debug, Clone)]
pub struct Config {
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
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
        if let Some(rope_dim) = ct.metadata.get("llama.rope.dimension_count") {
            let rope_dim = rope_dim.to_u64().map_err(|e| e.to_string())? as usize;
            if rope_dim != head_dim {
                return Err(format!(
                    "partial rotary embeddings (rope dim {rope_dim} of head dim {head_dim}) are not supported"
                ));
            }
        }
        Ok(Self {
            n_embd,
            n_layer: u("llama.block_count")?,
            n_head,
            n_kv_head,
            head_dim,
            context_length: u("llama.context_length")?,
            rms_eps: f("llama.attention.layer_norm_rms_epsilon", None)?,
            rope_base: f("llama.rope.freq_base", Some(10_000.0))?,
        })
    }
}

/// One matmul, or several fused along the output dimension.
struct Linear {
    mm: QMatMul,
    /// Output widths of the fused parts, in order.
    parts: Vec<usize>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let y = self.mm.forward(x)?;
        if self.parts.len() == 1 {
            return Ok(vec![y]);
        }
        let mut out = Vec::with_capacity(self.parts.len());
        let mut start = 0;
        for &w in &self.parts {
            out.push(y.narrow(D::Minus1, start, w)?);
            start += w;
        }
        Ok(out)
    }
}

struct Layer {
    attn_norm: Tensor,
    /// q, k, v: one fused matmul or three.
    qkv: Vec<Linear>,
    wo: Linear,
    ffn_norm: Tensor,
    /// gate, up: one fused matmul or two.
    gate_up: Vec<Linear>,
    down: Linear,
}

/// Immutable weights, shared by every generation (candle tensors are Arc-backed).
pub struct Weights {
    pub cfg: Config,
    embed: QTensor,
    output: QMatMul,
    output_norm: Tensor,
    layers: Vec<Layer>,
    cos: Tensor,
    sin: Tensor,
}

/// Reads tensors out of the whole file kept in memory; extents were checked at load.
pub struct TensorSource<'a> {
    pub ct: &'a gguf_file::Content,
    pub data: &'a [u8],
    pub fast_q4_1: bool,
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
            return Err(format!("tensor {name}: {elems} elements are not whole blocks"));
        }
        let size = elems / blk * info.ggml_dtype.type_size();
        let start = (self.ct.tensor_data_offset + info.offset) as usize;
        let bytes = self
            .data
            .get(start..start + size)
            .ok_or_else(|| format!("tensor {name} lies outside the file"))?;
        Ok((bytes, info.ggml_dtype, dims))
    }

    fn qtensor(&self, name: &str) -> Result<QTensor> {
        let (bytes, dtype, dims) = self.raw(name)?;
        self.qtensor_from(name, bytes, dtype, dims)
    }

    fn qtensor_from(
        &self,
        name: &str,
        bytes: &[u8],
        dtype: GgmlDType,
        dims: Vec<usize>,
    ) -> Result<QTensor> {
        let r = if dtype == GgmlDType::Q4_1 && self.fast_q4_1 && dims.len() == 2 {
            q4_1::fast_q4_1_qtensor(bytes, (dims[0], dims[1]))
        } else {
            QStorage::from_data(Cow::Borrowed(bytes), &Device::Cpu, dtype)
                .and_then(|s| QTensor::new(s, dims))
        };
        r.map_err(|e| format!("tensor {name}: {e}"))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        let t = self
            .qtensor(name)?
            .dequantize(&Device::Cpu)
            .map_err(|e| format!("tensor {name}: {e}"))?;
        if t.dims() != [len] {
            return Err(format!("tensor {name} has shape {:?}, expected [{len}]", t.dims()));
        }
        Ok(t)
    }

    /// A matrix of shape (rows, cols) as a matmul.
    fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        self.fused(&[name], &[rows], cols)
            .map(|mut v| v.pop().expect("one linear"))
    }

    /// Matrices with the same input width; fused into one when their types agree.
    fn fused(&self, names: &[&str], rows: &[usize], cols: usize) -> Result<Vec<Linear>> {
        let mut raws = Vec::with_capacity(names.len());
        for (name, &r) in names.iter().zip(rows) {
            let raw = self.raw(name)?;
            if raw.2 != [r, cols] {
                return Err(format!("tensor {name} has shape {:?}, expected [{r}, {cols}]", raw.2));
            }
            raws.push(raw);
        }
        let same = raws.iter().all(|r| r.1 == raws[0].1);
        if same && names.len() > 1 {
            // Rows are stored one after the other, so fusing is concatenating bytes.
            let bytes: Vec<u8> = raws.iter().flat_map(|r| r.0.iter().copied()).collect();
            let total: usize = rows.iter().sum();
            let q = self.qtensor_from(names[0], &bytes, raws[0].1, vec![total, cols])?;
            return Ok(vec![Linear {
                mm: qmatmul(names[0], q)?,
                parts: rows.to_vec(),
            }]);
        }
        names
            .iter()
            .zip(raws)
            .map(|(name, (bytes, dtype, dims))| {
                let q = self.qtensor_from(name, bytes, dtype, dims.clone())?;
                Ok(Linear {
                    mm: qmatmul(name, q)?,
                    parts: vec![dims[0]],
                })
            })
            .collect()
    }
}

fn qmatmul(name: &str, q: QTensor) -> Result<QMatMul> {
    QMatMul::from_qtensor(q).map_err(|e| format!("tensor {name}: {e}"))
}

/// RoPE tables as llama.cpp builds them: theta advanced by repeated multiplication.
fn rope_tables(cfg: &Config) -> candle_core::Result<(Tensor, Tensor)> {
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
    Ok((
        Tensor::from_vec(cos, (cfg.context_length, half), &Device::Cpu)?,
        Tensor::from_vec(sin, (cfg.context_length, half), &Device::Cpu)?,
    ))
}

impl Weights {
    pub fn load(src: &TensorSource, cfg: Config) -> Result<Self> {
        let (e, kv) = (cfg.n_embd, cfg.n_kv_head * cfg.head_dim);
        let embed = src.qtensor("token_embd.weight")?;
        let vocab = match embed.shape().dims() {
            [v, w] if *w == e => *v,
            d => return Err(format!("token_embd.weight has shape {d:?}, width {e} expected")),
        };
        // Models with tied embeddings (SmolLM2) have no output.weight.
        let output = if src.ct.tensor_infos.contains_key("output.weight") {
            src.linear("output.weight", vocab, e)?.mm
        } else {
            qmatmul("token_embd.weight", src.qtensor("token_embd.weight")?)?
        };
        let ffn = {
            let (_, _, dims) = src.raw("blk.0.ffn_gate.weight")?;
            dims[0]
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: src.vector(&format!("{p}.attn_norm.weight"), e)?,
                qkv: src.fused(
                    &[
                        &format!("{p}.attn_q.weight"),
                        &format!("{p}.attn_k.weight"),
                        &format!("{p}.attn_v.weight"),
                    ],
                    &[e, kv, kv],
                    e,
                )?,
                wo: src.linear(&format!("{p}.attn_output.weight"), e, e)?,
                ffn_norm: src.vector(&format!("{p}.ffn_norm.weight"), e)?,
                gate_up: src.fused(
                    &[&format!("{p}.ffn_gate.weight"), &format!("{p}.ffn_up.weight")],
                    &[ffn, ffn],
                    e,
                )?,
                down: src.linear(&format!("{p}.ffn_down.weight"), e, ffn)?,
            });
        }
        let (cos, sin) = rope_tables(&cfg).map_err(|e| e.to_string())?;
        Ok(Self {
            output_norm: src.vector("output_norm.weight", e)?,
            embed,
            output,
            layers,
            cos,
            sin,
            cfg,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.embed.shape().dims()[0]
    }

    /// A fresh cache for up to `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> Cache {
        Cache {
            layers: (0..self.cfg.n_layer)
                .map(|_| KvCache::new(1, capacity.max(1)))
                .collect(),
            pos: 0,
        }
    }

    /// Runs `tokens` after the cache's positions; returns the last position's logits.
    pub fn forward(&self, tokens: &[u32], cache: &mut Cache) -> candle_core::Result<Vec<f32>> {
        let cfg = &self.cfg;
        let seq = tokens.len();
        let pos = cache.pos;
        if seq == 0 || pos + seq > cfg.context_length {
            candle_core::bail!(
                "positions {pos}..{} do not fit the context of {}",
                pos + seq,
                cfg.context_length
            )
        }
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.embed.embedding(&ids)?.unsqueeze(0)?; // (1, seq, e)
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        let scale = 1.0 / (cfg.head_dim as f32).sqrt();
        for (layer, kv_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps)?;
            let qkv = forward_all(&layer.qkv, &h)?;
            let heads = |t: &Tensor, n: usize| -> candle_core::Result<Tensor> {
                // (1, seq, n*d) -> (1, n, seq, d) for the interleaved rope kernel.
                t.reshape((1, seq, n, cfg.head_dim))?.transpose(1, 2)?.contiguous()
            };
            let q = candle_nn::rotary_emb::rope_i(&heads(&qkv[0], cfg.n_head)?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&heads(&qkv[1], cfg.n_kv_head)?, &cos, &sin)?;
            // flash_attn and the cache use (1, seq, heads, d).
            let q = q.transpose(1, 2)?.contiguous()?;
            let k = k.transpose(1, 2)?.contiguous()?;
            let v = qkv[2]
                .reshape((1, seq, cfg.n_kv_head, cfg.head_dim))?
                .contiguous()?;
            let (k, v) = kv_cache.append(&k, &v)?;
            let attn = flash_attn::<f32>(
                &q,
                &k,
                &v,
                scale,
                AttnMask::causal_with_offset(pos),
                None,
                None,
            )?; // (1, heads, seq, d)
            let attn = attn.transpose(1, 2)?.reshape((1, seq, cfg.n_embd))?;
            x = (x + &layer.wo.forward(&attn)?[0])?;

            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps)?;
            let gu = forward_all(&layer.gate_up, &h)?;
            let act = (candle_nn::ops::silu(&gu[0])? * &gu[1])?;
            x = (x + &layer.down.forward(&act)?[0])?;
        }
        cache.pos += seq;
        let last = x.narrow(1, seq - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.output_norm, cfg.rms_eps)?;
        let logits = self.output.forward(&last)?;
        logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
    }
}

/// Outputs of a group of (possibly fused) projections, in the order they were named.
fn forward_all(group: &[Linear], x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for l in group {
        out.extend(l.forward(x)?);
    }
    Ok(out)
}

/// Per-generation state: one KV cache per layer and the next position.
pub struct Cache {
    layers: Vec<KvCache>,
    pos: usize,
}
