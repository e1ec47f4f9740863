//! Q2_K: 84 bytes per 256 weights: 16 bytes of 4-bit scales (low nibble) and minimums
//! (high nibble), one per 16 weights, 64 bytes of 2-bit codes, f16 `d`, f16 `dmin`.
//! Sub-block `s` takes bits `2·(s%4)..+2` of bytes `32·(s/4)..+32`; half `h` has scale
//! byte `2s + h`: `w = d·sc·u − dmin·mn`.

use super::{Codes, Scales};
use crate::quant::blocks::{f16_at, QK};
use crate::quant::GgmlType;

pub struct Q2K;

const QS: usize = 16;
const D: usize = 80;

impl Codes for Q2K {
    const TYPE: GgmlType = GgmlType::Q2K;
    const HALVES: bool = true;
    const F16_AT: &'static [usize] = &[D, D + 2];

    #[inline(always)]
    fn scales(blk: &[u8], s: usize) -> Scales {
        let (d, dmin) = (f16_at(blk, D), f16_at(blk, D + 2));
        let (s0, s1) = (blk[2 * s], blk[2 * s + 1]);
        Scales {
            a: [d * (s0 & 15) as f32, d * (s1 & 15) as f32],
            b: [-dmin * (s0 >> 4) as f32, -dmin * (s1 >> 4) as f32],
        }
    }

    #[inline]
    fn codes(blk: &[u8], s: usize, u: &mut [u8; QK]) {
        codes_2(&blk[QS..], s, u)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn codes_avx2(blk: *const u8, s: usize) -> std::arch::x86_64::__m256i {
        super::avx2::codes_2(blk.add(QS), s)
    }

    /// The sixteen 4-bit scales and minimums of a super-block at once.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scales8(w: *const u8, k0: usize, _: usize) -> super::avx2::Scales8 {
        use std::arch::x86_64::*;
        let blk = w.add(k0 / 8 * 84);
        let (d, dmin) = (
            crate::quant::simd::half(blk.add(D)),
            crate::quant::simd::half(blk.add(D + 2)),
        );
        let v = crate::quant::simd::half_order(_mm_loadu_si128(blk as *const __m128i));
        let m4 = _mm_set1_epi8(15);
        let (sc, mn) = (
            _mm_and_si128(v, m4),
            _mm_and_si128(_mm_srli_epi16(v, 4), m4),
        );
        let (a, b) = (
            super::avx2::widen_16::<false>(sc, d),
            super::avx2::widen_16::<false>(mn, -dmin),
        );
        super::avx2::Scales8 { a, b }
    }
}

/// The 2-bit codes of sub-block `s` of Q2_K and Q3_K: bits `2·(s%4)..+2` of bytes
/// `32·(s/4)..+32` of `qs`.
pub(super) fn codes_2(qs: &[u8], s: usize, u: &mut [u8; QK]) {
    let q = &qs[32 * (s / 4)..32 * (s / 4) + 32];
    for (u, &q) in u.iter_mut().zip(q) {
        *u = (q >> (2 * (s % 4))) & 3;
    }
}
