//! Q5_0: 22 bytes per 32 weights: f16 `d`, 32 high bits `qh` (little-endian, bit `i` for
//! element `i`), 16 bytes of low nibbles (element `j < 16` in the low nibble of byte `j`,
//! element `j + 16` in its high nibble); `w = d·(u − 16)`, `u = nibble | 16·bit`.

use super::{Codes, Scales};
use crate::quant::blocks::{f16_at, QK};
use crate::quant::GgmlType;

pub struct Q5_0;

/// The 5-bit codes of a Q5_0 or Q5_1 block whose high bits start at byte `qh`.
pub(super) fn codes_5(blk: &[u8], qh: usize, u: &mut [u8; QK]) {
    let h = u32::from_le_bytes([blk[qh], blk[qh + 1], blk[qh + 2], blk[qh + 3]]);
    let qs = &blk[qh + 4..qh + 20];
    for j in 0..16 {
        u[j] = (qs[j] & 15) | (((h >> j) & 1) as u8) << 4;
        u[j + 16] = (qs[j] >> 4) | (((h >> (j + 16)) & 1) as u8) << 4;
    }
}

impl Codes for Q5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const HALVES: bool = false;
    const F16_AT: &'static [usize] = &[0];

    #[inline(always)]
    fn scales(blk: &[u8], _: usize) -> Scales {
        let d = f16_at(blk, 0);
        Scales::whole(d, -16.0 * d)
    }

    #[inline]
    fn codes(blk: &[u8], _: usize, u: &mut [u8; QK]) {
        codes_5(blk, 2, u)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn codes_avx2(blk: *const u8, _: usize) -> std::arch::x86_64::__m256i {
        super::avx2::codes_5(blk.add(2))
    }

    /// The f16 scales of eight blocks, converted together.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scales8(w: *const u8, k0: usize, n: usize) -> super::avx2::Scales8 {
        use super::avx2::Scales8;
        use std::arch::x86_64::*;
        let d = crate::quant::simd::f16x8(w.add(k0 * 22), 22, n);
        let b = _mm256_mul_ps(d, _mm256_set1_ps(-16.0));
        Scales8 {
            a: [d, d],
            b: [b, b],
        }
    }
}

/// 32 codes (each below 32) in Q5_0/Q5_1 order: 4 bytes of high bits, 16 of nibbles.
pub(super) fn pack_5(u: &[u8; QK], out: &mut Vec<u8>) {
    let qh = (0..QK).fold(0u32, |h, i| h | ((u[i] as u32 >> 4) & 1) << i);
    out.extend_from_slice(&qh.to_le_bytes());
    out.extend((0..16).map(|j| (u[j] & 15) | (u[j + 16] & 15) << 4));
}

impl Q5_0 {
    /// `x` (whole blocks) with each block's scale chosen to minimise the squared error
    /// weighted by `w` (an importance matrix's weights), as llama.cpp's weighted Q5_0.
    pub fn encode_weighted(x: &[f32], w: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(x.len() / QK * 22);
        let mut levels = [0i8; QK];
        for (blk, wb) in x.chunks_exact(QK).zip(w.chunks_exact(QK)) {
            let d = half::f16::from_f32(crate::quant::fit::fit_symmetric(blk, wb, 16, &mut levels));
            let id = match d.to_f32() {
                0.0 => 0.0,
                d => 1.0 / d,
            };
            out.extend_from_slice(&d.to_le_bytes());
            let u: [u8; QK] = std::array::from_fn(|i| {
                ((blk[i] * id).round().clamp(-16.0, 15.0) as i32 + 16) as u8
            });
            pack_5(&u, &mut out);
        }
        out
    }
}
