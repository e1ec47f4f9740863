//! Gemma 3 (text models), after the Gemma Team's 2025 technical report and llama.cpp's
//! `src/models/gemma3.cpp`.
//!
//! Each block norms its input and its output, around both attention and the MLP:
//! x += PostNorm(Attn(Norm(x))); x += PostNorm(MLP(Norm(x))). Queries and keys are
//! RMS-normed per head before RoPE; the MLP is GELU(tanh)-gated; embeddings are scaled
//! by √d. Five of every six blocks attend through a sliding window (512 keys in the 270M
//! and 1B models) with their own RoPE base (10,000 against the global blocks' 1,000,000).
//! Hugging Face stores norm gains as `w` for `(1 + w)`; llama.cpp's converter writes
//! `1 + w` into GGUF. Gemma's GGUF files carry no chat template; `gemma3.jinja` writes
//! Gemma's turn format (`<start_of_turn>user … <end_of_turn>`, a system message folded
//! into the first user turn).

use super::{Activation, Arch, Family, Roles};
use crate::model::config::RopeStyle;
use crate::model::tensors::Role;

pub const FAMILY: Family = Family {
    arch: Arch::Gemma3,
    gguf: "gemma3",
    hf_architectures: &["Gemma3ForCausalLM"],
    hf_model_type: "gemma3_text",
    roles: Roles {
        required: &[
            Role::AttnQNorm,
            Role::AttnKNorm,
            Role::PostAttnNorm,
            Role::PostFfnNorm,
        ],
        optional: &[],
    },
    activation: Activation::GeluTanhGlu,
    gguf_rope: RopeStyle::Halves,
    embed_scale_sqrt_d: true,
    hf_norm_offset: 1.0,
    hf_renames: &[(Role::FfnNorm, "pre_feedforward_layernorm.weight")],
    swa_period: 6,
    rope_theta_local: 10_000.0,
    chat_template: Some(include_str!("gemma3.jinja")),
};
