//! Q5_1: 24 bytes per 32 weights: f16 `d`, f16 `m`, then Q5_0's high bits and nibbles;
//! `w = d·u + m`.

use super::q5_0::codes_5;
use super::{Codes, Scales};
use crate::quant::blocks::{f16_at, QK};
use crate::quant::GgmlType;

pub struct Q5_1;

impl Codes for Q5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const HALVES: bool = false;
    const F16_AT: &'static [usize] = &[0, 2];

    #[inline(always)]
    fn scales(blk: &[u8], _: usize) -> Scales {
        Scales::whole(f16_at(blk, 0), f16_at(blk, 2))
    }

    #[inline]
    fn codes(blk: &[u8], _: usize, u: &mut [u8; QK]) {
        codes_5(blk, 4, u)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn codes_avx2(blk: *const u8, _: usize) -> std::arch::x86_64::__m256i {
        super::avx2::codes_5(blk.add(4))
    }

    /// The f16 scales of eight blocks, converted together.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scales8(w: *const u8, k0: usize, n: usize) -> super::avx2::Scales8 {
        use super::avx2::Scales8;
        let a = crate::quant::simd::f16x8(w.add(k0 * 24), 24, n);
        let b = crate::quant::simd::f16x8(w.add(k0 * 24 + 2), 24, n);
        Scales8 {
            a: [a, a],
            b: [b, b],
        }
    }
}

impl Q5_1 {
    /// `x` (whole blocks) with each block's scale and offset chosen by least squares
    /// weighted by `w`.
    pub fn encode_weighted(x: &[f32], w: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(x.len() / QK * 24);
        for (blk, wb) in x.chunks_exact(QK).zip(w.chunks_exact(QK)) {
            let (d, m) = crate::quant::fit::fit_affine(blk, wb, 31, false);
            let (d, m) = (half::f16::from_f32(d), half::f16::from_f32(m));
            let id = match d.to_f32() {
                0.0 => 0.0,
                d => 1.0 / d,
            };
            out.extend_from_slice(&d.to_le_bytes());
            out.extend_from_slice(&m.to_le_bytes());
            let u: [u8; QK] = std::array::from_fn(|i| {
                ((blk[i] - m.to_f32()) * id).round().clamp(0.0, 31.0) as u8
            });
            super::q5_0::pack_5(&u, &mut out);
        }
        out
    }
}
