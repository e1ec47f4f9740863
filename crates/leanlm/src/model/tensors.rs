//! The one table of tensor roles: what each weight of a block is, and its name in GGUF (as
//! llama.cpp's `LLM_TENSOR_*` name table spells it) and in Hugging Face checkpoints.
//!
//! Loaders, writers, pruning and calibration address weights by [`Role`], never by a name
//! or a hard-coded list; a family ([`super::arch::Family`]) says which roles it has. Adding
//! a kind of weight means one row here and one field in [`Layer`].

use super::hooks::LinearSite;
use super::llama::Layer;
use crate::quant::Matrix;

/// What a tensor of a block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    AttnQBias,
    AttnKBias,
    AttnVBias,
    /// RMSNorm over each query head (Gemma 3, Qwen 3, OLMo 2).
    AttnQNorm,
    AttnKNorm,
    /// RMSNorm of the attention output before the residual add (Gemma 2/3).
    PostAttnNorm,
    FfnNorm,
    FfnGate,
    FfnUp,
    FfnDown,
    /// RMSNorm of the MLP output before the residual add (Gemma 2/3).
    PostFfnNorm,
}

/// A matrix (a linear layer) or a vector (a norm gain or a bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Matrix,
    Vector,
}

struct Row {
    role: Role,
    kind: Kind,
    gguf: &'static str,
    hf: &'static str,
}

/// Names inside a block: GGUF's after `blk.N.`, Hugging Face's after `model.layers.N.`.
/// A family may rename a Hugging Face tensor ([`super::arch::Family::hf_renames`]).
const TABLE: [Row; 16] = {
    use Kind::*;
    use Role::*;
    const fn r(role: Role, kind: Kind, gguf: &'static str, hf: &'static str) -> Row {
        Row {
            role,
            kind,
            gguf,
            hf,
        }
    }
    [
        r(
            AttnNorm,
            Vector,
            "attn_norm.weight",
            "input_layernorm.weight",
        ),
        r(AttnQ, Matrix, "attn_q.weight", "self_attn.q_proj.weight"),
        r(AttnK, Matrix, "attn_k.weight", "self_attn.k_proj.weight"),
        r(AttnV, Matrix, "attn_v.weight", "self_attn.v_proj.weight"),
        r(
            AttnOutput,
            Matrix,
            "attn_output.weight",
            "self_attn.o_proj.weight",
        ),
        r(AttnQBias, Vector, "attn_q.bias", "self_attn.q_proj.bias"),
        r(AttnKBias, Vector, "attn_k.bias", "self_attn.k_proj.bias"),
        r(AttnVBias, Vector, "attn_v.bias", "self_attn.v_proj.bias"),
        r(
            AttnQNorm,
            Vector,
            "attn_q_norm.weight",
            "self_attn.q_norm.weight",
        ),
        r(
            AttnKNorm,
            Vector,
            "attn_k_norm.weight",
            "self_attn.k_norm.weight",
        ),
        r(
            PostAttnNorm,
            Vector,
            "post_attention_norm.weight",
            "post_attention_layernorm.weight",
        ),
        r(
            FfnNorm,
            Vector,
            "ffn_norm.weight",
            "post_attention_layernorm.weight",
        ),
        r(FfnGate, Matrix, "ffn_gate.weight", "mlp.gate_proj.weight"),
        r(FfnUp, Matrix, "ffn_up.weight", "mlp.up_proj.weight"),
        r(FfnDown, Matrix, "ffn_down.weight", "mlp.down_proj.weight"),
        r(
            PostFfnNorm,
            Vector,
            "post_ffw_norm.weight",
            "post_feedforward_layernorm.weight",
        ),
    ]
};

impl Role {
    /// Every role a block can have, in the order llama.cpp writes a block's tensors.
    pub const ALL: [Role; 16] = {
        let mut all = [Role::AttnNorm; 16];
        let mut i = 0;
        while i < 16 {
            all[i] = TABLE[i].role;
            i += 1;
        }
        all
    };

    /// The seven linear layers of a block.
    pub const MATRICES: [Role; 7] = [
        Role::AttnQ,
        Role::AttnK,
        Role::AttnV,
        Role::AttnOutput,
        Role::FfnGate,
        Role::FfnUp,
        Role::FfnDown,
    ];

    fn row(self) -> &'static Row {
        &TABLE[self as usize]
    }
    pub fn kind(self) -> Kind {
        self.row().kind
    }
    /// The name inside a GGUF block, e.g. `attn_q.weight`.
    pub fn gguf(self) -> &'static str {
        self.row().gguf
    }
    /// The GGUF name without its `.weight` suffix (`attn_q`): how pruning reports a matrix.
    pub fn short(self) -> &'static str {
        let n = self.gguf();
        n.strip_suffix(".weight").unwrap_or(n)
    }
    /// The name inside a Hugging Face block before a family's renames.
    pub fn hf(self) -> &'static str {
        self.row().hf
    }
    /// An RMSNorm gain (which Hugging Face may store offset, see
    /// [`super::arch::Family::hf_norm_offset`]).
    pub fn is_norm(self) -> bool {
        use Role::*;
        matches!(
            self,
            AttnNorm | FfnNorm | AttnQNorm | AttnKNorm | PostAttnNorm | PostFfnNorm
        )
    }

    /// The activation a linear layer reads.
    pub fn site(self) -> Option<LinearSite> {
        use Role::*;
        match self {
            AttnQ | AttnK | AttnV => Some(LinearSite::Qkv),
            AttnOutput => Some(LinearSite::AttnOut),
            FfnGate | FfnUp => Some(LinearSite::GateUp),
            FfnDown => Some(LinearSite::Down),
            _ => None,
        }
    }
    /// The role whose GGUF block name is `name` (`attn_q.weight`).
    pub fn from_gguf(name: &str) -> Option<Role> {
        TABLE.iter().find(|r| r.gguf == name).map(|r| r.role)
    }
}

/// Whole-model tensors: (GGUF name, Hugging Face name).
pub const TOKEN_EMBD: (&str, &str) = ("token_embd.weight", "model.embed_tokens.weight");
pub const OUTPUT_NORM: (&str, &str) = ("output_norm.weight", "model.norm.weight");
pub const OUTPUT: (&str, &str) = ("output.weight", "lm_head.weight");

/// A block tensor's full GGUF name.
pub fn gguf_name(block: usize, role: Role) -> String {
    format!("blk.{block}.{}", role.gguf())
}

/// A weight as a loader hands it over.
pub enum Weight {
    Matrix(Matrix),
    Vector(Vec<f32>),
}

/// A weight of a layer, borrowed.
#[derive(Clone, Copy)]
pub enum WeightRef<'a> {
    Matrix(&'a Matrix),
    Vector(&'a [f32]),
}

impl Layer {
    /// The weight in `role`, if the layer has one.
    pub fn get(&self, role: Role) -> Option<WeightRef<'_>> {
        use Role::*;
        fn v(v: &Option<Vec<f32>>) -> Option<WeightRef<'_>> {
            v.as_deref().map(WeightRef::Vector)
        }
        match role {
            AttnNorm => Some(WeightRef::Vector(&self.attn_norm)),
            FfnNorm => Some(WeightRef::Vector(&self.ffn_norm)),
            AttnQBias => v(&self.bq),
            AttnKBias => v(&self.bk),
            AttnVBias => v(&self.bv),
            AttnQNorm => v(&self.q_norm),
            AttnKNorm => v(&self.k_norm),
            PostAttnNorm => v(&self.post_attn_norm),
            PostFfnNorm => v(&self.post_ffn_norm),
            m => self.matrix(m).map(WeightRef::Matrix),
        }
    }

    /// The linear layer in `role` (`None` for a vector role).
    pub fn matrix(&self, role: Role) -> Option<&Matrix> {
        use Role::*;
        Some(match role {
            AttnQ => &self.wq,
            AttnK => &self.wk,
            AttnV => &self.wv,
            AttnOutput => &self.wo,
            FfnGate => &self.w_gate,
            FfnUp => &self.w_up,
            FfnDown => &self.w_down,
            _ => return None,
        })
    }

    /// [`Layer::matrix`], mutable.
    pub fn matrix_mut(&mut self, role: Role) -> Option<&mut Matrix> {
        use Role::*;
        Some(match role {
            AttnQ => &mut self.wq,
            AttnK => &mut self.wk,
            AttnV => &mut self.wv,
            AttnOutput => &mut self.wo,
            FfnGate => &mut self.w_gate,
            FfnUp => &mut self.w_up,
            FfnDown => &mut self.w_down,
            _ => return None,
        })
    }

    /// The optional vector in `role` (`None` for a matrix or an always-present norm).
    pub fn optional_vector_mut(&mut self, role: Role) -> Option<&mut Option<Vec<f32>>> {
        use Role::*;
        Some(match role {
            AttnQBias => &mut self.bq,
            AttnKBias => &mut self.bk,
            AttnVBias => &mut self.bv,
            AttnQNorm => &mut self.q_norm,
            AttnKNorm => &mut self.k_norm,
            PostAttnNorm => &mut self.post_attn_norm,
            PostFfnNorm => &mut self.post_ffn_norm,
            _ => return None,
        })
    }

    /// A block with the seven matrices (in [`Role::MATRICES`] order) and the two pre-norms
    /// only: no biases, no Q/K or post-norms, no sliding window.
    pub fn plain(matrices: [Matrix; 7], attn_norm: Vec<f32>, ffn_norm: Vec<f32>) -> Layer {
        let [wq, wk, wv, wo, w_gate, w_up, w_down] = matrices;
        Layer {
            attn_norm,
            wq,
            wk,
            wv,
            wo,
            bq: None,
            bk: None,
            bv: None,
            q_norm: None,
            k_norm: None,
            post_attn_norm: None,
            post_ffn_norm: None,
            ffn_norm,
            w_gate,
            w_up,
            w_down,
            sliding: false,
        }
    }

    /// Every weight the layer has, in table order.
    pub fn weights(&self) -> impl Iterator<Item = (Role, WeightRef<'_>)> {
        Role::ALL
            .into_iter()
            .filter_map(move |r| self.get(r).map(|w| (r, w)))
    }

    /// Build a block from `take(role, required)`, asked for every role of the table:
    /// `required` roles must come back `Some` (the loader names a missing one), optional
    /// ones may be absent. A weight of the wrong kind for its role is a loader bug.
    pub fn assemble(
        mut take: impl FnMut(Role, bool) -> crate::Result<Option<Weight>>,
        roles: &super::arch::Roles,
        sliding: bool,
    ) -> crate::Result<Layer> {
        let mut mat = |role: Role| -> crate::Result<Matrix> {
            match take(role, true)? {
                Some(Weight::Matrix(m)) => Ok(m),
                _ => Err(crate::Error::MissingTensor(role.gguf().into())),
            }
        };
        let (wq, wk, wv, wo) = (
            mat(Role::AttnQ)?,
            mat(Role::AttnK)?,
            mat(Role::AttnV)?,
            mat(Role::AttnOutput)?,
        );
        let (w_gate, w_up, w_down) = (mat(Role::FfnGate)?, mat(Role::FfnUp)?, mat(Role::FfnDown)?);
        let mut vector = |role: Role, required: bool| -> crate::Result<Option<Vec<f32>>> {
            match take(role, required)? {
                Some(Weight::Vector(v)) => Ok(Some(v)),
                Some(Weight::Matrix(_)) => Err(crate::Error::InvalidInput(format!(
                    "{} must be a vector",
                    role.gguf()
                ))),
                None if required => Err(crate::Error::MissingTensor(role.gguf().into())),
                None => Ok(None),
            }
        };
        // Required vectors come back `Some` (`vector` errs otherwise).
        let attn_norm = vector(Role::AttnNorm, true)?.unwrap_or_default();
        let ffn_norm = vector(Role::FfnNorm, true)?.unwrap_or_default();
        let mut layer = Layer::plain([wq, wk, wv, wo, w_gate, w_up, w_down], attn_norm, ffn_norm);
        layer.sliding = sliding;
        for role in Role::ALL {
            let required = roles.required.contains(&role);
            if !required && !roles.optional.contains(&role) {
                continue;
            }
            if let Some(slot) = layer.optional_vector_mut(role) {
                *slot = vector(role, required)?;
            }
        }
        Ok(layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_role_order_and_names_are_unique() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.role as usize, i, "{:?}", row.role);
            assert_eq!(Role::from_gguf(row.gguf), Some(row.role));
        }
        for r in Role::MATRICES {
            assert_eq!(r.kind(), Kind::Matrix);
            assert!(r.site().is_some());
        }
        let matrices = Role::ALL
            .iter()
            .filter(|r| r.kind() == Kind::Matrix)
            .count();
        assert_eq!(matrices, Role::MATRICES.len());
    }
}
