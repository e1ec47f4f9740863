//! The binary on model files with non-finite weights: `info` reports them, every other
//! command refuses them unless `--allow-non-finite` is given.

mod common;

use common::*;
use leanlm::model::gguf::{GgufFile, GgufWriter, TensorData};

/// The default model with one f16 scale of `tensor`'s first block set to NaN.
fn with_nan_scale(name: &str, tensor: &str) -> std::path::PathBuf {
    let f = GgufFile::open(model()).unwrap();
    let p = tmp(name);
    let mut w = GgufWriter::create(&p).unwrap();
    for (k, v) in &f.metadata {
        w.set(k, v.clone());
    }
    for t in &f.tensors {
        let mut bytes = f.tensor_bytes(t).to_vec();
        if t.name == tensor {
            (bytes[0], bytes[1]) = (0x00, 0x7e);
        }
        w.add_tensor(TensorData {
            name: t.name.clone(),
            dims: t.dims.clone(),
            dtype: t.dtype,
            bytes,
        })
        .unwrap();
    }
    w.finish().unwrap();
    p
}

#[test]
fn nan_weights_are_reported_by_info_and_refused_elsewhere() {
    let p = with_nan_scale("nan-scale.gguf", "blk.3.attn_q.weight");
    let m = p.to_str().unwrap();
    let out = leanlm(&["info", m]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("non-finite   1 NaN/infinite values in 1 tensors: blk.3.attn_q.weight (1)"),
        "{text}"
    );
    let out = leanlm(&["info", m, "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["non_finite_values"], 1);
    assert_eq!(j["non_finite_tensors"][0]["tensor"], "blk.3.attn_q.weight");

    assert_clean_error(
        &leanlm(&["generate", m, "-p", "Hello", "-n", "1"]),
        "1 non-finite weights (NaN or infinity) in blk.3.attn_q.weight (1)",
    );
    let out = leanlm(&[
        "generate",
        m,
        "-p",
        "Hello",
        "-n",
        "1",
        "--allow-non-finite",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The real model is clean.
    let out = leanlm(&["info", model().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("non-finite   none"));
}
