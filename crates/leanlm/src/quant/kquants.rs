//! K-quants: super-blocks of 256 values whose sub-block scales are themselves quantized.
//!
//! - Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes packing eight 6-bit scales and eight 6-bit
//!   mins, 128 bytes of nibbles. Sub-block j (32 values) decodes as d·scᵢ·q − dmin·mᵢ.
//!   Values 64c..64c+32 are the low nibbles of bytes 32c..32c+32, the next 32 their high
//!   nibbles.
//! - Q6_K (210 bytes): 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed
//!   8-bit scales (one per 16 values), f16 d. x = d·scₖ·(q − 32), q in 0..64.
//!
//! Both decode to the same values as ggml's (tested against candle's decoder).

use half::f16;

use super::activation::Q8Row;
use super::blocks::{f16_at, QK};
use super::fit::{fit_affine, fit_symmetric};

pub const QK_K: usize = 256;
pub const Q4K_BYTES: usize = 144;
pub const Q6K_BYTES: usize = 210;

/// Scale and min of Q4_K sub-block `j` from the 12 packed bytes: the first four keep
/// 6 bits in bytes 0..8; the last four keep their low 4 bits in bytes 8..12 and their
/// top 2 bits in the spare top bits of bytes 0..8.
#[inline]
pub fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// All eight (scale, min) pairs of [`q4k_scale_min`] at once, as two little-endian
/// words of 8 bytes (scale `j` in byte `j`), with word operations on the 12 bytes.
#[inline]
pub fn q4k_scales_mins(s: &[u8]) -> (u64, u64) {
    let word = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let (a0, a1, a2) = (word(0), word(4), word(8));
    let six = 0x3f3f_3f3f;
    let (lo4, top2) = (0x0f0f_0f0f, 0x0303_0303);
    let sc_hi = (a2 & lo4) | (((a0 >> 6) & top2) << 4);
    let mn_hi = ((a2 >> 4) & lo4) | (((a1 >> 6) & top2) << 4);
    let join = |lo: u32, hi: u32| lo as u64 | ((hi as u64) << 32);
    (join(a0 & six, sc_hi), join(a1 & six, mn_hi))
}

fn pack_q4k_scales(sc: &[u8; 8], mn: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
        s[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
    }
    s
}

pub fn dequantize_q4_k(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out
        .chunks_exact_mut(QK_K)
        .zip(bytes.chunks_exact(Q4K_BYTES))
    {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let (scales, qs) = (&b[4..16], &b[16..]);
        for c in 0..4 {
            let (sc1, m1) = q4k_scale_min(2 * c, scales);
            let (sc2, m2) = q4k_scale_min(2 * c + 1, scales);
            let (d1, d2) = (d * sc1 as f32, d * sc2 as f32);
            let (o1, o2) = (dmin * m1 as f32, dmin * m2 as f32);
            for l in 0..32 {
                let q = qs[32 * c + l];
                o[64 * c + l] = d1 * (q & 0x0f) as f32 - o1;
                o[64 * c + 32 + l] = d2 * (q >> 4) as f32 - o2;
            }
        }
    }
}

/// The 6-bit level (0..64) of value `i` (0..256) of a Q6_K super-block.
#[inline]
pub(crate) fn q6k_level(b: &[u8], i: usize) -> u8 {
    let (half, r, l) = (i / 128, (i % 128) / 32, i % 32);
    let low = b[64 * half + 32 * (r & 1) + l];
    let low = if r < 2 { low & 0x0f } else { low >> 4 };
    let high = (b[128 + 32 * half + l] >> (2 * r)) & 3;
    low | (high << 4)
}

pub fn dequantize_q6_k(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out
        .chunks_exact_mut(QK_K)
        .zip(bytes.chunks_exact(Q6K_BYTES))
    {
        let d = f16_at(b, 208);
        for (i, v) in o.iter_mut().enumerate() {
            let sc = b[192 + i / 16] as i8 as f32;
            *v = d * sc * (q6k_level(b, i) as i32 - 32) as f32;
        }
    }
}

/// Encode `x` (a multiple of 256 values) as Q4_K; `w` weighs each value's squared error.
pub fn quantize_q4_k(x: &[f32], w: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * Q4K_BYTES);
    for (xb, wb) in x.chunks_exact(QK_K).zip(w.chunks_exact(QK_K)) {
        // Each sub-block's own best (scale, offset ≤ 0), then the scales and mins are
        // quantized to 6 bits against the super-block's largest.
        let fits: Vec<(f32, f32)> = xb
            .chunks_exact(QK)
            .zip(wb.chunks_exact(QK))
            .map(|(xs, ws)| fit_affine(xs, ws, 15, true))
            .collect();
        let max_scale = fits.iter().fold(0f32, |m, f| m.max(f.0));
        let max_min = fits.iter().fold(0f32, |m, f| m.max(-f.1));
        let d = f16::from_f32(max_scale / 63.0);
        let dmin = f16::from_f32(max_min / 63.0);
        let to6 = |v: f32, unit: f32| {
            if unit > 0.0 {
                (v / unit).round().clamp(0.0, 63.0) as u8
            } else {
                0
            }
        };
        let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
        for (j, &(s, m)) in fits.iter().enumerate() {
            sc[j] = to6(s, d.to_f32());
            mn[j] = to6(-m, dmin.to_f32());
        }
        // Levels against the scales as they will be decoded.
        let mut levels = [0u8; QK_K];
        for (j, (xs, ls)) in xb
            .chunks_exact(QK)
            .zip(levels.chunks_exact_mut(QK))
            .enumerate()
        {
            let step = d.to_f32() * sc[j] as f32;
            let offset = dmin.to_f32() * mn[j] as f32;
            for (l, &v) in ls.iter_mut().zip(xs) {
                *l = if step > 0.0 {
                    ((v + offset) / step).round().clamp(0.0, 15.0) as u8
                } else {
                    0
                };
            }
        }
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&dmin.to_le_bytes());
        out.extend_from_slice(&pack_q4k_scales(&sc, &mn));
        for c in 0..4 {
            for l in 0..32 {
                out.push(levels[64 * c + l] | (levels[64 * c + 32 + l] << 4));
            }
        }
    }
    out
}

/// Encode `x` (a multiple of 256 values) as Q6_K; `w` weighs each value's squared error.
pub fn quantize_q6_k(x: &[f32], w: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK_K * Q6K_BYTES);
    let mut q = [0i8; 16];
    for (xb, wb) in x.chunks_exact(QK_K).zip(w.chunks_exact(QK_K)) {
        let scales: Vec<f32> = xb
            .chunks_exact(16)
            .zip(wb.chunks_exact(16))
            .map(|(xs, ws)| fit_symmetric(xs, ws, 32, &mut q))
            .collect();
        let max = scales.iter().fold(0f32, |m, s| m.max(s.abs()));
        let d = f16::from_f32(max / 127.0);
        let unit = d.to_f32();
        let sc: Vec<i8> = scales
            .iter()
            .map(|&s| {
                if unit > 0.0 {
                    (s / unit).round().clamp(-127.0, 127.0) as i8
                } else {
                    0
                }
            })
            .collect();
        let mut levels = [0u8; QK_K];
        for (i, (l, &v)) in levels.iter_mut().zip(xb).enumerate() {
            let step = unit * sc[i / 16] as f32;
            let q = if step != 0.0 { (v / step).round() } else { 0.0 };
            *l = (q.clamp(-32.0, 31.0) as i32 + 32) as u8;
        }
        let mut block = [0u8; Q6K_BYTES];
        for half in 0..2 {
            for l in 0..32 {
                let at = |r: usize| levels[128 * half + 32 * r + l];
                let (q1, q2, q3, q4) = (at(0), at(1), at(2), at(3));
                block[64 * half + l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                block[64 * half + 32 + l] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                block[128 + 32 * half + l] =
                    (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        for (k, &s) in sc.iter().enumerate() {
            block[192 + k] = s as u8;
        }
        block[208..210].copy_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// Q4_K row · Q8 activations: sub-block j of super-block b meets activation block 8b + j.
pub fn dot_q4_k_ref(w: &[u8], x: Q8Row) -> f32 {
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(Q4K_BYTES).enumerate() {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        for j in 0..8 {
            let (sc, m) = q4k_scale_min(j, &blk[4..16]);
            let a = 8 * b + j;
            let (c, shift) = (j / 2, 4 * (j % 2));
            let q = &x.qs[a * QK..(a + 1) * QK];
            let isum: i32 = (0..32)
                .map(|l| ((blk[16 + 32 * c + l] >> shift) & 0x0f) as i32 * q[l] as i32)
                .sum();
            sum += d * sc as f32 * x.d[a] * isum as f32 - dmin * m as f32 * x.s[a];
        }
    }
    sum
}

/// Q6_K row · Q8 activations: each activation block of 32 spans two 16-value scales.
pub fn dot_q6_k_ref(w: &[u8], x: Q8Row) -> f32 {
    let mut sum = 0f32;
    for (b, blk) in w.chunks_exact(Q6K_BYTES).enumerate() {
        let d = f16_at(blk, 208);
        for k in 0..16 {
            let a = 8 * b + k / 2;
            let isum: i32 = (0..16)
                .map(|l| {
                    let i = 16 * k + l;
                    (q6k_level(blk, i) as i32 - 32) * x.qs[256 * b + i] as i32
                })
                .sum();
            sum += d * (blk[192 + k] as i8) as f32 * x.d[a] * isum as f32;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::activation::Q8Act;
    use crate::quant::blocks::dequantize;
    use crate::quant::dot::dot_f32_ref;
    use crate::quant::GgmlType;

    /// Test values with a heavier share of small magnitudes, like weights.
    fn data(n: usize, seed: u32) -> Vec<f32> {
        crate::quant::test_data(n, seed)
            .iter()
            .map(|v| v.powi(3))
            .collect()
    }

    /// Bytes candle encoded decode to the values candle decodes (an independent decoder).
    #[test]
    fn decoders_match_candle() {
        use candle_core::quantized::{GgmlDType, QTensor};
        use candle_core::{Device, Tensor};
        let x = data(1024, 5);
        let t = Tensor::from_vec(x, 1024, &Device::Cpu).unwrap();
        type Decode = fn(&[u8], &mut [f32]);
        let cases: [(GgmlDType, Decode); 2] = [
            (GgmlDType::Q4K, dequantize_q4_k),
            (GgmlDType::Q6K, dequantize_q6_k),
        ];
        for (cdt, ours) in cases {
            let q = QTensor::quantize(&t, cdt).unwrap();
            let want = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut got = vec![0f32; 1024];
            ours(&q.data().unwrap(), &mut got);
            assert_eq!(got, want, "{cdt:?}");
        }
    }

    /// Our encoders round-trip through candle's decoder too (the layout is ggml's), and
    /// stay close to the input: within the error of candle's own encoder, plus a margin.
    #[test]
    fn encoders_write_ggml_layout_and_are_as_accurate_as_candles() {
        use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
        use candle_core::{Device, Tensor};
        let x = data(2048, 9);
        let ones = vec![1f32; x.len()];
        let t = Tensor::from_vec(x.clone(), x.len(), &Device::Cpu).unwrap();
        type Encode = fn(&[f32], &[f32]) -> Vec<u8>;
        let cases: [(GgmlDType, Encode); 2] = [
            (GgmlDType::Q4K, quantize_q4_k),
            (GgmlDType::Q6K, quantize_q6_k),
        ];
        let sse = |y: &[f32]| -> f32 { x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum() };
        for (cdt, encode) in cases {
            let bytes = encode(&x, &ones);
            let q = qtensor_from_ggml(cdt, &bytes, vec![x.len()], &Device::Cpu).unwrap();
            let ours = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let theirs = QTensor::quantize(&t, cdt)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let (e_ours, e_theirs) = (sse(&ours), sse(&theirs));
            assert!(
                e_ours <= e_theirs * 1.05,
                "{cdt:?}: {e_ours} vs candle {e_theirs}"
            );
        }
    }

    #[test]
    fn scale_packing_round_trips() {
        let sc = [0, 63, 17, 32, 5, 48, 63, 1];
        let mn = [63, 0, 9, 33, 60, 2, 31, 63];
        let s = pack_q4k_scales(&sc, &mn);
        let (scs, mns) = q4k_scales_mins(&s);
        for j in 0..8 {
            assert_eq!(q4k_scale_min(j, &s), (sc[j], mn[j]), "j={j}");
            assert_eq!((scs >> (8 * j)) as u8, sc[j], "word scale {j}");
            assert_eq!((mns >> (8 * j)) as u8, mn[j], "word min {j}");
        }
        // Every bit pattern: the word form equals the one-at-a-time form.
        let mut seed = 7u32;
        for _ in 0..1000 {
            let s: [u8; 12] = std::array::from_fn(|_| {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                (seed >> 24) as u8
            });
            let (scs, mns) = q4k_scales_mins(&s);
            for j in 0..8 {
                let want = q4k_scale_min(j, &s);
                assert_eq!(((scs >> (8 * j)) as u8, (mns >> (8 * j)) as u8), want);
            }
        }
    }

    /// The integer dots equal dequantize-then-multiply up to the activations' 8-bit rounding.
    #[test]
    fn reference_dots_match_dequantized_products() {
        let n = 512;
        let (w, x) = (data(n, 3), data(n, 4));
        let ones = vec![1f32; n];
        let xq = Q8Act::quantize(&x);
        type Dot = fn(&[u8], Q8Row) -> f32;
        let cases: [(GgmlType, Vec<u8>, Dot); 2] = [
            (GgmlType::Q4K, quantize_q4_k(&w, &ones), dot_q4_k_ref),
            (GgmlType::Q6K, quantize_q6_k(&w, &ones), dot_q6_k_ref),
        ];
        for (dt, bytes, dot) in cases {
            let mut wd = vec![0f32; n];
            dequantize(dt, &bytes, &mut wd).unwrap();
            let exact = dot_f32_ref(&wd, &x);
            let bound: f32 = wd.iter().map(|v| v.abs()).sum::<f32>() * 0.5 / 127.0 + 1e-4;
            let got = dot(&bytes, xq.row(0, n / QK));
            assert!((got - exact).abs() <= bound, "{dt}: {got} vs {exact}");
        }
    }
}
