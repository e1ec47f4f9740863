//! The forward pass's extension points on the real model: batching, cache rollback,
//! early exit and hooks. Each compares against the plain single-sequence pass.

mod common;

use leanlm::model::{Hooks, KvCache, LinearSite, Logits, Pass};
use leanlm::numerics::max_abs_diff as max_diff;

fn tokens(n: usize, offset: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 97 + offset) % 30_000 + 100)
        .collect()
}

#[test]
fn batch_of_two_equals_two_single_runs() {
    let m = &common::default_model().model;
    let (a, b) = (tokens(12, 1), tokens(12, 5));
    let la = m.forward(&a, &mut m.new_cache(), Logits::All).unwrap();
    let lb = m.forward(&b, &mut m.new_cache(), Logits::All).unwrap();
    let (mut ca, mut cb) = (m.new_cache(), m.new_cache());
    let both = m
        .forward_batch(
            &[&a, &b],
            &mut [&mut ca, &mut cb],
            Pass::logits(Logits::All),
        )
        .unwrap();
    let half = both.len() / 2;
    // Rows of the other sequence share activation blocks with nothing: results are bitwise equal.
    assert_eq!(&both[..half], &la[..]);
    assert_eq!(&both[half..], &lb[..]);
}

#[test]
fn truncated_cache_recomputes_the_same_logits() {
    let m = &common::default_model().model;
    let t = tokens(10, 3);
    let mut cache = m.new_cache();
    let full = m.forward(&t, &mut cache, Logits::All).unwrap();
    cache.truncate(6);
    assert_eq!(cache.len(), 6);
    let again = m.forward(&t[6..], &mut cache, Logits::All).unwrap();
    let v = m.vocab_size();
    assert!(max_diff(&again, &full[6 * v..]) < 1e-4);
}

#[test]
fn incremental_decoding_equals_one_batched_pass() {
    let m = &common::default_model().model;
    let t = tokens(8, 11);
    let full = m.forward(&t, &mut m.new_cache(), Logits::All).unwrap();
    let mut cache = m.new_cache();
    let v = m.vocab_size();
    for (i, &tok) in t.iter().enumerate() {
        let l = m.forward(&[tok], &mut cache, Logits::Last).unwrap();
        assert!(
            max_diff(&l, &full[i * v..(i + 1) * v]) < 1e-3,
            "position {i}"
        );
    }
}

#[test]
fn exit_after_the_last_layer_is_the_plain_pass_and_earlier_differs() {
    let m = &common::default_model().model;
    let t = tokens(6, 2);
    let n = m.layers.len();
    let plain = m.forward(&t, &mut m.new_cache(), Logits::All).unwrap();
    let mut no = leanlm::model::NoHooks;
    let mut c = m.new_cache();
    let all = m
        .forward_batch(
            &[&t],
            &mut [&mut c],
            Pass {
                logits: Logits::All,
                exit_after: Some(n),
                exit_when: None,
                hooks: &mut no,
            },
        )
        .unwrap();
    assert_eq!(all, plain);
    let mut c: KvCache = m.new_cache();
    let early = m
        .forward_batch(
            &[&t],
            &mut [&mut c],
            Pass {
                logits: Logits::All,
                exit_after: Some(4),
                exit_when: None,
                hooks: &mut no,
            },
        )
        .unwrap();
    assert!(max_diff(&early, &plain) > 0.1);
    // Skipped layers still got K/V for these positions, so decoding can go on.
    assert_eq!(c.len(), 6);
    m.forward(&[5], &mut c, Logits::Last).unwrap();
    let mut c = m.new_cache();
    let bad = m.forward_batch(
        &[&t],
        &mut [&mut c],
        Pass {
            logits: Logits::All,
            exit_after: Some(n + 1),
            exit_when: None,
            hooks: &mut no,
        },
    );
    assert!(bad.is_err());
}

#[derive(Default)]
struct Counter {
    blocks_in: usize,
    blocks_out: usize,
    linear: std::collections::HashMap<LinearSite, usize>,
    widths: std::collections::HashMap<LinearSite, usize>,
}

impl Hooks for Counter {
    fn block_input(&mut self, _: usize, _: &[f32], _: usize) {
        self.blocks_in += 1;
    }
    fn linear_input(&mut self, _: usize, site: LinearSite, x: &[f32], rows: usize) {
        *self.linear.entry(site).or_default() += 1;
        self.widths.insert(site, x.len() / rows);
    }
    fn block_output(&mut self, _: usize, _: &[f32], _: usize) {
        self.blocks_out += 1;
    }
}

#[test]
fn hooks_see_every_block_and_linear_input() {
    let m = &common::default_model().model;
    let mut h = Counter::default();
    let mut c = m.new_cache();
    m.forward_batch(
        &[&tokens(5, 0)],
        &mut [&mut c],
        Pass {
            logits: Logits::None,
            exit_after: None,
            exit_when: None,
            hooks: &mut h,
        },
    )
    .unwrap();
    assert_eq!((h.blocks_in, h.blocks_out), (30, 30));
    for site in LinearSite::ALL {
        assert_eq!(h.linear[&site], 30, "{site:?}");
    }
    // Input widths: d_model for q/k/v, heads·head_dim for o, d_model for gate/up, ffn for down.
    assert_eq!(h.widths[&LinearSite::Qkv], 576);
    assert_eq!(h.widths[&LinearSite::AttnOut], 576);
    assert_eq!(h.widths[&LinearSite::Down], 1536);
}
