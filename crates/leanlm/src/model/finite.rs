//! Which tensors of a model hold NaN or infinite weights: `leanlm info` reports them, and
//! loading refuses such a model unless asked not to (one NaN turns every later
//! activation into NaN, so the outputs would be garbage without any error).

use rayon::prelude::*;

use super::llama::Model;
use crate::quant::finite::{count_non_finite, count_non_finite_f32};

/// Each tensor with non-finite values, in GGUF naming, with how many (scales count once
/// per block for quantized matrices).
pub fn non_finite_tensors(model: &Model) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let mut note = |name: String, n: usize| {
        if n > 0 {
            found.push((name, n));
        }
    };
    note(
        "token_embd.weight".into(),
        count_non_finite(&model.tok_embd),
    );
    let per_layer: Vec<Vec<(String, usize)>> = model
        .layers
        .par_iter()
        .enumerate()
        .map(|(i, l)| {
            let mut v: Vec<(String, usize)> = l
                .matrices()
                .iter()
                .map(|(name, _, m)| (format!("blk.{i}.{name}.weight"), count_non_finite(m)))
                .collect();
            for (name, b) in [
                ("attn_norm.weight", Some(&l.attn_norm)),
                ("ffn_norm.weight", Some(&l.ffn_norm)),
                ("attn_q.bias", l.bq.as_ref()),
                ("attn_k.bias", l.bk.as_ref()),
                ("attn_v.bias", l.bv.as_ref()),
            ] {
                if let Some(b) = b {
                    v.push((format!("blk.{i}.{name}"), count_non_finite_f32(b)));
                }
            }
            v
        })
        .collect();
    for (name, n) in per_layer.into_iter().flatten() {
        note(name, n);
    }
    note(
        "output_norm.weight".into(),
        count_non_finite_f32(&model.out_norm),
    );
    if !model.tied() {
        note("output.weight".into(), count_non_finite(&model.output));
    }
    found
}

/// "blk.3.attn_q.weight (2), output_norm.weight (1)", the first few of `found`.
pub fn describe(found: &[(String, usize)]) -> String {
    const SHOWN: usize = 5;
    let mut s: Vec<String> = found
        .iter()
        .take(SHOWN)
        .map(|(name, n)| format!("{name} ({n})"))
        .collect();
    if found.len() > SHOWN {
        s.push(format!("and {} more tensors", found.len() - SHOWN));
    }
    s.join(", ")
}
