//! Re-encode a model's matrices in another GGML type, optionally weighting each weight's
//! rounding error by an importance matrix. Norm vectors stay f32.

use std::sync::Arc;

use rayon::prelude::*;

use crate::calibrate::Importance;
use crate::error::{Error, Result};
use crate::model::{Layer, Model};
use crate::quant::blocks::{
    quantize_q4_0, quantize_q4_0_weighted, quantize_q4_1, quantize_q4_1_weighted, quantize_q8_0,
    quantize_with_candle,
};
use crate::quant::codes;
use crate::quant::kquants::{quantize_q4_k, quantize_q6_k, QK_K};
use crate::quant::sparse::{sizes, Sparse, SparseFormat};
use crate::quant::{Bytes, GgmlType, Matrix};
use crate::transform::mix::TypePlan;

/// The types `quantize` writes.
pub const TARGETS: [GgmlType; 10] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q4K,
    GgmlType::Q6K,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q5K,
    GgmlType::Q3K,
    GgmlType::Q2K,
];

/// The type a matrix with `cols` columns gets for `target`. K-quants need rows of whole
/// 256-value super-blocks; narrower rows (SmolLM2's 576) fall back to a 32-value block
/// type of at least the same precision, as llama-quantize does (Q5_0 for Q4_K, Q5_1 for
/// Q5_K, Q8_0 for Q6_K; Q4_0 for Q3_K and Q2_K, where it picks IQ4_NL, which we do not
/// have).
pub fn type_for(target: GgmlType, cols: usize) -> GgmlType {
    match target {
        t if t.block_len() == QK_K => super::mix::fit_width(t, cols),
        t => t,
    }
}

/// `m` in `target` (or its fallback for `m`'s width). `importance`, one value per input
/// column, weighs each weight's squared rounding error; Q8_0 ignores it (its error is
/// already far below what the weights need), as llama.cpp does.
pub fn quantize_matrix(m: &Matrix, target: GgmlType, importance: Option<&[f32]>) -> Result<Matrix> {
    if target == GgmlType::F32 {
        return Matrix::from_f32(m.rows, m.cols, m.to_f32());
    }
    if target == GgmlType::F16 {
        let bytes: Vec<u8> = m
            .to_f32()
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        return Matrix::from_ggml(m.rows, m.cols, target, Bytes::Owned(Arc::new(bytes)));
    }
    if !TARGETS.contains(&target) {
        return Err(Error::UnsupportedType(format!(
            "{target} as a quantization target (use q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, q3_k or q2_k)"
        )));
    }
    if !m.cols.is_multiple_of(32) {
        return Err(Error::InvalidInput(format!(
            "{} columns is not a multiple of the 32-element block",
            m.cols
        )));
    }
    if let Some(w) = importance {
        if w.len() != m.cols {
            return Err(Error::Shape {
                what: "importance vector".into(),
                expected: vec![m.cols],
                found: vec![w.len()],
            });
        }
    }
    let target = type_for(target, m.cols);
    let ones;
    let w = match importance {
        Some(w) => w,
        None => {
            ones = vec![1f32; m.cols];
            &ones
        }
    };
    let weighted = importance.is_some();
    let encode = |row: &[f32]| -> Result<Vec<u8>> {
        Ok(match target {
            GgmlType::Q4_0 if weighted => quantize_q4_0_weighted(row, w),
            GgmlType::Q4_0 => quantize_q4_0(row),
            GgmlType::Q4_1 if weighted => quantize_q4_1_weighted(row, w),
            GgmlType::Q4_1 => quantize_q4_1(row),
            GgmlType::Q4K => quantize_q4_k(row, w),
            GgmlType::Q6K => quantize_q6_k(row, w),
            GgmlType::Q8_0 => quantize_q8_0(row),
            GgmlType::Q5_0 if weighted => codes::Q5_0::encode_weighted(row, w),
            GgmlType::Q5_1 if weighted => codes::Q5_1::encode_weighted(row, w),
            t => quantize_with_candle(t, row, weighted.then_some(w))?,
        })
    };
    let dense = m.to_f32();
    let rows: Vec<Vec<u8>> = dense
        .par_chunks(m.cols)
        .map(encode)
        .collect::<Result<_>>()?;
    Matrix::from_ggml(
        m.rows,
        m.cols,
        target,
        Bytes::Owned(Arc::new(rows.concat())),
    )
}

/// Which sparse layouts `quantize` may pick for 8-bit values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseChoice {
    /// Dense Q8_0 only.
    Off,
    /// 2:4 where every group of 4 columns allows it, else dense Q8_0. The bitmap layout
    /// is left out: on the AVX-512 CPU we measured, expanding its values costs more than
    /// the bytes it saves at any sparsity (docs/benchmarks.md).
    Auto,
    /// Also the bitmap layout, where it reads fewer bytes than dense.
    Bitmap,
}

/// `m` with 8-bit values in the allowed layout that reads the fewest bytes: dense Q8_0,
/// 2:4 or a bitmap of non-zeros. Every layout holds Q8_0's values, so the choice
/// changes speed, never results.
pub fn q8_0_or_sparse(m: &Matrix, choice: SparseChoice) -> Result<Matrix> {
    let w = m.to_f32();
    let (dense, s24, bitmap) = sizes(&w, m.rows, m.cols);
    let bitmap = (choice == SparseChoice::Bitmap).then_some(bitmap);
    let s24 = (choice != SparseChoice::Off).then_some(s24).flatten();
    let best = [
        (Some(dense), None),
        (s24, Some(SparseFormat::S24Q8)),
        (bitmap, Some(SparseFormat::BitmapQ8)),
    ]
    .into_iter()
    .filter_map(|(b, f)| b.map(|b| (b, f)))
    .min_by_key(|(b, _)| *b);
    match best {
        Some((_, Some(format))) => Ok(Matrix::from_sparse(Sparse::encode(
            format, &w, m.rows, m.cols,
        )?)),
        _ => quantize_matrix(m, GgmlType::Q8_0, None),
    }
}

/// The type of the token embedding and LM head for a `target`: 4-bit types keep them at
/// Q8_0, as llama.cpp keeps them above the blocks' precision (the head sees every token,
/// and a tied one is also the embedding).
pub fn embedding_type(target: GgmlType) -> GgmlType {
    match target {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K => GgmlType::Q8_0,
        t => t,
    }
}

/// Every block matrix of `model` in `target` (weighted by `importance` when given), the
/// embedding and LM head in `embeddings`. With a `sparse` choice (Q8_0 only), block
/// matrices with zeros may be stored without them (see [`q8_0_or_sparse`]).
pub fn quantize_model(
    model: &Model,
    target: GgmlType,
    embeddings: GgmlType,
    importance: Option<&Importance>,
    sparse: SparseChoice,
) -> Result<Model> {
    if sparse != SparseChoice::Off && target != GgmlType::Q8_0 {
        return Err(Error::InvalidInput(format!(
            "sparse storage holds 8-bit values: use q8_0, not {target}"
        )));
    }
    if sparse == SparseChoice::Off {
        return quantize_with_plan(model, &uniform_plan(model, target, embeddings), importance);
    }
    let mut out = model.clone();
    for layer in out.layers.iter_mut() {
        for (_, _, m) in layer.matrices_mut() {
            *m = q8_0_or_sparse(m, sparse)?;
        }
    }
    quantize_embeddings(model, &mut out, embeddings, embeddings)?;
    Ok(out)
}

/// Every block matrix in `target` (or its fallback for the matrix's width), the
/// embedding and head in `embeddings`.
pub fn uniform_plan(model: &Model, target: GgmlType, embeddings: GgmlType) -> TypePlan {
    TypePlan {
        blocks: model
            .layers
            .iter()
            .map(|l| {
                l.matrices()
                    .iter()
                    .map(|(_, _, m)| type_for(target, m.cols))
                    .collect()
            })
            .collect(),
        tok_embd: embeddings,
        output: embeddings,
    }
}

/// `model` with each matrix in the type `plan` gives it (see [`super::mix`]).
pub fn quantize_with_plan(
    model: &Model,
    plan: &TypePlan,
    importance: Option<&Importance>,
) -> Result<Model> {
    if plan.blocks.len() != model.layers.len() {
        return Err(Error::InvalidInput(format!(
            "a type plan for {} layers, the model has {}",
            plan.blocks.len(),
            model.layers.len()
        )));
    }
    let mut out = model.clone();
    for (l, (layer, types)) in out.layers.iter_mut().zip(&plan.blocks).enumerate() {
        let mut matrices = layer.matrices_mut();
        if matrices.len() != types.len() {
            return Err(Error::InvalidInput(format!(
                "a type plan for {} matrices in layer {l}, which has {}",
                types.len(),
                matrices.len()
            )));
        }
        for ((_, site, m), &t) in matrices.iter_mut().zip(types) {
            let w = importance.map(|imp| imp.site(l, *site));
            **m = quantize_matrix(m, t, w)?;
        }
    }
    quantize_embeddings(model, &mut out, plan.tok_embd, plan.output)?;
    Ok(out)
}

fn quantize_embeddings(
    model: &Model,
    out: &mut Model,
    embd: GgmlType,
    head: GgmlType,
) -> Result<()> {
    out.tok_embd = quantize_matrix(&model.tok_embd, embd, None)?;
    out.output = if model.tied() {
        out.tok_embd.clone()
    } else {
        quantize_matrix(&model.output, head, None)?
    };
    Ok(())
}

/// `model` with `f` applied to every matrix (a tied head stays tied).
pub fn map_matrices(model: &Model, f: &dyn Fn(&Matrix) -> Result<Matrix>) -> Result<Model> {
    let mut out = model.clone();
    for l in out.layers.iter_mut() {
        for (_, _, m) in l.matrices_mut() {
            *m = f(m)?;
        }
    }
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

/// How a derived model's matrices are stored when written: `out`, for a transform that
/// started from a model whose blocks were of type `source`.
#[derive(Debug, Clone, Copy)]
pub struct OutputFormat {
    pub out: OutType,
    pub source: GgmlType,
}

impl OutputFormat {
    /// The GGUF type of matrices that stay dense f32 after [`Self::matrix`].
    pub fn dense_as(&self) -> GgmlType {
        match (self.out, self.source) {
            (OutType::F16, _) | (OutType::Same, GgmlType::F16) => GgmlType::F16,
            _ => GgmlType::F32,
        }
    }

    /// `m` as it is written.
    pub fn matrix(&self, m: &Matrix) -> Result<Matrix> {
        match self.out {
            OutType::F32 | OutType::F16 => Matrix::from_f32(m.rows, m.cols, m.to_f32()),
            OutType::Q8_0 => quantize_matrix(m, GgmlType::Q8_0, None),
            // Dense (transformed) matrices go back to the source's block type.
            OutType::Same if m.dtype() == GgmlType::F32 && TARGETS.contains(&self.source) => {
                quantize_matrix(m, self.source, None)
            }
            OutType::Same => Ok(m.clone()),
        }
    }

    /// `layer` with every matrix as it is written.
    pub fn layer(&self, layer: &Layer) -> Result<Layer> {
        let mut out = layer.clone();
        for (_, _, m) in out.matrices_mut() {
            *m = self.matrix(m)?;
        }
        Ok(out)
    }

    /// The model ready to write, and the GGUF type its dense matrices are written as.
    pub fn model(&self, model: &Model) -> Result<(Model, GgmlType)> {
        Ok((map_matrices(model, &|m| self.matrix(m))?, self.dense_as()))
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
        let q = quantize_matrix(&m, GgmlType::Q8_0, None).unwrap();
        assert_eq!(q.dtype(), GgmlType::Q8_0);
        for (a, b) in w.iter().zip(q.to_f32()) {
            assert!((a - b).abs() <= 2.0 / 127.0 * 0.5 + 1e-3);
        }
        assert!(quantize_matrix(&m, GgmlType::Q8K, None).is_err());
        let odd = Matrix::from_f32(1, 33, vec![0.0; 33]).unwrap();
        assert!(quantize_matrix(&odd, GgmlType::Q8_0, None).is_err());
        assert!(quantize_matrix(&m, GgmlType::Q4_0, Some(&[1.0; 3])).is_err());
    }

    /// The smallest allowed layout is chosen, and every layout decodes to Q8_0's values.
    #[test]
    fn sparse_choice_follows_bytes() {
        let cols = 64;
        let dense: Vec<f32> = (0..2 * cols)
            .map(|i| (i as f32 - 60.0) / 50.0 + 0.01)
            .collect();
        let two_four: Vec<f32> = dense
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 4 < 2 { v } else { 0.0 })
            .collect();
        let mostly_zero: Vec<f32> = dense
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 8 == 0 { v } else { 0.0 })
            .collect();
        for (w, auto, bitmap) in [
            (&dense, "Q8_0", "Q8_0"),
            (&two_four, "S24_Q8", "S24_Q8"),
            (&mostly_zero, "S24_Q8", "BITMAP_Q8"),
        ] {
            let m = Matrix::from_f32(2, cols, w.clone()).unwrap();
            let off = q8_0_or_sparse(&m, SparseChoice::Off).unwrap();
            assert_eq!(off.type_name(), "Q8_0");
            let a = q8_0_or_sparse(&m, SparseChoice::Auto).unwrap();
            assert_eq!(a.type_name(), auto);
            let s = q8_0_or_sparse(&m, SparseChoice::Bitmap).unwrap();
            assert_eq!(s.type_name(), bitmap);
            assert_eq!(a.to_f32(), off.to_f32());
            let q8 = quantize_matrix(&m, GgmlType::Q8_0, None).unwrap();
            assert_eq!(s.to_f32(), q8.to_f32());
        }
    }

    #[test]
    fn k_quants_fall_back_on_rows_that_are_not_whole_super_blocks() {
        let m = Matrix::from_f32(2, 576, vec![0.5; 1152]).unwrap();
        assert_eq!(
            quantize_matrix(&m, GgmlType::Q4K, None).unwrap().dtype(),
            GgmlType::Q5_0
        );
        assert_eq!(
            quantize_matrix(&m, GgmlType::Q6K, None).unwrap().dtype(),
            GgmlType::Q8_0
        );
        let m = Matrix::from_f32(2, 512, vec![0.5; 1024]).unwrap();
        assert_eq!(
            quantize_matrix(&m, GgmlType::Q4K, None).unwrap().dtype(),
            GgmlType::Q4K
        );
    }

    /// With an importance vector, the error weighted by it is lower than without: the
    /// encoder spends its levels on the columns that matter.
    #[test]
    fn importance_lowers_the_weighted_error() {
        let (rows, cols) = (8, 512);
        let mut s = 3u32;
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                ((s >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0).powi(3)
            })
            .collect();
        // A few columns carry large activations, as real layers' outlier features do.
        let imp: Vec<f32> = (0..cols)
            .map(|c| if c % 37 == 0 { 100.0 } else { 1.0 })
            .collect();
        let m = Matrix::from_f32(rows, cols, w.clone()).unwrap();
        let werr = |q: &Matrix| -> f64 {
            q.to_f32()
                .iter()
                .zip(&w)
                .enumerate()
                .map(|(i, (a, b))| imp[i % cols] as f64 * ((a - b) as f64).powi(2))
                .sum()
        };
        for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4K, GgmlType::Q6K] {
            let plain = werr(&quantize_matrix(&m, t, None).unwrap());
            let weighted = werr(&quantize_matrix(&m, t, Some(&imp)).unwrap());
            assert!(weighted < plain, "{t}: {weighted} vs {plain}");
        }
    }
}
