//! Re-encode a model's matrices in another GGML type (round to nearest; no importance
//! matrix yet). Norm vectors stay f32.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::quant::blocks::{quantize_q4_0, quantize_q4_1, quantize_q8_0};
use crate::quant::{Bytes, GgmlType, Matrix};

/// The types `quantize` writes.
pub const TARGETS: [GgmlType; 3] = [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1];

pub fn quantize_matrix(m: &Matrix, target: GgmlType) -> Result<Matrix> {
    let encode = match target {
        GgmlType::Q8_0 => quantize_q8_0,
        GgmlType::Q4_0 => quantize_q4_0,
        GgmlType::Q4_1 => quantize_q4_1,
        GgmlType::F32 => return Matrix::from_f32(m.rows, m.cols, m.to_f32()),
        other => {
            return Err(Error::UnsupportedType(format!(
                "{other} as a quantization target (use q8_0, q4_0, q4_1)"
            )))
        }
    };
    if !m.cols.is_multiple_of(32) {
        return Err(Error::InvalidInput(format!(
            "{} columns is not a multiple of the 32-element block",
            m.cols
        )));
    }
    Matrix::from_ggml(
        m.rows,
        m.cols,
        target,
        Bytes::Owned(Arc::new(encode(&m.to_f32()))),
    )
}

/// Every matrix of `model` (blocks, embedding and LM head) in `target`.
pub fn quantize_model(model: &Model, target: GgmlType) -> Result<Model> {
    let q = |m: &Matrix| quantize_matrix(m, target);
    let mut out = model.clone();
    out.tok_embd = q(&model.tok_embd)?;
    out.output = if model.tied() {
        out.tok_embd.clone()
    } else {
        q(&model.output)?
    };
    for l in out.layers.iter_mut() {
        for m in [
            &mut l.wq,
            &mut l.wk,
            &mut l.wv,
            &mut l.wo,
            &mut l.w_gate,
            &mut l.w_up,
            &mut l.w_down,
        ] {
            *m = q(m)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_of_a_matrix_stays_within_half_a_step() {
        let w: Vec<f32> = (0..64 * 3)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
            .collect();
        let m = Matrix::from_f32(3, 64, w.clone()).unwrap();
        let q = quantize_matrix(&m, GgmlType::Q8_0).unwrap();
        assert_eq!(q.dtype(), GgmlType::Q8_0);
        for (a, b) in w.iter().zip(q.to_f32()) {
            assert!((a - b).abs() <= 2.0 / 127.0 * 0.5 + 1e-3);
        }
        assert!(quantize_matrix(&m, GgmlType::Q6K).is_err());
        let odd = Matrix::from_f32(1, 33, vec![0.0; 33]).unwrap();
        assert!(quantize_matrix(&odd, GgmlType::Q8_0).is_err());
    }
}
