//! Model families: what distinguishes one decoder architecture from another, as data.
//!
//! Each family is one file holding one [`Family`] value: which optional tensors its blocks
//! have ([`Roles`], names in [`super::tensors`]), its MLP activation, RoPE layout, embedding
//! scale, sliding-window pattern and Hugging Face conventions. The forward pass
//! ([`super::llama`]), the loaders and the writers read these fields and nothing else, so
//! adding a family is a new file here plus a line in [`Arch::ALL`]; the forward pass only
//! changes when a family brings an operation no earlier family had.

mod gemma3;
mod llama;
mod qwen2;

use serde::Serialize;

use super::config::RopeStyle;
use super::tensors::Role;
use crate::error::{Error, Result};

/// The architectures leanlm runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Qwen2,
    Gemma3,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::Llama, Arch::Qwen2, Arch::Gemma3];

    pub fn family(self) -> &'static Family {
        match self {
            Arch::Llama => &llama::FAMILY,
            Arch::Qwen2 => &qwen2::FAMILY,
            Arch::Gemma3 => &gemma3::FAMILY,
        }
    }

    /// From a GGUF `general.architecture` or a Hugging Face `architectures` entry.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|a| {
                let f = a.family();
                f.gguf == name || f.hf_architectures.contains(&name)
            })
            .ok_or_else(|| Error::UnknownArchitecture {
                found: name.to_string(),
                supported: Self::ALL
                    .iter()
                    .map(|a| {
                        let f = a.family();
                        format!("{} ({})", f.gguf, f.hf_architectures.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The GGUF architecture name.
    pub fn name(self) -> &'static str {
        self.family().gguf
    }
}

/// Which vector tensors a family's blocks carry beyond the two norms every block has.
#[derive(Debug)]
pub struct Roles {
    /// A block without one of these is an error.
    pub required: &'static [Role],
    /// Loaded when present.
    pub optional: &'static [Role],
}

/// The MLP's gated activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// silu(gate) ⊙ up (SwiGLU).
    SiluGlu,
    /// gelu_tanh(gate) ⊙ up (GeGLU with GELU's tanh approximation).
    GeluTanhGlu,
}

/// One decoder family.
#[derive(Debug)]
pub struct Family {
    pub arch: Arch,
    /// `general.architecture` in GGUF (also the prefix of its metadata keys).
    pub gguf: &'static str,
    /// Hugging Face `architectures` names read as this family; the first is written.
    pub hf_architectures: &'static [&'static str],
    /// Hugging Face `model_type` written to config.json.
    pub hf_model_type: &'static str,
    pub roles: Roles,
    pub activation: Activation,
    /// How llama.cpp pairs RoPE dimensions for this family's GGUF files. Llama GGUFs hold
    /// Q/K rows permuted for adjacent pairs; the writer permutes Hugging Face rows.
    pub gguf_rope: RopeStyle,
    /// Embeddings are multiplied by √d_model before the first block (Gemma).
    pub embed_scale_sqrt_d: bool,
    /// Hugging Face checkpoints store RMSNorm gains as `w` and compute with `w + offset`
    /// (Gemma's `1 + w`); GGUF stores the sum. Loaders add it, writers subtract it.
    pub hf_norm_offset: f32,
    /// Hugging Face tensor names that differ from the table's.
    pub hf_renames: &'static [(Role, &'static str)],
    /// With a sliding window and no pattern in the metadata: every `n`th block attends
    /// globally, the others locally (llama.cpp's default per family). 0: no sliding window.
    pub swa_period: usize,
    /// RoPE base of local (sliding-window) blocks when the metadata does not state one.
    pub rope_theta_local: f32,
    /// The chat template used when the model's files carry none (Jinja, as Hugging Face
    /// templates are written).
    pub chat_template: Option<&'static str>,
}

impl Family {
    /// A block tensor's name inside a Hugging Face block (`model.layers.N.`).
    pub fn hf_name(&self, role: Role) -> &'static str {
        self.hf_renames
            .iter()
            .find(|(r, _)| *r == role)
            .map_or(role.hf(), |(_, n)| n)
    }

    /// Which blocks of `n` attend through the sliding window, by the default period.
    pub fn default_sliding_pattern(&self, n: usize) -> Vec<bool> {
        match self.swa_period {
            0 => vec![false; n],
            p => sliding_by_period(n, p),
        }
    }
}

/// Blocks of `n` that slide when every `period`th block (`period > 0`) is global: the
/// last of each period, as llama.cpp and transformers count them.
pub fn sliding_by_period(n: usize, period: usize) -> Vec<bool> {
    (0..n).map(|i| i % period < period - 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_parses_by_its_names_and_unknown_ones_list_the_supported() {
        for a in Arch::ALL {
            assert_eq!(Arch::parse(a.name()).unwrap(), a);
            for hf in a.family().hf_architectures {
                assert_eq!(Arch::parse(hf).unwrap(), a);
            }
            assert_eq!(a.family().arch, a);
        }
        let e = Arch::parse("mamba").unwrap_err().to_string();
        assert!(
            e.contains("'mamba'") && e.contains("gemma3 (Gemma3ForCausalLM"),
            "{e}"
        );
        // Gemma 3: five local blocks, then a global one.
        let p = Arch::Gemma3.family().default_sliding_pattern(7);
        assert_eq!(p, [true, true, true, true, true, false, true]);
        assert!(Arch::Llama
            .family()
            .default_sliding_pattern(3)
            .iter()
            .all(|s| !s));
    }
}
