//! Every kernel path on the real model against its reference, in greedy decoding of 5
//! prompts × 32 tokens:
//! - Q4_0, Q4_1, Q4_K, Q6_K, Q8_0 and (issue 23) Q5_0, Q5_1, Q5_K, Q3_K, Q2_K against
//!   the same weights dequantized to f32,
//!   teacher-forced along the reference's greedy continuations. With 8-bit activations
//!   (integer products as llama.cpp computes them; Q4_K and Q6_K with one activation
//!   scale per 256 values, as llama.cpp's Q8_K) measured top-1 agreement is 155, 154,
//!   158, 160 and 160 of 160 (session 14, AMD AVX2): rounding activations to 8 bits flips
//!   near-ties of this small model. On an Intel AVX-512 VNNI machine (session 15), where
//!   every teacher-forced pass of 32 tokens or more takes the VNNI integer prompt product,
//!   the 8-bit figures are Q4_0 153, Q5_0 154, Q5_1 156, Q5_K 148, Q3_K 156, Q2_K 155;
//!   Q5_K's prompt-path logits there are as far from the f32 reference as Q5_0's (largest
//!   difference over a 64-token window 1.20 against 1.12, mean difference from the
//!   one-token path 0.145 against 0.138), so its lower count is near-tie flips, not a
//!   kernel fault (the kernels are tested against plain references in the unit tests).
//!   The 8-bit guard is therefore ≥ 92%, set from both machines' figures; the bars that
//!   decide correctness are the 16-bit ones below. With 16-bit activations every type agrees on
//!   160 of 160 and decodes the same 32 tokens on all 5 prompts; the test holds them to
//!   issue 5's bars (≥ 99% top-1, and Q8_0 greedy-identical) and the new types to issue
//!   23's (greedy-identical; measured 160 of 160 and 5 of 5 for all five, on this AVX2
//!   machine, where prompts take the f32 GEMM);
//! - the sparse layouts (2:4 and bitmap) against the dense Q8_0 copy of the same pruned
//!   weights with 8-bit activations: the same tokens exactly, and the same logits bit for
//!   bit over whole prompts (the kernels share one reduction order; prompts share one
//!   integer product); with 16-bit activations, the same greedy tokens as the pruned
//!   weights in f32.

mod common;

use leanlm::model::{Logits, Model};
use leanlm::quant::activation::Precision;
use leanlm::quant::GgmlType;
use leanlm::run::{argmax, generate, Sampler, SamplerConfig};
use leanlm::transform::prune::{collect, prune, BlockSink, Method, Pattern, PruneConfig};
use leanlm::transform::quantize::{q8_0_or_sparse, quantize_model, SparseChoice};

const N: usize = 32;

fn prompts() -> Vec<Vec<u32>> {
    let loaded = common::default_model();
    let text = std::fs::read_to_string(common::data_file("wikitext-2/valid.txt")).unwrap();
    text.lines()
        .filter(|l| l.trim().len() > 80)
        .step_by(7)
        .take(5)
        .map(|l| {
            let cut = l.char_indices().nth(60).map_or(l.len(), |(i, _)| i);
            loaded.tokenizer.encode(&l[..cut], true, false).unwrap()
        })
        .collect()
}

fn greedy(m: &Model, prompt: &[u32]) -> Vec<u32> {
    let mut s = Sampler::new(SamplerConfig::default()).unwrap();
    generate(m, prompt, N, &mut s, &[], leanlm::run::keep_going)
        .unwrap()
        .tokens
}

/// The reference's greedy continuations of `prompts`, and its logits along them (each
/// prompt and its continuation but the last token, in one pass), computed once and
/// compared against several variants.
struct Reference {
    tokens: Vec<Vec<u32>>,
    inputs: Vec<Vec<u32>>,
    logits: Vec<Vec<f32>>,
}

impl Reference {
    fn new(reference: &Model, prompts: &[Vec<u32>]) -> Self {
        let tokens: Vec<Vec<u32>> = prompts.iter().map(|p| greedy(reference, p)).collect();
        let inputs: Vec<Vec<u32>> = prompts
            .iter()
            .zip(&tokens)
            .map(|(p, t)| p.iter().chain(&t[..t.len() - 1]).copied().collect())
            .collect();
        let logits = inputs.iter().map(|i| all_logits(reference, i)).collect();
        Self {
            tokens,
            inputs,
            logits,
        }
    }

    /// Positions of the continuations (teacher-forced) where `m` picks the reference's
    /// next token, and the number compared.
    fn top1_agreement(&self, m: &Model, prompts: &[Vec<u32>]) -> (usize, usize) {
        let v = m.vocab_size();
        let (mut same, mut total) = (0, 0);
        for ((prompt, input), b) in prompts.iter().zip(&self.inputs).zip(&self.logits) {
            let a = all_logits(m, input);
            for p in prompt.len() - 1..input.len() {
                same += (argmax(&a[p * v..(p + 1) * v]) == argmax(&b[p * v..(p + 1) * v])) as usize;
                total += 1;
            }
        }
        (same, total)
    }

    /// Prompts on which `m` decodes the reference's 32 tokens.
    fn same_greedy(&self, m: &Model, prompts: &[Vec<u32>]) -> usize {
        prompts
            .iter()
            .zip(&self.tokens)
            .filter(|(p, t)| greedy(m, p) == **t)
            .count()
    }
}

fn all_logits(m: &Model, input: &[u32]) -> Vec<f32> {
    m.forward(input, &mut m.new_cache(), Logits::All).unwrap()
}

/// `m` with its quantized matrices rounding activations to `precision`.
fn at(m: &Model, precision: Precision) -> Model {
    let mut m = m.clone();
    m.precision = precision;
    m
}

// Two tests of five types each, so that the test harness runs them side by side.
#[test]
fn block_and_k_quant_types_agree_with_their_dequantized_reference() {
    agree_with_dequantized(&[
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::Q8_0,
    ]);
}

#[test]
fn code_types_agree_with_their_dequantized_reference() {
    agree_with_dequantized(&[
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q5K,
        GgmlType::Q3K,
        GgmlType::Q2K,
    ]);
}

fn agree_with_dequantized(types: &[GgmlType]) {
    let source = &common::default_model().model;
    let prompts = prompts();
    let mut failures = Vec::new();
    for &target in types {
        let m = quantize_model(source, target, GgmlType::Q8_0, None, SparseChoice::Off).unwrap();
        let reference = Reference::new(&m.dequantized(), &prompts);
        let (same8, total) = reference.top1_agreement(&at(&m, Precision::Int8), &prompts);
        let m16 = at(&m, Precision::Int16);
        let (same16, _) = reference.top1_agreement(&m16, &prompts);
        let greedy16 = reference.same_greedy(&m16, &prompts);
        eprintln!(
            "{target}: top-1 agreement {same8}/{total} (8-bit), {same16}/{total} (16-bit); \
             16-bit greedy identical on {greedy16}/5 prompts"
        );
        assert_eq!(total, 5 * N);
        if (same8 as f64) < 0.92 * total as f64 {
            failures.push(format!("{target} 8-bit: {same8}/{total}"));
        }
        if (same16 as f64) < 0.99 * total as f64 {
            failures.push(format!("{target} 16-bit: {same16}/{total}"));
        }
        let held_to_greedy =
            target == GgmlType::Q8_0 || leanlm::quant::codes::TYPES.contains(&target);
        if held_to_greedy && greedy16 != prompts.len() {
            failures.push(format!("{target} 16-bit greedy: {greedy16}/5"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn sparse_layouts_decode_exactly_like_dense_q8_0() {
    let source = &common::default_model().model;
    let prompts = prompts();
    // Magnitude pruning needs no calibration: 50% unstructured and 2:4.
    for pattern in [Pattern::Unstructured(0.5), Pattern::NM { n: 2, m: 4 }] {
        let cfg = PruneConfig {
            method: Method::Magnitude,
            pattern,
            owl: None,
            sparsegpt: Default::default(),
        };
        let magnitude = |sink: &mut BlockSink| prune(source, None, &cfg, &mut |_| {}, sink);
        let pruned = collect(source, magnitude).unwrap().0;
        let dense = quantize_model(
            &pruned,
            GgmlType::Q8_0,
            GgmlType::Q8_0,
            None,
            SparseChoice::Off,
        )
        .unwrap();
        let sparse = quantize_model(
            &pruned,
            GgmlType::Q8_0,
            GgmlType::Q8_0,
            None,
            SparseChoice::Bitmap,
        )
        .unwrap();
        let want = match pattern {
            Pattern::NM { .. } => "S24_Q8",
            _ => "BITMAP_Q8",
        };
        for l in &sparse.layers {
            for (name, _, m) in l.matrices() {
                assert_eq!(m.type_name(), want, "{name}");
            }
        }
        assert!(sparse.layers[0].w_up.nbytes() * 10 < dense.layers[0].w_up.nbytes() * 7);
        for p in &prompts {
            let tokens = greedy(&sparse, p);
            assert_eq!(tokens, greedy(&dense, p), "{want}");
            // Prompt + continuation in one pass (≥ 32 tokens: the prompt product): the
            // same logits, bit for bit.
            let seq: Vec<u32> = p.iter().chain(&tokens).copied().collect();
            let run = |m: &Model| m.forward(&seq, &mut m.new_cache(), Logits::All).unwrap();
            assert!(run(&sparse) == run(&dense), "{want}: prompt logits differ");
        }
        // With 16-bit activations, the same tokens as the pruned weights in f32.
        let reference = Reference::new(&sparse.dequantized(), &prompts);
        let sparse16 = at(&sparse, Precision::Int16);
        assert_eq!(
            reference.same_greedy(&sparse16, &prompts),
            5,
            "{want} 16-bit"
        );
        // The chooser keeps dense Q8_0 for dense weights.
        assert_eq!(
            q8_0_or_sparse(&source.layers[0].w_up, SparseChoice::Bitmap)
                .unwrap()
                .type_name(),
            "Q8_0"
        );
    }
}
