//! What the binary's tests share: the repository root, the default model (fetched by
//! the project's script), running `leanlm`, scratch paths and the clean-error check.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use leanlm::model::gguf::{GgufFile, GgufWriter, Value};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn model() -> PathBuf {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let ok = Command::new("bash")
            .arg(root().join("scripts/fetch-model.sh"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "scripts/fetch-model.sh failed");
        root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
    })
    .clone()
}

pub fn leanlm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leanlm"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("leanlm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Exit status ≠ 0, one line on stderr containing `needle`, no panic.
pub fn assert_clean_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// Rewrite the default model's header with `edit` applied to its metadata.
pub fn rewritten(name: &str, edit: impl Fn(&mut Vec<(String, Value)>)) -> PathBuf {
    let f = GgufFile::open(model()).unwrap();
    let mut metadata: Vec<(String, Value)> = f
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    edit(&mut metadata);
    let p = tmp(name);
    let mut w = GgufWriter::create(&p).unwrap();
    for (k, v) in metadata {
        w.set(&k, v);
    }
    for t in &f.tensors {
        w.add_tensor(leanlm::model::gguf::TensorData {
            name: t.name.clone(),
            dims: t.dims.clone(),
            dtype: t.dtype,
            bytes: f.tensor_bytes(t).to_vec(),
        })
        .unwrap();
    }
    w.finish().unwrap();
    p
}

/// Largest logit difference between two models over `ids` (every position).
pub fn max_logit_diff(a: &leanlm::model::Model, b: &leanlm::model::Model, ids: &[u32]) -> f32 {
    let logits = |m: &leanlm::model::Model| {
        m.forward(ids, &mut m.new_cache(), leanlm::model::Logits::All)
            .unwrap()
    };
    leanlm::numerics::max_abs_diff(&logits(a), &logits(b))
}
