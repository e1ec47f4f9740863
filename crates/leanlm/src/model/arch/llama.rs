//! Llama (Llama 2/3, SmolLM): pre-norm blocks, SwiGLU, no biases (optional ones loaded).

use super::{Activation, Arch, Family, Roles};
use crate::model::config::RopeStyle;
use crate::model::tensors::Role;

pub const FAMILY: Family = Family {
    arch: Arch::Llama,
    gguf: "llama",
    hf_architectures: &["LlamaForCausalLM"],
    hf_model_type: "llama",
    roles: Roles {
        required: &[],
        optional: &[Role::AttnQBias, Role::AttnKBias, Role::AttnVBias],
    },
    activation: Activation::SiluGlu,
    gguf_rope: RopeStyle::Interleaved,
    embed_scale_sqrt_d: false,
    hf_norm_offset: 0.0,
    hf_renames: &[],
    swa_period: 0,
    rope_theta_local: 10_000.0,
    chat_template: None,
};
