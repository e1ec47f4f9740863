//! Write a [`Model`] as GGUF in llama.cpp's layout: its metadata keys, tensor names, and
//! for Llama the Q/K rows permuted so that llama.cpp's adjacent-pair RoPE applies.

use std::path::Path;

use super::config::{Config, RopeStyle};
use super::gguf::{Array, GgufWriter, TensorData, Value};
use super::llama::{Layer, Model};
use super::tensors::{self, Role, WeightRef};
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
    let mut w = GgufModelWriter::create(path, &model.config, &model.tok_embd, dense_as)?;
    for layer in &model.layers {
        w.put_layer(layer)?;
    }
    let output = (!model.tied()).then_some(&model.output);
    w.finish(metadata, &model.out_norm, output).map(|_| ())
}

/// A model written block by block: only the block being added needs to be in memory, so
/// a pruner can hand each block over as it finishes. The header (block count, per-layer
/// widths) is written by `finish`, after every block is known.
pub struct GgufModelWriter {
    w: GgufWriter,
    config: Config,
    dense_as: GgmlType,
    vocab: usize,
    /// (MLP width, query heads, key/value heads) of each block written.
    widths: Vec<(usize, usize, usize)>,
    /// Whether each block written slides.
    sliding: Vec<bool>,
    params: usize,
}

impl GgufModelWriter {
    /// Start `path` with the token embedding (the first tensor, as llama.cpp writes it).
    pub fn create(
        path: &Path,
        config: &Config,
        tok_embd: &Matrix,
        dense_as: GgmlType,
    ) -> Result<Self> {
        if !matches!(dense_as, GgmlType::F32 | GgmlType::F16) {
            return Err(Error::UnsupportedType(format!(
                "{dense_as} for dense matrices (use f32 or f16, or quantize first)"
            )));
        }
        let mut out = Self {
            w: GgufWriter::create(path)?,
            config: config.clone(),
            dense_as,
            vocab: tok_embd.rows,
            widths: Vec::new(),
            sliding: Vec::new(),
            params: 0,
        };
        out.matrix(tensors::TOKEN_EMBD.0, tok_embd, false)?;
        Ok(out)
    }

    /// Append the next block (numbered in the order blocks are added).
    pub fn put_layer(&mut self, l: &Layer) -> Result<()> {
        let (i, hd) = (self.widths.len(), self.config.head_dim);
        // llama.cpp reads Llama Q/K rows in adjacent-pair order; HF checkpoints use halves.
        let permute = self.config.family().gguf_rope == RopeStyle::Interleaved
            && self.config.rope_style == RopeStyle::Halves;
        for (role, w) in l.weights() {
            let name = tensors::gguf_name(i, role);
            match w {
                WeightRef::Matrix(m) => {
                    let permuted = permute && matches!(role, Role::AttnQ | Role::AttnK);
                    self.matrix(&name, m, permuted)?
                }
                WeightRef::Vector(v) => self.vector(&name, v)?,
            }
        }
        self.widths
            .push((l.ffn_dim(), l.n_heads(hd), l.n_kv_heads(hd)));
        self.sliding.push(l.sliding);
        Ok(())
    }

    /// Blocks added so far.
    pub fn layers(&self) -> usize {
        self.widths.len()
    }

    /// Final norm, the LM head unless tied (`None`), then the header; renames into place.
    /// Returns the parameters written (a tied LM head counted once).
    pub fn finish(
        mut self,
        metadata: Vec<(String, Value)>,
        out_norm: &[f32],
        output: Option<&Matrix>,
    ) -> Result<usize> {
        if self.widths.is_empty() {
            return Err(Error::InvalidInput(
                "a model without blocks cannot be written".into(),
            ));
        }
        self.vector(tensors::OUTPUT_NORM.0, out_norm)?;
        if let Some(m) = output {
            self.matrix(tensors::OUTPUT.0, m, false)?;
        }
        let c = &self.config;
        let a = c.arch.name();
        let u = |v: usize| Value::U32(v as u32);
        // Widths come from the weights: structured pruning changes them. One value when
        // all blocks agree, else llama.cpp's per-layer array.
        let per_layer = |f: &dyn Fn(&(usize, usize, usize)) -> usize| {
            let v: Vec<usize> = self.widths.iter().map(f).collect();
            match v.first() {
                Some(&first) if v.iter().all(|&x| x == first) => u(first),
                _ => Value::Array(Array::U32(v.into_iter().map(|x| x as u32).collect())),
            }
        };
        let mut keys = vec![
            ("general.architecture".to_string(), Value::String(a.into())),
            (format!("{a}.block_count"), u(self.widths.len())),
            (format!("{a}.context_length"), u(c.context_len)),
            (format!("{a}.embedding_length"), u(c.d_model)),
            (format!("{a}.feed_forward_length"), per_layer(&|w| w.0)),
            (format!("{a}.attention.head_count"), per_layer(&|w| w.1)),
            (format!("{a}.attention.head_count_kv"), per_layer(&|w| w.2)),
            (format!("{a}.attention.key_length"), u(c.head_dim)),
            (format!("{a}.attention.value_length"), u(c.head_dim)),
            (
                format!("{a}.attention.layer_norm_rms_epsilon"),
                Value::F32(c.rms_eps),
            ),
            (format!("{a}.rope.freq_base"), Value::F32(c.rope_theta)),
            (format!("{a}.rope.dimension_count"), u(c.rope_dim)),
            (format!("{a}.vocab_size"), u(self.vocab)),
        ];
        if let Some(window) = c.sliding_window {
            // The pattern as an array: layer removal may have broken the family's period.
            keys.extend([
                (format!("{a}.attention.sliding_window"), u(window)),
                (
                    format!("{a}.attention.sliding_window_pattern"),
                    Value::Array(Array::Bool(self.sliding.clone())),
                ),
                (
                    format!("{a}.rope.freq_base_swa"),
                    Value::F32(c.rope_theta_local),
                ),
            ]);
        }
        if let Some(cap) = c.final_softcap {
            keys.push((format!("{a}.final_logit_softcapping"), Value::F32(cap)));
        }
        keys.extend(
            metadata
                .into_iter()
                .filter(|(k, _)| k != "general.architecture"),
        );
        for (k, v) in keys {
            self.w.set(&k, v);
        }
        self.w.finish()?;
        Ok(self.params)
    }

    fn vector(&mut self, name: &str, v: &[f32]) -> Result<()> {
        self.params += v.len();
        self.w.add_tensor(TensorData {
            name: name.into(),
            dims: vec![v.len()],
            dtype: GgmlType::F32,
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
    }

    fn matrix(&mut self, name: &str, m: &Matrix, permute: bool) -> Result<()> {
        self.params += m.rows * m.cols;
        let hd = permute.then_some(self.config.head_dim);
        add_matrix(&mut self.w, name, m, hd, self.dense_as)
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
            Value::Array(Array::U32(vec![m.cols as u32, m.rows as u32])),
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
