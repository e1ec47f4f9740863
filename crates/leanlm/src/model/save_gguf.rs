//! Write a [`Model`] as GGUF in llama.cpp's layout: its metadata keys, tensor names, and
//! for Llama the Q/K rows permuted so that llama.cpp's adjacent-pair RoPE applies.

use std::path::Path;

use super::config::{Arch, RopeStyle};
use super::gguf::{GgufWriter, TensorData, Value};
use super::llama::Model;
use crate::error::{Error, Result};
use crate::quant::matrix::Storage;
use crate::quant::{GgmlType, Matrix};

/// Write `model` with the given metadata (`tokenizer.*` and `general.*` keys) to `path`.
/// Matrices held as dense f32 are written as `dense_as` (F32 or F16); quantized ones keep
/// their type.
pub fn save_gguf(
    model: &Model,
    metadata: Vec<(String, Value)>,
    path: &Path,
    dense_as: GgmlType,
) -> Result<()> {
    if !matches!(dense_as, GgmlType::F32 | GgmlType::F16) {
        return Err(Error::UnsupportedType(format!(
            "{dense_as} for dense matrices (use f32 or f16, or quantize first)"
        )));
    }
    let c = &model.config;
    let a = c.arch.name();
    let mut w = GgufWriter::default();
    let u = |v: usize| Value::U32(v as u32);
    // Widths come from the weights: structured pruning changes them. One value when all
    // blocks agree, else llama.cpp's per-layer array.
    let per_layer = |f: &dyn Fn(&super::Layer) -> usize| {
        let v: Vec<usize> = model.layers.iter().map(f).collect();
        match v.first() {
            Some(&first) if v.iter().all(|&x| x == first) => u(first),
            _ => Value::Array(v.into_iter().map(u).collect()),
        }
    };
    let hd = c.head_dim;
    w.set("general.architecture", Value::String(a.into()));
    w.set(&format!("{a}.block_count"), u(model.layers.len()));
    w.set(&format!("{a}.context_length"), u(c.context_len));
    w.set(&format!("{a}.embedding_length"), u(c.d_model));
    w.set(
        &format!("{a}.feed_forward_length"),
        per_layer(&|l| l.ffn_dim()),
    );
    w.set(
        &format!("{a}.attention.head_count"),
        per_layer(&|l| l.n_heads(hd)),
    );
    w.set(
        &format!("{a}.attention.head_count_kv"),
        per_layer(&|l| l.n_kv_heads(hd)),
    );
    w.set(&format!("{a}.attention.key_length"), u(c.head_dim));
    w.set(&format!("{a}.attention.value_length"), u(c.head_dim));
    w.set(
        &format!("{a}.attention.layer_norm_rms_epsilon"),
        Value::F32(c.rms_eps),
    );
    w.set(&format!("{a}.rope.freq_base"), Value::F32(c.rope_theta));
    w.set(&format!("{a}.rope.dimension_count"), u(c.rope_dim));
    w.set(&format!("{a}.vocab_size"), u(model.vocab_size()));
    for (k, v) in metadata {
        if k != "general.architecture" {
            w.set(&k, v);
        }
    }
    // llama.cpp reads Llama Q/K rows in adjacent-pair order; HF checkpoints use halves.
    let permute = c.arch == Arch::Llama && c.rope_style == RopeStyle::Halves;
    let mt = |w: &mut GgufWriter, name: &str, m: &Matrix, p: Option<usize>| {
        add_matrix(w, name, m, p, dense_as)
    };
    mt(&mut w, "token_embd.weight", &model.tok_embd, None)?;
    for (i, l) in model.layers.iter().enumerate() {
        let n = |s: &str| format!("blk.{i}.{s}");
        w.add_tensor(vector_tensor(&n("attn_norm.weight"), &l.attn_norm))?;
        let pq = permute.then_some(hd);
        mt(&mut w, &n("attn_q.weight"), &l.wq, pq)?;
        mt(&mut w, &n("attn_k.weight"), &l.wk, pq)?;
        mt(&mut w, &n("attn_v.weight"), &l.wv, None)?;
        mt(&mut w, &n("attn_output.weight"), &l.wo, None)?;
        for (name, b) in [
            ("attn_q.bias", &l.bq),
            ("attn_k.bias", &l.bk),
            ("attn_v.bias", &l.bv),
        ] {
            if let Some(b) = b {
                w.add_tensor(vector_tensor(&n(name), b))?;
            }
        }
        w.add_tensor(vector_tensor(&n("ffn_norm.weight"), &l.ffn_norm))?;
        mt(&mut w, &n("ffn_gate.weight"), &l.w_gate, None)?;
        mt(&mut w, &n("ffn_up.weight"), &l.w_up, None)?;
        mt(&mut w, &n("ffn_down.weight"), &l.w_down, None)?;
    }
    w.add_tensor(vector_tensor("output_norm.weight", &model.out_norm))?;
    if !model.tied() {
        mt(&mut w, "output.weight", &model.output, None)?;
    }
    w.write(path)
}

fn vector_tensor(name: &str, v: &[f32]) -> TensorData {
    TensorData {
        name: name.into(),
        dims: vec![v.len()],
        dtype: GgmlType::F32,
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Row `dst` of the permuted matrix is row `perm[dst]` of the source: each head's rows go
/// from halves order (i, i + d/2) to adjacent pairs (2i, 2i + 1).
fn head_permutation(rows: usize, hd: usize) -> Vec<usize> {
    let half = hd / 2;
    let mut perm = vec![0; rows];
    for r in 0..rows {
        let (head, j) = (r / hd, r % hd);
        let (s, i) = (j / half, j % half); // halves order: j = s·half + i
        perm[head * hd + 2 * i + s] = r;
    }
    perm
}

/// Key of a sparse tensor's layout and 2-D shape (GGUF has no sparse types: the bytes are
/// stored as a 1-D I8 tensor, which llama.cpp refuses, by name, instead of misreading).
pub fn sparse_key(tensor: &str, field: &str) -> String {
    format!("leanlm.sparse.{tensor}.{field}")
}

/// Add a matrix in its own storage type, its rows permuted for RoPE when
/// `permute_head_dim` is given.
fn add_matrix(
    w: &mut GgufWriter,
    name: &str,
    m: &Matrix,
    permute_head_dim: Option<usize>,
    dense_as: GgmlType,
) -> Result<()> {
    if let Storage::Sparse(s) = &m.storage {
        let s = match permute_head_dim {
            Some(hd) => s.permute_rows(&head_permutation(m.rows, hd))?,
            None => s.clone(),
        };
        w.set(
            &sparse_key(name, "format"),
            Value::String(s.format.name().into()),
        );
        w.set(
            &sparse_key(name, "shape"),
            Value::Array(vec![Value::U32(m.cols as u32), Value::U32(m.rows as u32)]),
        );
        return w.add_tensor(TensorData {
            name: name.into(),
            dims: vec![s.nbytes()],
            dtype: GgmlType::I8,
            bytes: s.bytes.as_slice().to_vec(),
        });
    }
    let (dtype, bytes) = match &m.storage {
        Storage::F32(v) if dense_as == GgmlType::F16 => (
            GgmlType::F16,
            v.iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
        Storage::F32(v) => (
            GgmlType::F32,
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        ),
        Storage::Quant { dtype, bytes } => (*dtype, bytes.as_slice().to_vec()),
        Storage::Sparse(_) => unreachable!("handled above"),
    };
    let bytes = match permute_head_dim {
        None => bytes,
        Some(hd) => {
            let rb = bytes.len() / m.rows;
            let mut out = vec![0u8; bytes.len()];
            for (dst, &src) in head_permutation(m.rows, hd).iter().enumerate() {
                out[dst * rb..(dst + 1) * rb].copy_from_slice(&bytes[src * rb..(src + 1) * rb]);
            }
            out
        }
    };
    w.add_tensor(TensorData {
        name: name.into(),
        dims: vec![m.cols, m.rows],
        dtype,
        bytes,
    })
}
