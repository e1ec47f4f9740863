//! A tiny random Llama in Hugging Face layout (config.json + safetensors + tokenizer.json),
//! converted to GGUF by our writer (which permutes Q/K rows for llama.cpp's RoPE), must
//! give the same logits through both loaders.

use std::collections::HashMap;
use std::path::Path;

use leanlm::model::{load, save_gguf, Logits, RopeStyle};
use leanlm::numerics::max_abs_diff as max_diff;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;

const D: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HD: usize = 16;
const FFN: usize = 96;
const LAYERS: usize = 2;
const VOCAB: usize = 260;

fn random(n: usize, seed: &mut u64, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut seed = 7u64;
    let mut t = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![VOCAB, D],
        random(VOCAB * D, &mut seed, 1.0),
    )];
    for i in 0..LAYERS {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        for (name, shape) in [
            ("self_attn.q_proj.weight", vec![HEADS * HD, D]),
            ("self_attn.k_proj.weight", vec![KV_HEADS * HD, D]),
            ("self_attn.v_proj.weight", vec![KV_HEADS * HD, D]),
            ("self_attn.o_proj.weight", vec![D, HEADS * HD]),
            ("mlp.gate_proj.weight", vec![FFN, D]),
            ("mlp.up_proj.weight", vec![FFN, D]),
            ("mlp.down_proj.weight", vec![D, FFN]),
        ] {
            let n = shape.iter().product();
            t.push((p(name), shape, random(n, &mut seed, 0.3)));
        }
        for name in ["input_layernorm.weight", "post_attention_layernorm.weight"] {
            let w = random(D, &mut seed, 0.2)
                .into_iter()
                .map(|v| 1.0 + v)
                .collect();
            t.push((p(name), vec![D], w));
        }
    }
    t.push(("model.norm.weight".into(), vec![D], vec![1.0; D]));
    t
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: HashMap<String, TensorView> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(&views, None, path).unwrap();
}

fn write_hf_folder(dir: &Path, sharded: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": D, "intermediate_size": FFN,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "num_hidden_layers": LAYERS,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 128,
        "vocab_size": VOCAB, "tie_word_embeddings": true
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let t = tensors();
    if sharded {
        let (a, b) = t.split_at(t.len() / 2);
        write_safetensors(&dir.join("model-00001-of-00002.safetensors"), a);
        write_safetensors(&dir.join("model-00002-of-00002.safetensors"), b);
        let mut map = serde_json::Map::new();
        for (name, file) in a
            .iter()
            .map(|x| (&x.0, "model-00001-of-00002.safetensors"))
            .chain(b.iter().map(|x| (&x.0, "model-00002-of-00002.safetensors")))
        {
            map.insert(name.clone(), json!(file));
        }
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            json!({ "weight_map": map }).to_string(),
        )
        .unwrap();
    } else {
        write_safetensors(&dir.join("model.safetensors"), &t);
    }
    // Byte-level BPE: the 256 byte letters, three merges, one control token.
    let letters: Vec<String> = (0..=255u8).map(byte_letter).collect();
    let mut vocab = serde_json::Map::new();
    for (i, l) in letters.iter().enumerate() {
        vocab.insert(l.clone(), json!(i));
    }
    for (i, m) in ["th", "the", "Ġthe"].iter().enumerate() {
        vocab.insert(m.to_string(), json!(256 + i));
    }
    let tokenizer = json!({
        "model": {"type": "BPE", "vocab": vocab, "merges": ["t h", "th e", "Ġ the"]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}]},
        "added_tokens": [{"id": 259, "content": "<|endoftext|>", "special": true}]
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"eos_token": "<|endoftext|>"}).to_string(),
    )
    .unwrap();
}

/// GPT-2's byte → letter map, written out independently of the library's.
fn byte_letter(b: u8) -> String {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
    if printable(b) {
        return (b as char).to_string();
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap().to_string()
}

#[test]
fn hf_and_converted_gguf_give_the_same_logits() {
    let tmp = std::env::temp_dir().join(format!("leanlm-hf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    write_hf_folder(&tmp.join("single"), false);
    write_hf_folder(&tmp.join("sharded"), true);

    let hf = load(&tmp.join("single")).unwrap();
    assert_eq!(hf.model.config.rope_style, RopeStyle::Halves);
    let gguf_path = tmp.join("tiny.gguf");
    save_gguf(
        &hf.model,
        hf.tokenizer.gguf_metadata().unwrap(),
        &gguf_path,
        leanlm::quant::GgmlType::F32,
    )
    .unwrap();
    let gg = load(&gguf_path).unwrap();
    assert_eq!(gg.model.config.rope_style, RopeStyle::Interleaved);

    let text = "the 42 theorem of the day";
    let ids = hf.tokenizer.encode(text, false, false).unwrap();
    assert_eq!(ids, gg.tokenizer.encode(text, false, false).unwrap());
    assert!(ids.contains(&258), "merges applied: {ids:?}"); // "Ġthe"
    assert_eq!(hf.tokenizer.decode(&ids), text.as_bytes());

    let a = hf
        .model
        .forward(&ids, &mut hf.model.new_cache(), Logits::All)
        .unwrap();
    let b = gg
        .model
        .forward(&ids, &mut gg.model.new_cache(), Logits::All)
        .unwrap();
    // Same f32 arithmetic in another order of dimensions: only summation order differs.
    assert!(
        max_diff(&a, &b) < 1e-4,
        "HF vs GGUF logits differ by {}",
        max_diff(&a, &b)
    );

    let sharded = load(&tmp.join("sharded")).unwrap();
    let c = sharded
        .model
        .forward(&ids, &mut sharded.model.new_cache(), Logits::All)
        .unwrap();
    assert_eq!(a, c, "sharded folder loads the same weights");

    // The permutation is what makes them agree: HF weights under adjacent-pair RoPE differ.
    let mut wrong = hf.model.clone();
    wrong.config.rope_style = RopeStyle::Interleaved;
    let w = wrong
        .forward(&ids, &mut wrong.new_cache(), Logits::All)
        .unwrap();
    assert!(
        max_diff(&a, &w) > 1e-2,
        "test would not notice a missing permutation"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}
