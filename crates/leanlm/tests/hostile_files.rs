//! Corrupt and hostile model files: each must be a clear error naming what is wrong,
//! never a panic, an abort on a huge allocation, or a model that loads and computes
//! something else. Each file is a small valid model (seeded random weights) with one
//! thing changed.

mod common;

use std::path::{Path, PathBuf};

use leanlm::model::gguf::{Array, GgufFile, GgufWriter, TensorData, Value};
use leanlm::model::random::{random_model, RandomSpec};
use leanlm::model::{load_gguf, load_hf, save_gguf, LoadOptions};
use leanlm::quant::GgmlType;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("leanlm-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// The random model's vocabulary size; the tokenizer below spells one token per id.
const VOCAB: usize = 64;

/// A valid two-block f32 model with a minimal tokenizer, so that `model::load` takes it.
fn valid(name: &str) -> PathBuf {
    let spec = RandomSpec {
        vocab: VOCAB,
        ..RandomSpec::default()
    };
    let model = random_model(spec, 7).unwrap();
    let tokens: Vec<String> = (0..VOCAB).map(|i| format!("t{i}")).collect();
    let meta = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            Value::Array(Array::String(tokens)),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            Value::Array(Array::String(vec![])),
        ),
    ];
    let p = tmp(name);
    save_gguf(&model, meta, &p, GgmlType::F32).unwrap();
    p
}

/// `valid` rewritten with its metadata and tensors edited.
fn edited(
    name: &str,
    meta: impl FnOnce(&mut Vec<(String, Value)>),
    tensors: impl FnOnce(&mut Vec<TensorData>),
) -> PathBuf {
    let src = valid(&format!("{name}.src"));
    let f = GgufFile::open(&src).unwrap();
    let mut m: Vec<(String, Value)> = f
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    meta(&mut m);
    let mut t: Vec<TensorData> = f
        .tensors
        .iter()
        .map(|t| TensorData {
            name: t.name.clone(),
            dims: t.dims.clone(),
            dtype: t.dtype,
            bytes: f.tensor_bytes(t).to_vec(),
        })
        .collect();
    tensors(&mut t);
    let p = tmp(name);
    let mut w = GgufWriter::create(&p).unwrap();
    for (k, v) in m {
        w.set(&k, v);
    }
    for t in t {
        w.add_tensor(t).unwrap();
    }
    w.finish().unwrap();
    p
}

fn set(key: &str, v: Value) -> impl FnOnce(&mut Vec<(String, Value)>) {
    let key = key.to_string();
    move |m| match m.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = v,
        None => m.push((key, v)),
    }
}

fn keep(_: &mut Vec<TensorData>) {}

/// Replace every occurrence of `from` by `to` (same length) in the file's bytes.
fn patch(p: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut b = std::fs::read(p).unwrap();
    let mut hits = 0;
    for i in 0..b.len() - from.len() {
        if &b[i..i + from.len()] == from.as_bytes() {
            b[i..i + to.len()].copy_from_slice(to.as_bytes());
            hits += 1;
        }
    }
    assert!(hits > 0, "{from} not in {}", p.display());
    std::fs::write(p, b).unwrap();
}

/// Set dimension `which` of tensor `name` in the file's tensor table.
fn patch_dim(p: &Path, name: &str, which: usize, value: u64) {
    let mut b = std::fs::read(p).unwrap();
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = b
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .expect("tensor entry");
    let dim = at + key.len() + 4 + 8 * which;
    b[dim..dim + 8].copy_from_slice(&value.to_le_bytes());
    std::fs::write(p, b).unwrap();
}

/// The error of opening and building the model, as the CLI would print it.
fn load_error(p: &Path) -> String {
    let r = GgufFile::open(p).and_then(|f| load_gguf(&f).map(|_| ()));
    match r {
        Ok(()) => panic!("{} loaded; expected an error", p.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_names(e: &str, needles: &[&str]) {
    for n in needles {
        assert!(e.contains(n), "expected {n:?} in: {e}");
    }
}

#[test]
fn the_unedited_file_loads() {
    let p = valid("valid.gguf");
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(load_gguf(&f).unwrap().layers.len(), 2);
    leanlm::model::load(&p).unwrap();
}

#[test]
fn a_huge_block_count_is_an_error_before_allocating() {
    let p = edited(
        "blocks-1e9.gguf",
        set("llama.block_count", Value::U32(1_000_000_000)),
        keep,
    );
    assert_names(
        &load_error(&p),
        &["llama.block_count is 1000000000", "tensors for 2 blocks"],
    );
}

#[test]
fn a_block_count_below_the_blocks_present_is_an_error() {
    let p = edited(
        "blocks-1.gguf",
        set("llama.block_count", Value::U32(1)),
        keep,
    );
    assert_names(
        &load_error(&p),
        &["llama.block_count is 1", "tensors for 2 blocks"],
    );
}

#[test]
fn a_duplicate_metadata_key_is_an_error() {
    // A second block_count = 1 (written under a decoy name, then renamed in place).
    let p = edited("dupkey.gguf", set("llamX.block_count", Value::U32(1)), keep);
    patch(&p, "llamX.block_count", "llama.block_count");
    assert_names(
        &load_error(&p),
        &["duplicate metadata key 'llama.block_count'"],
    );
}

#[test]
fn a_duplicate_tensor_is_an_error() {
    let p = edited(
        "duptensor.gguf",
        |_| {},
        |t| {
            let norm = t
                .iter()
                .find(|t| t.name == "blk.0.attn_norm.weight")
                .unwrap();
            let copy = TensorData {
                name: "blk.0.attn_norm.weighX".into(),
                dims: norm.dims.clone(),
                dtype: norm.dtype,
                bytes: norm.bytes.clone(),
            };
            t.push(copy);
        },
    );
    patch(&p, "blk.0.attn_norm.weighX", "blk.0.attn_norm.weight");
    assert_names(
        &load_error(&p),
        &["tensor 'blk.0.attn_norm.weight' appears twice"],
    );
}

#[test]
fn head_counts_that_contradict_the_weights_are_errors() {
    // The weights have 4 query heads of 8; the metadata says 2.
    let p = edited(
        "heads.gguf",
        set("llama.attention.head_count", Value::U32(2)),
        keep,
    );
    assert_names(
        &load_error(&p),
        &[
            "blk.0.attn_q.weight",
            "32 rows",
            "head_count = 2 heads of 8",
        ],
    );
    let p = edited(
        "kvheads.gguf",
        set("llama.attention.head_count_kv", Value::U32(4)),
        keep,
    );
    assert_names(&load_error(&p), &["blk.0.attn_k.weight", "16 rows"]);
    let p = edited(
        "ffn.gguf",
        set("llama.feed_forward_length", Value::U32(40)),
        keep,
    );
    assert_names(&load_error(&p), &["blk.0.ffn_gate.weight", "48 rows"]);
    // A per-layer array must have one entry per block.
    let p = edited(
        "heads-array.gguf",
        set(
            "llama.attention.head_count",
            Value::Array(Array::U32(vec![4, 4, 4])),
        ),
        keep,
    );
    assert_names(&load_error(&p), &["3 entries for 2 blocks"]);
}

#[test]
fn the_embedding_width_must_be_d_model() {
    let p = edited(
        "width.gguf",
        set("llama.embedding_length", Value::U32(16)),
        keep,
    );
    // head_dim stays 8 (key_length), so the first mismatch is the embedding.
    assert_names(&load_error(&p), &["token embedding"]);
}

#[test]
fn wrong_typed_keys_are_errors_not_defaults() {
    let p = edited(
        "theta-string.gguf",
        set("llama.rope.freq_base", Value::String("100000".into())),
        keep,
    );
    assert_names(&load_error(&p), &["'llama.rope.freq_base' is string"]);
    let p = edited(
        "kv-string.gguf",
        set("llama.attention.head_count_kv", Value::String("2".into())),
        keep,
    );
    assert_names(
        &load_error(&p),
        &["'llama.attention.head_count_kv' is string"],
    );
    let p = edited(
        "shape-strings.gguf",
        |m| {
            set(
                "leanlm.sparse.blk.0.ffn_gate.weight.format",
                Value::String("BITMAP_Q8".into()),
            )(m);
            set(
                "leanlm.sparse.blk.0.ffn_gate.weight.shape",
                Value::Array(Array::String(vec!["32".into(), "48".into()])),
            )(m);
        },
        keep,
    );
    assert_names(
        &load_error(&p),
        &[
            "leanlm.sparse.blk.0.ffn_gate.weight.shape",
            "is string \"32\"",
        ],
    );
}

#[test]
fn non_finite_hyper_parameters_are_errors() {
    for (key, v) in [
        ("llama.attention.layer_norm_rms_epsilon", f32::INFINITY),
        ("llama.attention.layer_norm_rms_epsilon", f32::NAN),
        ("llama.rope.freq_base", f32::INFINITY),
    ] {
        let p = edited("eps.gguf", set(key, Value::F32(v)), keep);
        assert_names(&load_error(&p), &["must be positive and finite"]);
    }
}

#[test]
fn a_zero_width_matrix_is_an_error() {
    let p = edited(
        "zero.gguf",
        |_| {},
        |t| {
            let g = t
                .iter_mut()
                .find(|t| t.name == "blk.0.ffn_gate.weight")
                .unwrap();
            g.dims = vec![32, 0];
            g.bytes.clear();
        },
    );
    assert_names(&load_error(&p), &["blk.0.ffn_gate.weight", "zero-width"]);
    let spec = RandomSpec {
        ffn: 0,
        ..RandomSpec::default()
    };
    assert!(random_model(spec, 1).is_err());
}

#[test]
fn a_huge_embedding_is_an_error_at_open() {
    let p = valid("embd-3e16.gguf");
    patch_dim(&p, "token_embd.weight", 1, 30_000_000_000_000_000);
    assert_names(&load_error(&p), &["token_embd.weight", "past the end"]);
    // 32 × 2^59 f32 values are 2^66 bytes, which used to wrap to 0.
    let p = valid("embd-wrap.gguf");
    patch_dim(&p, "token_embd.weight", 1, 1 << 59);
    assert_names(&load_error(&p), &["token_embd.weight", "too large"]);
}

#[test]
fn nan_weights_are_refused_unless_allowed() {
    let p = edited(
        "nan.gguf",
        |_| {},
        |t| {
            let w = t
                .iter_mut()
                .find(|t| t.name == "blk.1.ffn_up.weight")
                .unwrap();
            w.bytes[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
            w.bytes[12..16].copy_from_slice(&f32::INFINITY.to_le_bytes());
        },
    );
    let e = leanlm::model::load(&p).err().expect("refused").to_string();
    assert_names(&e, &["2 non-finite weights", "blk.1.ffn_up.weight (2)"]);
    let allow = LoadOptions {
        allow_non_finite: true,
    };
    let loaded = leanlm::model::load_with(&p, allow).unwrap();
    assert_eq!(
        leanlm::model::finite::non_finite_tensors(&loaded.model),
        vec![("blk.1.ffn_up.weight".to_string(), 2)]
    );
}

#[test]
fn tokenizer_arrays_must_agree_with_the_vocabulary() {
    let tok_err = |p: &Path| {
        let f = GgufFile::open(p).unwrap();
        leanlm::tokenizer::Tokenizer::from_gguf(&f)
            .err()
            .expect("refused")
            .to_string()
    };
    let p = edited(
        "types.gguf",
        set(
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(vec![1; VOCAB - 1])),
        ),
        keep,
    );
    assert_names(&tok_err(&p), &["token_type", "63 entries", "64 tokens"]);
    let p = edited(
        "bos.gguf",
        set("tokenizer.ggml.bos_token_id", Value::U32(VOCAB as u32)),
        keep,
    );
    assert_names(&tok_err(&p), &["bos_token_id 64 is outside the vocabulary"]);
    let p = edited(
        "tokens-int.gguf",
        set(
            "tokenizer.ggml.tokens",
            Value::Array(Array::U32(vec![1; VOCAB])),
        ),
        keep,
    );
    assert_names(&tok_err(&p), &["tokenizer.ggml.tokens", "array of u32"]);
    let p = edited(
        "merge.gguf",
        set(
            "tokenizer.ggml.merges",
            Value::Array(Array::String(vec!["t1t2".into()])),
        ),
        keep,
    );
    assert_names(&tok_err(&p), &["merge \"t1t2\""]);
}

/// A Hugging Face folder of the random model (with the default model's tokenizer, which
/// only `model::load` would compare) and its config.json edited.
fn hf_folder(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let model = random_model(RandomSpec::default(), 3).unwrap();
    let dir = tmp(name);
    let _ = std::fs::remove_dir_all(&dir);
    let tok = &common::default_model().tokenizer;
    leanlm::model::save_hf(&model, tok, &dir, leanlm::model::HfDtype::F32).unwrap();
    let cfg = dir.join("config.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    edit(&mut j);
    std::fs::write(&cfg, j.to_string()).unwrap();
    dir
}

#[test]
fn config_json_is_checked_against_the_weights() {
    let err = |dir: &Path| load_hf(dir).err().expect("refused").to_string();
    assert!(load_hf(&hf_folder("hf-ok", |_| {})).is_ok());
    let d = hf_folder("hf-1e9", |j| j["num_hidden_layers"] = 1_000_000_000.into());
    assert_names(
        &err(&d),
        &["num_hidden_layers is 1000000000", "hold 2 layers"],
    );
    let d = hf_folder("hf-heads", |j| j["num_attention_heads"] = 2.into());
    assert_names(&err(&d), &["q_proj", "num_attention_heads = 2"]);
    let d = hf_folder("hf-eps", |j| j["rms_norm_eps"] = "1e-5".into());
    assert_names(&err(&d), &["'rms_norm_eps' is \"1e-5\", expected a number"]);
    let d = hf_folder("hf-theta", |j| j["rope_theta"] = serde_json::json!([1]));
    assert_names(&err(&d), &["'rope_theta'"]);
}

/// The scan runs at every load: on the default model it must find nothing, and cost
/// little next to the load itself (both printed; run with --nocapture).
#[test]
fn the_default_model_is_clean_and_its_scan_is_cheap() {
    let p = common::default_model_path();
    let allow = LoadOptions {
        allow_non_finite: true,
    };
    let start = std::time::Instant::now();
    let loaded = leanlm::model::load_with(&p, allow).unwrap();
    let load = start.elapsed();
    let start = std::time::Instant::now();
    let found = leanlm::model::finite::non_finite_tensors(&loaded.model);
    let scan = start.elapsed();
    println!("default model: load without the scan {load:?}, scan {scan:?}");
    assert!(found.is_empty(), "{found:?}");
}
