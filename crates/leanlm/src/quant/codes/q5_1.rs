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
}
