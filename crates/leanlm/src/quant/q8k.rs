//! Q4_K and Q6_K rows against activations quantized per 256 values (llama.cpp's Q8_K),
//! the 8-bit decode and short-batch path of the two K-quants most files are made of.
//!
//! With one activation scale per super-block, a super-block's eight (Q4_K) or sixteen
//! (Q6_K) weight scales apply in integers: `madd` multiplies each sub-block's pair sums
//! by its scale, the products add up in one vector of i32, and the floats see one
//! conversion and one multiply-add per super-block. Against activations with a scale per
//! 32 values (the other formats' [`Q8Act`](super::activation::Q8Act)) every sub-block
//! needs its own float scale, which on AVX2 costs a horizontal reduction per sub-block
//! per token; here the per-token work is the integer multiplies alone, so `N` tokens
//! sharing each super-block's unpacked weights (verifying drafted tokens) cost little
//! more than the one token of decode. Each token gets exactly the operations it gets
//! alone: a batch's results are decode's, bit for bit.
//!
//! Own code rather than a crate's: the block layouts are llama.cpp's (read in
//! [`kquants`](super::kquants)) and the reduction order is part of what the tests hold.

use super::activation::round_i8;
use super::blocks::f16_at;
use super::kquants::{q4k_scale_min, Q4K_BYTES, Q6K_BYTES};

/// Values per super-block (and per activation scale).
pub const QK_K: usize = 256;

/// A vector (or a batch of vectors) quantized to 8 bits in blocks of 256.
#[derive(Default, Clone)]
pub struct Q8KAct {
    pub qs: Vec<i8>,
    /// Scale of each block of 256.
    pub d: Vec<f32>,
    /// Σq of each 16 values.
    pub bsums: Vec<i16>,
}

/// A borrowed view of one vector of a [`Q8KAct`].
#[derive(Clone, Copy)]
pub struct Q8KRow<'a> {
    pub qs: &'a [i8],
    pub d: &'a [f32],
    pub bsums: &'a [i16],
}

impl Q8KAct {
    /// Quantize `x` (a multiple of 256 values, checked by the matrix's shapes): x ≈ d·q,
    /// d = max|x|/127, q rounded half away from zero.
    pub fn quantize(x: &[f32]) -> Self {
        debug_assert_eq!(x.len() % QK_K, 0);
        let mut a = Self {
            qs: vec![0; x.len()],
            d: vec![0.0; x.len() / QK_K],
            bsums: vec![0; x.len() / 16],
        };
        for (b, (xb, qb)) in x
            .chunks_exact(QK_K)
            .zip(a.qs.chunks_exact_mut(QK_K))
            .enumerate()
        {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (q, &v) in qb.iter_mut().zip(xb) {
                *q = round_i8(v * id);
            }
            a.d[b] = d;
            for (s, q16) in a.bsums[16 * b..16 * (b + 1)]
                .iter_mut()
                .zip(qb.chunks_exact(16))
            {
                *s = q16.iter().map(|&q| q as i16).sum();
            }
        }
        a
    }

    /// Vector `row` of a batch whose vectors have `supers` blocks each.
    pub fn row(&self, row: usize, supers: usize) -> Q8KRow<'_> {
        let (b0, b1) = (row * supers, (row + 1) * supers);
        Q8KRow {
            qs: &self.qs[b0 * QK_K..b1 * QK_K],
            d: &self.d[b0..b1],
            bsums: &self.bsums[16 * b0..16 * b1],
        }
    }
}

/// One row · one token.
pub type DotK = fn(&[u8], Q8KRow) -> f32;
/// One row · four tokens, sharing each super-block's unpacking.
pub type DotK4 = fn(&[u8], [Q8KRow; 4]) -> [f32; 4];

macro_rules! kernel {
    ($one:ident, $four:ident, $simd:ident, $reference:ident, $bytes:expr) => {
        pub fn $one(w: &[u8], x: Q8KRow) -> f32 {
            debug_assert_eq!(w.len(), x.d.len() * $bytes);
            #[cfg(target_arch = "x86_64")]
            if super::simd::has_avx2() {
                // SAFETY: AVX2 was detected; `w` holds one super-block per activation
                // block (asserted in debug, checked by the matrix at construction).
                return unsafe { avx2::$simd::<1>(w, [x]) }[0];
            }
            $reference(w, x)
        }

        pub fn $four(w: &[u8], x: [Q8KRow; 4]) -> [f32; 4] {
            debug_assert_eq!(w.len(), x[0].d.len() * $bytes);
            #[cfg(target_arch = "x86_64")]
            if super::simd::has_avx2() {
                // SAFETY: as in the one-token kernel.
                return unsafe { avx2::$simd::<4>(w, x) };
            }
            x.map(|x| $reference(w, x))
        }
    };
}

kernel!(dot_q4_k, dot4_q4_k, q4_k, dot_q4_k_ref, Q4K_BYTES);
kernel!(dot_q6_k, dot4_q6_k, q6_k, dot_q6_k_ref, Q6K_BYTES);

/// The kernels of `dtype` when it takes these activations.
pub fn kernels(dtype: super::GgmlType) -> Option<(DotK, DotK4)> {
    match dtype {
        super::GgmlType::Q4K => Some((dot_q4_k, dot4_q4_k)),
        super::GgmlType::Q6K => Some((dot_q6_k, dot4_q6_k)),
        _ => None,
    }
}

/// Q4_K row · Q8_K activations, plainly: per super-block, the integer sums
/// Σ_j scale_j·Σ code·q and Σ_j min_j·Σ q, then d·dx and dmin·dx.
pub fn dot_q4_k_ref(w: &[u8], x: Q8KRow) -> f32 {
    let mut total = 0f32;
    for (b, blk) in w.chunks_exact(Q4K_BYTES).enumerate() {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let q = &x.qs[b * QK_K..(b + 1) * QK_K];
        let (mut isum, mut msum) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = q4k_scale_min(j, &blk[4..16]);
            let (c, shift) = (j / 2, 4 * (j % 2));
            let s: i32 = (0..32)
                .map(|l| ((blk[16 + 32 * c + l] >> shift) & 0x0f) as i32 * q[32 * j + l] as i32)
                .sum();
            isum += sc as i32 * s;
            let qsum = x.bsums[16 * b + 2 * j] as i32 + x.bsums[16 * b + 2 * j + 1] as i32;
            msum += m as i32 * qsum;
        }
        total += x.d[b] * (d * isum as f32 - dmin * msum as f32);
    }
    total
}

/// Q6_K row · Q8_K activations, plainly: per super-block Σ_k scale_k·Σ (level − 32)·q
/// over the sixteen 16-value groups, then d·dx.
pub fn dot_q6_k_ref(w: &[u8], x: Q8KRow) -> f32 {
    let mut total = 0f32;
    for (b, blk) in w.chunks_exact(Q6K_BYTES).enumerate() {
        let d = f16_at(blk, 208);
        let q = &x.qs[b * QK_K..(b + 1) * QK_K];
        let mut isum = 0i32;
        for k in 0..16 {
            let s: i32 = (16 * k..16 * (k + 1))
                .map(|i| (super::kquants::q6k_level(blk, i) as i32 - 32) * q[i] as i32)
                .sum();
            isum += (blk[192 + k] as i8) as i32 * s;
        }
        total += x.d[b] * d * isum as f32;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Q8KRow, QK_K};
    use crate::quant::kquants::{q4k_scales_mins, Q4K_BYTES, Q6K_BYTES};
    use crate::quant::simd::{half, hsum, q6k_levels};
    use std::arch::x86_64::*;

    // No closures in these `target_feature` functions: they compile as out-of-line calls
    // (with `vzeroupper`), not inlined vector code.

    /// Σ over 32 values of u·x (u unsigned, at most 63 so that pair sums fit in i16),
    /// each 16-value half multiplied by its i16 scale in `scale`'s lanes: 8 × i32.
    #[inline(always)]
    unsafe fn scaled(u: __m256i, x: *const i8, scale: __m256i) -> __m256i {
        let xv = _mm256_loadu_si256(x as *const __m256i);
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv), scale)
    }

    /// One token's Σ over a super-block of [`scaled`] products: the eight 32-value blocks
    /// of codes `u` against the activations at `x`, each block by its scales.
    #[inline(always)]
    unsafe fn scaled_sum(u: &[__m256i; 8], x: *const i8, scales: &[__m256i; 8]) -> __m256i {
        let mut s = scaled(u[0], x, scales[0]);
        for j in 1..8 {
            s = _mm256_add_epi32(s, scaled(u[j], x.add(32 * j), scales[j]));
        }
        s
    }

    /// `N` tokens · one Q4_K row. Per super-block, shared: the 256 codes unpacked to
    /// eight vectors, each sub-block's 6-bit scale broadcast to 16 lanes, the mins laid
    /// out against the activations' 16-value sums. Per token: eight `maddubs`/`madd`
    /// pairs into one i32 vector, one `madd` for the mins, two multiply-adds.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q4_k<const N: usize>(w: &[u8], x: [Q8KRow; N]) -> [f32; N] {
        let m4 = _mm256_set1_epi8(0x0f);
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..x[0].d.len() {
            let blk = w.as_ptr().add(b * Q4K_BYTES);
            let (d, dmin) = (half(blk), half(blk.add(2)));
            let (sc, mn) = q4k_scales_mins(std::slice::from_raw_parts(blk.add(4), 12));
            // Scale j in every 16-bit lane: byte j of each 8-byte group, high byte zero.
            let scv = _mm256_set1_epi64x(sc as i64);
            let mut scales = [_mm256_setzero_si256(); 8];
            for (j, s) in scales.iter_mut().enumerate() {
                *s = _mm256_shuffle_epi8(scv, _mm256_set1_epi16((0x8000 | j as u16) as i16));
            }
            // Min j at 16-bit lanes 2j and 2j + 1 (the two 16-value sums of sub-block j).
            let m = _mm_cvtsi64_si128(mn as i64);
            let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
            let mut u = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                let q = _mm256_loadu_si256(blk.add(16 + 32 * c) as *const __m256i);
                u[2 * c] = _mm256_and_si256(q, m4);
                u[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            }
            for t in 0..N {
                let s = scaled_sum(&u, x[t].qs.as_ptr().add(b * QK_K), &scales);
                let bs = _mm256_loadu_si256(x[t].bsums.as_ptr().add(16 * b) as *const __m256i);
                let msum = _mm256_madd_epi16(bs, mins);
                let dx = x[t].d[b];
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dx * d), acc[t]);
                acc[t] = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(msum),
                    _mm256_set1_ps(-(dx * dmin)),
                    acc[t],
                );
            }
        }
        let mut out = [0f32; N];
        for (o, a) in out.iter_mut().zip(acc) {
            *o = hsum(a);
        }
        out
    }

    /// `N` tokens · one Q6_K row. Levels stay unsigned (0..64) for `maddubs`; the −32
    /// offset comes back as 32·Σ_k scale_k·(Σq over group k), from the activations'
    /// 16-value sums. Shared per super-block: the levels, and for each 32-value block a
    /// vector with its two 16-value scales in the two halves' lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn q6_k<const N: usize>(w: &[u8], x: [Q8KRow; N]) -> [f32; N] {
        // Lanes of one dword: its low i16 to the low half's lanes, its high i16 to the
        // high half's.
        let spread = _mm256_setr_epi8(
            0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2,
            3, 2, 3,
        );
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..x[0].d.len() {
            let blk = w.as_ptr().add(b * Q6K_BYTES);
            let d = half(blk.add(208));
            // Scale k as i16 in lane k; dword i holds the two scales of 32-value block i.
            let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(192) as *const __m128i));
            let mut scales = [_mm256_setzero_si256(); 8];
            let mut u = [_mm256_setzero_si256(); 8];
            for i in 0..8 {
                let pair = _mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(i as i32));
                scales[i] = _mm256_shuffle_epi8(pair, spread);
                u[i] = q6k_levels(blk, i);
            }
            for t in 0..N {
                let s = scaled_sum(&u, x[t].qs.as_ptr().add(b * QK_K), &scales);
                let bs = _mm256_loadu_si256(x[t].bsums.as_ptr().add(16 * b) as *const __m256i);
                let offset = _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5);
                let s = _mm256_sub_epi32(s, offset);
                let dd = _mm256_set1_ps(x[t].d[b] * d);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, acc[t]);
            }
        }
        let mut out = [0f32; N];
        for (o, a) in out.iter_mut().zip(acc) {
            *o = hsum(a);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::activation::Q8Act;
    use crate::quant::dot::dot_f32_ref;
    use crate::quant::kquants::{dequantize_q4_k, dequantize_q6_k, quantize_q4_k, quantize_q6_k};
    use crate::quant::test_data as data;

    #[test]
    fn quantize_hand_checked() {
        let mut x = vec![0f32; 256];
        x[0] = 127.0;
        x[1] = -3.0;
        x[2] = 2.5; // half away from zero
        x[17] = -2.5;
        let a = Q8KAct::quantize(&x);
        assert_eq!(a.d, [1.0]);
        assert_eq!(&a.qs[..3], &[127, -3, 3]);
        assert_eq!(a.qs[17], -3);
        assert_eq!(a.bsums[0], 127 - 3 + 3);
        assert_eq!(a.bsums[1], -3);
        assert!(a.bsums[2..].iter().all(|&s| s == 0));
        // All zeros: scale 0, no division by zero.
        let z = Q8KAct::quantize(&[0.0; 256]);
        assert_eq!((z.d[0], z.qs.iter().all(|&q| q == 0)), (0.0, true));
    }

    /// Encoded row, the same row decoded, its kernel, reference and four-token kernel.
    type Case = (Vec<u8>, Vec<f32>, DotK, DotK, DotK4);

    fn cases(n: usize) -> [Case; 2] {
        let (w, ones) = (data(n, 4), vec![1f32; n]);
        let (q4, q6) = (quantize_q4_k(&w, &ones), quantize_q6_k(&w, &ones));
        let mut d4 = vec![0f32; n];
        let mut d6 = vec![0f32; n];
        dequantize_q4_k(&q4, &mut d4);
        dequantize_q6_k(&q6, &mut d6);
        [
            (q4, d4, dot_q4_k, dot_q4_k_ref, dot4_q4_k),
            (q6, d6, dot_q6_k, dot_q6_k_ref, dot4_q6_k),
        ]
    }

    /// The reference against the dequantized row times the dequantized activations (the
    /// same numbers in f32), the SIMD kernel against the reference, and four tokens
    /// against one, bit for bit.
    #[test]
    fn kernels_match_reference_and_batch_matches_decode() {
        for supers in [1, 3, 7] {
            let n = supers * QK_K;
            let acts: Vec<Q8KAct> = (0..4).map(|i| Q8KAct::quantize(&data(n, 20 + i))).collect();
            let rows = [0, 1, 2, 3].map(|i| acts[i].row(0, supers));
            for (bytes, decoded, one, reference, four) in cases(n) {
                for (a, &r) in acts.iter().zip(&rows) {
                    let xf: Vec<f32> =
                        a.qs.iter()
                            .enumerate()
                            .map(|(i, &q)| a.d[i / QK_K] * q as f32)
                            .collect();
                    let exact = dot_f32_ref(&decoded, &xf);
                    let want = reference(&bytes, r);
                    assert!(
                        (want - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                        "{want} vs {exact}"
                    );
                    let got = one(&bytes, r);
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{got} vs {want}"
                    );
                }
                assert_eq!(four(&bytes, rows), rows.map(|r| one(&bytes, r)), "n={n}");
            }
        }
    }

    /// Extreme activations (±127 everywhere, with a −128-free rounding) and extreme
    /// codes: no i16 pair sum or i32 sum overflows.
    #[test]
    fn extreme_values_do_not_overflow() {
        for sign in [1.0f32, -1.0] {
            let x = vec![sign; QK_K];
            let a = Q8KAct::quantize(&x);
            assert!(a.qs.iter().all(|&q| q == 127 * sign as i8));
            let r = a.row(0, 1);
            // Q4_K: every code 15, every scale and min 63, d = dmin = 1.
            let mut q4 = vec![0u8; Q4K_BYTES];
            q4[..4].copy_from_slice(&[0x00, 0x3c, 0x00, 0x3c]);
            q4[4..16].fill(0xff);
            q4[16..].fill(0xff);
            // Q6_K: every level 63, every scale 127, d = 1.
            let mut q6 = vec![0xffu8; Q6K_BYTES];
            q6[192..208].fill(127);
            q6[208..].copy_from_slice(&[0x00, 0x3c]);
            for (bytes, one, reference) in [
                (q4, dot_q4_k as DotK, dot_q4_k_ref as DotK),
                (q6, dot_q6_k, dot_q6_k_ref),
            ] {
                let (got, want) = (one(&bytes, r), reference(&bytes, r));
                assert!((got - want).abs() <= 1e-6 * want.abs(), "{got} vs {want}");
            }
        }
    }

    /// Q8_K activations are as close to the f32 product as the 32-value ones are, within
    /// a small factor (one scale per 256 values instead of 8), on weight-like data.
    #[test]
    fn error_is_comparable_to_per_32_activations() {
        let n = 8 * QK_K;
        let x = data(n, 31);
        for (bytes, decoded, one, _, _) in cases(n) {
            let exact = dot_f32_ref(&decoded, &x);
            let k = one(&bytes, Q8KAct::quantize(&x).row(0, n / QK_K));
            let dq = Q8Act::quantize(&x);
            let xf: Vec<f32> = dq
                .qs
                .iter()
                .enumerate()
                .map(|(i, &q)| dq.d[i / 32] * q as f32)
                .collect();
            let per32 = dot_f32_ref(&decoded, &xf);
            let norm = dot_f32_ref(&decoded, &decoded).sqrt() * dot_f32_ref(&x, &x).sqrt();
            assert!((k - exact).abs() <= 4.0 * (per32 - exact).abs() + 1e-3 * norm);
        }
    }
}
