//! Pruning on the real model: the block-by-block sweep reproduces the forward pass, pruned
//! models keep their pattern through the GGUF writer and loader with identical logits, and
//! structured pruning shrinks the right matrices.

mod common;

use leanlm::calibrate::{Calibration, Sweep};
use leanlm::model::{load, save_gguf, Hooks, Logits, Model, Pass};
use leanlm::numerics::max_abs_diff;
use leanlm::quant::GgmlType;
use leanlm::transform::prune::{
    collect, prune, prune_structured, BlockSink, Method, Pattern, PruneConfig, Structured,
};
use leanlm::transform::quantize::{OutType, OutputFormat};

fn calibration(nsamples: usize, seqlen: usize) -> Calibration {
    let loaded = common::default_model();
    let text = std::fs::read_to_string(common::data_file("wikitext-2/valid.txt")).unwrap();
    let tokens = loaded
        .tokenizer
        .encode(&text[..200_000], false, false)
        .unwrap();
    Calibration::sample(&tokens, nsamples, seqlen, 0).unwrap()
}

fn config(method: Method, pattern: Pattern) -> PruneConfig {
    PruneConfig {
        method,
        pattern,
        owl: None,
        sparsegpt: Default::default(),
    }
}

/// The output format for a model pruned from the default (Q4_1) model.
fn q4_1_source(out: OutType) -> OutputFormat {
    OutputFormat {
        out,
        source: GgmlType::Q4_1,
    }
}

fn logits(m: &Model) -> Vec<f32> {
    let t: Vec<u32> = (0..16u32).map(|i| 1 + i * 331 % 20_000).collect();
    m.forward(&t, &mut m.new_cache(), Logits::All).unwrap()
}

/// Collects the outputs of block `.0` (the sweep reports one sample per call).
struct Outputs(usize, Vec<f32>);
impl Hooks for Outputs {
    fn block_output(&mut self, l: usize, x: &[f32], _: usize) {
        if l == self.0 {
            self.1.extend_from_slice(x);
        }
    }
}

#[test]
fn block_by_block_sweep_equals_the_forward_pass() {
    let m = &common::default_model().model;
    // 40 positions: both the per-sample sweep and the batched pass take the GEMM path
    // (≥ 32 rows), so they compute the same thing.
    let calib = calibration(2, 40);
    let last = m.layers.len() - 1;
    let mut sweep = Sweep::new(m, &calib);
    let mut h_sweep = Outputs(last, Vec::new());
    for (l, layer) in m.layers.iter().enumerate() {
        sweep.advance_with(l, layer, &mut h_sweep).unwrap();
    }
    // Sweep rows are (sample, position); the forward runs both samples as a batch.
    let w: Vec<&[u32]> = calib.windows.iter().map(|w| w.as_slice()).collect();
    let (mut c0, mut c1) = (m.new_cache(), m.new_cache());
    let mut h = Outputs(last, Vec::new());
    let pass = Pass {
        logits: Logits::None,
        exit_after: None,
        exit_when: None,
        hooks: &mut h,
    };
    m.forward_batch(&w, &mut [&mut c0, &mut c1], pass).unwrap();
    // The sweep runs one sample per call, the forward both at once: the matrix products
    // see different batch shapes, so equality is up to f32 summation order.
    assert_eq!(h.1.len(), h_sweep.1.len());
    let scale = h.1.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let diff = max_abs_diff(&h.1, &h_sweep.1);
    assert!(diff <= 1e-4 * scale.max(1.0), "diff {diff}, scale {scale}");
}

#[test]
fn pruned_models_hold_their_pattern_and_survive_the_gguf_round_trip() {
    let loaded = common::default_model();
    let calib = calibration(2, 64);
    let dir = std::env::temp_dir().join(format!("leanlm-prune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (method, pattern) in [
        (Method::Wanda, Pattern::NM { n: 2, m: 4 }),
        (Method::SparseGpt, Pattern::Unstructured(0.5)),
    ] {
        let m = &loaded.model;
        let cfg = config(method, pattern);
        let (pruned, report) =
            collect(m, |sink| prune(m, Some(&calib), &cfg, &mut |_| {}, sink)).unwrap();
        assert!(
            (report.sparsity() - 0.5).abs() < 1e-3,
            "{method:?}: {}",
            report.sparsity()
        );
        for l in &pruned.layers {
            for (name, _, m) in l.matrices() {
                let w = m.to_f32();
                if let Pattern::NM { .. } = pattern {
                    for g in w.chunks_exact(4) {
                        assert!(g.iter().filter(|v| **v != 0.0).count() <= 2, "{name}");
                    }
                } else {
                    // SparseGPT's masks are chosen per block of 128 columns: each block
                    // holds exactly half zeros.
                    let zeros = w.iter().filter(|v| **v == 0.0).count();
                    assert!((zeros as f64 / w.len() as f64 - 0.5).abs() < 0.01, "{name}");
                }
            }
        }
        // f32 and q8_0 outputs load back with the same logits as the model in memory.
        for out in [OutType::F32, OutType::Q8_0] {
            let (m, dense_as) = q4_1_source(out).model(&pruned).unwrap();
            let path = dir.join(format!("{method:?}-{out:?}.gguf"));
            save_gguf(&m, loaded.metadata_to_carry().unwrap(), &path, dense_as).unwrap();
            let back = load(&path).unwrap();
            assert_eq!(logits(&back.model), logits(&m), "{method:?} {out:?}");
            // Q8_0 keeps exact zeros: the pattern survives quantization.
            let zeros: usize = back.model.layers[0]
                .matrices()
                .iter()
                .map(|(_, _, m)| m.to_f32().iter().filter(|v| **v == 0.0).count())
                .sum();
            let total: usize = back.model.layers[0]
                .matrices()
                .iter()
                .map(|(_, _, m)| m.rows * m.cols)
                .sum();
            assert!(zeros as f64 >= 0.49 * total as f64, "{out:?}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn structured_pruning_shrinks_heads_channels_and_layers() {
    let loaded = common::default_model();
    let m = &loaded.model;
    let hd = m.config.head_dim;
    let calib = calibration(2, 32);
    let dir = std::env::temp_dir().join(format!("leanlm-structured-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for what in [
        Structured::Heads(3),
        Structured::KvHeads(1),
        Structured::Ffn(0.25),
        Structured::Layers(4),
    ] {
        let (pruned, report) = collect(m, |sink| {
            prune_structured(m, &calib, what, &mut |_| {}, sink)
        })
        .unwrap();
        let l0 = &pruned.layers[0];
        match what {
            Structured::Heads(_) => {
                assert_eq!((l0.n_heads(hd), l0.n_kv_heads(hd)), (6, 3));
                assert_eq!(l0.wo.cols, 6 * hd);
            }
            Structured::KvHeads(_) => assert_eq!((l0.n_heads(hd), l0.n_kv_heads(hd)), (6, 2)),
            Structured::Ffn(_) => {
                assert_eq!(l0.ffn_dim(), 1152);
                assert_eq!((l0.w_up.rows, l0.w_down.cols), (1152, 1152));
            }
            Structured::Layers(_) => {
                assert_eq!(pruned.layers.len(), m.layers.len() - 4);
                assert_eq!(report.removed_layers.len(), 4);
                // ShortGPT: the removed blocks are the four least influential.
                let bi: Vec<f64> = report.layers.iter().map(|l| l.influence.unwrap()).collect();
                let max_removed = report
                    .removed_layers
                    .iter()
                    .map(|&i| bi[i])
                    .fold(0.0, f64::max);
                let min_kept = (0..bi.len())
                    .filter(|i| !report.removed_layers.contains(i))
                    .map(|i| bi[i])
                    .fold(f64::INFINITY, f64::min);
                assert!(max_removed <= min_kept);
            }
        }
        // The shrunken model runs, and its GGUF (per-layer widths in the metadata) loads
        // back with the same logits.
        let path = dir.join("s.gguf");
        let (out, dense_as) = q4_1_source(OutType::F32).model(&pruned).unwrap();
        save_gguf(&out, loaded.metadata_to_carry().unwrap(), &path, dense_as).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(logits(&back.model), logits(&out), "{what:?}");
        assert!(logits(&out).iter().all(|v| v.is_finite()));
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn impossible_requests_are_refused() {
    let m = &common::default_model().model;
    let calib = calibration(1, 16);
    for what in [
        Structured::Layers(30),
        Structured::Heads(2),
        Structured::Heads(9),
        Structured::KvHeads(3),
    ] {
        let err = prune_structured(m, &calib, what, &mut |_| {}, &mut |_| Ok(())).err();
        assert!(err.is_some(), "{what:?}");
    }
    let owl_nm = PruneConfig {
        owl: Some(Default::default()),
        ..config(Method::Wanda, Pattern::NM { n: 2, m: 4 })
    };
    let no_sink = &mut |_| Ok(());
    assert!(prune(m, Some(&calib), &owl_nm, &mut |_| {}, no_sink).is_err());
    let wanda = config(Method::Wanda, Pattern::Unstructured(0.5));
    assert!(prune(m, None, &wanda, &mut |_| {}, no_sink).is_err());
}

#[test]
fn hugging_face_folder_round_trip_keeps_logits_and_tokens() {
    let loaded = common::default_model();
    // A layer-pruned model: 26 blocks, config and tensors renumbered.
    let calib = calibration(1, 16);
    let m = &loaded.model;
    let layers4 = |sink: &mut BlockSink| {
        prune_structured(m, &calib, Structured::Layers(4), &mut |_| {}, sink)
    };
    let (pruned, _) = collect(m, layers4).unwrap();
    let (dense, _) = q4_1_source(OutType::F32).model(&pruned).unwrap();
    let dir = std::env::temp_dir().join(format!("leanlm-hf-{}", std::process::id()));
    leanlm::model::save_hf(&dense, &loaded.tokenizer, &dir, leanlm::model::HfDtype::F32).unwrap();
    let back = load(&dir).unwrap();
    assert_eq!(back.model.layers.len(), 26);
    // HF keeps q/k rows in halves order: same function, different summation order.
    let (a, b) = (logits(&back.model), logits(&dense));
    let diff = max_abs_diff(&a, &b);
    assert!(diff < 1e-3, "max logit difference {diff}");
    let text = "Pruning 123 layers: naïve café — 日本語 <|im_start|>user\n";
    for special in [false, true] {
        assert_eq!(
            back.tokenizer.encode(text, true, special).unwrap(),
            loaded.tokenizer.encode(text, true, special).unwrap()
        );
    }
    assert_eq!(back.tokenizer.bos, loaded.tokenizer.bos);
    assert_eq!(back.tokenizer.chat_template, loaded.tokenizer.chat_template);
    std::fs::remove_dir_all(&dir).ok();
}
