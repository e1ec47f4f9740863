//! Qwen2 (Qwen2, Qwen2.5, Qwen2.5-Coder): Llama's blocks with query/key/value biases and
//! NeoX-style (halves) RoPE.

use super::{Activation, Arch, Family, Roles};
use crate::model::config::RopeStyle;
use crate::model::tensors::Role;

pub const FAMILY: Family = Family {
    arch: Arch::Qwen2,
    gguf: "qwen2",
    hf_architectures: &["Qwen2ForCausalLM"],
    hf_model_type: "qwen2",
    roles: Roles {
        required: &[Role::AttnQBias, Role::AttnKBias, Role::AttnVBias],
        optional: &[],
    },
    activation: Activation::SiluGlu,
    gguf_rope: RopeStyle::Halves,
    embed_scale_sqrt_d: false,
    hf_norm_offset: 0.0,
    hf_renames: &[],
    swa_period: 0,
    rope_theta_local: 10_000.0,
    chat_template: None,
};
