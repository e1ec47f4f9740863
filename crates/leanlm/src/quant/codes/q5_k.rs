//! Q5_K: 176 bytes per 256 weights: f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales and
//! minimums (packed as Q4_K's), 32 bytes of high bits, 128 bytes of nibbles. Sub-block
//! `s` takes the low (`s` even) or high nibbles of bytes `32·(s/2)..+32` and bit `s` of
//! each high-bit byte: `w = d·sc[s]·u − dmin·mn[s]`.

use super::{Codes, Scales};
use crate::quant::blocks::{f16_at, QK};
use crate::quant::kquants::{q4k_scale_min, q4k_scales_mins};
use crate::quant::GgmlType;

pub struct Q5K;

const QH: usize = 16;
const QS: usize = 48;

impl Codes for Q5K {
    const TYPE: GgmlType = GgmlType::Q5K;
    const HALVES: bool = false;
    const F16_AT: &'static [usize] = &[0, 2];

    #[inline(always)]
    fn scales(blk: &[u8], s: usize) -> Scales {
        let (sc, mn) = q4k_scale_min(s, &blk[4..16]);
        Scales::whole(f16_at(blk, 0) * sc as f32, -f16_at(blk, 2) * mn as f32)
    }

    #[inline]
    fn codes(blk: &[u8], s: usize, u: &mut [u8; QK]) {
        let ql = &blk[QS + 32 * (s / 2)..QS + 32 * (s / 2) + 32];
        let qh = &blk[QH..QH + 32];
        for (l, u) in u.iter_mut().enumerate() {
            *u = ((ql[l] >> (4 * (s % 2))) & 15) | ((qh[l] >> s) & 1) << 4;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn codes_avx2(blk: *const u8, s: usize) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let ql = _mm256_loadu_si256(blk.add(QS + 32 * (s / 2)) as *const __m256i);
        let qh = _mm256_loadu_si256(blk.add(QH) as *const __m256i);
        let low = super::avx2::bits_at(ql, 4 * (s % 2) as i32, 15);
        let high = super::avx2::bits_at(qh, s as i32, 1);
        _mm256_or_si256(low, _mm256_slli_epi16(high, 4))
    }

    /// The eight 6-bit scales and minimums of a super-block at once (whole words).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scales8(w: *const u8, k0: usize, _: usize) -> super::avx2::Scales8 {
        use std::arch::x86_64::*;
        let blk = w.add(k0 / 8 * 176);
        let (sc, mn) = q4k_scales_mins(std::slice::from_raw_parts(blk.add(4), 12));
        let (d, dmin) = (
            crate::quant::simd::half(blk),
            crate::quant::simd::half(blk.add(2)),
        );
        let a = _mm256_mul_ps(_mm256_set1_ps(d), crate::quant::simd::widen_u8(sc));
        let b = _mm256_mul_ps(_mm256_set1_ps(-dmin), crate::quant::simd::widen_u8(mn));
        super::avx2::Scales8 {
            a: [a, a],
            b: [b, b],
        }
    }
}
