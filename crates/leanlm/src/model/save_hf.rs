//! Write a [`Model`] as a Hugging Face folder: `config.json`, `model.safetensors` and the
//! tokenizer files, in transformers' Llama/Qwen2 layout. Llama Q/K rows loaded from GGUF
//! (adjacent-pair RoPE order) go back to HF's halves order. Blocks are written one at a
//! time (a pruner hands them over as it finishes them), and the folder is assembled under
//! a temporary name and renamed at the end, so an interrupted write leaves no half folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::arch::Activation;
use super::config::{Config, RopeStyle};
use super::destination::{self, OutputKind};
use super::llama::{Layer, Model};
use super::spill::{with_suffix, SpilledFile};
use super::tensors::{self, Role, WeightRef};
use crate::error::{Error, Result};
use crate::quant::Matrix;
use crate::tokenizer::Tokenizer;

/// Element type of the written tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfDtype {
    F32,
    F16,
    BF16,
}

impl HfDtype {
    fn safetensors_name(self) -> &'static str {
        match self {
            HfDtype::F32 => "F32",
            HfDtype::F16 => "F16",
            HfDtype::BF16 => "BF16",
        }
    }

    fn torch_name(self) -> &'static str {
        match self {
            HfDtype::F32 => "float32",
            HfDtype::F16 => "float16",
            HfDtype::BF16 => "bfloat16",
        }
    }
}

pub fn save_hf(model: &Model, tokenizer: &Tokenizer, dir: &Path, dtype: HfDtype) -> Result<()> {
    let mut w = HfModelWriter::create(dir, &model.config, &model.tok_embd, dtype)?;
    for layer in &model.layers {
        w.put_layer(layer)?;
    }
    let output = (!model.tied()).then_some(&model.output);
    w.finish(tokenizer, &model.out_norm, output).map(|_| ())
}

/// A Hugging Face folder written block by block: only the block being added is in memory.
/// `config.json` is written by `finish`, once every block's widths are known.
pub struct HfModelWriter {
    dir: PathBuf,
    tmp: PathBuf,
    /// Open until `finish`.
    st: Option<SafetensorsWriter>,
    config: Config,
    dtype: HfDtype,
    vocab: usize,
    /// (query heads, key/value heads, MLP width, q/k/v biases) of each block written.
    widths: Vec<(usize, usize, usize, bool)>,
    /// Whether each block written slides.
    sliding: Vec<bool>,
    params: usize,
    finished: bool,
}

impl HfModelWriter {
    /// Start the folder `dir` (written as `dir.partial` until `finish`) with the token
    /// embedding.
    pub fn create(dir: &Path, config: &Config, tok_embd: &Matrix, dtype: HfDtype) -> Result<Self> {
        if config.rope_dim != config.head_dim {
            return Err(Error::InvalidInput(
                "partial rotary embeddings are not expressible in a Llama config".into(),
            ));
        }
        // Never a recursive delete: a stale temporary folder is emptied only of our files,
        // and anything else in the way is an error.
        destination::remove_stale_partials(dir)?;
        let tmp = with_suffix(dir, ".partial");
        std::fs::create_dir(&tmp).map_err(|e| Error::write(&tmp, e))?;
        // The marker first: a folder left by a kill is then recognisably ours.
        let st = destination::write_marker(&tmp, OutputKind::HfFolder)
            .and_then(|_| SafetensorsWriter::create(&tmp.join("model.safetensors"), dtype));
        if st.is_err() {
            let _ = destination::remove_stale_partials(dir);
        }
        let mut out = Self {
            dir: dir.to_path_buf(),
            st: Some(st?),
            tmp,
            config: config.clone(),
            dtype,
            vocab: tok_embd.rows,
            widths: Vec::new(),
            sliding: Vec::new(),
            params: 0,
            finished: false,
        };
        out.matrix(tensors::TOKEN_EMBD.1, tok_embd, false)?;
        Ok(out)
    }

    /// Append the next block (numbered in the order blocks are added).
    pub fn put_layer(&mut self, l: &Layer) -> Result<()> {
        let (i, hd) = (self.widths.len(), self.config.head_dim);
        let family = self.config.family();
        // Halves-order rows for llama's q/k when the model holds them in pair order.
        let unpermute = self.config.rope_style == RopeStyle::Interleaved;
        for (role, w) in l.weights() {
            let name = format!("model.layers.{i}.{}", family.hf_name(role));
            match w {
                WeightRef::Matrix(m) => {
                    let permuted = unpermute && matches!(role, Role::AttnQ | Role::AttnK);
                    self.matrix(&name, m, permuted)?
                }
                WeightRef::Vector(v) if role.is_norm() => {
                    self.vector(&name, &stored_gain(v, family.hf_norm_offset))?
                }
                WeightRef::Vector(v) => self.vector(&name, v)?,
            }
        }
        self.widths
            .push((l.n_heads(hd), l.n_kv_heads(hd), l.ffn_dim(), l.bq.is_some()));
        self.sliding.push(l.sliding);
        Ok(())
    }

    /// Blocks added so far.
    pub fn layers(&self) -> usize {
        self.widths.len()
    }

    /// Final norm, the LM head unless tied (`None`), config and tokenizer files; renames
    /// the folder into place. Returns the parameters written (a tied head counted once).
    pub fn finish(
        mut self,
        tokenizer: &Tokenizer,
        out_norm: &[f32],
        output: Option<&Matrix>,
    ) -> Result<usize> {
        // transformers' config has one width per kind: blocks must agree.
        let &(heads, kv_heads, ffn, bias) = self.widths.first().ok_or_else(|| {
            Error::InvalidInput("a model without blocks cannot be written".into())
        })?;
        if self
            .widths
            .iter()
            .any(|w| (w.0, w.1, w.2) != (heads, kv_heads, ffn))
        {
            return Err(Error::InvalidInput(
                "blocks have different head counts or MLP widths, which a Hugging Face config \
                 cannot describe; write GGUF instead"
                    .into(),
            ));
        }
        let family = self.config.family();
        self.vector(
            tensors::OUTPUT_NORM.1,
            &stored_gain(out_norm, family.hf_norm_offset),
        )?;
        if let Some(m) = output {
            self.matrix(tensors::OUTPUT.1, m, false)?;
        }
        let c = &self.config;
        let mut config = json!({
            "architectures": [family.hf_architectures[0]],
            "model_type": family.hf_model_type,
            "hidden_size": c.d_model,
            "intermediate_size": ffn,
            "num_hidden_layers": self.widths.len(),
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": c.head_dim,
            "hidden_act": match family.activation {
                Activation::SiluGlu => "silu",
                Activation::GeluTanhGlu => "gelu_pytorch_tanh",
            },
            "max_position_embeddings": c.context_len,
            "rms_norm_eps": c.rms_eps,
            "rope_theta": c.rope_theta,
            "vocab_size": self.vocab,
            "tie_word_embeddings": output.is_none(),
            "attention_bias": bias,
            "bos_token_id": tokenizer.bos,
            "eos_token_id": tokenizer.eos,
            "torch_dtype": self.dtype.torch_name(),
        });
        if let Some(window) = c.sliding_window {
            let types: Vec<&str> = self
                .sliding
                .iter()
                .map(|&s| match s {
                    true => "sliding_attention",
                    false => "full_attention",
                })
                .collect();
            config["sliding_window"] = json!(window);
            config["layer_types"] = json!(types);
            config["rope_local_base_freq"] = json!(c.rope_theta_local);
        }
        if family.activation == Activation::GeluTanhGlu {
            config["hidden_activation"] = json!("gelu_pytorch_tanh");
            config["query_pre_attn_scalar"] = json!(c.head_dim);
        }
        if let Some(cap) = c.final_softcap {
            config["final_logit_softcapping"] = json!(cap);
        }
        let tmp = self.tmp.clone();
        let write_json = |name: &str, v: &serde_json::Value| {
            let path = tmp.join(name);
            let text = serde_json::to_string_pretty(v).expect("serializable");
            std::fs::write(&path, text).map_err(|e| Error::write(&path, e))
        };
        write_json("config.json", &config)?;
        let (tok, tok_cfg) = tokenizer.hf_json();
        write_json("tokenizer.json", &tok)?;
        write_json("tokenizer_config.json", &tok_cfg)?;
        self.st.take().expect("open until finish").finish()?;
        // A new folder is renamed into place; an earlier leanlm folder there has its own
        // files replaced one by one, and keeps any other.
        destination::install_folder(&self.tmp, &self.dir)?;
        self.finished = true;
        Ok(self.params)
    }

    fn st(&mut self) -> &mut SafetensorsWriter {
        self.st.as_mut().expect("open until finish")
    }

    fn vector(&mut self, name: &str, v: &[f32]) -> Result<()> {
        self.params += v.len();
        let bytes = encode(v, self.dtype);
        self.st().add(name, vec![v.len()], &bytes)
    }

    fn matrix(&mut self, name: &str, m: &Matrix, unpermute: bool) -> Result<()> {
        self.params += m.rows * m.cols;
        let mut w = m.to_f32();
        if unpermute {
            w = pairs_to_halves(&w, m.cols, self.config.head_dim);
        }
        let bytes = encode(&w, self.dtype);
        self.st().add(name, vec![m.rows, m.cols], &bytes)
    }
}

impl Drop for HfModelWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Drop the safetensors writer first: it removes its own spill file.
            self.st = None;
            let _ = destination::remove_stale_partials(&self.dir);
        }
    }
}

/// Rows of each head from adjacent-pair order (2i, 2i + 1) back to halves (i, i + d/2).
fn pairs_to_halves(w: &[f32], cols: usize, hd: usize) -> Vec<f32> {
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for (r, row) in w.chunks_exact(cols).enumerate() {
        let (head, j) = (r / hd, r % hd);
        let (i, s) = (j / 2, j % 2); // pair order: j = 2i + s
        let dst = head * hd + s * half + i;
        out[dst * cols..(dst + 1) * cols].copy_from_slice(row);
    }
    out
}

/// A safetensors file written tensor by tensor: 8 bytes of header length, a JSON header
/// naming each tensor's dtype, shape and byte range, then the data in the order added.
struct SafetensorsWriter {
    file: SpilledFile,
    dtype: HfDtype,
    header: BTreeMap<String, serde_json::Value>,
    offset: usize,
}

impl SafetensorsWriter {
    fn create(path: &Path, dtype: HfDtype) -> Result<Self> {
        Ok(Self {
            file: SpilledFile::create(path)?,
            dtype,
            header: BTreeMap::new(),
            offset: 0,
        })
    }

    fn add(&mut self, name: &str, shape: Vec<usize>, bytes: &[u8]) -> Result<()> {
        if self.header.contains_key(name) {
            return Err(Error::InvalidInput(format!(
                "tensor '{name}' written twice"
            )));
        }
        self.file.write(bytes)?;
        let end = self.offset + bytes.len();
        self.header.insert(
            name.to_string(),
            json!({"dtype": self.dtype.safetensors_name(), "shape": shape, "data_offsets": [self.offset, end]}),
        );
        self.offset = end;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.header
            .insert("__metadata__".into(), json!({"format": "pt"}));
        let mut head = serde_json::to_vec(&self.header).expect("serializable");
        // The data that follows starts 8-byte aligned (spaces pad the JSON).
        head.resize((8 + head.len()).div_ceil(8) * 8 - 8, b' ');
        let mut bytes = (head.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&head);
        self.file.finish(&bytes)
    }
}

fn encode(data: &[f32], dtype: HfDtype) -> Vec<u8> {
    match dtype {
        HfDtype::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        HfDtype::F16 => data
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        HfDtype::BF16 => data
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
    }
}

/// A norm gain as Hugging Face stores it: `w − offset` (Gemma's checkpoints hold `w` for
/// a gain of `1 + w`).
fn stored_gain(v: &[f32], offset: f32) -> Vec<f32> {
    v.iter().map(|x| x - offset).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::{random_model, RandomSpec};

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("leanlm-{name}-{}", std::process::id()))
    }

    #[test]
    fn safetensors_writer_output_reads_back() {
        let p = temp("st-rt.safetensors");
        let mut w = SafetensorsWriter::create(&p, HfDtype::F16).unwrap();
        let a = encode(&[1.0, -2.0, 0.5], HfDtype::F16);
        let b = encode(&[3.0; 8], HfDtype::F16);
        w.add("z.first", vec![3], &a).unwrap();
        w.add("a.second", vec![2, 4], &b).unwrap();
        assert!(w.add("a.second", vec![8], &b).is_err(), "a name twice");
        assert!(!p.exists(), "nothing at the final path before finish");
        w.finish().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + n) % 8, 0, "data starts 8-byte aligned");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("z.first").unwrap();
        assert_eq!((t.dtype(), t.shape()), (safetensors::Dtype::F16, &[3][..]));
        assert_eq!(t.data(), &a[..]);
        let t = st.tensor("a.second").unwrap();
        assert_eq!(t.shape(), &[2, 4]);
        assert_eq!(t.data(), &b[..]);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn an_unfinished_folder_leaves_nothing() {
        let m = random_model(RandomSpec::default(), 3).unwrap();
        let dir = temp("hf-unfinished");
        let mut w = HfModelWriter::create(&dir, &m.config, &m.tok_embd, HfDtype::F32).unwrap();
        w.put_layer(&m.layers[0]).unwrap();
        drop(w);
        assert!(!dir.exists() && !with_suffix(&dir, ".partial").exists());
    }
}
