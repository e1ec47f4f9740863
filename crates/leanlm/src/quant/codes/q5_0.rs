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
}
