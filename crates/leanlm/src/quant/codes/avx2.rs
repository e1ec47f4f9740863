//! The AVX2 kernels of every [`Codes`] format, and the register-level unpacking the
//! formats share.
//!
//! Eight sub-blocks per step: each sub-block's 32 codes (`Codes::codes_avx2`) times its
//! 32 activation bytes by `maddubs` and `madd` give 8 lanes of 4 elements (lanes 0..4
//! the first half, 4..8 the second); the eight results reduce to one vector of sums per
//! sub-block, or two of sums per half for formats with a scale per half, which meets the
//! eight scales (`Codes::scales8`) and the eight activation scales in a few vector
//! operations. Offsets come from the activations' stored sums (per 32, or per 16 for
//! formats with a minimum per half), never from the row. Doing the scaling once per
//! eight sub-blocks instead of once per sub-block tripled the single-thread speed of
//! Q5_K and Q3_K here (kernel_speed in `quant::speed`). A batch of tokens runs exactly
//! the operations of one token for each of them, so that verifying drafted tokens
//! together gives the logits of decoding them one by one.

use std::arch::x86_64::*;

use super::Codes;
use crate::quant::activation::Q8Row;
use crate::quant::blocks::QK;
use crate::quant::simd::{f32x8, half_sums4, hsum, sums8, unpack_nibbles};

/// Bits `shift..` of every byte of `v`, masked with `mask` (shift + width ≤ 8).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bits_at(v: __m256i, shift: i32, mask: i8) -> __m256i {
    let shifted = _mm256_srl_epi16(v, _mm_cvtsi32_si128(shift));
    _mm256_and_si256(shifted, _mm256_set1_epi8(mask))
}

/// The 2-bit codes of sub-block `s` of Q2_K and Q3_K: bits `2·(s%4)` of the 32 bytes
/// at `qs + 32·(s/4)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn codes_2(qs: *const u8, s: usize) -> __m256i {
    let q = _mm256_loadu_si256(qs.add(32 * (s / 4)) as *const __m256i);
    bits_at(q, 2 * (s % 4) as i32, 3)
}

/// Q5_0/Q5_1 codes: `p` points at the 32 high bits, followed by the 16 bytes of nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn codes_5(p: *const u8) -> __m256i {
    let qh = u32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)]);
    // Byte i of the result takes byte i/8 of qh, then keeps bit i%8 of it.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    let high = _mm256_and_si256(set, _mm256_set1_epi8(16));
    _mm256_or_si256(unpack_nibbles(p.add(4)), high)
}

/// The scales of eight consecutive sub-blocks, as the kernels apply them. Without
/// [`Codes::HALVES`], lane `j` of `a[0]` and `b[0]` belongs to sub-block `j` (`a[1]`,
/// `b[1]` are unused); with it, `a[g]` holds sub-blocks `4g..4g + 4`, their first halves
/// in lanes 0..4 and their second halves in lanes 4..8 (the layout of [`half_sums4`]).
#[derive(Clone, Copy)]
pub struct Scales8 {
    pub a: [__m256; 2],
    pub b: [__m256; 2],
}

/// [`Codes::scales8`] from [`Codes::scales`], one sub-block at a time: sub-blocks
/// `k0..k0 + n` (n ≤ 8) of the row at `w`, zeros after them.
#[inline(always)]
pub(super) unsafe fn scales8_plain<F: Codes + ?Sized>(
    w: *const u8,
    k0: usize,
    n: usize,
) -> Scales8 {
    let bb = F::TYPE.block_bytes();
    let (mut a, mut b) = ([[0f32; 8]; 2], [[0f32; 8]; 2]);
    for j in 0..n {
        let k = k0 + j;
        let blk = std::slice::from_raw_parts(w.add(k / F::SUBS * bb), bb);
        let sc = F::scales(blk, k % F::SUBS);
        if F::HALVES {
            let (g, l) = (j / 4, j % 4);
            (a[g][l], a[g][l + 4]) = (sc.a[0], sc.a[1]);
            (b[g][l], b[g][l + 4]) = (sc.b[0], sc.b[1]);
        } else {
            (a[0][j], b[0][j]) = (sc.a[0], sc.b[0]);
        }
    }
    Scales8 {
        a: [
            _mm256_loadu_ps(a[0].as_ptr()),
            _mm256_loadu_ps(a[1].as_ptr()),
        ],
        b: [
            _mm256_loadu_ps(b[0].as_ptr()),
            _mm256_loadu_ps(b[1].as_ptr()),
        ],
    }
}

/// Bytes 0..8 and 8..16 of `v` as f32 times `by`: unsigned bytes, or signed ones with
/// `SIGNED`.
#[inline(always)]
pub(super) unsafe fn widen_16<const SIGNED: bool>(v: __m128i, by: f32) -> [__m256; 2] {
    let by = _mm256_set1_ps(by);
    let high = _mm_srli_si128(v, 8);
    // No closure: one would not inherit the caller's target features and stay a call.
    let (lo, hi) = if SIGNED {
        (_mm256_cvtepi8_epi32(v), _mm256_cvtepi8_epi32(high))
    } else {
        (_mm256_cvtepu8_epi32(v), _mm256_cvtepu8_epi32(high))
    };
    [
        _mm256_mul_ps(_mm256_cvtepi32_ps(lo), by),
        _mm256_mul_ps(_mm256_cvtepi32_ps(hi), by),
    ]
}

/// One token's activations as the kernels read them: 8- or 16-bit.
pub(super) trait Act {
    /// Σ u·x of sub-block `k` in 8 i32 lanes of four elements each.
    unsafe fn prod(&self, u: __m256i, k: usize) -> __m256i;
    /// The activation scale of each sub-block.
    fn d(&self) -> &[f32];
    /// dx·Σx of sub-blocks `k0..k0 + n`, zeros after them.
    unsafe fn sums(&self, k0: usize, n: usize) -> __m256;
    /// dx·Σx of the halves of sub-blocks `k0..k0 + n` (n ≤ 4), laid out as [`Scales8`]'s
    /// per-half vectors, zeros after them.
    unsafe fn half_sums(&self, k0: usize, n: usize) -> __m256;
}

/// The half sums of four sub-blocks (`h`: two per sub-block) in [`Scales8`]' layout.
#[inline(always)]
unsafe fn half_layout(h: &[f32], n: usize) -> __m256 {
    let v = f32x8(h, 2 * n);
    _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7))
}

impl Act for Q8Row<'_> {
    /// `maddubs` (codes are unsigned and at most 31, activations signed: a pair of
    /// products is at most 2·31·128 and never saturates), then `madd`.
    #[inline(always)]
    unsafe fn prod(&self, u: __m256i, k: usize) -> __m256i {
        let q = load(self.qs.as_ptr().add(k * QK));
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), _mm256_set1_epi16(1))
    }
    fn d(&self) -> &[f32] {
        self.d
    }
    #[inline(always)]
    unsafe fn sums(&self, k0: usize, n: usize) -> __m256 {
        f32x8(&self.s[k0..], n)
    }
    #[inline(always)]
    unsafe fn half_sums(&self, k0: usize, n: usize) -> __m256 {
        half_layout(&self.h[2 * k0..], n)
    }
}

/// 16-bit activations as two 8-bit halves, `hi.d = 256·lo.d`.
pub(super) struct Split<'a> {
    pub hi: Q8Row<'a>,
    pub lo: Q8Row<'a>,
}

impl Act for Split<'_> {
    /// Σ u·(256·hi + lo), exact in i32: a 16-bit pair of products is at most 2·31·128,
    /// and 256·(4·31·128) + 4·31·128 < 2³¹.
    #[inline(always)]
    unsafe fn prod(&self, u: __m256i, k: usize) -> __m256i {
        let h = load(self.hi.qs.as_ptr().add(k * QK));
        let l = load(self.lo.qs.as_ptr().add(k * QK));
        let h = _mm256_madd_epi16(_mm256_maddubs_epi16(u, h), _mm256_set1_epi16(256));
        let l = _mm256_madd_epi16(_mm256_maddubs_epi16(u, l), _mm256_set1_epi16(1));
        _mm256_add_epi32(h, l)
    }
    fn d(&self) -> &[f32] {
        self.lo.d
    }
    #[inline(always)]
    unsafe fn sums(&self, k0: usize, n: usize) -> __m256 {
        _mm256_add_ps(self.hi.sums(k0, n), self.lo.sums(k0, n))
    }
    #[inline(always)]
    unsafe fn half_sums(&self, k0: usize, n: usize) -> __m256 {
        _mm256_add_ps(self.hi.half_sums(k0, n), self.lo.half_sums(k0, n))
    }
}

#[inline]
unsafe fn load(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// The product of one row with `N` tokens, eight sub-blocks per step: their integer
/// sums reduce to one vector ([`sums8`]) or, for formats with a scale per half, to two
/// vectors of half sums ([`half_sums4`]), which meet the scales ([`Codes::scales8`]) and
/// the activation scales in a few vector operations. Each token gets exactly the
/// operations it gets alone, so that verifying drafted tokens together gives the logits
/// of decoding them one by one.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot<F: Codes, A: Act, const N: usize>(w: &[u8], x: [A; N]) -> [f32; N] {
    let subs = x[0].d().len();
    let mut acc = [_mm256_setzero_ps(); N];
    // Whole groups with a constant count (unrolled), then the short one.
    let whole = subs / 8 * 8;
    for k0 in (0..whole).step_by(8) {
        group::<F, A, N>(w, &x, k0, 8, &mut acc);
    }
    if whole < subs {
        group::<F, A, N>(w, &x, whole, subs - whole, &mut acc);
    }
    std::array::from_fn(|t| hsum(acc[t]))
}

/// Sub-blocks `k0..k0 + n` (n ≤ 8) of [`dot`].
#[inline(always)]
unsafe fn group<F: Codes, A: Act, const N: usize>(
    w: &[u8],
    x: &[A; N],
    k0: usize,
    n: usize,
    acc: &mut [__m256; N],
) {
    let bb = F::TYPE.block_bytes();
    let sc = F::scales8(w.as_ptr(), k0, n);
    let mut u = [_mm256_setzero_si256(); 8];
    for (j, u) in u.iter_mut().enumerate().take(n) {
        let k = k0 + j;
        *u = F::codes_avx2(w.as_ptr().add(k / F::SUBS * bb), k % F::SUBS);
    }
    for t in 0..N {
        let mut p = [_mm256_setzero_si256(); 8];
        for (j, p) in p.iter_mut().enumerate().take(n) {
            *p = x[t].prod(u[j], k0 + j);
        }
        let d = &x[t].d()[k0..];
        if F::HALVES {
            for g in 0..n.div_ceil(4) {
                let m = (n - 4 * g).min(4);
                let dx = if n == 8 {
                    _mm_loadu_ps(d.as_ptr().add(4 * g))
                } else {
                    _mm256_castps256_ps128(f32x8(&d[4 * g..], m))
                };
                let dx = _mm256_set_m128(dx, dx);
                let sums = _mm256_cvtepi32_ps(half_sums4(&p[4 * g..4 * g + 4]));
                acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(sums, sc.a[g]), dx, acc[t]);
                acc[t] = _mm256_fmadd_ps(sc.b[g], x[t].half_sums(k0 + 4 * g, m), acc[t]);
            }
        } else {
            let sums = _mm256_mul_ps(_mm256_cvtepi32_ps(sums8(&p)), sc.a[0]);
            acc[t] = _mm256_fmadd_ps(sums, f32x8(d, n), acc[t]);
            acc[t] = _mm256_fmadd_ps(sc.b[0], x[t].sums(k0, n), acc[t]);
        }
    }
}

/// The codes of sub-block `s` of `blk` as bytes (for tests).
#[cfg(test)]
pub(super) fn codes_of<F: Codes>(blk: &[u8], s: usize) -> [u8; QK] {
    let mut out = [0u8; QK];
    // SAFETY: tests call this only where AVX2 was detected; `blk` is a whole block.
    unsafe {
        _mm256_storeu_si256(
            out.as_mut_ptr() as *mut __m256i,
            F::codes_avx2(blk.as_ptr(), s),
        );
    }
    out
}
