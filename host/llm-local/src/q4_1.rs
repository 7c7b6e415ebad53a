//! Q4_1 weight x f32 activation matmul with an AVX2 kernel, plugged into candle.
//!
//! candle has no SIMD kernel for Q4_1 on x86, so SmolLM2-135M (all layer weights Q4_1)
//! ran at 11-15 tok/s. This is a port of llama.cpp's AVX2 `ggml_vec_dot_q4_1_q8_1`: the
//! activations are quantized to Q8_1 (as llama.cpp does, so results match it), nibbles
//! are unpacked to bytes and multiplied with `maddubs`, and the f16 block scales are
//! converted with F16C. The kernel is chosen at run time (`is_x86_feature_detected!`),
//! so the binary stays portable; other CPUs get the scalar reference.
//!
//! [`FastQ4_1`] wraps candle's own Q4_1 storage and implements candle's `QuantizedType`,
//! so the weights are ordinary `QTensor`s / `QMatMul`s; only `matmul_t` is replaced.
//! The rows of the output are spread over candle's persistent barrier pool.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor, QuantizedType};
use candle_core::{CpuStorage, Device};
use half::f16;

pub const QK: usize = 32;

/// llama.cpp's `block_q4_1`: 32 weights as `d * q + m`, q in 0..16.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    /// Low nibbles are weights 0..16, high nibbles 16..32.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// llama.cpp's `block_q8_1`: 32 activations as `d * q`, with `s = d * sum(q)`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

impl BlockQ8_1 {
    const ZERO: Self = Self {
        d: f16::ZERO,
        s: f16::ZERO,
        qs: [0; QK],
    };
}

/// Quantizes one row as llama.cpp's AVX2 `quantize_row_q8_1` does (scale `127 / amax`,
/// round half to even, `s` from the f32 scale), so the dot products match llama.cpp's.
pub fn quantize_row_q8_1(xs: &[f32], ys: &mut [BlockQ8_1]) {
    debug_assert_eq!(xs.len(), ys.len() * QK);
    for (x, y) in xs.chunks_exact(QK).zip(ys.iter_mut()) {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in y.qs.iter_mut().zip(x) {
            *q = (v * id).round_ties_even() as i8;
            sum += *q as i32;
        }
        y.d = f16::from_f32(d);
        y.s = f16::from_f32(d * sum as f32);
    }
}

/// The scalar reference, as candle's and llama.cpp's generic `vec_dot_q4_1_q8_1`.
pub fn vec_dot_scalar(xs: &[BlockQ4_1], ys: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            let v0 = (x.qs[j] & 0x0F) as i32;
            let v1 = (x.qs[j] >> 4) as i32;
            sumi += v0 * y.qs[j] as i32 + v1 * y.qs[j + QK / 2] as i32;
        }
        sumf += sumi as f32 * x.d.to_f32() * y.d.to_f32() + x.m.to_f32() * y.s.to_f32();
    }
    sumf
}

/// True when the AVX2 kernel can run on this CPU.
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BlockQ4_1, BlockQ8_1};
    use std::arch::x86_64::*;

    /// `ys_scales[i]` is `[f32(ys[i].d), f32(ys[i].s)]`, converted once per row.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; the three slices have the same length.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn vec_dot(xs: &[BlockQ4_1], ys: &[BlockQ8_1], ys_scales: &[[f32; 2]]) -> f32 {
        debug_assert!(xs.len() == ys.len() && ys.len() == ys_scales.len());
        let low_mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        // Lane 1 accumulates m * s; lane 0 holds junk.
        let mut summs = _mm_setzero_ps();
        for i in 0..xs.len() {
            let x = xs.as_ptr().add(i);
            let y = ys.as_ptr().add(i);
            // [x.d, x.m] as f32, then [x.d * y.d, x.m * y.s].
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(x as *const i32)));
            let yds = _mm_castsi128_ps(_mm_loadl_epi64(
                ys_scales.as_ptr().add(i) as *const __m128i
            ));
            let prod = _mm_mul_ps(dm, yds);
            summs = _mm_add_ps(summs, prod);
            let d0d1 = _mm256_broadcastss_ps(prod);
            // 16 bytes of nibbles -> 32 bytes 0..16: low nibbles first, then high.
            let packed = _mm_loadu_si128((*x).qs.as_ptr() as *const __m128i);
            let qx = _mm256_and_si256(
                low_mask,
                _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
            );
            let qy = _mm256_loadu_si256((*y).qs.as_ptr() as *const __m256i);
            // u8 x i8 pairs -> i16 (|sum| <= 2*15*127, no saturation) -> i32 -> f32.
            let dot = _mm256_madd_epi16(_mm256_maddubs_epi16(qx, qy), ones);
            acc = _mm256_fmadd_ps(d0d1, _mm256_cvtepi32_ps(dot), acc);
        }
        hsum_float_8(acc) + _mm_cvtss_f32(_mm_shuffle_ps(summs, summs, 1))
    }

    /// llama.cpp's `hsum_float_8`, same order of additions.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum_float_8(x: __m256) -> f32 {
        let mut res = _mm256_extractf128_ps(x, 1);
        res = _mm_add_ps(res, _mm256_castps256_ps128(x));
        res = _mm_add_ps(res, _mm_movehl_ps(res, res));
        res = _mm_add_ss(res, _mm_movehdup_ps(res));
        _mm_cvtss_f32(res)
    }
}

/// `dst[r * n + c] = dot(lhs row r, weight row c)` for `lhs` (m, k) and weights (n, k).
pub fn matmul(
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    weights: &[BlockQ4_1],
    dst: &mut [f32],
    use_simd: bool,
) -> Result<(), String> {
    if k % QK != 0 {
        return Err(format!("q4_1 matmul: k = {k} is not a multiple of {QK}"));
    }
    let nb = k / QK;
    if lhs.len() != m * k || weights.len() != n * nb || dst.len() < m * n {
        return Err(format!(
            "q4_1 matmul: sizes lhs {} weights {} dst {} do not fit ({m},{k},{n})",
            lhs.len(),
            weights.len() * QK,
            dst.len()
        ));
    }
    let use_simd = use_simd && simd_available();
    let mut ys = vec![BlockQ8_1::ZERO; m * nb];
    for (x, y) in lhs.chunks_exact(k).zip(ys.chunks_exact_mut(nb)) {
        quantize_row_q8_1(x, y);
    }
    let scales: Vec<[f32; 2]> = ys.iter().map(|y| [y.d.to_f32(), y.s.to_f32()]).collect();
    let dst_addr = dst.as_mut_ptr() as usize;
    let rows = |cols: std::ops::Range<usize>| {
        for c in cols {
            let w = &weights[c * nb..(c + 1) * nb];
            for r in 0..m {
                let y = &ys[r * nb..(r + 1) * nb];
                let v = if use_simd {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: features checked by simd_available(); slices are nb long.
                    unsafe {
                        avx2::vec_dot(w, y, &scales[r * nb..(r + 1) * nb])
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!()
                } else {
                    vec_dot_scalar(w, y)
                };
                // SAFETY: (r, c) is written by exactly one work item and is < m * n.
                unsafe { *(dst_addr as *mut f32).add(r * n + c) = v };
            }
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(n, rows);
    Ok(())
}

/// candle's Q4_1 storage with [`matmul`] in place of candle's scalar `matmul_t`.
pub struct FastQ4_1 {
    inner: Box<dyn QuantizedType>,
}

impl FastQ4_1 {
    fn blocks(&self) -> &[BlockQ4_1] {
        let len = self.inner.storage_size_in_bytes() / std::mem::size_of::<BlockQ4_1>();
        // SAFETY: the inner storage is candle's Vec<BlockQ4_1>, which has this exact
        // layout (both are repr(C) f16, f16, [u8; 16]) and is aligned for it.
        unsafe { std::slice::from_raw_parts(self.inner.as_ptr() as *const BlockQ4_1, len) }
    }
}

/// A CPU `QTensor` of shape (n, k) from raw GGUF Q4_1 bytes, using the fast kernel.
pub fn fast_q4_1_qtensor(bytes: &[u8], shape: (usize, usize)) -> candle_core::Result<QTensor> {
    let storage = QStorage::from_data(Cow::Borrowed(bytes), &Device::Cpu, GgmlDType::Q4_1)?;
    let QStorage::Cpu(inner) = storage else {
        candle_core::bail!("q4_1 storage is not on the cpu")
    };
    if inner.dtype() != GgmlDType::Q4_1 {
        candle_core::bail!("expected q4_1 storage, got {:?}", inner.dtype())
    }
    QTensor::new(QStorage::Cpu(Box::new(FastQ4_1 { inner })), shape)
}

impl QuantizedType for FastQ4_1 {
    fn dtype(&self) -> GgmlDType {
        GgmlDType::Q4_1
    }
    fn matmul_t(
        &self,
        mkn: (usize, usize, usize),
        lhs: &[f32],
        dst: &mut [f32],
    ) -> candle_core::Result<()> {
        matmul(mkn, lhs, self.blocks(), dst, true).map_err(candle_core::Error::msg)
    }
    fn matmul_t_f16(
        &self,
        mkn: (usize, usize, usize),
        lhs: &[f16],
        dst: &mut [f16],
    ) -> candle_core::Result<()> {
        self.inner.matmul_t_f16(mkn, lhs, dst)
    }
    fn embedding(&self, ids: &[u32], rows: usize, hidden: usize) -> candle_core::Result<CpuStorage> {
        self.inner.embedding(ids, rows, hidden)
    }
    fn dequantize(&self, elem_count: usize) -> candle_core::Result<CpuStorage> {
        self.inner.dequantize(elem_count)
    }
    fn storage_size_in_bytes(&self) -> usize {
        self.inner.storage_size_in_bytes()
    }
    fn as_ptr(&self) -> *const u8 {
        self.inner.as_ptr()
    }
    fn block_size(&self) -> usize {
        self.inner.block_size()
    }
    fn from_float(&mut self, xs: &[f32]) {
        self.inner.from_float(xs)
    }
    fn from_float_imatrix(&mut self, xs: &[f32], imatrix_weights: &[f32], n_per_row: usize) {
        self.inner.from_float_imatrix(xs, imatrix_weights, n_per_row)
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::{Module, Tensor};

    /// Small deterministic generator (SplitMix64) for test data.
    struct Rng(u64);
    impl Rng {
        fn next_f32(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
        fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
            (0..n).map(|_| self.next_f32() * scale).collect()
        }
    }

    fn random_weights(rng: &mut Rng, n: usize, k: usize) -> (QTensor, Vec<u8>) {
        let w = Tensor::from_vec(rng.vec(n * k, 0.1), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let bytes = q.data().unwrap().into_owned();
        (q, bytes)
    }

    fn as_blocks(bytes: &[u8]) -> Vec<BlockQ4_1> {
        bytes
            .chunks_exact(20)
            .map(|b| BlockQ4_1 {
                d: f16::from_le_bytes([b[0], b[1]]),
                m: f16::from_le_bytes([b[2], b[3]]),
                qs: b[4..20].try_into().unwrap(),
            })
            .collect()
    }

    #[test]
    fn simd_dot_equals_scalar_reference_on_random_blocks() {
        if !simd_available() {
            eprintln!("no avx2/fma/f16c on this cpu: only the scalar path exists");
            return;
        }
        let mut rng = Rng(7);
        for nb in [1usize, 2, 3, 18, 48] {
            let (_, bytes) = random_weights(&mut rng, 1, nb * QK);
            let xs = as_blocks(&bytes);
            let act = rng.vec(nb * QK, 3.0);
            let mut ys = vec![BlockQ8_1::ZERO; nb];
            quantize_row_q8_1(&act, &mut ys);
            let scales: Vec<[f32; 2]> = ys.iter().map(|y| [y.d.to_f32(), y.s.to_f32()]).collect();
            let reference = vec_dot_scalar(&xs, &ys);
            #[cfg(target_arch = "x86_64")]
            let simd = unsafe { avx2::vec_dot(&xs, &ys, &scales) };
            #[cfg(not(target_arch = "x86_64"))]
            let simd = reference;
            // Same integer sums; only the order of the f32 additions differs.
            let tol = 1e-5 * (1.0 + reference.abs()) * nb as f32;
            assert!(
                (simd - reference).abs() <= tol,
                "nb {nb}: simd {simd} vs scalar {reference}"
            );
        }
    }

    #[test]
    fn q8_1_quantization_matches_llama_cpp_rules() {
        let mut xs = vec![0f32; QK];
        // amax 127 gives scale 1: the values below are exact in f32.
        xs[0] = 127.0;
        xs[1] = -63.5; // ties to even -> -64
        xs[2] = 2.5; // ties to even -> 2
        let mut ys = [BlockQ8_1::ZERO];
        quantize_row_q8_1(&xs, &mut ys);
        assert_eq!(ys[0].d.to_f32(), 1.0);
        assert_eq!(ys[0].qs[0], 127);
        assert_eq!(ys[0].qs[1], -64);
        assert_eq!(ys[0].qs[2], 2);
        assert_eq!(ys[0].s.to_f32(), 65.0);
        // All zeros: zero scale, no NaN.
        let mut zs = [BlockQ8_1::ZERO];
        quantize_row_q8_1(&[0.0; QK], &mut zs);
        assert_eq!(zs[0].d.to_f32(), 0.0);
        assert!(zs[0].qs.iter().all(|&q| q == 0));
    }

    #[test]
    fn fast_qmatmul_matches_candle_q4_1_matmul() {
        let mut rng = Rng(42);
        let (n, k) = (96, 576);
        let (stock, bytes) = random_weights(&mut rng, n, k);
        let fast = fast_q4_1_qtensor(&bytes, (n, k)).unwrap();
        let stock = QMatMul::from_qtensor(stock).unwrap();
        let fast = QMatMul::from_qtensor(fast).unwrap();
        for m in [1usize, 5] {
            let x = Tensor::from_vec(rng.vec(m * k, 2.0), (1, m, k), &Device::Cpu).unwrap();
            let a: Vec<f32> = stock.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = fast.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a.len(), m * n);
            // candle rounds Q8_1's s through f16 arithmetic, llama.cpp (and we) in f32:
            // the results agree to quantization noise, far below the values' spread.
            let spread = a.iter().fold(0f32, |acc, v| acc.max(v.abs()));
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!((x - y).abs() <= 0.02 * spread, "m {m} elem {i}: candle {x} fast {y}");
            }
            // And exactly the scalar reference on the same quantized activations.
            let mut scalar = vec![0f32; m * n];
            let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            matmul((m, k, n), &xs, &as_blocks(&bytes), &mut scalar, false).unwrap();
            for (x, y) in scalar.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + x.abs()), "scalar {x} fast {y}");
            }
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        let mut dst = vec![0f32; 4];
        assert!(matmul((1, 33, 1), &[0.0; 33], &[], &mut dst, true).is_err());
        assert!(matmul((1, 32, 2), &[0.0; 32], &[], &mut dst, true).is_err());
    }
}
