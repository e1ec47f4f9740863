//! Build a [`Model`] from a GGUF file. Quantized matrices stay in the memory map.

use super::config::{Arch, Config};
use super::gguf::{GgufFile, TensorInfo, Value};
use super::llama::{Layer, Model};
use super::save_gguf::sparse_key;
use super::tensors::{self, Kind, Weight};
use crate::error::{Error, Result};
use crate::quant::sparse::{Sparse, SparseFormat};
use crate::quant::{blocks::dequantize, GgmlType, Matrix};

/// Each block's widths as the metadata states them (one value for all blocks, or
/// llama.cpp's per-layer arrays after structured pruning).
struct Widths {
    heads: Vec<usize>,
    kv_heads: Vec<usize>,
    ffn: Vec<usize>,
    /// Which blocks attend through the sliding window.
    sliding: Vec<bool>,
}

/// Which of `n_layers` blocks slide: llama.cpp's `sliding_window_pattern`, an array of
/// booleans or a period (every `n`th block global), else the family's default period.
fn sliding_pattern(f: &GgufFile, arch: Arch, window: bool, n_layers: usize) -> Result<Vec<bool>> {
    let key = format!("{}.attention.sliding_window_pattern", arch.name());
    let family = arch.family();
    if !window {
        return Ok(vec![false; n_layers]);
    }
    match f.get(&key) {
        None => Ok(family.default_sliding_pattern(n_layers)),
        Some(Value::Array(a)) => per_block_array(f, &key, a, n_layers, "booleans", |v| v.as_bool()),
        Some(_) => Ok(match opt_usize(f, &key)?.unwrap_or(0) {
            0 => vec![true; n_layers],
            period => super::arch::sliding_by_period(n_layers, period),
        }),
    }
}

/// The number of blocks the tensor table holds: its distinct `blk.N.` indices, which must
/// run 0, 1, … without a gap. Counting distinct names (not taking the largest index)
/// keeps the count bounded by the table's size.
fn blocks_present(f: &GgufFile) -> Result<usize> {
    let indices: std::collections::BTreeSet<usize> = f
        .tensors
        .iter()
        .filter_map(|t| t.name.strip_prefix("blk.")?.split('.').next()?.parse().ok())
        .collect();
    let n = indices.len();
    match indices.last() {
        Some(&last) if last != n - 1 => {
            let gap = (0..).find(|i| !indices.contains(i)).unwrap_or(n);
            Err(Error::MissingTensor(format!(
                "blk.{gap}.* (the file has tensors for blocks up to blk.{last})"
            )))
        }
        _ => Ok(n),
    }
}

/// A metadata integer as usize, `None` when absent; other types are errors.
fn opt_usize(f: &GgufFile, key: &str) -> Result<Option<usize>> {
    match f.opt_u64(key)? {
        None => Ok(None),
        Some(v) => usize::try_from(v)
            .map(Some)
            .map_err(|_| f.wrong_type(key, &Value::U64(v), "a size this machine can address")),
    }
}

fn usize_key(f: &GgufFile, key: &str) -> Result<usize> {
    opt_usize(f, key)?.ok_or_else(|| Error::MissingKey(key.to_string()))
}

/// One value per block from a metadata array of exactly `n_layers` entries.
fn per_block_array<T>(
    f: &GgufFile,
    key: &str,
    a: &super::gguf::Array,
    n_layers: usize,
    what: &str,
    parse: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>> {
    if a.len() != n_layers {
        return Err(Error::BadConfig {
            path: f.path.clone(),
            reason: format!("'{key}' has {} entries for {n_layers} blocks", a.len()),
        });
    }
    a.iter()
        .map(|v| parse(&v).ok_or_else(|| f.wrong_type(key, &v, &format!("an array of {what}"))))
        .collect()
}

/// A per-block width: one integer, or an array of exactly `n_layers` integers.
fn per_layer(f: &GgufFile, key: &str, n_layers: usize) -> Result<Option<Vec<usize>>> {
    match f.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => {
            per_block_array(f, key, a, n_layers, "non-negative integers", |v| {
                v.as_u64().and_then(|x| usize::try_from(x).ok())
            })
            .map(Some)
        }
        Some(_) => Ok(opt_usize(f, key)?.map(|v| vec![v; n_layers])),
    }
}

fn config_and_widths(f: &GgufFile) -> Result<(Config, Widths)> {
    let arch_name = f.get_str("general.architecture")?;
    let arch = Arch::parse(arch_name)?;
    let key = |k: &str| format!("{arch_name}.{k}");
    let bad = |reason: String| Error::BadConfig {
        path: f.path.clone(),
        reason,
    };
    // The block count is checked against the tensors before anything is sized by it.
    let n_layers = usize_key(f, &key("block_count"))?;
    let present = blocks_present(f)?;
    if n_layers != present {
        return Err(bad(format!(
            "{} is {n_layers} but the file holds tensors for {present} blocks",
            key("block_count")
        )));
    }
    let d_model = usize_key(f, &key("embedding_length"))?;
    let heads = per_layer(f, &key("attention.head_count"), n_layers)?
        .ok_or_else(|| Error::MissingKey(key("attention.head_count")))?;
    let kv_heads =
        per_layer(f, &key("attention.head_count_kv"), n_layers)?.unwrap_or_else(|| heads.clone());
    let ffn = per_layer(f, &key("feed_forward_length"), n_layers)?
        .ok_or_else(|| Error::MissingKey(key("feed_forward_length")))?;
    // The config holds the widest block.
    let widest = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
    let n_heads = widest(&heads);
    let head_dim = match opt_usize(f, &key("attention.key_length"))? {
        Some(v) => v,
        None => d_model.checked_div(n_heads).unwrap_or(0),
    };
    let vocab_size = match f.tensor_info("token_embd.weight") {
        Some(t) if t.dims.len() == 2 => t.dims[1],
        Some(t) => {
            return Err(Error::BadTensor {
                path: f.path.clone(),
                tensor: t.name.clone(),
                reason: format!("expected a matrix, found shape {:?}", t.shape()),
            })
        }
        None => return Err(Error::MissingTensor("token_embd.weight".into())),
    };
    let sliding_window = opt_usize(f, &key("attention.sliding_window"))?.filter(|&w| w > 0);
    let sliding = sliding_pattern(f, arch, sliding_window.is_some(), n_layers)?;
    let config = Config {
        arch,
        n_layers,
        d_model,
        n_heads,
        n_kv_heads: widest(&kv_heads),
        head_dim,
        ffn_dim: widest(&ffn),
        vocab_size,
        context_len: usize_key(f, &key("context_length"))?,
        rms_eps: f.get_f64(&key("attention.layer_norm_rms_epsilon"))? as f32,
        rope_theta: f.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0) as f32,
        rope_dim: opt_usize(f, &key("rope.dimension_count"))?.unwrap_or(head_dim),
        // llama.cpp's "normal" (adjacent-pair) RoPE for llama, NeoX's for the others.
        rope_style: arch.family().gguf_rope,
        sliding_window,
        rope_theta_local: f
            .opt_f64(&key("rope.freq_base_swa"))?
            .map_or(arch.family().rope_theta_local, |v| v as f32),
        final_softcap: f
            .opt_f64(&key("final_logit_softcapping"))?
            .filter(|&c| c != 0.0)
            .map(|c| c as f32),
    };
    config.validate(&f.path)?;
    Ok((
        config,
        Widths {
            heads,
            kv_heads,
            ffn,
            sliding,
        },
    ))
}

pub fn config_from_gguf(f: &GgufFile) -> Result<Config> {
    config_and_widths(f).map(|(c, _)| c)
}

/// Check the rows of block `i`'s matrices against the widths its metadata states, so a
/// head count that contradicts the weights is an error rather than a silently different
/// attention layout.
fn check_widths(f: &GgufFile, c: &Config, w: &Widths, i: usize, l: &Layer) -> Result<()> {
    let a = c.arch.name();
    let checks = [
        (
            "attn_q",
            l.wq.rows,
            "attention.head_count",
            w.heads[i],
            c.head_dim,
        ),
        (
            "attn_k",
            l.wk.rows,
            "attention.head_count_kv",
            w.kv_heads[i],
            c.head_dim,
        ),
        (
            "attn_v",
            l.wv.rows,
            "attention.head_count_kv",
            w.kv_heads[i],
            c.head_dim,
        ),
        (
            "ffn_gate",
            l.w_gate.rows,
            "feed_forward_length",
            w.ffn[i],
            1,
        ),
    ];
    for (name, rows, key, n, per) in checks {
        if n.checked_mul(per) != Some(rows) {
            let what = match per {
                1 => format!("{a}.{key} = {n}"),
                _ => format!("{a}.{key} = {n} heads of {per}"),
            };
            return Err(Error::BadTensor {
                path: f.path.clone(),
                tensor: format!("blk.{i}.{name}.weight"),
                reason: format!(
                    "has {rows} rows, but {what} needs {}",
                    n.saturating_mul(per)
                ),
            });
        }
    }
    Ok(())
}

pub fn load_gguf(f: &GgufFile) -> Result<Model> {
    let (config, widths) = config_and_widths(f)?;
    let get = |name: &str| {
        f.tensor_info(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))
    };
    let matrix = |name: &str| -> Result<Matrix> { matrix_of(f, get(name)?) };
    let vector = |name: &str| -> Result<Vec<f32>> { vector_of(f, get(name)?) };

    let tok_embd = matrix(tensors::TOKEN_EMBD.0)?;
    let output = match f.tensor_info(tensors::OUTPUT.0) {
        Some(t) => matrix_of(f, t)?,
        None => tok_embd.clone(), // tied embeddings
    };
    // n_layers equals the blocks present in the tensor table, so this is bounded by the file.
    let mut layers = Vec::with_capacity(config.n_layers);
    for i in 0..config.n_layers {
        let take = |role, required: bool| -> Result<Option<Weight>> {
            let name = tensors::gguf_name(i, role);
            let Some(t) = f.tensor_info(&name) else {
                return match required {
                    true => Err(Error::MissingTensor(name)),
                    false => Ok(None),
                };
            };
            Ok(Some(match role.kind() {
                Kind::Matrix => Weight::Matrix(matrix_of(f, t)?),
                Kind::Vector => Weight::Vector(vector_of(f, t)?),
            }))
        };
        let layer = Layer::assemble(take, &config.family().roles, widths.sliding[i])?;
        check_widths(f, &config, &widths, i, &layer)?;
        layers.push(layer);
    }
    let out_norm = vector(tensors::OUTPUT_NORM.0)?;
    Model::new(config, tok_embd, layers, out_norm, output)
}

fn matrix_of(f: &GgufFile, t: &TensorInfo) -> Result<Matrix> {
    if let Some(format) = f.get(&sparse_key(&t.name, "format")) {
        return sparse_matrix_of(f, t, format);
    }
    if t.dims.len() != 2 {
        return Err(Error::BadTensor {
            path: f.path.clone(),
            tensor: t.name.clone(),
            reason: format!("expected a matrix, found shape {:?}", t.shape()),
        });
    }
    if t.dims.contains(&0) {
        return Err(Error::BadTensor {
            path: f.path.clone(),
            tensor: t.name.clone(),
            reason: format!("has a zero-width shape {:?}", t.shape()),
        });
    }
    Matrix::from_ggml(t.dims[1], t.dims[0], t.dtype, f.tensor_shared(t))
}

/// A sparse matrix: a 1-D I8 tensor of its bytes, with its layout and shape in metadata.
fn sparse_matrix_of(f: &GgufFile, t: &TensorInfo, format: &Value) -> Result<Matrix> {
    let bad = |reason: String| Error::BadTensor {
        path: f.path.clone(),
        tensor: t.name.clone(),
        reason,
    };
    let format = format
        .as_str()
        .and_then(SparseFormat::parse)
        .ok_or_else(|| bad(format!("unknown sparse layout {}", format.summary())))?;
    let shape_key = sparse_key(&t.name, "shape");
    let shape: Vec<usize> = match f.get(&shape_key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| {
                        f.wrong_type(&shape_key, &v, "an array of non-negative integers")
                    })
            })
            .collect::<Result<_>>()?,
        Some(v) => return Err(f.wrong_type(&shape_key, v, "an array of two integers")),
        None => Vec::new(),
    };
    if shape.len() != 2 || t.dtype != GgmlType::I8 || t.dims.len() != 1 {
        return Err(bad(
            "sparse tensors are 1-D I8 with a 2-D shape in metadata".into(),
        ));
    }
    let s = Sparse::new(format, shape[1], shape[0], f.tensor_shared(t))
        .map_err(|e| bad(e.to_string()))?;
    Ok(Matrix::from_sparse(s))
}

fn vector_of(f: &GgufFile, t: &TensorInfo) -> Result<Vec<f32>> {
    let mut out = vec![0f32; t.elements()];
    dequantize(t.dtype, f.tensor_bytes(t), &mut out)?;
    Ok(out)
}
