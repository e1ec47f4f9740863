//! Statistics of one block's activations, gathered through the forward hooks: per input
//! column the sum of squares (Wanda's ‖X_j‖²), optionally the full Gram matrix XᵀX
//! (SparseGPT's Hessian up to a factor), and the cosine similarity between the block's
//! input and output (ShortGPT's block influence).

use crate::model::{Hooks, LinearSite};
use crate::numerics::cosine;
use crate::quant::gemm::{self, View};

/// Accumulated inputs of one linear site.
#[derive(Debug, Clone, Default)]
pub struct SiteStats {
    pub cols: usize,
    pub rows_seen: usize,
    /// Σ_t x_tj² per column j.
    pub sq_sum: Vec<f64>,
    /// Σ_t x_t x_tᵀ, row-major `cols × cols`, when requested.
    pub gram: Option<Vec<f64>>,
}

impl SiteStats {
    /// ‖X_j‖₂ per column.
    pub fn col_norms(&self) -> Vec<f32> {
        self.sq_sum.iter().map(|s| s.sqrt() as f32).collect()
    }

    fn add(&mut self, x: &[f32], rows: usize, want_gram: bool) {
        let cols = x.len() / rows.max(1);
        if self.sq_sum.is_empty() {
            self.cols = cols;
            self.sq_sum = vec![0.0; cols];
        }
        for row in x.chunks_exact(cols) {
            for (s, v) in self.sq_sum.iter_mut().zip(row) {
                *s += (*v as f64) * (*v as f64);
            }
        }
        if want_gram {
            // One f32 GEMM per call, summed in f64 so that many calls do not lose bits.
            let mut g = vec![0f32; cols * cols];
            let xv = View::new(x, rows, cols);
            gemm::matmul(xv.t(), xv, &mut g, 0.0);
            let acc = self.gram.get_or_insert_with(|| vec![0.0; cols * cols]);
            for (a, b) in acc.iter_mut().zip(&g) {
                *a += *b as f64;
            }
        }
        self.rows_seen += rows;
    }
}

/// Hooks that gather [`SiteStats`] for one block (and its influence).
#[derive(Debug, Default)]
pub struct BlockStats {
    pub want_gram: bool,
    pub sites: [SiteStats; 4],
    /// Σ over tokens of cos(block input, block output), and the token count.
    pub cos_sum: f64,
    pub cos_count: usize,
    input: Vec<f32>,
}

impl BlockStats {
    pub fn new(want_gram: bool) -> Self {
        Self {
            want_gram,
            ..Self::default()
        }
    }

    pub fn site(&self, site: LinearSite) -> &SiteStats {
        &self.sites[site_index(site)]
    }

    /// ShortGPT's block influence: 1 − mean cosine similarity of input and output.
    pub fn influence(&self) -> f64 {
        1.0 - self.cos_sum / self.cos_count.max(1) as f64
    }
}

/// Position of `site` in [`LinearSite::ALL`] (and in per-site arrays).
pub(crate) fn site_index(site: LinearSite) -> usize {
    match site {
        LinearSite::Qkv => 0,
        LinearSite::AttnOut => 1,
        LinearSite::GateUp => 2,
        LinearSite::Down => 3,
    }
}

impl Hooks for BlockStats {
    fn block_input(&mut self, _layer: usize, x: &[f32], _rows: usize) {
        self.input.clear();
        self.input.extend_from_slice(x);
    }

    fn linear_input(&mut self, _layer: usize, site: LinearSite, x: &[f32], rows: usize) {
        let want_gram = self.want_gram;
        self.sites[site_index(site)].add(x, rows, want_gram);
    }

    fn block_output(&mut self, _layer: usize, x: &[f32], rows: usize) {
        let d = x.len() / rows.max(1);
        for (a, b) in self.input.chunks_exact(d).zip(x.chunks_exact(d)) {
            self.cos_sum += cosine(a, b);
            self.cos_count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_gram_and_influence_are_hand_checked() {
        let mut s = BlockStats::new(true);
        // Two rows of width 2: [1, 2], [3, 4].
        s.linear_input(0, LinearSite::Down, &[1.0, 2.0, 3.0, 4.0], 2);
        let d = s.site(LinearSite::Down);
        assert_eq!(d.sq_sum, vec![10.0, 20.0]);
        assert_eq!(d.gram.as_deref(), Some(&[10.0, 14.0, 14.0, 20.0][..]));
        assert!((d.col_norms()[0] - 10f32.sqrt()).abs() < 1e-6);
        // Output equal to input → influence 0; orthogonal → 1.
        s.block_input(0, &[1.0, 0.0, 0.0, 1.0], 2);
        s.block_output(0, &[2.0, 0.0, 1.0, 0.0], 2);
        assert!((s.influence() - 0.5).abs() < 1e-12);
    }
}
