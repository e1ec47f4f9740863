//! Adaptive decoding on the real model: with greedy choice, every speculative drafter must
//! give the plain greedy tokens exactly (20 prompts × 64 tokens), and early exit that never
//! fires must give the plain logits. The drafter test runs on the default model's first 8
//! blocks (with its norm and head): exactness depends on the kernels and the cache
//! rollback, not on depth, and a third of the blocks keeps CI's two cores in budget.

mod common;

use leanlm::model::Logits;
use leanlm::model::Model;
use leanlm::run::early_exit::step;
use leanlm::run::{
    generate, generate_early_exit, generate_speculative, Confidence, Drafter, ExitPolicy, Sampler,
    SamplerConfig, SpecOptions,
};

fn prompts() -> Vec<Vec<u32>> {
    let loaded = common::default_model();
    let text = std::fs::read_to_string(common::data_file("wikitext-2/valid.txt")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.trim().len() > 80)
        .take(20)
        .collect();
    assert_eq!(lines.len(), 20);
    lines
        .iter()
        .map(|l| {
            let cut = l.char_indices().nth(60).map_or(l.len(), |(i, _)| i);
            loaded.tokenizer.encode(&l[..cut], true, false).unwrap()
        })
        .collect()
}

fn greedy() -> Sampler {
    Sampler::new(SamplerConfig::default()).unwrap()
}

#[test]
fn every_drafter_reproduces_plain_greedy_decoding() {
    let full = &common::default_model().model;
    let first = |blocks: usize| {
        Model::new(
            full.config.clone(),
            full.tok_embd.clone(),
            full.layers[..blocks].to_vec(),
            full.out_norm.clone(),
            full.output.clone(),
        )
        .unwrap()
    };
    let m = &first(8);
    // A depth-pruned draft: the first 5 blocks with the norm and head (self-drafting
    // with 3 layers is a different, shallower draft).
    let draft = first(5);
    let drafters = [
        ("self, 3 layers", Drafter::EarlyLayers(3)),
        ("draft model", Drafter::Model(&draft)),
        ("prompt lookup", Drafter::PromptLookup { ngram: 2 }),
        (
            "draft model and lookup",
            Drafter::ModelAndLookup {
                model: &draft,
                ngram: 2,
            },
        ),
    ];
    let n = 64;
    // Per drafter: drafted and accepted tokens over all prompts.
    let mut totals = [(0, 0); 4];
    for (p, prompt) in prompts().iter().enumerate() {
        let plain = generate(m, prompt, n, &mut greedy(), &[], leanlm::run::keep_going)
            .unwrap()
            .tokens;
        assert_eq!(plain.len(), n);
        for ((name, drafter), total) in drafters.iter().zip(&mut totals) {
            let opts = SpecOptions {
                k: 4,
                adaptive: p % 2 == 1,
                // The confidence cut-off on some prompts: shorter drafts, the same tokens.
                p_min: if p % 3 == 2 { 0.6 } else { 0.0 },
            };
            let (g, stats) = generate_speculative(
                m,
                drafter,
                prompt,
                n,
                &mut greedy(),
                &[],
                opts,
                leanlm::run::keep_going,
            )
            .unwrap();
            assert_eq!(g.tokens, plain, "prompt {p}, {name}");
            assert!(
                stats.rounds <= n && stats.accepted <= stats.drafted,
                "{name}"
            );
            total.0 += stats.drafted;
            total.1 += stats.accepted;
        }
    }
    // Both branches of verification ran: some drafts were kept, some rolled back.
    for ((name, _), (drafted, accepted)) in drafters.iter().zip(totals) {
        eprintln!("{name}: accepted {accepted} of {drafted} drafted");
        assert!(0 < accepted && accepted < drafted, "{name}");
    }
}

#[test]
fn bad_speculation_settings_are_refused() {
    let m = &common::default_model().model;
    let prompt = [1u32, 2, 3];
    let with = |k: usize, p_min: f32| SpecOptions {
        k,
        adaptive: false,
        p_min,
    };
    let opts = with(4, 0.0);
    let run = |d: &Drafter, o: SpecOptions| {
        generate_speculative(
            m,
            d,
            &prompt,
            8,
            &mut greedy(),
            &[],
            o,
            leanlm::run::keep_going,
        )
    };
    assert!(run(&Drafter::EarlyLayers(0), opts).is_err());
    assert!(run(&Drafter::EarlyLayers(m.layers.len()), opts).is_err());
    let lookup = Drafter::PromptLookup { ngram: 2 };
    assert!(run(&lookup, with(0, 0.0)).is_err());
    assert!(run(&lookup, with(4, 1.5)).is_err());
    assert!(run(&lookup, with(17, 0.0)).is_err());
    // A draft whose vocabulary is smaller than the target's.
    let small = Model::new(
        m.config.clone(),
        leanlm::quant::Matrix::from_f32(10, m.config.d_model, vec![0.0; 10 * m.config.d_model])
            .unwrap(),
        m.layers[..1].to_vec(),
        m.out_norm.clone(),
        leanlm::quant::Matrix::from_f32(10, m.config.d_model, vec![0.0; 10 * m.config.d_model])
            .unwrap(),
    )
    .unwrap();
    assert!(run(&Drafter::Model(&small), opts).is_err());
}

#[test]
fn early_exit_that_never_fires_is_the_plain_pass() {
    let m = &common::default_model().model;
    let prompt = &prompts()[0];
    for measure in [
        Confidence::MaxProb,
        Confidence::Margin,
        Confidence::Saturation,
    ] {
        let never = ExitPolicy {
            measure,
            threshold: 2.0,
            min_layers: 4,
            every: 2,
        };
        let (mut c1, mut c2) = (m.new_cache(), m.new_cache());
        m.forward(prompt, &mut c1, Logits::None).unwrap();
        m.forward(prompt, &mut c2, Logits::None).unwrap();
        let plain = m.forward(&[42], &mut c1, Logits::Last).unwrap();
        let (exit, blocks) = step(m, 42, &mut c2, &never).unwrap();
        assert_eq!(blocks, m.layers.len());
        assert_eq!(exit, plain, "{measure:?}");
    }
    // An always-satisfied threshold exits at the first candidate, and generation still
    // runs with the skipped blocks' K/V filled.
    let always = ExitPolicy {
        measure: Confidence::MaxProb,
        threshold: 0.0,
        min_layers: 6,
        every: 2,
    };
    let (g, stats) = generate_early_exit(
        m,
        prompt,
        12,
        &mut greedy(),
        &[],
        &always,
        leanlm::run::keep_going,
    )
    .unwrap();
    assert_eq!(g.tokens.len(), 12);
    assert_eq!(stats.histogram[6], 11);
    assert!((stats.mean_layers() - 6.0).abs() < 1e-12);
    let bad = ExitPolicy {
        min_layers: 0,
        ..always
    };
    assert!(generate_early_exit(
        m,
        prompt,
        4,
        &mut greedy(),
        &[],
        &bad,
        leanlm::run::keep_going
    )
    .is_err());
}

#[test]
fn a_base_is_scored_with_every_block_even_when_the_variant_exits_early() {
    use leanlm::measure::{BaseLogits, Chunks, PerplexityOptions, Protocol};
    let loaded = common::default_model();
    let (m, tok) = (&loaded.model, &loaded.tokenizer);
    let text = std::fs::read_to_string(common::data_file("wikitext-2/valid.txt")).unwrap();
    let opt = PerplexityOptions {
        ctx: 64,
        protocol: Protocol::LlamaCpp,
        max_chunks: Some(2),
    };
    let plain = Chunks::new(m, tok, &text[..20_000], &opt).unwrap();
    // Threshold 0: every position leaves after the first block.
    let always = ExitPolicy {
        measure: Confidence::MaxProb,
        threshold: 0.0,
        min_layers: 1,
        every: 1,
    };
    let exiting = Chunks::new(m, tok, &text[..20_000], &opt)
        .unwrap()
        .with_early_exit(m, always)
        .unwrap();
    let a = BaseLogits::compute(m, &plain, 8, |_, _| {}).unwrap();
    let b = BaseLogits::compute(m, &exiting, 8, |_, _| {}).unwrap();
    assert_eq!(a.positions.len(), b.positions.len());
    for (x, y) in a.positions.iter().zip(&b.positions) {
        assert_eq!((x.target, x.target_logp), (y.target, y.target_logp));
        assert_eq!(x.top, y.top);
    }
    // The variant itself does exit early.
    let (full, _) = plain.score(m, &plain.get(0)).unwrap();
    let (early, _) = exiting.score(m, &exiting.get(0)).unwrap();
    assert_ne!(full, early);
}
