//! Quantized matmul kernels: Q4_1 and Q8_0 weights times f32 activations.
//!
//! SmolLM2-135M's layer weights are all Q4_1 and its output head Q8_0; candle's Q4_1
//! kernel was scalar (11-15 tok/s). These are ports of llama.cpp's AVX2 `ggml_vec_dot_q4_1_q8_1` and
//! `ggml_vec_dot_q8_0_q8_0`: activations are quantized per 32-block to Q8_1 / Q8_0
//! exactly as llama.cpp does (so results match it), nibbles are unpacked to bytes and
//! multiplied with `maddubs`, and f16 scales are converted with F16C. Each call works on
//! four weight rows at once, sharing the activation loads and keeping four independent
//! accumulator chains. The AVX2 path is picked at run time (`is_x86_feature_detected!`),
//! so the binary stays portable; other CPUs get the scalar references below. Output
//! columns are spread over [`crate::pool`].

use half::f16;
use zerocopy::{FromBytes, Immutable, KnownLayout};

use crate::pool::Pool;

pub const QK: usize = 32;

/// llama.cpp's `block_q4_1`: 32 weights as `d * q + m`, q in 0..16.
#[derive(Clone, Copy, Debug, PartialEq, FromBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    /// Low nibbles are weights 0..16, high nibbles 16..32.
    pub qs: [u8; QK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// llama.cpp's `block_q8_0`: 32 values as `d * q`.
#[derive(Clone, Copy, Debug, PartialEq, FromBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// llama.cpp's `block_q8_1`: 32 activations as `d * q`, with `s = d * sum(q)`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// GGUF bytes seen as blocks, without copying; `None` if the length is not whole blocks
/// or the bytes are not 2-aligned (GGUF aligns tensor data to 32).
pub fn blocks<B: FromBytes + KnownLayout + Immutable>(bytes: &[u8]) -> Option<&[B]> {
    #[cfg(target_endian = "big")]
    compile_error!("GGUF blocks are read in place, which needs a little-endian target");
    <[B]>::ref_from_bytes(bytes).ok()
}

impl BlockQ4_1 {
    /// The 32 weights of the block: `d * q + m`.
    pub fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        for (j, &q) in self.qs.iter().enumerate() {
            out[j] = d * (q & 0x0F) as f32 + m;
            out[j + QK / 2] = d * (q >> 4) as f32 + m;
        }
    }
}

impl BlockQ8_0 {
    const ZERO: Self = Self {
        d: f16::ZERO,
        qs: [0; QK],
    };

    /// The 32 values of the block: `d * q`.
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = d * q as f32;
        }
    }
}

impl BlockQ8_1 {
    const ZERO: Self = Self {
        d: f16::ZERO,
        s: f16::ZERO,
        qs: [0; QK],
    };
}

/// True when the AVX2 kernels can run on this CPU.
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Quantizes 32 values as llama.cpp's AVX2 `quantize_row_q8_{0,1}`: scale `127 / amax`,
/// round half to even. Returns the f32 scale and the sum of the quants.
#[inline(always)]
fn quantize_block(x: &[f32], qs: &mut [i8; QK]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
        sum += *q as i32;
    }
    (amax / 127.0, sum)
}

#[inline(always)]
fn quantize_q8_1_impl(xs: &[f32], ys: &mut [BlockQ8_1]) {
    for (x, y) in xs.chunks_exact(QK).zip(ys.iter_mut()) {
        let (d, sum) = quantize_block(x, &mut y.qs);
        y.d = f16::from_f32(d);
        y.s = f16::from_f32(d * sum as f32);
    }
}

#[inline(always)]
fn quantize_q8_0_impl(xs: &[f32], ys: &mut [BlockQ8_0]) {
    for (x, y) in xs.chunks_exact(QK).zip(ys.iter_mut()) {
        y.d = f16::from_f32(quantize_block(x, &mut y.qs).0);
    }
}

/// Same code compiled with AVX2 so rounding is one instruction, not a libm call.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_1_avx2(xs: &[f32], ys: &mut [BlockQ8_1]) {
    quantize_q8_1_impl(xs, ys)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_0_avx2(xs: &[f32], ys: &mut [BlockQ8_0]) {
    quantize_q8_0_impl(xs, ys)
}

/// Quantizes a row (length a multiple of 32) to Q8_1.
pub fn quantize_row_q8_1(xs: &[f32], ys: &mut [BlockQ8_1]) {
    debug_assert_eq!(xs.len(), ys.len() * QK);
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: the features were detected.
        return unsafe { quantize_q8_1_avx2(xs, ys) };
    }
    quantize_q8_1_impl(xs, ys)
}

/// Quantizes a row (length a multiple of 32) to Q8_0.
pub fn quantize_row_q8_0(xs: &[f32], ys: &mut [BlockQ8_0]) {
    debug_assert_eq!(xs.len(), ys.len() * QK);
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: the features were detected.
        return unsafe { quantize_q8_0_avx2(xs, ys) };
    }
    quantize_q8_0_impl(xs, ys)
}

/// Scalar reference, as llama.cpp's generic `vec_dot_q4_1_q8_1`.
pub fn vec_dot_q4_1_scalar(xs: &[BlockQ4_1], ys: &[BlockQ8_1]) -> f32 {
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

/// Scalar reference, as llama.cpp's generic `vec_dot_q8_0_q8_0`.
pub fn vec_dot_q8_0_scalar(xs: &[BlockQ8_0], ys: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let sumi: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
        sumf += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sumf
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! Raw-pointer loops: slice indexing here would keep bounds and UB checks alive in
    //! the dev profile the host is built with.
    use super::{BlockQ4_1, BlockQ8_0, BlockQ8_1};
    use std::arch::x86_64::*;

    const PREFETCH: bool = true;
    /// How many rows ahead to prefetch.
    const AHEAD: usize = 8;

    /// llama.cpp's `hsum_float_8`, same order of additions.
    #[inline(always)]
    unsafe fn hsum_float_8(x: __m256) -> f32 {
        let mut res = _mm256_extractf128_ps(x, 1);
        res = _mm_add_ps(res, _mm256_castps256_ps128(x));
        res = _mm_add_ps(res, _mm_movehl_ps(res, res));
        res = _mm_add_ss(res, _mm_movehdup_ps(res));
        _mm_cvtss_f32(res)
    }

    /// 4 bytes at `p` as the low lane (byte reads: no alignment or UB checks).
    #[inline(always)]
    unsafe fn load_u32(p: *const u8) -> __m128i {
        _mm_cvtsi32_si128(i32::from_le_bytes(*(p as *const [u8; 4])))
    }

    /// 8 bytes at `p` as the low half.
    #[inline(always)]
    unsafe fn load_u64(p: *const u8) -> __m128i {
        _mm_cvtsi64_si128(i64::from_le_bytes(*(p as *const [u8; 8])))
    }

    /// True when the CPU has AVX-VNNI (`vpdpbusd` on 256-bit registers) and
    /// `LLM_LOCAL_NO_VNNI` is not set (for comparisons; results are the same bits).
    pub fn vnni() -> bool {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            is_x86_feature_detected!("avxvnni") && std::env::var_os("LLM_LOCAL_NO_VNNI").is_none()
        })
    }

    /// Sums of 4 adjacent u8 x i8 products as i32 lanes: one `vpdpbusd` with VNNI, else
    /// `maddubs` + `madd` (same integers: the i16 pair sums cannot saturate here).
    #[inline(always)]
    unsafe fn dot_u8_i8<const VNNI: bool>(a: __m256i, b: __m256i) -> __m256i {
        if VNNI {
            _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, b)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
        }
    }

    /// Dots of `R` consecutive weight rows (each `nb` blocks from `w`) with one Q8_1 row.
    /// `ysc[i]` is `[f32(y[i].d), f32(y[i].s)]`. Uses AVX-VNNI when the CPU has it.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are available; `w` has `R * nb` blocks, `y` and `ysc` `nb`.
    #[inline(always)]
    pub unsafe fn dot_q4_1<const R: usize>(
        w: *const BlockQ4_1,
        nb: usize,
        y: *const BlockQ8_1,
        ysc: *const [f32; 2],
    ) -> [f32; R] {
        if vnni() {
            dot_q4_1_vnni::<R>(w, nb, y, ysc)
        } else {
            dot_q4_1_plain::<R>(w, nb, y, ysc)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_1_plain<const R: usize>(
        w: *const BlockQ4_1,
        nb: usize,
        y: *const BlockQ8_1,
        ysc: *const [f32; 2],
    ) -> [f32; R] {
        dot_q4_1_body::<R, false>(w, nb, y, ysc)
    }

    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    pub unsafe fn dot_q4_1_vnni<const R: usize>(
        w: *const BlockQ4_1,
        nb: usize,
        y: *const BlockQ8_1,
        ysc: *const [f32; 2],
    ) -> [f32; R] {
        dot_q4_1_body::<R, true>(w, nb, y, ysc)
    }

    #[inline(always)]
    unsafe fn dot_q4_1_body<const R: usize, const VNNI: bool>(
        w: *const BlockQ4_1,
        nb: usize,
        y: *const BlockQ8_1,
        ysc: *const [f32; 2],
    ) -> [f32; R] {
        let low_mask = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); R];
        // Lane 1 accumulates m * s; lane 0 holds junk.
        let mut summs = [_mm_setzero_ps(); R];
        for i in 0..nb {
            let yb = y.wrapping_add(i) as *const u8;
            // lddqu: an unaligned load that, unlike loadu, has no debug-build checks.
            let qy = _mm256_lddqu_si256(yb.wrapping_add(4) as *const __m256i);
            let ys = _mm_castsi128_ps(load_u64(ysc.wrapping_add(i) as *const u8));
            for r in 0..R {
                let xb = w.wrapping_add(r * nb + i) as *const u8;
                if PREFETCH {
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((r + AHEAD) * nb + i) as *const i8);
                }
                // [x.d, x.m] as f32, then [x.d * y.d, x.m * y.s].
                let prod = _mm_mul_ps(_mm_cvtph_ps(load_u32(xb)), ys);
                summs[r] = _mm_add_ps(summs[r], prod);
                // 16 bytes of nibbles -> 32 bytes in 0..16: low nibbles first, then high.
                let packed = _mm_lddqu_si128(xb.wrapping_add(4) as *const __m128i);
                let qx = _mm256_and_si256(
                    low_mask,
                    _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
                );
                // u8 x i8 products summed by 4 -> i32 -> f32.
                let dot = dot_u8_i8::<VNNI>(qx, qy);
                acc[r] =
                    _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), _mm256_cvtepi32_ps(dot), acc[r]);
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum_float_8(acc[r]) + _mm_cvtss_f32(_mm_shuffle_ps(summs[r], summs[r], 1));
        }
        out
    }

    /// Dots of `R` consecutive Q8_0 weight rows with one Q8_0 row; `yd[i] = f32(y[i].d)`.
    /// Uses AVX-VNNI when the CPU has it.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are available; `w` has `R * nb` blocks, `y` and `yd` `nb`.
    #[inline(always)]
    pub unsafe fn dot_q8_0<const R: usize>(
        w: *const BlockQ8_0,
        nb: usize,
        y: *const BlockQ8_0,
        yd: *const f32,
    ) -> [f32; R] {
        if vnni() {
            dot_q8_0_vnni::<R>(w, nb, y, yd)
        } else {
            dot_q8_0_plain::<R>(w, nb, y, yd)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0_plain<const R: usize>(
        w: *const BlockQ8_0,
        nb: usize,
        y: *const BlockQ8_0,
        yd: *const f32,
    ) -> [f32; R] {
        dot_q8_0_body::<R, false>(w, nb, y, yd)
    }

    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    pub unsafe fn dot_q8_0_vnni<const R: usize>(
        w: *const BlockQ8_0,
        nb: usize,
        y: *const BlockQ8_0,
        yd: *const f32,
    ) -> [f32; R] {
        dot_q8_0_body::<R, true>(w, nb, y, yd)
    }

    #[inline(always)]
    unsafe fn dot_q8_0_body<const R: usize, const VNNI: bool>(
        w: *const BlockQ8_0,
        nb: usize,
        y: *const BlockQ8_0,
        yd: *const f32,
    ) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        for i in 0..nb {
            let yb = y.wrapping_add(i) as *const u8;
            let qy = _mm256_lddqu_si256(yb.wrapping_add(2) as *const __m256i);
            let d_y = _mm_castsi128_ps(load_u32(yd.wrapping_add(i) as *const u8));
            for r in 0..R {
                let xb = w.wrapping_add(r * nb + i) as *const u8;
                if PREFETCH {
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((r + AHEAD) * nb + i) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(
                        (w.wrapping_add((r + AHEAD) * nb + i) as *const i8).wrapping_add(32),
                    );
                }
                let d_x = _mm_cvtsi32_si128(u16::from_le_bytes(*(xb as *const [u8; 2])) as i32);
                let d = _mm_mul_ss(_mm_cvtph_ps(d_x), d_y);
                let qx = _mm256_lddqu_si256(xb.wrapping_add(2) as *const __m256i);
                // llama.cpp's mul_sum_i8_pairs_float: |x| * (y with x's sign).
                let dot = dot_u8_i8::<VNNI>(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx));
                acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(d), _mm256_cvtepi32_ps(dot), acc[r]);
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum_float_8(acc[r]);
        }
        out
    }
}

/// Weights of one projection: parts whose rows are stacked (q, k, v as one matrix),
/// each part `rows * k / 32` blocks, borrowed from the mapped file.
pub enum QWeights<'a> {
    Q4_1(&'a [&'a [BlockQ4_1]]),
    Q8_0(&'a [&'a [BlockQ8_0]]),
}

/// `dst[r * n + c] = dot(x row r, weight row c)` for `x` (m, k), `n` weight rows in all
/// parts. Columns are split over `pool`; `simd = false` forces the scalar references.
pub fn matmul(
    w: QWeights,
    (m, k, n): (usize, usize, usize),
    x: &[f32],
    dst: &mut [f32],
    pool: &Pool,
    simd: bool,
) -> Result<(), String> {
    if k % QK != 0 {
        return Err(format!("matmul: k = {k} is not a multiple of {QK}"));
    }
    let nb = k / QK;
    let w_blocks: usize = match &w {
        QWeights::Q4_1(p) => p.iter().map(|p| p.len()).sum(),
        QWeights::Q8_0(p) => p.iter().map(|p| p.len()).sum(),
    };
    let whole = match &w {
        QWeights::Q4_1(p) => p.iter().all(|p| p.len() % nb.max(1) == 0),
        QWeights::Q8_0(p) => p.iter().all(|p| p.len() % nb.max(1) == 0),
    };
    if x.len() != m * k || w_blocks != n * nb || dst.len() != m * n || !whole || nb == 0 {
        return Err(format!(
            "matmul: sizes x {} weights {} dst {} do not fit ({m},{k},{n})",
            x.len(),
            w_blocks * QK,
            dst.len()
        ));
    }
    let simd = simd && simd_available();
    let dst_addr = dst.as_mut_ptr() as usize;
    // SAFETY (for the writes below): (r, c) with r < m, c < n is written by exactly one
    // work item; ranges handed out by the pool are disjoint.
    let put =
        move |r: usize, c: usize, v: f32| unsafe { *(dst_addr as *mut f32).add(r * n + c) = v };
    // Chunks of whole groups of four rows keep the 4-row kernel busy.
    let chunk = (n / (pool.threads() * 8)).clamp(4, 256) & !3;
    match w {
        QWeights::Q4_1(parts) => {
            let mut ys = vec![BlockQ8_1::ZERO; m * nb];
            for (xr, yr) in x.chunks_exact(k).zip(ys.chunks_exact_mut(nb)) {
                quantize_row_q8_1(xr, yr);
            }
            let ysc: Vec<[f32; 2]> = ys.iter().map(|y| [y.d.to_f32(), y.s.to_f32()]).collect();
            let work = |cols: std::ops::Range<usize>| {
                for_rows(parts, nb, cols, simd, |rows, c, four| {
                    for r in 0..m {
                        let (y, s) = (&ys[r * nb..(r + 1) * nb], &ysc[r * nb..(r + 1) * nb]);
                        if four {
                            #[cfg(target_arch = "x86_64")]
                            {
                                // SAFETY: features checked; `rows` holds 4 rows.
                                let v = unsafe {
                                    avx2::dot_q4_1::<4>(rows.as_ptr(), nb, y.as_ptr(), s.as_ptr())
                                };
                                for (j, v) in v.into_iter().enumerate() {
                                    put(r, c + j, v);
                                }
                            }
                        } else {
                            #[cfg(target_arch = "x86_64")]
                            let v = if simd {
                                // SAFETY: features checked; one row of nb blocks.
                                unsafe {
                                    avx2::dot_q4_1::<1>(rows.as_ptr(), nb, y.as_ptr(), s.as_ptr())
                                        [0]
                                }
                            } else {
                                vec_dot_q4_1_scalar(rows, y)
                            };
                            #[cfg(not(target_arch = "x86_64"))]
                            let v = vec_dot_q4_1_scalar(rows, y);
                            put(r, c, v);
                        }
                    }
                });
            };
            pool.run(n, chunk, &work);
        }
        QWeights::Q8_0(parts) => {
            let mut ys = vec![BlockQ8_0::ZERO; m * nb];
            for (xr, yr) in x.chunks_exact(k).zip(ys.chunks_exact_mut(nb)) {
                quantize_row_q8_0(xr, yr);
            }
            let yd: Vec<f32> = ys.iter().map(|y| y.d.to_f32()).collect();
            let work = |cols: std::ops::Range<usize>| {
                for_rows(parts, nb, cols, simd, |rows, c, four| {
                    for r in 0..m {
                        let (y, d) = (&ys[r * nb..(r + 1) * nb], &yd[r * nb..(r + 1) * nb]);
                        if four {
                            #[cfg(target_arch = "x86_64")]
                            {
                                // SAFETY: features checked; `rows` holds 4 rows.
                                let v = unsafe {
                                    avx2::dot_q8_0::<4>(rows.as_ptr(), nb, y.as_ptr(), d.as_ptr())
                                };
                                for (j, v) in v.into_iter().enumerate() {
                                    put(r, c + j, v);
                                }
                            }
                        } else {
                            #[cfg(target_arch = "x86_64")]
                            let v = if simd {
                                // SAFETY: features checked; one row of nb blocks.
                                unsafe {
                                    avx2::dot_q8_0::<1>(rows.as_ptr(), nb, y.as_ptr(), d.as_ptr())
                                        [0]
                                }
                            } else {
                                vec_dot_q8_0_scalar(rows, y)
                            };
                            #[cfg(not(target_arch = "x86_64"))]
                            let v = vec_dot_q8_0_scalar(rows, y);
                            put(r, c, v);
                        }
                    }
                });
            };
            pool.run(n, chunk, &work);
        }
    }
    Ok(())
}

/// Calls `f(rows, c, four)` over the weight rows of columns `cols` (numbered across
/// all parts): `rows` starts at column `c` and holds four rows when `four`, else one.
/// Groups of four never straddle two parts.
#[inline(always)]
fn for_rows<B>(
    parts: &[&[B]],
    nb: usize,
    cols: std::ops::Range<usize>,
    simd: bool,
    mut f: impl FnMut(&[B], usize, bool),
) {
    let mut base = 0;
    for part in parts {
        let rows = part.len() / nb;
        let (lo, hi) = (cols.start.max(base), cols.end.min(base + rows));
        let mut c = lo;
        while c < hi {
            let four = simd && c + 4 <= hi;
            let step = if four { 4 } else { 1 };
            f(&part[(c - base) * nb..(c - base + step) * nb], c, four);
            c += step;
        }
        base += rows;
        if base >= cols.end {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64 for test data.
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

    /// llama.cpp's `quantize_row_q4_1_ref` (ggml-quants.c), for test weights.
    fn quantize_q4_1_ref(x: &[f32]) -> Vec<BlockQ4_1> {
        x.chunks_exact(QK)
            .map(|x| {
                let min = x.iter().copied().fold(f32::INFINITY, f32::min);
                let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let q = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
                BlockQ4_1 {
                    d: f16::from_f32(d),
                    m: f16::from_f32(min),
                    qs: std::array::from_fn(|j| q(x[j]) | q(x[j + QK / 2]) << 4),
                }
            })
            .collect()
    }

    /// llama.cpp's `quantize_row_q8_0_ref`, for test weights.
    fn quantize_q8_0_ref(x: &[f32]) -> Vec<BlockQ8_0> {
        x.chunks_exact(QK)
            .map(|x| {
                let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                BlockQ8_0 {
                    d: f16::from_f32(d),
                    qs: std::array::from_fn(|j| (x[j] * id).round() as i8),
                }
            })
            .collect()
    }

    #[test]
    fn block_formulas_follow_llama_cpp() {
        // ggml's block_q4_1: x = d * q + m, low nibbles first; block_q8_0: x = d * q.
        let mut qs = [0u8; 16];
        qs[0] = 0x3A; // weight 0: q 10, weight 16: q 3
        let b = BlockQ4_1 {
            d: f16::from_f32(0.5),
            m: f16::from_f32(-1.0),
            qs,
        };
        let mut out = [0f32; QK];
        b.dequantize(&mut out);
        assert_eq!((out[0], out[16], out[1]), (4.0, 0.5, -1.0));
        let mut q8 = [0i8; QK];
        q8[3] = -7;
        BlockQ8_0 {
            d: f16::from_f32(0.25),
            qs: q8,
        }
        .dequantize(&mut out);
        assert_eq!((out[3], out[0]), (-1.75, 0.0));
        // The reference quantizer reproduces a block exactly representable in Q4_1.
        let x: Vec<f32> = (0..QK).map(|j| -1.0 + 0.5 * (j % 16) as f32).collect();
        let q = quantize_q4_1_ref(&x);
        q[0].dequantize(&mut out);
        assert_eq!(&out[..], &x[..]);
        // Blocks are read in place from bytes: 20 and 34 bytes, little-endian f16.
        let mut bytes = vec![0u8; 40];
        bytes[0..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        bytes[22..24].copy_from_slice(&f16::from_f32(-3.0).to_le_bytes());
        let bs: &[BlockQ4_1] = blocks(&bytes).unwrap();
        assert_eq!(
            (bs.len(), bs[0].d.to_f32(), bs[1].m.to_f32()),
            (2, 2.0, -3.0)
        );
        assert!(blocks::<BlockQ4_1>(&bytes[..39]).is_none());
    }

    #[test]
    fn simd_q4_1_equals_scalar_reference_on_random_blocks() {
        if !simd_available() {
            eprintln!("no avx2/fma/f16c: only the scalar path exists on this cpu");
            return;
        }
        let mut rng = Rng(7);
        for nb in [1usize, 2, 3, 18, 48] {
            let w = quantize_q4_1_ref(&rng.vec(4 * nb * QK, 0.1));
            let mut ys = vec![BlockQ8_1::ZERO; nb];
            quantize_row_q8_1(&rng.vec(nb * QK, 3.0), &mut ys);
            let ysc: Vec<[f32; 2]> = ys.iter().map(|y| [y.d.to_f32(), y.s.to_f32()]).collect();
            #[cfg(target_arch = "x86_64")]
            {
                let four =
                    unsafe { avx2::dot_q4_1::<4>(w.as_ptr(), nb, ys.as_ptr(), ysc.as_ptr()) };
                for r in 0..4 {
                    let reference = vec_dot_q4_1_scalar(&w[r * nb..(r + 1) * nb], &ys);
                    let one = unsafe {
                        avx2::dot_q4_1::<1>(w[r * nb..].as_ptr(), nb, ys.as_ptr(), ysc.as_ptr())[0]
                    };
                    // Same integer sums; only the order of f32 additions differs.
                    let tol = 1e-5 * (1.0 + reference.abs()) * nb as f32;
                    assert!(
                        (four[r] - reference).abs() <= tol,
                        "nb {nb} row {r}: {} vs {reference}",
                        four[r]
                    );
                    assert_eq!(one, four[r]);
                }
            }
        }
    }

    /// The VNNI kernels compute the same integers as maddubs + madd: identical bits.
    #[test]
    fn vnni_kernels_equal_the_avx2_ones_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        {
            if !simd_available() || !avx2::vnni() {
                eprintln!("no avx-vnni on this cpu: nothing to compare");
                return;
            }
            let mut rng = Rng(3);
            let nb = 18;
            let w41 = quantize_q4_1_ref(&rng.vec(4 * nb * QK, 0.1));
            let w80 = quantize_q8_0_ref(&rng.vec(4 * nb * QK, 0.1));
            let mut y1 = vec![BlockQ8_1::ZERO; nb];
            let mut y0 = vec![BlockQ8_0::ZERO; nb];
            let x = rng.vec(nb * QK, 3.0);
            quantize_row_q8_1(&x, &mut y1);
            quantize_row_q8_0(&x, &mut y0);
            let ysc: Vec<[f32; 2]> = y1.iter().map(|y| [y.d.to_f32(), y.s.to_f32()]).collect();
            let yd: Vec<f32> = y0.iter().map(|y| y.d.to_f32()).collect();
            unsafe {
                let a = avx2::dot_q4_1_vnni::<4>(w41.as_ptr(), nb, y1.as_ptr(), ysc.as_ptr());
                let b = avx2::dot_q4_1_plain::<4>(w41.as_ptr(), nb, y1.as_ptr(), ysc.as_ptr());
                assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits));
                let a = avx2::dot_q8_0_vnni::<4>(w80.as_ptr(), nb, y0.as_ptr(), yd.as_ptr());
                let b = avx2::dot_q8_0_plain::<4>(w80.as_ptr(), nb, y0.as_ptr(), yd.as_ptr());
                assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits));
            }
        }
    }

    #[test]
    fn simd_q8_0_equals_scalar_reference_on_random_blocks() {
        if !simd_available() {
            return;
        }
        let mut rng = Rng(9);
        for nb in [1usize, 5, 18] {
            let w = quantize_q8_0_ref(&rng.vec(4 * nb * QK, 0.1));
            let mut ys = vec![BlockQ8_0::ZERO; nb];
            quantize_row_q8_0(&rng.vec(nb * QK, 3.0), &mut ys);
            let yd: Vec<f32> = ys.iter().map(|y| y.d.to_f32()).collect();
            #[cfg(target_arch = "x86_64")]
            {
                let four = unsafe { avx2::dot_q8_0::<4>(w.as_ptr(), nb, ys.as_ptr(), yd.as_ptr()) };
                for r in 0..4 {
                    let reference = vec_dot_q8_0_scalar(&w[r * nb..(r + 1) * nb], &ys);
                    let tol = 1e-5 * (1.0 + reference.abs()) * nb as f32;
                    assert!(
                        (four[r] - reference).abs() <= tol,
                        "nb {nb} row {r}: {} vs {reference}",
                        four[r]
                    );
                }
            }
        }
    }

    #[test]
    fn q8_quantization_follows_llama_cpp_rules() {
        let mut xs = vec![0f32; QK];
        // amax 127 gives scale 1: the values below are exact in f32.
        xs[0] = 127.0;
        xs[1] = -63.5; // ties to even -> -64
        xs[2] = 2.5; // ties to even -> 2
        let mut ys = [BlockQ8_1::ZERO];
        quantize_row_q8_1(&xs, &mut ys);
        assert_eq!(ys[0].d.to_f32(), 1.0);
        assert_eq!(&ys[0].qs[..3], &[127, -64, 2]);
        assert_eq!(ys[0].s.to_f32(), 65.0);
        let mut zs = [BlockQ8_0::ZERO];
        quantize_row_q8_0(&[0.0; QK], &mut zs);
        assert_eq!(zs[0].d.to_f32(), 0.0);
        assert!(zs[0].qs.iter().all(|&q| q == 0));
    }

    /// Our matmul (SIMD and scalar, weights split in parts) against f32 arithmetic on the
    /// dequantized weights, within a bound of the activations' Q8 quantization error.
    #[test]
    fn matmul_matches_f32_arithmetic_on_dequantized_weights() {
        let pool = Pool::new(2);
        let mut rng = Rng(42);
        // 98 rows: not a multiple of 4, so the 1-row tail runs too; parts of 50 and 48.
        let (n, k) = (98, 576);
        let nb = k / QK;
        for q8 in [false, true] {
            let wf = rng.vec(n * k, 0.1);
            let (q41, q80) = (quantize_q4_1_ref(&wf), quantize_q8_0_ref(&wf));
            let mut deq = vec![0f32; n * k];
            for (i, chunk) in deq.chunks_exact_mut(QK).enumerate() {
                if q8 {
                    q80[i].dequantize(chunk)
                } else {
                    q41[i].dequantize(chunk)
                }
            }
            let (p41, p80) = (q41.split_at(50 * nb), q80.split_at(50 * nb));
            let (parts41, parts80) = ([p41.0, p41.1], [p80.0, p80.1]);
            let weights = || {
                if q8 {
                    QWeights::Q8_0(&parts80)
                } else {
                    QWeights::Q4_1(&parts41)
                }
            };
            for m in [1usize, 5] {
                let xs = rng.vec(m * k, 2.0);
                let mut simd = vec![0f32; m * n];
                let mut scalar = vec![0f32; m * n];
                matmul(weights(), (m, k, n), &xs, &mut simd, &pool, true).unwrap();
                matmul(weights(), (m, k, n), &xs, &mut scalar, &pool, false).unwrap();
                for r in 0..m {
                    let x = &xs[r * k..(r + 1) * k];
                    for c in 0..n {
                        let w = &deq[c * k..(c + 1) * k];
                        let exact: f32 = x.iter().zip(w).map(|(a, b)| a * b).sum();
                        // Each activation is off by at most half a quant step plus the f16
                        // rounding of its scale; Q8_1's sum term adds |m| * |s| * 2^-11.
                        let mut bound = 1e-4;
                        for b in 0..nb {
                            let xb = &x[b * QK..(b + 1) * QK];
                            let wb = &w[b * QK..(b + 1) * QK];
                            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                            let wsum: f32 = wb.iter().map(|v| v.abs()).sum();
                            bound += (amax / 254.0 + amax * 2e-3) * wsum;
                            if !q8 {
                                let xsum: f32 = xb.iter().map(|v| v.abs()).sum();
                                bound += q41[c * nb + b].m.to_f32().abs() * xsum * 1e-3;
                            }
                        }
                        let (i, s) = (r * n + c, simd[r * n + c]);
                        assert!(
                            (s - exact).abs() <= bound,
                            "q8 {q8} m {m} [{r},{c}]: simd {s} f32 {exact} bound {bound}"
                        );
                        assert!(
                            (scalar[i] - s).abs() <= 1e-4 * (1.0 + s.abs()),
                            "q8 {q8} m {m} [{i}]: scalar {} simd {s}",
                            scalar[i]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        let pool = Pool::new(1);
        let mut dst = vec![0f32; 1];
        assert!(matmul(
            QWeights::Q4_1(&[]),
            (1, 33, 1),
            &[0.0; 33],
            &mut dst,
            &pool,
            true
        )
        .is_err());
        assert!(matmul(
            QWeights::Q8_0(&[]),
            (1, 32, 1),
            &[0.0; 32],
            &mut dst,
            &pool,
            true
        )
        .is_err());
    }
}
