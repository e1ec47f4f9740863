//! llama-quantize's type mixes: which GGML type each tensor of a model gets for Q4_K_M,
//! Q5_K_M, Q3_K_M and the other K-quant presets, so that a file we write has the
//! per-tensor types of the one llama-quantize writes from the same source.
//!
//! The rules are llama.cpp's (`llama_tensor_get_type` in `src/llama-quant.cpp`, as built
//! from llama-cpp-python 0.3.36) for dense models: a base type per preset; more bits for
//! `attn_v` and `ffn_down` in the layers `more_bits` picks (the first and last eighth,
//! and every third layer between) or the first few; `attn_output` raised for the 2- and
//! 3-bit presets; the output head (and a tied embedding) at Q6_K; then, for a row width
//! the type's blocks do not divide, llama.cpp's fallback (Q4_K → Q5_0, Q5_K → Q5_1,
//! Q6_K → Q8_0, Q2_K and Q3_K → Q4_0 where llama.cpp takes IQ4_NL, which we do not
//! write), and f16 where even that does not divide. Mixture-of-experts, Falcon and 70B
//! special cases do not apply to the families we read.

use crate::model::Model;
use crate::quant::GgmlType;

/// A llama-quantize preset: one type everywhere but where the rules say otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    Q2K,
    Q2KS,
    Q3KS,
    Q3KM,
    Q3KL,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
}

/// Names as llama-quantize prints them, with its `llama_ftype` ids (`general.file_type`).
const MIXES: [(Mix, &str, u32); 9] = [
    (Mix::Q2K, "Q2_K", 10),
    (Mix::Q2KS, "Q2_K_S", 21),
    (Mix::Q3KS, "Q3_K_S", 11),
    (Mix::Q3KM, "Q3_K_M", 12),
    (Mix::Q3KL, "Q3_K_L", 13),
    (Mix::Q4KS, "Q4_K_S", 14),
    (Mix::Q4KM, "Q4_K_M", 15),
    (Mix::Q5KS, "Q5_K_S", 16),
    (Mix::Q5KM, "Q5_K_M", 17),
];

impl Mix {
    /// A preset by name, any case (`Q4_K_M`, `q3_k_l`). Plain `Q2_K` is the Q2_K mix, as
    /// in llama-quantize; `Q3_K`, `Q4_K`, `Q5_K` name single types here (all blocks of
    /// that type, llama-quantize's `--pure`), not its aliases of the `_M` mixes.
    pub fn parse(name: &str) -> Option<Self> {
        let up = name.to_ascii_uppercase();
        MIXES.iter().find(|(_, n, _)| *n == up).map(|(m, _, _)| *m)
    }

    pub fn name(self) -> &'static str {
        MIXES
            .iter()
            .find(|(m, _, _)| *m == self)
            .map_or("?", |e| e.1)
    }

    /// llama.cpp's `llama_ftype` of the preset, for `general.file_type`.
    pub fn file_type(self) -> u32 {
        MIXES.iter().find(|(m, _, _)| *m == self).map_or(0, |e| e.2)
    }

    /// The type most tensors get.
    pub fn base(self) -> GgmlType {
        match self {
            Mix::Q2K | Mix::Q2KS => GgmlType::Q2K,
            Mix::Q3KS | Mix::Q3KM | Mix::Q3KL => GgmlType::Q3K,
            Mix::Q4KS | Mix::Q4KM => GgmlType::Q4K,
            Mix::Q5KS | Mix::Q5KM => GgmlType::Q5K,
        }
    }
}

/// The type of every matrix of a model: per layer, in [`crate::model::Layer::matrices`]
/// order, then the token embedding and the output head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypePlan {
    pub blocks: Vec<Vec<GgmlType>>,
    pub tok_embd: GgmlType,
    pub output: GgmlType,
}

/// llama.cpp's layers that get more bits: the first and last eighth, and every third
/// layer in between.
fn more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8).rem_euclid(3) == 2
}

/// The type for `cols`-wide rows: `t`, or llama.cpp's fallback when its blocks do not
/// divide the row (then f16 if even that does not).
pub fn fit_width(t: GgmlType, cols: usize) -> GgmlType {
    if cols.is_multiple_of(t.block_len()) {
        return t;
    }
    let fallback = match t {
        GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        other => other,
    };
    match cols.is_multiple_of(fallback.block_len()) {
        true => fallback,
        false => GgmlType::F16,
    }
}

/// The output head's (and a tied embedding's) type: Q8_0 where the base type's blocks do
/// not divide the row, else Q6_K (Q8_0 stays Q8_0), before the width fallback.
fn head_type(base: GgmlType, cols: usize) -> GgmlType {
    match (cols.is_multiple_of(base.block_len()), base) {
        (false, _) | (_, GgmlType::Q8_0) => GgmlType::Q8_0,
        _ => GgmlType::Q6K,
    }
}

/// What the rules look at: each layer's matrices (role name and row width, in
/// [`crate::model::Layer::matrices`] order), the attention heads, and the embedding and
/// head widths.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shapes {
    pub layers: Vec<Vec<(String, usize)>>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub tok_embd_cols: usize,
    pub output_cols: usize,
    pub tied: bool,
    /// `rank[i]`: how many layers' tensors come before layer `i`'s in the source file.
    /// llama-quantize counts `attn_v` and `ffn_down` tensors in file order, and files
    /// converted from Hugging Face often list layers in name order (0, 1, 10, 11, …), so
    /// "the first eighth" depends on the file. The identity for a model in memory.
    pub rank: Vec<usize>,
}

impl Shapes {
    pub fn of(model: &Model) -> Self {
        Self {
            layers: model
                .layers
                .iter()
                .map(|l| {
                    l.matrices()
                        .into_iter()
                        .map(|(name, _, m)| (name.to_string(), m.cols))
                        .collect()
                })
                .collect(),
            n_heads: model.config.n_heads,
            n_kv_heads: model.config.n_kv_heads,
            tok_embd_cols: model.tok_embd.cols,
            output_cols: model.output.cols,
            tied: model.tied(),
            rank: (0..model.layers.len()).collect(),
        }
    }

    /// Layer ranks from the order of a file's tensor `names` (its `ffn_down` tensors);
    /// kept as they are unless every layer appears exactly once.
    pub fn with_file_order<'a>(mut self, names: impl Iterator<Item = &'a str>) -> Self {
        let n = self.layers.len();
        let order: Vec<usize> = names
            .filter_map(|t| {
                t.strip_prefix("blk.")?
                    .split_once(".ffn_down")?
                    .0
                    .parse()
                    .ok()
            })
            .collect();
        let mut rank = vec![usize::MAX; n];
        for (pos, &layer) in order.iter().enumerate() {
            if let Some(r) = rank.get_mut(layer) {
                *r = pos;
            }
        }
        if order.len() == n && rank.iter().all(|&r| r < n) {
            self.rank = rank;
        }
        self
    }
}

/// Per-tensor types of `mix` for a model of these shapes.
pub fn plan(mix: Mix, shapes: &Shapes) -> TypePlan {
    use Mix::*;
    let base = mix.base();
    let n = shapes.layers.len();
    let gqa = shapes.n_heads / shapes.n_kv_heads.max(1);
    // llama.cpp counts attn_v and ffn_down tensors in file order; with one of each per
    // layer, the counter is the layer index.
    let blocks = shapes
        .layers
        .iter()
        .enumerate()
        .map(|(layer_index, layer)| {
            let i = shapes.rank.get(layer_index).copied().unwrap_or(layer_index);
            layer
                .iter()
                .map(|(name, cols)| {
                    let t = match name.as_str() {
                        "attn_v" => match mix {
                            Q2K if gqa >= 4 => GgmlType::Q4K,
                            Q2K => GgmlType::Q3K,
                            Q2KS if gqa >= 4 => GgmlType::Q4K,
                            Q3KM if i < 2 => GgmlType::Q5K,
                            Q3KM => GgmlType::Q4K,
                            Q3KL => GgmlType::Q5K,
                            Q4KM | Q5KM if more_bits(i, n) => GgmlType::Q6K,
                            Q4KS if i < 4 => GgmlType::Q5K,
                            _ => base,
                        },
                        "ffn_down" => match mix {
                            Q2K => GgmlType::Q3K,
                            Q2KS if i < n / 8 => GgmlType::Q4K,
                            Q3KM if i < n / 16 => GgmlType::Q5K,
                            Q3KM => GgmlType::Q4K,
                            Q3KL => GgmlType::Q5K,
                            Q4KM | Q5KM if more_bits(i, n) => GgmlType::Q6K,
                            Q4KS if i < n / 8 => GgmlType::Q5K,
                            _ => base,
                        },
                        "attn_output" => match mix {
                            Q2K => GgmlType::Q3K,
                            Q3KM => GgmlType::Q4K,
                            Q3KL => GgmlType::Q5K,
                            _ => base,
                        },
                        _ => base,
                    };
                    fit_width(t, *cols)
                })
                .collect()
        })
        .collect();
    let output = fit_width(head_type(base, shapes.output_cols), shapes.output_cols);
    let tok_embd = match shapes.tied {
        true => output,
        false => fit_width(base, shapes.tok_embd_cols),
    };
    TypePlan {
        blocks,
        tok_embd,
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file llama-quantize wrote (recorded by `bench/make-mix-fixtures.py`): its shapes
    /// and the type of every matrix, by GGUF name.
    fn fixture(json: &str) -> (Mix, Shapes, Vec<(String, String)>) {
        let j: serde_json::Value = serde_json::from_str(json).unwrap();
        let tensors: Vec<(String, usize, String)> = j["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let s = |i: usize| t[i].as_str().unwrap().to_string();
                (s(0), t[1].as_u64().unwrap() as usize, s(2))
            })
            .collect();
        let cols = |name: &str| tensors.iter().find(|t| t.0 == name).map(|t| t.1);
        let mut layers: Vec<Vec<(String, usize)>> = Vec::new();
        for (name, c, _) in &tensors {
            let Some(rest) = name.strip_prefix("blk.") else {
                continue;
            };
            let (i, role) = rest.split_once('.').unwrap();
            let i: usize = i.parse().unwrap();
            layers.resize(layers.len().max(i + 1), Vec::new());
            layers[i].push((role.trim_end_matches(".weight").to_string(), *c));
        }
        let shapes = Shapes {
            layers,
            n_heads: j["n_heads"].as_u64().unwrap() as usize,
            n_kv_heads: j["n_kv_heads"].as_u64().unwrap() as usize,
            tok_embd_cols: cols("token_embd.weight").unwrap(),
            output_cols: cols("output.weight").or(cols("token_embd.weight")).unwrap(),
            tied: cols("output.weight").is_none(),
            rank: Vec::new(),
        };
        let shapes = shapes.with_file_order(tensors.iter().map(|t| t.0.as_str()));
        let types = tensors.into_iter().map(|t| (t.0, t.2)).collect();
        (
            Mix::parse(j["mix"].as_str().unwrap()).unwrap(),
            shapes,
            types,
        )
    }

    /// Our rules give every tensor the type llama-quantize gave it, on the Q4_K_M files
    /// the models are published as (the Qwen ones converted with layers in name order,
    /// Gemma's in number order), and on Q5_K_M and Q3_K_M files it wrote here.
    #[test]
    fn plans_equal_llama_quantize_type_lists() {
        for (name, json) in [
            (
                "gemma3-270m",
                include_str!("../../tests/fixtures/mixes/gemma3-270m-q4_k_m.json"),
            ),
            (
                "qwen 0.5b",
                include_str!("../../tests/fixtures/mixes/qwen2.5-coder-0.5b-q4_k_m.json"),
            ),
            (
                "qwen 1.5b",
                include_str!("../../tests/fixtures/mixes/qwen2.5-coder-1.5b-q4_k_m.json"),
            ),
            (
                "qwen 1.5b",
                include_str!("../../tests/fixtures/mixes/qwen2.5-coder-1.5b-q5_k_m.json"),
            ),
            (
                "qwen 1.5b",
                include_str!("../../tests/fixtures/mixes/qwen2.5-coder-1.5b-q3_k_m.json"),
            ),
        ] {
            let (mix, shapes, want) = fixture(json);
            let plan = plan(mix, &shapes);
            let mut got = vec![(
                "token_embd.weight".to_string(),
                plan.tok_embd.name().to_string(),
            )];
            if !shapes.tied {
                got.push(("output.weight".into(), plan.output.name().into()));
            }
            for (i, (layer, types)) in shapes.layers.iter().zip(&plan.blocks).enumerate() {
                for ((role, _), t) in layer.iter().zip(types) {
                    got.push((format!("blk.{i}.{role}.weight"), t.name().to_string()));
                }
            }
            let (mut got, mut want) = (got, want);
            got.sort();
            want.sort();
            let diff: Vec<_> = got.iter().zip(&want).filter(|(a, b)| a != b).collect();
            assert_eq!(got.len(), want.len(), "{name}");
            assert!(diff.is_empty(), "{name} {}: {diff:?}", mix.name());
        }
    }

    #[test]
    fn more_bits_picks_llama_cpp_layers() {
        // 24 layers (Qwen2.5 0.5B): 0-2, 21-23, and 5, 8, …, 20.
        let picked: Vec<usize> = (0..24).filter(|&i| more_bits(i, 24)).collect();
        assert_eq!(picked, [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
    }

    #[test]
    fn widths_fall_back_as_llama_quantize_does() {
        assert_eq!(fit_width(GgmlType::Q4K, 896), GgmlType::Q5_0);
        assert_eq!(fit_width(GgmlType::Q4K, 4864), GgmlType::Q4K);
        assert_eq!(fit_width(GgmlType::Q5K, 576), GgmlType::Q5_1);
        assert_eq!(fit_width(GgmlType::Q6K, 640), GgmlType::Q8_0);
        assert_eq!(fit_width(GgmlType::Q3K, 640), GgmlType::Q4_0);
        assert_eq!(fit_width(GgmlType::Q4_0, 48), GgmlType::F16);
        assert_eq!(Mix::parse("q4_k_m"), Some(Mix::Q4KM));
        assert_eq!(Mix::parse("Q4_K"), None);
        assert_eq!(Mix::Q5KM.file_type(), 17);
    }
}
