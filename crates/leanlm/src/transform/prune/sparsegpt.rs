//! SparseGPT (Frantar & Alistarh 2023): prune a matrix column by column and let the
//! weights not yet visited absorb each removal's error, using the inverse of the layer
//! Hessian H = 2·XᵀX (the factor does not change the result, so the Gram matrix is used).
//!
//! The sweep follows the paper: 1% dampening of the mean diagonal, blocks of 128 columns,
//! a mask chosen per block from w²/[H⁻¹]²_cc (or per group of M for N:M, from the weights
//! as updated so far), error updates inside the block at once and to the columns after the
//! block lazily. Rows are independent once the block's mask is known, so they run in
//! parallel.

use rayon::prelude::*;

use super::mask::{lowest, Pattern};
use crate::error::{Error, Result};
use crate::quant::gemm::{self, View};
use crate::transform::linalg::inverse_upper_cholesky;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct SparseGptConfig {
    /// Columns per block (the paper's B).
    pub blocksize: usize,
    /// Dampening as a fraction of the mean Hessian diagonal.
    pub percdamp: f64,
}

impl Default for SparseGptConfig {
    fn default() -> Self {
        Self {
            blocksize: 128,
            percdamp: 0.01,
        }
    }
}

/// The inverse Hessian of one activation site, factored once and shared by every matrix
/// that reads the site (q, k and v; gate and up).
pub struct InverseHessian {
    cols: usize,
    /// Upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ·U), row-major.
    u: Vec<f64>,
    /// Inputs that never fired.
    dead: Vec<bool>,
}

impl InverseHessian {
    pub fn new(gram: &[f64], cols: usize, percdamp: f64) -> Result<Self> {
        if gram.len() != cols * cols || cols == 0 {
            return Err(Error::Shape {
                what: "SparseGPT Hessian".into(),
                expected: vec![cols, cols],
                found: vec![gram.len()],
            });
        }
        // Inputs that never fired carry no information: their weights go, and a unit
        // diagonal keeps H invertible.
        let mut h = gram.to_vec();
        let mut dead = vec![false; cols];
        for c in 0..cols {
            if h[c * cols + c] == 0.0 {
                h[c * cols + c] = 1.0;
                dead[c] = true;
            }
        }
        let damp = percdamp * (0..cols).map(|c| h[c * cols + c]).sum::<f64>() / cols as f64;
        for c in 0..cols {
            h[c * cols + c] += damp;
        }
        let u = inverse_upper_cholesky(&h, cols)?;
        Ok(Self { cols, u, dead })
    }
}

/// Prune the row-major matrix `w` (`cols` columns) in place given the Gram matrix `gram`
/// (`cols × cols`) of its inputs.
pub fn prune(
    w: &mut [f32],
    cols: usize,
    gram: &[f64],
    pattern: Pattern,
    cfg: SparseGptConfig,
) -> Result<()> {
    let hinv = InverseHessian::new(gram, cols, cfg.percdamp)?;
    prune_with(w, &hinv, pattern, cfg.blocksize)
}

/// [`prune`] with the site's inverse Hessian already factored.
pub fn prune_with(
    w: &mut [f32],
    hinv: &InverseHessian,
    pattern: Pattern,
    blocksize: usize,
) -> Result<()> {
    let cols = hinv.cols;
    pattern.check_cols(cols)?;
    if !w.len().is_multiple_of(cols) {
        return Err(Error::Shape {
            what: "SparseGPT weights".into(),
            expected: vec![w.len() / cols.max(1), cols],
            found: vec![w.len()],
        });
    }
    let bs = blocksize.max(1);
    if let Pattern::NM { m, .. } = pattern {
        if !bs.is_multiple_of(m) {
            return Err(Error::InvalidInput(format!(
                "SparseGPT block size {bs} must be a multiple of M = {m}"
            )));
        }
    }
    let rows = w.len() / cols;
    let u = &hinv.u;
    let diag: Vec<f64> = (0..cols).map(|c| u[c * cols + c]).collect();
    let mut x: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    for (c, _) in hinv.dead.iter().enumerate().filter(|(_, d)| **d) {
        for r in 0..rows {
            x[r * cols + c] = 0.0;
        }
    }

    for i1 in (0..cols).step_by(bs) {
        let i2 = (i1 + bs).min(cols);
        let width = i2 - i1;
        // Unstructured: one threshold over the whole block, from the weights as they
        // stand after the earlier blocks' updates.
        let block_mask = match pattern {
            Pattern::Unstructured(s) => {
                let scores: Vec<f32> = (0..rows * width)
                    .map(|k| {
                        let (r, i) = (k / width, k % width);
                        let v = x[r * cols + i1 + i];
                        (v * v / (diag[i1 + i] * diag[i1 + i])) as f32
                    })
                    .collect();
                let k = ((rows * width) as f64 * s as f64) as usize;
                let mut m = vec![false; rows * width];
                for idx in lowest(&scores, k) {
                    m[idx] = true;
                }
                Some(m)
            }
            Pattern::NM { .. } => None,
        };
        // Inside the block, column by column; rows are independent.
        let mut err = vec![0f64; rows * width];
        x.par_chunks_mut(cols)
            .zip(err.par_chunks_mut(width))
            .enumerate()
            .for_each(|(r, (row, err))| {
                let mut mask = match &block_mask {
                    Some(m) => m[r * width..(r + 1) * width].to_vec(),
                    None => vec![false; width],
                };
                for i in 0..width {
                    let c = i1 + i;
                    if let Pattern::NM { n, m } = pattern {
                        if i % m == 0 {
                            let scores: Vec<f32> = (c..c + m)
                                .map(|j| (row[j] * row[j] / (diag[j] * diag[j])) as f32)
                                .collect();
                            for j in lowest(&scores, m - n) {
                                mask[i + j] = true;
                            }
                        }
                    }
                    let q = if mask[i] { 0.0 } else { row[c] };
                    let e = (row[c] - q) / diag[c];
                    row[c] = q;
                    let urow = &u[c * cols..(c + 1) * cols];
                    for j in c + 1..i2 {
                        row[j] -= e * urow[j];
                    }
                    err[i] = e;
                }
            });
        // Lazy update of every later column at once: X[:, i2..] -= Err · U[i1..i2, i2..].
        let rest = cols - i2;
        if rest > 0 {
            let mut delta = vec![0f64; rows * rest];
            gemm::matmul(
                View::new(&err, rows, width),
                View::block(u, cols, i1, width, i2, rest),
                &mut delta,
                0.0,
            );
            x.par_chunks_mut(cols)
                .zip(delta.par_chunks(rest))
                .for_each(|(row, d)| {
                    for (a, b) in row[i2..].iter_mut().zip(d) {
                        *a -= b;
                    }
                });
        }
    }
    for (o, v) in w.iter_mut().zip(&x) {
        *o = *v as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::mask::{select, wanda_scores, Scope};
    use super::*;

    /// Correlated inputs: column j mixes a few shared factors, so removing a weight can be
    /// compensated by its neighbours (the case SparseGPT's update exists for).
    fn inputs(n: usize, cols: usize) -> Vec<f32> {
        (0..n * cols)
            .map(|k| {
                let (t, j) = (k / cols, k % cols);
                let f = |s: usize| (((t * 7919 + s * 104_729) % 1000) as f32 / 500.0) - 1.0;
                f(j % 3) + 0.3 * f(j + 10) + 0.1 * f(j * 13 + 5)
            })
            .collect()
    }

    fn gram(x: &[f32], cols: usize) -> Vec<f64> {
        let mut g = vec![0f64; cols * cols];
        for row in x.chunks_exact(cols) {
            for i in 0..cols {
                for j in 0..cols {
                    g[i * cols + j] += row[i] as f64 * row[j] as f64;
                }
            }
        }
        g
    }

    /// ‖W·Xᵀ − Ŵ·Xᵀ‖²
    fn recon_error(w: &[f32], w_hat: &[f32], x: &[f32], cols: usize) -> f64 {
        let mut e = 0f64;
        for (wr, hr) in w.chunks_exact(cols).zip(w_hat.chunks_exact(cols)) {
            for xr in x.chunks_exact(cols) {
                let d: f64 = (0..cols)
                    .map(|j| (wr[j] - hr[j]) as f64 * xr[j] as f64)
                    .sum();
                e += d * d;
            }
        }
        e
    }

    fn weights(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|k| (((k * 2654435761) % 2001) as f32 / 1000.0) - 1.0)
            .collect()
    }

    #[test]
    fn beats_wanda_reconstruction_on_the_same_budget() {
        let (rows, cols, n) = (16, 32, 256);
        let x = inputs(n, cols);
        let g = gram(&x, cols);
        let w = weights(rows, cols);
        let norms: Vec<f32> = (0..cols).map(|j| (g[j * cols + j] as f32).sqrt()).collect();
        let cfg = SparseGptConfig {
            blocksize: 8,
            percdamp: 0.01,
        };
        for pattern in [Pattern::Unstructured(0.5), Pattern::NM { n: 2, m: 4 }] {
            let mut wanda = w.clone();
            let m = select(&wanda_scores(&w, &norms), cols, pattern, Scope::Row).unwrap();
            super::super::mask::apply(&mut wanda, &m);
            let mut sgpt = w.clone();
            prune(&mut sgpt, cols, &g, pattern, cfg).unwrap();
            // Same number of zeros (N:M: exactly 2 per group of 4).
            let zeros = |v: &[f32]| v.iter().filter(|&&a| a == 0.0).count();
            assert_eq!(zeros(&sgpt), zeros(&wanda), "{pattern}");
            if let Pattern::NM { .. } = pattern {
                for g in sgpt.chunks_exact(4) {
                    assert_eq!(g.iter().filter(|&&a| a == 0.0).count(), 2);
                }
            }
            let (ew, es) = (
                recon_error(&w, &wanda, &x, cols),
                recon_error(&w, &sgpt, &x, cols),
            );
            assert!(es < 0.8 * ew, "{pattern}: SparseGPT {es} vs Wanda {ew}");
        }
    }

    /// With a diagonal Hessian the inputs are uncorrelated and the update moves nothing:
    /// SparseGPT reduces to pruning the smallest w²/[H⁻¹]²_cc (hand-checked).
    #[test]
    fn diagonal_hessian_prunes_by_scaled_magnitude() {
        // H = diag(4, 1): [H⁻¹]_cc = 1/4, 1 → U diag = 1/2, 1; scores w²·4, w²·1.
        // Row [1, 1.5]: scores 4, 2.25 → the second weight goes despite being larger.
        let mut w = vec![1.0f32, 1.5];
        let cfg = SparseGptConfig {
            blocksize: 2,
            percdamp: 0.0,
        };
        prune(
            &mut w,
            2,
            &[4.0, 0.0, 0.0, 1.0],
            Pattern::Unstructured(0.5),
            cfg,
        )
        .unwrap();
        assert_eq!(w, [1.0, 0.0]);
    }

    #[test]
    fn dead_inputs_are_removed_and_shapes_checked() {
        let mut w = vec![1.0f32, 2.0, 3.0, 4.0];
        let g = [1.0, 0.0, 0.0, 0.0]; // input 1 never fires
        prune(
            &mut w,
            2,
            &g,
            Pattern::Unstructured(0.0),
            SparseGptConfig::default(),
        )
        .unwrap();
        assert_eq!(w, [1.0, 0.0, 3.0, 0.0]);
        assert!(prune(
            &mut w,
            2,
            &[1.0],
            Pattern::Unstructured(0.5),
            Default::default()
        )
        .is_err());
    }
}
