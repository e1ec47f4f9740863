//! Pruning: remove the weights, heads, channels or layers that matter least.
//!
//! `mask` holds the selection rules (magnitude, Wanda, N:M), `sparsegpt` the second-order
//! solver, `owl` the non-uniform layer sparsities, `sequential` the block-by-block driver
//! for weight pruning and `structured` the removal of heads, MLP channels and layers.

pub mod mask;
pub mod owl;
pub mod sequential;
pub mod sparsegpt;
pub mod structured;

pub use mask::{Pattern, Scope};
pub use owl::OwlConfig;
pub use sequential::{prune, Method, PruneConfig};
pub use sparsegpt::SparseGptConfig;
pub use structured::{prune_structured, Structured};

use crate::error::Result;
use crate::model::{Layer, Model};

/// Where a pruning pass hands each finished block, in order: to a file being written
/// (so that the pruned model is never whole in memory) or into a model ([`collect`]).
pub type BlockSink<'a> = dyn FnMut(Layer) -> Result<()> + 'a;

/// Run a pruning pass and gather the blocks it hands on into a model with `source`'s
/// embeddings and head.
pub fn collect(
    source: &Model,
    pass: impl FnOnce(&mut BlockSink) -> Result<PruneReport>,
) -> Result<(Model, PruneReport)> {
    let mut layers = Vec::with_capacity(source.layers.len());
    let report = pass(&mut |layer| {
        layers.push(layer);
        Ok(())
    })?;
    let model = Model::new(
        source.config.clone(),
        source.tok_embd.clone(),
        layers,
        source.out_norm.clone(),
        source.output.clone(),
    )?;
    Ok((model, report))
}

/// Where a long prune stands, for progress bars.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub phase: &'static str,
    pub layer: usize,
    pub layers: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MatrixReport {
    pub name: String,
    pub zeros: usize,
    pub total: usize,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LayerReport {
    pub layer: usize,
    pub target_sparsity: f32,
    pub matrices: Vec<MatrixReport>,
    pub seconds: f64,
    /// Structured pruning: query heads and MLP channels kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heads_kept: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ffn_kept: Option<usize>,
    /// Layer removal: ShortGPT's block influence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub influence: Option<f64>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    pub layers: Vec<LayerReport>,
    /// Indices (in the input model) of blocks removed.
    pub removed_layers: Vec<usize>,
    pub calibration_tokens: usize,
    pub seconds: f64,
}

impl PruneReport {
    /// Zeros over all pruned matrices.
    pub fn sparsity(&self) -> f64 {
        let (z, t) = self
            .layers
            .iter()
            .flat_map(|l| &l.matrices)
            .fold((0usize, 0usize), |(z, t), m| (z + m.zeros, t + m.total));
        z as f64 / t.max(1) as f64
    }
}
