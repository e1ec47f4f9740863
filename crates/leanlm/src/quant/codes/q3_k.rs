//! Q3_K: 110 bytes per 256 weights: 32 bytes of high bits, 64 bytes of 2-bit codes, 12
//! bytes of 6-bit scales, f16 `d`. Sub-block `s` takes bits `2·(s%4)..+2` of bytes
//! `32·(s/4)..+32` and bit `s` of each high-bit byte, `u = low | 4·high`; each half has
//! its own scale `sc` (16 of them, stored minus 32): `w = d·(sc − 32)·(u − 4)`.

use super::{Codes, Scales};
use crate::quant::blocks::{f16_at, QK};
use crate::quant::GgmlType;

pub struct Q3K;

const QS: usize = 32;
const SCALES: usize = 96;
const D: usize = 108;

/// Scale `k` of 16: its low 4 bits in byte `k` (`k < 8`) or the high nibble of byte
/// `k − 8`, its high 2 bits at bit `2·(k/4)` of byte `8 + k%4`.
fn scale(s: &[u8], k: usize) -> i32 {
    let low = if k < 8 { s[k] & 15 } else { s[k - 8] >> 4 };
    let high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
    (low | high << 4) as i32 - 32
}

impl Codes for Q3K {
    const TYPE: GgmlType = GgmlType::Q3K;
    const HALVES: bool = true;
    const F16_AT: &'static [usize] = &[D];

    #[inline(always)]
    fn scales(blk: &[u8], s: usize) -> Scales {
        let d = f16_at(blk, D);
        let sc = &blk[SCALES..SCALES + 12];
        let a = [d * scale(sc, 2 * s) as f32, d * scale(sc, 2 * s + 1) as f32];
        Scales {
            a,
            b: [-4.0 * a[0], -4.0 * a[1]],
        }
    }

    #[inline]
    fn codes(blk: &[u8], s: usize, u: &mut [u8; QK]) {
        super::q2_k::codes_2(&blk[QS..], s, u);
        for (u, &h) in u.iter_mut().zip(&blk[..QK]) {
            *u |= ((h >> s) & 1) << 2;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn codes_avx2(blk: *const u8, s: usize) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        let hm = _mm256_loadu_si256(blk as *const __m256i);
        let high = super::avx2::bits_at(hm, s as i32, 1);
        _mm256_or_si256(
            super::avx2::codes_2(blk.add(QS), s),
            _mm256_slli_epi16(high, 2),
        )
    }

    /// The sixteen 6-bit scales of a super-block at once.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scales8(w: *const u8, k0: usize, _: usize) -> super::avx2::Scales8 {
        use std::arch::x86_64::*;
        let blk = w.add(k0 / 8 * 110);
        let s = blk.add(SCALES);
        let d = crate::quant::simd::half(blk.add(D));
        // Low 4 bits: scales 0..8 in the low nibbles of bytes 0..8, 8..16 in their
        // high nibbles. High 2 bits of scale 4q + r: bits 2q of byte 8 + r.
        let m4 = _mm_set1_epi8(15);
        let v = _mm_loadl_epi64(s as *const __m128i);
        let low = _mm_unpacklo_epi64(
            _mm_and_si128(v, m4),
            _mm_and_si128(_mm_srli_epi16(v, 4), m4),
        );
        let h = _mm_set1_epi32(i32::from_le_bytes([
            *s.add(8),
            *s.add(9),
            *s.add(10),
            *s.add(11),
        ]));
        let high = _mm_and_si128(
            _mm_srlv_epi32(h, _mm_setr_epi32(0, 2, 4, 6)),
            _mm_set1_epi8(3),
        );
        let sc = _mm_sub_epi8(
            _mm_or_si128(low, _mm_slli_epi16(high, 4)),
            _mm_set1_epi8(32),
        );
        let a = super::avx2::widen_16::<true>(crate::quant::simd::half_order(sc), d);
        let four = _mm256_set1_ps(-4.0);
        let b = [_mm256_mul_ps(a[0], four), _mm256_mul_ps(a[1], four)];
        super::avx2::Scales8 { a, b }
    }
}
