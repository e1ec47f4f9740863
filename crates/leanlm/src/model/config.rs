//! Architecture hyper-parameters shared by every loader, validated once when built.

use serde::Serialize;

use crate::error::{Error, Result};

pub use super::arch::Arch;
use super::arch::Family;

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): llama.cpp's layout for Llama GGUFs, whose Q/K rows
    /// the converter permuted.
    Interleaved,
    /// Halves (i, i + d/2): Hugging Face's `rotate_half`, and GGUF's Qwen2.
    Halves,
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub arch: Arch,
    pub n_layers: usize,
    pub d_model: usize,
    /// Query heads of an unpruned layer (each layer reads its own count from its weights).
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab_size: usize,
    /// Positions the model was trained for.
    pub context_len: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    /// Leading dimensions of each head that RoPE rotates.
    pub rope_dim: usize,
    pub rope_style: RopeStyle,
    /// Keys a sliding-window block sees, its own position included (blocks say whether
    /// they slide: [`super::Layer::sliding`]).
    pub sliding_window: Option<usize>,
    /// RoPE base of sliding-window blocks.
    pub rope_theta_local: f32,
    /// Final logits become `c·tanh(logits/c)` (Gemma 2's soft-capping).
    pub final_softcap: Option<f32>,
}

impl Config {
    /// The family description of this architecture.
    pub fn family(&self) -> &'static Family {
        self.arch.family()
    }

    pub fn validate(&self, source: &std::path::Path) -> Result<()> {
        let bad = |reason: String| Error::BadConfig {
            path: source.to_path_buf(),
            reason,
        };
        for (name, v) in [
            ("n_layers", self.n_layers),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("ffn_dim", self.ffn_dim),
            ("vocab_size", self.vocab_size),
            ("context_len", self.context_len),
        ] {
            if v == 0 {
                return Err(bad(format!("{name} is 0")));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(bad(format!(
                "{} query heads cannot share {} key/value heads evenly",
                self.n_heads, self.n_kv_heads
            )));
        }
        if !self.rope_dim.is_multiple_of(2) || self.rope_dim > self.head_dim {
            return Err(bad(format!(
                "rope dimension {} must be even and at most head_dim {}",
                self.rope_dim, self.head_dim
            )));
        }
        if self.sliding_window == Some(0) {
            return Err(bad("the sliding window is 0 keys".into()));
        }
        // Written so that NaN and infinity fail too.
        for (name, v) in [
            ("rms epsilon", self.rms_eps),
            ("rope theta", self.rope_theta),
            ("local rope theta", self.rope_theta_local),
            ("logit soft-cap", self.final_softcap.unwrap_or(1.0)),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(bad(format!(
                    "{name} is {v}; it must be positive and finite"
                )));
            }
        }
        Ok(())
    }
}
