//! Small models with seeded random weights, for tests that need a whole model without a
//! file (gradient checks, round trips).

use super::config::{Arch, Config, RopeStyle};
use super::llama::{Layer, Model};
use crate::error::Result;
use crate::numerics::SplitMix64;
use crate::quant::Matrix;

/// Shape of a random model.
#[derive(Debug, Clone, Copy)]
pub struct RandomSpec {
    pub layers: usize,
    pub d_model: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub rope_style: RopeStyle,
    /// Query/key/value biases (Qwen2-style).
    pub qkv_bias: bool,
    /// Gemma 3's blocks instead: Q/K norms, post-norms, GELU, √d embedding scale, odd
    /// blocks attending through a sliding window of `window` keys at their own RoPE base.
    pub gemma: Option<usize>,
    /// Head dimensions RoPE rotates (`None`: all).
    pub rope_dim: Option<usize>,
}

impl Default for RandomSpec {
    fn default() -> Self {
        Self {
            layers: 2,
            d_model: 32,
            heads: 4,
            kv_heads: 2,
            ffn: 48,
            vocab: 64,
            rope_style: RopeStyle::Interleaved,
            qkv_bias: false,
            gemma: None,
            rope_dim: None,
        }
    }
}

/// Weights uniform in ±1/√fan-in, norm gains near 1, tied embeddings.
pub fn random_model(spec: RandomSpec, seed: u64) -> Result<Model> {
    let mut rng = SplitMix64(seed);
    let mut uniform = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect()
    };
    let d = spec.d_model;
    let hd = d / spec.heads;
    let mut mat = |rows: usize, cols: usize| {
        Matrix::from_f32(rows, cols, uniform(rows * cols, 1.0 / (cols as f32).sqrt()))
    };
    let mut layers = Vec::with_capacity(spec.layers);
    for _ in 0..spec.layers {
        let (wq, wk, wv, wo) = (
            mat(spec.heads * hd, d)?,
            mat(spec.kv_heads * hd, d)?,
            mat(spec.kv_heads * hd, d)?,
            mat(d, spec.heads * hd)?,
        );
        let (w_gate, w_up, w_down) = (mat(spec.ffn, d)?, mat(spec.ffn, d)?, mat(d, spec.ffn)?);
        layers.push(Layer::plain(
            [wq, wk, wv, wo, w_gate, w_up, w_down],
            vec![1.0; d],
            vec![1.0; d],
        ));
    }
    let gain = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|v| 1.0 + v).collect() };
    for (i, l) in layers.iter_mut().enumerate() {
        l.attn_norm = gain(uniform(d, 0.2));
        l.ffn_norm = gain(uniform(d, 0.2));
        if spec.gemma.is_some() {
            l.q_norm = Some(gain(uniform(hd, 0.2)));
            l.k_norm = Some(gain(uniform(hd, 0.2)));
            l.post_attn_norm = Some(gain(uniform(d, 0.2)));
            l.post_ffn_norm = Some(gain(uniform(d, 0.2)));
            l.sliding = i % 2 == 0;
        }
        if spec.qkv_bias {
            l.bq = Some(uniform(spec.heads * hd, 0.1));
            l.bk = Some(uniform(spec.kv_heads * hd, 0.1));
            l.bv = Some(uniform(spec.kv_heads * hd, 0.1));
        }
    }
    let out_norm = gain(uniform(d, 0.2));
    let embd = Matrix::from_f32(spec.vocab, d, uniform(spec.vocab * d, 1.0))?;
    let config = Config {
        arch: match (spec.gemma, spec.qkv_bias) {
            (Some(_), _) => Arch::Gemma3,
            (None, true) => Arch::Qwen2,
            (None, false) => Arch::Llama,
        },
        n_layers: spec.layers,
        d_model: d,
        n_heads: spec.heads,
        n_kv_heads: spec.kv_heads,
        head_dim: hd,
        ffn_dim: spec.ffn,
        vocab_size: spec.vocab,
        context_len: 256,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
        rope_dim: spec.rope_dim.unwrap_or(hd),
        rope_style: spec.rope_style,
        sliding_window: spec.gemma,
        rope_theta_local: 100.0,
        final_softcap: None,
    };
    Model::new(config, embd.clone(), layers, out_norm, embd)
}
