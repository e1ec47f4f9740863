//! Perplexity with llama.cpp's protocol against llama-perplexity's own running figures
//! (`llama-perplexity -c 512 --chunks 4 -t 2` on the default GGUF printed
//! `[1]12.6138,[2]21.3795,[3]22.2525,[4]22.1792`; llama.cpp from llama-cpp-python==0.3.36).

mod common;

use leanlm::measure::{compare, perplexity, BaseLogits, Chunks, PerplexityOptions, Protocol};

#[test]
fn first_chunks_match_llama_perplexity_within_half_a_percent() {
    let loaded = common::default_model();
    let text = std::fs::read_to_string(common::data_file("wikitext-2-raw/wiki.test.raw")).unwrap();
    let opt = PerplexityOptions {
        ctx: 512,
        protocol: Protocol::LlamaCpp,
        max_chunks: Some(4),
    };
    let r = perplexity(&loaded.model, &loaded.tokenizer, &text, &opt, |_, _, _| {}).unwrap();
    assert_eq!(r.tokens_in_file, 304_830);
    assert_eq!(r.nll.count(), 4 * 255);
    // The running figure over all four chunks (1,020 scored tokens): a single chunk's 255
    // tokens move by tenths of a percent with the last bit of rounding.
    let (ours, theirs) = (r.per_chunk[3], 22.1792);
    let rel = (ours / theirs - 1.0f64).abs();
    assert!(
        rel < 0.005,
        "PPL {ours} vs llama.cpp {theirs} ({:.2}% off)",
        rel * 100.0
    );
}

#[test]
fn bad_contexts_are_errors() {
    let loaded = common::default_model();
    let run = |ctx, text: &str| {
        perplexity(
            &loaded.model,
            &loaded.tokenizer,
            text,
            &PerplexityOptions {
                ctx,
                protocol: Protocol::LlamaCpp,
                max_chunks: None,
            },
            |_, _, _| {},
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
    };
    assert!(run(1, "some text").contains("too small"));
    // llama.cpp's protocol scores positions ctx/2+1 .. ctx-1: none at ctx 2.
    assert!(run(2, "some text").contains("too small"));
    assert!(run(100_000, "some text").contains("larger than the model"));
    assert!(run(512, "too short").contains("fewer than one chunk"));
}

/// A model compared with itself: KLD exactly 0, same top token everywhere, Δp 0, ratio 1.
#[test]
fn kld_of_a_model_against_itself_is_zero() {
    let loaded = common::default_model();
    let text = std::fs::read_to_string(common::data_file("wikitext-2-raw/wiki.test.raw")).unwrap();
    let opt = PerplexityOptions {
        ctx: 128,
        protocol: Protocol::LlamaCpp,
        max_chunks: Some(2),
    };
    let chunks = Chunks::new(&loaded.model, &loaded.tokenizer, &text, &opt).unwrap();
    let base = BaseLogits::compute(&loaded.model, &chunks, 64, |_, _| {}).unwrap();
    let r = compare(&base, &loaded.model, &chunks, |_, _| {}).unwrap();
    assert_eq!(r.positions, 2 * 63);
    assert_eq!(r.mean_kld, 0.0);
    assert_eq!(r.same_top, 1.0);
    assert_eq!(r.mean_delta_p, 0.0);
    assert!((r.ppl_ratio - 1.0).abs() < 1e-9);
    // The papers' protocol scores every token after the first: 127 per chunk of 128.
    let full = PerplexityOptions {
        protocol: Protocol::Full,
        ..opt
    };
    let r = perplexity(&loaded.model, &loaded.tokenizer, &text, &full, |_, _, _| {}).unwrap();
    assert_eq!(r.nll.count(), 2 * 127);
    // Another text is another fingerprint: the cached base must be refused.
    let other = Chunks::new(&loaded.model, &loaded.tokenizer, &text[1000..], &opt).unwrap();
    assert!(compare(&base, &loaded.model, &other, |_, _| {}).is_err());
}
