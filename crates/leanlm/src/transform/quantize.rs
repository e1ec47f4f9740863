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

/// The type of the token embedding and LM head for a `target`: 4-bit types keep them at
/// Q8_0, as llama.cpp keeps them above the blocks' precision (the head sees every token,
/// and a tied one is also the embedding).
pub fn embedding_type(target: GgmlType) -> GgmlType {
    match target {
        GgmlType::Q4_0 | GgmlType::Q4_1 => GgmlType::Q8_0,
        t => t,
    }
}

/// Every block matrix of `model` in `target`, the embedding and LM head in `embeddings`.
pub fn quantize_model(model: &Model, target: GgmlType, embeddings: GgmlType) -> Result<Model> {
    let mut out = map_blocks(model, &|m| quantize_matrix(m, target))?;
    out.tok_embd = quantize_matrix(&model.tok_embd, embeddings)?;
    out.output = if model.tied() {
        out.tok_embd.clone()
    } else {
        quantize_matrix(&model.output, embeddings)?
    };
    Ok(out)
}

/// `model` with `f` applied to every block matrix.
fn map_blocks(model: &Model, f: &dyn Fn(&Matrix) -> Result<Matrix>) -> Result<Model> {
    let mut out = model.clone();
    for l in out.layers.iter_mut() {
        for (_, _, m) in l.matrices_mut() {
            *m = f(m)?;
        }
    }
    Ok(out)
}

/// `model` with `f` applied to every matrix (a tied head stays tied).
pub fn map_matrices(model: &Model, f: &dyn Fn(&Matrix) -> Result<Matrix>) -> Result<Model> {
    let mut out = map_blocks(model, f)?;
    out.tok_embd = f(&model.tok_embd)?;
    out.output = if model.tied() {
        out.tok_embd.clone()
    } else {
        f(&model.output)?
    };
    Ok(out)
}

/// Storage of a transformed model's matrices when written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutType {
    F32,
    F16,
    Q8_0,
    /// Dense matrices go back to the source's block type; untouched ones keep theirs.
    Same,
}

/// The model ready to write, and the GGUF type its dense matrices are written as.
/// `source` is the block type of the model the transform started from.
pub fn for_output(model: &Model, out: OutType, source: GgmlType) -> Result<(Model, GgmlType)> {
    let dense = |m: &Matrix| Matrix::from_f32(m.rows, m.cols, m.to_f32());
    match out {
        OutType::F32 => Ok((map_matrices(model, &dense)?, GgmlType::F32)),
        OutType::F16 => Ok((map_matrices(model, &dense)?, GgmlType::F16)),
        OutType::Q8_0 => Ok((
            quantize_model(model, GgmlType::Q8_0, GgmlType::Q8_0)?,
            GgmlType::F32,
        )),
        OutType::Same => {
            let back = |m: &Matrix| match (m.dtype(), TARGETS.contains(&source)) {
                (GgmlType::F32, true) => quantize_matrix(m, source),
                _ => Ok(m.clone()),
            };
            let dense_as = match source {
                GgmlType::F16 => GgmlType::F16,
                _ => GgmlType::F32,
            };
            Ok((map_matrices(model, &back)?, dense_as))
        }
    }
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
