//! Shared by the integration tests: the default model (fetched through the project's own
//! script when absent) and the benchmark data in data/.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use leanlm::model::Loaded;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn data_file(rel: &str) -> PathBuf {
    repo_root().join("data").join(rel)
}

/// Path of SmolLM2-135M-Instruct Q4_1, fetched by scripts/fetch-model.sh if needed.
pub fn default_model_path() -> PathBuf {
    static FETCHED: OnceLock<PathBuf> = OnceLock::new();
    FETCHED
        .get_or_init(|| {
            let root = repo_root();
            let status = std::process::Command::new("bash")
                .arg(root.join("scripts/fetch-model.sh"))
                .status()
                .expect("running scripts/fetch-model.sh");
            assert!(status.success(), "scripts/fetch-model.sh failed");
            root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
        .clone()
}

pub fn default_model() -> &'static Loaded {
    static MODEL: OnceLock<Loaded> = OnceLock::new();
    MODEL.get_or_init(|| {
        leanlm::model::load(&default_model_path()).expect("loading the default model")
    })
}

/// Path of a model that `scripts/fetch-model.sh NAME` fetches (and verifies) if needed.
pub fn fetched_model(name: &str) -> PathBuf {
    let root = repo_root();
    let out = std::process::Command::new("bash")
        .arg(root.join("scripts/fetch-model.sh"))
        .arg(name)
        .output()
        .expect("running scripts/fetch-model.sh");
    assert!(
        out.status.success(),
        "scripts/fetch-model.sh {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    root.join(String::from_utf8_lossy(&out.stdout).trim())
}

/// Panic at the first token where `got` differs from llama.cpp's `want`, showing the text.
pub fn assert_same_ids(tok: &leanlm::tokenizer::Tokenizer, got: &[u32], want: &[u32]) {
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let lo = i.saturating_sub(5);
        panic!(
            "first difference at token {i}: ours {:?} vs llama.cpp {:?} (text {:?})",
            &got[lo..(i + 5).min(got.len())],
            &want[lo..(i + 5).min(want.len())],
            tok.decode_lossy(&want[lo..(i + 5).min(want.len())])
        );
    }
    assert_eq!(got.len(), want.len());
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[allow(unused_imports)]
pub use leanlm::measure::kld::log_softmax;
