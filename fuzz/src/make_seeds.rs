//! Write the seed corpora of the fuzz targets into `fuzz/corpus/TARGET/`: small files in
//! each real format, made by leanlm's own writers (so that mutations start from inputs
//! that pass every check), the real recipes, real text from data/, and the head of the
//! default model's GGUF. `cargo run --bin make-seeds` (bench/fuzz.sh does it).

use std::path::{Path, PathBuf};

use leanlm::measure::kld::{BaseLogits, BasePosition};
use leanlm::model::random::{random_model, RandomSpec};
use leanlm::model::{save_gguf, save_hf, HfDtype, RopeStyle};
use leanlm::quant::GgmlType;
use leanlm::quant::Matrix;
use leanlm::tokenizer::Tokenizer;
use leanlm::transform::quantize::{map_matrices, quantize_model, SparseChoice};
use serde_json::json;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let corpus = root.join("fuzz/corpus");
    let work = std::env::temp_dir().join(format!("leanlm-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let text = std::fs::read_to_string(root.join("data/wikitext-2/valid.txt"))?;

    // A byte-level BPE vocabulary of 256 bytes, merges learnt from the text, and the
    // ChatML specials, written as tokenizer.json the way Hugging Face lays it out.
    let tok_dir = work.join("tok");
    std::fs::create_dir_all(&tok_dir)?;
    let tokenizer_json = tiny_tokenizer_json(&text[..20_000], 120);
    std::fs::write(tok_dir.join("tokenizer.json"), tokenizer_json.to_string())?;
    std::fs::write(
        tok_dir.join("tokenizer_config.json"),
        json!({"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}).to_string(),
    )?;
    let tok = Tokenizer::from_hf_dir(&tok_dir)?;
    put(
        &corpus,
        "tokenizer_json",
        "tiny.json",
        tokenizer_json.to_string().as_bytes(),
    )?;
    let mut pairs = tokenizer_json.clone();
    if let Some(m) = pairs["model"]["merges"].as_array_mut() {
        for e in m.iter_mut() {
            let s = e.as_str().unwrap_or("a b").to_string();
            let (a, b) = s.split_once(' ').unwrap_or(("a", "b"));
            *e = json!([a, b]);
        }
    }
    put(
        &corpus,
        "tokenizer_json",
        "pairs.json",
        pairs.to_string().as_bytes(),
    )?;
    // The same vocabulary read as SentencePiece-style BPE (byte fallback, ▁ for spaces,
    // a space prefix), the layout leanlm writes for Gemma's vocabulary.
    let mut spm = pairs.clone();
    spm["model"]["byte_fallback"] = json!(true);
    spm["normalizer"] = json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u{2581}"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]});
    put(
        &corpus,
        "tokenizer_json",
        "sentencepiece.json",
        spm.to_string().as_bytes(),
    )?;
    // Model types that `tokenizers` encodes for us: a T5-style Unigram vocabulary and a
    // BERT-style WordPiece one, over the same spellings.
    let spellings: Vec<String> = tokenizer_json["model"]["vocab"]
        .as_object()
        .map(|v| v.keys().cloned().collect())
        .unwrap_or_default();
    let metaspace = json!({"type": "Metaspace", "replacement": "\u{2581}",
        "prepend_scheme": "always", "split": true});
    let mut pieces = vec![json!(["<unk>", 0.0])];
    pieces.extend(spellings.iter().map(|t| json!([t, -(t.len() as f64)])));
    let unigram = json!({"version": "1.0", "added_tokens": [{"id": 0, "content": "<unk>",
        "single_word": false, "lstrip": false, "rstrip": false, "normalized": false,
        "special": true}], "normalizer": null, "pre_tokenizer": metaspace,
        "post_processor": null, "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": true, "vocab": pieces}});
    put(&corpus, "tokenizer_json", "unigram.json", unigram.to_string().as_bytes())?;
    let mut vocab = serde_json::Map::new();
    vocab.insert("[UNK]".into(), json!(0));
    for (i, t) in spellings.iter().enumerate() {
        vocab.insert(format!("##{t}"), json!(2 * i + 1));
        vocab.insert(t.clone(), json!(2 * i + 2));
    }
    let wordpiece = json!({"version": "1.0", "added_tokens": [], "normalizer":
        {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
         "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"}, "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": vocab}});
    put(&corpus, "tokenizer_json", "wordpiece.json", wordpiece.to_string().as_bytes())?;

    // Tiny models of every family, in GGUF (f32, f16, q8_0) and as Hugging Face folders.
    let specs = [
        (
            "llama",
            RandomSpec {
                vocab: tok.vocab_size(),
                ffn: 64,
                ..RandomSpec::default()
            },
        ),
        (
            "qwen2",
            RandomSpec {
                vocab: tok.vocab_size(),
                layers: 1,
                rope_style: RopeStyle::Halves,
                qkv_bias: true,
                ffn: 64,
                ..RandomSpec::default()
            },
        ),
        (
            "gemma3",
            RandomSpec {
                vocab: tok.vocab_size(),
                rope_style: RopeStyle::Halves,
                gemma: Some(4),
                ffn: 64,
                ..RandomSpec::default()
            },
        ),
    ];
    for (name, spec) in specs {
        let model = random_model(spec, 7)?;
        for (ty, dense_as) in [("f32", GgmlType::F32), ("f16", GgmlType::F16)] {
            let p = work.join(format!("{name}-{ty}.gguf"));
            save_gguf(&model, tok.gguf_metadata()?, &p, dense_as)?;
            put(
                &corpus,
                "gguf",
                &format!("{name}-{ty}.gguf"),
                &std::fs::read(&p)?,
            )?;
        }
        let quantized = [
            (
                "q8_0",
                quantize_model(
                    &model,
                    GgmlType::Q8_0,
                    GgmlType::Q8_0,
                    None,
                    SparseChoice::Off,
                )?,
            ),
            (
                "q4_0",
                quantize_model(
                    &model,
                    GgmlType::Q4_0,
                    GgmlType::Q8_0,
                    None,
                    SparseChoice::Off,
                )?,
            ),
            (
                "q4_1",
                quantize_model(
                    &model,
                    GgmlType::Q4_1,
                    GgmlType::Q8_0,
                    None,
                    SparseChoice::Off,
                )?,
            ),
            // Half of each group of four weights zeroed: stored in the 2:4 and bitmap layouts.
            (
                "sparse",
                quantize_model(
                    &two_of_four(&model)?,
                    GgmlType::Q8_0,
                    GgmlType::Q8_0,
                    None,
                    SparseChoice::Bitmap,
                )?,
            ),
        ];
        for (ty, q) in quantized {
            let p = work.join(format!("{name}-{ty}.gguf"));
            save_gguf(&q, tok.gguf_metadata()?, &p, GgmlType::F32)?;
            put(
                &corpus,
                "gguf",
                &format!("{name}-{ty}.gguf"),
                &std::fs::read(&p)?,
            )?;
        }
        let dir = work.join(format!("{name}-hf"));
        save_hf(&model, &tok, &dir, HfDtype::F32)?;
        let read = |f: &str| std::fs::read(dir.join(f));
        let packed = leanlm_fuzz::join(&[
            &read("config.json")?,
            &read("tokenizer.json")?,
            &read("model.safetensors")?,
        ]);
        put(&corpus, "hf_folder", &format!("{name}.bin"), &packed)?;
    }
    // K-quants need rows of 256: one block of width 256.
    let wide = random_model(
        RandomSpec {
            vocab: tok.vocab_size(),
            layers: 1,
            d_model: 256,
            heads: 4,
            kv_heads: 2,
            ffn: 256,
            ..RandomSpec::default()
        },
        11,
    )?;
    for (ty, t) in [("q4_k", GgmlType::Q4K), ("q6_k", GgmlType::Q6K)] {
        let q = quantize_model(&wide, t, GgmlType::Q8_0, None, SparseChoice::Off)?;
        let p = work.join(format!("wide-{ty}.gguf"));
        save_gguf(&q, tok.gguf_metadata()?, &p, GgmlType::F32)?;
        put(
            &corpus,
            "gguf",
            &format!("wide-{ty}.gguf"),
            &std::fs::read(&p)?,
        )?;
    }
    // The head of the real file: its metadata (architecture keys, the 49,152-token
    // vocabulary) up to the cut.
    let real = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if let Ok(bytes) = std::fs::read(&real) {
        put(
            &corpus,
            "gguf",
            "smollm2-head.gguf",
            &bytes[..bytes.len().min(256 << 10)],
        )?;
    } else {
        eprintln!(
            "note: {} absent (scripts/fetch-model.sh): no real-file seed",
            real.display()
        );
    }

    // Real text: WikiText-2 and HellaSwag lines, and chat markup.
    let raw = std::fs::read_to_string(root.join("data/wikitext-2-raw/wiki.test.raw"))?;
    let hs = std::fs::read_to_string(root.join("data/hellaswag/hellaswag_val_1000.txt"))?;
    let lines = raw.lines().filter(|l| l.len() > 40).take(60);
    for (i, l) in lines.chain(hs.lines().take(30)).enumerate() {
        put(
            &corpus,
            "tokenize_gguf",
            &format!("line{i:03}.txt"),
            l.as_bytes(),
        )?;
    }
    let chat = "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi! 123 ünïcödé 日本語 🙂<|im_end|>\n";
    put(&corpus, "tokenize_gguf", "chat.txt", chat.as_bytes())?;

    // The project's recipes.
    for e in std::fs::read_dir(root.join("recipes"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "toml") {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("r.toml")
                .to_string();
            put(&corpus, "recipe", &name, &std::fs::read(&p)?)?;
        }
    }

    // A base-logits cache of a few positions.
    let positions = (0..6)
        .map(|i| BasePosition {
            target: i * 7,
            target_logp: -2.5,
            top: (0..8).map(|j| (i * 7 + j, -1.0 - j as f32)).collect(),
        })
        .collect();
    let cache = BaseLogits {
        vocab: tok.vocab_size(),
        fingerprint: 0x5eed,
        positions,
    };
    let p = work.join("base.kld");
    cache.save(&p)?;
    put(&corpus, "base_cache", "tiny.kld", &std::fs::read(&p)?)?;

    std::fs::remove_dir_all(&work)?;
    eprintln!("seeds written under {}", corpus.display());
    Ok(())
}

/// `model` with the two smallest of every four consecutive weights of each block matrix set
/// to zero.
fn two_of_four(model: &leanlm::model::Model) -> Res<leanlm::model::Model> {
    Ok(map_matrices(model, &|m| {
        let mut w = m.to_f32();
        for g in w.chunks_mut(4) {
            let mut idx: Vec<usize> = (0..g.len()).collect();
            idx.sort_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()));
            for &i in idx.iter().take(g.len() / 2) {
                g[i] = 0.0;
            }
        }
        Matrix::from_f32(m.rows, m.cols, w)
    })?)
}

fn put(corpus: &Path, target: &str, name: &str, bytes: &[u8]) -> Res {
    let dir = corpus.join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)?;
    Ok(())
}

/// GPT-2's printable spelling of each byte (the byte-level BPE alphabet).
fn byte_chars() -> Vec<char> {
    let mut next = 256u32;
    (0..=255u8)
        .map(|b| {
            if matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff) {
                b as char
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap_or('?')
            }
        })
        .collect()
}

/// A tokenizer.json with `n_merges` merges learnt greedily (most frequent adjacent pair)
/// from the words of `sample`.
fn tiny_tokenizer_json(sample: &str, n_merges: usize) -> serde_json::Value {
    let chars = byte_chars();
    let spell = |bytes: &[u8]| -> String { bytes.iter().map(|&b| chars[b as usize]).collect() };
    let mut vocab: Vec<String> = (0..=255u8).map(|b| spell(&[b])).collect();
    let mut words: Vec<Vec<String>> = sample
        .split_inclusive(' ')
        .map(|w| w.bytes().map(|b| spell(&[b])).collect())
        .collect();
    let mut merges = Vec::new();
    for _ in 0..n_merges {
        let mut counts = std::collections::HashMap::<(String, String), usize>::new();
        for w in &words {
            for p in w.windows(2) {
                *counts.entry((p[0].clone(), p[1].clone())).or_default() += 1;
            }
        }
        let Some(((a, b), _)) = counts
            .into_iter()
            .max_by(|x, y| x.1.cmp(&y.1).then(y.0.cmp(&x.0)))
        else {
            break;
        };
        let joined = format!("{a}{b}");
        for w in &mut words {
            let mut i = 0;
            while i + 1 < w.len() {
                if w[i] == a && w[i + 1] == b {
                    w[i] = joined.clone();
                    w.remove(i + 1);
                }
                i += 1;
            }
        }
        merges.push(format!("{a} {b}"));
        vocab.push(joined);
    }
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let n = vocab.len();
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"id": n + i, "content": s, "special": true}))
        .collect();
    let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
        .into_iter()
        .enumerate()
        .map(|(i, s)| (s, json!(i)))
        .collect();
    json!({
        "version": "1.0",
        "added_tokens": added,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}
        ]},
        "model": {"type": "BPE", "vocab": vocab_map, "merges": merges}
    })
}
