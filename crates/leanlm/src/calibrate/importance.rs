//! The importance matrix of quantization: for every linear layer, the mean square of each
//! input column over calibration tokens. Rounding error on weight column j reaches the
//! layer's output scaled by x_j, so E[x_j²] is the weight its squared error deserves
//! (the statistic llama.cpp's imatrix collects).

use super::stats::site_index;
use super::{Calibration, Sweep};
use crate::error::Result;
use crate::model::{LinearSite, Model};

/// Mean square activation per input column, per block and linear site.
#[derive(Debug, Clone)]
pub struct Importance {
    /// `layers[l][site]`: one value per input column of that site's matrices.
    pub layers: Vec<[Vec<f32>; 4]>,
    pub tokens: usize,
}

impl Importance {
    /// One dense pass of `calib` through `model`, block by block (memory: the
    /// calibration activations and one block). `progress(l)` is told each finished block.
    pub fn collect(
        model: &Model,
        calib: &Calibration,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Self> {
        let mut sweep = Sweep::new(model, calib);
        let mut layers = Vec::with_capacity(model.layers.len());
        for (l, layer) in model.layers.iter().enumerate() {
            let stats = sweep.advance_collecting(l, layer, false)?;
            layers.push(LinearSite::ALL.map(|site| {
                let s = stats.site(site);
                let n = s.rows_seen.max(1) as f64;
                s.sq_sum.iter().map(|v| (v / n) as f32).collect()
            }));
            progress(l);
        }
        Ok(Self {
            layers,
            tokens: calib.n_tokens(),
        })
    }

    pub fn site(&self, layer: usize, site: LinearSite) -> &[f32] {
        &self.layers[layer][site_index(site)]
    }
}
