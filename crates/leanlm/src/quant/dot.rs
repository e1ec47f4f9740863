//! Inner products between one weight row and one activation vector.
//!
//! Each kernel has a plain reference (`*_ref`) that the SIMD version is tested against.
//! The dispatching functions pick AVX2 at run time when the CPU has it.

use super::activation::Q8Row;
use super::blocks::{f16_at, QK};
pub use super::kquants::{dot_q4_k_ref, dot_q6_k_ref};

#[cfg(target_arch = "x86_64")]
use super::simd::{has_avx2, has_avx512_sparse, has_vnni};

/// Which kernel families run on this machine (for reports).
pub fn simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        return if has_avx512_sparse() {
            "avx2, avx512 (sparse)"
        } else {
            "avx2"
        };
    }
    "scalar"
}

macro_rules! dispatch {
    (vnni: $vnni:expr, $simd:ident, $reference:ident, $($arg:expr),*) => {{
        #[cfg(target_arch = "x86_64")]
        if has_vnni() {
            // SAFETY: as below, with AVX-512 VNNI detected.
            return unsafe { $vnni($($arg),*) };
        }
        dispatch!($simd, $reference, $($arg),*)
    }};
    ($simd:ident, $reference:ident, $($arg:expr),*) => {{
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports the features the SIMD kernel was compiled for,
            // and the kernel reads only within the slices it is given.
            return unsafe { x86::$simd($($arg),*) };
        }
        $reference($($arg),*)
    }};
}

/// Q4_1 row (20-byte blocks) · Q8 activations.
pub fn dot_q4_1(w: &[u8], x: Q8Row) -> f32 {
    debug_assert_eq!(w.len(), x.d.len() * 20);
    dispatch!(dot_q4_1, dot_q4_1_ref, w, x)
}

/// Q4_0 row (18-byte blocks) · Q8 activations.
pub fn dot_q4_0(w: &[u8], x: Q8Row) -> f32 {
    debug_assert_eq!(w.len(), x.d.len() * 18);
    dispatch!(dot_q4_0, dot_q4_0_ref, w, x)
}

/// Q8_0 row (34-byte blocks) · Q8 activations.
pub fn dot_q8_0(w: &[u8], x: Q8Row) -> f32 {
    debug_assert_eq!(w.len(), x.d.len() * 34);
    dispatch!(dot_q8_0, dot_q8_0_ref, w, x)
}

/// Q4_K row (144-byte super-blocks) · Q8 activations in blocks of 32: the 16-bit path's
/// halves (8-bit decode takes blocks of 256, [`q8k`](super::q8k)).
pub fn dot_q4_k(w: &[u8], x: Q8Row) -> f32 {
    debug_assert_eq!(w.len() * 8, x.d.len() * 144);
    dispatch!(dot_q4_k, dot_q4_k_ref, w, x)
}

/// Q6_K row (210-byte super-blocks) · Q8 activations.
pub fn dot_q6_k(w: &[u8], x: Q8Row) -> f32 {
    debug_assert_eq!(w.len() * 8, x.d.len() * 210);
    dispatch!(dot_q6_k, dot_q6_k_ref, w, x)
}

/// F16 row (little-endian halves) · f32: half-precision weights meet full-precision
/// activations, as in llama.cpp's f16 path up to the activations' rounding.
pub fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), 2 * x.len());
    dispatch!(dot_f16, dot_f16_ref, w, x)
}

/// BF16 row · f32.
pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), 2 * x.len());
    dispatch!(dot_bf16, dot_bf16_ref, w, x)
}

pub fn dot_f16_ref(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(h, v)| f16_at(h, 0) * v)
        .sum()
}

pub fn dot_bf16_ref(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(h, v)| f32::from_bits((u16::from_le_bytes([h[0], h[1]]) as u32) << 16) * v)
        .sum()
}

/// One weight row against one activation vector.
pub type Dot = fn(&[u8], Q8Row) -> f32;

/// One weight row against four activation vectors: the weight block is decoded once and
/// used four times (prompt processing).
pub type Dot4 = fn(&[u8], [Q8Row; 4]) -> [f32; 4];

pub fn dot4_q4_1(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    dispatch!(dot4_q4_1, dot4_q4_1_ref, w, x)
}

pub fn dot4_q4_0(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    dispatch!(dot4_q4_0, dot4_q4_0_ref, w, x)
}

pub fn dot4_q8_0(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    dispatch!(dot4_q8_0, dot4_q8_0_ref, w, x)
}

pub fn dot4_q4_1_ref(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    x.map(|r| dot_q4_1_ref(w, r))
}

pub fn dot4_q4_0_ref(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    x.map(|r| dot_q4_0_ref(w, r))
}

pub fn dot4_q8_0_ref(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    x.map(|r| dot_q8_0_ref(w, r))
}

/// One weight row against 16-bit activations given as their two 8-bit halves
/// ([`Q8Act::quantize_split`](super::activation::Q8Act::quantize_split)): the weights are
/// decoded once and 256·(w·hi) + (w·lo) is summed in integers per block.
pub type Dot2 = fn(&[u8], Q8Row, Q8Row) -> f32;

pub fn dot2_q4_1(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
    debug_assert_eq!(w.len(), hi.d.len() * 20);
    dispatch!(vnni: x86::dot2_q4_vnni::<20>, dot2_q4_1, dot2_q4_1_ref, w, hi, lo)
}

pub fn dot2_q4_0(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
    debug_assert_eq!(w.len(), hi.d.len() * 18);
    dispatch!(vnni: x86::dot2_q4_vnni::<18>, dot2_q4_0, dot2_q4_0_ref, w, hi, lo)
}

pub fn dot2_q8_0(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
    debug_assert_eq!(w.len(), hi.d.len() * 34);
    dispatch!(vnni: x86::dot2_q8_0_vnni, dot2_q8_0, dot2_q8_0_ref, w, hi, lo)
}

/// K-quants: the two halves in two passes.
pub fn dot2_q4_k(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
    dot_q4_k(w, hi) + dot_q4_k(w, lo)
}

pub fn dot2_q6_k(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
    dot_q6_k(w, hi) + dot_q6_k(w, lo)
}

/// The references: two 8-bit products, summed.
pub fn dot2_q4_1_ref(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
    dot_q4_1_ref(w, hi) + dot_q4_1_ref(w, lo)
}

pub fn dot2_q4_0_ref(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
    dot_q4_0_ref(w, hi) + dot_q4_0_ref(w, lo)
}

pub fn dot2_q8_0_ref(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
    dot_q8_0_ref(w, hi) + dot_q8_0_ref(w, lo)
}

/// f32 · f32.
pub fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    dispatch!(dot_f32, dot_f32_ref, w, x)
}

pub fn dot_q4_1_ref(w: &[u8], x: Q8Row) -> f32 {
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(20).enumerate() {
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        let q = &x.qs[b * QK..(b + 1) * QK];
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (blk[4 + j] & 0x0f) as i32 * q[j] as i32;
            isum += (blk[4 + j] >> 4) as i32 * q[j + 16] as i32;
        }
        sum += d * x.d[b] * isum as f32 + m * x.s[b];
    }
    sum
}

pub fn dot_q4_0_ref(w: &[u8], x: Q8Row) -> f32 {
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(18).enumerate() {
        let d = f16_at(blk, 0);
        let q = &x.qs[b * QK..(b + 1) * QK];
        let mut isum = 0i32;
        for j in 0..16 {
            isum += ((blk[2 + j] & 0x0f) as i32 - 8) * q[j] as i32;
            isum += ((blk[2 + j] >> 4) as i32 - 8) * q[j + 16] as i32;
        }
        sum += d * x.d[b] * isum as f32;
    }
    sum
}

pub fn dot_q8_0_ref(w: &[u8], x: Q8Row) -> f32 {
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(34).enumerate() {
        let d = f16_at(blk, 0);
        let q = &x.qs[b * QK..(b + 1) * QK];
        let isum: i32 = (0..QK).map(|j| blk[2 + j] as i8 as i32 * q[j] as i32).sum();
        sum += d * x.d[b] * isum as f32;
    }
    sum
}

pub fn dot_f32_ref(w: &[f32], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Q8Row;
    use crate::quant::kquants::q4k_scales_mins;
    use crate::quant::simd::{
        half, half_order, half_sums4, hsum, pair_lanes, pair_scale, q6k_levels, sums8,
        unpack_nibbles, widen_u8,
    };
    use std::arch::x86_64::*;

    /// Σ u8·i8 over 32 lanes, as 8 floats.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256 {
        let p16 = _mm256_maddubs_epi16(u, s);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_1(w: &[u8], x: Q8Row) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut offset = 0f32;
        for b in 0..x.d.len() {
            let blk = w.as_ptr().add(b * 20);
            let wv = unpack_nibbles(blk.add(4));
            let xv = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32) as *const __m256i);
            let scale = _mm256_set1_ps(half(blk) * x.d[b]);
            acc = _mm256_fmadd_ps(scale, dot_u8_i8(wv, xv), acc);
            offset += half(blk.add(2)) * x.s[b];
        }
        hsum(acc) + offset
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_0(w: &[u8], x: Q8Row) -> f32 {
        // Σ (q - 8)·y = Σ q·y - 8·Σ y, and d_x·Σ y is the stored s.
        let mut acc = _mm256_setzero_ps();
        let mut offset = 0f32;
        for b in 0..x.d.len() {
            let blk = w.as_ptr().add(b * 18);
            let wv = unpack_nibbles(blk.add(2));
            let xv = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32) as *const __m256i);
            let dw = half(blk);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d[b]), dot_u8_i8(wv, xv), acc);
            offset -= 8.0 * dw * x.s[b];
        }
        hsum(acc) + offset
    }

    /// Two blocks per step through [`pair_lanes`], the layout the sparse kernels share,
    /// so that a sparse copy of the same values gives bit-identical products.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0(w: &[u8], x: Q8Row) -> f32 {
        let nb = x.d.len();
        let mut acc = _mm256_setzero_ps();
        let mut b = 0;
        while b < nb {
            let ba = w.as_ptr().add(b * 34);
            let wa = _mm256_loadu_si256(ba.add(2) as *const __m256i);
            let xa = _mm256_loadu_si256(x.qs.as_ptr().add(b * 32) as *const __m256i);
            let sa = half(ba) * x.d[b];
            // An odd last block pairs with zeros.
            let (wb, xb, sb) = if b + 1 < nb {
                let bb = ba.add(34);
                (
                    _mm256_loadu_si256(bb.add(2) as *const __m256i),
                    _mm256_loadu_si256(x.qs.as_ptr().add(b * 32 + 32) as *const __m256i),
                    half(bb) * x.d[b + 1],
                )
            } else {
                (_mm256_setzero_si256(), _mm256_setzero_si256(), 0.0)
            };
            let lanes = _mm256_cvtepi32_ps(pair_lanes(wa, xa, wb, xb));
            acc = _mm256_fmadd_ps(pair_scale(sa, sb), lanes, acc);
            b += 2;
        }
        hsum(acc)
    }

    /// Per token exactly [`dot_q4_1`]'s operations, so that a batch gives the logits that
    /// one token at a time gives (speculative verification).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_q4_1(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut offset = [0f32; 4];
        for b in 0..x[0].d.len() {
            let blk = w.as_ptr().add(b * 20);
            let wv = unpack_nibbles(blk.add(4));
            let (dw, mw) = (half(blk), half(blk.add(2)));
            for t in 0..4 {
                let xv = _mm256_loadu_si256(x[t].qs.as_ptr().add(b * 32) as *const __m256i);
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[t].d[b]), dot_u8_i8(wv, xv), acc[t]);
                offset[t] += mw * x[t].s[b];
            }
        }
        [0, 1, 2, 3].map(|t| hsum(acc[t]) + offset[t])
    }

    /// Per token exactly [`dot_q4_0`]'s operations, as [`dot4_q4_1`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_q4_0(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut offset = [0f32; 4];
        for b in 0..x[0].d.len() {
            let blk = w.as_ptr().add(b * 18);
            let wv = unpack_nibbles(blk.add(2));
            let dw = half(blk);
            for t in 0..4 {
                let xv = _mm256_loadu_si256(x[t].qs.as_ptr().add(b * 32) as *const __m256i);
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[t].d[b]), dot_u8_i8(wv, xv), acc[t]);
                offset[t] -= 8.0 * dw * x[t].s[b];
            }
        }
        [0, 1, 2, 3].map(|t| hsum(acc[t]) + offset[t])
    }

    /// Four tokens share each pair of weight blocks; per token, exactly [`dot_q8_0`]'s
    /// operations.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_q8_0(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
        let nb = x[0].d.len();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut b = 0;
        while b < nb {
            let ba = w.as_ptr().add(b * 34);
            let wa = _mm256_loadu_si256(ba.add(2) as *const __m256i);
            let da = half(ba);
            let pair = b + 1 < nb;
            let (wb, db) = if pair {
                let bb = ba.add(34);
                (_mm256_loadu_si256(bb.add(2) as *const __m256i), half(bb))
            } else {
                (_mm256_setzero_si256(), 0.0)
            };
            for t in 0..4 {
                let xa = _mm256_loadu_si256(x[t].qs.as_ptr().add(b * 32) as *const __m256i);
                let (xb, sb) = if pair {
                    (
                        _mm256_loadu_si256(x[t].qs.as_ptr().add(b * 32 + 32) as *const __m256i),
                        db * x[t].d[b + 1],
                    )
                } else {
                    (_mm256_setzero_si256(), 0.0)
                };
                let lanes = _mm256_cvtepi32_ps(pair_lanes(wa, xa, wb, xb));
                acc[t] = _mm256_fmadd_ps(pair_scale(da * x[t].d[b], sb), lanes, acc[t]);
            }
            b += 2;
        }
        [0, 1, 2, 3].map(|t| hsum(acc[t]))
    }

    /// Unsigned codes · (256·hi + lo) as 8 i32 sums of 4 lanes. Exact: a 16-bit pair of
    /// products is at most 2·255·127, and 256·(4·255·127) + 4·255·127 < 2³¹.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot16_u8(u: __m256i, hi: __m256i, lo: __m256i) -> __m256i {
        let h = _mm256_madd_epi16(_mm256_maddubs_epi16(u, hi), _mm256_set1_epi16(256));
        let l = _mm256_madd_epi16(_mm256_maddubs_epi16(u, lo), _mm256_set1_epi16(1));
        _mm256_add_epi32(h, l)
    }

    /// Q4_0 and Q4_1 (`SIZE`-byte blocks: scales, then 16 bytes of nibbles) with the two
    /// halves: the block's value is d_w·d_lo·Σu·(256·hi + lo) (d_hi = 256·d_lo
    /// exactly), and its offset m·(s_hi + s_lo), m = −8·d_w for Q4_0.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot2_q4<const SIZE: usize>(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut offset = 0f32;
        for b in 0..hi.d.len() {
            let blk = w.as_ptr().add(b * SIZE);
            let wv = unpack_nibbles(blk.add(SIZE - 16));
            let h = _mm256_loadu_si256(hi.qs.as_ptr().add(b * 32) as *const __m256i);
            let l = _mm256_loadu_si256(lo.qs.as_ptr().add(b * 32) as *const __m256i);
            let dw = half(blk);
            let lanes = _mm256_cvtepi32_ps(dot16_u8(wv, h, l));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * lo.d[b]), lanes, acc);
            let m = if SIZE == 20 {
                half(blk.add(2))
            } else {
                -8.0 * dw
            };
            offset += m * (hi.s[b] + lo.s[b]);
        }
        hsum(acc) + offset
    }

    /// [`dot2_q4`] with `vpdpbusd`: unsigned codes times signed bytes straight into 32-bit
    /// lanes, the `hi` sum shifted by 8 before `lo`'s is added on top.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot2_q4_vnni<const SIZE: usize>(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
        // Two independent accumulators, so that consecutive blocks' multiply-adds overlap.
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut offset = [0f32; 2];
        for b in 0..hi.d.len() {
            let blk = w.as_ptr().add(b * SIZE);
            let wv = unpack_nibbles(blk.add(SIZE - 16));
            let h = _mm256_loadu_si256(hi.qs.as_ptr().add(b * 32) as *const __m256i);
            let l = _mm256_loadu_si256(lo.qs.as_ptr().add(b * 32) as *const __m256i);
            let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, h);
            let p = _mm256_dpbusd_epi32(_mm256_slli_epi32(p, 8), wv, l);
            let dw = half(blk);
            let k = b & 1;
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * lo.d[b]), _mm256_cvtepi32_ps(p), acc[k]);
            let m = if SIZE == 20 {
                half(blk.add(2))
            } else {
                -8.0 * dw
            };
            offset[k] += m * (hi.s[b] + lo.s[b]);
        }
        hsum(_mm256_add_ps(acc[0], acc[1])) + (offset[0] + offset[1])
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot2_q4_1(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
        dot2_q4::<20>(w, hi, lo)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot2_q4_0(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
        dot2_q4::<18>(w, hi, lo)
    }

    /// Signed weights: the sign moves onto both halves, as in [`dot_i8`]; two blocks per
    /// step as [`dot_q8_0`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot2_q8_0(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
        dot2_q8_0_by(w, hi, lo, |w, h, l| {
            let u = _mm256_sign_epi8(w, w);
            dot16_u8(u, _mm256_sign_epi8(h, w), _mm256_sign_epi8(l, w))
        })
    }

    /// [`dot2_q8_0`] with `vpdpbusd` (see [`dot2_q4_vnni`]).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn dot2_q8_0_vnni(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
        dot2_q8_0_by(w, hi, lo, |w, h, l| {
            let u = _mm256_sign_epi8(w, w);
            let p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, _mm256_sign_epi8(h, w));
            _mm256_dpbusd_epi32(_mm256_slli_epi32(p, 8), u, _mm256_sign_epi8(l, w))
        })
    }

    /// Two Q8_0 blocks per step; `lanes(w, hi, lo)` gives a block's 8 integer sums of
    /// 256·(w·hi) + (w·lo), four columns each.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot2_q8_0_by(
        w: &[u8],
        hi: Q8Row,
        lo: Q8Row,
        lanes: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
    ) -> f32 {
        let nb = hi.d.len();
        let load = |p: *const i8| _mm256_loadu_si256(p as *const __m256i);
        // Pairs of blocks alternate between two accumulators, so that consecutive
        // multiply-adds overlap.
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut b = 0;
        while b < nb {
            let ba = w.as_ptr().add(b * 34);
            let (h, l) = (hi.qs.as_ptr().add(b * 32), lo.qs.as_ptr().add(b * 32));
            let a = lanes(load(ba.add(2) as *const i8), load(h), load(l));
            let sa = half(ba) * lo.d[b];
            // An odd last block pairs with zeros.
            let (pb, sb) = if b + 1 < nb {
                let bb = ba.add(34);
                let p = lanes(
                    load(bb.add(2) as *const i8),
                    load(h.add(32)),
                    load(l.add(32)),
                );
                (p, half(bb) * lo.d[b + 1])
            } else {
                (_mm256_setzero_si256(), 0.0)
            };
            let lanes = _mm256_cvtepi32_ps(_mm256_hadd_epi32(a, pb));
            let k = (b / 2) & 1;
            acc[k] = _mm256_fmadd_ps(pair_scale(sa, sb), lanes, acc[k]);
            b += 2;
        }
        hsum(_mm256_add_ps(acc[0], acc[1]))
    }

    /// Per super-block: the eight sub-blocks' integer sums reduce to one vector
    /// ([`sums8`]), which meets the eight scales, the eight activation scales and the
    /// eight minimums (times the activations' stored sums) in four vector operations.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_k(w: &[u8], x: Q8Row) -> f32 {
        let m4 = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut offset = _mm256_setzero_ps();
        for b in 0..x.d.len() / 8 {
            let blk = w.as_ptr().add(b * 144);
            let (d, dmin) = (half(blk), half(blk.add(2)));
            let (sc, mn) = q4k_scales_mins(std::slice::from_raw_parts(blk.add(4), 12));
            let xq = x.qs.as_ptr().add(b * 256);
            let mut p = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                let q = _mm256_loadu_si256(blk.add(16 + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                let x0 = _mm256_loadu_si256(xq.add(64 * c) as *const __m256i);
                let x1 = _mm256_loadu_si256(xq.add(64 * c + 32) as *const __m256i);
                p[2 * c] = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), ones);
                p[2 * c + 1] = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), ones);
            }
            let sums = _mm256_mul_ps(_mm256_cvtepi32_ps(sums8(&p)), widen_u8(sc));
            let dx = _mm256_mul_ps(_mm256_loadu_ps(x.d.as_ptr().add(8 * b)), _mm256_set1_ps(d));
            acc = _mm256_fmadd_ps(sums, dx, acc);
            let mins = _mm256_mul_ps(widen_u8(mn), _mm256_loadu_ps(x.s.as_ptr().add(8 * b)));
            offset = _mm256_fmadd_ps(mins, _mm256_set1_ps(dmin), offset);
        }
        hsum(acc) - hsum(offset)
    }

    /// Per super-block, two groups of four activation blocks: each block's products by
    /// 16 values ([`half_sums4`]) meet the 16-value scales as one vector, then the four
    /// blocks' activation scales.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q6_k(w: &[u8], x: Q8Row) -> f32 {
        let bias = _mm256_set1_epi8(32);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for b in 0..x.d.len() / 8 {
            let blk = w.as_ptr().add(b * 210);
            let d = _mm256_set1_ps(half(blk.add(208)));
            let scales = half_order(_mm_loadu_si128(blk.add(192) as *const __m128i));
            let mut p = [_mm256_setzero_si256(); 8];
            for (i, p) in p.iter_mut().enumerate() {
                let q = q6k_levels(blk, i);
                let wv = _mm256_sub_epi8(q, bias);
                let xv = _mm256_loadu_si256(x.qs.as_ptr().add((8 * b + i) * 32) as *const __m256i);
                let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
                *p = _mm256_madd_epi16(p16, ones);
            }
            for g in 0..2 {
                let sc = _mm256_cvtepi8_epi32(if g == 0 {
                    scales
                } else {
                    _mm_srli_si128(scales, 8)
                });
                let sums = _mm256_mul_ps(
                    _mm256_cvtepi32_ps(half_sums4(&p[4 * g..4 * g + 4])),
                    _mm256_cvtepi32_ps(sc),
                );
                let dx = _mm_loadu_ps(x.d.as_ptr().add(8 * b + 4 * g));
                let dx = _mm256_mul_ps(_mm256_set_m128(dx, dx), d);
                acc = _mm256_fmadd_ps(sums, dx, acc);
            }
        }
        hsum(acc)
    }

    /// Half-precision row · f32, 16 values a step; `BF16` picks bfloat16 over IEEE f16.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_half<const BF16: bool>(w: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let widen = |p: *const u8| {
            let h = _mm_loadu_si128(p as *const __m128i);
            if BF16 {
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
            } else {
                _mm256_cvtph_ps(h)
            }
        };
        let mut a = [_mm256_setzero_ps(); 2];
        let mut i = 0;
        while i + 16 <= n {
            for (k, acc) in a.iter_mut().enumerate() {
                let o = i + 8 * k;
                *acc = _mm256_fmadd_ps(widen(pw.add(2 * o)), _mm256_loadu_ps(px.add(o)), *acc);
            }
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(a[0], a[1]));
        while i < n {
            let bits = u16::from_le_bytes([*pw.add(2 * i), *pw.add(2 * i + 1)]);
            let v = if BF16 {
                f32::from_bits((bits as u32) << 16)
            } else {
                ::half::f16::from_bits(bits).to_f32()
            };
            sum += v * *px.add(i);
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
        dot_half::<false>(w, x)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
        dot_half::<true>(w, x)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
        let n = w.len();
        let (pw, px) = (w.as_ptr(), x.as_ptr());
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, acc) in a.iter_mut().enumerate() {
                let o = i + 8 * k;
                *acc =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(o)), _mm256_loadu_ps(px.add(o)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pw.add(i)), _mm256_loadu_ps(px.add(i)), a[0]);
            i += 8;
        }
        let mut sum = hsum(_mm256_add_ps(
            _mm256_add_ps(a[0], a[1]),
            _mm256_add_ps(a[2], a[3]),
        ));
        while i < n {
            sum += *pw.add(i) * *px.add(i);
            i += 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::activation::Q8Act;
    use crate::quant::blocks::{dequantize, quantize_q4_0, quantize_q4_1, quantize_q8_0};
    use crate::quant::GgmlType;

    use crate::quant::test_data as data;

    /// SIMD kernels equal the references up to float summation order, and the reference
    /// equals dequantize-then-multiply up to the 8-bit rounding of the activations.
    #[test]
    fn quantized_dots_match_reference() {
        for blocks in [1, 3, 18, 48] {
            let n = blocks * 32;
            let w = data(n, 7 + blocks as u32);
            let x = data(n, 99);
            let xq = Q8Act::quantize(&x);
            let row = xq.row(0, blocks);
            type Dot = fn(&[u8], Q8Row) -> f32;
            let cases: [(GgmlType, Vec<u8>, Dot, Dot); 3] = [
                (GgmlType::Q4_1, quantize_q4_1(&w), dot_q4_1, dot_q4_1_ref),
                (GgmlType::Q4_0, quantize_q4_0(&w), dot_q4_0, dot_q4_0_ref),
                (GgmlType::Q8_0, quantize_q8_0(&w), dot_q8_0, dot_q8_0_ref),
            ];
            for (dt, bytes, fast, reference) in cases {
                let (a, b) = (fast(&bytes, row), reference(&bytes, row));
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{dt} n={n}: {a} vs {b}"
                );
                let mut wd = vec![0f32; n];
                dequantize(dt, &bytes, &mut wd).unwrap();
                let exact = dot_f32_ref(&wd, &x);
                // 8-bit activations: each term errs by at most |w|·d_x/2, d_x = amax/127.
                let bound: f32 =
                    wd.iter().map(|v| v.abs()).sum::<f32>() * (1.0 / 127.0) * 0.5 + 1e-4;
                assert!(
                    (b - exact).abs() <= bound,
                    "{dt} n={n}: {b} vs {exact} (bound {bound})"
                );
            }
        }
    }

    /// The 16-bit kernels (two 8-bit halves, summed in integers) against their references
    /// (two 8-bit products), and the reference against dequantize-then-multiply within
    /// 16-bit rounding: 256 times tighter than the 8-bit bound above.
    #[test]
    fn sixteen_bit_dots_match_reference() {
        use crate::quant::kquants::{quantize_q4_k, quantize_q6_k};
        for blocks in [1, 3, 8, 17, 48] {
            let n = blocks * 32;
            let w = data(n, 3 + blocks as u32);
            let mut x = data(n, 41);
            x[n / 2] = 9.0; // one block with a large scale
            let (hi, lo) = Q8Act::quantize_split(&x);
            let (hi, lo) = (hi.row(0, blocks), lo.row(0, blocks));
            let ones = vec![1f32; n];
            let mut cases: Vec<(GgmlType, Vec<u8>, Dot2, Dot2)> = vec![
                (GgmlType::Q4_1, quantize_q4_1(&w), dot2_q4_1, dot2_q4_1_ref),
                (GgmlType::Q4_0, quantize_q4_0(&w), dot2_q4_0, dot2_q4_0_ref),
                (GgmlType::Q8_0, quantize_q8_0(&w), dot2_q8_0, dot2_q8_0_ref),
            ];
            if blocks % 8 == 0 {
                let k4: Dot2 = |w, h, l| dot_q4_k_ref(w, h) + dot_q4_k_ref(w, l);
                let k6: Dot2 = |w, h, l| dot_q6_k_ref(w, h) + dot_q6_k_ref(w, l);
                cases.push((GgmlType::Q4K, quantize_q4_k(&w, &ones), dot2_q4_k, k4));
                cases.push((GgmlType::Q6K, quantize_q6_k(&w, &ones), dot2_q6_k, k6));
            }
            for (dt, bytes, fast, reference) in cases {
                let (a, b) = (fast(&bytes, hi, lo), reference(&bytes, hi, lo));
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{dt} n={n}: {a} vs {b}"
                );
                let mut wd = vec![0f32; n];
                dequantize(dt, &bytes, &mut wd).unwrap();
                let exact = dot_f32_ref(&wd, &x);
                // Each term errs by at most |w|·d_x/512 (d_x/256 where a tie saturates).
                let bound = wd
                    .iter()
                    .enumerate()
                    .map(|(i, w)| w.abs() * hi.d[i / 32] / 256.0)
                    .sum::<f32>()
                    + 1e-4 * (1.0 + exact.abs());
                assert!(
                    (b - exact).abs() <= bound,
                    "{dt} n={n}: {b} vs {exact} (bound {bound})"
                );
            }
            // The AVX2 versions, which the dispatch passes over on a VNNI machine (SAFETY of
            // the calls: AVX2 is detected).
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                let avx2: [(Vec<u8>, Dot2, Dot2); 3] = [
                    (
                        quantize_q4_1(&w),
                        |w, h, l| unsafe { x86::dot2_q4_1(w, h, l) },
                        dot2_q4_1_ref,
                    ),
                    (
                        quantize_q4_0(&w),
                        |w, h, l| unsafe { x86::dot2_q4_0(w, h, l) },
                        dot2_q4_0_ref,
                    ),
                    (
                        quantize_q8_0(&w),
                        |w, h, l| unsafe { x86::dot2_q8_0(w, h, l) },
                        dot2_q8_0_ref,
                    ),
                ];
                for (bytes, fast, reference) in avx2 {
                    let (a, b) = (fast(&bytes, hi, lo), reference(&bytes, hi, lo));
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "AVX2 n={n}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// K-quant SIMD kernels against their references, over 1..3 super-blocks.
    #[test]
    fn k_quant_dots_match_reference() {
        use crate::quant::kquants::{quantize_q4_k, quantize_q6_k};
        for supers in [1, 2, 3] {
            let n = supers * 256;
            let (w, x) = (data(n, 21 + supers as u32), data(n, 5));
            let ones = vec![1f32; n];
            let row = Q8Act::quantize(&x);
            let row = row.row(0, n / 32);
            for (bytes, fast, reference) in [
                (
                    quantize_q4_k(&w, &ones),
                    dot_q4_k as Dot,
                    dot_q4_k_ref as Dot,
                ),
                (quantize_q6_k(&w, &ones), dot_q6_k, dot_q6_k_ref),
            ] {
                let (a, b) = (fast(&bytes, row), reference(&bytes, row));
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "n={n}: {a} vs {b}");
            }
        }
    }

    /// Half-precision rows on lengths that leave a scalar tail.
    #[test]
    fn half_dots_match_reference_on_odd_lengths() {
        for n in [0, 1, 15, 16, 17, 100, 577] {
            let (w, x) = (data(n, 8), data(n, 9));
            let f16s: Vec<u8> = w
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect();
            let bf16s: Vec<u8> = w
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect();
            for (bytes, fast, reference) in [
                (
                    &f16s,
                    dot_f16 as fn(&[u8], &[f32]) -> f32,
                    dot_f16_ref as fn(&[u8], &[f32]) -> f32,
                ),
                (&bf16s, dot_bf16, dot_bf16_ref),
            ] {
                let (a, b) = (fast(bytes, &x), reference(bytes, &x));
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "n={n}: {a} vs {b}");
                // and the reference is the decoded row's product
                let decoded = dot_f32_ref(&w, &x);
                assert!(
                    (b - decoded).abs() <= 0.01 * (1.0 + decoded.abs()),
                    "n={n}: {b} vs {decoded}"
                );
            }
        }
    }

    #[test]
    fn four_token_dots_match_single_dots() {
        for blocks in [1, 5, 18] {
            let n = blocks * 32;
            let w = data(n, 3);
            let acts: Vec<Q8Act> = (0..4).map(|i| Q8Act::quantize(&data(n, 10 + i))).collect();
            let rows = [0, 1, 2, 3].map(|i| acts[i].row(0, blocks));
            type Dot = fn(&[u8], Q8Row) -> f32;
            let cases: [(Vec<u8>, Dot4, Dot); 3] = [
                (quantize_q4_1(&w), dot4_q4_1, dot_q4_1_ref),
                (quantize_q4_0(&w), dot4_q4_0, dot_q4_0_ref),
                (quantize_q8_0(&w), dot4_q8_0, dot_q8_0_ref),
            ];
            for (bytes, four, one) in cases {
                let got = four(&bytes, rows);
                for t in 0..4 {
                    let want = one(&bytes, rows[t]);
                    assert!(
                        (got[t] - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "n={n} t={t}: {} vs {want}",
                        got[t]
                    );
                }
            }
            // Against the single-token kernels that run here, bit for bit: a batch
            // (speculative verification) must give the logits decoding one token gives.
            let single: [(Vec<u8>, Dot4, Dot); 3] = [
                (quantize_q4_1(&w), dot4_q4_1, dot_q4_1),
                (quantize_q4_0(&w), dot4_q4_0, dot_q4_0),
                (quantize_q8_0(&w), dot4_q8_0, dot_q8_0),
            ];
            for (bytes, four, one) in single {
                assert_eq!(four(&bytes, rows), rows.map(|r| one(&bytes, r)), "n={n}");
            }
        }
    }

    #[test]
    fn f32_dot_matches_reference_on_odd_lengths() {
        for n in [0, 1, 7, 8, 31, 33, 100, 577] {
            let (w, x) = (data(n, 1), data(n, 2));
            let (a, b) = (dot_f32(&w, &x), dot_f32_ref(&w, &x));
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "n={n}: {a} vs {b}");
        }
    }

    #[test]
    fn f32_dot_hand_checked() {
        // 1·4 + 2·5 + 3·6 = 32
        assert_eq!(dot_f32(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
    }
}
