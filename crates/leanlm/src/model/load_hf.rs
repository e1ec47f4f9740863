//! Build a [`Model`] from a Hugging Face folder: `config.json` plus `model.safetensors`
//! or shards listed in `model.safetensors.index.json`. Weights are converted to f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

use super::config::{Arch, Config, RopeStyle};
use super::llama::{Layer, Model};
use super::tensors::{self, Kind, Weight};
use crate::error::{Error, Result};
use crate::quant::Matrix;

/// `config.json` of `dir`, parsed, with its path.
fn read_config_json(dir: &Path) -> Result<(PathBuf, Json)> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let j: Json = serde_json::from_str(&text).map_err(|e| Error::BadConfig {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok((path, j))
}

pub fn config_from_hf(dir: &Path) -> Result<Config> {
    let (path, j) = read_config_json(dir)?;
    config_from_json(&path, &j)
}

/// The config of a parsed `config.json` (read from `path`).
fn config_from_json(path: &Path, j: &Json) -> Result<Config> {
    let path = path.to_path_buf();
    let bad = |reason: String| Error::BadConfig {
        path: path.clone(),
        reason,
    };
    let arch_name = j["architectures"][0]
        .as_str()
        .or_else(|| j["model_type"].as_str())
        .ok_or_else(|| bad("no 'architectures' or 'model_type'".into()))?;
    let arch = Arch::parse(arch_name)?;
    // An absent key may take its default; a key of the wrong type is an error, never
    // silently replaced by that default.
    let opt_int = |k: &str| -> Result<Option<usize>> {
        match &j[k] {
            Json::Null => Ok(None),
            v => v
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| bad(format!("'{k}' is {v}, expected a non-negative integer"))),
        }
    };
    let int = |k: &str| opt_int(k)?.ok_or_else(|| bad(format!("'{k}' is missing")));
    let opt_f64 = |k: &str| -> Result<Option<f64>> {
        match &j[k] {
            Json::Null => Ok(None),
            v => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(format!("'{k}' is {v}, expected a number"))),
        }
    };
    let d_model = int("hidden_size")?;
    let n_heads = int("num_attention_heads")?;
    let head_dim = opt_int("head_dim")?.unwrap_or(d_model.checked_div(n_heads).unwrap_or(0));
    if !j["rope_scaling"].is_null() {
        return Err(bad("rope_scaling is not supported yet".into()));
    }
    if !j["attn_logit_softcapping"].is_null() {
        return Err(bad("attn_logit_softcapping is not supported yet".into()));
    }
    if let Some(s) = opt_f64("query_pre_attn_scalar")? {
        // leanlm scales scores by 1/√head_dim, which this key would change.
        if s != head_dim as f64 {
            return Err(bad(format!(
                "query_pre_attn_scalar {s} differs from head_dim {head_dim}; not supported yet"
            )));
        }
    }
    let family = arch.family();
    let sliding_window = opt_int("sliding_window")?.filter(|&w| w > 0 && family.swa_period > 0);
    let config = Config {
        arch,
        n_layers: int("num_hidden_layers")?,
        d_model,
        n_heads,
        n_kv_heads: opt_int("num_key_value_heads")?.unwrap_or(n_heads),
        head_dim,
        ffn_dim: int("intermediate_size")?,
        vocab_size: int("vocab_size")?,
        context_len: int("max_position_embeddings")?,
        rms_eps: opt_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32,
        rope_theta: opt_f64("rope_theta")?.unwrap_or(10_000.0) as f32,
        rope_dim: head_dim,
        rope_style: RopeStyle::Halves,
        sliding_window,
        rope_theta_local: opt_f64("rope_local_base_freq")?
            .map_or(family.rope_theta_local, |v| v as f32),
        final_softcap: opt_f64("final_logit_softcapping")?.map(|v| v as f32),
    };
    config.validate(&path)?;
    Ok(config)
}

/// Which blocks slide: `layer_types` ("sliding_attention" / "full_attention"), else
/// `sliding_window_pattern` (a period), else the family's default.
fn sliding_pattern(path: &Path, j: &Json, c: &Config) -> Result<Vec<bool>> {
    let bad = |reason: String| Error::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    if c.sliding_window.is_none() {
        return Ok(vec![false; c.n_layers]);
    }
    if let Some(types) = j["layer_types"].as_array() {
        if types.len() != c.n_layers {
            return Err(bad(format!(
                "layer_types has {} entries for {} layers",
                types.len(),
                c.n_layers
            )));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(bad(format!(
                    "layer_types holds {t}, expected \"sliding_attention\" or \"full_attention\""
                ))),
            })
            .collect();
    }
    match &j["sliding_window_pattern"] {
        Json::Null => Ok(c.family().default_sliding_pattern(c.n_layers)),
        v => {
            let p = v
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .filter(|&p| p > 0)
                .ok_or_else(|| {
                    bad(format!(
                        "sliding_window_pattern is {v}, expected a positive integer"
                    ))
                })?;
            Ok(super::arch::sliding_by_period(c.n_layers, p))
        }
    }
}

/// The safetensors files of a folder.
fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).map_err(|e| {
        Error::io(
            &index,
            std::io::Error::new(
                e.kind(),
                format!("{e}; the folder has neither model.safetensors nor an index"),
            ),
        )
    })?;
    let j: Json = serde_json::from_str(&text).map_err(|e| Error::BadConfig {
        path: index.clone(),
        reason: e.to_string(),
    })?;
    let mut files: Vec<String> = j["weight_map"]
        .as_object()
        .ok_or_else(|| Error::BadConfig {
            path: index.clone(),
            reason: "no weight_map".into(),
        })?
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    files.sort();
    files.dedup();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Every tensor of the folder, as f32 with its shape.
struct Tensors {
    map: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Tensors {
    fn read(dir: &Path) -> Result<Self> {
        let mut map = HashMap::new();
        for path in shard_paths(dir)? {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: read-only map of a file we do not modify.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| Error::BadConfig {
                path: path.clone(),
                reason: format!("not a valid safetensors file: {e}"),
            })?;
            for (name, view) in st.tensors() {
                let data = view.data();
                let values: Vec<f32> = match view.dtype() {
                    Dtype::F32 => data
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                    Dtype::F16 => data
                        .chunks_exact(2)
                        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                    Dtype::BF16 => data
                        .chunks_exact(2)
                        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                    other => {
                        return Err(Error::BadTensor {
                            path: path.clone(),
                            tensor: name,
                            reason: format!(
                                "has dtype {other:?}; only F32, F16 and BF16 are supported"
                            ),
                        })
                    }
                };
                if map.contains_key(&name) {
                    return Err(Error::BadTensor {
                        path: path.clone(),
                        tensor: name,
                        reason: "appears in more than one shard".into(),
                    });
                }
                map.insert(name, (view.shape().to_vec(), values));
            }
        }
        Ok(Self { map })
    }

    fn take(&mut self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        self.map
            .remove(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    fn matrix(&mut self, name: &str) -> Result<Matrix> {
        let (shape, data) = self.take(name)?;
        match shape[..] {
            [rows, cols] if rows > 0 && cols > 0 => Matrix::from_f32(rows, cols, data),
            _ => Err(Error::InvalidInput(format!(
                "tensor '{name}' has shape {shape:?}; expected a matrix with no zero dimension"
            ))),
        }
    }

    fn vector(&mut self, name: &str) -> Result<Vec<f32>> {
        Ok(self.take(name)?.1)
    }
}

impl Tensors {
    /// Distinct `model.layers.N.` indices, which must run 0, 1, … without a gap.
    fn blocks_present(&self) -> Result<usize> {
        let indices: std::collections::BTreeSet<usize> = self
            .map
            .keys()
            .filter_map(|k| {
                k.strip_prefix("model.layers.")?
                    .split('.')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        match indices.last() {
            Some(&last) if last + 1 != indices.len() => {
                let gap = (0..).find(|i| !indices.contains(i)).unwrap_or(0);
                Err(Error::MissingTensor(format!(
                    "model.layers.{gap}.* (the folder has layers up to {last})"
                )))
            }
            _ => Ok(indices.len()),
        }
    }
}

/// The rows of block `i`'s projections must be what config.json's widths say.
fn check_widths(path: &Path, c: &Config, i: usize, l: &Layer) -> Result<()> {
    let checks = [
        (
            "self_attn.q_proj",
            l.wq.rows,
            "num_attention_heads",
            c.n_heads,
            c.head_dim,
        ),
        (
            "self_attn.k_proj",
            l.wk.rows,
            "num_key_value_heads",
            c.n_kv_heads,
            c.head_dim,
        ),
        (
            "self_attn.v_proj",
            l.wv.rows,
            "num_key_value_heads",
            c.n_kv_heads,
            c.head_dim,
        ),
        (
            "mlp.gate_proj",
            l.w_gate.rows,
            "intermediate_size",
            c.ffn_dim,
            1,
        ),
    ];
    for (name, rows, key, n, per) in checks {
        if n.checked_mul(per) != Some(rows) {
            return Err(Error::BadConfig {
                path: path.to_path_buf(),
                reason: format!(
                    "model.layers.{i}.{name}.weight has {rows} rows, but {key} = {n} needs {}",
                    n.saturating_mul(per)
                ),
            });
        }
    }
    Ok(())
}

pub fn load_hf(dir: &Path) -> Result<Model> {
    // config.json is read once, for the config and for the sliding pattern.
    let (config_path, json) = read_config_json(dir)?;
    let config = config_from_json(&config_path, &json)?;
    let mut t = Tensors::read(dir)?;
    // Checked before anything is sized by the layer count.
    let present = t.blocks_present()?;
    if present != config.n_layers {
        return Err(Error::BadConfig {
            path: config_path,
            reason: format!(
                "num_hidden_layers is {} but the weights hold {present} layers",
                config.n_layers
            ),
        });
    }
    let tok_embd = t.matrix(tensors::TOKEN_EMBD.1)?;
    let output = match t.matrix(tensors::OUTPUT.1) {
        Ok(m) => m,
        Err(Error::MissingTensor(_)) => tok_embd.clone(), // tie_word_embeddings
        Err(e) => return Err(e),
    };
    if tok_embd.rows != config.vocab_size {
        return Err(Error::BadConfig {
            path: config_path,
            reason: format!(
                "vocab_size is {} but model.embed_tokens.weight has {} rows",
                config.vocab_size, tok_embd.rows
            ),
        });
    }
    let family = config.family();
    let sliding = sliding_pattern(&config_path, &json, &config)?;
    // Norm gains as HF stores them plus the family's offset (Gemma's `1 + w`).
    let gain = |mut v: Vec<f32>| {
        v.iter_mut().for_each(|x| *x += family.hf_norm_offset);
        v
    };
    let mut layers = Vec::with_capacity(config.n_layers);
    for (i, &sliding) in sliding.iter().enumerate() {
        let take = |role: tensors::Role, required: bool| -> Result<Option<Weight>> {
            let name = format!("model.layers.{i}.{}", family.hf_name(role));
            if !required && !t.map.contains_key(&name) {
                return Ok(None);
            }
            Ok(Some(match role.kind() {
                Kind::Matrix => Weight::Matrix(t.matrix(&name)?),
                Kind::Vector if role.is_norm() => Weight::Vector(gain(t.vector(&name)?)),
                Kind::Vector => Weight::Vector(t.vector(&name)?),
            }))
        };
        let layer = Layer::assemble(take, &family.roles, sliding)?;
        check_widths(&config_path, &config, i, &layer)?;
        layers.push(layer);
    }
    let out_norm = gain(t.vector(tensors::OUTPUT_NORM.1)?);
    Model::new(config, tok_embd, layers, out_norm, output)
}
