//! Build a [`Model`] from a GGUF file. Quantized matrices stay in the memory map.

use super::config::{Arch, Config, RopeStyle};
use super::gguf::{GgufFile, TensorInfo, Value};
use super::llama::{Layer, Model};
use super::save_gguf::sparse_key;
use crate::error::{Error, Result};
use crate::quant::sparse::{Sparse, SparseFormat};
use crate::quant::{blocks::dequantize, GgmlType, Matrix};

pub fn config_from_gguf(f: &GgufFile) -> Result<Config> {
    let arch_name = f.get_str("general.architecture")?;
    let arch = Arch::parse(arch_name)?;
    let key = |k: &str| format!("{arch_name}.{k}");
    // Per-layer arrays (structurally pruned models) give their largest entry here; each
    // block reads its own widths from its weights.
    let int = |k: &str| -> Result<usize> {
        match f.get(&key(k)) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_u64().map(|x| x as usize))
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().max())
                .ok_or_else(|| Error::MissingKey(key(k))),
            _ => f.get_u64(&key(k)).map(|v| v as usize),
        }
    };
    let d_model = int("embedding_length")?;
    let n_heads = int("attention.head_count")?;
    let n_kv_heads = int("attention.head_count_kv").unwrap_or(n_heads);
    let head_dim = int("attention.key_length").unwrap_or(d_model.checked_div(n_heads).unwrap_or(0));
    let vocab_size = match f.tensor_info("token_embd.weight") {
        Some(t) if t.dims.len() == 2 => t.dims[1],
        _ => return Err(Error::MissingTensor("token_embd.weight".into())),
    };
    let config = Config {
        arch,
        n_layers: int("block_count")?,
        d_model,
        n_heads,
        n_kv_heads,
        head_dim,
        ffn_dim: int("feed_forward_length")?,
        vocab_size,
        context_len: int("context_length")?,
        rms_eps: f.get_f64(&key("attention.layer_norm_rms_epsilon"))? as f32,
        rope_theta: f.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0) as f32,
        rope_dim: int("rope.dimension_count").unwrap_or(head_dim),
        // llama.cpp uses its "normal" (adjacent-pair) RoPE for llama and NeoX for qwen2.
        rope_style: match arch {
            Arch::Llama => RopeStyle::Interleaved,
            Arch::Qwen2 => RopeStyle::Halves,
        },
    };
    config.validate(&f.path)?;
    Ok(config)
}

pub fn load_gguf(f: &GgufFile) -> Result<Model> {
    let config = config_from_gguf(f)?;
    let get = |name: &str| {
        f.tensor_info(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))
    };
    let matrix = |name: &str| -> Result<Matrix> { matrix_of(f, get(name)?) };
    let vector = |name: &str| -> Result<Vec<f32>> { vector_of(f, get(name)?) };
    let optional_vector = |name: &str| f.tensor_info(name).map(|t| vector_of(f, t)).transpose();

    let tok_embd = matrix("token_embd.weight")?;
    let output = match f.tensor_info("output.weight") {
        Some(t) => matrix_of(f, t)?,
        None => tok_embd.clone(), // tied embeddings
    };
    let mut layers = Vec::with_capacity(config.n_layers);
    for i in 0..config.n_layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        layers.push(Layer {
            attn_norm: vector(&p("attn_norm.weight"))?,
            wq: matrix(&p("attn_q.weight"))?,
            wk: matrix(&p("attn_k.weight"))?,
            wv: matrix(&p("attn_v.weight"))?,
            wo: matrix(&p("attn_output.weight"))?,
            bq: optional_vector(&p("attn_q.bias"))?,
            bk: optional_vector(&p("attn_k.bias"))?,
            bv: optional_vector(&p("attn_v.bias"))?,
            ffn_norm: vector(&p("ffn_norm.weight"))?,
            w_gate: matrix(&p("ffn_gate.weight"))?,
            w_up: matrix(&p("ffn_up.weight"))?,
            w_down: matrix(&p("ffn_down.weight"))?,
        });
    }
    let out_norm = vector("output_norm.weight")?;
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
    let shape: Vec<usize> = f
        .get(&sparse_key(&t.name, "shape"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64().map(|x| x as usize))
                .collect()
        })
        .unwrap_or_default();
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
