//! Observation points inside the forward pass. Calibration (pruning statistics), hidden
//! state matching and layer-influence measurements attach here; the default methods do
//! nothing, so a pass without hooks pays nothing.

/// The four distinct inputs of a block's linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearSite {
    /// Normed block input, read by q, k and v projections.
    Qkv,
    /// Attention output, read by the output projection.
    AttnOut,
    /// Normed residual, read by the gate and up projections.
    GateUp,
    /// `silu(gate) * up`, read by the down projection.
    Down,
}

impl LinearSite {
    pub const ALL: [LinearSite; 4] = [Self::Qkv, Self::AttnOut, Self::GateUp, Self::Down];
}

/// Callbacks see row-major activations `x` of `rows` rows (batch × positions).
pub trait Hooks {
    fn block_input(&mut self, _layer: usize, _x: &[f32], _rows: usize) {}
    fn linear_input(&mut self, _layer: usize, _site: LinearSite, _x: &[f32], _rows: usize) {}
    fn block_output(&mut self, _layer: usize, _x: &[f32], _rows: usize) {}
}

/// A hooks value that does nothing.
pub struct NoHooks;
impl Hooks for NoHooks {}
