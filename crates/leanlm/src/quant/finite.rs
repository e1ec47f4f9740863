//! Counting non-finite weights (NaN, ±infinity) without decoding a matrix.
//!
//! A NaN in a quantized matrix lives in a block's f16 scale (or minimum): the 4- to 8-bit
//! levels are integers. So only the scales are read for block types, which costs one
//! strided pass over about a tenth of the bytes and no allocation; dense matrices are
//! read in full. Run at every load, so that a corrupt file is refused before it quietly
//! turns every logit into NaN.

use rayon::prelude::*;

use super::matrix::{Matrix, Storage};
use super::GgmlType;

/// f16 bits whose exponent is all ones: infinity or NaN.
fn f16_bits_non_finite(lo: u8, hi: u8) -> bool {
    u16::from_le_bytes([lo, hi]) & 0x7c00 == 0x7c00
}

fn bf16_bits_non_finite(lo: u8, hi: u8) -> bool {
    u16::from_le_bytes([lo, hi]) & 0x7f80 == 0x7f80
}

/// Non-finite f16 values at byte offsets `at` of every `block`-byte block of `bytes`.
fn f16_scales(bytes: &[u8], block: usize, at: &[usize]) -> usize {
    bytes
        .par_chunks(block * 4096)
        .map(|c| {
            c.chunks_exact(block)
                .map(|b| {
                    at.iter()
                        .filter(|&&i| f16_bits_non_finite(b[i], b[i + 1]))
                        .count()
                })
                .sum::<usize>()
        })
        .sum()
}

pub fn count_non_finite_f32(v: &[f32]) -> usize {
    v.par_chunks(1 << 16)
        .map(|c| c.iter().filter(|x| !x.is_finite()).count())
        .sum()
}

/// How many stored values (scales, for block types) of `m` are NaN or infinite.
pub fn count_non_finite(m: &Matrix) -> usize {
    match &m.storage {
        Storage::F32(v) => count_non_finite_f32(v),
        Storage::Sparse(s) => s.non_finite_scales(),
        Storage::Quant { dtype, bytes } => {
            let b = bytes.as_slice();
            match dtype {
                GgmlType::F16 => f16_scales(b, 2, &[0]),
                GgmlType::BF16 => b
                    .chunks_exact(2)
                    .filter(|c| bf16_bits_non_finite(c[0], c[1]))
                    .count(),
                GgmlType::Q4_0 => f16_scales(b, 18, &[0]),
                GgmlType::Q4_1 => f16_scales(b, 20, &[0, 2]),
                GgmlType::Q8_0 => f16_scales(b, 34, &[0]),
                GgmlType::Q4K => f16_scales(b, 144, &[0, 2]),
                GgmlType::Q6K => f16_scales(b, 210, &[208]),
                other => match super::codes::kernels(*other) {
                    Some(k) => f16_scales(b, other.block_bytes(), k.f16_at),
                    // Other types are decoded to f32 at load and never stored this way;
                    // were one added, decoding it answers exactly.
                    None => {
                        let mut out = vec![0f32; m.rows * m.cols];
                        match super::blocks::dequantize(*other, b, &mut out) {
                            Ok(()) => count_non_finite_f32(&out),
                            Err(_) => 0,
                        }
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{blocks, kquants, Bytes};

    fn encode(dtype: GgmlType, x: &[f32]) -> Vec<u8> {
        let w = vec![1f32; x.len()];
        match dtype {
            GgmlType::Q4_0 => blocks::quantize_q4_0(x),
            GgmlType::Q4_1 => blocks::quantize_q4_1(x),
            GgmlType::Q8_0 => blocks::quantize_q8_0(x),
            GgmlType::Q4K => kquants::quantize_q4_k(x, &w),
            GgmlType::Q6K => kquants::quantize_q6_k(x, &w),
            t if crate::quant::codes::kernels(t).is_some() => {
                crate::quant::codes::random_blocks(t, x.len() / t.block_len(), 5)
            }
            _ => x
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        }
    }

    /// Poison each byte pair in turn with an f16 NaN: the count is non-zero exactly when
    /// the decoded matrix holds a NaN (checked up to the first scale found).
    #[test]
    fn a_nan_scale_is_counted_in_every_kernel_type() {
        let x = crate::quant::test_data(4 * 256, 7);
        for dtype in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::Q4K,
            GgmlType::Q6K,
            GgmlType::F16,
        ]
        .into_iter()
        .chain(crate::quant::codes::TYPES)
        {
            let mut raw = encode(dtype, &x);
            let m = |raw: &[u8]| {
                Matrix::from_ggml(
                    4,
                    256,
                    dtype,
                    Bytes::Owned(std::sync::Arc::new(raw.to_vec())),
                )
                .unwrap()
            };
            assert_eq!(count_non_finite(&m(&raw)), 0, "{dtype}");
            let mut found = false;
            for i in 0..raw.len() - 1 {
                let keep = (raw[i], raw[i + 1]);
                (raw[i], raw[i + 1]) = (0x00, 0x7e);
                let poisoned = m(&raw);
                let counted = count_non_finite(&poisoned) > 0;
                let decoded_nan = poisoned.to_f32().iter().any(|v| v.is_nan());
                assert_eq!(counted, decoded_nan, "{dtype}: bytes {i}, {}", i + 1);
                (raw[i], raw[i + 1]) = keep;
                if counted {
                    found = true;
                    break;
                }
            }
            assert!(found, "{dtype}: no poisoned scale was seen");
        }
    }

    #[test]
    fn dense_values_are_counted() {
        let m = Matrix::from_f32(1, 4, vec![1.0, f32::NAN, f32::INFINITY, -0.0]).unwrap();
        assert_eq!(count_non_finite(&m), 2);
    }
}
