//! Write a [`Model`] as a Hugging Face folder: `config.json`, `model.safetensors` and the
//! tokenizer files, in transformers' Llama/Qwen2 layout. Llama Q/K rows loaded from GGUF
//! (adjacent-pair RoPE order) go back to HF's halves order. The folder is assembled under
//! a temporary name and renamed at the end, so an interrupted write leaves no half folder.

use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype};
use serde_json::json;

use super::config::{Arch, RopeStyle};
use super::llama::Model;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// Element type of the written tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfDtype {
    F32,
    F16,
    BF16,
}

pub fn save_hf(model: &Model, tokenizer: &Tokenizer, dir: &Path, dtype: HfDtype) -> Result<()> {
    let c = &model.config;
    let hd = c.head_dim;
    let l0 = model
        .layers
        .first()
        .ok_or_else(|| Error::InvalidInput("a model without blocks cannot be written".into()))?;
    // transformers' config has one width per kind: blocks must agree.
    let uniform = model.layers.iter().all(|l| {
        (l.n_heads(hd), l.n_kv_heads(hd), l.ffn_dim())
            == (l0.n_heads(hd), l0.n_kv_heads(hd), l0.ffn_dim())
    });
    if !uniform {
        return Err(Error::InvalidInput(
            "blocks have different head counts or MLP widths, which a Hugging Face config cannot \
             describe; write GGUF instead"
                .into(),
        ));
    }
    if c.rope_dim != hd {
        return Err(Error::InvalidInput(
            "partial rotary embeddings are not expressible in a Llama config".into(),
        ));
    }
    let (arch, model_type) = match c.arch {
        Arch::Llama => ("LlamaForCausalLM", "llama"),
        Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
    };
    let torch_dtype = match dtype {
        HfDtype::F32 => "float32",
        HfDtype::F16 => "float16",
        HfDtype::BF16 => "bfloat16",
    };
    let config = json!({
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": c.d_model,
        "intermediate_size": l0.ffn_dim(),
        "num_hidden_layers": model.layers.len(),
        "num_attention_heads": l0.n_heads(hd),
        "num_key_value_heads": l0.n_kv_heads(hd),
        "head_dim": hd,
        "hidden_act": "silu",
        "max_position_embeddings": c.context_len,
        "rms_norm_eps": c.rms_eps,
        "rope_theta": c.rope_theta,
        "vocab_size": model.vocab_size(),
        "tie_word_embeddings": model.tied(),
        "attention_bias": l0.bq.is_some(),
        "bos_token_id": tokenizer.bos,
        "eos_token_id": tokenizer.eos,
        "torch_dtype": torch_dtype,
    });

    // Halves-order rows for llama's q/k when the model holds them in pair order.
    let unpermute = c.rope_style == RopeStyle::Interleaved;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut put = |name: String, shape: Vec<usize>, data: &[f32]| {
        tensors.push((name, shape, encode(data, dtype)));
    };
    let matrix = |m: &crate::quant::Matrix, permute: bool| -> Vec<f32> {
        let w = m.to_f32();
        if !permute {
            return w;
        }
        let (half, mut out) = (hd / 2, vec![0f32; w.len()]);
        for r in 0..m.rows {
            let (head, j) = (r / hd, r % hd);
            let (i, s) = (j / 2, j % 2); // pair order: j = 2i + s
            let dst = head * hd + s * half + i;
            out[dst * m.cols..(dst + 1) * m.cols].copy_from_slice(&w[r * m.cols..(r + 1) * m.cols]);
        }
        out
    };
    let shape = |m: &crate::quant::Matrix| vec![m.rows, m.cols];
    put(
        "model.embed_tokens.weight".into(),
        shape(&model.tok_embd),
        &model.tok_embd.to_f32(),
    );
    for (i, l) in model.layers.iter().enumerate() {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        put(p("input_layernorm.weight"), vec![c.d_model], &l.attn_norm);
        put(
            p("self_attn.q_proj.weight"),
            shape(&l.wq),
            &matrix(&l.wq, unpermute),
        );
        put(
            p("self_attn.k_proj.weight"),
            shape(&l.wk),
            &matrix(&l.wk, unpermute),
        );
        put(
            p("self_attn.v_proj.weight"),
            shape(&l.wv),
            &matrix(&l.wv, false),
        );
        put(
            p("self_attn.o_proj.weight"),
            shape(&l.wo),
            &matrix(&l.wo, false),
        );
        for (name, b) in [("q_proj", &l.bq), ("k_proj", &l.bk), ("v_proj", &l.bv)] {
            if let Some(b) = b {
                put(p(&format!("self_attn.{name}.bias")), vec![b.len()], b);
            }
        }
        put(
            p("post_attention_layernorm.weight"),
            vec![c.d_model],
            &l.ffn_norm,
        );
        put(
            p("mlp.gate_proj.weight"),
            shape(&l.w_gate),
            &matrix(&l.w_gate, false),
        );
        put(
            p("mlp.up_proj.weight"),
            shape(&l.w_up),
            &matrix(&l.w_up, false),
        );
        put(
            p("mlp.down_proj.weight"),
            shape(&l.w_down),
            &matrix(&l.w_down, false),
        );
    }
    put("model.norm.weight".into(), vec![c.d_model], &model.out_norm);
    if !model.tied() {
        put(
            "lm_head.weight".into(),
            shape(&model.output),
            &model.output.to_f32(),
        );
    }

    let tmp = partial_dir(dir);
    let result = write_folder(&tmp, &config, tokenizer, &tensors, dtype);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        return result;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
}

fn partial_dir(dir: &Path) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    dir.with_file_name(name)
}

fn write_folder(
    tmp: &Path,
    config: &serde_json::Value,
    tokenizer: &Tokenizer,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    dtype: HfDtype,
) -> Result<()> {
    let io = |p: &Path, e| Error::io(p, e);
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(|e| io(tmp, e))?;
    }
    std::fs::create_dir_all(tmp).map_err(|e| io(tmp, e))?;
    let write_json = |name: &str, v: &serde_json::Value| {
        let path = tmp.join(name);
        let text = serde_json::to_string_pretty(v).expect("serializable");
        std::fs::write(&path, text).map_err(|e| io(&path, e))
    };
    write_json("config.json", config)?;
    let (tok, tok_cfg) = tokenizer.hf_json();
    write_json("tokenizer.json", &tok)?;
    write_json("tokenizer_config.json", &tok_cfg)?;
    let st_dtype = match dtype {
        HfDtype::F32 => Dtype::F32,
        HfDtype::F16 => Dtype::F16,
        HfDtype::BF16 => Dtype::BF16,
    };
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(st_dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::InvalidInput(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let path = tmp.join("model.safetensors");
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), &path)
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))
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
