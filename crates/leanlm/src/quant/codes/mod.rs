//! Block formats computed as unsigned codes with scales: Q5_0, Q5_1, Q5_K, Q3_K, Q2_K.
//!
//! Every one of these formats can be read, 32 weights at a time (a *sub-block*), as
//! unsigned codes `u` (at most 5 bits) and two pairs of scales, one per half of 16:
//! `w = a[h]·u + b[h]` for the weights of half `h`. Q5_0: `a = d, b = −16·d`; Q5_1:
//! `a = d, b = m`; Q5_K: one 6-bit scale and minimum per sub-block; Q3_K and Q2_K: one
//! scale (and, for Q2_K, minimum) per half. A format module says only that: where its
//! bytes are, how a sub-block's codes and scales are read (plainly, and in AVX2
//! registers), which f16 values are its scales. The kernels are written once, here and in
//! [`avx2`], for every format:
//!
//! ```text
//! w·x = Σ_sub Σ_h a[h]·dx·Σ(u·qx) + b[h]·dx·Σ qx
//! ```
//!
//! with 8-bit activations `x = dx·qx` per sub-block (dx·Σqx is stored with them per 32
//! and per 16 values), and with 16-bit activations as two 8-bit halves.
//! Each kernel has a plain reference, tested against it and, through decoding, against
//! candle's independent dequantizers.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod q2_k;
mod q3_k;
mod q5_0;
mod q5_1;
mod q5_k;

pub use q2_k::Q2K;
pub use q3_k::Q3K;
pub use q5_0::Q5_0;
pub use q5_1::Q5_1;
pub use q5_k::Q5K;

use super::activation::Q8Row;
use super::blocks::QK;
use super::dot::{Dot, Dot2, Dot4};
use super::GgmlType;

/// `w = a[h]·u + b[h]` for the weights of half `h` (elements `16h..16h+16`) of a
/// sub-block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    pub a: [f32; 2],
    pub b: [f32; 2],
}

impl Scales {
    /// One scale and offset for the whole sub-block.
    pub fn whole(a: f32, b: f32) -> Self {
        Self {
            a: [a, a],
            b: [b, b],
        }
    }
}

/// A block format read as codes and scales (see the module doc).
pub trait Codes: Sync + 'static {
    const TYPE: GgmlType;
    /// 32-weight sub-blocks per block of [`Codes::TYPE`].
    const SUBS: usize = Self::TYPE.block_len() / QK;
    /// Whether the two halves of a sub-block have scales of their own; if not, the
    /// kernels use the activations' stored per-32 sums for the offset.
    const HALVES: bool;
    /// Byte offsets of the f16 scales (and minimums) within a block, for the finiteness
    /// check at load.
    const F16_AT: &'static [usize];

    /// Scales of sub-block `s` of `blk` (one block's bytes).
    fn scales(blk: &[u8], s: usize) -> Scales;
    /// Codes of sub-block `s` of `blk`, in element order.
    fn codes(blk: &[u8], s: usize, u: &mut [u8; QK]);
    /// [`Codes::codes`] in a register: byte `i` is the code of element `i`.
    ///
    /// # Safety
    /// AVX2 must be available and `blk` must point at a whole block.
    #[cfg(target_arch = "x86_64")]
    unsafe fn codes_avx2(blk: *const u8, s: usize) -> std::arch::x86_64::__m256i;

    /// The scales of sub-blocks `k0..k0 + n` (n ≤ 8, k0 a multiple of 8) of the row at
    /// `w`, zeros after them, laid out as [`avx2::Scales8`] says. By default from
    /// [`Codes::scales`]; a format overrides it where vector code is faster.
    ///
    /// # Safety
    /// AVX2 must be available (the caller is compiled for it) and `w` must hold the
    /// sub-blocks.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scales8(w: *const u8, k0: usize, n: usize) -> avx2::Scales8 {
        avx2::scales8_plain::<Self>(w, k0, n)
    }
}

/// Decode whole blocks of `F` (`bytes`) into `out`.
pub fn decode<F: Codes>(bytes: &[u8], out: &mut [f32]) {
    let bb = F::TYPE.block_bytes();
    let mut u = [0u8; QK];
    for (blk, o) in bytes
        .chunks_exact(bb)
        .zip(out.chunks_exact_mut(F::TYPE.block_len()))
    {
        for (s, o) in o.chunks_exact_mut(QK).enumerate() {
            let sc = F::scales(blk, s);
            F::codes(blk, s, &mut u);
            for (i, (o, &u)) in o.iter_mut().zip(&u).enumerate() {
                *o = sc.a[i / 16] * u as f32 + sc.b[i / 16];
            }
        }
    }
}

/// The plain reference of the 8-bit product: integer sums per half, scaled in f32.
pub fn dot_ref<F: Codes>(w: &[u8], x: Q8Row) -> f32 {
    let act = |k: usize, j: usize| x.qs[k * QK + j] as i32;
    products_ref::<F>(w, act, |k| x.d[k], |k| x.s[k])
}

/// The plain reference of the 16-bit product (`hi` and `lo` halves, `hi.d = 256·lo.d`).
pub fn dot2_ref<F: Codes>(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
    let act = |k: usize, j: usize| 256 * hi.qs[k * QK + j] as i32 + lo.qs[k * QK + j] as i32;
    products_ref::<F>(w, act, |k| lo.d[k], |k| hi.s[k] + lo.s[k])
}

/// `Σ w·x` with the activations of sub-block `k` as integers `act(k, j)` of scale
/// `dx(k)`, and `dx·Σ act` of the whole sub-block as `sum(k)` (for formats whose halves
/// share their offset).
fn products_ref<F: Codes>(
    w: &[u8],
    act: impl Fn(usize, usize) -> i32,
    dx: impl Fn(usize) -> f32,
    sum: impl Fn(usize) -> f32,
) -> f32 {
    let mut total = 0f32;
    let mut u = [0u8; QK];
    for (i, blk) in w.chunks_exact(F::TYPE.block_bytes()).enumerate() {
        for s in 0..F::SUBS {
            let k = i * F::SUBS + s;
            let sc = F::scales(blk, s);
            F::codes(blk, s, &mut u);
            for h in 0..2 {
                let r = 16 * h..16 * h + 16;
                let ux: i32 = r.clone().map(|j| u[j] as i32 * act(k, j)).sum();
                total += sc.a[h] * dx(k) * ux as f32;
                if F::HALVES {
                    let xs: i32 = r.map(|j| act(k, j)).sum();
                    total += sc.b[h] * dx(k) * xs as f32;
                }
            }
            if !F::HALVES {
                total += sc.b[0] * sum(k);
            }
        }
    }
    total
}

fn dot4_ref<F: Codes>(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    x.map(|x| dot_ref::<F>(w, x))
}

fn dot<F: Codes>(w: &[u8], x: Q8Row) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx2() {
        // SAFETY: AVX2 was detected; `w` holds whole blocks, `x` one sub-block of
        // activations per sub-block of `w` (checked by the matrix at construction).
        return unsafe { avx2::dot::<F, _, 1>(w, [x]) }[0];
    }
    dot_ref::<F>(w, x)
}

fn dot4<F: Codes>(w: &[u8], x: [Q8Row; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx2() {
        // SAFETY: as in `dot`.
        return unsafe { avx2::dot::<F, _, 4>(w, x) };
    }
    dot4_ref::<F>(w, x)
}

fn dot2<F: Codes>(w: &[u8], hi: Q8Row, lo: Q8Row) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx2() {
        // SAFETY: as in `dot`.
        return unsafe { avx2::dot::<F, _, 1>(w, [avx2::Split { hi, lo }]) }[0];
    }
    dot2_ref::<F>(w, hi, lo)
}

/// The kernels of one format, as the matrix product dispatches them.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub dot: Dot,
    pub dot4: Dot4,
    pub dot2: Dot2,
    pub dot_ref: Dot,
    pub dot2_ref: Dot2,
    pub decode: fn(&[u8], &mut [f32]),
    /// Scales of one sub-block (the integer prompt product reads `a[0]`, `b[0]` of
    /// formats without [`Codes::HALVES`]).
    pub scales: fn(&[u8], usize) -> Scales,
    pub codes: fn(&[u8], usize, &mut [u8; QK]),
    pub halves: bool,
    pub f16_at: &'static [usize],
}

fn kernels_of<F: Codes>() -> Kernels {
    Kernels {
        dot: dot::<F>,
        dot4: dot4::<F>,
        dot2: dot2::<F>,
        dot_ref: dot_ref::<F>,
        dot2_ref: dot2_ref::<F>,
        decode: decode::<F>,
        scales: F::scales,
        codes: F::codes,
        halves: F::HALVES,
        f16_at: F::F16_AT,
    }
}

/// The formats of this module.
pub const TYPES: [GgmlType; 5] = [
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q5K,
    GgmlType::Q3K,
    GgmlType::Q2K,
];

/// The kernels of `dtype`, if it is one of [`TYPES`].
pub fn kernels(dtype: GgmlType) -> Option<Kernels> {
    Some(match dtype {
        GgmlType::Q5_0 => kernels_of::<Q5_0>(),
        GgmlType::Q5_1 => kernels_of::<Q5_1>(),
        GgmlType::Q5K => kernels_of::<Q5K>(),
        GgmlType::Q3K => kernels_of::<Q3K>(),
        GgmlType::Q2K => kernels_of::<Q2K>(),
        _ => return None,
    })
}

/// `blocks` blocks of `dtype` (one of [`TYPES`]) of random bytes, every f16 scale a
/// finite value below 0.01 in magnitude: all bit patterns of codes and packed scales.
#[cfg(test)]
pub(crate) fn random_blocks(dtype: GgmlType, blocks: usize, seed: u32) -> Vec<u8> {
    let f16_at = kernels(dtype).expect("a codes type").f16_at;
    let bb = dtype.block_bytes();
    let mut s = seed;
    let mut row: Vec<u8> = (0..blocks * bb)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 24) as u8
        })
        .collect();
    let vals = super::test_data(blocks * f16_at.len(), seed ^ 7);
    for (b, blk) in row.chunks_exact_mut(bb).enumerate() {
        for (j, &at) in f16_at.iter().enumerate() {
            let v = half::f16::from_f32(vals[b * f16_at.len() + j] * 0.01);
            blk[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    row
}

#[cfg(test)]
mod tests;
