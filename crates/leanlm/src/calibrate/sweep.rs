//! The layer-by-layer pass of calibration data through a model: block 0 sees the token
//! embeddings, each later block sees the previous block's outputs as they are after that
//! block was transformed. Only the activations of all samples (`nsamples × seqlen ×
//! d_model` f32) and the block being worked on are held; the other blocks stay in their
//! stored (memory-mapped, possibly quantized) form.

use super::{BlockStats, Calibration};
use crate::error::Result;
use crate::model::{Hooks, Layer, Model, NoHooks};

pub struct Sweep<'m> {
    model: &'m Model,
    seqlen: usize,
    /// Inputs of the current block, row-major `(nsamples · seqlen, d_model)`.
    x: Vec<f32>,
}

impl<'m> Sweep<'m> {
    pub fn new(model: &'m Model, calib: &Calibration) -> Self {
        let flat: Vec<u32> = calib.windows.iter().flatten().copied().collect();
        Self {
            model,
            seqlen: calib.seqlen,
            x: model.embed(&flat),
        }
    }

    fn samples(&self) -> usize {
        self.x.len() / (self.seqlen * self.model.config.d_model)
    }

    /// Statistics of `layer`'s activations at block `l`, without advancing.
    pub fn stats(&self, l: usize, layer: &Layer, want_gram: bool) -> Result<BlockStats> {
        let mut stats = BlockStats::new(want_gram);
        let width = self.seqlen * self.model.config.d_model;
        for sample in self.x.chunks_exact(width) {
            let mut scratch = sample.to_vec();
            self.model
                .run_block(l, layer, &mut scratch, 1, self.seqlen, &mut stats)?;
        }
        Ok(stats)
    }

    /// Replace the activations by `layer`'s outputs at block `l`, reporting them to `hooks`.
    pub fn advance_with(&mut self, l: usize, layer: &Layer, hooks: &mut dyn Hooks) -> Result<()> {
        let width = self.seqlen * self.model.config.d_model;
        let n = self.samples();
        for s in 0..n {
            let sample = &mut self.x[s * width..(s + 1) * width];
            self.model
                .run_block(l, layer, sample, 1, self.seqlen, hooks)?;
        }
        Ok(())
    }

    pub fn advance(&mut self, l: usize, layer: &Layer) -> Result<()> {
        self.advance_with(l, layer, &mut NoHooks)
    }

    /// Gather statistics while advancing with an unchanged block (a dense pass).
    pub fn advance_collecting(
        &mut self,
        l: usize,
        layer: &Layer,
        want_gram: bool,
    ) -> Result<BlockStats> {
        let mut stats = BlockStats::new(want_gram);
        self.advance_with(l, layer, &mut stats)?;
        Ok(stats)
    }
}
