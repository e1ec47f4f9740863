//! Gemma 3 270M through the binary: the verbs a user runs first, and prune's outputs
//! (GGUF and Hugging Face folder) loading back with the same logits and the same
//! local/global pattern. The model is fetched by `scripts/fetch-model.sh gemma3-270m`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::{leanlm, root, tmp};

fn gemma() -> PathBuf {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/fetch-model.sh"))
            .arg("gemma3-270m")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        root().join(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn gemma3_info_chat_eval_and_bench() {
    let m = gemma();
    let m = m.to_str().unwrap();
    let info = ok(&leanlm(&["info", m]));
    assert!(info.contains("architecture gemma3 (18 layers"), "{info}");
    // The family's default chat template applies (the GGUF has none) and no markup is
    // printed. (This is the pretrained model, not the instruction-tuned one: its reply
    // is not an answer, and llama.cpp's is no better.)
    let reply = ok(&leanlm(&[
        "generate",
        m,
        "--chat",
        "-p",
        "What is the capital of France?",
        "-n",
        "12",
    ]));
    for markup in ["<start_of_turn>", "<end_of_turn>", "<bos>", "model\n"] {
        assert!(!reply.contains(markup), "{markup:?} echoed: {reply:?}");
    }
    let j: serde_json::Value = serde_json::from_str(&ok(&leanlm(&[
        "generate", m, "--chat", "-p", "Hi", "-n", "4", "--json",
    ])))
    .unwrap();
    // <bos> <start_of_turn> user \n Hi <end_of_turn> \n <start_of_turn> model \n
    let prompt: Vec<u64> = serde_json::from_value(j["prompt_tokens"].clone()).unwrap();
    assert_eq!(prompt.len(), 10, "{j}");
    assert_eq!(&prompt[..4], [2, 105, 2364, 107]);
    assert_eq!(&prompt[5..], [106, 107, 105, 4368, 107]);
    let j: serde_json::Value = serde_json::from_str(&ok(&leanlm(&[
        "eval",
        m,
        "--ppl",
        "data/wikitext-2-raw/wiki.test.raw",
        "--chunks",
        "1",
        "--json",
    ])))
    .unwrap();
    let ppl = j["perplexity"]["ppl"].as_f64().unwrap_or(f64::NAN);
    // llama-perplexity's first chunk: 11.0910 (ours 11.19, see docs/benchmarks.md).
    assert!(
        (ppl / 11.0910 - 1.0).abs() < 0.02,
        "first-chunk PPL {ppl}: {j}"
    );
    let b = ok(&leanlm(&[
        "bench", m, "-p", "32", "-n", "4", "-r", "1", "--json",
    ]));
    assert!(b.contains("tokens_per_sec") || b.contains("t/s"), "{b}");
}

#[test]
fn gemma3_pruned_gguf_and_hf_folder_load_back_alike() {
    let m = gemma();
    let (gguf, dir) = (tmp("gemma-mag30.gguf"), tmp("gemma-mag30-hf"));
    for out in [&gguf, &dir] {
        ok(&leanlm(&[
            "prune",
            m.to_str().unwrap(),
            "--method",
            "magnitude",
            "--sparsity",
            "0.3",
            "--outtype",
            "f32",
            "-o",
            out.to_str().unwrap(),
        ]));
    }
    let (a, b) = (
        leanlm::model::load(&gguf).unwrap(),
        leanlm::model::load(&dir).unwrap(),
    );
    assert_eq!(a.model.n_params(), b.model.n_params());
    let sliding = |l: &leanlm::model::Loaded| -> Vec<bool> {
        l.model.layers.iter().map(|l| l.sliding).collect()
    };
    assert_eq!(sliding(&a), sliding(&b));
    assert_eq!(
        sliding(&a).iter().filter(|s| !**s).count(),
        3,
        "layers 5, 11, 17 global"
    );
    // At least 32 positions: the tiled attention path runs too.
    let text = "The tower is 324 metres tall, about the same height as an 81-storey building, \
                and the tallest structure in Paris. Its base is square, measuring 125 metres \
                on each side.";
    let ids = a.tokenizer.encode(text, true, false).unwrap();
    assert_eq!(ids, b.tokenizer.encode(text, true, false).unwrap());
    assert!(ids.len() >= 32, "{}", ids.len());
    let diff = common::max_logit_diff(&a.model, &b.model, &ids);
    assert!(diff < 1e-3, "max logit difference {diff}");
    std::fs::remove_file(&gguf).ok();
    std::fs::remove_dir_all(&dir).ok();
}

/// Removing blocks keeps each remaining block's attention kind: the GGUF stores the
/// pattern as an array, which llama.cpp reads too.
#[test]
fn gemma3_layer_removal_keeps_the_local_global_pattern() {
    let m = gemma();
    let out = tmp("gemma-l3.gguf");
    let j: serde_json::Value = serde_json::from_str(&ok(&leanlm(&[
        "prune",
        m.to_str().unwrap(),
        "--structured",
        "layers=3",
        "--calib",
        "data/wikitext-2/valid.txt",
        "--nsamples",
        "2",
        "--seqlen",
        "64",
        "--json",
        "-o",
        out.to_str().unwrap(),
    ])))
    .unwrap();
    let removed: Vec<usize> = j["report"]["removed_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(removed.len(), 3);
    let original = leanlm::model::load(&m).unwrap();
    let want: Vec<bool> = original
        .model
        .layers
        .iter()
        .enumerate()
        .filter(|(i, _)| !removed.contains(i))
        .map(|(_, l)| l.sliding)
        .collect();
    let pruned = leanlm::model::load(&out).unwrap();
    let got: Vec<bool> = pruned.model.layers.iter().map(|l| l.sliding).collect();
    assert_eq!(got, want, "removed {removed:?}");
    std::fs::remove_file(&out).ok();
}
