//! GGML block formats: decode any type to f32, encode f32 into the types we write.
//!
//! Layouts (32 elements per block):
//! - Q4_0: f16 d, 16 bytes of nibbles; x = (q - 8)·d. Element j < 16 is the low nibble
//!   of byte j, element j + 16 its high nibble.
//! - Q4_1: f16 d, f16 m, 16 bytes of nibbles; x = q·d + m.
//! - Q8_0: f16 d, 32 signed bytes; x = q·d.
//!
//! Q4_K and Q6_K live in `kquants`, Q5_0, Q5_1, Q5_K, Q3_K and Q2_K in `codes`; the
//! rest (Q8_1, Q8_K, which llama.cpp does not write as weights) are decoded through
//! candle's implementation, which also serves the tests as an independent reference.

use half::{bf16, f16};

use super::GgmlType;
use crate::error::{Error, Result};

pub const QK: usize = 32;

/// The little-endian f16 at byte `i` of `b`, as f32 (exact). Written out rather than
/// through `half`, whose conversion is a call behind a run-time CPU check: this one
/// inlines into the kernels' loops without forcing their registers to the stack.
#[inline(always)]
pub fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// IEEE half to single precision, exact for every value (subnormals, infinities, NaN).
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        // Zero and subnormals: man·2⁻²⁴, exact in f32.
        0 => (man as f32 * (1.0 / 16_777_216.0)).to_bits(),
        31 => 0x7f80_0000 | (man << 13),
        _ => ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(sign | bits)
}

/// Decode `bytes` (a whole number of blocks of `dtype`) into `out`.
pub fn dequantize(dtype: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let expect = dtype.row_bytes(out.len());
    if expect != Some(bytes.len()) {
        return Err(Error::InvalidInput(format!(
            "{} bytes cannot hold {} values of {dtype}",
            bytes.len(),
            out.len()
        )));
    }
    match dtype {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::I8 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = b as i8 as f32;
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(bytes.chunks_exact(18)) {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    o[j] = ((b[2 + j] & 0x0f) as f32 - 8.0) * d;
                    o[j + 16] = ((b[2 + j] >> 4) as f32 - 8.0) * d;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(bytes.chunks_exact(20)) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                for j in 0..16 {
                    o[j] = (b[4 + j] & 0x0f) as f32 * d + m;
                    o[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(bytes.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for j in 0..QK {
                    o[j] = b[2 + j] as i8 as f32 * d;
                }
            }
        }
        GgmlType::Q4K => super::kquants::dequantize_q4_k(bytes, out),
        GgmlType::Q6K => super::kquants::dequantize_q6_k(bytes, out),
        other => match super::codes::kernels(other) {
            Some(k) => (k.decode)(bytes, out),
            None => dequantize_with_candle(other, bytes, out)?,
        },
    }
    Ok(())
}

pub(crate) fn dequantize_with_candle(dtype: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
    let cdt = match dtype {
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_1 => GgmlDType::Q8_1,
        GgmlType::Q2K => GgmlDType::Q2K,
        GgmlType::Q3K => GgmlDType::Q3K,
        GgmlType::Q5K => GgmlDType::Q5K,
        GgmlType::Q8K => GgmlDType::Q8K,
        other => return Err(Error::UnsupportedType(other.to_string())),
    };
    let q = qtensor_from_ggml(cdt, bytes, vec![out.len()], &candle_core::Device::Cpu)?;
    let v = q.dequantize(&candle_core::Device::Cpu)?.to_vec1::<f32>()?;
    out.copy_from_slice(&v);
    Ok(())
}

/// Encode `x` (whole blocks) as `dtype` with candle's quantizers (ports of llama.cpp's
/// reference ones), for the types without an encoder of our own: Q5_0, Q5_1, Q2_K, Q3_K,
/// Q5_K. `importance` (one weight per element of the row) weighs the rounding error of
/// the K-quants; Q5_0 and Q5_1 are encoded unweighted.
pub fn quantize_with_candle(
    dtype: GgmlType,
    x: &[f32],
    importance: Option<&[f32]>,
) -> Result<Vec<u8>> {
    use candle_core::quantized::{GgmlDType, QTensor};
    let cdt = match dtype {
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q2K => GgmlDType::Q2K,
        GgmlType::Q3K => GgmlDType::Q3K,
        GgmlType::Q5K => GgmlDType::Q5K,
        other => return Err(Error::UnsupportedType(other.to_string())),
    };
    let t = candle_core::Tensor::from_slice(x, (1, x.len()), &candle_core::Device::Cpu)?;
    let q = match importance {
        Some(w) if matches!(dtype, GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q5K) => {
            QTensor::quantize_imatrix(&t, w, cdt)?
        }
        _ => QTensor::quantize(&t, cdt)?,
    };
    Ok(q.data()?.into_owned())
}

/// Encode `x` (length a multiple of 32) as Q8_0.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK * 34);
    for blk in x.chunks_exact(QK) {
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(blk.iter().map(|v| (v * id).round() as i8 as u8));
    }
    out
}

/// Encode `x` as Q4_0: d = max / -8 where max is the value of largest magnitude, as ggml does.
pub fn quantize_q4_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK * 18);
    for blk in x.chunks_exact(QK) {
        let max = blk
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
        for j in 0..16 {
            out.push(q(blk[j]) | (q(blk[j + 16]) << 4));
        }
    }
    out
}

/// Encode `x` as Q4_1 (min and scale per block).
pub fn quantize_q4_1(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK * 20);
    for blk in x.chunks_exact(QK) {
        let min = blk.iter().fold(f32::INFINITY, |m, &v| m.min(v));
        let max = blk.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
        let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
        for j in 0..16 {
            out.push(q(blk[j]) | (q(blk[j + 16]) << 4));
        }
    }
    out
}

/// Q4_0 with the scale chosen by weighted least squares (`w` weighs each value's error).
pub fn quantize_q4_0_weighted(x: &[f32], w: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK * 18);
    let mut levels = [0i8; QK];
    for (blk, wb) in x.chunks_exact(QK).zip(w.chunks_exact(QK)) {
        let d = f16::from_f32(super::fit::fit_symmetric(blk, wb, 8, &mut levels));
        let id = if d.to_f32() != 0.0 {
            1.0 / d.to_f32()
        } else {
            0.0
        };
        out.extend_from_slice(&d.to_le_bytes());
        let q = |v: f32| ((v * id).round().clamp(-8.0, 7.0) as i32 + 8) as u8;
        for j in 0..16 {
            out.push(q(blk[j]) | (q(blk[j + 16]) << 4));
        }
    }
    out
}

/// Q4_1 with scale and offset chosen by weighted least squares.
pub fn quantize_q4_1_weighted(x: &[f32], w: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK * 20);
    for (blk, wb) in x.chunks_exact(QK).zip(w.chunks_exact(QK)) {
        let (d, m) = super::fit::fit_affine(blk, wb, 15, false);
        let (d, m) = (f16::from_f32(d), f16::from_f32(m));
        let id = if d.to_f32() != 0.0 {
            1.0 / d.to_f32()
        } else {
            0.0
        };
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&m.to_le_bytes());
        let q = |v: f32| ((v - m.to_f32()) * id).round().clamp(0.0, 15.0) as u8;
        for j in 0..16 {
            out.push(q(blk[j]) | (q(blk[j + 16]) << 4));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn f16_conversion_is_exact_for_every_value() {
        for h in 0..=u16::MAX {
            let (ours, theirs) = (super::f16_to_f32(h), half::f16::from_bits(h).to_f32());
            assert!(
                ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()),
                "{h:#06x}: {ours} vs {theirs}"
            );
        }
    }

    use super::*;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect()
    }

    /// Our decoders against candle's for the types both implement.
    #[test]
    fn dequantize_matches_candle() {
        let x = ramp(64);
        for (dt, bytes) in [
            (GgmlType::Q4_0, quantize_q4_0(&x)),
            (GgmlType::Q4_1, quantize_q4_1(&x)),
            (GgmlType::Q8_0, quantize_q8_0(&x)),
        ] {
            let mut ours = vec![0f32; 64];
            dequantize(dt, &bytes, &mut ours).unwrap();
            use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
            let cdt = match dt {
                GgmlType::Q4_0 => GgmlDType::Q4_0,
                GgmlType::Q4_1 => GgmlDType::Q4_1,
                _ => GgmlDType::Q8_0,
            };
            let q = qtensor_from_ggml(cdt, &bytes, vec![64], &candle_core::Device::Cpu).unwrap();
            let theirs = q
                .dequantize(&candle_core::Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(ours, theirs, "{dt}");
        }
    }

    /// Round trip error is bounded by half a quantization step, except at Q4_0's short
    /// end: its levels run from −8d to 7d, so a value of the sign opposite to the block's
    /// largest is clamped at 7 steps and may be off by one whole step.
    #[test]
    fn quantize_round_trip_within_half_step() {
        let x = ramp(96);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let (min, max) = x
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        for (dt, bytes, bound) in [
            (GgmlType::Q8_0, quantize_q8_0(&x), 0.5 * amax / 127.0),
            (GgmlType::Q4_1, quantize_q4_1(&x), 0.5 * (max - min) / 15.0),
            (GgmlType::Q4_0, quantize_q4_0(&x), amax / 8.0),
        ] {
            let mut y = vec![0f32; x.len()];
            dequantize(dt, &bytes, &mut y).unwrap();
            for (a, b) in x.iter().zip(&y) {
                // plus f16 rounding of the scale (2^-11 relative) over up to 15 steps
                assert!((a - b).abs() <= bound + amax * 0.01, "{dt}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn hand_checked_q4_1_block() {
        // d = 0.5, m = -1: nibble q decodes to q/2 - 1.
        let mut b = Vec::new();
        b.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b.push(0x21); // element 0 = 1 -> -0.5, element 16 = 2 -> 0.0
        b.extend_from_slice(&[0u8; 15]);
        let mut out = vec![0f32; 32];
        dequantize(GgmlType::Q4_1, &b, &mut out).unwrap();
        assert_eq!(out[0], -0.5);
        assert_eq!(out[16], 0.0);
        assert_eq!(out[1], -1.0);
    }

    /// Types we do not decode ourselves go through candle's decoder.
    #[test]
    fn k_quants_decode_through_candle() {
        use candle_core::quantized::{GgmlDType, QTensor};
        use candle_core::{Device, Tensor};
        let x = ramp(512);
        let t = Tensor::from_vec(x, 512, &Device::Cpu).unwrap();
        for (cdt, dt) in [
            (GgmlDType::Q4K, GgmlType::Q4K),
            (GgmlDType::Q5K, GgmlType::Q5K),
            (GgmlDType::Q6K, GgmlType::Q6K),
        ] {
            let q = QTensor::quantize(&t, cdt).unwrap();
            let bytes = q.data().unwrap();
            let want = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut got = vec![0f32; 512];
            dequantize(dt, &bytes, &mut got).unwrap();
            assert_eq!(got, want, "{dt}");
        }
    }

    #[test]
    fn wrong_length_is_an_error() {
        let mut out = vec![0f32; 32];
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 33], &mut out).is_err());
    }
}
