//! The AVX2 kernels of every [`Codes`] format, and the register-level unpacking the
//! formats share.
//!
//! Per sub-block: the 32 codes (`Codes::codes_avx2`) times the 32 activation bytes by
//! `maddubs` (codes are unsigned and at most 31, activations signed: a pair of products
//! is at most 2·31·128 and never saturates) and `madd`, giving 8 lanes of 4 elements;
//! lanes 0..4 are the first half, 4..8 the second. One fused multiply-add scales them
//! by `a·dx`; the offset is `b·(dx·Σqx)`, from the stored per-32 sum or, for formats
//! with a scale per half, from the activations' lane sums. A batch of tokens runs
//! exactly the operations of one token for each of them, so that verifying drafted
//! tokens together gives the logits of decoding them one by one.

use std::arch::x86_64::*;

use super::Codes;
use crate::quant::activation::Q8Row;
use crate::quant::blocks::QK;
use crate::quant::simd::{hsum, unpack_nibbles};

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

/// Σ u·q over groups of 4 bytes, as 8 floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lanes(u: __m256i, q: __m256i) -> __m256 {
    let p16 = _mm256_maddubs_epi16(u, q);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
}

/// Two floats each repeated over one half's four lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn per_half(v: [f32; 2]) -> __m256 {
    _mm256_setr_ps(v[0], v[0], v[0], v[0], v[1], v[1], v[1], v[1])
}

#[inline]
unsafe fn load(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// 8-bit products of one row with `N` tokens.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot<F: Codes, const N: usize>(w: &[u8], x: [Q8Row; N]) -> [f32; N] {
    let ones = _mm256_set1_epi8(1);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut offset = [0f32; N];
    for (i, blk) in w.chunks_exact(F::TYPE.block_bytes()).enumerate() {
        for s in 0..F::SUBS {
            let k = i * F::SUBS + s;
            let sc = F::scales(blk, s);
            let u = F::codes_avx2(blk.as_ptr(), s);
            for t in 0..N {
                let q = load(x[t].qs.as_ptr().add(k * QK));
                let dx = x[t].d[k];
                if F::HALVES {
                    let a = per_half([sc.a[0] * dx, sc.a[1] * dx]);
                    acc[t] = _mm256_fmadd_ps(a, lanes(u, q), acc[t]);
                    let b = per_half([sc.b[0] * dx, sc.b[1] * dx]);
                    acc[t] = _mm256_fmadd_ps(b, lanes(ones, q), acc[t]);
                } else {
                    acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(sc.a[0] * dx), lanes(u, q), acc[t]);
                    offset[t] += sc.b[0] * x[t].s[k];
                }
            }
        }
    }
    std::array::from_fn(|t| hsum(acc[t]) + offset[t])
}

/// Σ u·(256·hi + lo) over groups of 4 bytes, as 8 floats. Exact in i32: a 16-bit pair
/// of products is at most 2·31·128, and 256·(4·31·128) + 4·31·128 < 2³¹.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lanes16(u: __m256i, hi: __m256i, lo: __m256i) -> __m256 {
    let h = _mm256_madd_epi16(_mm256_maddubs_epi16(u, hi), _mm256_set1_epi16(256));
    let l = _mm256_madd_epi16(_mm256_maddubs_epi16(u, lo), _mm256_set1_epi16(1));
    _mm256_cvtepi32_ps(_mm256_add_epi32(h, l))
}

/// The product with 16-bit activations (`hi.d = 256·lo.d`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot2<F: Codes>(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
    let ones = _mm256_set1_epi8(1);
    let mut acc = _mm256_setzero_ps();
    let mut offset = 0f32;
    for (i, blk) in w.chunks_exact(F::TYPE.block_bytes()).enumerate() {
        for s in 0..F::SUBS {
            let k = i * F::SUBS + s;
            let sc = F::scales(blk, s);
            let u = F::codes_avx2(blk.as_ptr(), s);
            let h = load(hi.qs.as_ptr().add(k * QK));
            let l = load(lo.qs.as_ptr().add(k * QK));
            let dx = lo.d[k];
            if F::HALVES {
                let a = per_half([sc.a[0] * dx, sc.a[1] * dx]);
                acc = _mm256_fmadd_ps(a, lanes16(u, h, l), acc);
                let b = per_half([sc.b[0] * dx, sc.b[1] * dx]);
                acc = _mm256_fmadd_ps(b, lanes16(ones, h, l), acc);
            } else {
                acc = _mm256_fmadd_ps(_mm256_set1_ps(sc.a[0] * dx), lanes16(u, h, l), acc);
                offset += sc.b[0] * (hi.s[k] + lo.s[k]);
            }
        }
    }
    hsum(acc) + offset
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
